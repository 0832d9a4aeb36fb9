#!/usr/bin/env bash
# The GPU path in one go, for a machine with a CUDA GPU (about 5 minutes on one H100/H200):
#   1. training throughput of the paper preset, fp32 against bf16 autocast, side by side;
#   2. inference of a 45-minute half with the audio branch;
#   3. a simulated dataset, then `astra train` on the GPU (bf16 autocast, audio on), a resumed
#      run, `astra predict` and `astra evaluate`: the commands a user runs, end to end.
#
#   bash benchmarks/gpu_check.sh [WORK_DIR]        # default WORK_DIR: runs/gpu_check
#
# PYTHON picks the interpreter (default: .venv/bin/python if it exists, else python3); with a
# plain python3, the repository root is put on PYTHONPATH so that `-m astra` runs from the tree.
set -euo pipefail
# WORK_DIR is taken relative to where the script is called from, and must be new or a folder
# this script made before (it is emptied).
if [[ -n "${1:-}" ]]; then WORK=$(realpath -m -- "$1"); fi
cd "$(dirname "$0")/.."
WORK=${WORK:-$PWD/runs/gpu_check}
if [[ -e "$WORK" && ! -f "$WORK/.gpu_check" ]]; then
  echo "gpu_check: $WORK exists and was not made by this script; give a new folder" >&2
  exit 2
fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
astra() { "$PYTHON" -m astra "$@"; }
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch, torchaudio; print('torch', torch.__version__, '| torchaudio', torchaudio.__version__,
'| bf16', torch.cuda.is_bf16_supported(), '|', torch.cuda.get_device_name())"

step "training throughput, paper preset, batch 8"
for precision in fp32 bf16; do
  "$PYTHON" benchmarks/train_throughput.py --device cuda --precision "$precision" --steps 20 --flops
done
for precision in fp32 bf16; do
  "$PYTHON" benchmarks/train_throughput.py --device cuda --precision "$precision" --steps 10 --audio
done

step "inference of a 45-minute half, paper preset with audio"
"$PYTHON" benchmarks/inference_speed.py --device cuda --audio

step "end to end on a simulated dataset: train (bf16, audio), resume, predict, evaluate"
rm -rf "$WORK"
mkdir -p "$WORK" && touch "$WORK/.gpu_check"
astra synth "$WORK/data" --games 12 --half-minutes 4 --quiet
astra train --config configs/small.yaml --data "$WORK/data" --out "$WORK/run" \
  train.epochs=3 train.warmup_epochs=1
# The same command with more epochs resumes from the last checkpoint.
astra train --config configs/small.yaml --data "$WORK/data" --out "$WORK/run" \
  train.epochs=4 train.warmup_epochs=1
astra predict --checkpoint "$WORK/run/checkpoints/best.pt" --data "$WORK/data" --split test --out "$WORK/test"
astra evaluate --labels "$WORK/data" --predictions "$WORK/test/predictions.zip" --split test --metric tight
step "done"
