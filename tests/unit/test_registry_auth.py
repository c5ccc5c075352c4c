"""The pure parts of webhook/registry.py: challenges, tokens, Retry-After, manifests, platforms,
digests and the address guard, all with plain data."""

from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import json
from typing import Any

import pytest

from webhook.registry.auth import (
    Challenge,
    parse_challenges,
    parse_retry_after,
    parse_token_response,
    token_request,
)
from webhook.registry.errors import AddressRefused, InternalError
from webhook.registry.guard import AddressGuard, address_problem, api_host, host_in, split_host_port
from webhook.registry.manifests import (
    ACCEPT_MANIFESTS,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    choose_platform,
    compute_digest,
    digest_matches,
    index_platforms,
    normalize_platform,
    parse_manifest,
)

# ---------------------------------------------------------------------------------------------
# WWW-Authenticate


def test_docker_hub_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/mysql:pull"'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/mysql:pull",
            },
        )
    ]


def test_basic_challenge() -> None:
    assert parse_challenges('Basic realm="Registry Realm"') == [
        Challenge("basic", {"realm": "Registry Realm"})
    ]


def test_scheme_and_param_names_are_case_insensitive() -> None:
    [challenge] = parse_challenges('BEARER Realm="https://a/token", SERVICE="svc"')
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://a/token", "service": "svc"}


def test_several_challenges_in_one_header() -> None:
    header = 'Basic realm="r1", Bearer realm="https://a/token",service="s", Negotiate'
    challenges = parse_challenges(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer", "negotiate"]
    assert challenges[1].params == {"realm": "https://a/token", "service": "s"}


def test_quoted_values_with_commas_and_escapes() -> None:
    [challenge] = parse_challenges(
        r'Bearer realm="https://a/token",scope="repository:a:pull,push",error="say \"hi\""'
    )
    assert challenge.params["scope"] == "repository:a:pull,push"
    assert challenge.params["error"] == 'say "hi"'


def test_unquoted_url_value_is_read_whole() -> None:
    [challenge] = parse_challenges("Bearer realm=https://auth.example.com/token,service=reg")
    assert challenge.params == {"realm": "https://auth.example.com/token", "service": "reg"}


def test_bearer_with_error_params() -> None:
    header = (
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
        'scope="repository:o/r:pull",error="insufficient_scope"'
    )
    [challenge] = parse_challenges(header)
    assert challenge.params["error"] == "insufficient_scope"


@pytest.mark.parametrize("header", ["", "   ", ",,,", '"', "=", 'Bearer realm="unterminated'])
def test_garbage_never_raises(header: str) -> None:
    parse_challenges(header)


def test_token_request_asks_for_pull_scope_of_the_repository() -> None:
    challenge = Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "hub"})
    url, params = token_request(challenge, "library/mysql")
    assert url == "https://auth.docker.io/token"
    assert params == {"scope": "repository:library/mysql:pull", "service": "hub"}


def test_token_request_without_service() -> None:
    _, params = token_request(Challenge("bearer", {"realm": "https://a/t"}), "x/y")
    assert params == {"scope": "repository:x/y:pull"}


@pytest.mark.parametrize("realm", [None, "", "ftp://x/token", "/relative"])
def test_token_request_needs_an_http_realm(realm: str | None) -> None:
    params = {} if realm is None else {"realm": realm}
    with pytest.raises(InternalError, match="realm"):
        token_request(Challenge("bearer", params), "x")


# ---------------------------------------------------------------------------------------------
# Token responses


def test_token_field_with_expiry() -> None:
    token = parse_token_response({"token": "abc", "expires_in": 300}, now=1000.0)
    assert token.value == "abc"
    assert token.expires_at == 1000.0 + 300 - 10


def test_access_token_field_and_default_lifetime() -> None:
    token = parse_token_response({"access_token": "abc"}, now=0.0)
    assert token.value == "abc"
    assert token.expires_at == 60 - 10


def test_short_lived_token_keeps_half_its_life() -> None:
    assert parse_token_response({"token": "t", "expires_in": 4}, now=0.0).expires_at == 2.0


