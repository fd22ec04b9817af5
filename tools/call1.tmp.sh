set -u
export OUT
tools/device-quick.sh none > $OUT/quick.txt 2>&1; tail -2 $OUT/quick.txt
DELTACOME_GPU_PERSIST_TRACE=1 build-quick/bench_gpu --profile > $OUT/trace.txt 2>&1; cat $OUT/trace.txt | tail -8
timeout 200 ncu -k regex:mma_batch -c 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis --section SourceCounters build-quick/bench_gpu --profile > $OUT/ncu_mma.txt 2>&1; echo ncu rc $?
grep -E "Duration|DRAM Throughput|Issued Ipc|Warp Cycles Per Issued|Executed Instructions |Registers Per|Achieved Occ|No Eligible|Stall|Grid Size|L2 Hit|L1/TEX Hit" $OUT/ncu_mma.txt | head -40
