"""Figures 1 and 2: the webhook over TLS under load, against the floor, in the same run.

Both servers run at once (an idle one costs nothing) and are measured in turn, alternating
the order every round (ABBA), by the same load generator with the same settings:
`wrk` (C, epoll, OpenSSL; keep-alive connections) with bench/wrk_admission.lua posting
the same AdmissionReview bodies. First at saturation (closed loop: every connection sends
its next request as soon as the answer arrives), then at a fixed offered rate.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from bench import data, machine

HERE = Path(__file__).resolve().parent
LUA = HERE / "wrk_admission.lua"
FLOOR_WITH_INDEX = "floor+index"
HOST = "127.0.0.1"


class BenchError(RuntimeError):
    pass


@dataclass
class HttpConfig:
    streams: int = 10_000
    tags: int = 5
    bodies: int = 300
    workers: int = 2
    connections: int = 32  # at saturation
    rate_connections: int = 16  # at the fixed rate
    wrk_threads: int = 1
    duration: float = 8.0
    warmup: float = 2.0
    rounds: int = 2
    rate: float = 500.0
    # The fixed rate is lowered to this share of the slower server's saturation throughput,
    # so that it measures latency under load, not queueing.
    max_rate_share: float = 0.6
    server_args: list[str] = field(default_factory=list)  # extra `serve` flags (tuning)
    # A third server: the floor holding ours' index in every worker, never reading it (what
    # the index's memory alone costs each request).
    floor_with_index: bool = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise BenchError(
            "wrk not found: install it (`apt-get install wrk`; Debian's is built with OpenSSL,"
            " which the TLS figures need)"
        )
    return found


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    ca: str
    cpu_at_ready: float = 0.0
    rss_kib: int = 0

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPSConnection(HOST, self.port, context=self.context(), timeout=10)
        try:
            conn.request("POST", "/mutate", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def ready(self) -> bool:
        conn = http.client.HTTPSConnection(HOST, self.port, context=self.context(), timeout=2)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        machine.stop(self.process)


def start_server(
    name: str, cmd: list[str], port: int, ca: str, workdir: Path, timeout: float = 180
) -> Server:
    log = workdir / f"{name}.log"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(dir=workdir)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = Server(name, process, port, log, ca)
    deadline = time.monotonic() + timeout
    while not server.ready():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{name} did not become ready; its log ends:\n{tail}")
        time.sleep(0.2)
    # /readyz answers as soon as one worker is up: wait until every worker has loaded.
    machine.wait_idle(process.pid, timeout=timeout)
    server.cpu_at_ready = machine.tree_cpu_seconds(process.pid)
    server.rss_kib = machine.tree_rss_kib(process.pid)
    return server


@contextlib.contextmanager
def servers(config: HttpConfig, workdir: Path) -> Iterator[dict[str, Server]]:
    """Ours (`imagestreams serve` with the streams file) and the floor, same settings (and
    the floor holding the same streams, with `floor_with_index`), by name."""
    certs = workdir / "certs"
    cmd = [_imagestreams(), "certs", "--out-dir", str(certs), "--dns", "localhost"]
    subprocess.run([*cmd, "--ip", HOST], check=True, capture_output=True)
    streams = data.write_streams_file(workdir / "streams.json", config.streams, tags=config.tags)
    common = [
        "--certfile",
        str(certs / "tls.crt"),
        "--keyfile",
        str(certs / "tls.key"),
        "--workers",
        str(config.workers),
        "--log-level",
        "warning",
    ]
    ca = str(certs / "ca.crt")
    started: list[Server] = []
    try:
        port = free_port()
        ours_cmd = [_imagestreams(), "serve", "--bind", f"{HOST}:{port}", *common]
        ours_cmd += ["--streams-file", str(streams), *config.server_args]
        started.append(start_server("ours", ours_cmd, port, ca, workdir))
        port = free_port()
        floor_cmd = [sys.executable, "-m", "bench.floor_app", "--bind", f"{HOST}:{port}"]
        started.append(start_server("floor", floor_cmd + common, port, ca, workdir))
        if config.floor_with_index:
            port = free_port()
            held = [sys.executable, "-m", "bench.floor_app", "--bind", f"{HOST}:{port}"]
            held += [*common, "--hold-streams-file", str(streams)]
            started.append(start_server(FLOOR_WITH_INDEX, held, port, ca, workdir))
        yield {server.name: server for server in started}
    finally:
        for server in started:
            server.stop()


def _imagestreams() -> str:
    candidate = Path(sys.executable).parent / "imagestreams"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("imagestreams")
    if not found:
        raise BenchError("the imagestreams command is not installed: run `make venv`")
    return found


def check_answers(ours: Server, floor: Server, bodies: list[dict[str, Any]]) -> dict[str, int]:
    """Before timing anything: ours pins every short name, the floor allows."""
    patched = {}
    for body in bodies[:3]:
        kind = body["request"]["kind"]["kind"]
        status, answer = ours.post(data.encode(body))
        response = answer.get("response") or {}
        if status != 200 or response.get("patchType") != "JSONPatch":
            raise BenchError(f"ours did not patch a {kind}: {status} {answer}")
        ops = json.loads(base64.b64decode(response["patch"]))
        if len(ops) != data.expected_patches(kind):
            raise BenchError(f"ours patched {len(ops)} images of a {kind}: {ops}")
        patched[kind] = len(ops)
        status, answer = floor.post(data.encode(body))
        if status != 200 or not answer["response"]["allowed"]:
            raise BenchError(f"floor did not allow a {kind}: {status} {answer}")
    return patched


def run_wrk(
    server: Server,
    bodies_file: Path,
    *,
    connections: int,
    duration: float,
    rate: float = 0.0,
    threads: int = 1,
) -> dict[str, Any]:
    cmd = [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        f"{server.url}/mutate",
        "--",
        str(bodies_file),
        str(rate),
        str(threads),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    window = machine.CpuWindow.open(server=server.process.pid)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cores = window.close(wrk=wrk_cpu)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(line.partition(" ")[2])
    seconds = result["duration_us"] / 1e6
    errors = sum(result["errors"].values())
    result["rps"] = round(result["requests"] / seconds, 1)
    result["offered_rps"] = rate or None
    result["connections"] = connections
    result["errors_total"] = errors
    result["cores"] = cores
    # CPU per request is steadier than req/s on a shared machine: others' load takes cores
    # away but (mostly) does not add CPU time to each request.
    result["server_cpu_us_per_request"] = round(
        cores["server"] * seconds / max(1, result["requests"]) * 1e6, 1
    )
    lat = result["latency_us"]
    result["latency_ms"] = {k: round(lat[k] / 1000, 2) for k in ("p50", "p90", "p99", "max")}
    return result


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over rounds of req/s and of each percentile; max of max; summed errors."""
    keys = ("p50", "p90", "p99")
    latency = {k: round(mean(r["latency_ms"][k] for r in runs), 2) for k in keys}
    latency["max"] = max(r["latency_ms"]["max"] for r in runs)
    cores: dict[str, float] = {}
    for name in runs[0]["cores"]:
        cores[name] = round(mean(r["cores"][name] for r in runs), 2)
    return {
        "rps": round(mean(r["rps"] for r in runs), 1),
        "server_cpu_us_per_request": round(mean(r["server_cpu_us_per_request"] for r in runs), 1),
        "latency_ms": latency,
        "errors": sum(r["errors_total"] for r in runs),
        "cores": cores,
        "runs": runs,
    }