@pytest.mark.parametrize("expires_in", [0, -5, "300", True, None])
def test_bad_expiry_falls_back_to_default(expires_in: Any) -> None:
    assert parse_token_response({"token": "t", "expires_in": expires_in}, 0.0).expires_at == 50.0


@pytest.mark.parametrize("body", [None, [], "token", {}, {"token": ""}, {"token": 5}])
def test_token_response_without_a_token(body: Any) -> None:
    with pytest.raises(InternalError, match="token"):
        parse_token_response(body, 0.0)


def test_token_value_not_in_repr() -> None:
    assert "sekrit" not in repr(parse_token_response({"token": "sekrit"}, 0.0))


# ---------------------------------------------------------------------------------------------
# Retry-After


def test_retry_after_seconds() -> None:
    assert parse_retry_after("7", now=0.0) == 7.0
    assert parse_retry_after(" 0 ", now=0.0) == 0.0


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(header, now) == pytest.approx(42.0)
    past = email.utils.formatdate(now - 42, usegmt=True)
    assert parse_retry_after(past, now) == 0.0


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "-3", "1.5", "\u00b2", "\u0663", "9" * 5000],
    ids=["none", "empty", "word", "negative", "fraction", "superscript", "arabic", "huge"],
)
def test_retry_after_unusable(value: str | None) -> None:
    # Digits that int() refuses (other scripts', or more than 4300 of them) included.
    assert parse_retry_after(value, 0.0) is None


# ---------------------------------------------------------------------------------------------
# Manifests


def _index(media_type: str | None, entries: list[dict[str, Any]]) -> bytes:
    document: dict[str, Any] = {"schemaVersion": 2, "manifests": entries}
    if media_type:
        document["mediaType"] = media_type
    return json.dumps(document).encode()


def _entry(platform: str | None, digest_char: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "mediaType": OCI_MANIFEST,
        "digest": "sha256:" + digest_char * 64,
        "size": 500,
        **extra,
    }
    if platform:
        parts = platform.split("/")
        entry["platform"] = {"os": parts[0], "architecture": parts[1]}
        if len(parts) > 2:
            entry["platform"]["variant"] = parts[2]
    return entry


DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
def test_parse_index(media_type: str) -> None:
    body = _index(media_type, [_entry("linux/amd64", "a"), _entry("linux/arm64/v8", "b")])
    manifest = parse_manifest(body, media_type, DIGEST)
    assert manifest.is_index
    assert manifest.media_type == media_type
    assert [d.digest for d in manifest.manifests] == ["sha256:" + "a" * 64, "sha256:" + "b" * 64]
    assert manifest.platforms() == (Platform("linux", "amd64"), Platform("linux", "arm64", "v8"))
    assert manifest.size == len(body)


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_parse_image_manifest(media_type: str) -> None:
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "config": {}, "layers": []}
    ).encode()
    manifest = parse_manifest(body, "application/octet-stream", DIGEST)
    assert not manifest.is_index
    assert manifest.media_type == media_type
    assert manifest.platforms() == ()


def test_json_nested_too_deep_is_an_internal_error() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InternalError, match="nested too deep"):
        parse_manifest(body, "application/vnd.oci.image.manifest.v1+json", DIGEST)


def test_media_type_from_header_when_body_has_none() -> None:
    body = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()
    manifest = parse_manifest(body, DOCKER_MANIFEST + "; charset=utf-8", DIGEST)
    assert manifest.media_type == DOCKER_MANIFEST


def test_media_type_from_shape_when_nothing_says() -> None:
    assert parse_manifest(_index(None, []), None, DIGEST).media_type == OCI_INDEX
    image = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()
    assert parse_manifest(image, "", DIGEST).media_type == OCI_MANIFEST


