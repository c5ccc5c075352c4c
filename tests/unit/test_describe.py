"""`describe is`: oc's layout, byte for byte, for a fixed stream and a fixed clock.

The expected texts are written with explicit tabs (oc pads with tab characters through
Go's text/tabwriter), so a change of spacing shows up as a failing diff.
"""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest

from webhook.cli.describe import (
    compare_semver,
    describe_stream,
    human_duration,
    parse_semver,
    prioritize_tags,
)
from webhook.cli.tabwriter import tabwrite

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
A, B, C, D = ("sha256:" + ch * 64 for ch in "abcd")
REPO = "quay.io/keycloak/keycloak"


def item(ref: str, image: str, created: str, generation: int) -> dict[str, Any]:
    return {
        "created": created,
        "dockerImageReference": ref,
        "image": image,
        "generation": generation,
    }


def keycloak() -> dict[str, Any]:
    """Several tags: an alias (latest → 20.0) with three history items behind it, a
    scheduled Local tag, a failed import, an import in progress, and one from another
    stream."""
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {
            "name": "keycloak",
            "namespace": "demo",
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "generation": 7,
            "labels": {"app": "sso", "tier": "auth"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "openshift.io/display-name": "Keycloak",
            },
        },
        "spec": {
            "lookupPolicy": {"local": True},
            "tags": [
                {"name": "latest", "from": {"kind": "ImageStreamTag", "name": "keycloak:20.0"}},
                {
                    "name": "20.0",
                    "from": {"kind": "DockerImage", "name": f"{REPO}:20.0.3"},
                    "generation": 6,
                },
                {
                    "name": "19.0",
                    "from": {"kind": "DockerImage", "name": f"{REPO}:19.0"},
                    "importPolicy": {"scheduled": True},
                    "referencePolicy": {"type": "Local"},
                    "generation": 2,
                },
                {
                    "name": "18.0",
                    "from": {"kind": "DockerImage", "name": f"{REPO}:18.0"},
                    "generation": 5,
                },
                {
                    "name": "21.0",
                    "from": {"kind": "DockerImage", "name": f"{REPO}:21.0"},
                    "importPolicy": {"insecure": True},
                    "generation": 7,
                },
                {
                    "name": "prod",
                    "from": {
                        "kind": "ImageStreamImage",
                        "name": f"keycloak@{B}",
                        "namespace": "ops",
                    },
                    "generation": 3,
                },
            ],
        },
        "status": {
            "dockerImageRepository": "registry.imagestreams.svc:5000/demo/keycloak",
            "tags": [
                {
                    "tag": "20.0",
                    "items": [
                        item(f"{REPO}@{C}", C, "2024-05-01T11:58:00Z", 6),
                        item(f"{REPO}@{B}", B, "2024-05-01T10:30:00Z", 4),
                        item(f"{REPO}:20.0.1", A, "2024-04-01T12:00:00Z", 1),
                    ],
                },
                {
                    "tag": "19.0",
                    "items": [item(f"{REPO}@{D}", D, "2024-05-01T10:00:00Z", 2)],
                },
                {
                    "tag": "18.0",
                    "items": [item(f"{REPO}@{A}", A, "2024-04-30T12:00:00Z", 1)],
                    "conditions": [
                        {
                            "type": "ImportSuccess",
                            "status": "False",
                            "reason": "NotFound",
                            "message": f"{REPO}:18.0: manifest unknown",
                            "generation": 5,
                            "lastTransitionTime": "2024-05-01T11:00:00Z",
                        }
                    ],
                },
            ],
        },
    }


EXPECTED = f"""\
Name:\t\t\tkeycloak
Namespace:\t\tdemo
Created:\t\t2 hours ago
Labels:\t\t\tapp=sso
\t\t\ttier=auth
Annotations:\t\topenshift.io/display-name=Keycloak
Image Repository:\tregistry.imagestreams.svc:5000/demo/keycloak
Image Lookup:\t\tlocal=true
Unique Images:\t\t4
Tags:\t\t\t6

21.0
  tagged from {REPO}:21.0
    will use insecure HTTPS or HTTP connections

  ~ importing latest image ...

20.0 (latest)
  tagged from {REPO}:20.0.3

  * {REPO}@{C}
      2 minutes ago
    {REPO}@{B}
      2 hours ago
    {REPO}:20.0.1
      4 weeks ago\t{A}

19.0
  updates automatically from registry {REPO}:19.0
    prefer registry pullthrough when referencing this tag

  * {REPO}@{D}
      2 hours ago

18.0
  tagged from {REPO}:18.0

  ! error: Import failed (NotFound): {REPO}:18.0: manifest unknown
      About an hour ago
  * {REPO}@{A}
      24 hours ago

prod
  tagged from ops/keycloak@{B}

  ~ importing latest image ...
"""


