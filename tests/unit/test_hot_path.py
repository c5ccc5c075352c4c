"""The admission hot path's shortcuts keep its rules: any Mapping is still read as one
(dict only takes a faster check), and the parsed-reference cache holds short strings only."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from webhook.model import resolution
from webhook.model.streams import StreamEntry
from webhook.model.workloads import is_mapping, pod_images


def test_a_mapping_that_is_not_a_dict_is_still_read() -> None:
    container = MappingProxyType({"name": "web", "image": "keycloak:20.0"})
    pod = MappingProxyType({"spec": MappingProxyType({"containers": [container]})})
    assert is_mapping(pod) and is_mapping({}) and not is_mapping([("a", 1)])
    assert [i.image for i in pod_images(pod, "Pod")] == ["keycloak:20.0"]


def test_parsed_references_are_cached_for_short_strings_only() -> None:
    resolution._parsed.cache_clear()
    assert resolution.candidate("keycloak:20.0") is not None
    assert resolution.candidate("keycloak:20.0") is not None
    assert resolution._parsed.cache_info().hits == 1
    long_name = "a" * 600  # no reference: the name is at most 255 characters
    assert resolution.candidate(long_name) is None
    assert resolution._parsed.cache_info().currsize == 1  # not kept
    assert resolution.candidate("Not A Reference") is None  # cached as "none"
    assert resolution._parsed.cache_info().maxsize == 4096


IMAGES = [
    "app",
    "app:1.0",
    "app:nope",
    "app:empty",
    "other:1.0",
    "team/app:1.0",
    "quay.io/team/app:1.0",
    "localhost:5000/app",
    "app@sha256:" + "a" * 64,
    "quay.io/team/app:1.0@sha256:" + "b" * 64,
    "Not A Reference",
    "",
    "a" * 600,
    "quay.io/" + "a" * 600 + ":1.0",
]


class _Streams:
    def __init__(self, local: bool) -> None:
        images = {"1.0": "quay.io/team/app@sha256:" + "c" * 64, "latest": None, "empty": None}
        self.entry = StreamEntry("ns", "app", local, images, {"1.0": "a note"})

    def get(self, namespace: str, name: str) -> StreamEntry | None:
        return self.entry if (namespace, name) == ("ns", "app") else None


def _by_candidate(image: str, streams: _Streams, force: bool) -> tuple[str | None, str | None]:
    """resolve_image as it read before its cache of targets: through `candidate`."""
    ref = resolution.candidate(image, force)
    if ref is None:
        return None, None
    entry = streams.get("ns", ref.last_component)
    if entry is None or not (entry.lookup_local or force):
        return None, None
    tag = ref.tag or "latest"
    if tag not in entry.images:
        return None, f"image stream ns/{entry.name} has no tag {tag!r}; {image} left as is"
    pinned = entry.images[tag]
    if pinned is None:
        return None, (
            f"image stream tag ns/{entry.name}:{tag} has no image yet (not imported); "
            f"{image} left as is"
        )
    return pinned, entry.notes.get(tag)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("local", [False, True])
def test_resolve_images_cached_targets_answer_as_candidate_does(local: bool, force: bool) -> None:
    streams = _Streams(local)
    resolution._targets.cache_clear()
    for image in IMAGES * 2:  # the second time from the cache
        expected = _by_candidate(image, streams, force)
        assert resolution.resolve_image(image, "ns", streams, force) == expected, image
    pinned, note = resolution.resolve_image("app:1.0", "ns", streams, force)
    assert (pinned is not None, note) == ((True, "a note") if local or force else (False, None))
    # Strings longer than any reference are parsed each time, never kept.
    assert resolution._targets.cache_info().currsize == len([i for i in IMAGES if len(i) <= 512])
