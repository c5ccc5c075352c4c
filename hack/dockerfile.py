"""A small reader of the repository's Dockerfile.

The Dockerfile is the reference for how the image runs (user, entry point, environment,
ports, labels). hack/image.py builds the same image without a Docker daemon and takes those
settings from here, so the two cannot drift; tests/unit/test_dockerfile.py checks the
Dockerfile's own rules with the same parser.

Only what this Dockerfile uses is understood: continuation lines, comments, global ARG
defaults in FROM, a stage's ARGs in its ENV and LABEL values, and the exec (JSON) form of
ENTRYPOINT and CMD.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every `keyword` instruction of the stage, in order."""
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(text: str) -> list[Stage]:
    """Instructions per stage, continuation lines joined, global ARG defaults substituted."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            rest = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], rest)
            words = [w for w in rest.split() if not w.startswith("--platform")]
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], alias))
            continue
        stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(value: str) -> list[str]:
    """The JSON array of an ENTRYPOINT or CMD; the shell form is refused (it would need a
    shell in the image)."""
    parsed = json.loads(value)
    if not (isinstance(parsed, list) and all(isinstance(p, str) for p in parsed)):
        raise ValueError(f"not an exec-form JSON array of strings: {value}")
    return parsed


def key_values(value: str) -> dict[str, str]:
    """`ENV`/`LABEL` arguments: `K=V K2="V 2"`, or the legacy `ENV K V` form."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        return {words[0]: value.partition(" ")[2].strip()}
    return dict(word.split("=", 1) for word in words)


def arguments(stage: Stage, build_args: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stage's ARGs: their defaults, overridden by `build_args` (as `--build-arg`; one the
    stage does not declare is ignored, as Docker ignores it)."""
    values: dict[str, str] = {}
    for value in stage.all("ARG"):
        name, _, default = value.partition("=")
        values[name] = (build_args or {}).get(name, shlex.split(default)[0] if default else "")
    return values


def substitute(value: str, args: Mapping[str, str]) -> str:
    """`$NAME` and `${NAME}` replaced by the ARG's value ("" when undeclared, as Docker)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], ""), value)


def runtime_config(stage: Stage, build_args: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The OCI image config (`config` section) that `stage`'s own instructions set: the last
    USER, WORKDIR, ENTRYPOINT and CMD, every ENV, LABEL and EXPOSE, with the stage's ARGs
    (`build_args` over their defaults) substituted in ENV and LABEL. What the base image
    contributes (its PATH and LANG, say) is not included."""
    args = arguments(stage, build_args)
    config: dict[str, Any] = {}
    if users := stage.all("USER"):
        config["User"] = users[-1]
    if workdirs := stage.all("WORKDIR"):
        config["WorkingDir"] = workdirs[-1]
    if entrypoints := stage.all("ENTRYPOINT"):
        config["Entrypoint"] = exec_form(entrypoints[-1])
    if cmds := stage.all("CMD"):
        config["Cmd"] = exec_form(cmds[-1])
    env: dict[str, str] = {}
    for value in stage.all("ENV"):
        env.update({k: substitute(v, args) for k, v in key_values(value).items()})
    if env:
        config["Env"] = [f"{k}={v}" for k, v in env.items()]
    labels: dict[str, str] = {}
    for value in stage.all("LABEL"):
        labels.update({k: substitute(v, args) for k, v in key_values(value).items()})
    if labels:
        config["Labels"] = labels
    ports = [p if "/" in p else f"{p}/tcp" for value in stage.all("EXPOSE") for p in value.split()]
    if ports:
        config["ExposedPorts"] = {port: {} for port in ports}
    return config


def load(path: Path = DOCKERFILE) -> list[Stage]:
    return parse(path.read_text())
