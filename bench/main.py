"""`python -m bench`: run the benchmarks, print a table, write bench/results.json.

    python -m bench [--quick] [--only http,resolve,memory,apiserver,import] [--out FILE]

Sections (each figure is measured in the same run as its baseline):
  http       1+2. webhook over TLS under wrk vs the no-op floor (same gunicorn and TLS)
  resolve    3.   in-process µs per AdmissionReview at 100 … 100,000 streams
  memory     4.   index RSS per 10,000 streams x 5 tags x 3 history items, and each served
                  worker's RSS at 10,000 and 50,000 streams, file- and watch-fed
  apiserver  5.   create deployment through a real kube-apiserver, webhook on vs off
  import     6.   controller import pass, then a scheduled pass, against a loopback registry,
                  at each of --import-streams (default 2,000; the issue's sizes: 10000,50000)
  node       7.   create deployment through the API server on the local node: the chart's
                  webhook pods behind their Service vs the no-op floor deployed the same way
                  (needs root; run alone with --only node)
  controller-memory
             8.   controller peak RSS at 10,000 and 50,000 streams x 5 tags x 3 history
                  items, listed from a real kube-apiserver (its own cluster)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import machine

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
SECTIONS = ("http", "resolve", "memory", "apiserver", "import", "node", "controller-memory")
ALIASES = {"admission": "http", "floor": "http", "webhook": "http", "resolution": "resolve"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, short runs (a smoke run)")
    p.add_argument("--only", default="", help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--skip", default="", help="comma-separated sections to leave out")
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    g = p.add_argument_group("http (figures 1, 2)")
    g.add_argument("--streams", type=int, help="streams in the served index (default 10000)")
    g.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    g.add_argument("--connections", type=int, default=32, help="wrk connections at saturation")
    g.add_argument("--rate", type=float, default=500.0, help="fixed offered rate, req/s")
    g.add_argument("--rate-connections", type=int, default=16)
    g.add_argument("--duration", type=float, help="seconds per wrk run (default 8)")
    g.add_argument("--rounds", type=int, help="ABBA rounds per figure (default 2)")
    g.add_argument("--server-arg", action="append", default=[], help="extra `serve` flag")
    g.add_argument(
        "--floor-with-index",
        action="store_true",
        help="a third server: the floor holding ours' index, unread (its memory's cost)",
    )
    g = p.add_argument_group("resolve, memory (figures 3, 4)")
    g.add_argument("--sizes", help="index sizes for figure 3 (default 100,1000,10000,100000)")
    g.add_argument("--memory-streams", type=int, help="streams loaded for figure 4 (10000)")
    g.add_argument("--memory-sizes", help="streams served for figure 4 (default 10000,50000)")
    g.add_argument("--memory-modes", default="file,watch", help="file, watch or both")
    g = p.add_argument_group("apiserver, import (figures 5, 6)")
    g.add_argument("--creates", type=int, help="creates per side for figure 5 (default 200)")
    g.add_argument(
        "--import-streams",
        help="comma-separated stream counts for figure 6, each measured in turn (default 2000;"
        " 10000,50000 is the issue's pair, an hour or more on 2 cores)",
    )
    g.add_argument("--import-tags", type=int, default=5)
    g.add_argument(
        "--import-repos",
        type=int,
        default=200,
        help="registry repositories the streams follow (default 200; as many as the streams:"
        " no two streams follow the same tag, so no scheduled check is shared)",
    )
    g.add_argument("--import-workers", type=int, help="controller --workers (its default)")
    g.add_argument("--import-timeout", type=float, help="seconds allowed per pass (900)")
    g.add_argument("--scheduled-interval", type=float, help="seconds (default 30)")
    g.add_argument("--cluster-dir", type=Path, help="state dir for the local cluster (temp)")
    g = p.add_argument_group("controller-memory (figure 8)")
    g.add_argument("--controller-streams", help="stream counts to measure (default 10000,50000)")
    return p.parse_args(argv)


def selected(args: argparse.Namespace) -> list[str]:
    def names(text: str) -> set[str]:
        out = set()
        for word in filter(None, (w.strip() for w in text.split(","))):
            name = ALIASES.get(word, word)
            if name not in SECTIONS:
                raise SystemExit(f"unknown section {word!r}; choose from {', '.join(SECTIONS)}")
            out.add(name)
        return out

    only = names(args.only) or set(SECTIONS)
    return [s for s in SECTIONS if s in only - names(args.skip)]


def log(message: str) -> None:
    print(message, flush=True)


def run_http(args: argparse.Namespace) -> dict[str, Any]:
    from bench.http import HttpConfig, bench_http
    from bench.wsgi_floor import bench_wsgi_floor

    quick = args.quick
    config = HttpConfig(
        streams=args.streams or (1000 if quick else 10_000),
        workers=args.workers,
        connections=args.connections,
        rate_connections=args.rate_connections,
        rate=args.rate,
        duration=args.duration or (2.0 if quick else 8.0),
        warmup=1.0 if quick else 2.0,
        rounds=args.rounds or (1 if quick else 2),
        server_args=args.server_arg,
        floor_with_index=args.floor_with_index,
    )
    out = bench_http(config, log)
    # Goal 4 without TLS, gunicorn and the machine's load: the same bodies through both apps.
    out["wsgi"] = bench_wsgi_floor(config.streams, rounds=3 if quick else 7, log=log)
    return out


def run_resolve(args: argparse.Namespace) -> dict[str, Any]:
    from bench.inproc import bench_resolution

    default = "100,1000" if args.quick else "100,1000,10000,100000"
    sizes = [int(s) for s in (args.sizes or default).split(",")]
    return bench_resolution(sizes, seconds=0.3 if args.quick else 1.5, log=log)


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    from bench.inproc import bench_memory
    from bench.webhook_memory import bench_served_memory

    out = bench_memory(args.memory_streams or (1000 if args.quick else 10_000), log=log)
    default = "1000" if args.quick else "10000,50000"
    sizes = [int(x) for x in (args.memory_sizes or default).split(",")]
    modes = [m for m in args.memory_modes.split(",") if m]
    out["served"] = bench_served_memory(sizes, modes, workers=args.workers, log=log)
    return out


def run_cluster_sections(args: argparse.Namespace, which: list[str]) -> dict[str, Any]:
    from bench.cluster import ClusterConfig, bench_cluster

    quick = args.quick
    config = ClusterConfig(
        creates=args.creates or (20 if quick else 200),
        import_streams=tuple(
            int(n) for n in (args.import_streams or ("200" if quick else "2000")).split(",")
        ),
        import_tags=args.import_tags,
        import_repos=args.import_repos,
        import_workers=args.import_workers,
        import_timeout=args.import_timeout or (120 if quick else 900),
        scheduled_interval=args.scheduled_interval or (10 if quick else 30),
        state_dir=args.cluster_dir,
        apiserver="apiserver" in which,
        imports="import" in which,
    )
    return bench_cluster(config, log)


def run_controller_memory(args: argparse.Namespace) -> dict[str, Any]:
    from bench.controller_memory import bench_controller_memory

    default = "1000,5000" if args.quick else "10000,50000"
    sizes = [int(s) for s in (args.controller_streams or default).split(",")]
    return bench_controller_memory(sizes, log=log)


def run_node(args: argparse.Namespace) -> dict[str, Any]:
    from bench.cluster import ClusterConfig
    from bench.node import bench_node

    config = ClusterConfig(creates=args.creates or (30 if args.quick else 200))
    return bench_node(config, log)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO_ROOT)  # subprocesses run `python -m bench.*` from here
    which = selected(args)
    started = time.monotonic()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine_before": machine.describe(),
        "sections": {},
        "failed": {},
    }
    log(
        f"machine: {results['machine_before']['cores']} cores, load average "
        f"{' '.join(f'{x:.2f}' for x in results['machine_before']['loadavg'])}"
    )
    runners: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
        "http": run_http,
        "resolve": run_resolve,
        "memory": run_memory,
        "node": run_node,
        "controller-memory": run_controller_memory,
    }
    for name in which:
        if name in ("apiserver", "import"):
            continue
        log(f"[{name}]")
        t0 = time.monotonic()
        try:
            results["sections"][name] = runners[name](args)
            results["sections"][name]["seconds"] = round(time.monotonic() - t0, 1)
        except Exception as err:  # one failed section must not lose the others
            traceback.print_exc()
            results["failed"][name] = f"{type(err).__name__}: {err}"
    cluster = [n for n in which if n in ("apiserver", "import")]
    if cluster:
        log(f"[{', '.join(cluster)}]")
        t0 = time.monotonic()
        try:
            out = run_cluster_sections(args, cluster)
            for name in cluster:
                key = "apiserver" if name == "apiserver" else "import"
                if key in out.get("failed", {}):
                    results["failed"][name] = out["failed"][key]
                elif key in out:
                    results["sections"][name] = out[key]
            results["cluster_seconds"] = round(time.monotonic() - t0, 1)
        except Exception as err:
            traceback.print_exc()
            for name in cluster:
                results["failed"][name] = f"{type(err).__name__}: {err}"
    results["machine_after"] = machine.describe()
    results["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(render_table(results))
    log(f"\nwrote {args.out} in {results['seconds']} s")
    return 1 if results["failed"] else 0


# --- the table ---------------------------------------------------------------------------


def render_table(results: dict[str, Any]) -> str:
    rows = table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ms(latency: dict[str, float]) -> str:
    return "p50 {p50} / p90 {p90} / p99 {p99} / max {max} ms".format(**latency)


def served_memory_rows(served: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Figure 4, served: the largest worker's RSS and peak beside the issue's target."""
    rows = []
    for mode in ("file", "watch"):
        for row in served.get(mode, []):
            target = row["target_mib"]
            if target:
                ok = "meets" if row["max_peak_mib"] <= target else "OVER"
                goal = f"target ≤ {target:g} MiB: {ok}"
            else:
                goal = "no target at this size"
            rows.append(
                (
                    "4 webhook memory",
                    f"RSS per worker, {mode}-fed, {row['streams']} streams",
                    f"{row['max_rss_mib']} MiB, peak {row['max_peak_mib']} MiB ({goal}; "
                    f"{row['workers']} workers; PSS {max(row['pss_mib'])} MiB a worker, "
                    f"{row['pod_pss_mib']} MiB the pod; ready in {row['ready_s']} s)",
                )
            )
    return rows


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    before, after = results["machine_before"], results.get("machine_after", {})
    load = " ".join(f"{x:.2f}" for x in before["loadavg"])
    load_after = " ".join(f"{x:.2f}" for x in after.get("loadavg", []))
    rows = [("figure", "measure", "value")]
    rows.append(
        ("machine", "cores / load avg before → after", f"{before['cores']} / {load} → {load_after}")
    )
    s = results["sections"]
    if "http" in s:
        h = s["http"]
        st = h["settings"]
        sat, fixed = h["saturation"], h["fixed_rate"]
        rows.append(
            (
                "1 webhook/TLS",
                "settings",
                f"{st['streams']} streams x {st['tags']} tags, "
                f"{st['gunicorn']}, wrk c={st['connections_saturation']}",
            )
        )
        for name in ("ours", "floor"):
            label = "1 webhook/TLS" if name == "ours" else "2 floor (no-op)"
            x = sat[name]
            rows.append((label, "saturation req/s", f"{x['rps']:.0f} ({_ms(x['latency_ms'])})"))
            rows.append(
                (label, "server CPU per request", f"{x['server_cpu_us_per_request']:.0f} µs")
            )
            y = fixed[name]
            rows.append(
                (
                    label,
                    f"at {fixed['offered_rps']:.0f} req/s offered",
                    f"{y['rps']:.0f} req/s ({_ms(y['latency_ms'])})",
                )
            )
            rows.append(
                (
                    label,
                    "cores used at saturation (server/wrk/others)",
                    f"{x['cores'].get('server')}/{x['cores'].get('wrk')}/"
                    f"{x['cores'].get('others')}",
                )
            )
        rows.append(
            ("2 floor (no-op)", "ours/floor throughput (goal ≥ 0.85)", f"{h['ratio_to_floor']:.2f}")
        )
        rows.append(
            (
                "2 floor (no-op)",
                "floor/ours server CPU per request (steadier)",
                f"{h['cpu_ratio_floor_to_ours']:.2f}",
            )
        )
        rows += goal4_rows(h)
        d = h["p99_minus_floor_ms"]
        rows.append(
            (
                "2 floor (no-op)",
                "p99 ours - floor",
                f"{d['saturation']:+} ms saturated, {d['fixed_rate']:+} ms at fixed rate",
            )
        )
    if "resolve" in s:
        r = s["resolve"]
        for row in r["rows"]:
            rows.append(
                (
                    "3 resolution",
                    f"{row['streams']} streams",
                    f"{row['review_us']} µs/review ({row['review_json_us']} µs with JSON "
                    f"decode+encode)",
                )
            )
        rows.append(
            (
                "3 resolution",
                "growth smallest → largest index",
                f"x{r['growth_smallest_to_largest']}",
            )
        )
    if "memory" in s:
        m = s["memory"]
        rows.append(
            (
                "4 index memory",
                f"per 10k streams x {m['tags']} tags x {m['history']} items",
                f"{m['index_rss_mib_per_10k']} MiB RSS ({m['index_traced_mib_per_10k']} "
                f"MiB traced)",
            )
        )
        rows.append(
            (
                "4 index memory",
                "loaded from a file (per worker): kept / peak",
                f"{m['file_load_rss_mib_per_10k']} / {m['file_load_peak_mib_per_10k']} MiB",
            )
        )
        rows += served_memory_rows(m.get("served", {}))
    if "apiserver" in s:
        rows += create_deployment_rows("5 API server", s["apiserver"], *APISERVER_FIGURE)
    if "node" in s:
        rows += create_deployment_rows("7 on the node", s["node"], *NODE_FIGURE)
    if "import" in s:
        rows += import_rows(s["import"])
    if "controller-memory" in s:
        for size, m in s["controller-memory"]["sizes"].items():
            target = f" (target {m['target_mib']:.0f} MiB)" if m.get("target_mib") else ""
            rows.append(
                (
                    f"8 controller ({int(size):,} x 5 x 3)",
                    "peak RSS after listing and reconciling all",
                    f"{m['peak_rss_mib']} MiB{target}; now {m['rss_after_mib']} MiB",
                )
            )
    for name, why in results.get("failed", {}).items():
        rows.append((name, "NOT MEASURED", why.splitlines()[0][:160]))
    return rows


