"""The user verbs of `imagestreams` (and `kubectl imagestream`), after `oc`'s.

    create is|imagestream NAME                      create istag|imagestreamtag NAME:TAG …
    tag SOURCE DEST… | tag -d DEST…                 set image-lookup [NAME…|TYPE/NAME…|--all]
    describe is|imagestream NAME…                   set triggers TYPE/NAME… [--from-image …]
    import-image NAME[:TAG]                         rollback NAME:TAG [--to-revision N]

Each verb reads, computes the change with `stream_edits`/`triggers`/`describe` (pure), and
writes it back guarded by the resourceVersion it read (a 409 Conflict means someone wrote in
between: read again and recompute). This module holds only argument parsing and API calls.
Errors end as `error: …` with exit code 1 (cli.main); messages name the object and what to do.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from webhook.cli import describe
from webhook.cli import edits as stream_edits
from webhook.cli.common import CommandError, Verbs, connect_cluster
from webhook.cli.edits import (
    ISTAG_TYPE,
    STREAM_RESOURCE,
    STREAM_TYPE,
    EditError,
    Source,
    StreamTag,
    TagOptions,
)
from webhook.cli.tabwriter import tabwrite
from webhook.controller.triggers import TriggerReconciler
from webhook.kube import api as kube_api
from webhook.kube import connect as kube
from webhook.kube import errors
from webhook.kube.connect import GROUP, PLURAL, VERSION
from webhook.model import triggers
from webhook.model.streams import IMAGE_STREAM_TAG, ImageStream, parse_image_stream
from webhook.model.workloads import WorkloadKind

T = TypeVar("T")
_MERGE = "application/merge-patch+json"


def add_verbs(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    """Register the user verbs on the `imagestreams` parser."""
    _add_create(verbs, common)
    _add_tag(verbs, common)
    _add_set(verbs, common)
    _add_describe(verbs, common)
    _add_import_image(verbs, common)
    _add_rollback(verbs, common)


# --- the API edge ---------------------------------------------------------------------------


class ApiError(CommandError):
    """An API call that failed; `status` is the HTTP status (0: no answer)."""

    def __init__(
        self, message: str, status: int = 0, reason: str = "", *, no_such_type: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.no_such_type = no_such_type  # a 404 for the resource type, not for an object


class Api:
    """The few calls the verbs make, returning plain dicts and raising ApiError."""

    def __init__(self, args: argparse.Namespace) -> None:
        connection = connect_cluster(args)
        self.namespace = connection.namespace
        self.api_client = connection.api_client
        self.custom = kube.custom_objects(connection)

    # -- image streams --

    def find_stream(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get_stream(namespace, name)
        except ApiError as err:
            if err.status == 404 and not err.no_such_type:
                return None
            raise

    def get_stream(self, namespace: str, name: str) -> dict[str, Any]:
        return self._object(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )

    def list_streams(self, namespace: str) -> list[dict[str, Any]]:
        found = self._call(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
        )
        return list(found.get("items") or [])

    def create_stream(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        namespace = obj["metadata"]["namespace"]
        return self._object(
            self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, obj
        )

    def patch_stream(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return self._object(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            patch,
            _content_type=_MERGE,
        )

    def patch_stream_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._object(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            patch,
            _content_type=_MERGE,
        )

    # -- workloads --

    def read_workload(self, kind: WorkloadKind, namespace: str, name: str) -> dict[str, Any]:
        reader = getattr(self._typed(kind), f"read_namespaced_{kind.snake_name}")
        return self._raw(reader, name, namespace)

    def patch_workload(
        self, kind: WorkloadKind, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        patcher = getattr(self._typed(kind), f"patch_namespaced_{kind.snake_name}")
        return self._raw(patcher, name, namespace, patch, _content_type=_MERGE)

    def _typed(self, kind: WorkloadKind) -> Any:
        return kube_api.workload_api(self.api_client, kind.group)

    def _raw(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = self._call(fn, *args, _preload_content=False, **kwargs)
        return dict(json.loads(response.data))

    def _object(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        return dict(self._call(fn, *args, **kwargs))

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except errors.ApiException as err:
            raise _api_error(err) from None
        except HTTPError as err:
            host = getattr(self.api_client.configuration, "host", "the API server")
            raise ApiError(f"cannot reach the API server at {host}: {err}") from None


def _api_error(err: Exception) -> ApiError:
    status = errors.status_of(err) or 0
    body = errors.body_of(err)
    message = errors.server_message(err) or "request failed"
    reason = str(body.get("reason") or "")
    no_such_type = status == errors.NOT_FOUND and not body.get("details")
    if no_such_type:
        message += (
            f" (the server has no {GROUP}/{VERSION} {PLURAL}: is the ImageStream CRD"
            " installed? helm install imagestreams charts/imagestreams)"
        )
    elif status == 403:
        message += " (ask a cluster administrator for access, or check --namespace/--context)"
    return ApiError(message, status, reason, no_such_type=no_such_type)


def retry_on_conflict(attempt: Callable[[], T]) -> T:
    """Run read-compute-write `attempt` again on a 409 (someone else wrote in between)."""
    return kube_api.retry_on_conflict(attempt)


def write_tags(
    api: Api, namespace: str, name: str, obj: Mapping[str, Any] | None, tags: list[dict[str, Any]]
) -> dict[str, Any]:
    """Create the stream with `tags`, or replace the spec tags of the one read as `obj`."""
    if obj is None:
        return api.create_stream(stream_edits.new_stream(namespace, name, tags))
    return api.patch_stream(namespace, name, stream_edits.spec_patch(obj, tags))


def _fail_all(errors: list[str]) -> int:
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


# --- create ---------------------------------------------------------------------------------


def _add_create(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("create", parents=[common], help="create an image stream or tag")
    kinds = p.add_subparsers(dest="create_kind", required=True, metavar="KIND")

    stream = kinds.add_parser(
        "imagestream", aliases=["is"], parents=[common], help="create an empty image stream"
    )
    stream.add_argument("name", metavar="NAME")
    stream.add_argument(
        "--lookup-local",
        action="store_true",
        help="resolve short names in this namespace through the new stream",
    )
    stream.set_defaults(run=run_create_stream)

    istag = kinds.add_parser(
        "imagestreamtag",
        aliases=["istag"],
        parents=[common],
        help="create a tag (and its stream, when missing)",
        description="Fails when the tag exists; use `tag` to change an existing one.",
    )
    istag.add_argument("name", metavar="NAME:TAG")
    istag.add_argument("--from-image", metavar="REF", help="a registry image to import")
    istag.add_argument("--from", dest="from_ref", metavar="[NS/]STREAM:TAG|STREAM@DIGEST")
    _add_tag_options(istag)
    istag.set_defaults(run=run_create_istag)


def _add_tag_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduled", action="store_true", help="re-import periodically")
    p.add_argument("--insecure", action="store_true", help="allow HTTP or unverified TLS")
    p.add_argument(
        "--reference", action="store_true", help="record the reference only; do not import"
    )
    p.add_argument(
        "--reference-policy",
        default="source",
        type=str.lower,
        choices=["source", "local"],
        help="local: resolve to the in-cluster mirror (default %(default)s)",
    )
    p.add_argument(
        "--import-mode",
        default="",
        choices=["Legacy", "PreserveOriginal"],
        help="PreserveOriginal keeps a multi-arch index; Legacy picks one platform",
    )


def _tag_options(args: argparse.Namespace) -> TagOptions:
    return TagOptions(
        scheduled=args.scheduled,
        insecure=args.insecure,
        reference=args.reference,
        reference_policy=args.reference_policy,
        import_mode=args.import_mode,
    )


def run_create_stream(args: argparse.Namespace) -> int:
    api = Api(args)
    namespace, name = stream_edits.parse_stream_name(args.name, api.namespace)
    obj = stream_edits.new_stream(namespace, name, lookup_local=args.lookup_local)
    try:
        api.create_stream(obj)
    except ApiError as err:
        if err.status == 409:
            raise CommandError(
                f'{STREAM_RESOURCE} "{name}" already exists; see `imagestreams describe is {name}`'
            ) from None
        raise
    print(f"{STREAM_TYPE}/{name} created")
    return 0


def run_create_istag(args: argparse.Namespace) -> int:
    api = Api(args)
    dest = stream_edits.parse_stream_tag(args.name, api.namespace)
    source = stream_edits.create_from_source(args.from_image, args.from_ref)
    options = _tag_options(args)
    stream_edits.validate_options(options)

    def attempt() -> None:
        obj = api.find_stream(dest.namespace, dest.stream)
        tags = stream_edits.create_istag(obj, dest.tag, source, options)
        write_tags(api, dest.namespace, dest.stream, obj, tags)

    retry_on_conflict(attempt)
    print(f"{ISTAG_TYPE}/{dest.name} created")
    return 0


# --- tag ------------------------------------------------------------------------------------


def _add_tag(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "tag",
        parents=[common],
        usage="imagestreams tag [flags] SOURCE DEST [DEST ...]\n"
        "       imagestreams tag -d DEST [DEST ...]",
        help="point tags at an image, another tag, or an image from history",
        description="SOURCE is a registry image (host/repo:tag), an image stream tag "
        "([ns/]stream:tag: its current image is copied, or tracked with --alias) or an image "
        "stream image ([ns/]stream@sha256:…). Each DEST is [ns/]stream:tag; missing streams "
        "are created. With -d, every argument is a tag to delete.",
    )
    p.add_argument("refs", nargs="+", metavar="SOURCE|DEST")
    p.add_argument(
        "--source",
        choices=sorted(stream_edits.SOURCE_KINDS),
        type=str.lower,
        help="what SOURCE is, when its shape does not say (docker, istag, isimage)",
    )
    p.add_argument("-d", "--delete", action="store_true", help="delete the given tags")
    p.add_argument(
        "--alias", action="store_true", help="track the source tag (same stream) as it moves"
    )
    _add_tag_options(p)
    p.set_defaults(run=run_tag)


def run_tag(args: argparse.Namespace) -> int:
    options = _tag_options(args)
    if args.delete:
        if args.source:
            raise CommandError("cannot specify a source kind when deleting")
        stream_edits.validate_tag_flags(None, alias=args.alias, delete=True, options=options)
        api = Api(args)
        dests = [stream_edits.parse_stream_tag(a, api.namespace) for a in args.refs]
        for dest in dests:
            _delete_tag(api, dest)
        return 0
    if len(args.refs) < 2:
        raise CommandError(
            "you must specify a source and at least one destination or one or more tags to"
            " delete (-d)"
        )
    source = stream_edits.parse_source(args.refs[0], args.source)
    stream_edits.validate_tag_flags(source, alias=args.alias, delete=False, options=options)
    api = Api(args)
    dests = [stream_edits.parse_stream_tag(a, api.namespace) for a in args.refs[1:]]
    if args.alias:
        stream_edits.check_alias(source, dests, api.namespace)
    elif source.kind == IMAGE_STREAM_TAG:
        source_obj = _get_stream(api, source.namespace or api.namespace, source.stream)
        source = stream_edits.copy_current_image(source, source_obj)
    for dest in dests:
        _tag_one(api, source, dest, options, alias=args.alias)
    return 0


def _tag_one(
    api: Api, source: Source, dest: StreamTag, options: TagOptions, *, alias: bool
) -> None:
    target = stream_edits.dest_source(source, dest, api.namespace)

    def attempt() -> None:
        obj = api.find_stream(dest.namespace, dest.stream)
        generation = stream_edits.next_generation(obj)
        entry = stream_edits.tag_reference(dest.tag, target, options, generation)
        write_tags(api, dest.namespace, dest.stream, obj, stream_edits.with_tag(obj, entry))

    retry_on_conflict(attempt)
    print(
        stream_edits.tag_message(
            dest, source, api.namespace, alias=alias, scheduled=options.scheduled
        )
    )


def _delete_tag(api: Api, dest: StreamTag) -> None:
    def attempt() -> None:
        obj = _get_stream(api, dest.namespace, dest.stream)
        spec, status = stream_edits.delete_tag(obj, dest.tag)
        if spec != stream_edits.spec_tags(obj):
            obj = api.patch_stream(dest.namespace, dest.stream, stream_edits.spec_patch(obj, spec))
            status = [t for t in stream_edits.status_tags(obj) if t.get("tag") != dest.tag]
        if status != stream_edits.status_tags(obj):
            patch = stream_edits.status_patch(obj, status)
            api.patch_stream_status(dest.namespace, dest.stream, patch)

    retry_on_conflict(attempt)
    print(f"Deleted tag {dest.namespace}/{dest.name}.")


def _get_stream(api: Api, namespace: str, name: str) -> dict[str, Any]:
    obj = api.find_stream(namespace, name)
    if obj is None:
        where = "" if namespace == api.namespace else f" in namespace {namespace!r}"
        raise CommandError(
            f"{stream_edits.not_found(name)}{where}; create it with `imagestreams create is {name}`"
        )
    return obj


# --- set image-lookup, set triggers ---------------------------------------------------------


def _add_set(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("set", parents=[common], help="change image lookup or image triggers")
    what = p.add_subparsers(dest="set_what", required=True, metavar="WHAT")

    lookup = what.add_parser(
        "image-lookup",
        parents=[common],
        help="resolve short names through image streams",
        description="NAME: turn a stream's lookupPolicy.local on (or off with "
        "--enabled=false). TYPE/NAME (deploy/web, sts/db, …): resolve every image of that "
        "workload through streams, with the resolve-names annotation on its pod template. "
        "No arguments: list the namespace's streams.",
    )
    lookup.add_argument("names", nargs="*", metavar="NAME|TYPE/NAME")
    lookup.add_argument("--all", action="store_true", help="every image stream in the namespace")
    lookup.add_argument(
        "--enabled",
        type=parse_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="true|false",
        help="--enabled=false turns lookup off",
    )
    lookup.add_argument("--list", action="store_true", help="show the state instead of changing")
    lookup.set_defaults(run=run_set_image_lookup)

    trig = what.add_parser(
        "triggers",
        parents=[common],
        help="roll a workload when an image stream tag moves",
        description="With --from-image, add (or change) an image trigger on the containers "
        "given by -c; --remove removes it; --manual/--auto alone pause or resume every "
        "trigger. No flags: list the triggers (NAME TYPE VALUE AUTO).",
    )
    trig.add_argument("targets", nargs="+", metavar="TYPE/NAME")
    trig.add_argument("--from-image", metavar="[NS/]STREAM:TAG", help="the tag to follow")
    trig.add_argument(
        "-c", "--containers", default="", metavar="NAME[,NAME]", help="containers to update"
    )
    mode = trig.add_mutually_exclusive_group()
    mode.add_argument("--auto", action="store_true", help="apply automatically (default)")
    mode.add_argument("--manual", action="store_true", help="pause: record but do not apply")
    trig.add_argument("--remove", action="store_true", help="remove the --from-image trigger")
    trig.add_argument("--remove-all", action="store_true", help="remove every image trigger")
    trig.set_defaults(run=run_set_triggers)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "t", "1", "yes"):
        return True
    if value in ("false", "f", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def run_set_image_lookup(args: argparse.Namespace) -> int:
    api = Api(args)
    if not args.names and not args.all:
        _print_lookup_table(api, [(s["metadata"]["name"], s, None) for s in _streams(api)])
        return 0
    targets: list[tuple[str, dict[str, Any], WorkloadKind | None]] = []
    errors: list[str] = []
    names = [s["metadata"]["name"] for s in _streams(api)] if args.all else []
    for name in [*names, *args.names]:
        try:
            targets.append(_lookup_target(api, name))
        except (CommandError, EditError) as err:
            errors.append(str(err))
    if args.list:
        _print_lookup_table(api, targets)
        return _fail_all(errors)
    for name, obj, kind in targets:
        try:
            _set_lookup(api, name, obj, kind, args.enabled)
        except ApiError as err:
            errors.append(f"failed to patch image lookup: {err}")
    return _fail_all(errors)


def _streams(api: Api) -> list[dict[str, Any]]:
    return sorted(api.list_streams(api.namespace), key=lambda s: s["metadata"]["name"])


def _lookup_target(api: Api, text: str) -> tuple[str, dict[str, Any], WorkloadKind | None]:
    if "/" in text:
        kind, name = stream_edits.parse_workload(text)
        return name, api.read_workload(kind, api.namespace, name), kind
    _, name = stream_edits.parse_stream_name(text, api.namespace)
    return name, _get_stream(api, api.namespace, name), None


def _set_lookup(
    api: Api, name: str, obj: dict[str, Any], kind: WorkloadKind | None, enabled: bool
) -> None:
    if kind is None:
        patch = stream_edits.lookup_patch(obj, enabled)
        label = f"{STREAM_TYPE}/{name}"
    else:
        patch = stream_edits.resolve_names_patch(obj, kind.kind, enabled)
        label = f"{kind.type_name}/{name}"
    if patch is None:
        print(f"{label} image lookup unchanged")
        return
    if kind is None:
        api.patch_stream(api.namespace, name, patch)
    else:
        api.patch_workload(kind, api.namespace, name, patch)
    print(f"{label} image lookup updated")


def _print_lookup_table(
    api: Api, rows: Iterable[tuple[str, dict[str, Any], WorkloadKind | None]]
) -> None:
    lines = ["NAME\tLOCAL"]
    for name, obj, kind in rows:
        if kind is None:
            local = parse_image_stream(obj).lookup_local
            lines.append(f"{name}\t{'true' if local else 'false'}")
        else:
            local = stream_edits.resolve_names_enabled(obj, kind.kind)
            lines.append(f"{kind.resource}/{name}\t{'true' if local else 'false'}")
    print_table(lines)


def print_table(lines: list[str]) -> None:
    """Columns as oc's tables print them (Go tabwriter, two spaces between columns)."""
    text = tabwrite("\n".join(lines) + "\n", tabwidth=2, padding=2, padchar=" ")
    sys.stdout.write(text)


