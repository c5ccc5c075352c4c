"""Image triggers: roll the workloads that follow an image stream tag.

A workload opts in with OpenShift's annotation (same format, so manifests carry over):

    image.openshift.io/triggers: '[{"from": {"kind": "ImageStreamTag", "name": "keycloak:20.0"},
        "fieldPath": "spec.template.spec.containers[?(@.name==\\"web\\")].image"}]'

`from.namespace` is optional (default: the workload's); `fieldPath` names a container by
name or by index (`containers[0]`), in `containers` or `initContainers`, under the kind's
pod spec (`spec.template.spec` for Deployments, StatefulSets and DaemonSets,
`spec.jobTemplate.spec.template.spec` for CronJobs); `"paused": true` holds a trigger.

Reading the annotation (OpenShift's rules, library-go pkg/image/trigger)
------------------------------------------------------------------------
The whole annotation is unusable, and no trigger of the workload applies, when it is not
JSON (the empty string included), not a list, has a field of the wrong JSON type, or two
entries with the same fieldPath. Any other problem with one entry (not an ImageStreamTag,
a name that is not STREAM:TAG, no fieldPath, a path or container that does not exist) skips
that entry only: the others apply, and the controller says which entry and why in a
Warning Event. (OpenShift skips such entries silently, and a path naming no container
stops every trigger of the workload; here only that one.)

When triggers act
-----------------
- Its tag moves: `plan(..., moved=...)` right after the controller's status write moved it
  (`moved_tags` compares the tag's pinned reference before and after).
- The workload is created with the trigger, or the annotation gains or changes it:
  `react()` decides from watch events, against what the controller remembers of the
  workload's annotation (`Followed`). Only new or changed entries apply.

A manual `kubectl rollout undo` (or `set image`) is not reverted: OpenShift re-applies a
trigger whenever the field differs from the tag; here a trigger acts on the events above
only, so a workload rolled back by hand keeps its image until its tag moves again.
Nothing is recorded on the workload to decide this, deliberately: `kubectl rollout undo`
restores a Deployment's annotations from the old ReplicaSet along with its pod template,
so a "last applied" record kept in an annotation would be rolled back too and the
controller would re-apply at once. Moves are known where they happen (the controller's
own status write), and annotation changes from the watch; an undo that leaves the
annotation as it was changes nothing a trigger reacts to.

This module holds the pure rules (parsing, field resolution, the patch, the reaction to a
workload event); `webhook.controller.triggers.TriggerReconciler` is the edge that watches,
reads, patches and records Events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from webhook.model import streams
from webhook.model.streams import ImageStream
from webhook.model.workloads import POD_SPEC_PATHS, WORKLOADS

TRIGGERS_ANNOTATION = "image.openshift.io/triggers"
TRIGGER_KINDS = tuple(k for k, w in WORKLOADS.items() if w.triggers)
_CONTAINER_LISTS = ("containers", "initContainers")
# A selector runs up to the first `]`; the dot before `image` is optional (as OpenShift reads it).
_SELECTOR_RE = re.compile(r"(containers|initContainers)\[([^\]]*)\]\.?image")
_INDEX_RE = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi takes
_BY_NAME_RE = re.compile(r"""\?\(@\.name\s*==\s*(?:"([^"]*)"|'([^']*)')\)""")

StreamLookup = Callable[[str, str], ImageStream | None]


class InvalidTrigger(ValueError):
    """The annotation (or one trigger in it) cannot be used; the message says why."""


