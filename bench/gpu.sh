#!/usr/bin/env bash
# GPU throughput of the full chain (GD-T + SAM-B + CLIP-B) at batch 1 and 8 in float32,
# float16 and bfloat16, SAM decode in one call vs groups, and peak GPU memory, in one run
# (bench/bench_gpu.py). Random weights of the real sizes, built here; nothing is downloaded.
# Every printed figure is a rate or a ratio measured in this run. Under 8 minutes on one
# GPU (the script skips what is left after --budget seconds, 420 by default).
#
#   bash bench/gpu.sh                          # cuda, real sizes; target >= 10 images/s (H100)
#   bash bench/gpu.sh --json gpu.json          # also the figures as JSON
#   bash bench/gpu.sh --device cpu --tiny      # smoke run on a cpu, tiny models, seconds
#
# PYTHON: the interpreter with ovperc's dependencies (default python). Extra arguments go to
# bench/bench_gpu.py (--dtypes, --batches, --classes, --boxes, --sam-boxes, --models-dir, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"${PYTHON:-python}" bench/bench_gpu.py "$@" 2> >(grep -v -E '^(Loading weights|Writing model shards)' >&2)
