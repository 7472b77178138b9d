#!/usr/bin/env bash
# Times HAM-Net training on a CUDA GPU: one epoch, then the full THUMOS14 recipe
# (D = 2048, 100 epochs, batch 20, 500 snippets, AMP) on the synthetic dataset with
# THUMOS14's real timelines when ../shared is present (parametric timelines otherwise).
#
#   bash bench/gpu_train.sh            # both timings
#   EPOCHS_ONLY=1 bash bench/gpu_train.sh   # only the one-epoch timing
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY' || { echo "error: no CUDA GPU visible to PyTorch; run this on a GPU machine" >&2; exit 2; }
import torch, sys
sys.exit(0 if torch.cuda.is_available() else 1)
PY
timelines="../shared/data/thumos14-reduced/thumos14-reduced.json"
[ -f "$timelines" ] || timelines=""
data=$(python3 - "$timelines" <<'PY'
import sys
from training.embedded import embedded_dataset
t = sys.argv[1] or None
print(embedded_dataset(dim=2048, videos=0 if t else 412, seed=0, timelines=t))
PY
)
out=${OUT_DIR:-runs/gpu-bench}
HAMNET=${HAMNET:-hamnet}  # e.g. HAMNET="python3 -m hamnet_deploy.cli" without an install
rm -rf "$out"
python3 -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"
start=$(date +%s.%N)
$HAMNET train --data "$data" --out "$out/one-epoch" --epochs 1 --device cuda --quiet
one=$(python3 -c "print(round($(date +%s.%N) - $start, 1))")
echo "one epoch (incl. start-up and evaluation): ${one} s"
if [ -z "${EPOCHS_ONLY:-}" ]; then
  start=$(date +%s.%N)
  $HAMNET train --data "$data" --out "$out/full" --device cuda --quiet --eval-every 100
  full=$(python3 -c "print(round($(date +%s.%N) - $start, 1))")
  echo "full THUMOS14 recipe, 100 epochs: ${full} s"
  tail -n 1 "$out/full/metrics.jsonl"
fi
