#!/usr/bin/env bash
# Runs every libFuzzer target for a bounded time: tests/fuzz/run.sh BUILD_DIR [SECONDS=60]
#
# Each target starts from its committed seed corpus (tests/fuzz/corpus/<name>/) plus the crash
# reproducers (tests/fuzz/regressions/<name>/), copied into a scratch corpus under BUILD_DIR so the
# committed one does not churn. A crash, leak, timeout (>10 s per input) or RSS above 2 GiB stops
# the target and this script exits non-zero, printing the reproducer's path: copy it into
# tests/fuzz/regressions/<name>/ (ctest then replays it in every build) and fix the bug.
set -u
BUILD=${1:?usage: tests/fuzz/run.sh BUILD_DIR [SECONDS]}
SECONDS_PER_TARGET=${2:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$BUILD/fuzz-work
mkdir -p "$WORK"

# target  corpus  max_len  extra flags
TARGETS=(
  "fuzz_container container 65536"
  "fuzz_container_trusted container 65536"
  "fuzz_safetensors safetensors 16384 -dict=$HERE/safetensors.dict"
)

status=0
summary=()
for spec in "${TARGETS[@]}"; do
  read -r target corpus max_len extra <<<"$spec"
  bin=$(find "$BUILD" -type f -name "$target" -perm -u+x | head -n1)
  if [ -z "$bin" ]; then
    echo "run.sh: $target not found under $BUILD (configure with -DDC_FUZZ=ON and clang)" >&2
    exit 2
  fi
  scratch=$WORK/$target
  mkdir -p "$scratch/corpus" "$scratch/artifacts"
  cp -n "$HERE/corpus/$corpus"/* "$scratch/corpus/" 2>/dev/null
  find "$HERE/regressions/$corpus" -type f ! -name README.md -exec cp -n {} "$scratch/corpus/" \; 2>/dev/null
  log=$scratch/log.txt
  echo "== $target: ${SECONDS_PER_TARGET}s, $(ls "$scratch/corpus" | wc -l) inputs to start from"
  # -detect_leaks=1: LeakSanitizer after each input run (libFuzzer checks only when mallocs != frees).
  "$bin" "$scratch/corpus" -max_total_time="$SECONDS_PER_TARGET" -max_len="$max_len" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 -detect_leaks=1 \
    -artifact_prefix="$scratch/artifacts/" $extra >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "!! $target FAILED (exit $rc) after ${execs:-?} executions; last lines of $log:" >&2
    grep -E 'ERROR|SUMMARY|==[0-9]+==|Test unit written|fuzz_container:|fuzz_safetensors:' "$log" | head -n 20 >&2
    ls "$scratch/artifacts" >&2
    summary+=("$target: FAILED after ${execs:-?} executions ($cov)")
  else
    summary+=("$target: ${execs:-?} executions, no crash ($cov, corpus $(ls "$scratch/corpus" | wc -l))")
  fi
done
echo "== fuzz summary"
printf '  %s\n' "${summary[@]}"
exit $status
