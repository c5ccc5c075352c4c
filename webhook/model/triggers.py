"""Image triggers: when an image stream tag moves, roll the workloads that follow it.

A workload opts in with OpenShift's annotation (same format, so manifests carry over):

    image.openshift.io/triggers: '[{"from": {"kind": "ImageStreamTag", "name": "keycloak:20.0"},
        "fieldPath": "spec.template.spec.containers[?(@.name==\\"web\\")].image"}]'

`from.namespace` is optional (default: the workload's); `fieldPath` names a container by
name or by index (`containers[0]`), in `containers` or `initContainers`, under the kind's
pod spec (`spec.template.spec` for Deployments, StatefulSets and DaemonSets,
`spec.jobTemplate.spec.template.spec` for CronJobs); `"paused": true` holds a trigger.

Entry point for the controller
------------------------------
    reconciler = TriggerReconciler.from_api_client(api_client)
    reconciler.stream_changed(after, before)   # right after a status write moved a tag

`after` is the ImageStream dict as written, `before` as it was read (None if unknown).
`stream_changed` lists the Deployments, StatefulSets, DaemonSets and CronJobs in the
stream's namespace that carry the annotation and, for each unpaused trigger that follows a
tag that moved, writes the tag's pinned reference (`streams.pinned_reference`) into the
field with a JSON patch guarded by the workload's resourceVersion (a conflict re-reads and
recomputes). It never raises: an invalid annotation becomes a Warning Event on the
workload, an API failure a log line. `sync_workload` applies one workload's triggers at
once, those on given moved tags or all of them (the CLI uses it after `set triggers`).

Limitation for now: `stream_changed` lists workloads in the stream's own namespace only, so
a trigger that follows a stream in another namespace (`from.namespace`) is applied by
`set triggers` but not on later moves; a watch-fed workload cache in the controller can
lift this by passing the workloads it indexes by followed stream.

Tag moves only
--------------
OpenShift re-applies a trigger whenever the field differs from the tag, so a manual
`kubectl rollout undo` is reverted at once. Here a trigger acts only on the event of its
tag moving: its tag's pinned reference differs between `before` and `after`. A workload
that was rolled back by hand keeps its image until that tag moves again; a move of
another tag (even in the same stream) does not touch it.

Nothing is recorded on the workload to decide this, deliberately: `kubectl rollout undo`
restores a Deployment's annotations from the old ReplicaSet along with its pod template,
so a "last applied" record kept in an annotation would be rolled back too and the
controller would re-apply at once. The moves are known exactly where they happen: in the
controller's own status write. When `before` is not passed, the reconciler compares with
the stream as it last saw it (in memory); a stream seen for the first time counts every
tag as moved.

This module holds the pure rules (parsing, validation, field resolution, the patch);
`webhook.controller.triggers.TriggerReconciler` is the edge that lists, patches and records
events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.model import streams
from webhook.model.streams import ImageStream
from webhook.model.workloads import POD_SPEC_PATHS, WORKLOADS

TRIGGERS_ANNOTATION = "image.openshift.io/triggers"
TRIGGER_KINDS = tuple(k for k, w in WORKLOADS.items() if w.triggers)
_CONTAINER_LISTS = ("containers", "initContainers")
_SELECTOR_RE = re.compile(r"(containers|initContainers)\[(.+?)\]\.image")
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

    def to_json(self) -> dict[str, Any]:
        """The entry as OpenShift writes it (`paused` and `namespace` only when set)."""
        ref: dict[str, Any] = {"kind": streams.IMAGE_STREAM_TAG, "name": self.from_name}
        if self.namespace:
            ref["namespace"] = self.namespace
        entry: dict[str, Any] = {"from": ref, "fieldPath": self.field_path}
        if self.paused:
            entry["paused"] = True
        return entry


def parse_triggers(text: str | None) -> list[Trigger]:
    """The annotation's triggers. Raises InvalidTrigger naming the entry and the problem."""
    if text is None or not text.strip():
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidTrigger(f"{TRIGGERS_ANNOTATION} is not valid JSON: {err}") from None
    if not isinstance(raw, list):
        raise InvalidTrigger(f"{TRIGGERS_ANNOTATION} must be a JSON list of triggers")
    triggers = [_parse_entry(entry, i) for i, entry in enumerate(raw)]
    seen: dict[str, int] = {}
    for i, trigger in enumerate(triggers):
        if trigger.field_path in seen:
            raise InvalidTrigger(
                f"triggers {seen[trigger.field_path]} and {i} both set {trigger.field_path};"
                " duplicate triggers are not allowed"
            )
        seen[trigger.field_path] = i
    return triggers


