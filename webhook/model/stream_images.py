"""`ImageStreamImage` names: `stream@id`, where `id` names one image of the stream's history.

OpenShift (library-go `imageutil.ParseImageStreamImageName` and `DigestOrImageMatch`,
openshift-apiserver `imageutil.ResolveImageID`) takes as `id` the image's digest or any prefix
of it, with or without the algorithm (`sha256:3c87c57…` or `3c87c57…`), and answers with the
one distinct image of the stream that matches; none is "not found", several is a conflict that
lists them. Matching is case-sensitive, as digests are lowercase.

One deliberate difference: OpenShift has no minimum length, so `stream@sha256:` or `stream@3`
pins whichever image a stream happens to hold while it holds only one. We ask for at least
MIN_PREFIX_LENGTH characters after the algorithm (git's short hash length), unless `id` is a
whole image name: a prefix in a spec should name an image, not depend on how much history the
stream has today (the same spec applied later, or on another cluster, would pin another image
or fail). Tools write whole digests (`tag`, `rollback`); people copy a short hash at least.
"""

from __future__ import annotations

from collections.abc import Iterable

from webhook.model.reference import is_valid_digest

MIN_PREFIX_LENGTH = 7


class ImageIdError(ValueError):
    """`id` does not name exactly one image; the message says why."""


class TooShort(ImageIdError):
    pass


class NoMatch(ImageIdError):
    pass


class Ambiguous(ImageIdError):
    def __init__(self, message: str, matches: list[str]) -> None:
        super().__init__(message)
        self.matches = matches


def split_name(name: str) -> tuple[str, str]:
    """`stream@id` → (stream, id). ValueError unless there is exactly one `@` with text on
    both sides (OpenShift's ParseImageStreamImageName)."""
    if name.count("@") != 1:
        raise ValueError(f"expected exactly one @ in {name!r}")
    stream, _, image_id = name.partition("@")
    if not stream or not image_id:
        raise ValueError(f"{name!r} must have a stream name and an image ID")
    return stream, image_id


def matches(image: str, image_id: str) -> bool:
    """Whether `image_id` names `image`: a prefix of a digest's hex or of the whole name."""
    if is_valid_digest(image) and image.partition(":")[2].startswith(image_id):
        return True
    return image.startswith(image_id)


def resolve(images: Iterable[str], image_id: str) -> str:
    """The one image among `images` (a stream's history, repeats allowed) that `image_id`
    names. Raises TooShort, NoMatch or Ambiguous (whose `matches` lists the candidates)."""
    distinct = set(images)
    significant = image_id.partition(":")[2] if ":" in image_id else image_id
    if len(significant) < MIN_PREFIX_LENGTH and image_id not in distinct:
        raise TooShort(
            f"image ID {image_id!r} is too short: give the digest, or at least"
            f" {MIN_PREFIX_LENGTH} of its hexadecimal characters"
        )
    found = sorted(image for image in distinct if matches(image, image_id))
    if not found:
        raise NoMatch(f"no image matches {image_id!r}")
    if len(found) > 1:
        raise Ambiguous(f"multiple images match the prefix {image_id!r}: {', '.join(found)}", found)
    return found[0]
