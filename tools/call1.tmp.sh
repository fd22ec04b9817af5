set -u
export OUT
tools/device-quick.sh test > $OUT/quick.txt 2>&1; tail -4 $OUT/quick.txt
grep -E "odd shapes|FAIL" $OUT/test.txt | head -20
DELTACOME_GPU_PERSIST_TRACE=1 build-quick/bench_gpu --profile > $OUT/trace.txt 2>&1; tail -7 $OUT/trace.txt
timeout 100 build-quick/bench_gpu > $OUT/bench_mma1.txt 2>&1; DELTACOME_GPU_NO_MMA=1 timeout 100 build-quick/bench_gpu > $OUT/bench_nomma1.txt 2>&1
grep -hE "tenants" $OUT/bench_mma1.txt $OUT/bench_nomma1.txt
