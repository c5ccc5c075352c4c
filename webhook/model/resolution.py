"""One image string → the pinned reference its stream gives it: the rule admission, the
ImagePolicy checks and `imagestreams resolve` share (DESIGN.md "Admission")."""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from webhook.model import reference
from webhook.model.streams import StreamEntry


class StreamLookup(Protocol):
    def get(self, namespace: str, name: str) -> StreamEntry | None: ...


def candidate(image: str, force: bool = False) -> reference.Reference | None:
    """The parsed reference when `image` is one a stream may resolve, else None.

    A candidate is a short name (`name`, `name:tag`); with the resolve-names annotation
    (`force`) any reference without a digest is. A malformed string is not ours to judge:
    the runtime will report it.
    """
    ref = _parsed(image) if len(image) <= _CACHED_LENGTH else _parse_or_none(image)
    if ref is None:
        return None
    if ref.digest is not None or not (ref.is_short or force):
        return None
    return ref


# Parsing a reference is a third of resolving one; a cluster's workloads name the same few
# hundred images again and again. Longer strings are no reference (the name is at most 255
# characters after a host): parsed each time, so the cache holds 4096 short strings at most.
_CACHED_LENGTH = 512


def _parse_or_none(image: str) -> reference.Reference | None:
    try:
        return reference.parse(image)
    except reference.InvalidReference:
        return None


_parsed = lru_cache(maxsize=4096)(_parse_or_none)


def _target(image: str) -> tuple[str, str, bool] | None:
    """What resolve_image looks up for `image`: (stream name, tag, whether it is a short
    name), or None for a reference with a digest or no reference at all."""
    ref = _parse_or_none(image)
    if ref is None or ref.digest is not None:
        return None
    return ref.last_component, ref.tag or reference.DEFAULT_TAG, ref.is_short


# resolve_image's own cache: the answers of `_target`, not the parsed reference, so that a
# review's images cost a dict lookup each, without the reference's properties (a few µs a
# review). Bounded as _parsed is.
_targets = lru_cache(maxsize=4096)(_target)


def resolve_image(
    image: str, namespace: str, streams: StreamLookup, force: bool = False
) -> tuple[str | None, str | None]:
    """(pinned reference or None, warning or None) for one image string.

    Only a `candidate` is looked up; its last path component names the stream, which is
    looked up in `namespace` only.
    """
    target = _targets(image) if len(image) <= _CACHED_LENGTH else _target(image)
    if target is None or not (target[2] or force):  # the rule of `candidate`
        return None, None
    name, tag, _short = target
    entry = streams.get(namespace, name)
    if entry is None or not (entry.lookup_local or force):
        return None, None
    if tag not in entry.images:
        return None, f"image stream {namespace}/{entry.name} has no tag {tag!r}; {image} left as is"
    pinned = entry.images[tag]
    if pinned is None:
        return None, (
            f"image stream tag {namespace}/{entry.name}:{tag} has no image yet "
            f"(not imported); {image} left as is"
        )
    return pinned, entry.notes.get(tag)
