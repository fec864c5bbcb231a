#!/usr/bin/env bash
# Run every benchmark once, in turn, and keep each one's output and JSON in one folder.
#
#   bash bench/run_all.sh                 # results in $TMPDIR/ovperc-bench-results/<date>/
#   OUT=/tmp/b REPEATS=5 bash bench/run_all.sh
#   QUICK=1 bash bench/run_all.sh         # one repeat each, 300 images for memory (a smoke run)
#
# Full size on a 2-core CPU takes about 20 minutes when the machine is otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-${TMPDIR:-/tmp}/ovperc-bench-results/$(date -u +%Y%m%d-%H%M)}
REPEATS=${REPEATS:-3}
MEMORY_IMAGES=1000
if [[ -n "${QUICK:-}" ]]; then REPEATS=1; MEMORY_IMAGES=300; fi
mkdir -p "$OUT"
run() {
  local name=$1; shift
  echo "== $name: python $*"
  python "$@" --json "$OUT/$name.json" 2>&1 | grep -v '^Loading weights' | tee "$OUT/$name.log"
}
run chain bench/bench_chain.py --repeats "$REPEATS"
run detector bench/bench_detector.py --repeats "$REPEATS"
run backends bench/bench_backends.py --repeats "$REPEATS"
run sam bench/bench_sam.py --repeats "$REPEATS" --flops
run clip bench/bench_clip.py --repeats "$REPEATS"
run fast bench/bench_fast.py --repeats "$REPEATS" --threads 2
run tagger bench/bench_tagger.py --repeats "$REPEATS"
run label bench/bench_label.py --repeats "$REPEATS"
run memory bench/bench_memory.py --images "$MEMORY_IMAGES"
echo "results in $OUT"
