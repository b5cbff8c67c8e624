# Shared by bench/load.sh and bench/profile.sh (sourced, not run): tools, builds, and the
# backend and gateway processes, all on loopback, all stopped on exit.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CLK_TCK="$(getconf CLK_TCK)"
PIDS=()
HTTP_HEADERS=()

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

# oha (HTTP/1.1 load) from crates.io and h2load (HTTP/2 load) from Debian's nghttp2-client,
# installed once; later runs find them.
ensure_tools() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v h2load >/dev/null || ! command -v nghttp >/dev/null; then
    log "installing nghttp2-client (h2load, nghttp)"
    if [[ $(id -u) -eq 0 ]]; then
      apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
    else
      sudo apt-get update -qq && sudo apt-get install -y -qq nghttp2-client >/dev/null
    fi
  fi
  if ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha --locked; several minutes on 2 cores)"
    cargo install oha --locked --quiet
  fi
  command -v python3 >/dev/null || die "python3 is required"
  command -v curl >/dev/null || die "curl is required"
}

# Builds the gateway with GATEWAY_PROFILE (release; bench/profile.sh uses `profiling`, the
# release build with full debug info) and the bench helper; sets GATEWAY_BIN and HELPER_BIN.
build() {
  local profile="${GATEWAY_PROFILE:-release}"
  log "building ($profile profile; the first build takes several minutes)"
  (cd "$ROOT" && cargo build --profile "$profile" --quiet --bin protogate)
  GATEWAY_BIN="$CARGO_TARGET_DIR/$profile/protogate"
  HELPER_BIN="$(cd "$ROOT" && cargo bench --quiet --no-run --bench load_backend \
    --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "load_backend" and m.get("executable"):
        print(m["executable"])')"
  [[ -x "$GATEWAY_BIN" && -x "$HELPER_BIN" ]] || die "build produced no binaries"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # wait_for SECONDS COMMAND...: retries COMMAND every 0.1 s
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# Starts the tonic backend on a free loopback port; sets BACKEND_PID and BACKEND_ADDR.
start_backend() {
  local work="$1"
  "$HELPER_BIN" serve 127.0.0.1:0 >"$work/backend.out" 2>"$work/backend.err" &
  BACKEND_PID=$!
  PIDS+=("$BACKEND_PID")
  wait_for 30 grep -q '^listening on ' "$work/backend.out" || die "backend did not start: $(cat "$work/backend.err")"
  BACKEND_ADDR="$(sed -n 's/^listening on //p' "$work/backend.out")"
}

# Starts the gateway (optionally under a wrapper such as valgrind) in front of the backend;
# sets GATEWAY_PID and GATEWAY_ADDR.
start_gateway() {
  local work="$1"; shift
  local port; port="$(free_port)"
  GATEWAY_ADDR="127.0.0.1:$port"
  (cd "$ROOT" && exec "$@" "$GATEWAY_BIN" serve \
    --proto testapi/v1/library.proto -I tests/protos \
    --descriptor-set descriptors/vps.binpb \
    --upstream "http://$BACKEND_ADDR" --listen "$GATEWAY_ADDR" --log warn) \
    >"$work/gateway.out" 2>"$work/gateway.err" &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  wait_for 120 curl -sf "http://$GATEWAY_ADDR/readyz" || die "gateway did not start: $(cat "$work/gateway.err")"
}

# Writes the framed requests and the case descriptions into DIR (see benches/load_backend.rs).
write_frames() {
  "$HELPER_BIN" frames "$1" >&2
}

# CASE fields from DIR/CASE.http: sets HTTP_METHOD, HTTP_TARGET, HTTP_BODY ("-" for none),
# GRPC_PATH and FRAME; HTTP_HEADERS (an array of `name: value`) from DIR/CASE.headers, if any.
read_case() {
  local dir="$1" case="$2"
  read -r HTTP_METHOD HTTP_TARGET HTTP_BODY <"$dir/$case.http" || [[ -n "${HTTP_BODY:-}" ]]
  GRPC_PATH="$(cat "$dir/$case.rpc")"
  FRAME="$dir/$case.grpc"
  HTTP_HEADERS=()
  if [[ -f "$dir/$case.headers" ]]; then
    mapfile -t HTTP_HEADERS <"$dir/$case.headers"
  fi
}

cpu_ticks() { # utime + stime of a process, in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

status_kb() { # status_kb PID FIELD: a VmRSS/VmHWM line of /proc/PID/status, in kB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

machine_ticks() { # busy clock ticks of the whole machine (all CPUs), from /proc/stat
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

child_ticks() { # CPU of this shell's finished children (the load generators), in clock ticks
  awk '{ print $16 + $17 }' "/proc/$$/stat"
}

# Waits up to SECONDS for a second in which processes other than ours use under 0.25 of a core
# (the gateway and backend are idle between runs, so all busy time is someone else's).
wait_quiet() {
  local deadline=$((SECONDS + $1)) m0 m1
  while ((SECONDS < deadline)); do
    m0="$(machine_ticks)"; sleep 1; m1="$(machine_ticks)"
    (((m1 - m0) * 4 < CLK_TCK)) && return 0
  done
  log "the machine is busy with other work; measuring anyway"
}

reset_peak_rss() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }

# One oha run against the gateway: oha's JSON into OUT.
oha_run() {
  local out="$1" seconds="$2" clients="$3"
  local args=(-z "${seconds}s" -c "$clients" --no-tui --output-format json -m "$HTTP_METHOD")
  [[ "$HTTP_BODY" != "-" ]] && args+=(-D "$HTTP_BODY" -T application/json)
  local header
  for header in "${HTTP_HEADERS[@]}"; do args+=(-H "$header"); done
  oha "${args[@]}" "http://$GATEWAY_ADDR$HTTP_TARGET" >"$out"
}

# One h2load run straight at the backend, same message, same number of clients (one stream
# each): h2load's report into OUT, one line per request into OUT.log.
h2load_run() {
  local out="$1" seconds="$2" clients="$3"
  h2load -D "$seconds" -c "$clients" -m 1 -t "${H2LOAD_THREADS:-1}" -d "$FRAME" \
    -H 'content-type: application/grpc' -H 'te: trailers' --log-file "$out.log" \
    "http://$BACKEND_ADDR$GRPC_PATH" >"$out"
}

# Checks one request each way answers OK before measuring.
check_case() {
  local case="$1" args=(-s -o /dev/null -w '%{http_code}' -X "$HTTP_METHOD")
  [[ "$HTTP_BODY" != "-" ]] && args+=(--data-binary "@$HTTP_BODY" -H 'content-type: application/json')
  local header
  for header in "${HTTP_HEADERS[@]}"; do args+=(-H "$header"); done
  local code; code="$(curl "${args[@]}" "http://$GATEWAY_ADDR$HTTP_TARGET")"
  [[ "$code" == 200 ]] || die "$case: the gateway answered HTTP $code"
  nghttp -v -d "$FRAME" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://$BACKEND_ADDR$GRPC_PATH" 2>&1 | grep -q 'grpc-status: 0' ||
    die "$case: direct gRPC did not answer grpc-status 0"
}
