set -u
export OUT
(tools/device-quick.sh none > $OUT/quick.txt 2>&1) &
(BUILD=build-b EXTRA=-DDC_MMA_NEXT_PREFETCH=0 tools/device-quick.sh none > $OUT/quick_b.txt 2>&1) &
wait; grep build $OUT/quick.txt $OUT/quick_b.txt
for i in 1 2; do timeout 100 build-quick/bench_gpu > $OUT/bench_a$i.txt 2>&1; timeout 100 build-b/bench_gpu > $OUT/bench_b$i.txt 2>&1; done
DELTACOME_GPU_NO_MMA=1 timeout 100 build-quick/bench_gpu > $OUT/bench_nomma.txt 2>&1
grep -hE "tenants x" $OUT/bench_a1.txt $OUT/bench_b1.txt $OUT/bench_a2.txt $OUT/bench_b2.txt $OUT/bench_nomma.txt
DELTACOME_GPU_PERSIST_TRACE=1 build-quick/bench_gpu --profile > $OUT/trace.txt 2>&1; tail -6 $OUT/trace.txt
