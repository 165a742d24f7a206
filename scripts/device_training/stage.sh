#!/usr/bin/env bash
# On the machine that holds the data folder, before training on a GPU machine that does not: fills the
# git-ignored .gpu-train/ with what training needs there: the Gutenberg books, lambada_openai, and one
# tokenizer per vocabulary size given (default 8192), trained by examples/train_tokenizer.py.
#   bash scripts/device_training/stage.sh [VOCAB_SIZE ...]
# The GPU machine builds mamba-ssm and causal-conv1d from .gpu-sdists/ (see
# ../shared/tools/build-mamba-ssm-sm90.sh for how to fill it). Copy the checkout with both folders there,
# then see start.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${MAMBA_QPASS_DATA:-../shared/data}
[ -d "$data/gutenberg" ] || { echo "no gutenberg/ under $data: set MAMBA_QPASS_DATA" >&2; exit 2; }
[ -f .gpu-sdists/build-mamba-ssm-sm90.sh ] || { echo ".gpu-sdists/ is missing: fill it as ../shared/tools/build-mamba-ssm-sm90.sh says" >&2; exit 2; }
grep -qx '/.gpu-train/' .git/info/exclude || echo /.gpu-train/ >> .git/info/exclude
rm -rf .gpu-train && mkdir -p .gpu-train/gutenberg .gpu-train/lambada_openai
cp "$data"/gutenberg/train-00.jsonl.xz "$data"/gutenberg/train-01.jsonl.xz "$data"/gutenberg/val.jsonl.xz .gpu-train/gutenberg/
xz -c "$data/lambada_openai/lambada_test.jsonl" > .gpu-train/lambada_openai/lambada_test.jsonl.xz
for vocab in "${@:-8192}"; do
  python examples/train_tokenizer.py --data-dir "$data" --out ".gpu-train/tok$vocab" --vocab-size "$vocab"
done
cp examples/train_tokenizer.py examples/train_small_mamba.py examples/lambada_quick_eval.py scripts/device_training/*.sh .gpu-train/
tracked=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
staged=$(du -cb .gpu-train .gpu-sdists | tail -n 1 | cut -f1)
echo "staged $((staged / 1000000)) MB beside the tracked tree's $((tracked / 1000000)) MB"
