#!/usr/bin/env bash
# One device session: build the CUDA backend (sm_90 only, plain nvcc: no core-library deps needed),
# run the GPU tests, compute-sanitizer memcheck/racecheck on the quick set, the PyTorch baseline
# and the benchmark. Results go to $OUT (or ./h100-out).
set -uo pipefail
OUT=${OUT:-$PWD/h100-out}
mkdir -p "$OUT" build-h100
B=build-h100
NV="nvcc -std=c++17 -O3 -arch=sm_90 -Icuda -Iinclude -Isrc -Itests/gpu --threads 0"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
t0=$(date +%s)
for s in apply_kernels gemm_kernels backend_ops; do
  $NV -Xptxas -v -c cuda/$s.cu -o $B/$s.o > $B/$s.log 2>&1 &
done
wait
grep -h "error" $B/*.log && { cat $B/*.log | tail -50; exit 1; }
$NV tests/gpu/test_gpu_backend.cu $B/*.o -lcublas -o $B/dc_test_gpu || exit 1
$NV bench/bench_gpu_apply.cu $B/*.o -lcublas -o $B/bench_gpu_apply || exit 1
echo "build: $(( $(date +%s) - t0 )) s" | tee "$OUT/build.txt"
grep -h "registers\|stack" $B/apply_kernels.log | sort | uniq -c | sort -rn | head -5 >> "$OUT/build.txt"

run_tests=${RUN_TESTS:-1}
if [ "$run_tests" = 1 ]; then
  $B/dc_test_gpu 2>&1 | tee "$OUT/test_gpu.txt"; echo "dc_test_gpu exit: ${PIPESTATUS[0]}" | tee -a "$OUT/test_gpu.txt"
  compute-sanitizer --tool memcheck --error-exitcode 3 $B/dc_test_gpu --quick > "$OUT/memcheck.txt" 2>&1
  echo "memcheck exit: $?" | tee -a "$OUT/memcheck.txt"; tail -3 "$OUT/memcheck.txt"
  compute-sanitizer --tool racecheck --error-exitcode 3 $B/dc_test_gpu --quick > "$OUT/racecheck.txt" 2>&1
  echo "racecheck exit: $?" | tee -a "$OUT/racecheck.txt"; tail -3 "$OUT/racecheck.txt"
fi
PYTHONUNBUFFERED=1 python3 bench/torch_baseline.py "$OUT/torch_us.txt" 2>&1 | tee "$OUT/torch.txt"
$B/bench_gpu_apply --torch-us "$OUT/torch_us.txt" 2>&1 | tee "$OUT/bench.txt"