def run_set_triggers(args: argparse.Namespace) -> int:
    _check_trigger_flags(args)
    api = Api(args)
    workloads = [_trigger_workload(t) for t in args.targets]
    source = _trigger_source(args.from_image, api.namespace) if args.from_image else None
    listing = source is None and not (args.remove_all or args.auto or args.manual)
    if listing:
        lines = ["NAME\tTYPE\tVALUE\tAUTO"]
        for kind, name in workloads:
            obj = api.read_workload(kind, api.namespace, name)
            lines += [
                "\t".join(row) for row in triggers.trigger_rows(obj, kind.kind, kind.resource)
            ]
        print_table(lines)
        return 0
    for kind, name in workloads:
        _set_triggers_on(api, kind, name, args, source)
    return 0


def _check_trigger_flags(args: argparse.Namespace) -> None:
    """oc set triggers' Validate."""
    if args.remove and args.remove_all:
        raise CommandError("you must specify either --remove or --remove-all")
    if args.remove_all and (args.from_image or args.auto or args.manual):
        raise CommandError("--remove-all may not be used with any other flag")
    if args.remove and not args.from_image:
        raise CommandError("--remove requires --from-image STREAM:TAG naming the trigger")
    if args.containers and not args.from_image:
        raise CommandError("--containers only applies with --from-image")


