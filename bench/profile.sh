#!/usr/bin/env bash
# Profiles the gateway under the load of bench/load.sh's cases. See docs/performance.md.
#
#   bench/profile.sh                         # callgrind, cases small_post and vps
#   TOOL=perf bench/profile.sh small_post    # perf record (cpu-clock samples) instead
#
# callgrind counts instructions, which is stable on a noisy machine: the gateway runs under
# valgrind with instrumentation off during start-up, switched on for REQUESTS requests of the case
# (oha, 4 clients), and the report gives instructions per request and the top functions by
# self and inclusive instructions. perf samples the gateway at full speed (64 clients, DURATION
# seconds) with DWARF call graphs; this machine has no hardware counters, so it samples
# cpu-clock.
#
# Settings (environment): TOOL (callgrind | perf), REQUESTS (callgrind; 20000, vps 1000),
# DURATION (perf; 10), TOP (functions listed, 25), OUT (target/bench-profile/DATE).
# No pipefail: the reports are cut short with head, which ends their producers early.
set -eu
export GATEWAY_PROFILE="${GATEWAY_PROFILE:-profiling}"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TOOL="${TOOL:-callgrind}"
DURATION="${DURATION:-10}"
TOP="${TOP:-25}"
OUT="${OUT:-$CARGO_TARGET_DIR/bench-profile/$(date +%Y%m%d-%H%M%S)}"
CASES=("$@")
((${#CASES[@]})) || CASES=(small_post vps)

trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_tools
case "$TOOL" in
  callgrind) command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null ;;
  perf) command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null ;;
  *) die "TOOL is callgrind or perf" ;;
esac
build
mkdir -p "$OUT"
write_cases "$OUT"

profile_callgrind() {
  local case="$1" requests="$2" work="$OUT/$1"
  mkdir -p "$work"
  start_backend "$work"
  start_gateway "$work" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/callgrind.out"
  read_case "$OUT" "$case"
  # A few requests first, so that connections and lazy state exist before counting.
  oha_requests "$work/warmup.json" 50
  callgrind_control --instr=on "$GATEWAY_PID" >/dev/null
  oha_requests "$work/oha.json" "$requests"
  callgrind_control --instr=off "$GATEWAY_PID" >/dev/null
  kill -TERM "$GATEWAY_PID"
  wait "$GATEWAY_PID" || true
  cleanup
  local served; served="$(python3 "$ROOT/bench/summarize.py" parse gateway "$work/oha" | cut -f1)"
  {
    echo "## $case (callgrind)"
    echo
    (callgrind_annotate --auto=no --inclusive=no --threshold=100 "$work/callgrind.out"
      echo "=== inclusive"
      callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$work/callgrind.out") 2>/dev/null |
      python3 "$ROOT/bench/summarize.py" callgrind "$served" "$TOP"
    echo
  } | tee "$work/report.md"
}

oha_requests() { # a fixed number of requests at 4 clients
  local out="$1" n="$2"
  local args=(-n "$n" -c 4 --no-tui --output-format json -m "$HTTP_METHOD" -t 60s)
  [[ "$HTTP_BODY" != "-" ]] && args+=(-D "$HTTP_BODY" -T "$(body_type)")
  local header
  while IFS= read -r header; do
    [[ -n "$header" ]] && args+=(-H "$header")
  done < <(other_headers)
  oha "${args[@]}" "http://$GATEWAY_ADDR$HTTP_TARGET" >"$out"
}

profile_perf() {
  local case="$1" work="$OUT/$1"
  mkdir -p "$work"
  start_backend "$work"
  start_gateway "$work"
  read_case "$OUT" "$case"
  oha_run "$work/warmup.json" 2 64
  oha_run "$work/oha.json" "$DURATION" 64 &
  local load=$!
  PIDS+=("$load")
  perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$GATEWAY_PID" \
    -o "$work/perf.data" -- sleep "$((DURATION - 1))" 2>"$work/perf.err" >/dev/null
  wait "$load" || true
  cleanup
  {
    echo "## $case (perf, cpu-clock samples)"
    echo
    echo "### self"
    perf report -i "$work/perf.data" --no-children --sort symbol --stdio -g none \
      --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n "$TOP"
    echo
    echo "### inclusive"
    perf report -i "$work/perf.data" --children --sort symbol --stdio -g none \
      --percent-limit 2 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n "$TOP"
    echo
  } | tee "$work/report.md"
}

for case in "${CASES[@]}"; do
  log "profiling $case with $TOOL"
  if [[ "$TOOL" == callgrind ]]; then
    default=20000
    [[ "$case" == vps ]] && default=1000
    profile_callgrind "$case" "${REQUESTS:-$default}"
  else
    profile_perf "$case"
  fi
done
log "reports in $OUT/*/report.md"
