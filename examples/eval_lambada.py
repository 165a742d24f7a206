"""lambada_openai and Gutenberg perplexity for every precision mode in one run, from one calibration.

The `mamba-qpass eval` command with --tasks lambada_openai; every other flag passes through. Prints
each mode's elapsed time as it finishes, then the table (acc ± stderr, perplexity, acc change vs fp,
per-document agreement with w8a8, Gutenberg perplexity, seconds); --output keeps per-document results.

    python examples/eval_lambada.py --model checkpoints/gutenberg-mamba-25m \
        --modes fp,w8a8,fp32_ssm,float_sim,fp32_conv --output lambada.json

Tasks run through lm-eval's HFLM (``pip install -e '.[eval]'``). The data folder (--data-dir or
$MAMBA_QPASS_DATA) must hold lambada_openai/lambada_test.jsonl, gutenberg/train-00.jsonl.xz (calibration)
and gutenberg/val.jsonl.xz.
"""

import sys

from mamba_qpass.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "--tasks", "lambada_openai", *sys.argv[1:]]))