def _parse_entry(entry: Any, i: int) -> Trigger:
    where = f"trigger {i}"
    if not isinstance(entry, Mapping):
        raise InvalidTrigger(f"{where} must be an object with from and fieldPath")
    source = entry.get("from")
    if not isinstance(source, Mapping):
        raise InvalidTrigger(f"{where}: from is required ({{'kind': 'ImageStreamTag', ...}})")
    kind = source.get("kind")
    if kind != streams.IMAGE_STREAM_TAG:
        raise InvalidTrigger(f"{where}: from.kind must be ImageStreamTag, not {kind!r}")
    name = source.get("name")
    stream, _, tag = name.partition(":") if isinstance(name, str) else ("", "", "")
    if not stream or not tag or ":" in tag or "/" in stream:
        raise InvalidTrigger(f"{where}: from.name must be STREAM:TAG, not {name!r}")
    namespace = source.get("namespace") or ""
    if not isinstance(namespace, str):
        raise InvalidTrigger(f"{where}: from.namespace must be a string")
    field_path = entry.get("fieldPath")
    if not isinstance(field_path, str) or not field_path:
        raise InvalidTrigger(f"{where}: fieldPath is required")
    paused = entry.get("paused", False)
    if not isinstance(paused, bool):
        raise InvalidTrigger(f"{where}: paused must be true or false")
    return Trigger(stream, tag, field_path, namespace, paused)


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
    """The container image that `field_path` names in `obj`. Raises InvalidTrigger."""
    prefix = pod_spec_prefix(kind)
    rest = field_path.removeprefix(prefix + ".")
    match = _SELECTOR_RE.fullmatch(rest) if rest != field_path else None
    if match is None:
        raise InvalidTrigger(
            f"fieldPath {field_path!r} is not valid for a {kind}: use"
            f' {prefix}.containers[?(@.name=="NAME")].image or {prefix}.containers[0].image'
            " (initContainers likewise)"
        )
    list_name, selector = match[1], match[2]
    containers = _containers(obj, kind, list_name)
    index = _select(containers, selector, list_name, field_path)
    container = containers[index]
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
    containers: Sequence[Mapping[str, Any]], selector: str, list_name: str, field_path: str
) -> int:
    if selector.isdigit():
        index = int(selector)
        if index >= len(containers):
            raise InvalidTrigger(
                f"fieldPath {field_path!r}: there is no {list_name}[{index}]"
                f" ({len(containers)} {list_name})"
            )
        return index
    by_name = _BY_NAME_RE.fullmatch(selector)
    if by_name is None:
        raise InvalidTrigger(
            f'fieldPath {field_path!r}: select a container by index or ?(@.name=="NAME")'
        )
    name = by_name[1] if by_name[1] is not None else by_name[2]
    for i, container in enumerate(containers):
        if container.get("name") == name:
            return i
    names = ", ".join(str(c.get("name")) for c in containers) or "none"
    raise InvalidTrigger(f"fieldPath {field_path!r}: no {list_name} named {name!r} ({names})")


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
) -> Plan:
    """The patch that sets each unpaused trigger's field to its tag's pinned reference.

    `lookup(namespace, name)` gives the streams to consider (None: leave those triggers
    alone). With `moved`, only triggers whose (namespace, stream, tag) is in it act: the
    tag-moves-only rule. Problems with single triggers are reported, the others applied.
    """
    result = Plan()
    try:
        triggers = parse_triggers(annotations_of(obj).get(TRIGGERS_ANNOTATION))
    except InvalidTrigger as err:
        result.problems.append(str(err))
        return result
    namespace = str((obj.get("metadata") or {}).get("namespace", ""))
    for i, trigger in enumerate(triggers):
        source_ns = trigger.source_namespace(namespace)
        if trigger.paused:
            continue
        if moved is not None and (source_ns, trigger.stream, trigger.tag) not in moved:
            continue
        stream = lookup(source_ns, trigger.stream)
        pinned = streams.pinned_reference(stream, trigger.tag) if stream is not None else None
        if pinned is None:
            continue  # not our stream, or the tag has no image yet
        try:
            target = resolve_field(obj, kind, trigger.field_path)
        except InvalidTrigger as err:
            result.problems.append(f"trigger {i} ({trigger.from_name}): {err}")
            continue
        if target.image == pinned:
            continue
        result.patch.append({"op": "add", "path": target.pointer, "value": pinned})
        source = trigger.from_name if source_ns == namespace else f"{source_ns}/{trigger.from_name}"
        result.updates.append(
            FieldUpdate(trigger.field_path, target.container, target.image, pinned, source)
        )
    return result


def follows_stream(obj: Mapping[str, Any], namespace: str, name: str) -> bool:
    """Does any trigger of `obj` name the stream `namespace/name`? (False when invalid.)"""
    try:
        triggers = parse_triggers(annotations_of(obj).get(TRIGGERS_ANNOTATION))
    except InvalidTrigger:
        return False
    own = str((obj.get("metadata") or {}).get("namespace", ""))
    return any(t.stream == name and t.source_namespace(own) == namespace for t in triggers)


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
