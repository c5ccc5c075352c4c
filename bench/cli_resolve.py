"""`imagestreams resolve` on a large manifest: seconds and MB/s of the installed command.

    python -m bench.cli_resolve [--mb 5] [--streams 1000] [--keep DIR]

Writes a multi-document manifest of about `--mb` megabytes (Deployments, Pods and CronJobs
whose short names all resolve, as kubectl would apply them, managedFields and all) and a
streams file, runs the real `imagestreams resolve` over them as a subprocess, and prints
its wall time, its CPU time, the throughput, and which YAML loader the installed PyYAML
offers (libyaml or pure Python); and the same for a one-document manifest, the fixed cost
(interpreter, imports, the streams file) that the large one also pays. Not part of
`python -m bench`: it measures the CLI, not the webhook.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from bench import data, machine


def write_manifest(path: Path, megabytes: float, streams: int) -> int:
    """About `megabytes` of workloads in `path`; returns the number of documents."""
    target = int(megabytes * 1_000_000)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # only to write the input fast
    written = 0
    count = 0
    with path.open("w") as out:
        while written < target:
            for body in data.reviews(100, streams, seed=count):
                text = yaml.dump(body["request"]["object"], Dumper=dumper, sort_keys=False)
                out.write("---\n" + text)
                written += len(text) + 4
                count += 1
                if written >= target:
                    break
    return count


def run(manifest: Path, streams_file: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds and stdout of one `imagestreams resolve`."""
    exe = Path(sys.executable).parent / "imagestreams"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [str(exe), "resolve", "-f", str(manifest), "--streams-file", str(streams_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cli_resolve", description=__doc__)
    p.add_argument("--mb", type=float, default=5.0, help="manifest size (default 5)")
    p.add_argument("--streams", type=int, default=1000, help="streams in the streams file")
    p.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        streams_file = data.write_streams_file(where / "streams.json", args.streams)
        manifest = where / "manifest.yaml"
        docs = write_manifest(manifest, args.mb, args.streams)
        size = manifest.stat().st_size / 1e6
        wall, cpu, out = run(manifest, streams_file)
        small = where / "one.yaml"
        write_manifest(small, 0.0001, args.streams)
        fixed_wall, fixed_cpu, _ = run(small, streams_file)
    pinned = out.count("@sha256:")
    print(f"machine: {machine.describe()}")
    print(f"PyYAML {yaml.__version__}, libyaml available: {yaml.__with_libyaml__}")
    print(f"manifest: {size:.1f} MB, {docs} documents, {pinned} pinned references in the output")
    print(f"resolve: {wall:.1f} s wall, {cpu:.1f} s CPU, {size / wall:.2f} MB/s")
    print(f"fixed cost (one document): {fixed_wall:.1f} s wall, {fixed_cpu:.1f} s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
