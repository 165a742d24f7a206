#!/usr/bin/env bash
# Runs the whole test suite on a CUDA machine: the `gpu`-marked tests run there at real shapes and the
# kernel tests run compiled instead of interpreted:  bash scripts/gpu_tests.sh
# Extra pytest arguments pass through (e.g. -m gpu for the GPU-only tests). The ten slowest tests are listed
# at the end: the suite must fit one 10-minute call of the GPU machine (548 s in the thirteenth session).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 -m pytest -q -p no:cacheprovider --durations=10 tests "$@"
