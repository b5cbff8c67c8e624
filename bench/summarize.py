#!/usr/bin/env python3
"""Reads the load generators' output for bench/load.sh and writes its summary.

    summarize.py parse SIDE RAW      # RAW.json from oha (or from load_backend ws/bidi, in oha's
                                     # shape) -> "requests errors seconds p50_ms p99_ms"; else
                                     # RAW.txt and RAW.txt.log from h2load -> the same
    summarize.py check RAW           # RAW.json: fails unless some requests and no error
    summarize.py same A B            # two JSON answers: fails (listing how) unless the same
    summarize.py report OUT CLK_TCK  # OUT/runs.tsv, memory.tsv, soak.tsv -> a markdown summary
    summarize.py callgrind FILE REQUESTS TOP  # callgrind_annotate's output on stdin -> top lists
"""

import csv
import json
import re
import statistics
import sys
from pathlib import Path

# Targets per case: gateway CPU per request (us), throughput ratio to direct gRPC.
CPU_TARGET_US = {"small_post": 30, "get_query": 30, "vps": 220, "vps_protobuf": 50}
RATIO_TARGET = {"small_post": 0.55, "get_query": 0.55, "vps": 0.5}
P99_RATIO_TARGET = 2.0  # at 64 clients
IDLE_RSS_TARGET_MB = 64


def parse_oha(raw):
    data = json.loads(Path(f"{raw}.json").read_text())
    codes = data.get("statusCodeDistribution", {})
    ok = int(codes.get("200", 0))
    errors = sum(int(v) for k, v in codes.items() if k != "200")
    errors += sum(
        int(v)
        for k, v in data.get("errorDistribution", {}).items()
        if "deadline" not in k  # requests cut off by -z's end are not failures
    )
    latency = data["metrics"]["latency_ms"]
    return ok, errors, data["summary"]["total"], latency["p50"], latency["p99"]


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def parse_h2load(raw):
    text = Path(f"{raw}.txt").read_text()
    seconds = float(re.search(r"finished in ([\d.]+)s", text).group(1))
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    ok = int(m.group(4))
    errors = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    durations = []
    for line in Path(f"{raw}.txt.log").read_text().splitlines():
        cols = line.split("\t")
        if len(cols) >= 3 and cols[1] == "200":
            durations.append(int(cols[2]) / 1000.0)
    durations.sort()
    return ok, errors, seconds, percentile(durations, 50), percentile(durations, 99)


def parse(side, raw):
    values = parse_oha(raw) if Path(f"{raw}.json").exists() else parse_h2load(raw)
    print("\t".join(str(v) for v in values))


def check(raw):
    ok, errors, _, _, _ = parse_oha(raw)
    if ok == 0 or errors:
        sys.exit(f"{raw}.json: {ok} answers as expected, {errors} errors")


