#!/usr/bin/env python3
"""The product image, built here without a Docker daemon and without pulling a base image.

    hack/image.py build                                        # build; print the digest
    hack/image.py build --push 127.0.0.1:5000/imagestreams:dev # …and push: prints repo@sha256:…
    hack/image.py build --output DIR                           # …and keep the OCI layout in DIR

From Python (hack/ on sys.path, as the tests and hack/localcluster.py have it):

    from image import build_and_push
    ref = build_and_push("127.0.0.1:5000/imagestreams")       # → "…/imagestreams@sha256:…"

The image has the Dockerfile's layout, in two layers and a config:

  base    Debian's root file system from `debootstrap --variant=minbase` with Debian's python3
          and the CA certificates, updated from the suite's -updates and -security archives,
          without apt's lists and caches, logs or docs (the copyright files stay).
  app     the locked dependency wheels (binary only, each checked against its hash in
          requirements.lock) and the project's wheel, installed by pip in /usr/local inside that
          root file system (Debian's python3 runs pip, so scripts start with /usr/bin/python3),
          then byte-compiled: the root file system is read-only at run time. Pip itself runs
          from outside the image and never becomes part of it.
  config  user, working directory, entry point, command, environment, ports and labels read
          from the Dockerfile's final stage (hack/dockerfile.py), so the two cannot drift;
          its build arguments are the project's version and the git commit (OCI labels
          org.opencontainers.image.version and .revision, and IMAGESTREAMS_REVISION).

Each layer is cached in ~/.cache/imagestreams/images, keyed by a hash of its inputs: the base
by suite, packages, mirrors and BUILDER_VERSION (so it does not follow Debian's updates by
itself: delete it or bump BUILDER_VERSION), the app layer by the base, the lock, the project's
sources and pip's version. The layers are reproducible (entries sorted, mtimes 0, numeric
owners, gzip without a timestamp, hash-based .pyc files), so the same inputs give the same
digest. `crane` (hack/tools.sh) pushes the OCI layout. Building a layer needs root (debootstrap
and chroot); a build from the cache does not.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dockerfile

HACK = Path(__file__).resolve().parent
ROOT = HACK.parent
LOCK = ROOT / "requirements.lock"
# The Dockerfile's build context (see .dockerignore): what the project's wheel is built from.
APP_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "webhook")
CACHE_DIR = Path(os.environ.get("IMAGESTREAMS_CACHE", Path.home() / ".cache" / "imagestreams"))
IMAGES = CACHE_DIR / "images"
KEEP = 3  # cached layers kept per kind (the most recently used)

# Part of every cache key: bump it when a change here changes what a layer contains.
BUILDER_VERSION = "1"
SUITE = "bookworm"
# What the image needs at run time besides minbase (dpkg, apt and the essential packages).
BASE_PACKAGES = ("python3", "ca-certificates")
DEFAULT_MIRRORS = {
    SUITE: "http://deb.debian.org/debian",
    f"{SUITE}-updates": "http://deb.debian.org/debian",
    f"{SUITE}-security": "http://deb.debian.org/debian-security",
}
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# What the Dockerfile's base image sets and its final stage relies on: Docker's default
# PATH (the console script is in /usr/local/bin) and a UTF-8 locale without locale files.
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
EPOCH = 0  # every file's mtime and the image's creation time
CREATED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
PYTHON = "/usr/bin/python3"  # by absolute path: its sys.prefix, hence pip's scheme, follows
# .pyc files that are used without checking their source: the image is immutable, and the
# layers' mtimes are EPOCH, not the times a timestamp-based .pyc would record.
COMPILE = (PYTHON, "-m", "compileall", "-q", "-f", "--invalidation-mode", "unchecked-hash")
UNCHECKED_HASH = (1).to_bytes(4, "little")  # the flags word of such a .pyc (PEP 552)
SITE_PROBE = "import sysconfig; print(sysconfig.get_path('purelib'))"
# Imported in the finished image, as its user, like the Dockerfile's last RUN step: the
# programs' modules and the gunicorn worker class the webhook runs (`--help` loads none of
# them, and a dependency missing from the lock only showed as crash-looping pods).
RUNTIME_MODULES = (
    "webhook.serving.server",
    "gunicorn.workers.ggevent",
    "webhook.controller.reconciler",
)
SELF_CHECK = "import " + ", ".join(RUNTIME_MODULES)

# Pip, run by Debian's python3 inside the root file system from a copy outside /usr/local.
# The hashes are checked twice: when the wheels are downloaded and when they are installed.
BUILD_DIR = "/tmp/build"
PIP = (PYTHON, "-m", "pip")
PIP_ENV = {
    "PYTHONPATH": f"{BUILD_DIR}/tools",
    "PIP_NO_CACHE_DIR": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "HOME": BUILD_DIR,
}
# Debian marks its Python as externally managed (PEP 668); /usr/local of an image is the
# place where installing anyway is right.
PIP_INSTALL = (
    "install",
    "--no-index",
    f"--find-links={BUILD_DIR}/wheels",
    "--no-compile",
    "--break-system-packages",
    "--root-user-action=ignore",
)
INSTALL_DEPENDENCIES = (*PIP_INSTALL, "--require-hashes", "-r", f"{BUILD_DIR}/requirements.lock")
# The project alone: every dependency is already there, at its locked version.
INSTALL_PROJECT = (*PIP_INSTALL, "--no-deps", "imagestreams")
# This machine's pip fetches the locked wheels (binary only, hashes checked) for the image.
DOWNLOAD_DEPENDENCIES = ("download", "-q", "--only-binary=:all:", "--require-hashes", "-r", LOCK)

# GNU tar's options for a byte-for-byte reproducible archive (reproducible-builds.org).
TAR_CREATE = (
    "tar",
    "--create",
    "--sort=name",
    f"--mtime=@{EPOCH}",
    "--numeric-owner",
    "--format=posix",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
)
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


class ImageError(RuntimeError):
    """The image cannot be built or pushed; the message says why and what to do."""


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str | Path], *, input: str | None = None) -> str:
    """Run a command and return its stdout; on failure, show that output and raise."""
    command = [str(arg) for arg in argv]
    result = subprocess.run(
        command, input=input, stdout=subprocess.PIPE, text=True, umask=0o022, check=False
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout)
        raise ImageError(f"{' '.join(command)} failed with exit code {result.returncode}")
    return result.stdout


def chroot(
    rootfs: Path,
    *argv: str,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    cwd: str = "/",
    input: str | None = None,
) -> str:
    """Run `argv` inside `rootfs` with only the environment given (nothing of this machine's,
    such as its PIP_* settings, leaks in). Python writes no .pyc files on its own: COMPILE
    writes them all, the same way."""
    path = BASE_ENV[0].partition("=")[2]
    environment = {"PATH": path, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    userspec = [f"--userspec={user}"] if user else []
    variables = [f"{k}={v}" for k, v in environment.items()]
    inside = ["/usr/bin/env", "-i", f"--chdir={cwd}", *variables, *argv]
    return run(["chroot", *userspec, rootfs, *inside], input=input)


# --- tools ---------------------------------------------------------------------------------


def crane() -> str:
    """crane, as hack/tools.sh builds it (else from PATH)."""
    built = CACHE_DIR / "bin" / "crane"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    if found := shutil.which("crane"):
        return found
    raise ImageError(f"crane not found in {built.parent} or on PATH: run `make tools`")


def require_builder() -> None:
    """What building a layer needs (a build from the cache needs neither)."""
    if os.geteuid() != 0:
        raise ImageError("building the image's layers needs root (debootstrap, chroot)")
    if not shutil.which("debootstrap", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"):
        raise ImageError(
            "debootstrap not found: apt-get install debootstrap (`make tools` does, through"
            " hack/packages.sh)"
        )


# --- cache ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    path: Path  # the gzipped tar
    digest: str  # of the gzipped tar: the blob's name
    diff_id: str  # of the tar itself: the config's rootfs.diff_ids
    size: int
    created_by: str  # the config's history entry

    @classmethod
    def cached(cls, entry: Path) -> Layer | None:
        try:
            meta = json.loads((entry / "layer.json").read_text())
        except FileNotFoundError:
            return None
        os.utime(entry)  # recently used: see prune()
        return cls(path=entry / "layer.tar.gz", **meta)


def content_key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:24]


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time per cache (the tests and the local cluster may build at once)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    with (IMAGES / ".imagestreams.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def workdir(kind: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f".imagestreams-{kind}-", dir=IMAGES) as work:
        yield Path(work)


def cached_layer(
    kind: str, inputs: Sequence[str | bytes], make: Callable[[Path, Path], Layer]
) -> Layer:
    """The `kind` layer made from `inputs`: from the cache when it has them, else made by
    `make(work directory, cache entry)`, which needs root and the builder's tools."""
    entry = IMAGES / f"imagestreams-{kind}-{content_key(*inputs)}"
    if layer := Layer.cached(entry):
        log(f"{kind} layer: cached ({entry.name})")
        return layer
    require_builder()
    started = time.monotonic()
    with workdir(kind) as work:
        layer = make(work, entry)
    log(f"{kind} layer: built in {time.monotonic() - started:.0f}s ({layer.size / 1e6:.1f} MB)")
    return layer


