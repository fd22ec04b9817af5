#!/usr/bin/env bash
# Pool benchmarks on a GPU (issue 8, item 4).
#   bench/pool/run_gpu.sh build [BUILD_DIR]   on a machine with nvcc (no GPU needed): builds the core
#                                             library, the CUDA backend module (plain nvcc, sm_90 or
#                                             $DC_CUDA_ARCHS), dc_bench_pool_decode, dc_bench_pool_footprint
#   bench/pool/run_gpu.sh run [BUILD_DIR] [OUT_DIR] [bench args...]
#                                             on the GPU machine: runs the decode-step benchmark
# BUILD_DIR defaults to build-pool-gpu. Carry BUILD_DIR/dc_bench_pool_decode and BUILD_DIR/pool-module
# to the GPU machine (static zstd/xxhash/openblas; only the CUDA runtime and cuBLAS are needed there).
set -euo pipefail
cd "$(dirname "$0")/../.."
cmd=${1:-}
shift || true
B=${1:-build-pool-gpu}
shift || true
case "$cmd" in
  build)
    # The core library only (the backend module is linked below with plain nvcc).
    cmake -S . -B "$B" -DDC_CUDA=OFF -DDC_HIP=OFF -DDC_BUILD_TESTS=OFF -DDC_BUILD_BENCH=OFF >/dev/null
    cmake --build "$B" -j "${JOBS:-2}"
    common=(-O2 -std=c++17 -Iinclude -Isrc -I"$B/generated" -Ibench/pool)
    L=/usr/lib/x86_64-linux-gnu
    # static zstd/xxhash/openblas: the GPU machine need not have them
    libs=("$B/libdeltacome.a" $L/libzstd.a $L/libxxhash.a $L/libopenblas.a -lgfortran -lpthread -ldl)
    nvcc "${common[@]}" -arch=sm_${DC_CUDA_ARCHS:-90} bench/pool/decode_step_bench.cu "${libs[@]}" -lcublas \
      -o "$B/dc_bench_pool_decode"
    g++ "${common[@]}" bench/pool/footprint.cpp "${libs[@]}" -o "$B/dc_bench_pool_footprint"
    # The backend module, linked by plain nvcc so that dc_backend_module_get is exported (see
    # docs/POOL.md, "Open items", for the CMake-built module).
    mkdir -p "$B/pool-module"
    for s in apply_kernels apply_vec_kernels gemm_kernels backend_ops; do
      nvcc -std=c++17 -O3 -arch=sm_${DC_CUDA_ARCHS:-90} -Xcompiler -fPIC -Icuda -Iinclude -Isrc --threads 0 \
        -c cuda/$s.cu -o "$B/pool-module/$s.o" &
    done
    wait
    nvcc -shared -arch=sm_${DC_CUDA_ARCHS:-90} "$B"/pool-module/*.o -lcublas -o "$B/pool-module/libdeltacome-cuda.so"
    nm -D "$B/pool-module/libdeltacome-cuda.so" | grep -q dc_backend_module_get
    ;;
  run)
    OUTDIR=${1:-.}
    shift || true
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    DELTACOME_BACKEND_PATH="$PWD/$B/pool-module" "$B/dc_bench_pool_decode" "$@" 2>&1 | tee "$OUTDIR/pool_decode.md"
    ;;
  *)
    echo "usage: $0 build|run [BUILD_DIR] ..." >&2
    exit 2
    ;;
esac
