"""What the command says about itself, through the installed entry points: `--version`,
usage as `kubectl imagestream` when kubectl runs it as a plugin, and completion scripts
(bash run for real: the script is loaded and its completion function asked, as bash would
on TAB)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
VERSION = metadata.version("imagestreams")


def run(
    executable: str, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / executable), *argv], capture_output=True, text=True, env=env, timeout=60
    )


def test_version_from_the_package_metadata() -> None:
    result = run("imagestreams", "--version")
    assert (result.returncode, result.stdout) == (0, f"imagestreams {VERSION}\n")


def test_version_names_the_revision_the_build_recorded() -> None:
    result = run("imagestreams", "--version", env={"IMAGESTREAMS_REVISION": "4aaf537"})
    assert result.stdout == f"imagestreams {VERSION} (revision 4aaf537)\n"


def test_the_plugin_calls_itself_kubectl_imagestream() -> None:
    assert run("kubectl-imagestream", "--version").stdout == f"kubectl imagestream {VERSION}\n"
    usage = run("kubectl-imagestream", "create", "istag", "--help").stdout
    assert usage.startswith("usage: kubectl imagestream create imagestreamtag ")
    wrong = run("kubectl-imagestream", "tga")
    assert wrong.returncode == 2
    assert "kubectl imagestream: error: argument COMMAND: invalid choice: 'tga'" in wrong.stderr


def test_the_command_calls_itself_imagestreams() -> None:
    assert run("imagestreams", "tag", "--help").stdout.startswith("usage: imagestreams tag ")


# bash: load the script, find the function it registered for the command, and call it the
# way bash does on TAB (COMP_WORDS, COMP_CWORD; arguments: command, word, previous word).
BASH_COMPLETE = r"""
source <("$EXE" completion bash) || exit 3
spec=$(complete -p "$CMD") || exit 4
fn=${spec##*-F }; fn=${fn%% *}
COMP_WORDS=("$CMD" "$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
"$fn" "$CMD" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def complete(*words: str, command: str = "imagestreams") -> list[str]:
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", BASH_COMPLETE, "bash", *words],
        capture_output=True,
        text=True,
        env={"EXE": str(BIN / command), "CMD": command, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return sorted(filter(None, (w.strip() for w in result.stdout.splitlines())))


VERBS = [
    "certs",
    "certs-sync",
    "completion",
    "controller",
    "create",
    "describe",
    "import-image",
    "policy",
    "resolve",
    "rollback",
    "serve",
    "set",
    "tag",
]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([""], VERBS),
        (["re"], ["resolve"]),
        (["create", ""], ["imagestream", "imagestreamtag", "is", "istag"]),
        (["-n", "demo", "set", ""], ["image-lookup", "triggers"]),
        (["describe", ""], ["imagestream", "is"]),
        (["completion", ""], ["bash", "tcsh", "zsh"]),
        (["create", "istag", "x:1", "--from-i"], ["--from-image"]),
        (["policy", ""], ["check"]),
    ],
    ids=["verbs", "a prefix", "create", "flags before", "describe", "shells", "a flag", "policy"],
)
def test_bash_completes_verbs_and_flags(words: list[str], expected: list[str]) -> None:
    assert complete(*words) == expected


def test_bash_completion_for_the_plugin_executable() -> None:
    assert complete("create", "", command="kubectl-imagestream") == [
        "imagestream",
        "imagestreamtag",
        "is",
        "istag",
    ]


def test_zsh_script_declares_the_command_and_every_verb() -> None:
    script = run("imagestreams", "completion", "zsh").stdout
    assert script.startswith("#compdef imagestreams\n")
    for verb in VERBS:
        assert f"{verb}:" in script or f'"{verb}"' in script, verb


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = run("imagestreams", "completion", "fish")
    assert result.returncode == 2 and "invalid choice: 'fish'" in result.stderr


# --- kubectl's completion of the plugin -------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected", "directive"),
    [
        ([""], VERBS, 4),
        (["-n", "demo", "create", "i"], ["imagestream", "imagestreamtag", "is", "istag"], 4),
        (["set", "image-lookup", "--a"], ["--all"], 4),
        (["create", "istag", "k:1", "--reference-policy", ""], ["local", "source"], 4),
        (["create", "istag", "k:1", "--reference-policy=local", "--sch"], ["--scheduled"], 4),
        (["resolve", "-f", ""], [], 0),  # a file name: the shell's own completion
        (["completion", "z"], ["zsh"], 4),
        (["policy", ""], ["check"], 4),
    ],
    ids=["verbs", "flags before", "a flag", "a flag's values", "flag=value", "a file", "z", "sub"],
)
def test_kubectl_complete_answers_cobras_protocol(
    words: list[str], expected: list[str], directive: int
) -> None:
    result = run("kubectl_complete-imagestream", *words)
    *candidates, last = result.stdout.splitlines()
    assert (candidates, last) == (expected, f":{directive}")
