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


def resolve_image(
    image: str, namespace: str, streams: StreamLookup, force: bool = False
) -> tuple[str | None, str | None]:
    """(pinned reference or None, warning or None) for one image string.

    Only a `candidate` is looked up; its last path component names the stream, which is
    looked up in `namespace` only.
    """
    ref = candidate(image, force)
    if ref is None:
        return None, None
    entry = streams.get(namespace, ref.last_component)
    if entry is None or not (entry.lookup_local or force):
        return None, None
    tag = ref.tag or reference.DEFAULT_TAG
    if tag not in entry.images:
        return None, f"image stream {namespace}/{entry.name} has no tag {tag!r}; {image} left as is"
    pinned = entry.images[tag]
    if pinned is None:
        return None, (
            f"image stream tag {namespace}/{entry.name}:{tag} has no image yet "
            f"(not imported); {image} left as is"
        )
    return pinned, entry.notes.get(tag)