def store_layer(rootfs: Path, members: Sequence[str], entry: Path, created_by: str) -> Layer:
    """Archive `members` of `rootfs` reproducibly into the cache entry `entry`."""
    staging = entry.with_name(entry.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    tar = staging / "layer.tar"
    run([*TAR_CREATE, f"--file={tar}", f"--directory={rootfs}", "--", *members])
    with tar.open("rb") as source:
        diff_id = "sha256:" + hashlib.file_digest(source, "sha256").hexdigest()
        source.seek(0)
        # No file name and no timestamp in the gzip header; level 6 as `gzip` and crane use.
        with (
            (staging / "layer.tar.gz").open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
        ):
            shutil.copyfileobj(source, gz, 1 << 20)
    tar.unlink()
    blob = staging / "layer.tar.gz"
    with blob.open("rb") as compressed:
        digest = "sha256:" + hashlib.file_digest(compressed, "sha256").hexdigest()
    meta = {"digest": digest, "diff_id": diff_id, "size": blob.stat().st_size}
    (staging / "layer.json").write_text(json.dumps({**meta, "created_by": created_by}) + "\n")
    os.replace(staging, entry)  # complete or absent, even if interrupted
    prune(entry)
    layer = Layer.cached(entry)
    assert layer is not None
    return layer


def prune(entry: Path) -> None:
    """Keep the KEEP most recently used entries of `entry`'s kind."""
    kind = entry.name.rpartition("-")[0]
    entries = sorted(IMAGES.glob(f"{kind}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


# --- base layer ----------------------------------------------------------------------------


def debian_mirrors() -> dict[str, str]:
    """Suite → archive for SUITE and its -updates and -security suites, as this machine's apt
    sources have them (one-line and deb822 formats), else deb.debian.org."""
    found: dict[str, str] = {}
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        for line in path.read_text().splitlines() if path.is_file() else []:
            words = re.sub(r"\[[^]]*\]", "", line.partition("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                found.setdefault(words[2], words[1])
    for path in sorted(apt.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([\w-]+):[ \t]*(.*)$", stanza, re.MULTILINE))
            if "deb" not in fields.get("Types", "").split() or fields.get("Enabled") == "no":
                continue
            for suite in fields.get("Suites", "").split():
                if uris := fields.get("URIs", "").split():
                    found.setdefault(suite, uris[0])
    return {suite: found.get(suite, uri) for suite, uri in DEFAULT_MIRRORS.items()}


def debian_arch() -> str:
    machine = platform.machine()
    if machine not in DEBIAN_ARCH:
        raise ImageError(f"no Debian architecture known for {machine}")
    return DEBIAN_ARCH[machine]


def base_layer() -> Layer:
    mirrors = debian_mirrors()
    arch = debian_arch()
    inputs = [BUILDER_VERSION, SUITE, arch, *BASE_PACKAGES, json.dumps(mirrors, sort_keys=True)]

    def make(work: Path, entry: Path) -> Layer:
        rootfs = work / "rootfs"
        build_base(rootfs, mirrors, arch)
        created_by = (
            f"debootstrap --variant=minbase --include={','.join(BASE_PACKAGES)} {SUITE}"
            f" && apt-get upgrade ({', '.join(mirrors)})"
        )
        return store_layer(rootfs, sorted(os.listdir(rootfs)), entry, created_by)

    return cached_layer("base", inputs, make)


def build_base(rootfs: Path, mirrors: Mapping[str, str], arch: str) -> None:
    packages = ",".join(BASE_PACKAGES)
    log(f"debootstrap {SUITE} ({arch}) with {packages} from {mirrors[SUITE]}")
    variant = ["--variant=minbase", f"--arch={arch}", f"--include={packages}"]
    run(["debootstrap", *variant, SUITE, rootfs, mirrors[SUITE]])
    # debootstrap installs the suite as released: the fixes since come from -updates and
    # -security. The sources stay, so that `apt-get update` works in a derived image.
    sources = "".join(f"deb {uri} {suite} main\n" for suite, uri in mirrors.items())
    (rootfs / "etc/apt/sources.list").write_text(sources)
    apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
    chroot(rootfs, "apt-get", "-qq", "update", env=apt_env)
    chroot(rootfs, "apt-get", "-qq", "-y", "upgrade", env=apt_env)
    chroot(rootfs, "apt-get", "clean")
    trim(rootfs)
    recompile(rootfs)
    stray = [p for p in (rootfs / "usr/local").rglob("*") if not p.is_dir()]
    if stray:  # the app layer is all of /usr/local: it must start empty
        raise ImageError(f"the base has files in /usr/local: {stray[:5]}")


def trim(rootfs: Path) -> None:
    """Remove what the image never uses and what would differ at every build."""
    patterns = [
        "var/lib/apt/lists/*",  # package lists and downloaded packages
        "var/cache/apt/*",
        "var/cache/debconf/*-old",  # backups
        "var/lib/dpkg/*-old",
        "etc/*-",
        "var/log/*",  # the build's logs
        "var/cache/ldconfig/aux-cache",  # inode numbers and timestamps
        "etc/resolv.conf",  # this machine's, copied by debootstrap; the runtime mounts its own
        "etc/hostname",
        "dev/*",  # device nodes: the runtime mounts /dev
        "usr/share/man/*",
        "usr/share/info/*",
        "usr/share/lintian/*",
    ]
    paths = [p for pattern in patterns for p in rootfs.glob(pattern)]
    # Docs and translations, except the copyright files and the locale aliases.
    # (Some packages' doc directories are symbolic links to another package's.)
    docs = [p for p in rootfs.glob("usr/share/doc/*/*") if not p.parent.is_symlink()]
    paths += [p for p in docs if p.name != "copyright"]
    paths += [p for p in rootfs.glob("usr/share/locale/*") if p.name != "locale.alias"]
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    # The date of the last password change is the build's date; empty means "no aging"
    # (every account here is locked anyway).
    shadow = rootfs / "etc/shadow"
    lines = [line.split(":") for line in shadow.read_text().splitlines()]
    shadow.write_text("".join(":".join([*f[:2], "", *f[3:]]) + "\n" for f in lines))


def recompile(rootfs: Path) -> None:
    """Debian byte-compiles its Python modules at install time, into .pyc files that check
    the source's mtime: with every mtime set to EPOCH in the layer they would be stale, and
    recompiled in memory at every start. Recompile them checking nothing instead (the image
    is immutable)."""
    sources = []
    for pyc in rootfs.glob("usr/**/__pycache__/*.pyc"):
        source = pyc.parent.parent / (pyc.name.split(".")[0] + ".py")
        pyc.unlink()
        if source.is_file():
            sources.append(f"/{source.relative_to(rootfs)}\n")
    chroot(rootfs, *COMPILE, "-i", "-", input="".join(sorted(set(sources))))


# --- app layer -----------------------------------------------------------------------------


def app_source_files() -> list[Path]:
    """The files the project's wheel is built from, relative to the repository."""
    files: list[Path] = []
    for name in APP_SOURCES:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [
            p.relative_to(ROOT)
            for p in candidates
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    return files


def pip_package() -> Path:
    """The pip that runs this script, copied into the root file system to install there."""
    spec = importlib.util.find_spec("pip")
    if spec is None or spec.origin is None:
        raise ImageError(f"{sys.executable} has no pip: run hack/image.py with .venv/bin/python")
    return Path(spec.origin).parent


def app_layer(base: Layer, config: Mapping[str, Any]) -> Layer:
    files = app_source_files()
    inputs: list[str | bytes] = [BUILDER_VERSION, base.digest, LOCK.read_bytes()]
    inputs += [importlib.metadata.version("pip")]
    for path in files:
        inputs += [str(path), (ROOT / path).read_bytes()]

    def make(work: Path, entry: Path) -> Layer:
        rootfs = work / "rootfs"
        rootfs.mkdir()
        run(["tar", "--extract", f"--file={base.path}", f"--directory={rootfs}", "--numeric-owner"])
        build = rootfs / BUILD_DIR.lstrip("/")
        for path in files:
            (work / "src" / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, work / "src" / path)
        download_wheels(rootfs, build / "wheels")
        wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
        run([*wheel, f"--wheel-dir={build / 'wheels'}", work / "src"])
        shutil.copy2(LOCK, build / "requirements.lock")
        shutil.copytree(pip_package(), build / "tools" / "pip")
        log("pip install --require-hashes -r requirements.lock, then imagestreams")
        chroot(rootfs, *PIP, *INSTALL_DEPENDENCIES, env=PIP_ENV)
        chroot(rootfs, *PIP, *INSTALL_PROJECT, env=PIP_ENV)
        chroot(rootfs, *PIP, "check", env=PIP_ENV)
        shutil.rmtree(build)
        site = chroot(rootfs, PYTHON, "-c", SITE_PROBE).strip()
        chroot(rootfs, *COMPILE, site)
        verify(rootfs, config, site)
        created_by = " && ".join(
            " ".join(["pip", *args]) for args in (INSTALL_DEPENDENCIES, INSTALL_PROJECT)
        )
        return store_layer(rootfs, ["usr/local"], entry, created_by)

    return cached_layer("app", inputs, make)


def download_wheels(rootfs: Path, dest: Path) -> None:
    """The locked dependencies as binary wheels for the image's Python and C library (not
    this machine's), each checked against its hash in the lock."""
    probe = "import json, platform, sys; print(json.dumps([*sys.version_info[:2], platform.libc_ver()[1], platform.machine()]))"  # noqa: E501
    major, minor, glibc, machine = json.loads(chroot(rootfs, PYTHON, "-c", probe))
    glibc_minor = int(glibc.split(".")[1])
    # manylinux_2_N for every N this glibc satisfies; pip widens manylinux2014 to the older
    # manylinux2010 and manylinux1 itself.
    platforms = [f"manylinux_2_{n}_{machine}" for n in range(glibc_minor, 16, -1)]
    platforms.append(f"manylinux2014_{machine}")
    target = ["--implementation=cp", f"--python-version={major}.{minor}", f"--abi=cp{major}{minor}"]
    target += [f"--platform={p}" for p in platforms]
    run([sys.executable, "-m", "pip", *DOWNLOAD_DEPENDENCIES, *target, f"--dest={dest}"])


def verify(rootfs: Path, config: Mapping[str, Any], site: str) -> None:
    """Run the entry point as the image runs it (its user, environment and working directory),
    like the Dockerfile's `imagestreams --help` step; and check that no installer is left."""
    settings = config["config"]
    env = dict(item.split("=", 1) for item in settings["Env"])
    user, cwd = settings["User"], settings["WorkingDir"]
    chroot(rootfs, *settings["Entrypoint"], "--help", env=env, user=user, cwd=cwd)
    chroot(rootfs, PYTHON, "-c", SELF_CHECK, env=env, user=user, cwd=cwd)
    check = "import importlib.util as u; print(*[m for m in ('pip', 'setuptools', 'wheel') if u.find_spec(m)])"  # noqa: E501
    if left := chroot(rootfs, PYTHON, "-c", check, env=env, user=user).split():
        raise ImageError(f"installers left in the image: {left}")
    if not (rootfs / site.lstrip("/") / "webhook").is_dir():
        raise ImageError(f"webhook is not installed in {site}")
    checked = [p for p in rootfs.glob("usr/**/*.pyc") if p.read_bytes()[4:8] != UNCHECKED_HASH]
    if checked:
        raise ImageError(f"{len(checked)} .pyc files would be stale, e.g. {checked[0]}")


# --- image ---------------------------------------------------------------------------------


def build_args() -> dict[str, str]:
    """The Dockerfile's build arguments for this build: the project's version and the git
    commit of its sources (`-dirty` when the image's inputs differ from it)."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return {"VERSION": str(version), "REVISION": git_revision()}


def git_revision() -> str:
    """HEAD's commit, with `-dirty` when the files the image is built from have uncommitted
    changes; "unknown" outside a git checkout."""
    inputs = [*APP_SOURCES, LOCK.name, "Dockerfile"]
    try:
        commit = run(["git", "-C", ROOT, "rev-parse", "HEAD"]).strip()
        changed = run(["git", "-C", ROOT, "status", "--porcelain", "--", *inputs]).strip()
    except (ImageError, OSError):
        return "unknown"
    return f"{commit}-dirty" if changed else commit


def image_config(layers: Sequence[Layer] = ()) -> dict[str, Any]:
    """The OCI image config: the Dockerfile's final stage's settings (with `build_args`)
    after BASE_ENV."""
    settings = dockerfile.runtime_config(dockerfile.load()[-1], build_args())
    settings["Env"] = [*BASE_ENV, *settings.get("Env", [])]
    return {
        "created": CREATED,
        "architecture": debian_arch(),  # Debian's names for these are Go's (and OCI's)
        "os": "linux",
        "config": settings,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": CREATED, "created_by": layer.created_by} for layer in layers],
    }


def canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def write_layout(layout: Path, layers: Sequence[Layer], config: Mapping[str, Any]) -> str:
    """An OCI image layout holding the image; returns the manifest's digest."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    for layer in layers:
        target = blobs / layer.digest.removeprefix("sha256:")
        with contextlib.suppress(FileExistsError):
            try:
                os.link(layer.path, target)  # the cache is on the same file system, usually
            except OSError:
                shutil.copyfile(layer.path, target)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": blob(canonical(config), CONFIG_MEDIA_TYPE),
        "layers": [
            {"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    descriptor = blob(canonical(manifest), MANIFEST_MEDIA_TYPE)
    index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [descriptor]}
    (layout / "index.json").write_bytes(canonical(index))
    (layout / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    return str(descriptor["digest"])


def build(layout: Path) -> str:
    """Build the image (from the cache where it can) into the OCI layout `layout`; returns
    its manifest digest."""
    with build_lock():
        base = base_layer()
        app = app_layer(base, image_config())
        return write_layout(layout, [base, app], image_config([base, app]))


def push(layout: Path, ref: str, *, insecure: bool = False) -> str:
    """Push the layout's image to `ref` (repo[:tag]); returns repo@digest as crane reports it."""
    flags = ["--insecure"] if insecure else []
    pushed = run([crane(), "push", *flags, layout, ref]).strip()
    if "@sha256:" not in pushed:
        raise ImageError(f"crane push {ref} printed {pushed!r}, not a digest reference")
    return pushed


@contextlib.contextmanager
def scratch_layout() -> Iterator[Path]:
    """A temporary layout directory next to the cache, so that its blobs are hard links."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".imagestreams-layout-", dir=IMAGES) as tmp:
        yield Path(tmp)


def build_and_push(registry_repo: str, *, insecure: bool = False) -> str:
    """Build the image and push it to `registry_repo` (e.g. 127.0.0.1:5000/imagestreams, with
    an optional :tag, else crane's default, latest); returns the pushed `repo@sha256:…`."""
    with scratch_layout() as layout:
        digest = build(layout)
        pushed = push(layout, registry_repo, insecure=insecure)
    if not pushed.endswith(digest):
        raise ImageError(f"pushed {pushed}, but the layout's manifest is {digest}")
    return pushed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    verbs = parser.add_subparsers(dest="verb", required=True)
    build_verb = verbs.add_parser("build", help="build the image; print its digest or pushed ref")
    build_verb.add_argument("--push", metavar="REPO[:TAG]", help="push to this repository")
    build_verb.add_argument("--output", metavar="DIR", type=Path, help="keep the OCI layout")
    build_verb.add_argument("--insecure", action="store_true", help="plain HTTP registry")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.output:
            digest = build(args.output)
            print(push(args.output, args.push, insecure=args.insecure) if args.push else digest)
        elif args.push:
            print(build_and_push(args.push, insecure=args.insecure))
        else:
            with scratch_layout() as layout:
                print(build(layout))
    except ImageError as error:
        log(f"error: {error}")
        return 1
    log(f"done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
