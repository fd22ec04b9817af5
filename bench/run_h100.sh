#!/usr/bin/env bash
# One device session on a GPU machine without the core library's dependencies: the PyTorch
# baseline (b), then tools/device-quick.sh (plain-nvcc build of the CUDA backend, the GPU test vs
# float64, compute-sanitizer memcheck/racecheck on the quick set, and bench_gpu_apply with (b)).
# Results go to $OUT (or ./h100-out).
set -uo pipefail
export OUT=${OUT:-$PWD/h100-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
PYTHONUNBUFFERED=1 timeout 120 python3 bench/torch_baseline.py "$OUT/torch_us.txt" > "$OUT/torch.txt" 2>&1
[ -s "$OUT/torch_us.txt" ] && export TORCH_US="$OUT/torch_us.txt"
exec "$(dirname "$0")/../tools/device-quick.sh" test sanitize bench