def _trigger_workload(text: str) -> tuple[WorkloadKind, str]:
    kind, name = stream_edits.parse_workload(text)
    if kind.kind not in triggers.TRIGGER_KINDS:
        raise CommandError(
            f"{kind.resource}/{name} does not support triggers (deployments, statefulsets,"
            " daemonsets and cronjobs do)"
        )
    return kind, name


def _trigger_source(text: str, namespace: str) -> StreamTag:
    """--from-image: an image stream tag on this cluster, `[ns/]stream:tag`."""
    if "@" in text or text.count("/") > 1 or ("/" in text and "." in text.split("/")[0]):
        raise CommandError(
            "the value of --from-image must point to an image stream tag on this server"
        )
    if ":" not in text.rpartition("/")[2]:
        raise CommandError("the value of --from-image must include the tag you wish to pull from")
    return stream_edits.parse_stream_tag(text, namespace)


def _set_triggers_on(
    api: Api,
    kind: WorkloadKind,
    name: str,
    args: argparse.Namespace,
    source: StreamTag | None,
) -> None:
    def attempt() -> tuple[dict[str, Any], list[triggers.Trigger]] | None:
        obj = api.read_workload(kind, api.namespace, name)
        old = triggers.current_triggers(obj)
        new = _edited_triggers(obj, kind, args, source)
        if new == old:
            return None
        patch = triggers.annotation_patch(obj, new)
        return api.patch_workload(kind, api.namespace, name, patch), [
            t for t in new if t not in old
        ]

    try:
        result = retry_on_conflict(attempt)
    except triggers.InvalidTrigger as err:
        raise CommandError(f"{kind.type_name}/{name}: {err}") from None
    if result is None:
        print(f"{kind.type_name}/{name} triggers unchanged")
        return
    print(f"{kind.type_name}/{name} triggers updated")
    written, changed = result
    # Apply the new or resumed triggers at once, as OpenShift's trigger controller would;
    # later moves of their tags are the controller's. Untouched triggers are left alone
    # (their workload may have been rolled back by hand on purpose).
    own = api.namespace
    moved = {(t.source_namespace(own), t.stream, t.tag) for t in changed if not t.paused}
    if not moved:
        return
    reconciler = TriggerReconciler.from_api_client(api.api_client)
    try:
        reconciler.sync_workload(kind.kind, written, _stream_lookup(api), moved)
    except Exception as err:
        raise CommandError(
            f"{kind.type_name}/{name}: triggers saved, but applying them failed: {err}"
        ) from None


