"""`kubectl imagestream <TAB>`: kubectl itself completes its plugins by running
`kubectl_complete-imagestream` from PATH (kubectl 1.26+). The real kubectl is asked, through
its hidden `__complete` command, which is what its shell completion scripts call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from localcluster import tool

BIN = Path(sys.executable).parent


def kubectl_complete(*words: str) -> list[str]:
    result = subprocess.run(
        [str(tool("kubectl")), "__complete", *words],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_kubectl_completes_the_plugins_verbs() -> None:
    assert kubectl_complete("imagestream", "create", "") == [
        "imagestream",
        "imagestreamtag",
        "is",
        "istag",
        ":4",
    ]


def test_kubectl_completes_the_plugins_flags() -> None:
    assert kubectl_complete("imagestream", "resolve", "--st") == [
        "--streams-file",
        "--strict",
        ":4",
    ]