def test_describe_matches_oc_layout() -> None:
    assert describe_stream(keycloak(), NOW) == EXPECTED


def test_empty_stream() -> None:
    obj = {
        "metadata": {"name": "empty", "namespace": "demo"},
        "spec": {"lookupPolicy": {"local": False}},
    }
    assert describe_stream(obj, NOW) == (
        "Name:\t\t\tempty\n"
        "Namespace:\t\tdemo\n"
        "Labels:\t\t\t<none>\n"
        "Annotations:\t\t<none>\n"
        "Image Repository:\t<none>\n"
        "Image Lookup:\t\tlocal=false\n"
        "Tags:\t\t\t<none>\n"
    )


def test_public_repository_wins_and_description_is_its_own_line() -> None:
    obj = keycloak()
    obj["status"]["publicDockerImageRepository"] = "registry.example.com/demo/keycloak"
    obj["metadata"]["annotations"]["description"] = "Single sign-on"
    text = describe_stream(obj, NOW)
    assert "Description:\t\tSingle sign-on\n" in text
    assert "Image Repository:\tregistry.example.com/demo/keycloak\n" in text


def test_tag_only_in_status_and_tag_without_source() -> None:
    obj = {
        "metadata": {"name": "s", "namespace": "n"},
        "spec": {"tags": [{"name": "empty"}]},
        "status": {"tags": [{"tag": "orphan", "items": [item(f"{REPO}@{A}", A, "", 1)]}]},
    }
    text = describe_stream(obj, NOW)
    assert "orphan\n  no spec tag\n\n  * " in text
    assert "empty\n  tag without source image\n" in text


def test_reference_tags_say_reference() -> None:
    obj = keycloak()
    obj["spec"]["tags"][1]["reference"] = True
    assert f"20.0 (latest)\n  reference to registry {REPO}:20.0.3\n" in describe_stream(obj, NOW)


def test_an_alias_chain_shows_on_its_final_target() -> None:
    obj = keycloak()
    obj["spec"]["tags"].append(
        {"name": "stable", "from": {"kind": "ImageStreamTag", "name": "latest"}}
    )
    text = describe_stream(obj, NOW)
    assert "20.0 (latest, stable)\n" in text
    assert "Tags:\t\t\t7\n" in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (3599, "59 minutes"),
        (3600, "About an hour"),
        (5399, "About an hour"),
        (5400, "2 hours"),
        (47 * 3600, "47 hours"),
        (48 * 3600, "2 days"),
        (13 * 86400, "13 days"),
        (14 * 86400, "2 weeks"),
        (60 * 86400, "2 months"),
        (730 * 86400, "2 years"),
    ],
)
def test_human_duration_is_go_units(seconds: float, text: str) -> None:
    assert human_duration(datetime.timedelta(seconds=seconds)) == text


def test_prioritize_tags_like_library_go() -> None:
    tags = ["abc", "20.0.2", "1.0-rc1", "latest", "19.0", "v20.0", "20.0", "21.0.0-rc.1", "21.0.0"]
    assert prioritize_tags(tags) == [
        "latest",
        "20.0",
        "v20.0",
        "19.0",
        "1.0-rc1",
        "21.0.0",
        "21.0.0-rc.1",
        "20.0.2",
        "abc",
    ]


@pytest.mark.parametrize("text", ["1.2", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.x", "1.2.3+"])
def test_semver_rejects(text: str) -> None:
    assert parse_semver(text) is None


def test_semver_order() -> None:
    order = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1+build",
    ]
    parsed = [parse_semver(v) for v in order]
    assert all(p is not None for p in parsed)
    for lower, higher in itertools.pairwise(parsed):
        assert lower is not None and higher is not None
        assert compare_semver(lower, higher) == -1
        assert compare_semver(higher, lower) == 1


def test_tabwrite_pads_with_tabs_per_column_block() -> None:
    text = "a:\t1\nlonger label:\t2\nbreak\nx\ty\tz\n"
    assert tabwrite(text) == "a:\t\t1\nlonger label:\t2\nbreak\nx\ty\tz\n"


def test_tabwrite_with_spaces_as_oc_tables() -> None:
    text = "NAME\tLOCAL\nkeycloak\ttrue\n"
    assert tabwrite(text, tabwidth=2, padding=2, padchar=" ") == (
        "NAME      LOCAL\nkeycloak  true\n"
    )