def _edited_triggers(
    obj: Mapping[str, Any], kind: WorkloadKind, args: argparse.Namespace, source: StreamTag | None
) -> list[triggers.Trigger]:
    current = triggers.current_triggers(obj)
    own = str((obj.get("metadata") or {}).get("namespace", ""))
    if args.remove_all:
        return []
    if source is None:
        return triggers.reset_triggers(current, auto=not args.manual)
    if args.remove:
        return triggers.remove_image_trigger(current, source.name, source.namespace, own)
    containers = [c for c in args.containers.split(",") if c]
    return triggers.set_image_trigger(
        obj, kind.kind, source.name, source.namespace, containers, auto=not args.manual
    )


def _stream_lookup(api: Api) -> Callable[[str, str], ImageStream | None]:
    cache: dict[tuple[str, str], ImageStream | None] = {}

    def lookup(namespace: str, name: str) -> ImageStream | None:
        if (namespace, name) not in cache:
            obj = api.find_stream(namespace, name)
            cache[(namespace, name)] = parse_image_stream(obj) if obj is not None else None
        return cache[(namespace, name)]

    return lookup


# --- describe -------------------------------------------------------------------------------


def _add_describe(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("describe", parents=[common], help="show an image stream in detail")
    kinds = p.add_subparsers(dest="describe_kind", required=True, metavar="KIND")
    stream = kinds.add_parser(
        "imagestream",
        aliases=["is"],
        parents=[common],
        help="tags, where they come from, their history and import errors",
    )
    stream.add_argument("names", nargs="+", metavar="NAME")
    stream.set_defaults(run=run_describe)


def run_describe(args: argparse.Namespace) -> int:
    api = Api(args)
    now = datetime.datetime.now(datetime.UTC)
    texts = []
    for text in args.names:
        namespace, name = stream_edits.parse_stream_name(text, api.namespace)
        texts.append(describe.describe_stream(_get_stream(api, namespace, name), now))
    sys.stdout.write("\n\n".join(texts))
    return 0


# --- import-image ---------------------------------------------------------------------------


def _add_import_image(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "import-image",
        parents=[common],
        help="import a tag (or every registry tag) now and wait for the result",
        description="Asks the controller to import now (a new tag generation) and waits "
        "until status answers it: prints the stream with the new digest, or the import error.",
    )
    p.add_argument("name", metavar="NAME[:TAG]")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the import (default %(default).0f)",
    )
    p.set_defaults(run=run_import_image)


