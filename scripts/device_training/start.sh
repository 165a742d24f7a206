#!/usr/bin/env bash
# On the GPU machine, in the checkout with .gpu-train and .gpu-sdists (see stage.sh): stages data and
# code under /tmp, builds mamba-ssm + causal-conv1d for sm_90 while it tokenizes, then starts one detached
# training run per NAME=TOKENIZER pair, run i on GPU i (modulo the GPUs there), each followed by the
# evaluation of its checkpoint. Everything lives under /tmp/run.
#   MINUTES=16 bash .gpu-train/start.sh a=tok8192 [b=tok12288 ...]
# Extra arguments for every train_small_mamba.py run: TRAIN_ARGS. Then follow the runs with poll.sh.
set -u
export PYTHONUNBUFFERED=1
[ $# -ge 1 ] || { echo "usage: MINUTES=16 bash .gpu-train/start.sh NAME=TOKENIZER [...]" >&2; exit 2; }
: "${MINUTES:?set MINUTES to the wall-clock budget of the training loop}"
T0=$(date +%s)
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"
mkdir -p /tmp/run /tmp/data/lambada_openai /tmp/code
cp -r .gpu-train/gutenberg .gpu-train/tok* /tmp/data/
cp .gpu-train/*.py .gpu-train/*.sh /tmp/code/
cp -r mamba_qpass /tmp/code/  # lambada_quick_eval.py scores through mamba-qpass and lm-eval: install lm-eval first with scripts/install_eval_wheels.sh (wheels in .whl/)
xz -dc .gpu-train/lambada_openai/lambada_test.jsonl.xz > /tmp/data/lambada_openai/lambada_test.jsonl
bash .gpu-sdists/build-mamba-ssm-sm90.sh start
for tok in $(printf '%s\n' "$@" | sed 's/^[^=]*=//' | sort -u); do
  python3 -c "
import sys; sys.path.insert(0, '/tmp/code')
from train_small_mamba import load_tokens
for split in ('val', 'train'):
    load_tokens(split, '/tmp/data', '/tmp/data/$tok', '/tmp/run/cache', None)
" > "/tmp/run/tokenize-$tok.log" 2>&1 &
done
wait
cat /tmp/run/tokenize-*.log
echo "tokenized at +$(( $(date +%s) - T0 )) s"
if ! bash .gpu-sdists/build-mamba-ssm-sm90.sh wait; then echo "BUILD FAILED"; tail -n 30 /tmp/gpu-build/*.log; exit 1; fi
echo "built at +$(( $(date +%s) - T0 )) s"
n_gpu=$(nvidia-smi -L | wc -l)
i=0
: > /tmp/run/RUNS
for pair in "$@"; do
  name=${pair%%=*} tok=${pair#*=}
  echo "$name" >> /tmp/run/RUNS
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of arguments
  setsid nohup bash /tmp/code/job.sh "$name" "$tok" $((i % n_gpu)) "$MINUTES" ${TRAIN_ARGS:-} \
      > "/tmp/run/$name.log" 2>&1 < /dev/null &
  i=$((i + 1))
done
sleep "${WATCH_S:-45}"
for name in $(cat /tmp/run/RUNS); do echo "=== $name"; tr '\r' '\n' < "/tmp/run/$name.log" | grep -v "^ *$" | tail -n 8; done
echo "started at +$(( $(date +%s) - T0 )) s"
