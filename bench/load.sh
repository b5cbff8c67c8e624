#!/usr/bin/env bash
# The load benchmark: protogate in front of a tonic gRPC backend, side by side with Envoy's
# gRPC-JSON transcoder in front of the same backend and with direct gRPC to it, on loopback,
# the sides taking turns run by run. See docs/performance.md.
#
#   bench/load.sh                      # 3 runs x 10 s per case, side and concurrency (about 25 minutes)
#   DURATION=5 RUNS=1 bench/load.sh    # a quick look
#   SOAK=300 bench/load.sh             # also 5 minutes of VPS load, sampling the gateway's RSS
#
# Settings (environment): DURATION (seconds per measured run, 10), RUNS (3), CONCURRENCY
# ("32 64"), CASES ("small_post get_query vps vps_gzip vps_connect_json vps_connect_proto
# vps_protobuf vps_multipart ws_echo"; vps_gzip is vps with its body gzip-compressed and
# `Accept-Encoding: gzip`; ws_echo is a bidi echo over WebSocket sessions), ENVOY (1; 0 leaves
# Envoy out), ENVOY_CASES (the cases Envoy has an equivalent of: "small_post get_query vps
# vps_gzip"), WARMUP (seconds per case and side before measuring, 2), QUIET_WAIT (seconds to
# wait before each run for other processes to leave the CPUs idle, 0), IDLE_CONNECTIONS (1000;
# 0 skips), SOAK (0 seconds), H2LOAD_THREADS (threads of h2load and of the echo load
# generator, 1), OUT (results directory, target/bench-load/DATE).
#
# Per case and concurrency it prints the medians over the runs of requests/s, p50 and p99
# latency, each proxy's CPU time per request (utime+stime from /proc/PID/stat over the run,
# divided by the requests completed), its peak RSS during the run (VmHWM, reset before each
# run), and protogate's ratios to Envoy and to direct gRPC (h2load, the same message framed,
# one stream per client). For ws_echo a request is one message and its echo.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION="${DURATION:-10}"
RUNS="${RUNS:-3}"
CONCURRENCY="${CONCURRENCY:-32 64}"
CASES="${CASES:-small_post get_query vps vps_gzip vps_connect_json vps_connect_proto vps_protobuf vps_multipart ws_echo}"
ENVOY="${ENVOY:-1}"
ENVOY_CASES="${ENVOY_CASES:-small_post get_query vps vps_gzip}"
WARMUP="${WARMUP:-2}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-1000}"
SOAK="${SOAK:-0}"
QUIET_WAIT="${QUIET_WAIT:-0}"
OUT="${OUT:-$CARGO_TARGET_DIR/bench-load/$(date +%Y%m%d-%H%M%S)}"

trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

ensure_tools
((ENVOY)) && ensure_envoy
build
mkdir -p "$OUT/raw"
write_cases "$OUT"
start_backend "$OUT"
start_gateway "$OUT"
ENVOY_PID=""
if ((ENVOY)); then
  start_envoy "$OUT"
  log "Envoy $ENVOY_VERSION $ENVOY_ADDR (pid $ENVOY_PID)"
fi
log "backend $BACKEND_ADDR (pid $BACKEND_PID), gateway $GATEWAY_ADDR (pid $GATEWAY_PID); results in $OUT"

RESULTS="$OUT/runs.tsv"
# proxy_*: the gateway's on the gateway side, Envoy's on Envoy's, none (0) for direct gRPC.
printf 'side\tcase\tclients\trun\trequests\terrors\tseconds\tproxy_ticks\tbackend_ticks\tproxy_hwm_kb\tp50_ms\tp99_ms\tloadgen_ticks\tmachine_ticks\n' >"$RESULTS"

# --- memory at rest, and with idle keep-alive connections ---
idle_connections() {
  local n="$1"
  read_case "$OUT" get_query
  local before; before="$(status_kb "$GATEWAY_PID" VmRSS)"
  python3 "$ROOT/bench/idle_clients.py" "$GATEWAY_ADDR" "$HTTP_TARGET" "$n" 120 >"$OUT/idle.out" &
  local client=$!
  PIDS+=("$client")
  wait_for 60 grep -q '^ready' "$OUT/idle.out" || die "idle clients: $(cat "$OUT/idle.out")"
  sleep 1
  local after; after="$(status_kb "$GATEWAY_PID" VmRSS)"
  kill "$client" 2>/dev/null || true
  wait "$client" 2>/dev/null || true
  printf 'rss_at_rest_kb\t%s\nrss_with_%s_idle_connections_kb\t%s\n' "$before" "$n" "$after" >>"$OUT/memory.tsv"
  log "gateway RSS: $((before / 1024)) MB at rest, $((after / 1024)) MB with $n idle keep-alive connections"
}

