"""Which build this is: the package's version and, when the build recorded it, the source
revision. `--version` prints them; a build_info metric can carry them.

The version comes from the installed package's metadata (pyproject.toml), so it is never
written twice. The revision is what the image build records in IMAGESTREAMS_REVISION (a
git commit); an install from a source tree has none, and says so rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata

DISTRIBUTION = "imagestreams"
REVISION_VARIABLE = "IMAGESTREAMS_REVISION"


@dataclass(frozen=True)
class Build:
    version: str
    revision: str | None

    def describe(self, program: str) -> str:
        """`imagestreams 0.1.0 (revision 1a2b3c4)`, as --version prints it."""
        revision = f" (revision {self.revision})" if self.revision else ""
        return f"{program} {self.version}{revision}"


def current(environ: Mapping[str, str]) -> Build:
    """This build, its revision read from `environ` (the process environment)."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown"
    return Build(version=version, revision=environ.get(REVISION_VARIABLE, "").strip() or None)


def info_labels(this: Build, python: str) -> dict[str, str]:
    """The labels of the `imagestreams_build_info` metric that both programs export."""
    return {"version": this.version, "revision": this.revision or "unknown", "python": python}
