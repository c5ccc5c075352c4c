"""controller/importer.py with a fake registry: events, conditions, import modes, sources."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from webhook.controller.importer import (
    ImportResult,
    find_in_history,
    import_from_stream_image,
    import_from_stream_tag,
    import_tag,
    preferred_platform,
    rfc3339,
    rfc3339_now,
)
from webhook.model.streams import LEGACY, PRESERVE_ORIGINAL, parse_tag_reference
from webhook.registry.client import ManifestHead, Repository
from webhook.registry.credentials import Credential, Keyring
from webhook.registry.errors import (
    AddressRefused,
    DigestMismatch,
    Forbidden,
    InternalError,
    NotFound,
    RateLimited,
    RegistryError,
    Timeout,
    TLSHandshakeFailed,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from webhook.registry.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    Platform,
    compute_digest,
    parse_manifest,
)

NOW = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
WHEN = "2024-05-06T07:08:09Z"


def image_manifest(label: str, media_type: str = OCI_MANIFEST) -> Manifest:
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "config": {"label": label}, "layers": []}
    ).encode()
    return parse_manifest(body, media_type, compute_digest(body))


def index_manifest(children: dict[str, Manifest], media_type: str = OCI_INDEX) -> Manifest:
    entries = []
    for platform, child in children.items():
        parts = platform.split("/")
        entry: dict[str, Any] = {
            "mediaType": child.media_type,
            "digest": child.digest,
            "size": child.size,
            "platform": {"os": parts[0], "architecture": parts[1]},
        }
        if len(parts) > 2:
            entry["platform"]["variant"] = parts[2]
        entries.append(entry)
    body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}).encode()
    return parse_manifest(body, media_type, compute_digest(body))


AMD64 = image_manifest("amd64")
ARM64 = image_manifest("arm64")
PPC = image_manifest("ppc64le")
MULTI = index_manifest({"linux/amd64": AMD64, "linux/arm64/v8": ARM64, "linux/ppc64le": PPC})


class FakeRegistry:
    """Answers from a table {(registry, path, reference): Manifest | RegistryError}."""

    def __init__(self, table: dict[tuple[str, str, str], Manifest | RegistryError]) -> None:
        self.table = table
        self.calls: list[tuple[str, Repository, str]] = []

    def _lookup(self, repo: Repository, reference: str) -> Manifest:
        answer = self.table.get((repo.registry, repo.path, reference))
        if answer is None:
            raise NotFound(f"tag {repo.name}:{reference} not found (HTTP 404)", status=404)
        if isinstance(answer, RegistryError):
            raise answer
        return answer

    def head_manifest(self, repo: Repository, reference: str) -> ManifestHead:
        self.calls.append(("HEAD", repo, reference))
        manifest = self._lookup(repo, reference)
        return ManifestHead(manifest.digest, manifest.media_type, manifest.size)

    def get_manifest(self, repo: Repository, reference: str) -> Manifest:
        self.calls.append(("GET", repo, reference))
        return self._lookup(repo, reference)


def spec(
    name: str = "8.0",
    source: str = "mysql:8.0",
    *,
    kind: str = "DockerImage",
    mode: str | None = None,
    generation: int | None = 3,
    **extra: Any,
) -> dict[str, Any]:
    tag: dict[str, Any] = {
        "name": name,
        "from": {"kind": kind, "name": source},
        "generation": generation,
        "referencePolicy": {"type": "Source"},
        **extra,
    }
    if mode is not None:
        tag.setdefault("importPolicy", {})["importMode"] = mode
    return tag


def run(tag: dict[str, Any], registry: FakeRegistry, **options: Any) -> ImportResult:
    return import_tag(
        parse_tag_reference(tag), namespace="team", stream="db", client=registry, now=NOW, **options
    )


# ---------------------------------------------------------------------------------------------
# Single manifests


def test_single_manifest_becomes_a_fully_qualified_event() -> None:
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): AMD64})
    result = run(spec(), registry)
    assert result.succeeded and result.condition is None
    assert result.event == {
        "created": WHEN,
        "dockerImageReference": f"docker.io/library/mysql@{AMD64.digest}",
        "image": AMD64.digest,
        "generation": 3,
    }
    assert result.manifest_digest == AMD64.digest
    assert result.platforms == ()
    assert registry.calls[0][1] == Repository("docker.io", "library/mysql")


@pytest.mark.parametrize("mode", [PRESERVE_ORIGINAL, LEGACY])
def test_single_manifest_is_taken_as_is_in_both_modes(mode: str) -> None:
    manifest = image_manifest("x", DOCKER_MANIFEST)
    registry = FakeRegistry({("quay.io", "org/app", "1.0"): manifest})
    result = run(spec("1.0", "quay.io/org/app:1.0", mode=mode), registry)
    assert result.event is not None
    assert result.event["image"] == manifest.digest
    assert result.import_mode == mode


def test_untagged_source_means_latest() -> None:
    registry = FakeRegistry({("quay.io", "org/app", "latest"): AMD64})
    assert run(spec("latest", "quay.io/org/app"), registry).succeeded


def test_digest_source_is_fetched_by_digest() -> None:
    registry = FakeRegistry({("quay.io", "org/app", AMD64.digest): AMD64})
    result = run(spec("pinned", f"quay.io/org/app@{AMD64.digest}"), registry)
    assert result.event is not None
    assert result.event["dockerImageReference"] == f"quay.io/org/app@{AMD64.digest}"
    assert registry.calls == [("GET", Repository("quay.io", "org/app"), AMD64.digest)]


def test_generation_override_and_missing_generation() -> None:
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): AMD64})
    assert run(spec(), registry, generation=9).event["generation"] == 9  # type: ignore[index]
    assert run(spec(generation=None), registry).event["generation"] == 0  # type: ignore[index]


def test_rfc3339_is_utc_whole_seconds() -> None:
    assert rfc3339(NOW) == WHEN
    naive = datetime.datetime(2024, 1, 2, 3, 4, 5)
    assert rfc3339(naive) == "2024-01-02T03:04:05Z"
    east = datetime.datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert rfc3339(east) == "2024-01-02T01:04:05Z"


# ---------------------------------------------------------------------------------------------
# Multi-arch


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
def test_preserve_original_pins_the_index_and_records_platforms(media_type: str) -> None:
    index = index_manifest({"linux/amd64": AMD64, "linux/arm64/v8": ARM64}, media_type)
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): index})
    result = run(spec(), registry)  # no importMode: PreserveOriginal is the default
    assert result.import_mode == PRESERVE_ORIGINAL
    assert result.event is not None
    assert result.event["image"] == index.digest
    assert result.event["dockerImageReference"] == f"docker.io/library/mysql@{index.digest}"
    assert result.platforms == (Platform("linux", "amd64"), Platform("linux", "arm64", "v8"))
    assert result.manifest_digest == index.digest
    assert result.media_type == media_type


def test_legacy_picks_linux_amd64_by_default() -> None:
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): MULTI})
    result = run(spec(mode=LEGACY), registry)
    assert result.event is not None
    assert result.event["image"] == AMD64.digest
    assert result.event["dockerImageReference"] == f"docker.io/library/mysql@{AMD64.digest}"
    assert result.manifest_digest == MULTI.digest  # what the tag points at, for HEAD checks
    assert result.platforms == (Platform("linux", "amd64"),)


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"importer.image.openshift.io/prefer-arch": "arm64"}, ARM64),
        ({"importer.image.openshift.io/prefer-arch": "aarch64"}, ARM64),
        ({"importer.image.openshift.io/prefer-arch": "arm64/v8"}, ARM64),
        ({"importer.image.openshift.io/prefer-arch": "ppc64le"}, PPC),
        (
            {
                "importer.image.openshift.io/prefer-os": "linux",
                "importer.image.openshift.io/prefer-arch": "amd64",
            },
            AMD64,
        ),
    ],
)
def test_legacy_honours_preference_annotations(
    annotations: dict[str, str], expected: Manifest
) -> None:
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): MULTI})
    result = run(spec(mode=LEGACY, annotations=annotations), registry)
    assert result.event is not None
    assert result.event["image"] == expected.digest


def test_legacy_without_the_wanted_platform_is_not_found() -> None:
    arm_only = index_manifest({"linux/arm64/v8": ARM64})
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): arm_only})
    result = run(spec(mode=LEGACY), registry)
    assert result.event is None
    assert result.condition is not None
    assert result.condition["reason"] == "NotFound"
    message = result.condition["message"]
    assert "linux/amd64" in message and "linux/arm64/v8" in message
    assert "prefer-arch" in message and "PreserveOriginal" in message
    assert result.platforms == (Platform("linux", "arm64", "v8"),)


def test_legacy_prefer_os_windows() -> None:
    windows = image_manifest("windows")
    index = index_manifest({"linux/amd64": AMD64, "windows/amd64": windows})
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): index})
    tag = spec(mode=LEGACY, annotations={"importer.image.openshift.io/prefer-os": "windows"})
    assert run(tag, registry).event["image"] == windows.digest  # type: ignore[index]


def test_preferred_platform_defaults() -> None:
    def platform(tag: dict[str, Any]) -> Platform:
        return preferred_platform(parse_tag_reference({"name": "x", **tag}))

    assert platform({}) == Platform("linux", "amd64")
    assert platform({"annotations": None}) == Platform("linux", "amd64")
    assert platform(
        {"annotations": {"importer.image.openshift.io/prefer-arch": "arm/v7"}}
    ) == Platform("linux", "arm", "v7")


def test_unknown_import_mode_falls_back_to_the_default() -> None:
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): MULTI})
    result = run(spec(mode="Sideways"), registry)
    assert result.import_mode == PRESERVE_ORIGINAL
    assert result.event["image"] == MULTI.digest  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# Failures become conditions


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            NotFound("tag quay.io/org/app:1.0 not found (registry quay.io answered HTTP 404)"),
            "NotFound",
        ),
        (Unauthorized("not authorized to pull quay.io/org/app:1.0 (HTTP 401)"), "Unauthorized"),
        (Forbidden("access to quay.io/org/app:1.0 is denied (HTTP 403)"), "Forbidden"),
        (AddressRefused("refusing to contact 10.0.0.1:443"), "Forbidden"),
        (InternalError("could not reach registry quay.io: connection refused"), "InternalError"),
        (DigestMismatch("digest sha256:a, not sha256:b"), "InternalError"),
        (RateLimited("registry quay.io is rate limiting (HTTP 429)", status=429), "RateLimited"),
        (Unavailable("fetching quay.io/org/app:1.0 failed (HTTP 502)"), "Unavailable"),
        (Timeout("registry quay.io took longer than 30s to send it"), "Timeout"),
        (Unreachable("could not reach registry quay.io: connection refused"), "Unreachable"),
        (TLSHandshakeFailed("could not reach registry quay.io: TLS failed"), "TLSHandshakeFailed"),
    ],
)
def test_registry_errors_map_to_condition_reasons(error: RegistryError, reason: str) -> None:
    registry = FakeRegistry({("quay.io", "org/app", "1.0"): error})
    result = run(spec("1.0", "quay.io/org/app:1.0", generation=4), registry)
    assert result.event is None
    assert result.reason == reason
    assert result.condition == {
        "type": "ImportSuccess",
        "status": "False",
        "lastTransitionTime": WHEN,
        "reason": reason,
        "message": error.message,
        "generation": 4,
    }


def test_retry_after_is_passed_on() -> None:
    error = InternalError("rate limited", status=429, retry_after=120.0)
    registry = FakeRegistry({("quay.io", "org/app", "1.0"): error})
    assert run(spec("1.0", "quay.io/org/app:1.0"), registry).retry_after == 120.0


@pytest.mark.parametrize("source", ["", "Upper:1", "quay.io/org/app:bad tag", "a@sha256:12"])
def test_invalid_from_name_is_a_condition_not_a_crash(source: str) -> None:
    registry = FakeRegistry({})
    result = run(spec("bad", source), registry)
    assert result.reason == "InternalError"
    assert result.condition is not None
    assert "not an image reference" in result.condition["message"]
    assert "team/db" in result.condition["message"]
    assert registry.calls == []


def test_missing_from_is_a_condition() -> None:
    result = run({"name": "x", "generation": 1}, FakeRegistry({}))
    assert result.reason == "InternalError"


def test_other_source_kinds_are_not_imported_from_a_registry() -> None:
    registry = FakeRegistry({})
    result = run(spec("alias", "db:8.0", kind="ImageStreamTag"), registry)
    assert result.reason == "InternalError"
    assert "ImageStreamTag" in result.condition["message"]  # type: ignore[index]
    assert registry.calls == []


# ---------------------------------------------------------------------------------------------
# reference: true


def test_reference_tag_is_recorded_without_contacting_the_registry() -> None:
    registry = FakeRegistry({})
    result = run(spec("ref", "mysql:8.0", reference=True), registry)
    assert registry.calls == []
    assert result.event == {
        "created": WHEN,
        "dockerImageReference": "docker.io/library/mysql:8.0",
        "image": "",
        "generation": 3,
    }


def test_reference_tag_with_digest_records_the_digest() -> None:
    digest = "sha256:" + "a" * 64
    result = run(spec("ref", f"quay.io/org/app@{digest}", reference=True), FakeRegistry({}))
    assert result.event is not None
    assert result.event["dockerImageReference"] == f"quay.io/org/app@{digest}"
    assert result.event["image"] == digest


# ---------------------------------------------------------------------------------------------
# Credentials and insecure


def test_credentials_come_from_the_keyring_by_registry_and_repository() -> None:
    import base64

    config = {"auths": {"quay.io/org": {"auth": base64.b64encode(b"bot:pw").decode()}}}
    secret = {
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "pull", "namespace": "team"},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }
    registry = FakeRegistry(
        {("quay.io", "org/app", "1.0"): AMD64, ("quay.io", "other/app", "1.0"): AMD64}
    )
    run(spec("1.0", "quay.io/org/app:1.0"), registry, keyring=Keyring([secret]))
    run(spec("1.0", "quay.io/other/app:1.0"), registry, keyring=Keyring([secret]))
    assert registry.calls[0][1].credential == Credential("bot", "pw", "secret team/pull")
    assert registry.calls[1][1].credential is None


def test_insecure_policy_reaches_the_client() -> None:
    registry = FakeRegistry({("registry.local:5000", "app", "1"): AMD64})
    tag = spec("1", "registry.local:5000/app:1", importPolicy={"insecure": True})
    run(tag, registry)
    assert registry.calls[0][1].insecure is True
    run(spec("1", "registry.local:5000/app:1"), registry)
    assert registry.calls[1][1].insecure is False


# ---------------------------------------------------------------------------------------------
# HEAD first when a previous result is known


def test_unchanged_tag_costs_one_head() -> None:
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): MULTI})
    first = run(spec(mode=LEGACY), registry)
    registry.calls.clear()
    again = run(spec(mode=LEGACY, generation=4), registry, previous=first)
    assert [call[0] for call in registry.calls] == ["HEAD"]
    assert again.unchanged
    assert again.event is not None and first.event is not None
    assert again.event["image"] == first.event["image"] == AMD64.digest
    assert again.event["created"] == first.event["created"]
    assert again.event["generation"] == 4


def test_changed_tag_is_fetched_after_the_head() -> None:
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): AMD64})
    first = run(spec(), registry)
    registry.table[("docker.io", "library/mysql", "8.0")] = ARM64
    registry.calls.clear()
    again = run(spec(), registry, previous=first)
    assert [call[0] for call in registry.calls] == ["HEAD", "GET"]
    assert not again.unchanged
    assert again.event["image"] == ARM64.digest  # type: ignore[index]


def test_previous_of_another_mode_is_not_reused() -> None:
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): MULTI})
    first = run(spec(mode=LEGACY), registry)
    registry.calls.clear()
    again = run(spec(mode=PRESERVE_ORIGINAL), registry, previous=first)
    assert [call[0] for call in registry.calls] == ["GET"]
    assert again.event["image"] == MULTI.digest  # type: ignore[index]


def test_head_failure_is_a_condition() -> None:
    registry = FakeRegistry({("docker.io", "library/mysql", "8.0"): AMD64})
    first = run(spec(), registry)
    registry.table[("docker.io", "library/mysql", "8.0")] = Unauthorized("denied")
    assert run(spec(), registry, previous=first).reason == "Unauthorized"


# ---------------------------------------------------------------------------------------------
# ImageStreamTag and ImageStreamImage


def stream(tags: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """A stream whose status has, per tag, items (reference, image) newest first."""
    return {
        "metadata": {"name": "db", "namespace": "team"},
        "status": {
            "tags": [
                {
                    "tag": tag,
                    "items": [
                        {
                            "created": f"2024-01-0{9 - n}T00:00:00Z",
                            "dockerImageReference": ref,
                            "image": image,
                            "generation": 1,
                        }
                        for n, (ref, image) in enumerate(items)
                    ],
                }
                for tag, items in tags.items()
            ]
        },
    }


D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
SOURCE = stream(
    {
        "8.0": [(f"docker.io/library/mysql@{D2}", D2), (f"docker.io/library/mysql@{D1}", D1)],
        "latest": [(f"docker.io/library/mysql@{D3}", D3)],
        "empty": [],
    }
)


def test_image_stream_tag_copies_the_current_item() -> None:
    tag = parse_tag_reference(spec("prod", "db:8.0", kind="ImageStreamTag"))
    result = import_from_stream_tag(tag, SOURCE, source_namespace="team", now=NOW)
    assert result.event == {
        "created": WHEN,
        "dockerImageReference": f"docker.io/library/mysql@{D2}",
        "image": D2,
        "generation": 3,
    }


def test_image_stream_tag_defaults_to_latest() -> None:
    tag = parse_tag_reference(spec("prod", "db", kind="ImageStreamTag"))
    result = import_from_stream_tag(tag, SOURCE, source_namespace="team", now=NOW)
    assert result.event["image"] == D3  # type: ignore[index]


@pytest.mark.parametrize(
    ("source", "name", "reason", "text"),
    [
        (SOURCE, "db:empty", "NotFound", "has no image yet"),
        (SOURCE, "db:missing", "NotFound", "has no image yet"),
        (None, "db:8.0", "NotFound", "image stream team/db"),
        (SOURCE, ":8.0", "InternalError", "STREAM:TAG"),
        (SOURCE, f"db@{D1}", "InternalError", "STREAM:TAG"),
    ],
)
def test_image_stream_tag_failures(
    source: dict[str, Any] | None, name: str, reason: str, text: str
) -> None:
    tag = parse_tag_reference(spec("prod", name, kind="ImageStreamTag"))
    result = import_from_stream_tag(tag, source, source_namespace="team", now=NOW)
    assert result.reason == reason
    assert text in result.condition["message"]  # type: ignore[index]


def test_image_stream_image_picks_from_history() -> None:
    tag = parse_tag_reference(spec("rollback", f"db@{D1}", kind="ImageStreamImage"))
    result = import_from_stream_image(tag, SOURCE, source_namespace="team", now=NOW)
    assert result.event == {
        "created": WHEN,
        "dockerImageReference": f"docker.io/library/mysql@{D1}",
        "image": D1,
        "generation": 3,
    }


@pytest.mark.parametrize(
    ("source", "name", "reason"),
    [
        (SOURCE, "db@sha256:" + "9" * 64, "NotFound"),
        (None, f"db@{D1}", "NotFound"),
        (SOURCE, "db", "InternalError"),
        (SOURCE, f"@{D1}", "InternalError"),
    ],
)
def test_image_stream_image_failures(source: dict[str, Any] | None, name: str, reason: str) -> None:
    tag = parse_tag_reference(spec("rollback", name, kind="ImageStreamImage"))
    assert import_from_stream_image(tag, source, source_namespace="team").reason == reason


@pytest.mark.parametrize("image_id", [D1[7:], D1[7:14], D1[:14], "sha256:" + "1" * 12])
def test_image_stream_image_takes_a_unique_prefix_as_openshift_does(image_id: str) -> None:
    tag = parse_tag_reference(spec("rollback", f"db@{image_id}", kind="ImageStreamImage"))
    result = import_from_stream_image(tag, SOURCE, source_namespace="team", now=NOW)
    assert result.event is not None
    assert result.event["image"] == D1
    assert result.event["dockerImageReference"] == f"docker.io/library/mysql@{D1}"


SIMILAR = stream(
    {
        "a": [("quay.io/x/db@sha256:abcdef01" + "1" * 56, "sha256:abcdef01" + "1" * 56)],
        "b": [("quay.io/x/db@sha256:abcdef02" + "2" * 56, "sha256:abcdef02" + "2" * 56)],
    }
)


@pytest.mark.parametrize(
    ("source", "image_id", "reason", "text"),
    [
        (SIMILAR, "abcdef0", "Conflict", "2 images in the history of image stream team/db match"),
        (SIMILAR, "abcdef0", "Conflict", f"sha256:abcdef01{'1' * 56}, sha256:abcdef02"),
        (SIMILAR, "abcdef03", "NotFound", "no image in the history of image stream team/db"),
        (SIMILAR, "abc", "InternalError", "'db@abc': image ID 'abc' is too short"),
        (SIMILAR, "sha256:", "InternalError", "at least 7 of its hexadecimal characters"),
        (SOURCE, "1111111@x", "InternalError", "STREAM@DIGEST"),
    ],
)
def test_image_stream_image_prefix_failures_say_what_to_write(
    source: dict[str, Any], image_id: str, reason: str, text: str
) -> None:
    tag = parse_tag_reference(spec("rollback", f"db@{image_id}", kind="ImageStreamImage"))
    result = import_from_stream_image(tag, source, source_namespace="team", now=NOW)
    assert (result.event, result.reason) == (None, reason)
    assert text in result.condition["message"]  # type: ignore[index]


def test_find_in_history_prefers_the_newest_item() -> None:
    twice = stream(
        {
            "a": [("old-ref@" + D1, D1)],
            "b": [("new-ref@" + D1, D1)],
        }
    )
    twice["status"]["tags"][1]["items"][0]["created"] = "2025-01-01T00:00:00Z"
    assert find_in_history(twice, D1)["dockerImageReference"] == "new-ref@" + D1  # type: ignore[index]
    assert find_in_history({}, D1) is None


def test_rfc3339_now_shape() -> None:
    text = rfc3339_now()
    parsed = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    assert abs(parsed.replace(tzinfo=datetime.UTC) - datetime.datetime.now(datetime.UTC)) < (
        datetime.timedelta(minutes=1)
    )
