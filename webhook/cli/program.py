"""What the command says about itself: its name (`imagestreams`, or `kubectl imagestream`
when kubectl runs it as a plugin), its version, and completion scripts for its shells.

Completion scripts are generated from the argparse parser by shtab, so every verb, alias and
flag is offered as it is declared; nothing is listed twice by hand. `kubectl imagestream …`
is completed by kubectl, which asks `kubectl_complete-imagestream` (`kubectl_complete`
below): shtab writes scripts, not answers, so that walk over the same parser is ours.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import PurePath
from typing import Any

from webhook.cli.common import Verbs
from webhook.model import build

COMMAND = "imagestreams"
PLUGIN_EXECUTABLE = "kubectl-imagestream"
SHELLS = ("bash", "zsh", "tcsh")

ParserFactory = Callable[[str], argparse.ArgumentParser]


def executable(argv0: str) -> str:
    """The name this process was started as: the plugin's or the command's."""
    name = PurePath(argv0).name.removesuffix(".exe")
    return PLUGIN_EXECUTABLE if name == PLUGIN_EXECUTABLE else COMMAND


def prog(executable_name: str) -> str:
    """The name usage lines show. kubectl runs `kubectl-imagestream` for `kubectl
    imagestream`, and users type the latter, so usage says that."""
    return "kubectl imagestream" if executable_name == PLUGIN_EXECUTABLE else COMMAND


def add_version(parser: argparse.ArgumentParser) -> None:
    text = build.current(os.environ).describe(parser.prog)
    parser.add_argument("--version", action="version", version=text, help="print the version")


def add_completion(verbs: Verbs, parser_for: ParserFactory, executable_name: str) -> None:
    p = verbs.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, tcsh)",
        description="Prints a completion script for SHELL. bash: `source <(imagestreams "
        "completion bash)`, or save it in ~/.local/share/bash-completion/completions/"
        "imagestreams. zsh: save it as _imagestreams in a directory of $fpath.",
    )
    p.add_argument("shell", choices=SHELLS, help="the shell")
    # The script completes the executable by its own name (`kubectl imagestream …` is
    # completed by kubectl, which loads no script for its plugins).
    p.set_defaults(run=lambda args: _print_completion(parser_for(executable_name), args.shell))


def _print_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    import shtab

    sys.stdout.write(shtab.complete(parser, shell=shell))
    return 0


# --- kubectl's completion of plugins ---------------------------------------------------------
# kubectl (1.26+) completes `kubectl imagestream …` by running `kubectl_complete-imagestream`
# with the words typed after the plugin's name, the last being the one to complete, and reads
# back one candidate a line and a last line `:DIRECTIVE` (cobra's protocol: 4 = no file names,
# 0 = the shell's default, file names).
NO_FILE_COMPLETION = 4
DEFAULT_COMPLETION = 0


def kubectl_complete(argv: list[str] | None = None) -> int:
    """The `kubectl_complete-imagestream` entry point."""
    from webhook.cli.main import build_parser

    words = sys.argv[1:] if argv is None else argv
    candidates, directive = complete(build_parser(), words)
    sys.stdout.write("".join(f"{c}\n" for c in candidates) + f":{directive}\n")
    return 0


def complete(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], int]:
    """(candidates, directive) for the last of `words`, the others typed before it."""
    *typed, partial = words or [""]
    current, pending = parser, None
    for word in typed:
        if pending is not None:  # this word was the value of the option before it
            pending = None
        elif word.startswith("-"):
            action = _option(current, word.partition("=")[0])
            pending = action if action is not None and action.nargs != 0 else None
            pending = None if "=" in word else pending
        elif (sub := _subparsers(current)) is not None and word in sub.choices:
            current = sub.choices[word]
    if pending is not None:  # completing an option's value
        if pending.choices:
            return _matching(pending.choices, partial), NO_FILE_COMPLETION
        return [], DEFAULT_COMPLETION
    if partial.startswith("-"):
        flags = [
            s for a in current._actions if a.help != argparse.SUPPRESS for s in a.option_strings
        ]
        return _matching(flags, partial), NO_FILE_COMPLETION
    sub = _subparsers(current)
    if sub is not None:
        return _matching(sub.choices, partial), NO_FILE_COMPLETION
    choices = [c for a in current._actions if not a.option_strings for c in a.choices or ()]
    return _matching(choices, partial), NO_FILE_COMPLETION


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return found[0] if found else None


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return parser._option_string_actions.get(flag)


def _matching(choices: Iterable[Any], partial: str) -> list[str]:
    return sorted(str(c) for c in choices if str(c).startswith(partial))
