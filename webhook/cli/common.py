"""What every verb module of the CLI shares: the error it reports, the cluster flags and the
connection they make, the `-f` input, the type of the verb registry. `main` (the parser, the
server verbs) and `verbs` (the oc-style user verbs) both import it, so neither has to import
the other.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TypeAlias

from webhook.kube.connect import ClusterConfigError, Connection, connect


class CommandError(Exception):
    """A failure to report to the user as `error: …` with exit code 1."""


def cluster_flags(default: Any = argparse.SUPPRESS) -> argparse.ArgumentParser:
    """kubectl's connection flags (and the log format), accepted before or after the verb.

    The verbs' copies default to SUPPRESS, so that a flag given before the verb is not
    overwritten by the verb's default; the root parser's copy defaults to None, which
    stands for a flag given nowhere. (Two copies: a parent's actions are shared, not copied,
    by every parser built from it.)
    """
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("cluster connection")
    group.add_argument("--kubeconfig", default=default, help="kubeconfig file")
    group.add_argument("--context", default=default, help="kubeconfig context")
    group.add_argument(
        "-n", "--namespace", default=default, help="namespace (default: the context's)"
    )
    flags.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default,
        help="json: one JSON object a line, for log collectors (default text)",
    )
    return flags


def connect_cluster(args: argparse.Namespace) -> Connection:
    """The connection the cluster flags name; a CommandError saying what to do if none."""
    try:
        return connect(args.kubeconfig, args.context, args.namespace)
    except ClusterConfigError as err:
        raise CommandError(str(err)) from None


def add_filename(parser: argparse.ArgumentParser) -> None:
    """`-f FILE|-`, as kubectl spells it; read with `read_input`."""
    parser.add_argument(
        "-f", "--filename", required=True, metavar="FILE", help="manifest file, or - for stdin"
    )


def source_name(filename: str) -> str:
    """How messages name the `-f` input."""
    return "<stdin>" if filename == "-" else filename


def read_input(filename: str) -> str:
    """The text of `-f FILE` (`-`: standard input), or a CommandError naming the file."""
    if filename == "-":
        return sys.stdin.read()
    path = Path(filename)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise CommandError(f"{filename}: no such file (-f takes a file, or - for stdin)") from None
    except IsADirectoryError:
        raise CommandError(f"{filename}: is a directory (-f takes one file)") from None
    except PermissionError:
        raise CommandError(f"{filename}: permission denied") from None
    except UnicodeDecodeError as err:
        raise CommandError(f"{filename}: not UTF-8 text (byte {err.start})") from None


Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
