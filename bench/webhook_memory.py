"""Figure 4, served: the RSS of each webhook worker holding N streams, as it really runs.

`imagestreams serve` (gunicorn, gevent workers, TLS) is started with N streams of 5 tags x
3 history items, fed two ways:

- file: `--streams-file` with a JSON List of the N streams;
- watch: a real kube-apiserver (hack/localcluster.py, its own webhook and controller
  stopped) holding the N streams with their status, listed and watched by each worker.

Once /readyz answers and the server is idle (every worker has loaded), each worker's VmRSS
(what it holds) and VmHWM (its peak, what a memory limit must allow) are read from /proc.
Targets (issue 17): at most 60 MiB a worker at 10,000 streams, 150 MiB at 50,000.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import data, machine
from bench.http import HOST, _imagestreams, free_port, start_server

TAGS, HISTORY = 5, 3
TARGET_MIB = {10_000: 60, 50_000: 150}
GROUP, VERSION, PLURAL = "image.openshift.io", "v1", "imagestreams"


def target_mib(streams: int) -> float | None:
    """The issue's target at its two sizes; none at others (a --quick run's 1,000)."""
    return TARGET_MIB.get(streams)


def measure_serve(
    name: str, args: list[str], workdir: Path, workers: int, streams: int
) -> dict[str, Any]:
    """Start `serve` with `args`, wait until every worker has loaded, read their memory."""
    certs = workdir / "certs"
    if not certs.exists():
        cmd = [_imagestreams(), "certs", "--out-dir", str(certs), "--dns", "localhost"]
        subprocess.run([*cmd, "--ip", HOST], check=True, capture_output=True)
    port = free_port()
    cmd = [_imagestreams(), "serve", "--bind", f"{HOST}:{port}"]
    cmd += ["--certfile", str(certs / "tls.crt"), "--keyfile", str(certs / "tls.key")]
    cmd += ["--workers", str(workers), "--log-level", "warning", *args]
    started = time.monotonic()
    # 50,000 streams take each worker a minute of CPU to load; more on a busy machine.
    server = start_server(name, cmd, port, str(certs / "ca.crt"), workdir, timeout=900)
    try:
        ready_s = time.monotonic() - started
        pids = machine.children(server.process.pid)
        rss = [machine.rss_kib(p) / 1024 for p in pids]
        peak = [machine.rss_kib(p, "VmHWM") / 1024 for p in pids]
        master = machine.rss_kib(server.process.pid) / 1024
        pss = [machine.pss_kib(p) / 1024 for p in pids]
        pod_pss = sum(pss) + machine.pss_kib(server.process.pid) / 1024
        status, body = server.post(b"{}")  # a live worker answers (400: not a review)
        if status != 400:
            raise RuntimeError(f"{name}: /mutate answered {status} {body}")
    finally:
        server.stop()
    return {
        "streams": streams,
        "workers": len(pids),
        "rss_mib": [round(x, 1) for x in rss],
        "peak_mib": [round(x, 1) for x in peak],
        "max_rss_mib": round(max(rss), 1),
        "max_peak_mib": round(max(peak), 1),
        "master_rss_mib": round(master, 1),
        # RSS counts the pages a worker shares with the master (imported before the fork)
        # in full; PSS counts a share: the pod's sum is what its memory limit must hold.
        "pss_mib": [round(x, 1) for x in pss],
        "pod_pss_mib": round(pod_pss, 1),
        "ready_s": round(ready_s, 1),
        "target_mib": target_mib(streams),
    }


def file_fed(
    sizes: Sequence[int], workers: int, workdir: Path, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        path = workdir / f"streams-{size}.json"
        data.write_streams_file(path, size, tags=TAGS, history=HISTORY)
        row = measure_serve(f"file-{size}", ["--streams-file", str(path)], workdir, workers, size)
        path.unlink()
        log(f"  file-fed, {size} streams: {_line(row)}")
        rows.append(row)
    return rows


def watch_fed(
    sizes: Sequence[int], workers: int, workdir: Path, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    from kubernetes import config as kconfig

    rows = []
    with _control_plane(workdir, log) as cluster:
        api = kconfig.new_client_from_config(config_file=str(cluster.kubeconfig))
        have = 0
        for size in sorted(sizes):
            t0 = time.monotonic()
            _populate(api, have, size, max(sizes))
            log(f"  {size - have} streams written in {time.monotonic() - t0:.0f} s")
            have = size
            args = ["--kubeconfig", str(cluster.kubeconfig)]
            row = measure_serve(f"watch-{size}", args, workdir, workers, size)
            log(f"  watch-fed, {size} streams: {_line(row)}")
            rows.append(row)
    return rows


@contextlib.contextmanager
def _control_plane(workdir: Path, log: Callable[[str], None]) -> Iterator[Any]:
    from bench.cluster import load_localcluster

    localcluster = load_localcluster()
    log(f"  starting the local control plane in {workdir / 'cluster'}")
    cluster = localcluster.Cluster.start(workdir / "cluster")
    try:
        # Its webhook would index every stream written; its controller would import them.
        cluster.stop_webhook()
        with contextlib.suppress(Exception):
            cluster.stop_controller()
        yield cluster
    finally:
        cluster.stop()


def _populate(api: Any, start: int, stop: int, total: int) -> None:
    """Streams start..stop-1 of `total` (bench/data.py's names and namespaces), each
    created and then given its status, as the controller would write it."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    wanted = {data.namespace_of(i, total) for i in range(start, stop)}
    existing = {ns.metadata.name for ns in core.list_namespace().items}

    def namespace(name: str) -> None:
        core.create_namespace({"metadata": {"name": name}})

    def stream(i: int) -> None:
        obj = data.image_stream(i, total, tags=TAGS, history=HISTORY)
        status = obj.pop("status")
        meta = obj["metadata"]
        obj["metadata"] = {"name": meta["name"], "namespace": meta["namespace"]}
        ns, name = meta["namespace"], meta["name"]
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, name, {"status": status}
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(namespace, sorted(wanted - existing)))
        list(pool.map(stream, range(start, stop), chunksize=64))


def _line(row: dict[str, Any]) -> str:
    target = f"target ≤ {row['target_mib']} MiB" if row["target_mib"] else "no target"
    return (
        f"RSS per worker {row['rss_mib']} MiB (peak {row['peak_mib']}, PSS {row['pss_mib']}),"
        f" {target}; pod PSS {row['pod_pss_mib']} MiB; ready in {row['ready_s']} s"
    )


def bench_served_memory(
    sizes: Sequence[int],
    modes: Sequence[str] = ("file", "watch"),
    workers: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    out: dict[str, Any] = {"tags": TAGS, "history": HISTORY, "workers": workers}
    with tempfile.TemporaryDirectory(prefix="imagestreams-bench-memory-") as tmp:
        work = Path(tmp)
        if "file" in modes:
            out["file"] = file_fed(sizes, workers, work, log)
        if "watch" in modes:
            out["watch"] = watch_fed(sizes, workers, work, log)
    return out


if __name__ == "__main__":
    sizes = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "10000").split(",")]
    modes = (sys.argv[2] if len(sys.argv) > 2 else "file,watch").split(",")
    import json

    print(json.dumps(bench_served_memory(sizes, modes), indent=2))