# --- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    """One entry of the annotation."""

    stream: str
    tag: str
    field_path: str
    namespace: str = ""  # the stream's namespace; "" = the workload's
    paused: bool = False

    @property
    def from_name(self) -> str:
        return f"{self.stream}:{self.tag}"

    def source_namespace(self, workload_namespace: str) -> str:
        return self.namespace or workload_namespace

    def spelt_out(self, workload_namespace: str) -> Trigger:
        """The same trigger with the stream's namespace written out: how triggers of one
        workload compare, whether or not `from.namespace` names its own namespace."""
        return replace(self, namespace=self.source_namespace(workload_namespace))

    def to_json(self) -> dict[str, Any]:
        """The entry as OpenShift writes it (`paused` and `namespace` only when set)."""
        ref: dict[str, Any] = {"kind": streams.IMAGE_STREAM_TAG, "name": self.from_name}
        if self.namespace:
            ref["namespace"] = self.namespace
        entry: dict[str, Any] = {"from": ref, "fieldPath": self.field_path}
        if self.paused:
            entry["paused"] = True
        return entry


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry of the annotation that cannot be used, and why; the others still apply."""

    position: int  # its index in the annotation's list
    reason: str

    def __str__(self) -> str:
        return f"{TRIGGERS_ANNOTATION}[{self.position}]: {self.reason}"


@dataclass(frozen=True, slots=True)
class Annotation:
    """The annotation as read: the usable triggers, in order, and the entries skipped."""

    triggers: tuple[Trigger, ...] = ()
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True, slots=True)
class _Entry:
    """One entry with each field of its JSON type (Go's zero value when absent or null)."""

    kind: str
    name: str
    namespace: str
    api_version: str
    field_path: str
    paused: bool


def parse_annotation(text: str | None) -> Annotation:
    """The annotation's triggers, as OpenShift reads it (see the module docstring).

    Raises InvalidTrigger when the whole annotation is unusable; an entry that is only
    wrong in what it says is skipped (`Annotation.skipped`). `null` and no annotation
    mean no triggers.
    """
    if text is None:
        return Annotation()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidTrigger(f"{TRIGGERS_ANNOTATION} is not valid JSON: {err}") from None
    if raw is None:
        return Annotation()
    if not isinstance(raw, list):
        raise InvalidTrigger(f"{TRIGGERS_ANNOTATION} must be a JSON list of triggers")
    entries = [_typed_entry(entry, i) for i, entry in enumerate(raw)]
    # As OpenShift: the same fieldPath twice (two entries without one included) makes it
    # ambiguous which trigger owns the field, so none applies.
    first: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if entry.field_path in first:
            path = repr(entry.field_path) if entry.field_path else "no fieldPath"
            raise InvalidTrigger(
                f"{TRIGGERS_ANNOTATION}[{first[entry.field_path]}] and [{i}] both have"
                f" {path}: duplicate triggers are not allowed"
            )
        first[entry.field_path] = i
    triggers: list[Trigger] = []
    skipped: list[Skipped] = []
    for i, entry in enumerate(entries):
        try:
            triggers.append(_trigger(entry))
        except InvalidTrigger as err:
            skipped.append(Skipped(i, str(err)))
    return Annotation(tuple(triggers), tuple(skipped))


def _typed_entry(raw: Any, i: int) -> _Entry:
    """The entry's fields; a field of the wrong JSON type makes the whole annotation
    unusable (Go's json.Unmarshal fails on it). Unknown fields are ignored."""
    where = f"{TRIGGERS_ANNOTATION}[{i}]"
    entry = {} if raw is None else raw
    if not isinstance(entry, Mapping):
        raise InvalidTrigger(f"{where} must be an object with from and fieldPath")
    source = entry.get("from")
    source = {} if source is None else source
    if not isinstance(source, Mapping):
        raise InvalidTrigger(f"{where}: from must be an object")

    def string(fields: Mapping[str, Any], key: str, label: str) -> str:
        value = fields.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise InvalidTrigger(f"{where}: {label} must be a string")
        return value

    paused = entry.get("paused")
    if paused is not None and not isinstance(paused, bool):
        raise InvalidTrigger(f"{where}: paused must be true or false")
    return _Entry(
        kind=string(source, "kind", "from.kind"),
        name=string(source, "name", "from.name"),
        namespace=string(source, "namespace", "from.namespace"),
        api_version=string(source, "apiVersion", "from.apiVersion"),
        field_path=string(entry, "fieldPath", "fieldPath"),
        paused=bool(paused),
    )


def _trigger(entry: _Entry) -> Trigger:
    """The trigger an entry describes; InvalidTrigger says why it is skipped."""
    if entry.kind != streams.IMAGE_STREAM_TAG:
        raise InvalidTrigger(f"from.kind must be ImageStreamTag, not {entry.kind!r}")
    if entry.api_version:
        # OpenShift's trigger controller never follows such an entry either.
        raise InvalidTrigger(f"from.apiVersion must not be set ({entry.api_version!r})")
    stream, colon, tag = entry.name.partition(":")
    if not colon or not stream or "/" in stream or ":" in tag:
        raise InvalidTrigger(
            f"from.name must be STREAM:TAG (the namespace goes in from.namespace),"
            f" not {entry.name!r}"
        )
    if not entry.field_path:
        raise InvalidTrigger("fieldPath is required")
    # `stream:` means the tag latest, as OpenShift reads it.
    return Trigger(stream, tag or "latest", entry.field_path, entry.namespace, entry.paused)


def parse_triggers(text: str | None) -> list[Trigger]:
    """The annotation's triggers, all of them usable, for editing it (`set triggers`):
    raises InvalidTrigger naming the first problem, a skipped entry included, so that a
    rewrite never drops an entry the user wrote."""
    annotation = parse_annotation(text)
    if annotation.skipped:
        raise InvalidTrigger(str(annotation.skipped[0]))
    return list(annotation.triggers)


def triggers_json(triggers: Iterable[Trigger]) -> str:
    """The annotation value, compact as Go's json.Marshal writes it."""
    return json.dumps([t.to_json() for t in triggers], separators=(",", ":"))


# --- field paths ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerField:
    """The container image a fieldPath names, found in an object."""

    pointer: str  # JSON pointer of the image field
    list_name: str
    index: int
    container: str  # its name
    image: str  # its current value


def pod_spec_prefix(kind: str) -> str:
    """`spec.template.spec` etc.: where a fieldPath of this kind must start."""
    if kind not in TRIGGER_KINDS:
        raise InvalidTrigger(f"{kind} does not support image triggers")
    return ".".join(POD_SPEC_PATHS[kind])


def field_path_for(kind: str, container: str, list_name: str = "containers") -> str:
    """The fieldPath `oc set triggers` writes for a container, by name."""
    return f'{pod_spec_prefix(kind)}.{list_name}[?(@.name=="{container}")].image'


def resolve_field(obj: Mapping[str, Any], kind: str, field_path: str) -> ContainerField:
    """The container image that `field_path` names in `obj`. Raises InvalidTrigger.

    As OpenShift reads a path: `containers[N]` or `containers[+N]` by index in the list
    named; `containers[?(@.name=="NAME")]` by name in either list (names are unique across
    a pod's containers and init containers), so the field is wherever that container is.
    """
    prefix = pod_spec_prefix(kind)
    rest = field_path.removeprefix(prefix + ".")
    match = _SELECTOR_RE.fullmatch(rest) if rest != field_path else None
    if match is None:
        raise InvalidTrigger(
            f"fieldPath {field_path!r} is not valid for a {kind}: use"
            f' {prefix}.containers[?(@.name=="NAME")].image or {prefix}.containers[0].image'
            " (initContainers likewise)"
        )
    list_name, index = _select(obj, kind, match[1], match[2], field_path)
    container = _containers(obj, kind, list_name)[index]
    base = "/" + "/".join(POD_SPEC_PATHS[kind])
    return ContainerField(
        pointer=f"{base}/{list_name}/{index}/image",
        list_name=list_name,
        index=index,
        container=str(container.get("name", index)),
        image=str(container.get("image") or ""),
    )


def _containers(obj: Mapping[str, Any], kind: str, list_name: str) -> list[Mapping[str, Any]]:
    spec: Any = obj
    for key in POD_SPEC_PATHS[kind]:
        spec = spec.get(key) if isinstance(spec, Mapping) else None
    found = spec.get(list_name) if isinstance(spec, Mapping) else None
    if not isinstance(found, list):
        return []
    return [c if isinstance(c, Mapping) else {} for c in found]


def _select(
    obj: Mapping[str, Any], kind: str, list_name: str, selector: str, field_path: str
) -> tuple[str, int]:
    """(list, index) of the container `selector` picks."""
    if _INDEX_RE.fullmatch(selector):
        index = int(selector)
        count = len(_containers(obj, kind, list_name))
        if not 0 <= index < count:
            raise InvalidTrigger(
                f"fieldPath {field_path!r}: there is no {list_name}[{index}] ({count} {list_name})"
            )
        return list_name, index
    by_name = _BY_NAME_RE.fullmatch(selector)
    if by_name is None:
        raise InvalidTrigger(
            f'fieldPath {field_path!r}: select a container by index or ?(@.name=="NAME")'
        )
    name = by_name[1] if by_name[1] is not None else by_name[2]
    # The list the path names first, then the other (OpenShift looks in both).
    for where in sorted(_CONTAINER_LISTS, key=lambda lst: lst != list_name):
        for i, container in enumerate(_containers(obj, kind, where)):
            if container.get("name") == name:
                return where, i
    names = ", ".join(container_names(obj, kind)) or "none"
    raise InvalidTrigger(f"fieldPath {field_path!r}: no container named {name!r} ({names})")


def container_names(obj: Mapping[str, Any], kind: str) -> dict[str, str]:
    """container name → the list it is in (containers win over initContainers)."""
    names: dict[str, str] = {}
    for list_name in reversed(_CONTAINER_LISTS):
        for container in _containers(obj, kind, list_name):
            if isinstance(container.get("name"), str):
                names[container["name"]] = list_name
    return names


# --- the rule: what to write when a stream changes ------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldUpdate:
    field_path: str
    container: str
    old: str
    new: str
    source: str  # `stream:tag` (or `ns/stream:tag`)


@dataclass(slots=True)
class Plan:
    """What to write to one workload: a JSON patch (empty: nothing), and why."""

    patch: list[dict[str, Any]] = field(default_factory=list)
    updates: list[FieldUpdate] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def moved_tags(after: ImageStream, before: ImageStream | None) -> set[str]:
    """Tags whose pinned reference differs between two versions of a stream (all tags
    with an image when `before` is unknown)."""
    tags = {t.name for t in after.spec_tags} | {h.tag for h in after.status_tags}
    now = {tag: streams.pinned_reference(after, tag) for tag in tags}
    if before is None:
        return {tag for tag, pinned in now.items() if pinned is not None}
    return {
        tag
        for tag, pinned in now.items()
        if pinned is not None and pinned != streams.pinned_reference(before, tag)
    }


def plan(
    obj: Mapping[str, Any],
    kind: str,
    lookup: StreamLookup,
    moved: Container[tuple[str, str, str]] | None = None,
    *,
    only: Container[Trigger] | None = None,
) -> Plan:
    """The patch that sets each unpaused trigger's field to its tag's pinned reference.

    `lookup(namespace, name)` gives the streams to consider (None: leave those triggers
    alone; InvalidTrigger: refuse that stream, which is reported). With `moved`, only
    triggers whose (namespace, stream, tag) is in it act: a tag move. With `only`, only
    those triggers (spelt out, `Trigger.spelt_out`) act: the new entries of an annotation.
    A skipped entry or a field that cannot be found is a problem reported for that
    trigger; the others apply.
    """
    result = Plan()
    try:
        annotation = parse_annotation(annotations_of(obj).get(TRIGGERS_ANNOTATION))
    except InvalidTrigger as err:
        result.problems.append(str(err))
        return result
    result.problems += [
        f"{s}; that trigger is skipped, the others apply" for s in annotation.skipped
    ]
    namespace = str((obj.get("metadata") or {}).get("namespace", ""))
    for trigger in annotation.triggers:
        source_ns = trigger.source_namespace(namespace)
        source = trigger.from_name if source_ns == namespace else f"{source_ns}/{trigger.from_name}"
        if trigger.paused:
            continue
        if moved is not None and (source_ns, trigger.stream, trigger.tag) not in moved:
            continue
        if only is not None and trigger.spelt_out(namespace) not in only:
            continue
        try:
            stream = lookup(source_ns, trigger.stream)
            pinned = streams.pinned_reference(stream, trigger.tag) if stream is not None else None
            if pinned is None:
                continue  # not our stream, or the tag has no image yet
            target = resolve_field(obj, kind, trigger.field_path)
        except InvalidTrigger as err:
            result.problems.append(f"trigger from {source}: {err}")
            continue
        if target.image == pinned:
            continue
        result.patch.append({"op": "add", "path": target.pointer, "value": pinned})
        result.updates.append(
            FieldUpdate(trigger.field_path, target.container, target.image, pinned, source)
        )
    return result


# --- the rule: what a workload event changes ------------------------------------------------

# "listed": in the controller's first list; "added": new while it watches; "modified": a
# later version of a workload it has seen.
WorkloadEvent = Literal["listed", "added", "modified"]


@dataclass(frozen=True, slots=True)
class Followed:
    """What the controller remembers of one workload's annotation between watch events."""

    triggers: tuple[Trigger, ...] = ()  # the unpaused triggers, namespaces spelt out
    problems: tuple[str, ...] = ()  # what is wrong with it (reported when it appeared)


@dataclass(frozen=True, slots=True)
class Reaction:
    """The answer to one watch event on a workload."""

    remember: Followed | None  # None: nothing to remember (no triggers, no problems)
    apply: tuple[Trigger, ...] = ()  # apply these now (spelt out)
    report: bool = False  # the annotation has new problems: read the workload, report them


def react(old: Followed | None, text: str | None, namespace: str, event: WorkloadEvent) -> Reaction:
    """How the controller answers a watch event on a workload in `namespace` whose trigger
    annotation is now `text`, having remembered `old` of it.

    A new workload ("added") applies all its unpaused triggers, as OpenShift does on
    create; an edit ("modified") applies the entries that are new or changed (a resumed
    one included), and nothing when the annotation is as it was: a `kubectl rollout undo`
    that copies the same annotation back is not reverted. A workload found when the
    controller starts ("listed") is remembered only: its image may have been rolled back by
    hand while the controller was away (see `listed_event`). An annotation that became
    unusable keeps the triggers remembered (as OpenShift's cache does), so fixing it
    applies only what the fix changed.
    """
    if text is None:
        return Reaction(None)
    before = old if old is not None and event == "modified" else Followed()
    try:
        annotation = parse_annotation(text)
    except InvalidTrigger as err:
        broken = Followed(before.triggers, (str(err),))
        return Reaction(broken, report=event != "listed" and broken.problems != before.problems)
    triggers = tuple(t.spelt_out(namespace) for t in annotation.triggers if not t.paused)
    problems = tuple(str(s) for s in annotation.skipped)
    remember = Followed(triggers, problems) if triggers or problems else None
    if event == "listed":
        return Reaction(remember)
    apply = tuple(t for t in triggers if t not in before.triggers)
    return Reaction(remember, apply, report=bool(problems) and problems != before.problems)


def listed_event(generation: Any) -> WorkloadEvent:
    """The event for a workload in the controller's first list. At generation 1 its spec has
    not changed since it was created, so nothing (a rollback included) could be undone by
    applying its triggers: it was created while the controller was away (say, installed
    together with it) and counts as "added". Any other is "listed"."""
    return "added" if generation == 1 else "listed"


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


# --- oc set triggers: editing the annotation ------------------------------------------------


def current_triggers(obj: Mapping[str, Any]) -> list[Trigger]:
    return parse_triggers(annotations_of(obj).get(TRIGGERS_ANNOTATION))


def set_image_trigger(
    obj: Mapping[str, Any],
    kind: str,
    stream_tag: str,
    namespace: str,
    containers: Sequence[str],
    *,
    auto: bool = True,
) -> list[Trigger]:
    """Triggers after `oc set triggers KIND/NAME --from-image stream:tag -c NAME[,NAME]`.

    `namespace` is the stream's ("" = the workload's). Without containers the only
    container is meant; several containers give one trigger each. A container already
    triggered by another tag is an error (one trigger per field).
    """
    stream, _, tag = stream_tag.partition(":")
    own = str((obj.get("metadata") or {}).get("namespace", ""))
    ns = "" if namespace == own else namespace
    names = container_names(obj, kind)
    chosen = _choose_containers(list(containers), names)
    existing = current_triggers(obj)
    new = [
        Trigger(stream, tag, field_path_for(kind, name, names[name]), ns, paused=not auto)
        for name in chosen
    ]
    paths = {t.field_path for t in new}
    kept = []
    for trigger in existing:
        if trigger.field_path not in paths:
            kept.append(trigger)
            continue
        if (trigger.stream, trigger.tag, trigger.namespace) != (stream, tag, ns):
            container = next(
                n for n in chosen if field_path_for(kind, n, names[n]) == trigger.field_path
            )
            raise InvalidTrigger(
                f"only one trigger may reference each container: {container} already follows"
                f" {trigger.from_name}; remove that trigger first (--remove --from-image"
                f" {trigger.from_name})"
            )
    return kept + new


def _choose_containers(requested: list[str], names: Mapping[str, str]) -> list[str]:
    if not requested:
        regular = [n for n, where in names.items() if where == "containers"]
        if len(regular) != 1:
            raise InvalidTrigger("you must specify --containers when setting --from-image")
        return regular
    missing = sorted(set(requested) - set(names))
    if missing:
        raise InvalidTrigger(
            f"not all container names exist: {', '.join(missing)}"
            f" (accepts: {', '.join(sorted(names))})"
        )
    return list(dict.fromkeys(requested))


def remove_image_trigger(
    triggers: Sequence[Trigger], stream_tag: str, namespace: str, own_namespace: str
) -> list[Trigger]:
    """Triggers without those following `stream_tag` (oc set triggers --remove)."""
    ns = "" if namespace == own_namespace else namespace
    return [t for t in triggers if (t.from_name, t.namespace) != (stream_tag, ns)]


def reset_triggers(triggers: Sequence[Trigger], auto: bool) -> list[Trigger]:
    """Every trigger automatic (`--auto`) or paused (`--manual`)."""
    return [replace(t, paused=not auto) for t in triggers]


def annotation_patch(obj: Mapping[str, Any], triggers: Sequence[Trigger]) -> dict[str, Any]:
    """A merge patch writing the triggers annotation (removing it when empty), guarded by
    the resourceVersion `obj` was read at."""
    value = triggers_json(triggers) if triggers else None
    metadata = obj.get("metadata") or {}
    return {
        "metadata": {
            "resourceVersion": str(metadata.get("resourceVersion", "")),
            "annotations": {TRIGGERS_ANNOTATION: value},
        }
    }


def trigger_rows(obj: Mapping[str, Any], kind: str, resource: str) -> list[tuple[str, ...]]:
    """oc set triggers' table rows (NAME TYPE VALUE AUTO) for one workload."""
    metadata = obj.get("metadata") or {}
    name = f"{resource}/{metadata.get('name', '')}"
    paused = bool((obj.get("spec") or {}).get("paused")) if kind == "Deployment" else False
    rows: list[tuple[str, ...]] = [(name, "config", "", _bool(not paused))]
    try:
        triggers = current_triggers(obj)
    except InvalidTrigger:
        return [*rows, (name, "<error>", "", "false")]
    own = str(metadata.get("namespace", ""))
    for trigger in triggers:
        try:
            container = resolve_field(obj, kind, trigger.field_path).container
        except InvalidTrigger:
            continue  # oc leaves out triggers whose field it cannot find
        value = trigger.from_name
        if trigger.namespace and trigger.namespace != own:
            value = f"{trigger.namespace}/{value}"
        rows.append((name, "image", f"{value} ({container})", _bool(not trigger.paused)))
    return rows


def _bool(value: bool) -> str:
    return "true" if value else "false"
