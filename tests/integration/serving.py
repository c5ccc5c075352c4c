"""Running the real `imagestreams serve` for integration tests: certificates from
`imagestreams certs`, the gunicorn process over TLS on 127.0.0.1, readiness, shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from registry_fixtures import free_port

BIN = Path(sys.executable).parent / "imagestreams"


S = TypeVar("S", bound="Served")


@dataclass
class Served:
    url: str
    port: int
    ca: str
    certs: Path
    process: subprocess.Popen[bytes]
    log: Path

    def post(self, path: str, body: Any, **kw: Any) -> requests.Response:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        headers = {"Content-Type": "application/json"}
        kw.setdefault("timeout", 5)
        return requests.post(f"{self.url}{path}", data=data, headers=headers, verify=self.ca, **kw)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", verify=self.ca, timeout=5)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=20)


def make_certs(out: Path, *names: str) -> str:
    """`imagestreams certs` into `out`; returns the base64 CA bundle it prints."""
    result = subprocess.run(
        [str(BIN), "certs", "--out-dir", str(out), "--dns", *names, "--ip", "127.0.0.1"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def start_serve(
    tmp: Path,
    *args: str,
    timeout: float = 30,
    server_class: type[S] = Served,  # type: ignore[assignment]
    env: dict[str, str] | None = None,
) -> S:
    """`imagestreams serve` with the certificates in `tmp/certs` (made if missing) and
    `args`; returns once /readyz answers 200, fails with the server's log otherwise.
    `server_class` may be a subclass of Served with helpers of its own; `env` replaces the
    process environment."""
    certs = tmp / "certs"
    if not (certs / "tls.crt").exists():
        make_certs(certs, "localhost")
    port = free_port()
    log = tmp / "serve.log"
    process = subprocess.Popen(
        [
            str(BIN), "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2",
            "--certfile", str(certs / "tls.crt"), "--keyfile", str(certs / "tls.key"),
            *args,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )  # fmt: skip
    served = server_class(
        f"https://127.0.0.1:{port}", port, str(certs / "ca.crt"), certs, process, log
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            if served.get("/readyz").status_code == 200:
                return served
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"imagestreams serve did not become ready:\n{log.read_text()}")
        time.sleep(0.2)
