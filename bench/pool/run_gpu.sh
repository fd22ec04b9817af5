#!/usr/bin/env bash
# Pool benchmarks on a GPU (issue 8, item 4).
#   bench/pool/run_gpu.sh build [BUILD_DIR]   on a machine with nvcc (no GPU needed): builds the core
#                                             library with src/pool, the CUDA backend module, and
#                                             dc_bench_pool_decode / dc_bench_pool_footprint
#   bench/pool/run_gpu.sh run [BUILD_DIR] [OUT_DIR] [bench args...]
#                                             on the GPU machine: runs the decode-step benchmark
# BUILD_DIR defaults to build-pool-gpu. Until the top-level CMakeLists.txt globs src/pool/*.cpp, the
# build step injects it through CMAKE_PROJECT_INCLUDE (no source file is edited).
set -euo pipefail
cd "$(dirname "$0")/../.."
cmd=${1:-}
shift || true
B=${1:-build-pool-gpu}
shift || true
case "$cmd" in
  build)
    mkdir -p "$B"
    inject=()
    if ! grep -q "src/pool" CMakeLists.txt; then
      cat >"$B/pool_inject.cmake" <<'CM'
file(GLOB _DC_POOL_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/pool/*.cpp)
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL target_sources deltacome_objects PRIVATE ${_DC_POOL_SOURCES})
CM
      inject=(-DCMAKE_PROJECT_INCLUDE="$PWD/$B/pool_inject.cmake")
    fi
    cmake -S . -B "$B" -DDC_CUDA=ON -DDC_HIP=OFF -DDC_BUILD_TESTS=OFF -DDC_BUILD_BENCH=OFF \
      -DCMAKE_CUDA_ARCHITECTURES=${DC_CUDA_ARCHS:-90} "${inject[@]}" >/dev/null
    cmake --build "$B" -j "${JOBS:-2}"
    common=(-O2 -std=c++17 -Iinclude -Isrc -I"$B/generated" -Ibench/pool)
    L=/usr/lib/x86_64-linux-gnu
    # static zstd/xxhash/openblas: the GPU machine need not have them
    libs=("$B/libdeltacome.a" $L/libzstd.a $L/libxxhash.a $L/libopenblas.a -lgfortran -lpthread -ldl)
    nvcc "${common[@]}" -arch=sm_${DC_CUDA_ARCHS:-90} bench/pool/decode_step_bench.cu "${libs[@]}" -lcublas \
      -o "$B/dc_bench_pool_decode"
    g++ "${common[@]}" bench/pool/footprint.cpp "${libs[@]}" -o "$B/dc_bench_pool_footprint"
    find "$B" -name 'libdeltacome-cuda.so*' -print
    ;;
  run)
    OUTDIR=${1:-.}
    shift || true
    module=$(dirname "$(find "$B" -name 'libdeltacome-cuda.so' | head -1)")
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    DELTACOME_BACKEND_PATH="$PWD/$module" "$B/dc_bench_pool_decode" "$@" 2>&1 | tee "$OUTDIR/pool_decode.md"
    ;;
  *)
    echo "usage: $0 build|run [BUILD_DIR] ..." >&2
    exit 2
    ;;
esac
