"""One image string → the pinned reference its stream gives it: the rule admission, the
ImagePolicy checks and `imagestreams resolve` share (DESIGN.md "Admission")."""

from __future__ import annotations

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
    try:
        ref = reference.parse(image)
    except reference.InvalidReference:
        return None
    if ref.digest is not None or not (ref.is_short or force):
        return None
    return ref


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
