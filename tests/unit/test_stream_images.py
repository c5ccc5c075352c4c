"""`stream@id` names and which image an ID names, from OpenShift's tables: library-go
TestParseImageStreamImageName and openshift-apiserver TestResolveImageID (imageutil)."""

from __future__ import annotations

import pytest

from webhook.model.stream_images import (
    MIN_PREFIX_LENGTH,
    Ambiguous,
    NoMatch,
    TooShort,
    matches,
    resolve,
    split_name,
)

HEX = "3c87c572822935df60f0f5d3665bd376841a7fcfeb806b5f212de6a00e9a7b25"
DIGEST = "sha256:" + HEX
D1, D2, D3, D4 = (f"sha256:{'0' * 63}{n}" for n in "1234")


@pytest.mark.parametrize("name", ["", "a", "a@b@c", "@id", "name@"])
def test_names_need_exactly_one_at_with_text_on_both_sides(name: str) -> None:
    with pytest.raises(ValueError):
        split_name(name)


def test_name_splits_into_stream_and_id() -> None:
    assert split_name("repo@id") == ("repo", "id")
    assert split_name(f"repo@{DIGEST}") == ("repo", DIGEST)


@pytest.mark.parametrize(
    ("images", "image_id", "expected"),
    [
        ([DIGEST], HEX, DIGEST),  # the bare hex
        ([DIGEST], DIGEST, DIGEST),
        ([DIGEST], HEX[:7], DIGEST),  # a prefix of the hex ...
        ([DIGEST], "sha256:" + HEX[:7], DIGEST),  # ... or of the whole name
        (["mytag"], "mytag", "mytag"),  # not a digest: the whole name matches itself
        ([D1, D2, D3, D4], D1, D1),  # any position of any tag
        ([D1, D2, D3, D4], D4, D4),
        ([DIGEST, DIGEST], HEX[:12], DIGEST),  # one image under two tags is one match
    ],
)
def test_an_id_names_the_one_image_it_matches(
    images: list[str], image_id: str, expected: str
) -> None:
    assert resolve(images, image_id) == expected


@pytest.mark.parametrize(
    ("images", "image_id"),
    [
        (["sha256:" + HEX[:63]], HEX),  # 63 hex characters: not a digest, so no hex match
        ([], HEX),
        (["sha256:" + HEX.upper()], HEX[:7]),  # case-sensitive
        ([DIGEST], "sha256:" + "f" * 7),
        ([DIGEST], HEX[1:8]),  # a prefix, not any substring
    ],
)
def test_an_id_that_matches_nothing_is_not_found(images: list[str], image_id: str) -> None:
    with pytest.raises(NoMatch, match="no image matches"):
        resolve(images, image_id)


def test_an_id_that_matches_several_images_lists_them() -> None:
    with pytest.raises(Ambiguous) as info:
        resolve([D2, D1, D2], "sha256:" + "0" * 63)
    assert info.value.matches == [D1, D2]
    assert f"multiple images match the prefix 'sha256:{'0' * 63}': {D1}, {D2}" in str(info.value)


def test_a_whole_name_that_prefixes_another_is_ambiguous() -> None:
    with pytest.raises(Ambiguous):
        resolve(["mytag", "mytag2"], "mytag")


# Deliberate difference: OpenShift has no minimum, so `sha256` matches every sha256 image
# and `stream@3` pins the only image of a one-image stream.
@pytest.mark.parametrize("image_id", ["3", HEX[:6], "sha256", "sha256:", "sha256:" + HEX[:6]])
def test_a_prefix_needs_seven_characters_after_the_algorithm(image_id: str) -> None:
    assert MIN_PREFIX_LENGTH == 7
    with pytest.raises(TooShort, match="at least 7"):
        resolve([DIGEST], image_id)


def test_matching_is_on_the_hex_or_the_whole_name() -> None:
    assert matches(DIGEST, HEX[:10])
    assert matches(DIGEST, "sha256:" + HEX[:10])
    assert matches(DIGEST, "sha2")
    assert not matches(DIGEST, "256:" + HEX[:10])
    assert matches("not-a-digest", "not-a")
