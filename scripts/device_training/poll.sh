#!/usr/bin/env bash
# On the GPU machine while the runs go (start.sh started them): waits up to SECONDS, less once every run
# is done, and shows each run's progress and evaluation. With FETCH, also packs into the folder $OUT every
# run's logs and the final checkpoint of run FETCH, or of the run with the best lambada_openai accuracy
# for FETCH=best, as 15 MiB parts that any file transfer carries:
#   OUT=/tmp/fetch bash /tmp/code/poll.sh SECONDS [FETCH]
# Where the parts arrive, join them: cat DIR/final.tar.part-* | tar xf -
set -u
runs=$(cat /tmp/run/RUNS)
for _ in $(seq 1 "$1"); do
  done_all=1
  for name in $runs; do [ -e "/tmp/run/$name/DONE" ] || done_all=0; done
  [ "$done_all" = 1 ] && break
  sleep 1
done
for name in $runs; do
  echo "=== $name"
  tr '\r' '\n' < "/tmp/run/$name.log" | grep -v "^ *$" | grep -v "Writing model\|Loading weights" | tail -n 6
  grep val_loss "/tmp/run/$name/run.jsonl" 2>/dev/null | tail -n 2 | cut -c1-160
  cat "/tmp/run/$name/eval.json" 2>/dev/null; echo
done
nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
fetch=${2:-}
[ -n "$fetch" ] || exit 0
if [ "$fetch" = best ]; then
  fetch=$(python3 -c "
import json, os, sys
acc = {n: json.load(open(f'/tmp/run/{n}/eval.json'))['lambada_openai']['acc']
       for n in sys.argv[1:] if os.path.exists(f'/tmp/run/{n}/eval.json')}
print(max(acc, key=acc.get) if acc else '')" $runs)
  [ -n "$fetch" ] || { echo "no run has been evaluated yet"; exit 1; }
fi
for name in $runs; do
  mkdir -p "$OUT/$name"
  cp "/tmp/run/$name.log" "/tmp/run/$name/run.jsonl" "/tmp/run/$name/summary.json" "/tmp/run/$name/eval.json" "$OUT/$name/" 2>/dev/null
done
[ -d "/tmp/run/$fetch/final" ] || { echo "run $fetch has no final checkpoint (yet)"; exit 1; }
(cd "/tmp/run/$fetch" && tar cf - final) | split -b 15M - "$OUT/$fetch/final.tar.part-"
echo "fetched $fetch:"; ls -la "$OUT/$fetch"