def run_import_image(args: argparse.Namespace) -> int:
    api = Api(args)
    namespace, name = stream_edits.parse_stream_name(args.name.partition(":")[0], api.namespace)
    tag = args.name.partition(":")[2] or None

    def attempt() -> dict[str, int]:
        obj = _get_stream(api, namespace, name)
        tags, wanted = stream_edits.request_import(obj, tag)
        api.patch_stream(namespace, name, stream_edits.spec_patch(obj, tags))
        return wanted

    wanted = retry_on_conflict(attempt)
    obj, outcomes = _wait_for_imports(api, namespace, name, wanted, args.timeout)
    print(f"{STREAM_TYPE}/{name} imported\n")
    sys.stdout.write(describe.describe_stream(obj, datetime.datetime.now(datetime.UTC)))
    failed = [o for o in outcomes if o.failed]
    pending = [o.tag for o in outcomes if not o.done]
    if failed:
        raise CommandError(
            "; ".join(f"{name}:{o.tag}: Import failed ({o.reason}): {o.message}" for o in failed)
        )
    if pending:
        tags = ", ".join(f"{name}:{t}" for t in pending)
        raise CommandError(
            f"timed out after {args.timeout:.0f}s waiting for the import of {tags}; is the"
            " imagestreams controller running? `imagestreams describe is"
            f" {name}` shows where it stands"
        )
    return 0


