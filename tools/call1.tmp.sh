set -u
export OUT
(tools/device-quick.sh none > $OUT/quick.txt 2>&1) &
(BUILD=build-b EXTRA=-DDC_MMA_MIN_BLOCKS=3 tools/device-quick.sh none > $OUT/quick_b.txt 2>&1) &
wait; tail -1 $OUT/quick.txt $OUT/quick_b.txt 2>/dev/null | grep build
for i in 1 2; do timeout 100 build-quick/bench_gpu > $OUT/bench_a$i.txt 2>&1; timeout 100 build-b/bench_gpu > $OUT/bench_b$i.txt 2>&1; done
grep -hE "tenants x" $OUT/bench_a1.txt $OUT/bench_b1.txt $OUT/bench_a2.txt $OUT/bench_b2.txt
DELTACOME_GPU_PERSIST_TRACE=1 build-quick/bench_gpu --profile > $OUT/trace.txt 2>&1; tail -7 $OUT/trace.txt
timeout 300 build-quick/test_gpu --quick > $OUT/test.txt 2>&1; echo test rc $?; grep -E "FAIL|checks" $OUT/test.txt | tail -5
