"""The `imagestreams` command (also `kubectl-imagestream`).

Each verb has a `_add_<verb>` that declares its arguments and a `_run_<verb>` that does
the work; heavy imports happen inside the verbs so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias


class CommandError(Exception):
    """A failure to report to the user as `error: …` with exit code 1."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("kubeconfig", "context", "namespace"):
        if not hasattr(args, name):
            setattr(args, name, None)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.run(args)
        return result
    except CommandError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cluster_flags() -> argparse.ArgumentParser:
    """kubectl's connection flags, accepted before or after the verb.

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
    return flags


Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    common = cluster_flags()
    parser = argparse.ArgumentParser(
        prog="imagestreams",
        description="OpenShift image streams on any Kubernetes cluster.",
        parents=[common],
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    _add_serve(verbs, common)
    _add_certs(verbs)
    _add_resolve(verbs, common)
    _add_controller(verbs, common)
    return parser


def duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `1h`, `1h30m` (argparse type)."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 30s, 15m, 1h)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, not {text!r}")
    return total


# --- serve -------------------------------------------------------------------------------


def _add_serve(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "serve", help="run the admission webhook under gunicorn over TLS", parents=[common]
    )
    p.add_argument("--bind", default="0.0.0.0:8443", help="HOST:PORT (default %(default)s)")
    p.add_argument("--certfile", required=True, help="serving certificate (PEM)")
    p.add_argument("--keyfile", required=True, help="serving key (PEM)")
    p.add_argument(
        "--streams-file",
        help="load ImageStreams from this YAML/JSON file or directory instead of a cluster",
    )
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=4, help="threads per worker")
    p.add_argument("--log-level", default="info")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from webhook.server import ServeOptions, serve

    serve(
        ServeOptions(
            bind=args.bind,
            certfile=args.certfile,
            keyfile=args.keyfile,
            streams_file=args.streams_file,
            kubeconfig=args.kubeconfig,
            context=args.context,
            workers=args.workers,
            threads=args.threads,
            log_level=args.log_level,
        )
    )
    return 0


# --- controller --------------------------------------------------------------------------


def _add_controller(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "controller",
        parents=[common],
        help="run the import controller (imports tags, keeps history, schedules re-imports)",
    )
    p.add_argument(
        "--scheduled-interval",
        type=duration,
        default=900.0,
        help="how often scheduled tags are re-imported (default 15m)",
    )
    p.add_argument("--workers", type=int, default=4, help="streams reconciled at once")
    p.add_argument(
        "--import-rate",
        type=float,
        default=60.0,
        help="imports a minute, all registries (0: unlimited)",
    )
    p.add_argument(
        "--registry-import-rate",
        type=float,
        default=60.0,
        help="imports a minute per registry (0: unlimited)",
    )
    p.add_argument(
        "--allow-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="registry that may be reached although it resolves to an internal address",
    )
    p.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="registry that may be reached over HTTP or unverified TLS for every stream",
    )
    p.add_argument(
        "--global-pull-secret", metavar="NAMESPACE/NAME", help="pull secret for every stream"
    )
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold a Lease so that only one replica imports (default on)",
    )
    p.add_argument("--lease-name", default="imagestreams-controller")
    p.add_argument("--lease-namespace", help="namespace of the Lease (default: -n, else ours)")
    p.add_argument("--metrics-bind", metavar="HOST:PORT", help="serve /metrics here")
    p.set_defaults(run=_run_controller)


def _run_controller(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from webhook.controller import Controller, ControllerOptions
    from webhook.kube import connect
    from webhook.leader import LeaseOptions, run_as_leader

    connection = connect(args.kubeconfig, args.context, args.namespace)
    controller = Controller(
        connection.api_client,
        ControllerOptions(
            scheduled_interval=args.scheduled_interval,
            workers=args.workers,
            imports_per_minute=args.import_rate,
            imports_per_registry_per_minute=args.registry_import_rate,
            allowed_registries=tuple(args.allow_registry),
            insecure_registries=tuple(args.insecure_registry),
            global_pull_secret=args.global_pull_secret,
        ),
    )
    if args.metrics_bind:
        host, _, port = args.metrics_bind.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=controller.metrics.registry)
    if not args.leader_elect:
        controller.run()
        return 0
    lease = LeaseOptions(
        name=args.lease_name, namespace=args.lease_namespace or connection.namespace
    )
    run_as_leader(connection.api_client, lease, controller.run)
    return 0


# --- certs -------------------------------------------------------------------------------


def _add_certs(verbs: Verbs) -> None:
    p = verbs.add_parser(
        "certs",
        help="make a CA and a serving certificate; print the base64 CA bundle",
        description="Writes ca.crt, ca.key, tls.crt, tls.key into --out-dir (an existing CA "
        "there is reused) and prints the base64 CA bundle for a webhook's caBundle.",
    )
    p.add_argument("--out-dir", type=Path, default=Path("certs"))
    p.add_argument("--dns", nargs="*", default=[], metavar="NAME", help="DNS names (SANs)")
    p.add_argument("--ip", nargs="*", default=[], metavar="ADDR", help="IP addresses (SANs)")
    p.set_defaults(run=_run_certs)


def _run_certs(args: argparse.Namespace) -> int:
    from webhook.certs import ca_bundle, write_certificates

    if not args.dns and not args.ip:
        raise CommandError("give at least one --dns NAME or --ip ADDR for the certificate")
    ca = write_certificates(args.out_dir, args.dns, args.ip)
    print(ca_bundle(ca))
    return 0


# --- resolve -----------------------------------------------------------------------------


def _add_resolve(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "resolve",
        parents=[common],
        help="resolve short image names in manifests offline (for CI and GitOps)",
        description="Reads multi-document YAML, pins every short name that a stream "
        "resolves, writes the manifests to stdout; other documents are left untouched.",
    )
    p.add_argument("-f", "--filename", required=True, help="manifest file, or - for stdin")
    p.add_argument("--streams-file", required=True, help="ImageStreams (file or directory)")
    p.set_defaults(run=_run_resolve)


def _run_resolve(args: argparse.Namespace) -> int:
    from webhook.index import file_index
    from webhook.resolve import resolve_manifests

    text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
    namespace = args.namespace or "default"
    result = resolve_manifests(text, file_index(args.streams_file), namespace)
    sys.stdout.write(result.text)
    for warning in result.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
