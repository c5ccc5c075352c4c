"""Reference policy `Local`, pure: what a stream's status says about its local copies.

- A finished copy is recorded as a tag condition, OpenShift's TagEventCondition with a type of
  our own: `{type: Mirrored, status: "True", reason: Mirrored, message: "mirrored to
  <repository>@<digest>", generation}`; a failed one as `status: "False"` with the registry
  error's reason (NotFound, Unauthorized, Forbidden, InternalError) and message, retried with
  backoff. `record_mirror` writes it only while the tag's current image is still that digest;
  `streams.record_event` drops every condition when the tag moves, so a `Mirrored=True`
  condition always speaks of `items[0]`.
- `streams.is_mirrored(history)` (with `status.dockerImageRepository` set) is what resolution
  (`streams.pinned_reference`) checks: a `Local` tag resolves to the local repository only
  when it holds; until then to the source reference (admission warns). `mirror_jobs` lists
  the tags it does not hold for yet.
- Garbage: `prune_plan(old status tags, new status tags, history_limit)` lists the images that
  left the stream's history (trimmed past the limit, a tag removed, the stream deleted), for
  `copier.Mirrorer.delete`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.model import streams
from webhook.model.reference import InvalidReference, is_valid_digest, parse_normalized
from webhook.model.streams import MIRRORED, is_mirrored

DEFAULT_HISTORY_LIMIT = 10


def _items(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = entry.get("items") or []
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def referenced_images(
    status_tags: Iterable[Mapping[str, Any]], history_limit: int | None = None
) -> list[str]:
    """Image digests in the tags' histories (the newest `history_limit` items of each),
    each once, in order."""
    found: dict[str, None] = {}
    for entry in status_tags:
        items = _items(entry)
        for item in items if history_limit is None else items[:history_limit]:
            image = item.get("image")
            if isinstance(image, str) and is_valid_digest(image):
                found.setdefault(image)
    return list(found)


def trim_history(
    status_tags: Iterable[Mapping[str, Any]], history_limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Status tags with at most `history_limit` items each; and whether any was cut."""
    result: list[dict[str, Any]] = []
    changed = False
    for entry in status_tags:
        copy = dict(entry)
        items = entry.get("items")
        if isinstance(items, list) and len(items) > max(1, history_limit):
            copy["items"] = items[: max(1, history_limit)]
            changed = True
        result.append(copy)
    return result, changed


def prune_plan(
    old_tags: Iterable[Mapping[str, Any]],
    new_tags: Iterable[Mapping[str, Any]] | None,
    history_limit: int = DEFAULT_HISTORY_LIMIT,
) -> list[str]:
    """Manifests to delete from the stream's local repository after status went from
    `old_tags` to `new_tags` (None: the stream was deleted): images the old status named
    that the new one, cut to `history_limit` items a tag, names nowhere. A digest another
    tag of the stream still holds is kept."""
    keep = set(referenced_images(new_tags or [], max(1, history_limit)))
    return [digest for digest in referenced_images(old_tags) if digest not in keep]


def _conditions(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    conditions = entry.get("conditions") or []
    return [c for c in conditions if isinstance(c, Mapping)] if isinstance(conditions, list) else []


def mirrored_message(repository: str, digest: str) -> str:
    return f"mirrored to {repository}@{digest}"


def mirrored_condition(
    repository: str, digest: str, generation: int, when: str | None = None
) -> dict[str, Any]:
    return {
        "type": MIRRORED,
        "status": "True",
        "lastTransitionTime": when or _now(),
        "reason": MIRRORED,
        "message": mirrored_message(repository, digest),
        "generation": generation,
    }


def mirror_failure_condition(
    reason: str, message: str, digest: str, generation: int, when: str | None = None
) -> dict[str, Any]:
    return {
        "type": MIRRORED,
        "status": "False",
        "lastTransitionTime": when or _now(),
        "reason": reason,
        "message": f"mirroring {digest} into the local registry failed: {message}"[:1024],
        "generation": generation,
    }


def record_mirror(
    status_tags: Iterable[Mapping[str, Any]], tag: str, digest: str, condition: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    """Status tags with the tag's Mirrored condition set to `condition`, only while the
    tag's current image is `digest` (a copy that finished after the tag moved on says
    nothing about the new image); and whether anything changed."""
    result = [dict(entry) for entry in status_tags]
    entry = next((e for e in result if e.get("tag") == tag), None)
    if entry is None:
        return result, False
    items = _items(entry)
    if not items or items[0].get("image") != digest:
        return result, False
    conditions = _conditions(entry)
    old = next((c for c in conditions if c.get("type") == MIRRORED), None)
    keys = ("status", "reason", "message")
    if old is not None and all(old.get(k) == condition.get(k) for k in keys):
        return result, False
    entry["conditions"] = [*(dict(c) for c in conditions if c.get("type") != MIRRORED)]
    entry["conditions"].append(dict(condition))
    return result, True


@dataclass(frozen=True, slots=True)
class MirrorJob:
    """One tag's current image to copy into the local repository of its stream."""

    namespace: str
    stream: str
    tag: str
    digest: str
    source_registry: str  # the image's registry, as in its dockerImageReference
    source_path: str
    generation: int = 0
    insecure: bool = False

    @property
    def key(self) -> tuple[str, str, str, str]:
        return ("mirror", self.namespace, self.stream, self.tag)

    @property
    def source(self) -> str:
        return f"{self.source_registry}/{self.source_path}@{self.digest}"


def mirror_jobs(stream: streams.ImageStream, repository: str) -> list[MirrorJob]:
    """The Local tags whose current image is not (known to be) mirrored to `repository`
    (the stream's local repository) yet."""
    jobs = []
    for spec in stream.spec_tags:
        if spec.reference_policy != streams.LOCAL_POLICY:
            continue
        history = stream.history(spec.name)
        if history is None or not history.items:
            continue
        event = history.items[0]
        if not is_valid_digest(event.image):
            continue
        if is_mirrored(history) and stream.status_repository == repository:
            continue
        try:
            ref = parse_normalized(event.docker_image_reference)
        except InvalidReference:
            continue
        jobs.append(
            MirrorJob(
                stream.namespace,
                stream.name,
                spec.name,
                event.image,
                ref.domain,
                ref.path,
                event.generation,
                spec.insecure,
            )
        )
    return jobs


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