def test_schema1_is_refused_with_a_clear_message() -> None:
    body = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    with pytest.raises(InternalError, match="unsupported media type"):
        parse_manifest(body, "application/vnd.docker.distribution.manifest.v1+prettyjws", DIGEST)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"\xff\xfe",
        json.dumps({"mediaType": OCI_INDEX, "manifests": "no"}).encode(),
        _index(OCI_INDEX, [{"digest": "sha256:short"}]),
        _index(OCI_INDEX, ["not an object"]),  # type: ignore[list-item]
        json.dumps({"mediaType": "application/vnd.oci.artifact.manifest.v1+json"}).encode(),
    ],
)
def test_bad_manifests_raise_internal_error(body: bytes) -> None:
    with pytest.raises(InternalError):
        parse_manifest(body, None, DIGEST)


def test_architecture_aliases_are_folded() -> None:
    assert normalize_platform("Linux", "x86_64") == Platform("linux", "amd64")
    assert normalize_platform("linux", "aarch64", "V8") == Platform("linux", "arm64", "v8")
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"


def test_attestations_are_not_platforms() -> None:
    entries = [
        _entry("linux/amd64", "a"),
        _entry(
            "unknown/unknown",
            "b",
            annotations={"vnd.docker.reference.type": "attestation-manifest"},
        ),
        _entry("linux/amd64", "c"),  # a repeat
        _entry(None, "d"),
    ]
    manifest = parse_manifest(_index(OCI_INDEX, entries), None, DIGEST)
    assert index_platforms(manifest.manifests) == (Platform("linux", "amd64"),)
    assert manifest.manifests[1].is_attestation


# ---------------------------------------------------------------------------------------------
# Platform choice


def _descriptors(*platforms: str) -> list[Descriptor]:
    out = []
    for number, text in enumerate(platforms):
        parts = text.split("/")
        out.append(
            Descriptor(
                OCI_MANIFEST,
                f"sha256:{number:064d}",
                1,
                Platform(parts[0], parts[1], parts[2] if len(parts) > 2 else ""),
            )
        )
    return out


def _chosen(descriptors: list[Descriptor], wanted: Platform) -> int | None:
    chosen = choose_platform(descriptors, wanted)
    return None if chosen is None else descriptors.index(chosen)


def test_choose_exact_os_and_arch() -> None:
    entries = _descriptors("linux/arm64/v8", "linux/amd64", "windows/amd64")
    assert _chosen(entries, Platform("linux", "amd64")) == 1
    assert _chosen(entries, Platform("windows", "amd64")) == 2
    assert _chosen(entries, Platform("linux", "s390x")) is None


def test_arm64_without_variant_means_v8() -> None:
    assert _chosen(_descriptors("linux/arm64"), Platform("linux", "arm64", "v8")) == 0
    assert _chosen(_descriptors("linux/arm64/v8"), Platform("linux", "arm64")) == 0


def test_specific_variant_is_required_when_asked() -> None:
    entries = _descriptors("linux/arm/v6", "linux/arm/v7")
    assert _chosen(entries, Platform("linux", "arm", "v6")) == 0
    assert _chosen(entries, Platform("linux", "arm", "v7")) == 1
    assert _chosen(_descriptors("linux/arm/v6"), Platform("linux", "arm", "v7")) is None


def test_without_variant_the_default_variant_wins_then_index_order() -> None:
    assert _chosen(_descriptors("linux/arm/v6", "linux/arm/v7"), Platform("linux", "arm")) == 1
    assert _chosen(_descriptors("linux/arm/v6", "linux/arm/v5"), Platform("linux", "arm")) == 0
    amd = _descriptors("linux/amd64/v3", "linux/amd64")
    assert _chosen(amd, Platform("linux", "amd64")) == 1


def test_attestation_is_never_chosen() -> None:
    attestation = Descriptor(
        OCI_MANIFEST,
        "sha256:" + "a" * 64,
        1,
        Platform("linux", "amd64"),
        {"vnd.docker.reference.type": "attestation-manifest"},
    )
    assert choose_platform([attestation], Platform("linux", "amd64")) is None


# ---------------------------------------------------------------------------------------------
# Digests


def test_compute_and_match_digest() -> None:
    body = b'{"schemaVersion":2}'
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert compute_digest(body) == digest
    assert digest_matches(body, digest)
    assert not digest_matches(body + b" ", digest)
    sha512 = "sha512:" + hashlib.sha512(body).hexdigest()
    assert digest_matches(body, sha512)
    assert not digest_matches(body, "md5:" + "0" * 32)


