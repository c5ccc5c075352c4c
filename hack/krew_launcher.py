#!/usr/bin/env python3
"""kubectl-imagestream as krew installs it (hack/krew.py puts this file in the archive).

The first run makes a virtualenv beside this file, installs requirements.lock (pip checks
every hash) and the project's wheel into it. Every run then starts this same file again with
the virtualenv's Python, which finds itself inside it and runs the CLI: argv[0] stays
kubectl-imagestream, so usage reads `kubectl imagestream`. Standard library only until then:
it runs before anything is installed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

NAME = "kubectl-imagestream"
HERE = Path(__file__).resolve().parent  # krew runs us through a symlink in its bin/
ENV = HERE / "venv"


def installed() -> bool:
    return (ENV / "bin" / "python").exists()


def install() -> None:
    """Build the virtualenv under a temporary name and move it in place when complete, so
    that an interrupted first run leaves nothing half made; one run at a time does it."""
    with open(HERE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return
        staging = HERE / "venv.partial"
        shutil.rmtree(staging, ignore_errors=True)
        print(f"{NAME}: first run: installing its Python packages into {ENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(staging)
        pip = [str(staging / "bin" / "python"), "-m", "pip", "install", "-q"]
        wheels = sorted(HERE.glob("imagestreams-*.whl"))
        subprocess.run(
            [*pip, "--require-hashes", "-r", str(HERE / "requirements.lock")], check=True
        )
        subprocess.run([*pip, "--no-deps", *map(str, wheels)], check=True)
        # Its console scripts name venv.partial in their first line, but nothing runs them:
        # its python finds the renamed prefix by its own place (pyvenv.cfg beside it).
        staging.rename(ENV)


def main() -> int:
    if Path(sys.prefix).resolve() == ENV.resolve():  # the second start: inside the virtualenv
        from webhook.cli import main as cli

        return cli()
    if sys.version_info < (3, 11):  # noqa: UP036 (the user's python3, not ours)
        print(f"{NAME}: needs Python 3.11 or newer (python3 is {sys.version.split()[0]})")
        return 1
    if not installed():
        try:
            install()
        except (OSError, subprocess.CalledProcessError) as err:
            print(f"{NAME}: could not install its Python packages: {err}", file=sys.stderr)
            return 1
    python = ENV / "bin" / "python"
    os.execv(python, [str(python), sys.argv[0], *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
