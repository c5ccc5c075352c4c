"""hack/image.py builds the product image without a Docker daemon. Checked here without
building: it runs the image as the Dockerfile does (user, entry point, command, working
directory, environment, ports, labels), both install the Python packages from the one
requirements.lock, and that lock pins every runtime dependency of pyproject.toml with hashes.
(tests/integration/test_image_build.py really builds it.)"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import dockerfile  # noqa: E402
import image  # noqa: E402

LOCK = ROOT / "requirements.lock"


@pytest.fixture(scope="module")
def stages() -> list[dockerfile.Stage]:
    return dockerfile.load()


@pytest.fixture(scope="module")
def final(stages: list[dockerfile.Stage]) -> dockerfile.Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    built = image.image_config()
    assert built["os"] == "linux" and built["architecture"] in image.DEBIAN_ARCH.values()
    settings = built["config"]
    assert isinstance(settings, dict)
    return settings


def words(run: str) -> list[str]:
    return run.replace("\\", " ").split()


def pins() -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes) of every requirement in the lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n", " ", LOCK.read_text())  # one line per requirement
    for line in text.splitlines():
        line = line.partition("#")[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, equals, version = requirement.partition("==")
        assert equals and re.fullmatch(r"[\w.+!-]+", version), f"not an exact pin: {line}"
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=")]
        assert len(hashes) == len(options), f"options other than --hash: {line}"
        entries[canonicalize_name(name)] = (version, hashes)
    return entries


# --- the image runs as the Dockerfile says -------------------------------------------------


def test_same_user_entry_point_command_and_working_directory(
    final: dockerfile.Stage, config: dict[str, Any]
) -> None:
    assert config["User"] == final.all("USER")[-1] == "65532:65532"
    assert config["Entrypoint"] == dockerfile.exec_form(final.all("ENTRYPOINT")[-1])
    assert config["Entrypoint"] == ["imagestreams"]
    assert config["Cmd"] == dockerfile.exec_form(final.all("CMD")[-1])
    assert config["WorkingDir"] == final.all("WORKDIR")[-1]


def test_same_environment_ports_and_labels(final: dockerfile.Stage, config: dict[str, Any]) -> None:
    env = config["Env"]
    assert isinstance(env, list)
    args = dockerfile.arguments(final, image.build_args())
    for value in final.all("ENV"):
        for assignment in value.replace("\\", " ").split():
            assert dockerfile.substitute(assignment.replace('"', ""), args) in env, assignment
    # What the Dockerfile's base image adds: the console script must be on PATH.
    path = next(e for e in env if e.startswith("PATH=")).removeprefix("PATH=")
    assert "/usr/local/bin" in path.split(":")
    ports = {f"{p}/tcp" for value in final.all("EXPOSE") for p in value.split()}
    assert set(config["ExposedPorts"]) == ports
    labels = config["Labels"]
    assert isinstance(labels, dict)
    for value in final.all("LABEL"):
        for key in re.findall(r"([\w.-]+)=", value):
            assert key in labels, key
    assert labels["org.opencontainers.image.title"] == "imagestreams"


def test_oci_labels_say_which_build_this_is(
    final: dockerfile.Stage, config: dict[str, Any]
) -> None:
    labels = config["Labels"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    revision = labels["org.opencontainers.image.revision"]
    if head.returncode == 0:
        commit = head.stdout.strip()
        assert revision in (commit, f"{commit}-dirty")
    else:  # sources without their git history (an archive): said, not guessed
        assert revision == "unknown"
    assert f"IMAGESTREAMS_REVISION={revision}" in config["Env"]  # --version, build_info
    assert labels["org.opencontainers.image.source"].startswith("https://")
    # `docker build` without build arguments still labels the right version.
    defaults = dockerfile.arguments(final)
    assert defaults["VERSION"] == version
    assert (
        dockerfile.runtime_config(final)["Labels"]["org.opencontainers.image.revision"]
        == (defaults["REVISION"])
    )


def test_both_builds_import_the_runtime_modules(final: dockerfile.Stage) -> None:
    # The Dockerfile's last RUN runs the same check as hack/image.py's verify().
    install = " ".join(final.all("RUN"))
    assert f'python -c "{image.SELF_CHECK}"' in install
    assert {"webhook.serving.server", "gunicorn.workers.ggevent"} <= set(image.RUNTIME_MODULES)


def test_the_self_check_fails_on_a_missing_runtime_dependency() -> None:
    ok = subprocess.run([sys.executable, "-c", image.SELF_CHECK], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # packaging: what the gevent worker imports and the image once lacked.
    blocked = f"import sys; sys.modules['packaging'] = None; {image.SELF_CHECK}"
    missing = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert missing.returncode != 0
    assert "packaging" in missing.stderr


# --- both install the Python packages from the one lock ------------------------------------


def test_the_dockerfile_installs_the_locked_dependencies(stages: list[dockerfile.Stage]) -> None:
    builder = next(s for s in stages if s.name == "builder")
    copied = [w for copy in builder.all("COPY") for w in words(copy)[:-1]]
    assert "requirements.lock" in copied
    fetch = [w for run in builder.all("RUN") for w in words(run) if "requirements.lock" in run]
    assert {"wheel", "--require-hashes", "--only-binary=:all:"} <= set(fetch), fetch
    assert fetch[fetch.index("-r") + 1] == "requirements.lock"
    install = [w for run in stages[-1].all("RUN") for w in words(run)]
    assert "--require-hashes" in install
    assert Path(install[install.index("-r") + 1]).name == LOCK.name


def test_hack_image_installs_the_same_lock() -> None:
    assert image.LOCK == LOCK
    download = image.DOWNLOAD_DEPENDENCIES
    assert {"--require-hashes", "--only-binary=:all:"} <= set(download)
    assert download[download.index("-r") + 1] == LOCK
    install = image.INSTALL_DEPENDENCIES
    assert {"--no-index", "--require-hashes"} <= set(install)
    assert Path(install[install.index("-r") + 1]).name == LOCK.name
    # The project alone, after: nothing else can bring in an unlocked version.
    assert {"--no-index", "--no-deps", "imagestreams"} <= set(image.INSTALL_PROJECT)
    # The project's wheel is built from the Dockerfile's build context.
    context = {str(p).split("/")[0] for p in image.app_source_files()}
    assert context == {"pyproject.toml", "README.md", "LICENSE", "webhook"}


def test_the_venv_installs_the_lock_first() -> None:
    makefile = (ROOT / "Makefile").read_text()
    locked = makefile.index("install -q --require-hashes -r requirements.lock")
    assert locked < makefile.index("install -q -e '.[test]'")


def test_ci_installs_through_the_locked_venv() -> None:
    # .ci/run runs `make test`, whose first prerequisite is the venv installed from the lock;
    # no other pip install runs in CI.
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
    assert not re.search(r"\bpip3? install\b", ci)
    makefile = (ROOT / "Makefile").read_text()
    test_target = re.search(r"^test: (.*)$", makefile, re.MULTILINE)
    assert test_target and test_target[1].split()[0] == "venv"
    installs = re.findall(r"pip install [^\n]*", makefile)
    assert installs == [
        "pip install -q --require-hashes -r requirements.lock",
        "pip install -q -e '.[test]'",
        "pip install -q 'uv==$(UV_VERSION)'",  # `make lock` only: the tool that writes it
    ]


# --- the lock ------------------------------------------------------------------------------


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    locked = pins()
    for name, (_, hashes) in locked.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name][0]), (line, locked[name][0])
    # Only what runs the project: no test or build tools.
    assert not {"pytest", "mypy", "ruff", "pip", "setuptools", "wheel"} & set(locked)


def test_the_lock_is_closed_and_the_venv_runs_its_versions() -> None:
    """Every dependency of a locked package is locked too (pip --require-hashes insists), and
    the dev/CI venv has exactly the versions the image has (`make venv` installs the lock)."""
    locked = pins()
    environment = {**default_environment(), "extra": ""}
    for name, (version, _) in locked.items():
        installed = importlib.metadata.version(name)
        assert installed == version, f"{name} {installed} in .venv, {version} locked: make venv"
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            dependency = canonicalize_name(requirement.name)
            assert dependency in locked, f"{name} needs {dependency}, not in the lock"
