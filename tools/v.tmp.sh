set -u
export OUT
tools/device-quick.sh test > $OUT/quick.txt 2>&1; grep -vE "^\s*$" $OUT/quick.txt | tail -3
timeout 100 build-quick/bench_gpu > $OUT/bench.txt 2>&1; DELTACOME_GPU_NO_MMA=1 timeout 100 build-quick/bench_gpu > $OUT/bench_nomma.txt 2>&1
grep -hE "M=1 |tenants x|bmm" $OUT/bench.txt $OUT/bench_nomma.txt
