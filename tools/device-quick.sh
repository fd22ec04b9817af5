#!/usr/bin/env bash
# Kernel iteration on a GPU machine without CMake or FlatBuffers: builds the CUDA backend sources,
# the GPU correctness test (vs float64) and the apply benchmark with plain nvcc for one
# architecture, then runs them. Usage: tools/device-quick.sh [test|bench|ncu|ncu-src|sanitize|ab|none ...]
# (default: test bench). Outputs go to $OUT (or /tmp/device-quick).
# ab: the benchmark once per variant in $AB (';'-separated environment settings, '-' for none),
# ROUNDS times alternating (default 2), one line of the key rows each — A/B in one process order:
#   AB='-;DELTACOME_GPU_NO_MMA=1' tools/device-quick.sh ab
# (BENCH_ARGS='--ms 1,4,8,16,32,64': more token counts; ab then also prints each one's delta-only µs)
# ncu-src: build with EXTRA=-lineinfo; profiles launch NCU_S (default 0) of the kernels matching
# NCU_K in `bench_gpu --profile` (three single M=1 applies, then one 32-tenant batch) with the full
# set, keeps the details page and the per-line source CSV in $OUT, and prints the lines with the
# most stall samples (tools/ncu_lines.py):
#   EXTRA=-lineinfo NCU_K=regex:mma_batch tools/device-quick.sh ncu-src
set -uo pipefail
OUT=${OUT:-/tmp/device-quick}; mkdir -p "$OUT"
A=${ARCH:-90}
B=${BUILD:-build-quick}; mkdir -p "$B"
F=(-O3 -std=c++17 -arch=sm_$A -Isrc -Iinclude -Icuda -Itests/gpu ${EXTRA:-})
t0=$(date +%s)
for f in apply_kernels apply_vec_kernels apply_persist_kernel apply_mma_kernel gemm_kernels backend_ops; do nvcc "${F[@]}" -c cuda/$f.cu -o "$B/$f.o" & done
wait
objs=("$B/apply_kernels.o" "$B/apply_vec_kernels.o" "$B/apply_persist_kernel.o" "$B/apply_mma_kernel.o" "$B/gemm_kernels.o" "$B/backend_ops.o")
nvcc "${F[@]}" tests/gpu/test_gpu_backend.cu "${objs[@]}" -lcublas -o "$B/test_gpu" &
nvcc "${F[@]}" bench/bench_gpu_apply.cu "${objs[@]}" -lcublas -o "$B/bench_gpu" &
wait
[ -x "$B/test_gpu" ] && [ -x "$B/bench_gpu" ] || { echo "build failed"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(test bench)
for s in "${steps[@]}"; do
  case $s in
    test) timeout 300 "$B/test_gpu" > "$OUT/test.txt" 2>&1; echo "test: rc $?"; grep -E "FAIL|checks" "$OUT/test.txt" | tail -15 ;;
    bench) timeout 120 "$B/bench_gpu" ${TORCH_US:+--torch-us $TORCH_US} > "$OUT/bench.txt" 2>&1; echo "bench: rc $?"; tail -22 "$OUT/bench.txt" ;;
    ncu) timeout 200 ncu -k regex:"${NCU_K:-p1_vec|rows_vec}" -c ${NCU_C:-4} --section SpeedOfLight --section WarpStateStats \
           --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis "$B/bench_gpu" > "$OUT/ncu.txt" 2>&1
         echo "ncu: rc $?"; grep -E "_kernel|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Registers Per|Stall|One or More|Compute \(SM\)|Theoretical Occ" "$OUT/ncu.txt" | head -60 ;;
    sanitize) timeout 300 compute-sanitizer --tool memcheck --error-exitcode 3 "$B/test_gpu" --quick > "$OUT/memcheck.txt" 2>&1; echo "memcheck: rc $?"; tail -3 "$OUT/memcheck.txt"
              # racecheck reports hazards inside cuBLAS's own nvjet_sm90 kernels (the base GEMM of m > 1
              # and of batches), which it does not model: with the portable GEMM only deltacome's run
              DELTACOME_GPU_PORTABLE_GEMM=1 timeout 300 compute-sanitizer --tool racecheck --error-exitcode 3 "$B/test_gpu" --quick > "$OUT/racecheck.txt" 2>&1; echo "racecheck: rc $?"; tail -3 "$OUT/racecheck.txt" ;;
    ncu-src) timeout 300 ncu --set full -k "${NCU_K:-regex:mma_batch}" -s ${NCU_S:-0} -c 1 -f -o "$OUT/kernel" "$B/bench_gpu" --profile \
               > "$OUT/ncu_run.txt" 2>&1; echo "ncu-src: rc $?"
             ncu --import "$OUT/kernel.ncu-rep" --page details > "$OUT/kernel_details.txt" 2>&1
             ncu --import "$OUT/kernel.ncu-rep" --page source --csv --print-source cuda,sass > "$OUT/kernel_source.csv" 2>&1
             rm -f "$OUT/kernel.ncu-rep"
             grep -E "Duration|Registers Per|Warp Cycles Per Issued|Issued Ipc Active|Eligible Warps" "$OUT/kernel_details.txt" | head -8
             python3 tools/ncu_lines.py "$OUT/kernel_source.csv" --top ${NCU_TOP:-25} ;;
    ab) IFS=';' read -ra variants <<< "${AB:--}"
        # the rows also go to $OUT/ab_rows.txt as they come: a call cut at its time limit keeps them
        echo "variant: cuBLAS M=1 | delta M=1 | fused M=1 | delta M=16 | fused M=16 | delta M=64 | 32 tenants | bmm (us)" |
          tee "$OUT/ab_rows.txt"
        for ((round = 0; round < ${ROUNDS:-2}; ++round)); do
          for v in "${variants[@]}"; do
            [ "$v" = "-" ] && v=""
            env $v timeout 120 "$B/bench_gpu" ${BENCH_ARGS:-} > "$OUT/ab.txt" 2>&1
            row() { grep -E "$1" "$OUT/ab.txt" | head -1 | awk '{print $(NF-1)}'; }
            printf "%-44s %s | %s | %s | %s | %s | %s | %s | %s\n" "${v:-default}" "$(row 'cuBLAS fp16 base .*M=1 ')" \
              "$(row 'delta only\), M=1 ')" "$(row 'fused base\+delta, M=1 ')" "$(row 'delta only\), M=16 ')" \
              "$(row 'fused base\+delta, M=16 ')" "$(row 'delta only\), M=64 ')" "$(row '32 tenants x 1 token')" \
              "$(row 'bmm 32 tenants')" | tee -a "$OUT/ab_rows.txt"
            # with BENCH_ARGS='--ms …': every token count's delta-only time
            [ -n "${BENCH_ARGS:-}" ] && grep -E "delta only\), M=" "$OUT/ab.txt" | awk '{printf "  M=%s %s", substr($(NF-2), 3), $(NF-1)} END {print ""}' |
              tee -a "$OUT/ab_rows.txt"
          done
        done ;;
  esac
done
