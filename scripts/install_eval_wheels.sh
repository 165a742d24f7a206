#!/usr/bin/env bash
# Installs lm-eval on a machine without internet from the wheels staged in .whl/ (git-ignored), into
# /tmp/site, and checks that lm_eval and datasets import. Then:  export PYTHONPATH=/tmp/site:$PYTHONPATH
#   bash scripts/install_eval_wheels.sh
# .whl/ holds lm-eval and only those of its (and datasets', evaluate's, ...) requirements that the GPU
# image lacks; the image provides the rest (pandas, pyarrow, scipy, scikit-learn, sacrebleu, ...), so the
# install takes no dependencies from anywhere else (--no-deps). Staged here with, for each NAME==VERSION:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl NAME==VERSION
# and, for the three published only as source (sqlitedict, word2number, rouge_score), pure-Python wheels
# built here with  pip wheel --no-deps -w .whl NAME==VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
ls .whl/*.whl > /dev/null 2>&1 || { echo "no wheels in $PWD/.whl: stage them first (see this script's header)" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" python3 -c "
import datasets, evaluate, lm_eval, lm_eval.models.huggingface, lm_eval.tasks
print('lm_eval', lm_eval.__version__, 'datasets', datasets.__version__, 'from', lm_eval.__file__)
"
echo "installed into $SITE: export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH}"
