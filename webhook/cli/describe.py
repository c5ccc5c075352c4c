"""`describe is NAME`: the `oc describe imagestream` layout, from a stream dict and a clock.

The text is what `oc` prints, byte for byte where the data allows: oc renders through Go's
text/tabwriter with tab padding (so the output holds real tab characters; see `tabwriter`),
prints ages with docker/go-units' HumanDuration, and orders tags with library-go's
PrioritizeTags. Those are re-implemented in small pure functions so the layout can be
snapshot-tested.

One deliberate difference: `kubectl.kubernetes.io/last-applied-configuration` is left out of
the annotations (kubectl's own describe does the same; it is a copy of the whole object).
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.cli.tabwriter import tabwrite
from webhook.model import reference, streams
from webhook.model.streams import ImageStream, TagHistory, TagReference

NONE = "<none>"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def describe_stream(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    """The full `describe is` text for an ImageStream object."""
    stream = streams.parse_image_stream(obj)
    metadata = obj.get("metadata") or {}
    out: list[str] = []
    out.append(f"Name:\t{stream.name}")
    if stream.namespace:
        out.append(f"Namespace:\t{stream.namespace}")
    created = parse_time(metadata.get("creationTimestamp"))
    if created is not None:
        out.append(f"Created:\t{human_duration(now - created)} ago")
    out.extend(_map_lines("Labels", metadata.get("labels") or {}))
    annotations = dict(metadata.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    description = annotations.pop("description", "")
    if description:
        out.append(f"Description:\t{description}")
    out.extend(_map_lines("Annotations", annotations))
    repository = stream.public_repository or stream.status_repository
    out.append(f"Image Repository:\t{repository or NONE}")
    out.append(f"Image Lookup:\tlocal={'true' if stream.lookup_local else 'false'}")
    out.extend(_tag_lines(stream, now))
    return tabwrite("\n".join(out) + "\n")


# --- tags ----------------------------------------------------------------------------------


def _tag_lines(stream: ImageStream, now: datetime.datetime) -> list[str]:
    if not stream.spec_tags and not stream.status_tags:
        return ["Tags:\t<none>"]
    names = [h.tag for h in stream.status_tags]
    names += [t.name for t in stream.spec_tags if stream.history(t.name) is None]
    aliases = alias_groups(stream)
    hidden = {alias for group in aliases.values() for alias in group}
    out = [f"Unique Images:\t{_unique_images(stream)}", f"Tags:\t{len(names)}", ""]
    first = True
    for tag in prioritize_tags(names):
        if tag in hidden:
            continue
        if not first:
            out.append("")
        first = False
        out.extend(_one_tag(stream, tag, aliases.get(tag, []), now))
    return out


def _one_tag(
    stream: ImageStream, tag: str, aliases: Sequence[str], now: datetime.datetime
) -> list[str]:
    spec = stream.spec_tag(tag)
    history = stream.history(tag) or TagHistory(tag=tag)
    header = f"{tag} ({', '.join(prioritize_tags(aliases))})" if aliases else tag
    out = [header, *_source_lines(stream, spec), ""]
    out.extend(_spec_annotation_lines(spec))
    if spec is not None and _importing(stream, spec, history):
        out.append("  ~ importing latest image ...")
    for condition in history.conditions:
        if condition.type == streams.IMPORT_SUCCESS and condition.status == "False":
            out.append(f"  ! error: Import failed ({condition.reason}): {condition.message}")
            since = parse_time(condition.last_transition_time)
            if since is not None:
                out.append(f"      {human_duration(now - since)} ago")
    for i, event in enumerate(history.items):
        marker = "  * " if i == 0 else "    "
        out.append(f"{marker}{event.docker_image_reference}")
        age = _age(now, event.created)
        # oc adds the image ID only when the reference does not already pin it.
        if event.image and _reference_digest(event.docker_image_reference) != event.image:
            out.append(f"      {age} ago\t{event.image}")
        else:
            out.append(f"      {age} ago")
    return out


def _source_lines(stream: ImageStream, spec: TagReference | None) -> list[str]:
    if spec is None:
        return ["  no spec tag"]
    source = spec.source
    if source is None:
        return ["  tag without source image"]
    name = source.name
    if source.namespace and source.namespace != stream.namespace:
        name = f"{source.namespace}/{source.name}"
    out = [f"  {_source_phrase(source.kind, name, spec)}"]
    if spec.insecure:
        out.append("    will use insecure HTTPS or HTTP connections")
    if spec.reference_policy == streams.LOCAL_POLICY:
        out.append("    prefer registry pullthrough when referencing this tag")
    return out


def _source_phrase(kind: str, name: str, spec: TagReference) -> str:
    if kind == streams.IMAGE_STREAM_TAG:
        if spec.reference:
            return f"reference to {name}"
        return f"updates automatically from {name}" if spec.scheduled else f"tagged from {name}"
    if kind == streams.DOCKER_IMAGE:
        if spec.reference:
            return f"reference to registry {name}"
        if spec.scheduled:
            return f"updates automatically from registry {name}"
        return f"tagged from {name}"
    if kind == streams.IMAGE_STREAM_IMAGE:
        return f"reference to image {name}" if spec.reference else f"tagged from {name}"
    return f"reference to {kind} {name}" if spec.reference else f"updates from {kind} {name}"


def _spec_annotation_lines(spec: TagReference | None) -> list[str]:
    """The sample-stream annotations oc shows under a tag (description, tags, …)."""
    if spec is None:
        return []
    notes = spec.annotations
    out = []
    if notes.get("description"):
        out.append(f"  {notes['description']}")
    if notes.get("tags"):
        out.append(f"  Tags: {', '.join(notes['tags'].split(','))}")
    if notes.get("supports"):
        out.append(f"  Supports: {', '.join(notes['supports'].split(','))}")
    if notes.get("sampleRepo"):
        out.append(f"  Example Repo: {notes['sampleRepo']}")
    return [*out, ""] if out else []


def _importing(stream: ImageStream, spec: TagReference, history: TagHistory) -> bool:
    """The spec asks for more than status has answered (oc: generation > observed)."""
    if spec.reference or spec.source is None or streams.alias_target(stream, spec) is not None:
        return False
    observed = streams.seen_generation(history) or 0
    return streams.tag_generation(stream, spec) > observed


def _unique_images(stream: ImageStream) -> int:
    images = {
        item.image or item.docker_image_reference
        for history in stream.status_tags
        for item in history.items
        if item.image or item.docker_image_reference
    }
    return len(images)


def alias_groups(stream: ImageStream) -> dict[str, list[str]]:
    """target tag → the spec tags that track it within this stream (through any chain).

    Like oc's FollowTagReference: a chain that loops, leaves the stream or ends at a tag
    that is not in spec makes no alias.
    """
    groups: dict[str, list[str]] = {}
    for spec in stream.spec_tags:
        target = _follow(stream, spec.name)
        if target is not None and target != spec.name:
            groups.setdefault(target, []).append(spec.name)
    return groups


def _follow(stream: ImageStream, tag: str) -> str | None:
    seen: set[str] = set()
    while tag not in seen:
        seen.add(tag)
        spec = stream.spec_tag(tag)
        if spec is None:
            return None
        if spec.source is None or spec.source.kind != streams.IMAGE_STREAM_TAG:
            return tag
        target = streams.alias_target(stream, spec)
        if target is None:
            return None  # a reference into another stream: not an alias
        tag = target
    return None


def _reference_digest(ref: str) -> str | None:
    try:
        return reference.parse(ref).digest
    except reference.InvalidReference:
        return None


def _age(now: datetime.datetime, created: str) -> str:
    when = parse_time(created)
    return human_duration(now - when) if when is not None else "<unknown>"


def _map_lines(label: str, items: Mapping[str, Any]) -> list[str]:
    if not items:
        return [f"{label}:\t{NONE}"]
    keys = sorted(items)
    first, *rest = keys
    return [f"{label}:\t{first}={items[first]}", *(f"\t{k}={items[k]}" for k in rest)]


def parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


# --- go-units HumanDuration -------------------------------------------------------------------


def human_duration(delta: datetime.timedelta) -> str:
    """docker/go-units HumanDuration: "2 minutes", "About an hour", "3 days"."""
    total = delta.total_seconds()
    seconds = int(total)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(total / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(total / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(total / 3600) // 24 // 365} years"


# --- library-go PrioritizeTags ---------------------------------------------------------------

_NUMERIC = re.compile(r"[0-9]+")
_IDENTIFIER = re.compile(r"[0-9A-Za-z-]+")
_MINOR = re.compile(r"[0-9]+\.[0-9]+")
_MINOR_WITH_PATCH = re.compile(r"([0-9]+\.[0-9]+)-\w+")
_LATEST, _MINOR_PRIORITY, _FULL, _OTHER = range(4)


@dataclass(frozen=True, slots=True)
class SemVer:
    """A blang/semver version: MAJOR.MINOR.PATCH[-pre][+build] (build is ignored)."""

    major: int
    minor: int
    patch: int
    pre: tuple[int | str, ...] = ()


def parse_semver(text: str) -> SemVer | None:
    """Strict semantic version as blang/semver parses it, or None."""
    parts = text.split(".", 2)
    if len(parts) != 3:
        return None
    major, minor, rest = parts
    core, plus, build = rest.partition("+")
    if plus and not all(_IDENTIFIER.fullmatch(b) for b in build.split(".")):
        return None
    patch, has_pre, pre_text = core.partition("-")
    numbers = [major, minor, patch]
    if not all(_NUMERIC.fullmatch(n) and not (len(n) > 1 and n[0] == "0") for n in numbers):
        return None
    pre: list[int | str] = []
    if has_pre:
        for ident in pre_text.split("."):
            if not _IDENTIFIER.fullmatch(ident):
                return None
            if _NUMERIC.fullmatch(ident):
                if len(ident) > 1 and ident[0] == "0":
                    return None
                pre.append(int(ident))
            else:
                pre.append(ident)
    return SemVer(int(major), int(minor), int(patch), tuple(pre))


def compare_semver(a: SemVer, b: SemVer) -> int:
    for x, y in ((a.major, b.major), (a.minor, b.minor), (a.patch, b.patch)):
        if x != y:
            return 1 if x > y else -1
    if not a.pre or not b.pre:
        return (len(b.pre) > 0) - (len(a.pre) > 0)  # a release outranks its pre-releases
    for p, q in zip(a.pre, b.pre, strict=False):
        if p == q:
            continue
        if isinstance(p, int) and isinstance(q, int):
            return 1 if p > q else -1
        if isinstance(p, int) or isinstance(q, int):
            return -1 if isinstance(p, int) else 1  # numeric identifiers sort first
        return 1 if str(p) > str(q) else -1
    return (len(a.pre) > len(b.pre)) - (len(a.pre) < len(b.pre))


@dataclass(frozen=True, slots=True)
class _Prioritized:
    tag: str
    priority: int
    version: SemVer | None = None
    prefix: str = ""


def _prioritize(tag: str) -> _Prioritized:
    if tag == "latest":
        return _Prioritized(tag, _LATEST)
    prefix, short = ("v", tag[1:]) if tag.startswith("v") else ("", tag)
    version = parse_semver(short)
    if version is not None:
        return _Prioritized(tag, _FULL, version, prefix)
    if _MINOR.fullmatch(short):
        version = parse_semver(short + ".0")
        if version is not None:
            return _Prioritized(tag, _MINOR_PRIORITY, version, prefix)
    match = _MINOR_WITH_PATCH.fullmatch(short)
    if match:
        version = parse_semver(short.replace(match[1], match[1] + ".0", 1))
        if version is not None:
            return _Prioritized(tag, _MINOR_PRIORITY, version, prefix)
    return _Prioritized(tag, _OTHER, None, prefix)


def _compare(a: _Prioritized, b: _Prioritized) -> int:
    if a.priority != b.priority:
        return -1 if a.priority < b.priority else 1
    if a.priority == _OTHER or a.version is None or b.version is None:
        return (a.tag > b.tag) - (a.tag < b.tag)
    newer = compare_semver(a.version, b.version)
    if newer:
        return -newer  # newer versions first
    return (a.prefix > b.prefix) - (a.prefix < b.prefix)


def prioritize_tags(tags: Sequence[str]) -> list[str]:
    """`latest`, then minor versions newest first, then full versions, then the rest A→Z."""
    ranked = sorted((_prioritize(t) for t in tags), key=functools.cmp_to_key(_compare))
    return [p.tag for p in ranked]
