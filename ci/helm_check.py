"""Helm for ci/helm.sh, through real Helm: PyPI's helm-python-sdk (Helm v4's Go SDK built into a C
library, libhelm_c), pinned in ci/python-tools.txt. Run it with the CI venv's python (ci/venv.sh).

  helm_check.py render CHART [-f FILE]... [--set K=V]... [--name N] [--namespace NS]
      Like `helm template`: the chart rendered offline, as a multi-document YAML stream on stdout.
      Values are merged as the helm CLI merges them (values files in order, deep-merged, then
      every --set with helm's own --set parser) and checked against values.schema.json; a schema
      violation, a template `fail`/`required` or output that is not YAML exits 1 with Helm's
      message on stderr. No cluster is contacted: `lookup` answers nothing, as in `helm template`.
  helm_check.py lint CHART [-f FILE]... [--set K=V]... [--namespace NS] [--kube-version V]...
      `helm lint` with those values (against each Kubernetes version given): prints its warnings,
      exits 1 on any finding Helm reports as an error.
  helm_check.py structure WORKDIR
      Checks the renders ci/helm.sh wrote into WORKDIR (structure, consistency between objects,
      the descriptor checksum, the chart's `config` against src/config.rs) and writes, per render,
      NAME.core.yaml: its built-in kinds, for kubernetes-validate.
"""
import argparse
import base64
import hashlib
import json
import re
import sys

import helm_python as helm
import yaml


