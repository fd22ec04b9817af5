set -u
export OUT
tools/device-quick.sh none > $OUT/quick.txt 2>&1; tail -2 $OUT/quick.txt
timeout 100 build-quick/bench_gpu > $OUT/bench_pf.txt 2>&1; DELTACOME_GPU_MMA_NO_PREFETCH=1 timeout 100 build-quick/bench_gpu > $OUT/bench_nopf.txt 2>&1
grep -hE "tenants x" $OUT/bench_pf.txt $OUT/bench_nopf.txt
DELTACOME_GPU_PERSIST_TRACE=1 build-quick/bench_gpu --profile > $OUT/trace.txt 2>&1; tail -7 $OUT/trace.txt
timeout 300 build-quick/test_gpu > $OUT/test.txt 2>&1; echo test rc $?; grep -E "FAIL|checks" $OUT/test.txt | tail -5