def differences(a, b, path="$"):
    """How two JSON values differ, beyond what the gateway's and Envoy's print options make
    differ by design: fields that are null on one side and absent on the other (protogate
    writes unset message fields as null, Envoy leaves them out), and numbers equal to a float's
    precision (Envoy writes a float with 9 significant digits, protogate the shortest that
    reads back the same)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) is None and b.get(key) is None:
                continue
            if key not in a or key not in b:
                yield f"{path}.{key}: only on {'the first' if key in a else 'the second'} side"
            else:
                yield from differences(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}: {len(a)} against {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]")
    elif (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        if abs(a - b) > 1e-6 * max(abs(a), abs(b)):
            yield f"{path}: {a} against {b}"
    elif a != b:
        yield f"{path}: {json.dumps(a)[:80]} against {json.dumps(b)[:80]}"


def same(first, second):
    try:
        a, b = (json.loads(Path(f).read_bytes()) for f in (first, second))
    except (OSError, ValueError) as e:
        sys.exit(f"{first} and {second}: not two JSON answers: {e}")
    found = list(differences(a, b))
    for line in found[:20]:
        print(line, file=sys.stderr)
    if found:
        sys.exit(f"{first} and {second}: {len(found)} differences")


def median(values):
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def load_runs(out, clk_tck):
    groups = {}
    with open(out / "runs.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            requests = int(row["requests"])
            run = {
                "rps": requests / float(row["seconds"]),
                "p50": float(row["p50_ms"]),
                "p99": float(row["p99_ms"]),
                "proxy_us": int(row["proxy_ticks"]) / clk_tck / max(requests, 1) * 1e6,
                "be_us": int(row["backend_ticks"]) / clk_tck / max(requests, 1) * 1e6,
                "hwm_mb": int(row["proxy_hwm_kb"]) / 1024,
                "errors": int(row["errors"]),
                # CPU used by anything but the gateway, the backend and the load generator.
                "other_cores": (
                    int(row["machine_ticks"])
                    - int(row["proxy_ticks"])
                    - int(row["backend_ticks"])
                    - int(row["loadgen_ticks"])
                )
                / clk_tck
                / float(row["seconds"]),
                "loadgen_cores": int(row["loadgen_ticks"]) / clk_tck / float(row["seconds"]),
            }
            key = (row["case"], int(row["clients"]), row["side"])
            groups.setdefault(key, []).append(run)
    return groups


def mark(ok):
    return "ok" if ok else "**miss**"


def cell(value, fmt):
    return "—" if value != value else format(value, fmt)  # NaN: no such side


def report(out, clk_tck):
    out = Path(out)
    groups = load_runs(out, clk_tck)
    cases = []
    for case, clients, _ in groups:
        if (case, clients) not in cases:
            cases.append((case, clients))
    print(f"results: {out}\n")
    print(
        "Medians over the runs; every side of a row measured in the same runs, taking turns. "
        "For ws_echo a request is one message and its echo (messages/s, CPU per message), "
        "direct gRPC is the same echo on bidi streams, and Envoy has no equivalent; — marks a "
        "side a case does not have.\n"
    )
    print(
        "| case | clients | runs | protogate req/s | Envoy req/s | direct gRPC req/s "
        "| protogate / Envoy req/s | protogate / direct req/s (target) "
        "| protogate CPU us/req (target) | Envoy CPU us/req | protogate / Envoy CPU "
        "| protogate p50 / p99 ms | Envoy p50 / p99 ms | direct p50 / p99 ms "
        "| protogate / direct p99 "
        "| backend CPU us/req via protogate / Envoy / direct "
        "| peak RSS MB protogate / Envoy | load generator / other CPU, cores | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---|---|---|---|---|---|---|---:|")
    for case, clients in cases:
        gw = groups.get((case, clients, "gateway"), [])
        ev = groups.get((case, clients, "envoy"), [])
        di = groups.get((case, clients, "direct"), [])
        med = lambda runs, k: median([r[k] for r in runs])
        ratio = med(gw, "rps") / med(di, "rps") if di else float("nan")
        envoy_ratio = med(gw, "rps") / med(ev, "rps") if ev else float("nan")
        cpu_ratio = med(gw, "proxy_us") / med(ev, "proxy_us") if ev else float("nan")
        p99_ratio = med(gw, "p99") / med(di, "p99") if di else float("nan")
        cpu = med(gw, "proxy_us")
        ratio_target = RATIO_TARGET.get(case)
        cpu_target = CPU_TARGET_US.get(case)
        ratio_cell = cell(ratio, ".2f")
        if ratio_target is not None:
            ratio_cell += f" (>= {ratio_target}, {mark(ratio >= ratio_target)})"
        p99_cell = cell(p99_ratio, ".2f")
        if clients == 64:
            p99_cell += f" (<= {P99_RATIO_TARGET:g}, {mark(p99_ratio <= P99_RATIO_TARGET)})"
        cpu_cell = cell(cpu, ".1f")
        if cpu_target is not None:
            cpu_cell += f" (<= {cpu_target}, {mark(cpu <= cpu_target)})"
        latency = lambda runs: (
            f"{cell(med(runs, 'p50'), '.2f')} / {cell(med(runs, 'p99'), '.2f')}" if runs else "—"
        )
        errors = sum(r["errors"] for r in gw + ev + di)
        print(
            f"| {case} | {clients} | {len(gw)} | {cell(med(gw, 'rps'), ',.0f')} "
            f"| {cell(med(ev, 'rps'), ',.0f')} | {cell(med(di, 'rps'), ',.0f')} "
            f"| {cell(envoy_ratio, '.2f')} | {ratio_cell} | {cpu_cell} "
            f"| {cell(med(ev, 'proxy_us'), '.1f')} | {cell(cpu_ratio, '.2f')} "
            f"| {latency(gw)} | {latency(ev)} | {latency(di)} | {p99_cell} "
            f"| {cell(med(gw, 'be_us'), '.1f')} / {cell(med(ev, 'be_us'), '.1f')} "
            f"/ {cell(med(di, 'be_us'), '.1f')} "
            f"| {cell(med(gw, 'hwm_mb'), '.1f')} / {cell(med(ev, 'hwm_mb'), '.1f')} "
            f"| {cell(med(gw, 'loadgen_cores'), '.2f')} / {cell(med(gw + ev + di, 'other_cores'), '.2f')} "
            f"| {errors} |"
        )
    memory = out / "memory.tsv"
    if memory.exists():
        print("\n| gateway memory | RSS MB |\n|---|---:|")
        for line in memory.read_text().splitlines():
            name, kb = line.split("\t")
            mb = int(kb) / 1024
            note = ""
            if "idle_connections" in name:
                note = f" (< {IDLE_RSS_TARGET_MB}, {mark(mb < IDLE_RSS_TARGET_MB)})"
            print(f"| {name.removesuffix('_kb').replace('_', ' ')} | {mb:.1f}{note} |")
    soak = out / "soak.tsv"
    if soak.exists() and soak.read_text().strip():
        samples = [tuple(map(int, l.split("\t"))) for l in soak.read_text().splitlines()]
        settled = [kb for t, kb in samples if t >= 30] or [kb for _, kb in samples]
        print(
            f"\nsoak: {len(samples)} RSS samples over {samples[-1][0]} s; "
            f"after 30 s: first {settled[0] / 1024:.1f} MB, max {max(settled) / 1024:.1f} MB, "
            f"last {settled[-1] / 1024:.1f} MB"
        )
        print("soak RSS MB every 10 s: " + " ".join(f"{kb / 1024:.0f}" for _, kb in samples))


# Self cost is also summed per component, by the first path element that names one.
COMPONENTS = [
    ("libc malloc/free", ("malloc", "_int_malloc", "_int_free", "free", "realloc", "malloc_consolidate", "calloc", "cfree", "_int_realloc", "unlink_chunk")),
    ("libc memcpy/memcmp/memset", ("__mem", "__strlen")),
]
CRATES = ["prost_reflect", "prost", "serde_json", "h2", "hyper_util", "hyper", "http_body_util", "http", "tokio", "protogate", "bytes", "tracing", "prometheus_client", "base64", "core", "alloc", "std", "form_urlencoded", "percent_encoding", "smallvec", "tower", "futures_util", "arc_swap"]


def component(function):
    for name, prefixes in COMPONENTS:
        if function in prefixes or any(function.startswith(p) for p in prefixes if p.startswith("__")):
            return name
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?=::)", function)
    for n in names:
        if n in CRATES:
            return n
    if function.startswith("<") or "::" in function:
        return names[0] if names else "other"
    return "other (libc, kernel entry)"


def callgrind(requests, top, text):
    """callgrind_annotate --inclusive=no and =yes outputs, concatenated, separated by a line
    "=== inclusive"; entries of one function inlined from several files are merged."""
    self_part, _, incl_part = text.partition("=== inclusive")
    line_re = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?)(?: \[[^\]]*\])?$")
    total = None

    def entries(part):
        nonlocal total
        for line in part.splitlines():
            m = line_re.match(line)
            if not m:
                continue
            cost = int(m.group(1).replace(",", ""))
            name = m.group(2)
            if name.endswith("PROGRAM TOTALS"):
                total = cost
                continue
            name = re.sub(r"^[^ :]*:(?=[^:])", "", name) if not name.startswith("<") else name
            name = re.sub(r"'\d+$", "", name)  # recursion levels
            yield name, cost

    selfs, incls = {}, {}
    for name, cost in entries(self_part):
        selfs[name] = selfs.get(name, 0) + cost
    for name, cost in entries(incl_part):
        incls[name] = max(incls.get(name, 0), cost)
    total = total or sum(selfs.values())
    per = lambda cost: cost / requests
    print(f"{total:,} instructions for {requests:,} requests: {per(total):,.0f} per request\n")
    by_component = {}
    for name, cost in selfs.items():
        c = component(name)
        by_component[c] = by_component.get(c, 0) + cost
    print("self instructions by component:\n")
    print("| component | % | per request |\n|---|---:|---:|")
    for c, cost in sorted(by_component.items(), key=lambda kv: -kv[1])[:15]:
        print(f"| {c} | {100 * cost / total:.1f} | {per(cost):,.0f} |")
    print(f"\ntop {top} functions by self instructions:\n")
    print("| % | per request | function |\n|---:|---:|---|")
    for name, cost in sorted(selfs.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {100 * cost / total:.1f} | {per(cost):,.0f} | `{name[:150]}` |")
    print(f"\ntop {top} functions by inclusive instructions (below the runtime and connection tasks):\n")
    print("| % | per request | function |\n|---:|---:|---|")
    shown = 0
    for name, cost in sorted(incls.items(), key=lambda kv: -kv[1]):
        if name.startswith("tokio::") or cost > 0.995 * total:
            continue
        print(f"| {100 * cost / total:.1f} | {per(cost):,.0f} | `{name[:150]}` |")
        shown += 1
        if shown == top:
            break


def main(argv):
    if len(argv) == 4 and argv[1] == "parse":
        parse(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "callgrind":
        callgrind(int(argv[2]), int(argv[3]), sys.stdin.read())
    elif len(argv) == 3 and argv[1] == "check":
        check(argv[2])
    elif len(argv) == 4 and argv[1] == "same":
        same(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "report":
        report(argv[2], int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
