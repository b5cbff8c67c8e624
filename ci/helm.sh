#!/usr/bin/env bash
# Checks the Helm chart (helm/protogate) and the Containerfile, offline, with nothing from outside
# the repository but the pinned Python tools of ci/python-tools.txt (venv: ci/venv.sh):
#   - renders the chart with real Helm (v4's Go SDK, from PyPI's helm-python-sdk, driven by
#     ci/helm_check.py render, a `helm template` of its own): default values, the VPS example
#     (helm/examples/vps-values.yaml plus descriptors/vps.binpb), the other descriptor sources, and
#     a production-like release (TLS on the serving port from a Secret, no admin port, 3 replicas,
#     descriptors from an existing ConfigMap); values.schema.json is enforced on every render;
#   - runs `helm lint` on the default values, the VPS example and the production-like release,
#     against the oldest and the newest Kubernetes this chart targets, failing on any error;
#   - validates every built-in kind with `kubernetes-validate --strict` against those versions,
#     and the CRD kinds (ServiceMonitor, VirtualService), which it has no schema for, with a
#     structural check (ci/helm_check.py structure); then checks that the objects fit together
#     (selectors, port names, volumes, probes, env vars naming real flags, the drain period);
#   - checks that values.schema.json and the templates' `fail` calls turn typos and impossible
#     values into render failures with Helm's own message, and that the chart's `config` map
#     knows exactly the flags of src/config.rs;
#   - checks that new descriptors change the checksum annotation (so `helm upgrade` rolls pods);
#   - lints the Containerfile with hadolint.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(bash ci/venv.sh)
py="$venv/bin/python"
# The oldest Kubernetes the chart supports (the preStop sleep action is on by default from 1.30)
# and the newest kubernetes-validate knows.
k8s_versions=(1.30.0 1.37.0)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { echo "FAILED: $*" >&2; echo "helm: $passed passed, 1 failed"; exit 1; }

render() { # render OUT ARGS...: the chart rendered with ARGS into $work/OUT.yaml
  local out=$1; shift
  "$py" ci/helm_check.py render helm/protogate "$@" > "$work/$out.yaml" 2> "$work/$out.err" \
    || { cat "$work/$out.err" >&2; fail "rendering $out ($*)"; }
}

# The descriptors as a values file: Helm cannot read files outside the chart (README, docs/deploy.md).
descriptor_values() { # descriptor_values FILE OUT
  printf 'descriptors:\n  files:\n    vps.binpb: %s\n' "$(base64 -w0 "$1")" > "$2"
}
descriptor_values descriptors/vps.binpb "$work/vps-descriptors.yaml"

# A production-like release (traces to a collector over OTLP/HTTP, sampled): TLS on the serving port (tls.secretName: --tls-cert/--tls-key from a
# kubernetes.io/tls Secret mounted read-only), no admin port (/healthz, /readyz and /metrics on the serving port), 3 replicas, the
# descriptors from a ConfigMap the cluster already holds.
# The ServiceMonitor and the NetworkPolicy are on, so the HTTPS scrape and the policy's ports are
# checked too.
cat > "$work/production-values.yaml" <<'YAML'
descriptors:
  source: configMap
  existingConfigMap: api-descriptors
  names: [api.binpb]
tls:
  secretName: protogate-tls
serviceMonitor:
  enabled: true
  tlsConfig:
    serverName: api-gateway.api.svc
otlp:
  endpoint: http://otel-collector.observability:4318
  protocol: http/protobuf
  serviceName: api-gateway
  sampler: parentbased_traceidratio
  samplerArg: 0.25
networkPolicy:
  enabled: true
  from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: istio-ingress
YAML
# Values and namespace of the VPS and the production-like releases, for both render and lint.
vps=(-f helm/examples/vps-values.yaml -f "$work/vps-descriptors.yaml" --namespace vps)
production=(-f "$work/production-values.yaml" --set adminPort=null --set replicaCount=3 --namespace api)

# ---- renders that must succeed ------------------------------------------------------------------
# --set takes Helm's syntax: {a,b} is a list, null removes a default.
render default
render vps "${vps[@]}" --name vps-gateway
render configmap --set adminPort=null --set descriptors.source=configMap \
  --set descriptors.existingConfigMap=api-descriptors --set 'descriptors.names={api.binpb,extra.binpb}' \
  --set descriptors.watch=true --set descriptors.rollOnChange=false --set serviceMonitor.enabled=true \
  --set probes.startup.enabled=true --set autoscaling.enabled=true --set autoscaling.targetMemoryUtilizationPercentage=80 \
  --set podDisruptionBudget.maxUnavailable=null --set podDisruptionBudget.minAvailable=50% \
  --set 'config.forward-header={x-tenant-id,x-user}' --set config.max-request-bytes=16777216 \
  --set config.use-proto-names=true --set 'config.response-compression={gzip,br}' \
  --set 'extraArgs={--reject-unknown-fields}' --set preStopSleepSeconds=0
# `lookup` answers nothing offline: the checksum of an existing ConfigMap is of an empty one.
render configmap-lookup --set descriptors.source=configMap --set descriptors.existingConfigMap=api-descriptors \
  --set 'descriptors.names={api.binpb}'
render image --set descriptors.source=image --set 'descriptors.names={vps.binpb}' \
  --set descriptors.mountPath=/opt/descriptors --set upstream=https://vps-grpc-server:443 \
  --set shutdownGrace=1m --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
render production "${production[@]}" --name api-gateway
# TLS with the admin port: the probes and the scrape stay plain HTTP on it.
render tls-admin --set tls.secretName=protogate-tls --set serviceMonitor.enabled=true \
  --set networkPolicy.enabled=true --set 'networkPolicy.adminFrom[0].podSelector.matchLabels.app=prometheus'
