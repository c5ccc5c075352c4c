"""The `imagestreams` command (also `kubectl-imagestream`).

Each verb has a `_add_<verb>` that declares its arguments and a `_run_<verb>` that does
the work; heavy imports happen inside the verbs so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from webhook.cli import program
from webhook.cli import verbs as user_verbs
from webhook.cli.common import (
    CommandError,
    Verbs,
    add_filename,
    cluster_flags,
    connect_cluster,
    read_input,
    source_name,
)
from webhook.controller.triggers import TriggerReconciler


def main(argv: Sequence[str] | None = None) -> int:
    executable = program.executable(sys.argv[0])
    parser = build_parser(program.prog(executable), executable)
    args = parser.parse_args(argv)
    configure_logging(args.log_format or "text", logging.DEBUG if args.verbose else logging.INFO)
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


def configure_logging(log_format: str, level: int) -> None:
    """One handler on the root logger, every line in `log_format` with an ISO-8601 UTC time
    (`serve` gives gunicorn's own lines the same formatter)."""
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def utc_time(record: logging.LogRecord) -> str:
    """`2026-11-29T08:07:27.123Z`: ISO 8601, UTC, milliseconds."""
    stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        class UTCJsonFormatter(JsonFormatter):
            def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
                return utc_time(record)

        return UTCJsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    class UTCFormatter(logging.Formatter):
        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
            return utc_time(record)

    return UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_parser(
    prog: str = program.COMMAND, executable: str = program.COMMAND
) -> argparse.ArgumentParser:
    """The whole command line; `prog` is the name usage shows, `executable` the one that
    completion scripts complete."""
    common = cluster_flags()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="OpenShift image streams on any Kubernetes cluster.",
        parents=[cluster_flags(default=None)],
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    program.add_version(parser)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    _add_serve(verbs, common)
    _add_certs(verbs)
    _add_certs_sync(verbs, common)
    _add_resolve(verbs, common)
    _add_policy(verbs, common)
    user_verbs.add_verbs(verbs, common)
    _add_controller(verbs, common)
    program.add_completion(verbs, build_parser, executable)
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
    p.add_argument(
        "--policies-file",
        help="load ImagePolicies (and Namespaces, for their labels) from this file or directory "
        "instead of a cluster",
    )
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument(
        "--threads",
        type=int,
        help="ignored: each connection has a greenlet of its own (kept so that older command "
        "lines still start)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="deadline for each phase of a request: the TLS handshake, the headers, the body "
        "and answer (default %(default)s)",
    )
    p.add_argument(
        "--keepalive",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long an idle connection waits for its next request (default %(default)s)",
    )
    p.add_argument(
        "--health-bind",
        metavar="HOST:PORT",
        help="also answer /healthz and /readyz here, over plain HTTP, apart from the reviews",
    )
    p.add_argument("--log-level", default="info")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from webhook.serving.server import ServeOptions, serve

    serve(
        ServeOptions(
            bind=args.bind,
            certfile=args.certfile,
            keyfile=args.keyfile,
            streams_file=args.streams_file,
            policies_file=args.policies_file,
            kubeconfig=args.kubeconfig,
            context=args.context,
            workers=args.workers,
            log_level=args.log_level,
            read_timeout=args.read_timeout,
            keepalive=args.keepalive,
            health_bind=args.health_bind,
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
        "--registry-ca-file",
        action="append",
        default=[],
        metavar="FILE",
        help="PEM file of CA certificates trusted for registry TLS besides the default roots"
        " (repeatable; a file may hold a bundle)",
    )
    # The conventional variables are the defaults, read here and only here: the registry
    # client itself never takes proxies from its environment. IMAGESTREAMS_HTTPS_PROXY comes
    # first: a URL with a password, from a Secret, that the Kubernetes client (which reads
    # HTTPS_PROXY for its API server connection) does not see.
    p.add_argument(
        "--https-proxy",
        default=_first_set("IMAGESTREAMS_HTTPS_PROXY", "HTTPS_PROXY", "https_proxy"),
        metavar="URL",
        help="proxy for https:// registries (default: $IMAGESTREAMS_HTTPS_PROXY, else"
        " $HTTPS_PROXY)",
    )
    p.add_argument(
        "--http-proxy",
        default=_first_set("IMAGESTREAMS_HTTP_PROXY", "HTTP_PROXY", "http_proxy"),
        metavar="URL",
        help="proxy for http:// registries (default: $IMAGESTREAMS_HTTP_PROXY, else $HTTP_PROXY)",
    )
    p.add_argument(
        "--no-proxy",
        default=_first_set("NO_PROXY", "no_proxy"),
        metavar="LIST",
        help="hosts, domains, IPs and CIDRs reached directly (default: $NO_PROXY)",
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
    p.add_argument(
        "--triggers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="apply image triggers: patch the workloads that follow a moved tag (default on)",
    )
    p.add_argument("--lease-name", default="imagestreams-controller")
    p.add_argument("--lease-namespace", help="namespace of the Lease (default: -n, else ours)")
    p.add_argument("--metrics-bind", metavar="HOST:PORT", help="serve /metrics here")
    p.add_argument(
        "--metrics-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="registry named in the metrics' registry label (repeatable); besides these, the"
        " allowed, insecure and local registries and a few public ones, every registry is"
        ' counted as "other"',
    )
    local = p.add_argument_group("reference policy Local")
    local.add_argument(
        "--local-registry",
        metavar="HOST[:PORT]",
        help="in-cluster registry that Local tags are copied to (HOST/NAMESPACE/STREAM), as"
        " nodes reach it; without it Local tags resolve to their source",
    )
    local.add_argument(
        "--local-registry-endpoint",
        metavar="HOST[:PORT]",
        default="",
        help="where the controller pushes, when not --local-registry (a Service name)",
    )
    local.add_argument(
        "--local-registry-insecure", action="store_true", help="HTTP or unverified TLS"
    )
    local.add_argument(
        "--local-registry-ca", metavar="FILE", help="CA bundle of the local registry"
    )
    local.add_argument(
        "--local-registry-secret",
        metavar="NAMESPACE/NAME",
        help="dockerconfigjson secret with push and delete rights on the local registry",
    )
    local.add_argument(
        "--history-limit",
        type=int,
        default=10,
        help="history items kept per tag; older images are deleted from the local registry",
    )
    local.add_argument("--mirror-workers", type=int, default=2, help="copies run at once")
    p.set_defaults(run=_run_controller)


def _first_set(*names: str) -> str:
    """The first of these environment variables that is set and not empty, else ""."""
    return next((os.environ[n] for n in names if os.environ.get(n)), "")


def _run_controller(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from webhook.controller.reconciler import Controller, ControllerOptions
    from webhook.kube.connect import GROUP, PLURAL, VERSION, thin_client
    from webhook.kube.leader import LeaseOptions, run_as_leader
    from webhook.kube.listwatch import collection_path
    from webhook.registry.proxies import ProxyConfig

    proxies = ProxyConfig.from_settings(args.https_proxy, args.http_proxy, args.no_proxy)
    connection = connect_cluster(args)
    # One thin client watches the streams and writes their status, with a connection for
    # each worker's writes, the watch's and a /readyz; None: the kubernetes client does both.
    rest = thin_client(args.kubeconfig, args.context, say_why=True, pool_size=args.workers + 2)
    streams = None if rest is None else rest.resource(collection_path(GROUP, VERSION, PLURAL))
    controller = Controller(
        connection.api_client,
        ControllerOptions(
            scheduled_interval=args.scheduled_interval,
            workers=args.workers,
            imports_per_minute=args.import_rate,
            imports_per_registry_per_minute=args.registry_import_rate,
            allowed_registries=tuple(args.allow_registry),
            insecure_registries=tuple(args.insecure_registry),
            registry_ca_files=tuple(args.registry_ca_file),
            proxies=proxies,
            metrics_registries=tuple(args.metrics_registry),
            global_pull_secret=args.global_pull_secret,
            local_registry=args.local_registry,
            local_registry_endpoint=args.local_registry_endpoint,
            local_registry_insecure=args.local_registry_insecure,
            local_registry_ca=args.local_registry_ca,
            local_registry_secret=args.local_registry_secret,
            history_limit=args.history_limit,
            mirror_workers=args.mirror_workers,
        ),
        rest=rest,
    )
    if args.metrics_bind:
        host, _, port = args.metrics_bind.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=controller.metrics.registry)
    triggers = None
    if args.triggers:
        triggers = TriggerReconciler.from_api_client(connection.api_client)
        controller.listeners.append(lambda before, after: triggers.stream_changed(after, before))

    def lead() -> None:
        # Workloads are listed before the imports start, so the first tag moves reach them.
        if triggers is not None:
            triggers.start()
        try:
            controller.run(streams)
        finally:
            if triggers is not None:
                triggers.stop()

    if not args.leader_elect:
        lead()
        return 0
    lease = LeaseOptions(
        name=args.lease_name, namespace=args.lease_namespace or connection.namespace
    )
    run_as_leader(connection.api_client, lease, lead)
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
    from webhook.tls.certs import ca_bundle, write_certificates

    if not args.dns and not args.ip:
        raise CommandError("give at least one --dns NAME or --ip ADDR for the certificate")
    ca = write_certificates(args.out_dir, args.dns, args.ip)
    print(ca_bundle(ca))
    return 0


# --- certs-sync --------------------------------------------------------------------------


def _add_certs_sync(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "certs-sync",
        parents=[common],
        help="keep the webhook's CA and serving certificate in a Secret, and its caBundle",
        description="(Re)creates the CA and serving certificate in a kubernetes.io/tls Secret "
        "when missing, invalid or due, and patches the caBundle of the named Mutating (and, "
        "if present, Validating) WebhookConfiguration. -n is the Service's namespace.",
    )
    p.add_argument("--secret", required=True, metavar="[NAMESPACE/]NAME", help="the Secret")
    p.add_argument("--webhook", required=True, metavar="NAME", help="webhook configuration")
    p.add_argument("--service", required=True, help="the webhook's Service (DNS names, owner)")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--dns", action="append", default=[], metavar="NAME", help="extra DNS name")
    p.add_argument(
        "--rotate-before", type=_long_duration, default="30d", help="(default %(default)s)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (the default)")
    mode.add_argument("--interval", type=duration, help="a pass every INTERVAL until stopped")
    p.set_defaults(run=_run_certs_sync)


def _long_duration(text: str) -> float:
    from webhook.tls.certsync import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _run_certs_sync(args: argparse.Namespace) -> int:
    from webhook.tls.certsync import SyncOptions, run

    connection = connect_cluster(args)
    secret_ns, _, secret_name = args.secret.rpartition("/")
    options = SyncOptions(
        secret_namespace=secret_ns or connection.namespace,
        secret_name=secret_name,
        webhook=args.webhook,
        service=args.service,
        namespace=connection.namespace,
        rotate_before=dt.timedelta(seconds=args.rotate_before),
        cluster_domain=args.cluster_domain,
        extra_dns=tuple(args.dns),
    )
    return run(connection.api_client, options, interval=args.interval)


# --- resolve -----------------------------------------------------------------------------


def _add_resolve(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "resolve",
        parents=[common],
        help="resolve short image names in manifests offline (for CI and GitOps)",
        description="Reads multi-document YAML, pins every short name that a stream "
        "resolves, writes the manifests to stdout; other documents are left untouched.",
        epilog="Exit status: 0 the manifests were written; 1 an error (a file that cannot be "
        "read, a document that is not YAML: the message names the file, line and document); "
        "2 a usage error; 3 with --strict, an image that should be pinned is not (each is "
        "named, with its file line, and nothing is written).",
    )
    add_filename(p)
    p.add_argument("--streams-file", required=True, help="ImageStreams (file or directory)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 3, nothing written) when a short name cannot be pinned: no stream "
        "in its namespace resolves it, or its tag has no image yet",
    )
    p.set_defaults(run=_run_resolve)


def _run_resolve(args: argparse.Namespace) -> int:
    from webhook.cli.resolve import EXIT_UNPINNED, resolve_manifests
    from webhook.serving.stream_index import file_index

    text = read_input(args.filename)
    namespace = args.namespace or "default"
    streams = file_index(args.streams_file)
    result = resolve_manifests(text, streams, namespace, source_name(args.filename))
    if args.strict and result.unpinned:
        for unpinned in result.unpinned:
            print(f"error: {unpinned}", file=sys.stderr)
        print(f"error: {len(result.unpinned)} image(s) not pinned (--strict)", file=sys.stderr)
        return EXIT_UNPINNED
    sys.stdout.write(result.text)
    for warning in result.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    return 0


# --- policy ------------------------------------------------------------------------------


def _add_policy(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("policy", parents=[common], help="image policies (ImagePolicy)")
    sub = p.add_subparsers(dest="policy_verb", required=True, metavar="COMMAND")
    c = sub.add_parser(
        "check",
        parents=[common],
        help="say what the image policies would deny, warn or audit in manifests",
        description="Resolves each workload as admission would, then judges it by the "
        "ImagePolicies that select its namespace; prints every violation and exits 1 when "
        "anything would be denied. Policies and streams come from the files when given, "
        "else from the cluster; namespace labels from Namespace documents in the policies "
        "file or the manifests, else from the cluster.",
    )
    add_filename(c)
    c.add_argument("--policies-file", help="ImagePolicies (and Namespaces), file or directory")
    c.add_argument("--streams-file", help="ImageStreams (file or directory)")
    c.set_defaults(run=_run_policy_check)


def _run_policy_check(args: argparse.Namespace) -> int:
    from webhook.cli.policy_check import run

    text = read_input(args.filename)
    result = run(
        text,
        args.namespace,
        args.policies_file,
        args.streams_file,
        lambda: connect_cluster(args),
        source_name(args.filename),
    )
    for warning in result.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    sys.stdout.write(result.report())
    return 1 if result.denied else 0


if __name__ == "__main__":
    sys.exit(main())
