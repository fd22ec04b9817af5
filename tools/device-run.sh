#!/usr/bin/env bash
# One GPU-machine session for the whole project (used with the `device` tool; .device-deps carried,
# prepared by ../shared/tools/device-deps.sh plus LAPACK/OpenBLAS/gtest): configure the full project
# with the CUDA backend for sm_90, run the GPU tests (CUDA vs float64 and vs the CPU backend), the
# tensor-parallel program on one GPU, the calibration script's test, the benchmark, then
# compute-sanitizer. Results go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT"
DEPS=$PWD/.device-deps/root
export PATH=$DEPS/usr/bin:$PATH LD_LIBRARY_PATH=$DEPS/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export OPENBLAS_NUM_THREADS=4
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
t0=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH=$DEPS/usr -DDC_CUDA=ON -DDC_HIP=OFF \
  -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/cmake.txt" 2>&1 || { tail -30 "$OUT/cmake.txt"; exit 1; }
cmake --build build-gpu -j16 > "$OUT/build.txt" 2>&1 || { grep -B3 -A10 "error" "$OUT/build.txt" | head -60; exit 1; }
echo "configure+build: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
(cd build-gpu && ctest -L gpu -E "memcheck|racecheck" --output-on-failure) > "$OUT/ctest_gpu.txt" 2>&1
echo "ctest gpu: $?" | tee -a "$OUT/summary.txt"; tail -5 "$OUT/ctest_gpu.txt"
BACKEND=cuda BUILD=$PWD/build-gpu DATA=$PWD/build-gpu/tp-data OUT=$OUT/tp timeout 150 bash tests/tp/run_tp.sh > "$OUT/tp.txt" 2>&1
echo "tp: $?" | tee -a "$OUT/summary.txt"; grep -iE "passed|failed|mismatch|µs|us " "$OUT/tp.txt" | tail -15
DELTACOME_CLI=$PWD/build-gpu/deltacome timeout 60 python3 tests/python/test_calibrate.py > "$OUT/calib.txt" 2>&1
echo "calibrate: $?" | tee -a "$OUT/summary.txt"; tail -3 "$OUT/calib.txt"
timeout 60 python3 bench/torch_baseline.py "$OUT/torch_us.txt" > "$OUT/torch.txt" 2>&1
timeout 90 build-gpu/bench/bench_gpu_apply --torch-us "$OUT/torch_us.txt" > "$OUT/bench.txt" 2>&1
echo "bench: $?" | tee -a "$OUT/summary.txt"; tail -25 "$OUT/bench.txt"
(cd build-gpu && timeout 150 ctest -R "memcheck|racecheck" --output-on-failure) > "$OUT/sanitizers.txt" 2>&1
echo "sanitizers: $?" | tee -a "$OUT/summary.txt"; tail -4 "$OUT/sanitizers.txt"
