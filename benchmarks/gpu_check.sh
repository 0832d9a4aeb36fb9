#!/usr/bin/env bash
# The GPU path in one go, for a machine with a CUDA GPU (about 6 minutes on one H100/H200):
#   1. where one bf16 training step of the paper preset (batch 8, visual only) spends its time:
#      the PyTorch profiler's kernels by GPU time and operators by host time;
#   2. training throughput of the paper preset, fp32 against bf16 autocast, with the step's rate
#      against a bare bf16 matrix product of the model's own shape in the same process;
#   3. torch.compile of the training forward (train.compile: default, reduce-overhead) against
#      eager, bf16, side by side in one process (max-autotune with GPU_CHECK_AUTOTUNE=1: it
#      compiles for minutes);
#   4. inference of a 45-minute half with the audio branch;
#   5. a simulated dataset, then `astra train` on the GPU (bf16 autocast, audio on), a resumed
#      run, `astra predict` and `astra evaluate`: the commands a user runs, end to end.
#
#   bash benchmarks/gpu_check.sh [WORK_DIR]        # default WORK_DIR: runs/gpu_check
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh /tmp/check   # a rehearsal on the CPU
#
# The rehearsal runs every step on the CPU, small: the small preset's step for 1-3, a 2-minute
# half for 4 (no compiling: tests/training/test_compile.py checks a compiled step on the CPU).
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

DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [[ "$DEVICE" == cpu ]]; then
  # The rehearsal: the same steps, sized for a CPU.
  THROUGHPUT=(--config configs/small.yaml --device cpu)
  INFERENCE=(--device cpu --minutes 2 --batch-size 4)
  PRESET="small preset (CPU rehearsal)"
else
  THROUGHPUT=(--device "$DEVICE")
  INFERENCE=(--device "$DEVICE" --audio)
  PRESET="paper preset"
fi

step "machine"
if [[ "$DEVICE" != cpu ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PYTHON" -c "import torch, torchaudio; print('torch', torch.__version__, '| torchaudio', torchaudio.__version__,
'| bf16', torch.cuda.is_bf16_supported(), '|', torch.cuda.get_device_name())"
else
  "$PYTHON" -c "import torch; print('torch', torch.__version__, '| CPU rehearsal,', torch.get_num_threads(), 'threads')"
fi

step "where a bf16 step goes ($PRESET, batch 8, visual only)"
"$PYTHON" benchmarks/train_throughput.py "${THROUGHPUT[@]}" --precision bf16 --steps 5 --profile

step "training throughput, $PRESET, batch 8"
for precision in fp32 bf16; do
  "$PYTHON" benchmarks/train_throughput.py "${THROUGHPUT[@]}" --precision "$precision" --steps 20 --flops
done
for precision in fp32 bf16; do
  "$PYTHON" benchmarks/train_throughput.py "${THROUGHPUT[@]}" --precision "$precision" --steps 10 --audio
done

step "torch.compile of the training step against eager, bf16"
if [[ "$DEVICE" == cpu ]]; then
  echo "skipped on the CPU (compiling takes minutes there; tests/training/test_compile.py checks it)"
else
  modes=(default reduce-overhead)
  if [[ -n "${GPU_CHECK_AUTOTUNE:-}" ]]; then modes+=(max-autotune); fi
  for mode in "${modes[@]}"; do
    "$PYTHON" benchmarks/train_throughput.py "${THROUGHPUT[@]}" --precision bf16 --steps 20 --flops \
      --compare-with "train.compile=$mode"
  done
fi

step "inference of a half, $PRESET"
"$PYTHON" benchmarks/inference_speed.py "${INFERENCE[@]}"

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
