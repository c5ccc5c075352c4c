#!/usr/bin/env python3
"""The kubectl plugin for krew: its archive and its plugin manifest.

    hack/krew.py --url-base URL [--out-dir dist]

writes OUT/kubectl-imagestream.tar.gz and OUT/imagestream.yaml, the manifest that a release
submits to the krew index (krew's format: apiVersion krew.googlecontainertools.github.com/
v1alpha2, kind Plugin; its platform names URL-BASE/kubectl-imagestream.tar.gz and the
archive's sha256).

The archive holds the project's wheel, requirements.lock and `kubectl-imagestream`, a small
launcher (hack/krew_launcher.py): on its first run it makes a private virtualenv beside
itself, installs the locked dependencies with their hashes and the wheel, and from then on
runs the CLI from there. One archive serves Linux and macOS: the dependencies are compiled
(pydantic-core, PyYAML's libyaml), so they can only be chosen on the user's machine, for its
platform and its Python; pip does that from the same hash-pinned lock as the image.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PLUGIN = "imagestream"
EXECUTABLE = f"kubectl-{PLUGIN}"
ARCHIVE = f"{EXECUTABLE}.tar.gz"
DISTRIBUTION = "imagestreams"
LAUNCHER = REPO / "hack" / "krew_launcher.py"
# 1980-01-01, the zip format's earliest time: the wheel's files all carry it.
SOURCE_DATE_EPOCH = "315532800"


def wheel(out_dir: Path) -> Path:
    """The project's wheel, built by pip in an isolated build environment."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), str(REPO)],
        check=True,
        env=env,
    )
    (found,) = out_dir.glob(f"{DISTRIBUTION}-*.whl")
    return found


def tar_gz(members: dict[str, tuple[bytes, int]]) -> bytes:
    """A .tar.gz of name → (content, mode), with fixed owners and times."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            content, mode = members[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def manifest(version: str, uri: str, sha256: str, files: list[str]) -> dict[str, object]:
    """The krew plugin manifest (sigs.k8s.io/krew's validation rules hold for it)."""
    return {
        "apiVersion": "krew.googlecontainertools.github.com/v1alpha2",
        "kind": "Plugin",
        "metadata": {"name": PLUGIN},
        "spec": {
            "version": f"v{version}",
            "shortDescription": "OpenShift image streams: tag, import, roll back",
            "description": (
                "The oc image stream verbs for any cluster that runs the imagestreams\n"
                "webhook and controller: create streams and tags, import images, turn on\n"
                "short-name lookup, describe history, roll a tag back, set image triggers,\n"
                "and resolve short names in manifests offline for CI.\n"
            ),
            "caveats": (
                "Needs python3 (3.11 or newer) on PATH. The first run installs the\n"
                "plugin's pinned Python packages from PyPI into a private virtualenv\n"
                "(pip, hash-checked). The cluster side is the imagestreams Helm chart.\n"
            ),
            "platforms": [
                {
                    "selector": {
                        "matchExpressions": [
                            {"key": "os", "operator": "In", "values": ["darwin", "linux"]}
                        ]
                    },
                    "uri": uri,
                    "sha256": sha256,
                    "bin": EXECUTABLE,
                    "files": [{"from": name, "to": "."} for name in files],
                }
            ],
        },
    }


def build(out_dir: Path, url_base: str) -> tuple[Path, Path]:
    """Write the archive and the manifest into `out_dir`; return their paths."""
    with tempfile.TemporaryDirectory() as tmp:
        built = wheel(Path(tmp))
        members = {
            EXECUTABLE: (LAUNCHER.read_bytes(), 0o755),
            built.name: (built.read_bytes(), 0o644),
            "requirements.lock": ((REPO / "requirements.lock").read_bytes(), 0o644),
            "LICENSE": ((REPO / "LICENSE").read_bytes(), 0o644),
        }
    archive = tar_gz(members)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive_path = out_dir / ARCHIVE
    archive_path.write_bytes(archive)
    plugin = manifest(
        metadata.version(DISTRIBUTION),
        f"{url_base.rstrip('/')}/{ARCHIVE}",
        hashlib.sha256(archive).hexdigest(),
        sorted(members),
    )
    manifest_path = out_dir / f"{PLUGIN}.yaml"
    manifest_path.write_text(yaml.safe_dump(plugin, sort_keys=False, width=100))
    return archive_path, manifest_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=REPO / "dist")
    p.add_argument(
        "--url-base",
        required=True,
        help=f"where the release publishes the archive (the manifest's uri is URL-BASE/{ARCHIVE})",
    )
    args = p.parse_args(argv)
    archive, manifest_path = build(args.out_dir, args.url_base)
    print(f"{archive} ({archive.stat().st_size / 1e6:.1f} MB)\n{manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
