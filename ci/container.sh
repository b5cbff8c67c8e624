#!/usr/bin/env bash
# Builds the runtime image offline and runs the VPS demo request through containers started from it.
#
#   1. installs podman (and runc, netavark, aardvark-dns) from Debian's packages when missing;
#   2. builds the static binary (cargo build --release --target <host>, +crt-static) and lays out
#      the image's root in target/container/rootfs: the binary, the host's CA roots, /etc/passwd;
#   3. builds the Containerfile's `prebuilt` target (FROM scratch: no registry is needed) and checks
#      the image: its files, its user, its ports;
#   4. starts `protogate demo` from the image and sends it the VPS demo request;
#   5. starts the gateway as the Helm chart runs it (serve, descriptors mounted read-only, admin
#      port, read-only root, no capabilities) with the demo container as its upstream, found by
#      name through the network's DNS like a Kubernetes Service; checks /readyz, the request and
#      /metrics, that it runs as uid 65532, and that SIGTERM stops it at once with status 0.
# Containers and the network are removed on exit, whatever happens; the image stays, as
# ${PROTOGATE_IMAGE:-localhost/protogate:ci}. Every wait is bounded.
#
# This sandbox's quirks, harmless elsewhere: crun refuses cgroups v1+v2 "hybrid" hosts, so runc
# runs the containers; the process lacks CAP_SYS_RESOURCE, so the containers get explicit
# ulimits instead of podman's default (raising nofile to 1048576 fails).
set -euo pipefail
cd "$(dirname "$0")/.."

image=${PROTOGATE_IMAGE:-localhost/protogate:ci}
rootfs=target/container/rootfs
id="protogate-ci-$$"
start=$SECONDS
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { echo "FAILED: $*" >&2; echo "container: $passed passed, 1 failed"; exit 1; }

# ---- 1. tools ---------------------------------------------------------------------------------------
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
[ -x /usr/lib/podman/netavark ] || missing+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || missing+=(aardvark-dns)
command -v iptables >/dev/null || missing+=(iptables)
command -v curl >/dev/null || missing+=(curl)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
podman_run=(podman --runtime runc run --detach --ulimit nofile=8192:8192 --ulimit nproc=4096:4096
            --read-only --cap-drop ALL --security-opt no-new-privileges)

# ---- 2. the static binary and the image's root -------------------------------------------------
host=$(rustc --print host-tuple)
# The same build as the Containerfile's `build` stage. --target keeps RUSTFLAGS off build scripts
# and proc macros (they cannot be static) and gives the build its own directory under target/.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo build --release --locked --target "$host" --bin protogate
binary="target/$host/release/protogate"
if readelf -l "$binary" | grep -q 'program interpreter'; then fail "$binary is dynamically linked"; fi
ok "static binary $binary ($(( $(stat -c %s "$binary") / 1024 / 1024 )) MiB, $((SECONDS - start)) s so far)"

# Keep in step with the Containerfile's `build` stage, which lays out the same root.
rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs"
install -m 0755 "$binary" "$rootfs/usr/local/bin/protogate"
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"