# ---------------------------------------------------------------------------------------------
# Hosts


def test_docker_hub_api_host() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("index.docker.io") == "registry-1.docker.io"
    assert api_host("quay.io") == "quay.io"
    assert api_host("localhost:5000") == "localhost:5000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quay.io", ("quay.io", None)),
        ("Host:5000", ("host", 5000)),
        ("[::1]:5000", ("::1", 5000)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("https://host:8443/v2/", ("host", 8443)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text) == expected


def test_allow_list_matching() -> None:
    allowed = ["registry.internal", "127.0.0.1:5000", "[::1]:5000"]
    assert host_in("registry.internal", allowed)
    assert host_in("registry.internal", allowed, port=443)
    assert not host_in("registry.internal:5000", allowed)  # a bare host means default ports
    assert host_in("127.0.0.1:5000", allowed)
    assert host_in("127.0.0.1", allowed, port=5000)
    assert not host_in("127.0.0.1:5001", allowed)
    assert not host_in("127.0.0.1", allowed)
    assert host_in("::1", allowed, port=5000)
    assert not host_in("registry.internal.evil.com", allowed)


# ---------------------------------------------------------------------------------------------
# The address guard


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "internal"),  # carrier-grade NAT, not "private" in Python's table
        ("240.0.0.1", "address"),  # reserved; Python files it under private
        ("::ffff:169.254.169.254", "link-local"),  # IPv4-mapped
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 wrapping the metadata address
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 wrapping it
    ],
)
def test_internal_addresses_are_refused(address: str, problem: str) -> None:
    found = address_problem(ipaddress.ip_address(address))
    assert found is not None and problem in found


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.1.1", "2a04:4e42::1", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def _resolver(table: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


def test_guard_refuses_a_name_that_resolves_to_metadata() -> None:
    guard = AddressGuard(resolver=_resolver({"evil.example": ["169.254.169.254"]}))
    with pytest.raises(AddressRefused) as caught:
        guard.check("evil.example", 443)
    message = caught.value.message
    assert "evil.example:443" in message and "169.254.169.254" in message
    assert "--allow-registry evil.example:443" in message
    assert caught.value.reason == "Forbidden"


def test_guard_refuses_when_any_address_is_internal() -> None:
    guard = AddressGuard(resolver=_resolver({"mixed.example": ["8.8.8.8", "10.1.2.3"]}))
    with pytest.raises(AddressRefused, match=r"10\.1\.2\.3"):
        guard.check("mixed.example", 443)


def test_guard_passes_public_names_and_returns_what_to_dial() -> None:
    guard = AddressGuard(resolver=_resolver({"quay.io": ["3.3.3.3", "2600:1f18::1"]}))
    assert guard.check("quay.io", 443) == ["3.3.3.3", "2600:1f18::1"]


def test_guard_lets_allowed_registries_through() -> None:
    table = {"127.0.0.1": ["127.0.0.1"], "registry.internal": ["10.0.0.9"], "::1": ["::1"]}
    guard = AddressGuard(["127.0.0.1:5000", "registry.internal", "[::1]:5000"], _resolver(table))
    assert guard.check("127.0.0.1", 5000) == ["127.0.0.1"]
    assert guard.check("registry.internal", 443) == ["10.0.0.9"]
    assert guard.check("[::1]", 5000) == ["::1"]
    with pytest.raises(AddressRefused):
        guard.check("127.0.0.1", 5001)  # another port of an allowed host
    with pytest.raises(AddressRefused):
        guard.check("registry.internal", 8080)


def test_guard_handles_ipv6_scope_ids() -> None:
    guard = AddressGuard(resolver=_resolver({"link.example": ["fe80::1%eth0"]}))
    with pytest.raises(AddressRefused, match="link-local"):
        guard.check("link.example", 443)


def test_accept_header_lists_indexes_first() -> None:
    types = [part.strip() for part in ACCEPT_MANIFESTS.split(",")]
    assert types == [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST]
