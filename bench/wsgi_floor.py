"""Goal 4 in process: ours' Flask app against the floor's, through WSGI.

    python -m bench.wsgi_floor [--streams N] [--rounds R]   # prints one JSON object

The same review bodies go through ours' app (`create_app` over an index of N streams) and
through bench/floor_app.py's, in turn (ours, floor, floor, ours, ...), each request from the
WSGI environ to the last byte of the answer, timed in CPU time. It runs in a process of its
own set up as a gunicorn worker is (gevent's patches applied first, prometheus_client in
multiprocess mode), so the figure is what our code adds to a worker's request, without TLS,
gunicorn's parsing and the machine's other load. Over HTTP (figure 2) those inflate every
request's CPU, the floor's as well, by a factor that changes from run to run on a shared
machine, and ours' difference with it.
"""

from __future__ import annotations

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()  # as a gevent worker does, before anything imports threading

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from statistics import median
from typing import Any

from bench import data

TARGET_US = 50.0  # issue 17, goal 4: server CPU per request within 50 µs of the floor


def bench_wsgi_floor(
    streams: int = 10_000, rounds: int = 7, log: Any = print, timeout: float = 600
) -> dict[str, Any]:
    """Run the measurement in a fresh worker-like process; its figures."""
    with tempfile.TemporaryDirectory(prefix="imagestreams-bench-metrics-") as metrics_dir:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        cmd = [sys.executable, "-m", "bench.wsgi_floor"]
        cmd += ["--streams", str(streams), "--rounds", str(rounds)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=True, env=env, timeout=timeout
        )
    out: dict[str, Any] = json.loads(proc.stdout)
    log(
        f"  in process, through WSGI ({streams} streams): ours {out['ours_us']} µs, floor "
        f"{out['floor_us']} µs per request; ours - floor {out['ours_minus_floor_us']} µs "
        f"(target ≤ {TARGET_US:.0f}; rounds {out['paired_us']})"
    )
    return out


def measure(streams: int, rounds: int, *, tags: int = 5, pool: int = 300) -> dict[str, Any]:
    """CPU per request of each app, the median of the rounds' medians; ours - floor."""
    from bench.floor_app import create_floor_app
    from bench.inproc import time_per_call
    from webhook.serving.app import AppConfig, create_app
    from webhook.serving.stream_index import StreamIndex

    index = StreamIndex()
    index.replace_all(data.image_streams(streams, tags=tags))
    bodies = [data.encode(b) for b in data.reviews(pool, streams)]
    apps = {"ours": create_app(AppConfig(index=index)), "floor": create_floor_app()}
    seconds = pool * 300e-6  # a batch: the pool about once
    per_app: dict[str, list[float]] = {"ours": [], "floor": []}
    for i in range(rounds):
        for name in ("ours", "floor") if i % 2 == 0 else ("floor", "ours"):
            app = apps[name]
            per_app[name].append(
                time_per_call(lambda body, app=app: post(app, body), bodies, seconds, batches=7)
            )
    us = {name: round(median(v) * 1e6, 1) for name, v in per_app.items()}
    return {
        "streams": streams,
        "rounds": rounds,
        "ours_us": us["ours"],
        "floor_us": us["floor"],
        "ours_minus_floor_us": round(us["ours"] - us["floor"], 1),
        "paired_us": [
            round((o - f) * 1e6, 1) for o, f in zip(per_app["ours"], per_app["floor"], strict=True)
        ],
        "target_us": TARGET_US,
    }


def post(app: Any, body: bytes) -> bytes:
    """POST /mutate through the WSGI interface, as gunicorn calls it; the answer's body."""
    status: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/mutate",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8443",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,  # gunicorn sets it: its input ends with the body
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    chunks = app(environ, lambda s, _headers, _exc=None: status.append(s))
    try:
        answer = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"/mutate answered {status}: {answer[:200]!r}")
    return answer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wsgi_floor")
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.streams, args.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
