"""The project's wheel, built as the Dockerfile and hack/image.py build it (`pip wheel
--no-deps .`, setuptools from PyPI in an isolated build): it carries the license."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_wheel_ships_the_apache_license(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", f"--wheel-dir={tmp_path}",
         str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("imagestreams-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(license_file) == (ROOT / "LICENSE").read_bytes()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    # The chart ships the same text.
    assert (ROOT / "charts" / "imagestreams" / "LICENSE").read_bytes() == (
        ROOT / "LICENSE"
    ).read_bytes()
