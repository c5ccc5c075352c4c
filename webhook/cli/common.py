"""What every verb module of the CLI shares: the error it reports, the cluster flags, the
type of the verb registry. `main` (the parser, the server verbs) and `verbs` (the oc-style
user verbs) both import it, so neither has to import the other.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias


class CommandError(Exception):
    """A failure to report to the user as `error: …` with exit code 1."""


def cluster_flags() -> argparse.ArgumentParser:
    """kubectl's connection flags (and the log format), accepted before or after the verb.

    Defaults are SUPPRESS so that a flag given before the verb is not overwritten by the
    subparser's default; `main` fills in None for flags given nowhere.
    """
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("cluster connection")
    group.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="kubeconfig file")
    group.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context")
    group.add_argument(
        "-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: the context's)"
    )
    flags.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="json: one JSON object a line, for log collectors (default text)",
    )
    return flags


Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
