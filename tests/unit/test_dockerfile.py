"""The Dockerfile, checked statically: no Docker engine runs here, so these are the rules a
build would otherwise show: a pinned base, several stages, a numeric non-root user, an entry
point that the package really declares, and nothing compiled or cached in the final image."""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

from webhook.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
# The parser hack/image.py reads the Dockerfile with, to build the same image without Docker.
from dockerfile import DOCKERFILE, Stage, exec_form, parse  # noqa: E402

BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libffi-dev|libssl-dev|"
    r"setuptools|wheel|build|pip-tools|poetry|cython)\b"
)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_multi_stage_with_a_named_builder(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    names = {s.name for s in stages[:-1]}
    assert "builder" in names
    # The final stage starts from the base image, not from the builder.
    assert stages[-1].base not in names


def test_every_base_image_is_pinned_by_version_and_digest(stages: list[Stage]) -> None:
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        image, at, digest = stage.base.partition("@")
        assert at, f"{stage.base} is not pinned by digest"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), digest
        repository, _, tag = image.rpartition(":")
        assert repository in {"python", "docker.io/library/python"}, image
        # An exact patch release of 3.11 on the slim Debian base.
        assert re.fullmatch(r"3\.11\.\d+-slim(-bookworm)?", tag), tag


def test_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # The chart's securityContext expects the same user.
    values = (ROOT / "charts/imagestreams/values.yaml").read_text()
    assert f"runAsUser: {uid}" in values


def test_entry_point_is_a_console_script_of_the_package(final: Stage) -> None:
    entrypoint = exec_form(final.all("ENTRYPOINT")[-1])
    assert entrypoint == ["imagestreams"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[entrypoint[0]].partition(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))


def test_default_command_is_a_valid_serve_invocation(final: Stage) -> None:
    command = exec_form(final.all("CMD")[-1])
    args = build_parser().parse_args(command)
    assert args.verb == "serve"
    assert args.certfile.endswith("tls.crt") and args.keyfile.endswith("tls.key")
    # The chart mounts the Secret at the same place.
    deployment = (ROOT / "charts/imagestreams/templates/webhook-deployment.yaml").read_text()
    assert f"--certfile={args.certfile}" in deployment


def test_final_stage_installs_wheels_only_and_no_build_tools(final: Stage) -> None:
    runs = final.all("RUN")
    assert runs
    for run in runs:
        for command in re.split(r"&&|;|\|\|", run):
            words = shlex.split(command.replace("\\", " "))
            if "apt-get" in words or "apk" in words:
                pytest.fail(f"the final stage installs system packages: {command.strip()}")
            if "pip" in words and "install" in words:
                assert "--no-index" in words, f"pip may reach an index: {command.strip()}"
                args = words[words.index("install") + 1 :]
                if "-r" in args:
                    # The dependencies: exactly the lock's, their hashes checked.
                    assert Path(args[args.index("-r") + 1]).name == "requirements.lock", args
                    assert "--require-hashes" in args, args
                    continue
                packages = [w for w in args if not w.startswith("-")]
                assert packages == ["imagestreams"], packages
                assert not any(BUILD_TOOLS.fullmatch(p) for p in packages)
                # The project alone: its dependencies come from the lock, nowhere else.
                assert "--no-deps" in args, args
    # The wheels come from the builder through a bind mount, never a COPY into a layer.
    assert any("from=builder" in run for run in runs)
    assert not any("--from=builder" in c for c in final.all("COPY"))


def test_final_stage_environment(final: Stage) -> None:
    env = " ".join(final.all("ENV"))
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env)
    assert re.search(r"\bPIP_NO_CACHE_DIR=1\b", env)


def test_builder_copies_only_what_exists_and_is_not_ignored(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
                result = not negate
        return result

    sources = []
    for stage in stages:
        for copy in stage.all("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    # What must never reach the build context.
    for path in (".venv", ".dev", ".git", "certs/tls.key", "tests", "charts", "bench"):
        assert ignored(path), path
