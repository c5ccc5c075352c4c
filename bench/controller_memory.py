"""Controller memory (issue 17, goal 2): peak RSS of `imagestreams controller` holding N
streams x 5 tags x 3 history items, against a real kube-apiserver (hack/localcluster.py).

The streams are written as the controller leaves them (spec tags at generation 2, a status
history of 3 items a tag, every tag scheduled), so a fresh controller lists them all, queues
and reconciles each one, and imports nothing: what it holds then is its cache, its
per-tag state and its queue. The scheduled interval is made so long (10^7 s) that no
scheduled check falls in the run. Peak RSS is the kernel's high-water mark (VmHWM), read
once the controller has listed every stream and its CPU has been idle for IDLE_S.

Sizes grow in one cluster: 10,000 streams are written, measured, then 40,000 more for 50,000.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import data, machine
from bench.cluster import GROUP, PLURAL, VERSION, load_localcluster

TARGETS_MIB = {10_000: 150.0, 50_000: 400.0}  # issue 17, goal 2
IDLE_S = 3.0  # CPU idle this long after the list: every stream has been reconciled
SETTLE_TIMEOUT_S = 900.0
INTERVAL = "10000000s"
NAMESPACE = "bench-mem-{}"


def bench_controller_memory(
    sizes: list[int], log: Callable[[str], None] = print, state_dir: Path | None = None
) -> dict[str, Any]:
    localcluster = load_localcluster()
    from kubernetes import config as kconfig

    state = state_dir or Path(tempfile.mkdtemp(prefix="imagestreams-bench-memory-"))
    log(f"  starting the local cluster in {state}")
    cluster = localcluster.Cluster.start(state)
    out: dict[str, Any] = {"sizes": {}}
    try:
        with contextlib.suppress(Exception):
            cluster.stop_controller()
        with contextlib.suppress(Exception):
            cluster.stop_webhook()  # it would index every stream we write
        api = kconfig.new_client_from_config(config_file=str(cluster.kubeconfig))
        written = 0
        for size in sorted(sizes):
            t0 = time.monotonic()
            write_streams(cluster, api, written, size, final=max(sizes))
            written_s = time.monotonic() - t0
            log(f"  wrote streams {written}..{size} in {written_s:.0f} s")
            written = size
            figure = measure(cluster, state, size, log)
            figure["write_streams_s"] = round(written_s, 1)
            figure["load_after"] = list(os.getloadavg())
            out["sizes"][str(size)] = figure
            log(f"  {size} streams: {figure}")
    finally:
        cluster.stop()
        if state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
    return out


def write_streams(cluster: Any, api: Any, start: int, stop: int, final: int) -> None:
    """Streams start..stop-1 (namespaces as for `final` streams, 100 in each), with status.

    The status subresource would drop status on create and take a second request per stream
    to write it: for the writing, the CRD's status subresource is switched off (objects are
    then stored as sent, as a restore from a backup stores them) and switched on again after.
    """
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    names = sorted({NAMESPACE.format(i // 100) for i in range(start, stop)})
    cluster.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]
    )

    def write(i: int) -> None:
        obj = data.image_stream(i, final, tags=5, history=3, registry=cluster.registry)
        namespace = NAMESPACE.format(i // 100)
        obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": namespace}
        for tag in obj["spec"]["tags"]:
            tag["importPolicy"]["insecure"] = True
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, obj, _preload_content=False
        )

    _status_subresource(api, custom, on=False)
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(start, stop)))
    finally:
        _status_subresource(api, custom, on=True)


def _status_subresource(api: Any, custom: Any, *, on: bool) -> None:
    """Switch the ImageStream CRD's status subresource, and wait until the API server
    serves it so (a probe stream keeps its status on create only when it is off)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    crds = client.ApiextensionsV1Api(api)
    crd = crds.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    index = next(i for i, v in enumerate(crd.spec.versions) if v.name == VERSION)
    has = crd.spec.versions[index].subresources is not None and (
        crd.spec.versions[index].subresources.status is not None
    )
    if has != on:
        path = f"/spec/versions/{index}/subresources/status"
        op = {"op": "add", "path": path, "value": {}} if on else {"op": "remove", "path": path}
        crds.patch_custom_resource_definition(f"{PLURAL}.{GROUP}", [op])
    probe = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageStream",
        "metadata": {"name": "status-probe", "namespace": "default"},
        "status": {"dockerImageRepository": "probe"},
    }
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, "status-probe"
            )
        created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, probe)
        kept = (created.get("status") or {}).get("dockerImageRepository") == "probe"
        custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "status-probe")
        if kept != on:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the status subresource did not turn {'on' if on else 'off'}")
        time.sleep(0.5)


def measure(cluster: Any, state: Path, size: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Start a controller, wait until it has listed and reconciled every stream, read its
    peak RSS, stop it."""
    log_path = state / f"controller-memory-{size}.log"
    cmd = cluster.controller_command("--no-leader-elect", "--scheduled-interval", INTERVAL)
    started = time.monotonic()
    with log_path.open("wb") as sink:
        process = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env=cluster.env, start_new_session=True
        )
    try:
        listed_s, settled_s = _settle(process, log_path, started)
        figure = {
            "streams": size,
            "tags": size * 5,
            "peak_rss_mib": round(machine.rss_kib(process.pid, "VmHWM") / 1024, 1),
            "rss_after_mib": round(machine.rss_kib(process.pid, "VmRSS") / 1024, 1),
            "target_mib": TARGETS_MIB.get(size),
            "listed_s": round(listed_s, 1),
            "settled_s": round(settled_s, 1),
            "cpu_s": round(machine.tree_cpu_seconds(process.pid), 1),
        }
    finally:
        machine.stop(process)
    return figure


def _settle(
    process: subprocess.Popen[bytes], log_path: Path, started: float
) -> tuple[float, float]:
    """(seconds to the end of the list, seconds until the CPU was idle after it)."""
    listed_at = None
    idle_since, last_cpu = None, -1.0
    while True:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the controller exited ({process.returncode}):\n{tail}")
        now = time.monotonic()
        if now - started > SETTLE_TIMEOUT_S:
            raise RuntimeError(f"the controller did not settle in {SETTLE_TIMEOUT_S:.0f} s")
        if listed_at is None and re.search(r"listed \d+ image streams", log_path.read_text()):
            listed_at = now
        cpu = machine.tree_cpu_seconds(process.pid)
        if listed_at is not None:
            if cpu - last_cpu < 0.02:  # a tick or two: a lease-free, idle controller
                idle_since = idle_since or now
                if now - idle_since >= IDLE_S:
                    return listed_at - started, idle_since - started
            else:
                idle_since = None
        last_cpu = cpu
        time.sleep(0.5)
