"""Container images for the local node, built here: nothing can be pulled from the internet.

Each image is one reproducible layer holding static binaries (Go programs from hack/images,
the registry built by hack/tools.sh, Debian's static busybox where a chart runs a shell),
assembled and pushed with `crane`. Same inputs, same digest: pushing again is a no-op.

    pause   the pod sandbox (containerd's `sandbox_image`)
    app     the demo's and tests' workload: an HTTP server saying its APP_VERSION
    registry  the CNCF Distribution registry, for the chart's in-cluster registry
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HACK = Path(__file__).resolve().parent
IMAGES_SRC = HACK / "images"
CACHE_DIR = Path(os.environ.get("IMAGESTREAMS_CACHE", Path.home() / ".cache" / "imagestreams"))
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
# What the in-chart registry's pod runs besides `registry`: its command is a shell line
# that records the certificate's checksum, and its liveness probe checks it.
BUSYBOX_APPLETS = ("sh", "sha256sum", "cat", "ls")


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class ImageSpec:
    """A one-layer image: files (path in the image → file on this machine) and its config."""

    files: dict[str, Path]
    entrypoint: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    user: str = "65532:65532"
    symlinks: dict[str, str] = field(default_factory=dict)


def go_binary(name: str) -> Path:
    """Build hack/images/<name> (standard library only: no module download), cached by a
    hash of the sources."""
    sources = sorted(p for p in IMAGES_SRC.rglob("*") if p.suffix in (".go", ".mod"))
    digest = hashlib.sha256()
    for path in sources:
        digest.update(str(path.relative_to(IMAGES_SRC)).encode() + b"\0" + path.read_bytes())
    out = CACHE_DIR / "images" / f"{name}-{digest.hexdigest()[:16]}" / name
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}
    proc = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", f"{out}.tmp", f"./{name}"],
        cwd=IMAGES_SRC,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ImageError(f"go build hack/images/{name} failed:\n{proc.stderr}")
    os.replace(f"{out}.tmp", out)
    return out


def layer(spec: ImageSpec) -> bytes:
    """A gzipped tar of the spec's files, byte-for-byte the same for the same inputs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted(
            {str(Path(p).parent) for p in [*spec.files, *spec.symlinks]} - {"/", "."},
        )
        for directory in _with_parents(dirs):
            info = tarfile.TarInfo(directory.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, source in sorted(spec.files.items()):
            data = source.read_bytes()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for path, target in sorted(spec.symlinks.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(info)
    return gzip.compress(buffer.getvalue(), mtime=0)


def _with_parents(dirs: Sequence[str]) -> list[str]:
    every = set()
    for directory in dirs:
        path = Path(directory)
        while str(path) not in ("/", "."):
            every.add(str(path))
            path = path.parent
    return sorted(every)


def push(crane: Path, spec: ImageSpec, ref: str, work: Path) -> str:
    """Push `spec` as `ref` (REPOSITORY:TAG); return REPOSITORY@DIGEST."""
    work.mkdir(parents=True, exist_ok=True)
    blob = layer(spec)
    tarball = work / f"layer-{hashlib.sha256(blob).hexdigest()[:16]}.tar.gz"
    tarball.write_bytes(blob)
    _crane(crane, "append", "--oci-empty-base", "-f", str(tarball), "-t", ref)
    mutate = [
        "mutate", ref, "--user", spec.user,
        "--entrypoint", ",".join(spec.entrypoint), "--workdir", "/",
        # containerd matches a single-manifest image's config against the node's platform.
        "--set-platform", f"linux/{_go_arch()}",
    ]  # fmt: skip
    for key, value in sorted(spec.env.items()):
        mutate += ["--env", f"{key}={value}"]
    pinned = _crane(crane, *mutate, "-t", ref).strip()
    repository = ref.rsplit(":", 1)[0]
    return f"{repository}@{pinned.rsplit('@', 1)[1]}"


def _go_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _crane(crane: Path, *args: str) -> str:
    proc = subprocess.run([str(crane), *args], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise ImageError(f"crane {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def pause_spec() -> ImageSpec:
    return ImageSpec(files={"/pause": go_binary("pause")}, entrypoint=["/pause"])


def app_spec(version: str) -> ImageSpec:
    """The demo workload; every version is its own image (its own digest)."""
    return ImageSpec(
        files={"/app": go_binary("app")}, entrypoint=["/app"], env={"APP_VERSION": version}
    )


def registry_binary() -> Path:
    """The registry hack/tools.sh built (the same one the host runs)."""
    path = CACHE_DIR / "bin" / "registry"
    if not path.is_file():
        raise ImageError(f"{path} not found: run `make tools`")
    return path.resolve()


def registry_spec(registry_binary: Path) -> ImageSpec:
    if not BUSYBOX.is_file():
        raise ImageError(f"{BUSYBOX} not found: apt-get install busybox-static (hack/packages.sh)")
    return ImageSpec(
        files={"/bin/registry": registry_binary, "/bin/busybox": BUSYBOX},
        symlinks={f"/bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS},
        entrypoint=["/bin/registry"],
        env={"PATH": "/bin"},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`localimages.py app VERSION REF`: push the demo workload as REF; print its digest."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kind", choices=["app"])
    parser.add_argument("version")
    parser.add_argument("ref", help="REGISTRY/REPOSITORY:TAG")
    args = parser.parse_args(argv)
    crane = CACHE_DIR / "bin" / "crane"
    pinned = push(crane, app_spec(args.version), args.ref, CACHE_DIR / "images" / "layers")
    print(pinned.rsplit("@", 1)[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
