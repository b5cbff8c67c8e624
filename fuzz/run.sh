#!/usr/bin/env bash
# Runs fuzz targets under libFuzzer (cargo fuzz, nightly): each named target (default: all)
# for SECONDS seconds (default 600), from the seed corpus in tests/fuzz/corpus/<target>/.
# New inputs go to a scratch corpus (fuzz/corpus/<target>/, not committed); crashes go to
# fuzz/artifacts/<target>/ and belong, once fixed, in tests/fuzz/regressions/<target>/.
#
#   fuzz/run.sh                       # every target, 10 minutes each, one after another
#   SECONDS_PER_TARGET=60 fuzz/run.sh json_request query
#   JOBS=2 fuzz/run.sh                # two targets at a time
set -euo pipefail
cd "$(dirname "$0")"

seconds="${SECONDS_PER_TARGET:-600}"
jobs="${JOBS:-1}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(template matcher json_request json_response query frame grpc_timeout percent_decode)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo fuzz is required: cargo install cargo-fuzz --locked" >&2
  exit 1
fi
toolchain="${FUZZ_TOOLCHAIN:-+nightly}"
cargo "$toolchain" fuzz build >/dev/null

run_one() {
  local t="$1"
  mkdir -p "corpus/$t" "artifacts/$t"
  cargo "$toolchain" fuzz run "$t" "corpus/$t" "../tests/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"artifacts/$t.log" 2>&1
  local status=$?
  echo "$t: exit $status, $(grep -E '^stat::number_of_executed_units' "artifacts/$t.log" | awk '{print $2}') runs in ${seconds}s, corpus $(ls "corpus/$t" | wc -l)"
  return $status
}

failed=0
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
exit "$failed"
