"""What the command says about itself: its name (`imagestreams`, or `kubectl imagestream`
when kubectl runs it as a plugin), its version, and completion scripts for its shells.

Completion scripts are generated from the argparse parser by shtab, so every verb, alias and
flag is offered as it is declared; nothing is listed twice by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import PurePath

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