# ---- 3. the image ---------------------------------------------------------------------------------
podman rmi --force "$image" >/dev/null 2>&1 || true   # one image under this tag, not a pile of old ones
podman build --quiet --target prebuilt --tag "$image" . >/dev/null
config=$(podman image inspect --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' "$image")
[ "$config" = '65532:65532 ["/usr/local/bin/protogate"] ["serve"] 8080/tcp 9090/tcp ' ] \
  || fail "image config: $config"
probe=$(podman create "$image")
files=$(podman export "$probe" | tar -t | grep -v '/$' | grep -vE '^(etc/(hosts|hostname|resolv\.conf)|run/.*|dev/.*|proc/.*|sys/.*)$' | sort | paste -sd ' ')
podman rm "$probe" >/dev/null
want='etc/group etc/nsswitch.conf etc/passwd etc/ssl/certs/ca-certificates.crt usr/local/bin/protogate'
[ "$files" = "$want" ] || fail "image files: $files (want $want)"
ok "image $image: $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'), uid 65532, ports 8080 9090, files: $files"

# ---- 4. and 5. containers ---------------------------------------------------------------------------
cleanup() {
  podman rm --force --time 0 "$id-demo" "$id-gateway" >/dev/null 2>&1 || true
  podman network rm --force "$id" >/dev/null 2>&1 || true
}
trap cleanup EXIT
podman network create "$id" >/dev/null

host_port() { # host_port CONTAINER PORT: the loopback address podman published PORT on
  podman port "$1" "$2/tcp" | head -n 1
}
wait_for() { # wait_for CONTAINER URL: until URL answers 200, at most 30 s
  local deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null --max-time 2 "$2" 2>/dev/null; do
    if [ "$(podman inspect --format '{{.State.Running}}' "$1")" != true ]; then
      podman logs "$1" >&2 || true; fail "$1 exited"
    fi
    if [ $SECONDS -ge $deadline ]; then
      podman logs "$1" >&2 || true; curl -sS --max-time 5 "$2" >&2 || true
      fail "$2 did not answer 200 within 30 s"
    fi
    sleep 0.5
  done
}
demo_request() { # demo_request ADDRESS: the README's demo request; 200 with a stVPResult
  local status
  status=$(curl -sS --max-time 20 -o "target/container/response.json" -w '%{http_code}' \
    -d @examples/sample.json "http://$1/skvps/locdata")
  [ "$status" = 200 ] || { cat target/container/response.json >&2; fail "POST /skvps/locdata via $1: HTTP $status"; }
  grep -q '"stVPResult"' target/container/response.json || fail "POST /skvps/locdata via $1: no stVPResult"
}

start_container() { # start_container ARGS...: podman run, quiet unless it fails (aardvark-dns
  # complains about syslog on every start)
  "${podman_run[@]}" "$@" > /dev/null 2> target/container/podman-run.err \
    || { cat target/container/podman-run.err >&2; fail "podman run $*"; }
}

# 4. The demo (gateway + built-in VPS backend), as `podman run -p 8080:8080 IMAGE demo` would.
start_container --name "$id-demo" --network "$id" --network-alias vps-grpc-server \
  --publish 127.0.0.1::8080 "$image" demo
demo=$(host_port "$id-demo" 8080)
wait_for "$id-demo" "http://$demo/healthz"
demo_request "$demo"
ok "demo container: POST /skvps/locdata -> 200 with stVPResult"

# 5. The gateway as the chart deploys it, in front of the demo container (which passes gRPC through
# to its backend) at http://vps-grpc-server:8080.
start_container --name "$id-gateway" --network "$id" \
  --publish 127.0.0.1::8080 --publish 127.0.0.1::9090 \
  --volume "$PWD/descriptors:/etc/protogate/descriptors:ro" \
  --env PROTOGATE_ADMIN_LISTEN=0.0.0.0:9090 \
  --env PROTOGATE_DESCRIPTOR_SET=/etc/protogate/descriptors/vps.binpb \
  --env PROTOGATE_UPSTREAM=http://vps-grpc-server:8080 \
  --env PROTOGATE_SHUTDOWN_GRACE=20s \
  "$image" serve
gateway=$(host_port "$id-gateway" 8080)
admin=$(host_port "$id-gateway" 9090)
wait_for "$id-gateway" "http://$admin/readyz"
demo_request "$gateway"
curl -fsS --max-time 5 "http://$admin/metrics" \
  | grep -q 'protogate_requests_total{http_request_method="POST",http_route="/skvps/locdata",http_response_status_code="200"' \
  || fail "/metrics on the admin port does not count the request"
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$gateway/readyz")" != 200 ] \
  || fail "/readyz still answers on the serving port with --admin-listen"
pid=$(podman inspect --format '{{.State.Pid}}' "$id-gateway")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = 65532 ] || fail "the gateway runs as uid $uid"
ok "gateway container (serve, mounted descriptors, upstream by DNS name, admin port, read-only, uid 65532): /readyz, POST /skvps/locdata -> 200, /metrics"

# SIGTERM to PID 1: protogate drains and exits 0 by itself (podman would SIGKILL after 25 s: 137).
stop_start=$SECONDS
podman stop --time 25 "$id-gateway" >/dev/null
status=$(podman inspect --format '{{.State.ExitCode}}' "$id-gateway")
[ "$status" = 0 ] || fail "the gateway exited with $status on SIGTERM"
[ $((SECONDS - stop_start)) -lt 10 ] || fail "the gateway took $((SECONDS - stop_start)) s to stop on SIGTERM"
ok "SIGTERM: the gateway stopped in $((SECONDS - stop_start)) s with status 0"

echo "ci/container.sh took $((SECONDS - start)) s"
echo "container: $passed passed, 0 failed"
