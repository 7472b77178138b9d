#!/usr/bin/env bash
# GPU inference check: ONNX export + parity against CUDA PyTorch, and PyTorch CUDA
# FP32/FP16 latency at T = 64, 339, 2615. Pass a run folder to use trained weights.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 bench/gpu_infer.py ${1:+--checkpoint "$1"}