# --- one load run of one side; CASE is the case read last ---
load_run() {
  local side="$1" case="$2" out="$3" seconds="$4" clients="$5"
  case "$side/$case" in
    gateway/ws_echo) ws_run "$out.json" "$seconds" "$clients" ;;
    direct/ws_echo) bidi_run "$out.json" "$seconds" "$clients" ;;
    gateway/*) oha_run "$out.json" "$seconds" "$clients" "$GATEWAY_ADDR" ;;
    envoy/*) oha_run "$out.json" "$seconds" "$clients" "$ENVOY_ADDR" ;;
    direct/*) h2load_run "$out.txt" "$seconds" "$clients" ;;
  esac
}

proxy_pid() {
  case "$1" in
    gateway) echo "$GATEWAY_PID" ;;
    envoy) echo "$ENVOY_PID" ;;
    *) echo "" ;;
  esac
}

# --- one measured run of one side ---
measure() {
  local side="$1" case="$2" clients="$3" run="$4"
  local raw="$OUT/raw/$side-$case-$clients-$run"
  local proxy; proxy="$(proxy_pid "$side")"
  ((QUIET_WAIT > 0)) && wait_quiet "$QUIET_WAIT"
  [[ -n "$proxy" ]] && reset_peak_rss "$proxy"
  local p0=0 b0 l0 m0 p1=0 b1 l1 m1 hwm=0
  [[ -n "$proxy" ]] && p0="$(cpu_ticks "$proxy")"
  b0="$(cpu_ticks "$BACKEND_PID")"; l0="$(child_ticks)"; m0="$(machine_ticks)"
  load_run "$side" "$case" "$raw" "$DURATION" "$clients"
  [[ -n "$proxy" ]] && p1="$(cpu_ticks "$proxy")"
  b1="$(cpu_ticks "$BACKEND_PID")"; l1="$(child_ticks)"; m1="$(machine_ticks)"
  [[ -n "$proxy" ]] && hwm="$(status_kb "$proxy" VmHWM)"
  python3 "$ROOT/bench/summarize.py" parse "$side" "$raw" |
    awk -v s="$side" -v c="$case" -v n="$clients" -v r="$run" -v p=$((p1 - p0)) -v b=$((b1 - b0)) -v h="$hwm" \
      -v l=$((l1 - l0)) -v m=$((m1 - m0)) \
      'BEGIN { OFS = "\t" } { print s, c, n, r, $1, $2, $3, p, b, h, $4, $5, l, m }' >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -v t="$CLK_TCK" '{ printf "  %-7s %-17s c=%-3s run %s: %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU us/req: proxy %6.1f, backend %6.1f\n", $1, $2, $3, $4, $5 / $7, $11, $12, ($5 > 0 ? $8 / t / $5 * 1e6 : 0), ($5 > 0 ? $9 / t / $5 * 1e6 : 0) }' >&2
}

if ((IDLE_CONNECTIONS > 0)); then
  idle_connections "$IDLE_CONNECTIONS"
fi

max_clients=0
for clients in $CONCURRENCY; do ((clients > max_clients)) && max_clients=$clients; done

for case in $CASES; do
  read_case "$OUT" "$case"
  sides=(gateway)
  if ((ENVOY)) && [[ " $ENVOY_CASES " == *" $case "* ]]; then sides+=(envoy); fi
  sides+=(direct)
  envoy_addr=""
  [[ " ${sides[*]} " == *" envoy "* ]] && envoy_addr="$ENVOY_ADDR"
  check_case "$case" "$OUT/raw" "$envoy_addr"
  log "$case: $HTTP_METHOD $HTTP_TARGET -> $GRPC_PATH (${sides[*]}); warming up"
  for side in "${sides[@]}"; do
    load_run "$side" "$case" "$OUT/raw/warmup-$side-$case" "$WARMUP" "$max_clients"
  done
  for clients in $CONCURRENCY; do
    for run in $(seq 1 "$RUNS"); do
      # The sides take turns: each run starts with the next one.
      n=${#sides[@]}
      for ((i = 0; i < n; i++)); do
        measure "${sides[(i + run - 1) % n]}" "$case" "$clients" "$run"
      done
    done
  done
done

printf 'rss_after_load_kb\t%s\n' "$(status_kb "$GATEWAY_PID" VmRSS)" >>"$OUT/memory.tsv"

# --- the soak: VPS load at the highest concurrency, RSS every 10 s ---
if ((SOAK > 0)); then
  read_case "$OUT" vps
  log "soak: $SOAK s of vps at $max_clients clients"
  oha_run "$OUT/raw/soak.json" "$SOAK" "$max_clients" &
  soak=$!
  PIDS+=("$soak")
  : >"$OUT/soak.tsv"
  start=$SECONDS
  while kill -0 "$soak" 2>/dev/null; do
    printf '%s\t%s\n' "$((SECONDS - start))" "$(status_kb "$GATEWAY_PID" VmRSS)" >>"$OUT/soak.tsv"
    sleep 10
  done
  wait "$soak" || true
fi

python3 "$ROOT/bench/summarize.py" report "$OUT" "$CLK_TCK" | tee "$OUT/summary.md"
