"""The product image, really built by hack/image.py and pushed to the test registry: what the
registry serves runs as the Dockerfile says and holds what the Dockerfile's image holds.

The layers come from the cache in ~/.cache/imagestreams/images when it is warm (seconds); a
cold build runs debootstrap and pip and takes minutes. Building needs root, debootstrap and
crane: without them the test fails and says what to install, it is never skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from registry_fixtures import Registries

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import dockerfile  # noqa: E402
import image  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pushed(registries: Registries) -> str:
    try:
        return image.build_and_push(f"{registries.open.host}/imagestreams:test")
    except image.ImageError as error:
        pytest.fail(f"hack/image.py cannot build the image: {error}", pytrace=False)


def test_config_is_the_dockerfiles(registries: Registries, pushed: str) -> None:
    config = json.loads(registries.crane("config", pushed))
    assert (config["os"], config["architecture"]) == ("linux", image.debian_arch())
    settings = config["config"]
    expected = dockerfile.runtime_config(dockerfile.load()[-1], image.build_args())
    for key in ("User", "WorkingDir", "Entrypoint", "Cmd", "ExposedPorts", "Labels"):
        assert settings[key] == expected[key], key
    assert settings["User"] == "65532:65532" and settings["Entrypoint"] == ["imagestreams"]
    assert set(expected["Env"]) <= set(settings["Env"])
    labels = settings["Labels"]
    assert labels["org.opencontainers.image.revision"] == image.git_revision()
    assert labels["org.opencontainers.image.version"] == image.build_args()["VERSION"]
    manifest = json.loads(registries.crane("manifest", pushed))
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) == 2


def test_file_system_holds_the_locked_packages_and_no_installer(
    registries: Registries, pushed: str
) -> None:
    export = subprocess.Popen(
        [registries.crane.binary, "export", pushed, "-", "--insecure"],
        stdout=subprocess.PIPE,
        env=registries.crane.env,
    )
    assert export.stdout is not None
    with tarfile.open(fileobj=export.stdout, mode="r|") as archive:
        members = {m.name: m for m in archive}
    assert export.wait() == 0
    site = "usr/local/lib/python3.11/dist-packages"
    script = members["usr/local/bin/imagestreams"]
    assert script.isfile() and script.mode & 0o111
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, version = line.split()[0].partition("==")
            dist_info = f"{site}/{name.replace('-', '_')}-{version}.dist-info/METADATA"
            assert any(m.lower() == dist_info.lower() for m in members), dist_info
    assert f"{site}/webhook/cli/__pycache__/main.cpython-311.pyc" in members
    for installer in ("pip", "setuptools", "wheel"):
        assert not any(m.startswith(f"{site}/{installer}/") for m in members), installer
    # Lean: no package lists, no docs beyond the copyright files.
    assert not any(m.startswith("var/lib/apt/lists/") and members[m].isfile() for m in members)
    docs = [m for m in members if m.startswith("usr/share/doc/") and members[m].isfile()]
    assert docs and all(m.endswith("/copyright") for m in docs)


def test_same_inputs_same_digest(registries: Registries, pushed: str) -> None:
    again = image.build_and_push(f"{registries.open.host}/imagestreams:again")
    assert again == pushed
