#!/usr/bin/env bash
# ovperc side by side with the real peer, Roboflow's autodistill-grounded-sam 0.1.2, in one run.
#
# The peer runs unmodified in its own virtual environment (the old libraries it needs), with
# random-weight checkpoints of the real architectures in its own formats, written where it
# looks before it would download anything; it runs with HOME set to a private folder, so the
# user's caches are never touched. Both sides read the same PNG images and run the same
# architectures: Grounding DINO swin-T + SAM ViT-H (the peer's, the very same SAM file), and
# ovperc also with its defaults (GD-T + SAM-B). K = 1, 5 and 20 classes; both sides let the
# same number of boxes reach SAM (2 per class, as random weights pass hundreds).
# The parts run one after the other; the load average is printed between them. Compare only
# figures of one run, on an otherwise idle machine.
#
#   bash bench/peer.sh                 # setup (once: venv ~5 min, models) + timing + report
#   bash bench/peer.sh setup           # only the venv and the models
#   IMAGES=2 KS=1,20 OVP_PY=.venv/bin/python bash bench/peer.sh > peer.log
#
# Knobs: OVP_PY (python with ovperc's dependencies; default python), PEER_ROOT (venv, private
# home, default ~/.cache/ovperc-bench/peer), OUT (images, JSON, default $TMPDIR/ovperc-peer-<date>),
# IMAGES (1), KS (1,5,20), THREADS (2), BOXES_PER_CLASS (2), MODELS_DIR (bench/common.py's),
# PARALLEL=1 (both sides at once: only for a crowded shared machine, where wall time is lost
# anyway; then compare the CPU seconds).
# Time on an idle 2-core CPU, 1 image: about 15 minutes (the peer at K=20 about 6 of them).
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${1:-all}
OVP_PY=${OVP_PY:-python}
PEER_ROOT=${PEER_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/ovperc-bench/peer}
OUT=${OUT:-${TMPDIR:-/tmp}/ovperc-peer-$(date -u +%Y%m%d-%H%M)}
IMAGES=${IMAGES:-1}
KS=${KS:-1,5,20}
THREADS=${THREADS:-2}
BOXES_PER_CLASS=${BOXES_PER_CLASS:-2}
PARALLEL=${PARALLEL:-0}
VENV=$PEER_ROOT/venv
PEER_HOME=$PEER_ROOT/home
STAMP=$VENV/.ovperc-peer-setup-ok
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=$THREADS
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
models_args=()
if [[ -n "${MODELS_DIR:-}" ]]; then models_args=(--models-dir "$MODELS_DIR"); fi

mark() { echo "# $(date -u +%FT%TZ) $1; load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"; }
field() {  # field FILE KEY: a value of a JSON file (lists joined by the third argument)
  "$OVP_PY" -c 'import json, sys
v = json.load(open(sys.argv[1]))[sys.argv[2]]
print(sys.argv[3].join(v) if isinstance(v, list) else v)' "$1" "$2" "${3:- }"
}
quiet() {  # library notices (deprecations, progress bars), not results
  grep --line-buffered -v -i -E 'warning|warn\(|deprecat|use_reentrant|requires_grad|meshgrid|Loading weights|^\s*$' || true
}

setup() {
  if [[ ! -f "$STAMP" ]]; then
    if [[ -e "$VENV" ]]; then
      echo "$VENV exists but was not made by this script: remove it or set PEER_ROOT" >&2
      exit 1
    fi
    local base versions
    base=$("$OVP_PY" -c 'import sys; print(sys._base_executable)')
    # The same torch release as ovperc's side, so the comparison is of the code around it.
    versions=$("$OVP_PY" -c 'import torch, torchvision
print("torch==" + torch.__version__.split("+")[0], "torchvision==" + torchvision.__version__.split("+")[0])')
    mkdir -p "$PEER_ROOT"
    "$base" -m venv "$VENV"
    "$VENV/bin/pip" install -q $versions
    # transformers 4.x: groundingdino calls BertModel.get_extended_attention_mask, gone in 5.x.
    # autodistill imports roboflow and scikit-learn without declaring them.
    "$VENV/bin/pip" install -q autodistill-grounded-sam==0.1.2 autodistill==0.1.29 \
      rf-groundingdino==0.3.0 rf-segment-anything==1.0 transformers==4.40.2 tokenizers==0.19.1 \
      "huggingface_hub<1.0" supervision==0.31.2 roboflow scikit-learn
    "$VENV/bin/pip" freeze > "$VENV/peer-freeze.txt"
    touch "$STAMP"
  fi
  mkdir -p "$PEER_HOME"
  "$OVP_PY" bench/peer_ovperc.py prepare "${models_args[@]}" --images 0 --out "$PEER_ROOT" > /dev/null
  HOME=$PEER_HOME "$VENV/bin/python" bench/peer_autodistill.py setup --home "$PEER_HOME" \
    --vocab "$(field "$PEER_ROOT/paths.json" vocab)" \
    --sam-vit-h "$(field "$PEER_ROOT/paths.json" sam_vit_h)" 2>&1 | quiet
}

ovperc_part() {
  "$OVP_PY" bench/peer_ovperc.py time --paths "$OUT/paths.json" --ks "$KS" --threads "$THREADS" \
    --boxes-per-class "$BOXES_PER_CLASS" --out "$OUT/ovperc.json" 2>&1 | quiet
}

peer_part() {
  local images classes
  read -r -a images <<< "$(field "$OUT/paths.json" images)"
  classes=$(field "$OUT/paths.json" classes ,)
  HOME=$PEER_HOME "$VENV/bin/python" bench/peer_autodistill.py time --images "${images[@]}" \
    --ks "$KS" --classes "$classes" --boxes-per-class "$BOXES_PER_CLASS" --threads "$THREADS" \
    --out "$OUT/peer.json" 2>&1 | quiet
}

run() {
  mkdir -p "$OUT"
  "$OVP_PY" bench/peer_ovperc.py prepare "${models_args[@]}" --images "$IMAGES" --out "$OUT" > /dev/null
  local images
  read -r -a images <<< "$(field "$OUT/paths.json" images)"
  echo "# ovperc vs autodistill-grounded-sam 0.1.2: ${#images[@]} image(s) 480x640, K=$KS," \
       "$BOXES_PER_CLASS boxes per class to SAM, $THREADS torch threads, results in $OUT"
  echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores;" \
       "ovperc torch $("$OVP_PY" -c 'import torch; print(torch.__version__)');" \
       "peer $(grep -i -E "^(autodistill-grounded-sam|rf[-_]groundingdino|transformers|torch)==" \
         "$VENV/peer-freeze.txt" | tr '\n' ' ')"
  if [[ "$PARALLEL" == 1 ]]; then
    mark "both parts at once (PARALLEL=1): compare CPU seconds, not wall"
    ovperc_part & local pid=$!
    peer_part
    wait "$pid"
  else
    mark "ovperc: GD-T + SAM-H, then GD-T + SAM-B"
    ovperc_part
    mark "peer: GroundedSAM (GD-T, one pass per class + SAM-H, one decode per box)"
    peer_part
  fi
  mark "done"
  "$OVP_PY" bench/peer_ovperc.py report "$OUT/ovperc.json" "$OUT/peer.json"
}

case "$STEP" in
  setup) setup ;;
  run|all) setup; run ;;
  *) echo "usage: bash bench/peer.sh [setup|run]" >&2; exit 2 ;;
esac