def bench_http(config: HttpConfig, log: Any = print) -> dict[str, Any]:
    wrk_binary()
    with tempfile.TemporaryDirectory(prefix="imagestreams-bench-") as tmp:
        workdir = Path(tmp)
        bodies = data.reviews(config.bodies, config.streams)
        bodies_file = workdir / "bodies.jsonl"
        bodies_file.write_bytes(b"\n".join(data.encode(b) for b in bodies) + b"\n")
        sizes = {}
        for body in bodies[:3]:
            sizes[body["request"]["kind"]["kind"]] = len(data.encode(body))
        log(
            f"  starting servers: {config.streams} streams x {config.tags} tags, "
            f"{config.workers} gevent workers"
        )
        with servers(config, workdir) as pair:
            patched = check_answers(pair["ours"], pair["floor"], bodies)
            for server in pair.values():  # warm up: connections, TLS, caches
                run_wrk(
                    server,
                    bodies_file,
                    connections=config.connections,
                    duration=config.warmup,
                    threads=config.wrk_threads,
                )
            sat = _alternating(
                pair,
                config.rounds,
                lambda name, run: log(
                    f"  saturation {name}: {run['rps']} req/s, "
                    f"{run['server_cpu_us_per_request']} µs server CPU/req, "
                    f"p99 {run['latency_ms']['p99']}"
                    f" ms, cores {run['cores']}"
                ),
                bodies_file,
                connections=config.connections,
                duration=config.duration,
                threads=config.wrk_threads,
            )
            slowest = min(s["rps"] for s in sat.values())
            rate = min(config.rate, max(10.0, round(slowest * config.max_rate_share, -1)))
            at_rate = _alternating(
                pair,
                config.rounds,
                lambda name, run: log(
                    f"  {rate:.0f} req/s {name}: {run['rps']} req/s, p99 "
                    f"{run['latency_ms']['p99']} ms, cores {run['cores']}"
                ),
                bodies_file,
                connections=config.rate_connections,
                duration=config.duration,
                rate=rate,
                threads=config.wrk_threads,
            )
            memory = {name: round(s.rss_kib / 1024, 1) for name, s in pair.items()}
    ratio = sat["ours"]["rps"] / sat["floor"]["rps"] if sat["floor"]["rps"] else 0.0
    return {
        "settings": {
            "streams": config.streams,
            "tags": config.tags,
            "gunicorn": f"gevent (DeadlineWorker), {config.workers} workers",
            "server_args": config.server_args,
            "tls": "TLS 1.2+ (OpenSSL default: TLS 1.3), keep-alive",
            "load_generator": f"wrk {config.wrk_threads} thread(s), bench/wrk_admission.lua",
            "connections_saturation": config.connections,
            "connections_fixed_rate": config.rate_connections,
            "duration_s": config.duration,
            "rounds": config.rounds,
            "body_bytes": sizes,
            "images_patched": patched,
        },
        "server_rss_mib": memory,
        "saturation": sat,
        "fixed_rate": {"offered_rps": rate, **at_rate},
        "ratio_to_floor": round(ratio, 3),
        "cpu_ratio_floor_to_ours": round(
            sat["floor"]["server_cpu_us_per_request"] / sat["ours"]["server_cpu_us_per_request"], 3
        ),
        "p99_minus_floor_ms": {
            "saturation": round(
                sat["ours"]["latency_ms"]["p99"] - sat["floor"]["latency_ms"]["p99"], 2
            ),
            "fixed_rate": round(
                at_rate["ours"]["latency_ms"]["p99"] - at_rate["floor"]["latency_ms"]["p99"], 2
            ),
        },
    }


def _alternating(
    pair: dict[str, Server],
    rounds: int,
    report: Callable[[str, dict[str, Any]], None],
    bodies_file: Path,
    **wrk: Any,
) -> dict[str, dict[str, Any]]:
    """`rounds` wrk runs against each server of the pair (`run_wrk(server, bodies_file,
    **wrk)`), which goes first alternating round by round; each one's runs summarised."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in pair}
    for order in _rounds(rounds, list(pair)):
        for name in order:
            run = run_wrk(pair[name], bodies_file, **wrk)
            report(name, run)
            runs[name].append(run)
    return {name: _summary(server_runs) for name, server_runs in runs.items()}


def _rounds(count: int, names: list[str]) -> Iterator[list[str]]:
    """The floor first, then the others; the other way round the next round (ABBA)."""
    order = ["floor", *(name for name in names if name != "floor")]
    for i in range(count):
        yield order if i % 2 == 0 else order[::-1]
