"""The kubectl plugin as krew ships it, really built by hack/krew.py: the manifest holds to
krew's rules (sigs.k8s.io/krew internal/index/validation and cmd/validate-krew-manifest,
restated here: krew is a Go program whose own check installs from the manifest's URL), names
the archive by its sha256 and the binary kubectl runs for `kubectl imagestream`; and that
binary, unpacked and linked as krew links it, installs itself on its first run and answers
as `kubectl imagestream`.

The first run installs the locked packages from PyPI (pip's cache in
~/.cache/imagestreams/pip makes later runs quick; a cold one takes minutes).
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import krew  # noqa: E402

pytestmark = pytest.mark.integration

# krew's rules (validate.go): the supported API version and kind, a safe name equal to the
# file's, a one-line short description, semver with its "v", and for each platform a URI, a
# sha256 of 64 lowercase hex digits, a bin, from/to in every file operation, and a selector
# on os and arch only. validate-krew-manifest adds: each platform selects some supported
# os/arch, and no os/arch is selected twice.
SUPPORTED = [
    (os_, arch)
    for os_ in ("linux", "darwin", "windows")
    for arch in ("amd64", "arm64", "386", "arm")
]
SEMVER = re.compile(
    r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("krew")
    return krew.build(out, "https://releases.example/imagestreams/v0.1.0")


def selects(selector: dict[str, Any], os_: str, arch: str) -> bool:
    labels = {"os": os_, "arch": arch}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        value, values = labels.get(expr["key"]), expr.get("values") or []
        if {"In": value in values, "NotIn": value not in values}[expr["operator"]] is False:
            return False
    return True


def test_the_manifest_holds_to_krews_rules(built: tuple[Path, Path]) -> None:
    _, path = built
    plugin = yaml.safe_load(path.read_text())
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert plugin["kind"] == "Plugin"
    name = path.name.removesuffix(".yaml")
    assert re.fullmatch(r"[\w-]+", name) and plugin["metadata"]["name"] == name == "imagestream"
    spec = plugin["spec"]
    assert spec["shortDescription"] and "\n" not in spec["shortDescription"]
    assert len(spec["shortDescription"]) <= 70
    assert all(len(line) <= 80 for f in ("description", "caveats") for line in spec[f].split("\n"))
    assert SEMVER.fullmatch(spec["version"]), spec["version"]
    assert spec["platforms"]
    for platform in spec["platforms"]:
        assert platform["uri"].startswith("https://")
        assert re.fullmatch(r"[a-f0-9]{64}", platform["sha256"])
        assert platform["bin"]
        files = platform.get("files")
        assert files is None or (files and all(op["from"] and op["to"] for op in files))
        selector = platform["selector"]
        keys = [
            *(selector.get("matchLabels") or {}),
            *(e["key"] for e in selector.get("matchExpressions") or []),
        ]
        assert keys and set(keys) <= {"os", "arch"}
        assert any(selects(selector, o, a) for o, a in SUPPORTED)
    for os_, arch in SUPPORTED:
        assert sum(selects(p["selector"], os_, arch) for p in spec["platforms"]) <= 1
    chosen = {
        (o, a) for o, a in SUPPORTED if any(selects(p["selector"], o, a) for p in spec["platforms"])
    }
    assert {("linux", "amd64"), ("linux", "arm64"), ("darwin", "arm64")} <= chosen


def test_the_archive_is_the_one_named_and_holds_the_binary_kubectl_runs(
    built: tuple[Path, Path],
) -> None:
    archive, path = built
    (platform,) = yaml.safe_load(path.read_text())["spec"]["platforms"]
    assert platform["uri"].endswith("/" + archive.name)
    assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    # kubectl runs `kubectl imagestream` as the executable kubectl-imagestream on PATH,
    # which krew links to `bin` after copying `files` from the archive.
    assert platform["bin"] == "kubectl-imagestream"
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        launcher = tar.extractfile("kubectl-imagestream")
        assert launcher is not None and launcher.read().startswith(b"#!/usr/bin/env python3\n")
    assert {op["from"] for op in platform["files"]} == set(members)
    assert all(op["to"] == "." for op in platform["files"])
    assert members["kubectl-imagestream"].mode & 0o111
    assert any(re.fullmatch(r"imagestreams-[\d.]+-py3-none-any\.whl", n) for n in members)


def test_the_archive_is_reproducible(built: tuple[Path, Path], tmp_path: Path) -> None:
    again, _ = krew.build(tmp_path, "https://releases.example/imagestreams/v0.1.0")
    assert again.read_bytes() == built[0].read_bytes()


def test_first_run_installs_itself_and_answers_as_kubectl_imagestream(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, _ = built
    store, bin_dir = tmp_path / "store", tmp_path / "bin"
    store.mkdir()
    bin_dir.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.read_bytes())) as tar:
        tar.extractall(store, filter="data")
    (bin_dir / "kubectl-imagestream").symlink_to(store / "kubectl-imagestream")
    # python3 on PATH: the interpreter the test's virtualenv was made from, not the
    # virtualenv itself (whose packages would hide a broken install).
    (bin_dir / "python3").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PIP_CACHE_DIR": str(Path.home() / ".cache" / "imagestreams" / "pip"),
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl-imagestream", *argv], capture_output=True, text=True, env=env, timeout=900
        )

    first = run("--version")
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"kubectl imagestream {metadata.version('imagestreams')}\n"
    assert "first run: installing" in first.stderr
    usage = run("create", "is", "--help")
    assert usage.stdout.startswith("usage: kubectl imagestream create imagestream ")
    assert "first run" not in usage.stderr
    no_cluster = run("describe", "is", "keycloak")
    assert no_cluster.returncode == 1
    assert no_cluster.stderr.startswith("error: no cluster configuration:")
