#!/usr/bin/env bash
# Detached on the GPU machine (start.sh launches it): one training run on one GPU, then the evaluation of
# its fp16 checkpoint (lambada_openai, Gutenberg validation); touches /tmp/run/NAME/DONE either way.
#   job.sh NAME TOKENIZER GPU MINUTES [train_small_mamba.py arguments ...]
set -u
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=$3
name=$1 tok=$2 minutes=$4
shift 4
mkdir -p "/tmp/run/$name"
cd /tmp/code
python3 train_small_mamba.py --data-dir /tmp/data --tokenizer "/tmp/data/$tok" --out "/tmp/run/$name" \
    --cache-dir /tmp/run/cache --max-minutes "$minutes" "$@" && \
python3 lambada_quick_eval.py --model "/tmp/run/$name/final" --data-dir /tmp/data --val --out "/tmp/run/$name/eval.json"
echo "job exit $?"
touch "/tmp/run/$name/DONE"
