"""Mirror throughput on loopback: `python -m bench.mirror_bench [--size-mb 200] [--runs 3]`.

Starts two CNCF Distribution registries on 127.0.0.1 (an open "upstream" and a token-auth
"local", as tests/integration/mirror_fixtures.py does), pushes one image with a random,
incompressible layer of `--size-mb` MB with crane, and mirrors it with `webhook.mirror`:

- cold, monolithic upload (one streamed PUT a blob) into a fresh repository each run;
- cold, chunked upload (`--chunk-mb` PATCHes) into a fresh repository each run;
- warm: the same copy again (everything present: HEADs only);
- mount: the same image into another stream's repository (cross-repository mounts);
- for reference, `crane copy` of the same image between the same registries (Go).

Prints bytes and requests moved and seconds per GB (median of the runs). Both registries
write to a temporary directory: their disk speed is part of the figure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this directory would come first on the path and bench/http.py would
# hide the standard library's http package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT / "bench"]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))

from mirror_fixtures import make_layer, start_local_registry, start_upstream  # noqa: E402
from registry_fixtures import Crane  # noqa: E402

from webhook.mirror.copier import Mirrorer, MirrorStats  # noqa: E402
from webhook.mirror.plan import LocalRegistry  # noqa: E402
from webhook.registry.blobs import BlobClient  # noqa: E402
from webhook.registry.client import ClientConfig, Repository  # noqa: E402
from webhook.registry.credentials import Credential  # noqa: E402

GB = 1024**3


def per_gb(seconds: float, size: int) -> float:
    return seconds * GB / size if size else 0.0


def row(label: str, runs: list[MirrorStats], size: int) -> str:
    seconds = statistics.median(s.seconds for s in runs)
    last = runs[-1]
    requests = ", ".join(f"{host} {count}" for host, count in sorted(last.requests.items()))
    return (
        f"{label:<34} {seconds:8.3f} s {per_gb(seconds, size):8.2f} s/GB"
        f" {size / seconds / 1e6 if seconds else 0:8.1f} MB/s   copied {last.bytes_copied} B"
        f" ({last.blobs_copied} blobs), mounted {last.blobs_mounted}, present"
        f" {last.blobs_present}; {last.total_requests} requests ({requests})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="random layer size (MB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each cold copy")
    parser.add_argument("--chunk-mb", type=int, default=64, help="chunk size of chunked runs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as temp:
        work = Path(temp)
        upstream = start_upstream(work)
        local, view, token_server = start_local_registry(work)
        try:
            crane = Crane(work)
            started = time.monotonic()
            layer = make_layer(work / "big.tar.gz", "big", args.size_mb * 1000 * 1000)
            crane("append", "--oci-empty-base", "-f", str(layer), "-t", f"{upstream.host}/b/big:1")
            digest = crane("digest", f"{upstream.host}/b/big:1")
            size = layer.stat().st_size
            print(
                f"image {digest}: layer {size} bytes, made and pushed in"
                f" {time.monotonic() - started:.1f}s"
            )

            started = time.monotonic()
            with layer.open("rb") as handle:
                hashlib.file_digest(handle, "sha256")
            hashing = time.monotonic() - started
            print(f"sha256 of the layer in this Python: {per_gb(hashing, size):.2f} s/GB")

            hosts = (upstream.host, local.host, token_server.host)
            config = ClientConfig(allowed_registries=hosts, insecure_registries=hosts)
            user, password = next(iter(token_server.users.items()))
            registry = LocalRegistry(
                local.host, insecure=True, credential=Credential(user, password)
            )
            source_repo = Repository(upstream.host, "b/big", insecure=True)

            with BlobClient(config) as source, BlobClient(config) as target:
                # A fresh mirrorer each cold run: no memory of where blobs are (no mounts).
                cold = [
                    Mirrorer(source, target, registry).copy(
                        source_repo, digest, "bench", f"mono{i}", tag="1"
                    )
                    for i in range(args.runs)
                ]
                chunk_size = args.chunk_mb * 1024 * 1024
                chunked = [
                    Mirrorer(source, target, registry, chunk_size=chunk_size).copy(
                        source_repo, digest, "bench", f"chunk{i}", tag="1"
                    )
                    for i in range(args.runs)
                ]
                mirrorer = Mirrorer(source, target, registry)
                mirrorer.copy(source_repo, digest, "bench", "home", tag="1")  # warms the map
                warm = [mirrorer.copy(source_repo, digest, "bench", "mono0", tag="1")]
                mounted = [mirrorer.copy(source_repo, digest, "bench", "mounted", tag="1")]

            crane_seconds = []
            for i in range(args.runs):
                started = time.monotonic()
                crane("copy", f"{upstream.host}/b/big:1", f"{view.host}/bench/crane{i}:1")
                crane_seconds.append(time.monotonic() - started)
            crane_median = statistics.median(crane_seconds)

            print()
            print(row("cold copy, monolithic PUT", cold, size))
            print(row(f"cold copy, chunked ({args.chunk_mb} MiB PATCHes)", chunked, size))
            print(row("warm (already mirrored)", warm, size))
            print(row("other stream (cross-repo mount)", mounted, size))
            print(
                f"{'crane copy (Go, reference)':<34} {crane_median:8.3f} s"
                f" {per_gb(crane_median, size):8.2f} s/GB"
                f" {size / crane_median / 1e6:8.1f} MB/s"
            )
            print(f"\nmachine: {os.cpu_count()} CPUs; runs: {args.runs}; median shown")
        finally:
            upstream.stop()
            local.stop()
            view.stop()
            token_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
