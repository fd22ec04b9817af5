#!/usr/bin/env bash
# Runs the tensor-parallel test program (tests/tp/tp_delta_test.py) on whatever this machine has:
#   - every shard count in one process on one device (--mode single, world 1, 2, 3, 4, 8),
#   - 2 processes sharing device 0 (gloo),
#   - with 2 or more GPUs: one process per GPU over NCCL (issue 10's run).
# Exits non-zero if any run reports a mismatch.
#
#   BACKEND=cuda|cpu   (default cuda)     BUILD=build dir (default build-gpu, or build-tp for cpu)
#   DATA=containers dir (default build-tp/tp-data; made with make_containers.py when missing)
#   OUT=where the JSON results go (default /tmp/tp-out)   ONLY_MULTI_GPU=1: skip the one-GPU runs
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BACKEND=${BACKEND:-cuda}
if [ "$BACKEND" = cuda ]; then BUILD=${BUILD:-$ROOT/build-gpu}; else BUILD=${BUILD:-$ROOT/build-tp}; fi
DATA=${DATA:-$ROOT/build-tp/tp-data}
OUT=${OUT:-/tmp/tp-out}
PY=${PY:-python3}
mkdir -p "$OUT"
# Never NVLink multicast (KINDS.md): it can take a shared host's GPUs down.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1

if [ ! -f "$BUILD/libdeltacome.so" ]; then
  cuda_flag=OFF; [ "$BACKEND" = cuda ] && cuda_flag=ON
  cmake -S "$ROOT" -B "$BUILD" -DDC_CUDA=$cuda_flag -DDC_HIP=OFF -DDC_BUILD_TESTS=OFF -DDC_BUILD_BENCH=OFF >"$OUT/cmake.log"
  cmake --build "$BUILD" -j"$(nproc)" >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 2; }
fi
export DELTACOME_LIB=$BUILD/libdeltacome.so
module=$(find "$BUILD" -name 'libdeltacome-cuda.so' | head -1 || true)
[ -n "$module" ] && export DELTACOME_BACKEND_PATH=$(dirname "$module")
[ -f "$DATA/layers.json" ] || $PY "$ROOT/tests/tp/make_containers.py" "$DATA" --cli "$BUILD/deltacome"

T="$PY $ROOT/tests/tp/tp_delta_test.py --containers $DATA --backend $BACKEND"
status=0
run() { echo; echo "### $*"; "$@" || status=1; }
if [ -z "${ONLY_MULTI_GPU:-}" ]; then  # ONLY_MULTI_GPU=1: just the one-process-per-GPU run
  run $T --world 1 --mode single --json "$OUT/single-w1.json"
  for w in 2 3 4 8; do
    run $T --world $w --mode single --time-m 1,16,512 --json "$OUT/single-w$w.json"
  done
  run $T --world 2 --mode procs --dist gloo --time-schemes none --json "$OUT/procs-w2-shared.json"
fi
ngpu=0
[ "$BACKEND" = cuda ] && ngpu=$($PY -c 'import torch; print(torch.cuda.device_count())')
if [ "$ngpu" -ge 2 ]; then
  run $T --world "$ngpu" --mode procs --dist nccl --json "$OUT/procs-w$ngpu-nccl.json"
fi
exit $status
