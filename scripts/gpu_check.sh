#!/usr/bin/env bash
# Exercise every GPU path (CUDA fine-tuning with bf16/fp16 autocast, DDP over NCCL with 2+ GPUs, ONNX Runtime's CUDA
# provider for extraction and evaluation with parity against the CPU provider, `headstart serve` on CUDA answering
# tritonclient), each timed against the CPU in the same run: one line per path, under 10 minutes on one GPU.
# Without CUDA: one line saying it skipped, exit 0. Downloads nothing (run scripts/install.sh first, once).
# Details: scripts/gpu_check.py; `--cpu-rehearsal` runs the same steps on the CPU to check the script itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ "${1:-}" != "--cpu-rehearsal" ]] && ! compgen -G "/dev/nvidia[0-9]*" >/dev/null; then
  echo "gpu_check: skipped: no CUDA device here (no /dev/nvidia*); nothing was run"
  exit 0
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "gpu_check: no .venv: run 'bash scripts/install.sh' first (this check installs and downloads nothing)" >&2
  exit 2
fi
source scripts/env.sh
exec python -m scripts.gpu_check "$@"
