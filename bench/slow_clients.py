"""Slow and idle clients: are real reviews still answered while many connections stall?

    python -m bench.slow_clients [--connections 1000] [--phases handshake,headers,...]
        [--hold 10] [--workers 2] [--health] [--server-arg=--flag ...] [--out FILE]

For each phase, N connections to `imagestreams serve` on 127.0.0.1 stall in that phase,
dripping one byte a second, so that a per-read timeout alone would never close them:

  handshake  a TLS ClientHello, one byte a second
  headers    a request line, then a header that never ends
  body       complete headers announcing 1 MB, then the body one byte a second
  idle       one request answered, then a kept-alive connection with nothing more to say
  mixed      a quarter of N in each of the four

A connection the server closes is opened again at once (an attacker would), so N stay open
or opening. Meanwhile real AdmissionReviews (a new connection each: the API server opens one
when its idle ones are busy) and probes are timed. How long the server took to close each
stalled connection shows its read deadlines. Only 127.0.0.1 is ever contacted, and every loop
is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import data, machine
from bench.http import HOST, Server, _imagestreams, free_port, start_server

PHASES = ("handshake", "headers", "body", "idle")
DRIP_SECONDS = 1.0
OPEN_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
MAX_OPENS = 64  # connections being opened at once by the client


@dataclass
class Stalled:
    """What happened to one phase's stalled connections."""

    opened: int = 0
    refused: int = 0  # could not connect (or finish the handshake) within OPEN_TIMEOUT
    closed_after: list[float] = field(default_factory=list)  # seconds until the server closed

    def summary(self) -> dict[str, Any]:
        closed = sorted(self.closed_after)
        return {
            "opened": self.opened,
            "refused": self.refused,
            "closed_by_server": len(closed),
            "closed_after_s": _spread(closed),
        }


@dataclass
class Timed:
    """Latencies of requests sent while the connections stall."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"ok": len(self.latencies), "failed": len(self.failures),
                "latency_ms": _spread([x * 1000 for x in self.latencies]),
                "failures": self.failures[:5]}  # fmt: skip


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
        "max": round(ordered[-1], 1),
    }


def client_hello(context: ssl.SSLContext) -> bytes:
    """The bytes a TLS client sends first, made without a network."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _stall_bytes(phase: str) -> tuple[bytes, bytes]:
    """What a stalled connection sends at once, and what it then drips (never all of it)."""
    if phase == "headers":
        return b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", b"a" * 4000
    if phase == "body":
        head = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        return head + b"Content-Length: 1000000\r\n\r\n{", b" " * 100_000
    return b"", b""