ok "rendered: default values, the VPS example, an existing ConfigMap, descriptors in the image, production-like, TLS with an admin port"

# ---- helm lint ----------------------------------------------------------------------------------
lint() { # lint WHAT ARGS...: `helm lint` with ARGS against every version of k8s_versions
  local what=$1; shift
  local k_vers=() v
  for v in "${k8s_versions[@]}"; do k_vers+=(--kube-version "$v"); done
  "$py" ci/helm_check.py lint helm/protogate "${k_vers[@]}" "$@" || fail "helm lint: $what"
}
lint "default values"
lint "the VPS example" "${vps[@]}"
lint "production-like" "${production[@]}"
ok "helm lint (${k8s_versions[*]}): default values, the VPS example, production-like"

# ---- the same VPS release with other descriptors: only the ConfigMap and the checksum change ----
{ cat descriptors/vps.binpb; printf '\n'; } > "$work/changed.binpb"
descriptor_values "$work/changed.binpb" "$work/changed-descriptors.yaml"
render vps-changed -f helm/examples/vps-values.yaml -f "$work/changed-descriptors.yaml" --name vps-gateway --namespace vps
render vps-again "${vps[@]}" --name vps-gateway

# ---- structure, consistency, and the split for kubernetes-validate ----------------------------
"$py" ci/helm_check.py structure "$work" || fail "structure and consistency of the renders"
passed=$((passed + 1))

# ---- kubernetes-validate --strict on every built-in kind --------------------------------------
k_args=()
for v in "${k8s_versions[@]}"; do k_args+=(-k "$v"); done
out=$("$venv/bin/kubernetes-validate" --strict "${k_args[@]}" "$work"/{default,vps,configmap,configmap-lookup,image,production,tls-admin}.core.yaml 2>&1) \
  || { echo "$out" >&2; fail "kubernetes-validate"; }
# A kind it has no schema for is only a warning there: here it is a failure.
if grep -qv '^INFO ' <<<"$out"; then echo "$out" >&2; fail "kubernetes-validate warned"; fi
ok "kubernetes-validate --strict (${k8s_versions[*]}): $(grep -c '^INFO ' <<<"$out") objects"
# ...and it does reject an unknown field.
sed 's/^\(\s*\)imagePullPolicy: IfNotPresent/&\n\1imagePulPolicy: IfNotPresent/' "$work/default.core.yaml" > "$work/typo.yaml"
if "$venv/bin/kubernetes-validate" --strict --quiet "${k_args[@]}" "$work/typo.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate --strict accepted an unknown field"
fi
ok "kubernetes-validate --strict rejects an unknown field"

# ---- typos and impossible values fail at render time --------------------------------------------
# MESSAGE is Helm's own: for the schema, "at '/json/pointer': what is wrong", so each case shows
# that the value it sets is the one rejected.
expect_failure() { # expect_failure MESSAGE ARGS...
  local want=$1; shift
  if "$py" ci/helm_check.py render helm/protogate "$@" > /dev/null 2> "$work/err"; then
    fail "rendering with $* succeeded"
  fi
  grep -qF -- "$want" "$work/err" || { cat "$work/err" >&2; fail "rendering with $*: no \"$want\""; }
}
expect_failure "at '/replicaCount': got string, want integer" --set replicaCount=x
expect_failure "additional properties 'replicaCnt' not allowed" --set replicaCnt=2
expect_failure "at '/config': additional properties 'timout' not allowed" --set config.timout=5s
expect_failure "at '/config/timeout': '5parsecs' does not match pattern" --set config.timeout=5parsecs
expect_failure "at '/descriptors/source': value must be one of" --set descriptors.source=file
expect_failure "at '/upstream': 'vps-grpc-server:50051' does not match pattern" --set upstream=vps-grpc-server:50051
printf 'replicas: 3\n' > "$work/typo-values.yaml"
expect_failure "additional properties 'replicas' not allowed" -f "$work/typo-values.yaml"
expect_failure "at '/descriptors/files/api': 'not base64!' does not match pattern" --set 'descriptors.files.api=not base64!'
expect_failure "must exceed preStopSleepSeconds + shutdownGrace" --set terminationGracePeriodSeconds=20
expect_failure "istio.virtualService.hosts is required" --set istio.virtualService.enabled=true
expect_failure "descriptors.names must list" --set descriptors.source=configMap --set descriptors.existingConfigMap=x
expect_failure "needs resources.requests.cpu" --set autoscaling.enabled=true --set resources.requests=null
expect_failure "exactly one of maxUnavailable and minAvailable" --set podDisruptionBudget.minAvailable=1
expect_failure "at '/config': additional properties 'tls-cert' not allowed" --set config.tls-cert=/x/tls.crt
expect_failure "at '/config': additional properties 'otlp-endpoint' not allowed" --set config.otlp-endpoint=http://c:4317
expect_failure "at '/otlp/protocol': value must be one of" --set otlp.protocol=http/json
expect_failure "at '/topologySpreadConstraints/0/whenUnsatisfiable': value must be one of" \
  --set 'topologySpreadConstraints[0].maxSkew=1' --set 'topologySpreadConstraints[0].topologyKey=zone' \
  --set 'topologySpreadConstraints[0].whenUnsatisfiable=Sometimes'
ok "typos and impossible values fail rendering (17 cases)"

# ---- the Containerfile ----------------------------------------------------------------------------
# Fails on any finding, style included; an ignore needs an inline `# hadolint ignore=` with its reason.
"$venv/bin/hadolint" --failure-threshold style Containerfile || fail "hadolint Containerfile"
ok "hadolint Containerfile"

echo "helm: $passed passed, 0 failed"