def _wait_for_imports(
    api: Api, namespace: str, name: str, wanted: Mapping[str, int], timeout: float
) -> tuple[dict[str, Any], list[stream_edits.ImportOutcome]]:
    """Poll status until every tag answers its generation, or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        obj = _get_stream(api, namespace, name)
        outcomes = [stream_edits.import_outcome(obj, t, g) for t, g in wanted.items()]
        if all(o.done for o in outcomes) or time.monotonic() >= deadline:
            return obj, outcomes
        time.sleep(0.5)


# --- rollback -------------------------------------------------------------------------------


def _add_rollback(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "rollback",
        parents=[common],
        help="point a tag back at an earlier image from its history",
        description="Writes the earlier image as the tag's source (an ImageStreamImage), so "
        "the history records the rollback and image triggers roll workloads back.",
    )
    p.add_argument("name", metavar="NAME:TAG")
    p.add_argument(
        "--to-revision",
        type=int,
        default=2,
        metavar="N",
        help="the Nth distinct image of the tag's history, 1 = current (default: 2, the previous)",
    )
    p.set_defaults(run=run_rollback)


def run_rollback(args: argparse.Namespace) -> int:
    api = Api(args)
    dest = stream_edits.parse_stream_tag(args.name, api.namespace)

    def attempt() -> stream_edits.Rollback:
        obj = _get_stream(api, dest.namespace, dest.stream)
        result = stream_edits.rollback(obj, dest.tag, args.to_revision)
        api.patch_stream(dest.namespace, dest.stream, stream_edits.spec_patch(obj, result.tags))
        return result

    result = retry_on_conflict(attempt)
    where = dest.display(api.namespace)
    print(f"Rolled back {where} from {result.old} to {result.new}")
    if result.was_tracking:
        print(
            f"note: {where} no longer follows {result.was_tracking}; "
            f"`imagestreams tag {result.was_tracking} {where}` follows it again",
            file=sys.stderr,
        )
    return 0
