set -u
export OUT
tools/device-quick.sh test > $OUT/quick.txt 2>&1; cat $OUT/quick.txt | tail -20
grep -E "odd shapes|batched .*x.* err|FAIL" $OUT/test.txt | head -40
timeout 100 build-quick/bench_gpu > $OUT/bench_mma1.txt 2>&1; DELTACOME_GPU_NO_MMA=1 timeout 100 build-quick/bench_gpu > $OUT/bench_nomma1.txt 2>&1
grep -hE "tenants|bmm" $OUT/bench_mma1.txt $OUT/bench_nomma1.txt