# ---- values, as the helm CLI builds them (pkg/cli/values.Options.MergeValues) -------------------
def merge_maps(a, b):
    """Helm's loader.MergeMaps: maps merge key by key, anything else in b replaces a's."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_maps(out[k], v)
        else:
            out[k] = v
    return out


def user_values(files, sets):
    """Values files first, in order, then every --set, whatever the order on the command line.
    Each --set is parsed by Helm's strvals parser (a=1,b={x,y},c=null) and merged in; the one
    difference from `helm --set`: a list index (a[0]=x) replaces a list from a values file
    rather than patching it."""
    values = {}
    for path in files:
        with open(path) as fh:
            try:
                values = merge_maps(values, helm.values_from_yaml(fh.read()))
            except helm.HelmError as e:
                raise helm.HelmError(f"failed to parse {path}: {e}") from None
    for expression in sets:
        try:
            values = merge_maps(values, helm.parse_set_string(expression))
        except helm.HelmError as e:
            raise helm.HelmError(f"failed parsing --set data: {e}") from None
    return values


def render(args):
    helm.validate_release_name(args.name)
    values = user_values(args.values, args.set)
    with helm.Chart.load(args.chart) as chart:
        # Helm coalesces the chart's defaults with the values and validates the result against
        # values.schema.json before rendering (HelmValuesError when it does not fit).
        manifests = chart.render(values, name=args.name, namespace=args.namespace,
                                 revision=1, is_install=True)
    out = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        for doc in re.split(r"(?m)^---[ \t]*$", manifests[path]):
            if not doc.strip():
                continue
            try:
                yaml.safe_load(doc)
            except yaml.YAMLError as e:
                raise helm.HelmError(f"YAML parse error on {path}: {e}") from None
            out.append(f"---\n# Source: {path}\n{doc.strip(chr(10))}\n")
    sys.stdout.write("".join(out))


SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def lint(args):
    values = user_values(args.values, args.set)
    errors = 0
    for kube in args.kube_version or [None]:
        report = helm.lint(args.chart, values, namespace=args.namespace,
                           kube_version=kube and f"v{kube.lstrip('v')}")
        where = f" (Kubernetes {kube})" if kube else ""
        for m in report["messages"]:
            severity = SEVERITY.get(m["severity"], str(m["severity"]))
            if m["severity"] >= 2 or m["severity"] == 0:
                print(f"helm lint{where}: [{severity}] {m['path']}: {m['error'].strip()}", file=sys.stderr)
            errors += m["severity"] >= 3
        if report["errors"] and not any(m["severity"] >= 3 for m in report["messages"]):
            for e in report["errors"]:
                print(f"helm lint{where}: [ERROR] {e.strip()}", file=sys.stderr)
            errors += len(report["errors"])
    if errors:
        sys.exit(1)


# ---- the structural checks of ci/helm.sh's renders ----------------------------------------------
BUILTIN = {("v1", "ConfigMap"), ("v1", "Service"), ("v1", "ServiceAccount"), ("apps/v1", "Deployment"),
           ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget"),
           ("networking.k8s.io/v1", "NetworkPolicy")}
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("azmonitoring.coreos.com/v1", "ServiceMonitor"),
        ("networking.istio.io/v1", "VirtualService"), ("networking.istio.io/v1beta1", "VirtualService")}


def structure(args):
    work = args.workdir
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
        tls = "PROTOGATE_TLS_CERT" in env
        serving = [p for p in ports if p != "admin"]
        if len(serving) != 1 or ports[serving[0]] != listen_port:
            fail(name, f"PROTOGATE_LISTEN is not the one serving container port {serving}")
        serving = serving[0]
        if (serving == "https") != tls or serving not in ("http", "https", "grpc", "http2"):
            fail(name, f"the serving port is named {serving!r} with TLS {'on' if tls else 'off'}")
        if tls != ("PROTOGATE_TLS_KEY" in env):
            fail(name, "--tls-cert without --tls-key, or the reverse")
        # The probes, and the scrape below, speak the scheme of the port they reach.
        admin_scheme = "HTTPS" if tls and "admin" not in ports else "HTTP"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in c and c[probe]["httpGet"].get("scheme") != admin_scheme:
                fail(name, f"{probe} is not {admin_scheme}")
        spread = pod["spec"].get("topologySpreadConstraints", [])
        keys = {t["topologyKey"] for t in spread if t.get("whenUnsatisfiable") == "ScheduleAnyway"}
        if not {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys:
            fail(name, f"the pods are not spread across zones and nodes: {spread}")
        if not all(subset(t["labelSelector"]["matchLabels"], labels) for t in spread):
            fail(name, "a topology spread constraint does not select the pods")
        if "PROTOGATE_ADMIN_LISTEN" in env and ports.get("admin") != int(env["PROTOGATE_ADMIN_LISTEN"].rsplit(":", 1)[1]):
            fail(name, "PROTOGATE_ADMIN_LISTEN is not the admin container port")
        if "PROTOGATE_ADMIN_LISTEN" not in env and "admin" in ports:
            fail(name, "an admin container port without PROTOGATE_ADMIN_LISTEN")
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
        if set(mounts) != set(volumes):
            fail(name, f"volumes {sorted(volumes)} and volume mounts {sorted(mounts)} differ")
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
            if p["name"] != p["targetPort"] and p["name"] != "http-admin" or not p.get("appProtocol"):
                fail(name, f"Service port {p} is not named for what it serves, with its appProtocol")
        if serving not in svc_ports or svc_ports[serving]["appProtocol"] not in (serving, "kubernetes.io/h2c"):
            fail(name, f"the Service's serving port is not {serving!r} with a matching appProtocol")
        if "NetworkPolicy" in by_kind:
            np = by_kind["NetworkPolicy"]["spec"]
            if not subset(np["podSelector"]["matchLabels"], labels) or np["policyTypes"] != ["Ingress"]:
                fail(name, "the NetworkPolicy does not select the pods")
            allowed = {p["port"] for rule in np["ingress"] for p in rule.get("ports", [])}
            if set(ports) - allowed:
                fail(name, f"the NetworkPolicy shuts container ports {sorted(set(ports) - allowed)}")
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
                if not set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "tlsConfig"} or ep["port"] not in svc_ports \
                        or ep["path"] != "/metrics" or not re.fullmatch(r"[0-9]+(ms|s|m|h)", ep["interval"]):
                    fail(name, f"ServiceMonitor endpoint {ep}")
                if ep.get("scheme") != admin_scheme.lower() or ("tlsConfig" in ep and admin_scheme != "HTTPS"):
                    fail(name, f"the ServiceMonitor does not scrape over {admin_scheme}: {ep}")
            admin = "admin" if "PROTOGATE_ADMIN_LISTEN" in env else serving
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
            if not first["host"].startswith(f"{svc['metadata']['name']}.") or first["port"]["number"] != svc_ports[serving]["port"]:
                fail(name, "the VirtualService does not route to protogate's Service")
        return by_kind, env

    renders = ["default", "configmap", "configmap-lookup", "image", "vps-changed", "vps-again", "production",
               "tls-admin"]
    for name in renders:
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

    # Production-like: TLS on the serving port from a Secret, no admin port, 3 replicas, the
    # descriptors from an existing ConfigMap.
    prod = docs("production")
    assert "ConfigMap" not in prod and "HorizontalPodAutoscaler" not in prod, sorted(prod)
    dep = prod["Deployment"]
    assert dep["spec"]["replicas"] == 3, dep["spec"].get("replicas")
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert "PROTOGATE_ADMIN_LISTEN" not in env and [p["name"] for p in c["ports"]] == ["https"], c["ports"]
    otlp = {k: v for k, v in env.items() if k.startswith(("OTEL_", "PROTOGATE_OTLP"))}
    assert otlp == {"PROTOGATE_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "api-gateway",
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, otlp
    (svc_port,) = prod["Service"]["spec"]["ports"]
    assert (svc_port["name"], svc_port["appProtocol"]) == ("https", "https"), svc_port
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": c[probe]["httpGet"]["path"], "port": "https", "scheme": "HTTPS"}, (probe, c[probe])
    (scrape,) = prod["ServiceMonitor"]["spec"]["endpoints"]
    assert (scrape["port"], scrape["scheme"]) == ("https", "https"), scrape
    assert scrape["tlsConfig"] == {"serverName": "api-gateway.api.svc"}, scrape
    (rule,) = prod["NetworkPolicy"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": "https", "protocol": "TCP"}] and rule["from"][0]["namespaceSelector"], rule
    spread = pod["spec"]["topologySpreadConstraints"]
    assert [t["topologyKey"] for t in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"], spread
    assert all(t["whenUnsatisfiable"] == "ScheduleAnyway" for t in spread), spread
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for var in ("PROTOGATE_TLS_CERT", "PROTOGATE_TLS_KEY"):
        path = env[var]
        mount = mounts.get(path.rsplit("/", 1)[0])
        assert mount and mount.get("readOnly"), f"{var}={path} is on no read-only volume mount"
        assert volumes[mount["name"]].get("secret", {}).get("secretName") == "protogate-tls", f"{var} is not from the Secret"
    assert volumes["tls"] == {"name": "tls", "secret": {"secretName": "protogate-tls"}}, volumes["tls"]
    assert env["PROTOGATE_TLS_CERT"] == "/etc/protogate/tls/tls.crt" and env["PROTOGATE_TLS_KEY"] == "/etc/protogate/tls/tls.key"
    assert volumes["descriptors"]["configMap"]["name"] == "api-descriptors"

    # TLS with an admin port: the serving port is https, the probes and the scrape plain HTTP on
    # the admin port, which the NetworkPolicy opens to Prometheus only.
    tls_admin = docs("tls-admin")
    c = tls_admin["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in c["ports"]] == ["https", "admin"], c["ports"]
    assert c["readinessProbe"]["httpGet"]["port"] == "admin" and c["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    (scrape,) = tls_admin["ServiceMonitor"]["spec"]["endpoints"]
    assert (scrape["port"], scrape["scheme"]) == ("http-admin", "http") and "tlsConfig" not in scrape, scrape
    rules = tls_admin["NetworkPolicy"]["spec"]["ingress"]
    assert [r["ports"][0]["port"] for r in rules] == ["https", "admin"] and "from" not in rules[0], rules
    assert rules[1]["from"] == [{"podSelector": {"matchLabels": {"app": "prometheus"}}}], rules
    assert [(p["name"], p["appProtocol"]) for p in tls_admin["Service"]["spec"]["ports"]] == [("https", "https"), ("http-admin", "http")]
    assert env["PROTOGATE_DESCRIPTOR_SET"] == "/etc/protogate/descriptors/api.binpb", env["PROTOGATE_DESCRIPTOR_SET"]
    assert "checksum/descriptors" in pod["metadata"]["annotations"], "no checksum for an existing ConfigMap"

    # values.schema.json's `config` knows exactly the flags the chart does not set itself.
    schema = json.load(open("helm/protogate/values.schema.json"))
    first_class = {"descriptor-set", "listen", "admin-listen", "upstream", "service-upstream",
                   "shutdown-grace", "watch-descriptors", "tls-cert", "tls-key", "otlp-endpoint"}
    flags = {e[len("PROTOGATE_"):].lower().replace("_", "-") for e in FLAG_ENVS}
    config = set(schema["properties"]["config"]["properties"])
    if config | first_class != flags or config & first_class:
        sys.exit("values.schema.json `config` is out of step with src/config.rs:\n"
                 f"  flags missing from the chart: {sorted(flags - config - first_class)}\n"
                 f"  keys naming no flag: {sorted((config | first_class) - flags)}")
    print(f"ok: structure and consistency of {len(renders) + 1} renders; descriptor checksum rolls pods; "
          f"{len(flags)} flags in step with src/config.rs")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for command in ("render", "lint"):
        s = sub.add_parser(command)
        s.add_argument("chart")
        s.add_argument("-f", "--values", action="append", default=[], metavar="FILE")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        s.add_argument("--namespace", default="default")
        if command == "render":
            s.add_argument("--name", default="release-name")
        else:
            s.add_argument("--kube-version", action="append", default=[], metavar="VERSION")
    sub.add_parser("structure").add_argument("workdir")
    args = p.parse_args()
    try:
        {"render": render, "lint": lint, "structure": structure}[args.command](args)
    except helm.HelmError as e:
        sys.exit(f"Error: {str(e).rstrip()}")


if __name__ == "__main__":
    main()