class Attack:
    """N connections held stalled in one phase (reopened when the server closes them)."""

    def __init__(
        self, port: int, context: ssl.SSLContext, phases: list[str], count: int, open_now: Any
    ):
        self.port = port
        self.context = context
        self.hello = client_hello(context)
        self.plan = [phases[i % len(phases)] for i in range(count)]
        self.stats = {phase: Stalled() for phase in phases}
        self.open_now = open_now  # a multiprocessing.Value: the measuring process reads it
        self._stop: asyncio.Event | None = None
        self._opens = asyncio.Semaphore(MAX_OPENS)

    async def run(self, stop: Any, until: float) -> None:
        """Hold the connections until `until` (monotonic) or `stop` (a multiprocessing
        Event) is set."""
        self._stop = asyncio.Event()
        watcher = asyncio.ensure_future(self._watch(stop))
        await asyncio.gather(*(self._hold(phase, until) for phase in self.plan))
        watcher.cancel()

    async def _watch(self, stop: Any) -> None:
        assert self._stop is not None
        while not stop.is_set():
            await asyncio.sleep(0.2)
        self._stop.set()

    def _count(self, change: int) -> None:
        with self.open_now.get_lock():
            self.open_now.value += change

    async def _hold(self, phase: str, until: float) -> None:
        """Keep one stalled connection open until `until` (monotonic) or the stop."""
        loop = asyncio.get_running_loop()
        assert self._stop is not None
        while not self._stop.is_set() and loop.time() < until:
            try:
                async with self._opens:
                    reader, writer = await asyncio.wait_for(self._open(phase), OPEN_TIMEOUT)
            except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError):
                self.stats[phase].refused += 1
                await asyncio.sleep(0.5)
                continue
            stats = self.stats[phase]
            stats.opened += 1
            self._count(1)
            started = loop.time()
            try:
                if await self._stall(phase, reader, writer, until):
                    stats.closed_after.append(loop.time() - started)
            finally:
                self._count(-1)
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1)

    async def _open(self, phase: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if phase == "handshake":
            return await asyncio.open_connection(HOST, self.port)
        reader, writer = await asyncio.open_connection(
            HOST, self.port, ssl=self.context, server_hostname="localhost"
        )
        if phase == "idle":  # one request answered, then nothing
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            await reader.readexactly(length)
        return reader, writer

    async def _stall(
        self,
        phase: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        until: float,
    ) -> bool:
        """Drip until the server closes (True), or the stop (False)."""
        assert self._stop is not None
        first, drip = (
            (self.hello[:8], self.hello[8:]) if phase == "handshake" else _stall_bytes(phase)
        )
        closed = asyncio.ensure_future(_until_eof(reader))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            writer.write(first)
            sent = 0
            loop = asyncio.get_running_loop()
            while not closed.done() and not self._stop.is_set() and loop.time() < until:
                await asyncio.wait({closed, stop}, timeout=DRIP_SECONDS)
                if sent < len(drip) and not closed.done():
                    writer.write(drip[sent : sent + 1])
                    sent += 1
            return closed.done()
        finally:
            stop.cancel()
            closed.cancel()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Return when the server closes the connection (whatever it says before)."""
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
        for _ in range(10_000):
            if not await reader.read(65536):
                return


def time_requests(
    port: int,
    context: ssl.SSLContext | None,
    method: str,
    path: str,
    bodies: list[bytes],
    seconds: float,
    interval: float,
) -> Timed:
    """Send requests one after the other (a new connection each) for `seconds`."""
    timed = Timed()
    deadline = time.monotonic() + seconds
    for n in range(100_000):
        if time.monotonic() >= deadline:
            break
        body = bodies[n % len(bodies)] if bodies else None
        started = time.monotonic()
        if context is None:
            conn: http.client.HTTPConnection = http.client.HTTPConnection(
                HOST, port, timeout=REQUEST_TIMEOUT
            )
        else:
            conn = http.client.HTTPSConnection(HOST, port, context=context, timeout=REQUEST_TIMEOUT)
        try:
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                timed.failures.append(f"{response.status} {answer[:200]!r}")
            elif body and b'"allowed": true' not in answer and b'"allowed":true' not in answer:
                timed.failures.append(f"not allowed: {answer[:200]!r}")
            else:
                timed.latencies.append(time.monotonic() - started)
        except (OSError, http.client.HTTPException) as err:
            timed.failures.append(f"{type(err).__name__} after {time.monotonic() - started:.1f}s")
        finally:
            conn.close()
        time.sleep(interval)
    return timed


@dataclass
class Target:
    """A running `imagestreams serve`: its TLS port, its CA, and where probes go."""

    port: int
    ca: str
    probe_port: int | None = None  # plain-HTTP health port; None: probes over TLS
    pid: int | None = None

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)


def _attack(
    port: int,
    ca: str,
    phases: list[str],
    count: int,
    until: float,
    open_now: Any,
    stop: Any,
    out: Any,
) -> None:
    """The attacking process: its own interpreter, so that its thousand connections do not
    hold the GIL of the process that times the reviews."""
    attack = Attack(port, ssl.create_default_context(cafile=ca), phases, count, open_now)
    asyncio.run(attack.run(stop, until))
    out.put({phase: s.summary() for phase, s in attack.stats.items()})


def measure(
    target: Target,
    phases: list[str],
    connections: int,
    bodies: list[bytes],
    *,
    hold: float = 10.0,
    settle: float = 30.0,
    linger: float = 0.0,
    review_interval: float = 0.1,
) -> dict[str, Any]:
    """Stall `connections` connections over `phases`, then time reviews and probes for
    `hold` seconds; then keep stalling `linger` seconds more to see the server close them."""
    context = target.context()
    spawn = multiprocessing.get_context("spawn")
    open_now = spawn.Value("i", 0)
    stop = spawn.Event()
    # time.monotonic is the system's monotonic clock: `until` means the same in the child.
    until = time.monotonic() + settle + 2 + hold + linger + REQUEST_TIMEOUT
    out = spawn.Queue()
    args = (target.port, target.ca, phases, connections, until, open_now, stop, out)
    attacker = spawn.Process(target=_attack, args=args, daemon=True)
    attacker.start()
    try:
        # Let the connections open: until N are open, or `settle` seconds.
        settle_deadline = time.monotonic() + settle
        while open_now.value < connections and time.monotonic() < settle_deadline:
            time.sleep(0.2)
        time.sleep(min(2.0, settle))  # those still opening are in the handshake
        held_at_start = open_now.value
        rss_before = machine.tree_rss_kib(target.pid) if target.pid else 0
        cpu = machine.CpuWindow.open(server=target.pid) if target.pid else None
        results: dict[str, Timed] = {}

        def probes() -> None:
            port = target.probe_port or target.port
            ctx = None if target.probe_port else context
            results["probes"] = time_requests(port, ctx, "GET", "/healthz", [], hold, 0.5)

        prober = threading.Thread(target=probes, daemon=True)
        prober.start()
        results["reviews"] = time_requests(
            target.port, context, "POST", "/mutate", bodies, hold, review_interval
        )
        prober.join(REQUEST_TIMEOUT + hold)
        held_at_end = open_now.value
        cores = cpu.close() if cpu else {}
        rss = machine.tree_rss_kib(target.pid) if target.pid else 0
        time.sleep(linger)
        stop.set()
        stalled = out.get(timeout=OPEN_TIMEOUT + 10)
    finally:
        stop.set()
        attacker.join(OPEN_TIMEOUT + 10)
        if attacker.is_alive():
            attacker.kill()
    return {
        "phases": phases,
        "connections": connections,
        "held_while_timing": [held_at_start, held_at_end],
        "server_rss_mib": {"before": round(rss_before / 1024), "while": round(rss / 1024)},
        "cores_while_timing": cores,
        "reviews": results["reviews"].summary(),
        "probes": results.get("probes", Timed(failures=["prober hung"])).summary(),
        "stalled": stalled,
    }


@contextlib.contextmanager
def serving(
    workdir: Path, *, workers: int = 2, health: bool = False, server_args: Sequence[str] = ()
) -> Iterator[tuple[Target, list[bytes]]]:
    """`imagestreams serve` with 1,000 generated streams, and review bodies that resolve."""
    workdir.mkdir(parents=True, exist_ok=True)
    certs = workdir / "certs"
    cmd = [_imagestreams(), "certs", "--out-dir", str(certs), "--dns", "localhost"]
    subprocess.run([*cmd, "--ip", HOST], check=True, capture_output=True)
    streams = data.write_streams_file(workdir / "streams.json", 1000)
    port = free_port()
    serve = [_imagestreams(), "serve", "--bind", f"{HOST}:{port}"]
    serve += ["--certfile", str(certs / "tls.crt"), "--keyfile", str(certs / "tls.key")]
    serve += ["--workers", str(workers), "--log-level", "warning"]
    serve += ["--streams-file", str(streams), *server_args]
    probe_port = None
    if health:
        probe_port = free_port()
        serve += ["--health-bind", f"{HOST}:{probe_port}"]
    server: Server = start_server("ours", serve, port, str(certs / "ca.crt"), workdir)
    try:
        bodies = [data.encode(b) for b in data.reviews(30, 1000)]
        yield Target(port, str(certs / "ca.crt"), probe_port, server.process.pid), bodies
    finally:
        server.stop()


def _print(result: dict[str, Any]) -> None:
    reviews, probes = result["reviews"], result["probes"]
    print(
        f"  {'+'.join(result['phases']) if len(result['phases']) > 1 else result['phases'][0]}"
        f" x{result['connections']}: held {result['held_while_timing']}, "
        f"server RSS {result['server_rss_mib']} MiB, cores {result['cores_while_timing']}"
    )
    print(
        f"    reviews ok {reviews['ok']} failed {reviews['failed']} "
        f"latency ms {reviews['latency_ms']} {reviews['failures'][:2]}"
    )
    print(
        f"    probes ok {probes['ok']} failed {probes['failed']} latency ms {probes['latency_ms']}"
    )
    for phase, stalled in result["stalled"].items():
        print(f"    {phase}: {stalled}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.slow_clients", description=__doc__)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--phases", default="handshake,headers,body,idle,mixed")
    p.add_argument("--hold", type=float, default=10.0, help="seconds of timed reviews")
    p.add_argument("--linger", type=float, default=0.0, help="seconds to watch deadlines")
    p.add_argument("--settle", type=float, default=30.0, help="seconds allowed to open them")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--health", action="store_true", help="probe a --health-bind port")
    p.add_argument("--server-arg", action="append", default=[], help="extra `serve` flag")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    figures = []
    with tempfile.TemporaryDirectory(prefix="imagestreams-slow-") as tmp:
        for phase in args.phases.split(","):
            # A server of its own for each phase: no phase inherits another's leftovers.
            with serving(
                Path(tmp) / phase,
                workers=args.workers,
                health=args.health,
                server_args=args.server_arg,
            ) as (target, bodies):
                phases = list(PHASES) if phase == "mixed" else [phase]
                result = measure(
                    target,
                    phases,
                    args.connections,
                    bodies,
                    hold=args.hold,
                    settle=args.settle,
                    linger=args.linger,
                )
            _print(result)
            figures.append(result)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