def goal4_rows(h: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 17 goal 4: ours' server CPU per request minus the floor's, beside the target;
    over HTTP at saturation and at the fixed rate (there both serve the same req/s, so
    neither is charged with the other's batching), and in process through WSGI."""
    from bench.http import FLOOR_WITH_INDEX
    from bench.wsgi_floor import TARGET_US

    rows = []
    for phase, label in (("saturation", "at saturation"), ("fixed_rate", "at the fixed rate")):
        runs = h[phase]
        ours, floor = runs["ours"], runs["floor"]
        pairs = [
            round(o["server_cpu_us_per_request"] - f["server_cpu_us_per_request"])
            for o, f in zip(ours["runs"], floor["runs"], strict=True)
        ]
        diff = ours["server_cpu_us_per_request"] - floor["server_cpu_us_per_request"]
        rows.append(
            (
                "2 floor (no-op)",
                f"ours - floor server CPU/req {label} (goal ≤ {TARGET_US:.0f} µs)",
                f"{diff:+.0f} µs (rounds {pairs})",
            )
        )
        held = runs.get(FLOOR_WITH_INDEX)
        if held:
            rows.append(
                (
                    "2 floor (no-op)",
                    f"floor holding ours' index - floor, {label}",
                    f"{held['server_cpu_us_per_request'] - floor['server_cpu_us_per_request']:+.0f}"
                    " µs",
                )
            )
    if "wsgi" in h:
        w = h["wsgi"]
        rows.append(
            (
                "2 floor (no-op)",
                f"ours - floor CPU/req in process, WSGI (goal ≤ {TARGET_US:.0f} µs)",
                f"{w['ours_minus_floor_us']:+.0f} µs ({w['ours_us']:.0f} / {w['floor_us']:.0f} µs)",
            )
        )
    return rows


# The `create deployment` figures: the sides measured, then the paired differences.
APISERVER_FIGURE = (
    ("without_webhook", "floor_webhook", "floor_patch_webhook", "with_webhook"),
    (
        ("paired_difference", "added by ours (paired)"),
        ("floor_paired_difference", "added by the no-op floor (paired)"),
        ("ours_minus_floor", "ours - floor (paired)"),
        ("floor_patch_paired_difference", "added by the floor with ours' patch (paired)"),
        ("ours_minus_floor_patch", "ours - floor with the same patch (goal: median ≤ 1 ms)"),
    ),
)
NODE_FIGURE = (
    ("without_webhook", "floor_webhook", "with_webhook"),
    (
        ("paired_difference", "added by ours as pods (paired)"),
        ("floor_paired_difference", "added by the floor as pods (paired)"),
        ("ours_minus_floor", "ours - floor (paired)"),
    ),
)


def create_deployment_rows(
    figure: str,
    a: dict[str, Any],
    sides: Sequence[str],
    differences: Sequence[tuple[str, str]],
) -> list[tuple[str, str, str]]:
    """A `create deployment` latency figure: each side's median and p99, then each paired
    difference. What a result lacks (one from before the patching floor) is left out."""
    rows = [
        (
            figure,
            f"create deployment, {side.replace('_', ' ')}",
            f"median {a[side]['median_ms']} / p99 {a[side]['p99_ms']} ms (n={a[side]['n']})",
        )
        for side in sides
        if side in a
    ]
    rows += [
        (figure, label, f"median {a[key]['median_ms']:+} / p99 {a[key]['p99_ms']:+} ms")
        for key, label in differences
        if key in a
    ]
    return rows


def _load(p: dict[str, Any]) -> str:
    return f"load {p['load_before'][0]:.1f} → {p['load_after'][0]:.1f}"


def import_rows(imp: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Figure 6 at each size, every measure beside its target."""
    t = imp["targets"]
    rows = []
    for size, x in imp["sizes"].items():
        first, sched = x["first_pass"], x["scheduled_pass"]
        repos = (
            f", {imp['registry_repositories']:,} repos" if "registry_repositories" in imp else ""
        )
        label = f"6 import ({int(size):,}x{imp['tags']}{repos})"
        unfinished = "" if first["finished"] else " (NOT FINISHED: timed out)"
        rows.append(
            (
                label,
                f"first pass tags/s (target ≥ {t['first_tags_per_s']:.0f})",
                f"{first['tags_per_s']} tags/s: {first['tags_imported']:,} tags in "
                f"{first['wall_s']} s{unfinished}, {_load(first)}",
            )
        )
        by_process = first.get("cpu_ms_per_tag_by_process")
        if by_process:
            parts = ", ".join(f"{name} {ms}" for name, ms in by_process.items())
            rows.append(
                (
                    label,
                    "first pass CPU ms per tag by process; what they allow",
                    f"{parts}; all cores: {first['machine_ceiling_tags_per_s']} tags/s, the"
                    f" controller alone on a core: {first['controller_per_core_tags_per_s']}",
                )
            )
        unfinished = "" if sched["finished"] else " (NOT FINISHED: timed out)"
        rows.append(
            (
                label,
                "scheduled pass CPU per unchanged tag "
                f"(target ≤ {t['scheduled_cpu_ms_per_tag']} ms)",
                f"{sched['pass_cpu_ms_per_tag']} ms (with start-up and list: "
                f"{sched['cpu_ms_per_tag']} ms), {sched['tags_imported']:,} checks in "
                f"{sched['wall_s']} s{unfinished}, {_load(sched)}",
            )
        )
        rows.append(
            (
                label,
                "registry requests per tag: first / scheduled "
                f"(target ≤ {t['registry_requests_per_tag']:.0f})",
                f"{first['registry_requests_per_tag']} / {sched['registry_requests_per_tag']}",
            )
        )
        rows.append(
            (
                label,
                "API writes: first (one per stream) / scheduled "
                f"(target {t['scheduled_status_writes']:.0f})",
                f"{first['status_writes']:,} / {sched['status_writes']}",
            )
        )
        rows.append(
            (
                label,
                "controller CPU per tag first pass; peak RSS first / scheduled",
                f"{first['pass_cpu_ms_per_tag']} ms (with start-up {first['cpu_ms_per_tag']} ms);"
                f" {first['peak_rss_mib']} / {sched['peak_rss_mib']} MiB",
            )
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
