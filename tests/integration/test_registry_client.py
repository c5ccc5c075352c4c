"""The registry client and the importer against a real distribution registry on loopback.

Images are pushed with crane (see conftest.py); digests are compared with `crane digest`.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from registry_fixtures import Registries, ScriptedProxy, free_port

from webhook.controller.importer import ImportResult, import_tag
from webhook.model.streams import LEGACY, PRESERVE_ORIGINAL, parse_tag_reference
from webhook.registry.client import ClientConfig, RegistryClient, Repository
from webhook.registry.credentials import Credential, Keyring
from webhook.registry.errors import (
    AddressRefused,
    DigestMismatch,
    InternalError,
    NotFound,
    Unauthorized,
)
from webhook.registry.guard import system_resolver
from webhook.registry.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Platform,
)

pytestmark = pytest.mark.integration


def pull_secret(registry: str, user: str, password: str, name: str = "pull") -> dict[str, Any]:
    config = {
        "auths": {registry: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": "team"},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def run_import(
    client: RegistryClient,
    source: str,
    *,
    mode: str | None = None,
    annotations: dict[str, str] | None = None,
    keyring: Keyring | None = None,
    previous: ImportResult | None = None,
) -> ImportResult:
    spec: dict[str, Any] = {
        "name": "t",
        "from": {"kind": "DockerImage", "name": source},
        "generation": 2,
        "importPolicy": {"importMode": mode} if mode else {},
        "annotations": annotations or {},
    }
    return import_tag(
        parse_tag_reference(spec),
        namespace="team",
        stream="s",
        client=client,
        keyring=keyring,
        previous=previous,
    )


def split(ref: str) -> tuple[str, str]:
    path, _, tag = ref.partition(":")
    return path, tag


# ---------------------------------------------------------------------------------------------
# Importing from an open registry


@pytest.mark.parametrize("image", ["single_docker", "single_oci"])
def test_import_of_a_tag_pins_cranes_digest(
    registries: Registries, make_client: Any, image: str
) -> None:
    ref = getattr(registries.images, image)
    digest = registries.images.digests[ref]
    path, _ = split(ref)
    result = run_import(make_client(), f"{registries.open.host}/{ref}")
    assert result.condition is None
    assert result.event is not None
    assert result.event["image"] == digest
    assert result.event["dockerImageReference"] == f"{registries.open.host}/{path}@{digest}"
    assert result.event["generation"] == 2
    expected = DOCKER_MANIFEST if image == "single_docker" else OCI_MANIFEST
    assert result.media_type == expected


def test_head_digest_equals_get_digest(registries: Registries, make_client: Any) -> None:
    client = make_client()
    for ref, digest in registries.images.digests.items():
        path, tag = split(ref)
        repo = Repository(registries.open.host, path)
        head = client.head_manifest(repo, tag)
        manifest = client.get_manifest(repo, tag)
        assert head.digest == manifest.digest == digest, ref
        assert head.media_type == manifest.media_type
        assert client.resolve_digest(repo, tag) == digest
        # By digest too: what a pinned reference fetches.
        assert client.get_manifest(repo, digest).digest == digest
        assert client.head_manifest(repo, digest).digest == digest


def test_missing_tag_and_repository_are_not_found(registries: Registries, make_client: Any) -> None:
    client = make_client()
    result = run_import(client, f"{registries.open.host}/test/app:nope")
    assert result.reason == "NotFound"
    message = result.condition["message"]  # type: ignore[index]
    assert f"{registries.open.host}/test/app:nope" in message
    assert "404" in message and "MANIFEST_UNKNOWN" in message

    missing_repo = run_import(client, f"{registries.open.host}/test/none:1")
    assert missing_repo.reason == "NotFound"
    with pytest.raises(NotFound):
        client.head_manifest(Repository(registries.open.host, "test/app"), "nope")
    with pytest.raises(NotFound, match="manifest"):
        client.get_manifest(Repository(registries.open.host, "test/app"), "sha256:" + "0" * 64)


# ---------------------------------------------------------------------------------------------
# Multi-arch


@pytest.mark.parametrize(
    ("image", "media_type"), [("multi_oci", OCI_INDEX), ("multi_docker", DOCKER_MANIFEST_LIST)]
)
def test_preserve_original_pins_the_index(
    registries: Registries, make_client: Any, image: str, media_type: str
) -> None:
    ref = getattr(registries.images, image)
    result = run_import(make_client(), f"{registries.open.host}/{ref}", mode=PRESERVE_ORIGINAL)
    assert result.event is not None
    assert result.event["image"] == registries.images.digests[ref]
    assert result.media_type == media_type
    assert result.platforms == (Platform("linux", "amd64"), Platform("linux", "arm64", "v8"))


def test_default_mode_is_preserve_original(registries: Registries, make_client: Any) -> None:
    ref = registries.images.multi_oci
    result = run_import(make_client(), f"{registries.open.host}/{ref}")
    assert result.import_mode == PRESERVE_ORIGINAL
    assert result.event["image"] == registries.images.digests[ref]  # type: ignore[index]


@pytest.mark.parametrize("image", ["multi_oci", "multi_docker"])
@pytest.mark.parametrize(
    ("annotations", "platform"),
    [
        ({}, "linux/amd64"),
        ({"importer.image.openshift.io/prefer-arch": "arm64"}, "linux/arm64/v8"),
        ({"importer.image.openshift.io/prefer-arch": "x86_64"}, "linux/amd64"),
    ],
)
def test_legacy_picks_one_platform(
    registries: Registries,
    make_client: Any,
    image: str,
    annotations: dict[str, str],
    platform: str,
) -> None:
    ref = getattr(registries.images, image)
    result = run_import(
        make_client(), f"{registries.open.host}/{ref}", mode=LEGACY, annotations=annotations
    )
    assert result.event is not None
    assert result.event["image"] == registries.images.platform_digests[platform]
    assert result.manifest_digest == registries.images.digests[ref]


def test_legacy_without_amd64_is_not_found(registries: Registries, make_client: Any) -> None:
    ref = registries.images.arm_only
    result = run_import(make_client(), f"{registries.open.host}/{ref}", mode=LEGACY)
    assert result.reason == "NotFound"
    assert "linux/arm64/v8" in result.condition["message"]  # type: ignore[index]


def test_unchanged_tag_costs_one_head(registries: Registries, make_client: Any) -> None:
    seen: list[tuple[str, str, int]] = []
    client = make_client(
        on_response=lambda host, method, status: seen.append((host, method, status))
    )
    source = f"{registries.open.host}/{registries.images.multi_oci}"
    first = run_import(client, source, mode=LEGACY)
    seen.clear()
    again = run_import(client, source, mode=LEGACY, previous=first)
    assert again.unchanged
    assert again.event["image"] == first.event["image"]  # type: ignore[index]
    assert [(method, status) for _, method, status in seen] == [("HEAD", 200)]


# ---------------------------------------------------------------------------------------------
# Basic auth (htpasswd)


def test_htpasswd_without_credentials_is_unauthorized(
    registries: Registries, make_client: Any
) -> None:
    result = run_import(
        make_client(), f"{registries.htpasswd.host}/{registries.images.single_docker}"
    )
    assert result.reason == "Unauthorized"
    message = result.condition["message"]  # type: ignore[index]
    assert "401" in message and "no credentials were sent" in message
    assert registries.htpasswd.host in message


def test_htpasswd_with_wrong_password_is_unauthorized(
    registries: Registries, make_client: Any
) -> None:
    keyring = Keyring([pull_secret(registries.htpasswd.host, "alice", "wrong-password")])
    result = run_import(
        make_client(),
        f"{registries.htpasswd.host}/{registries.images.single_docker}",
        keyring=keyring,
    )
    assert result.reason == "Unauthorized"
    message = result.condition["message"]  # type: ignore[index]
    assert "secret team/pull" in message
    assert "wrong-password" not in message


def test_htpasswd_with_credentials_imports(registries: Registries, make_client: Any) -> None:
    password = registries.users["alice"]
    keyring = Keyring([pull_secret(registries.htpasswd.host, "alice", password)])
    ref = registries.images.single_docker
    seen: list[tuple[str, str, int]] = []
    client = make_client(
        on_response=lambda host, method, status: seen.append((host, method, status))
    )
    result = run_import(client, f"{registries.htpasswd.host}/{ref}", keyring=keyring)
    assert result.event is not None
    assert result.event["image"] == registries.images.digests[ref]
    # The registry's basic challenge is remembered: the next request sends credentials at once.
    seen.clear()
    client.head_manifest(
        Repository(registries.htpasswd.host, "test/app", Credential("alice", password)), "v1"
    )
    assert [status for _, _, status in seen] == [200]


# ---------------------------------------------------------------------------------------------
# Bearer tokens (auth: token)


def test_token_auth_with_credentials_imports_and_reuses_the_token(
    registries: Registries, make_client: Any
) -> None:
    keyring = Keyring([pull_secret(registries.token.host, "alice", registries.users["alice"])])
    client = make_client()
    before = len(registries.token_server.requests)
    for ref in (registries.images.single_docker, registries.images.single_oci):
        result = run_import(client, f"{registries.token.host}/{ref}", keyring=keyring)
        assert result.event is not None
        assert result.event["image"] == registries.images.digests[ref]
    issued = registries.token_server.requests[before:]
    assert len(issued) == 1  # one token for repository:test/app:pull, reused
    assert issued[0]["user"] == "alice"
    assert issued[0]["query"]["scope"] == ["repository:test/app:pull"]
    assert issued[0]["query"]["service"] == ["imagestreams-test-registry"]


def test_token_auth_anonymous(registries: Registries, make_client: Any) -> None:
    client = make_client()
    public = run_import(client, f"{registries.token.host}/{registries.images.public}")
    assert public.event is not None
    assert public.event["image"] == registries.images.digests[registries.images.public]
    private = run_import(client, f"{registries.token.host}/{registries.images.single_docker}")
    assert private.reason == "Unauthorized"


def test_token_server_refusing_credentials_is_unauthorized(
    registries: Registries, make_client: Any
) -> None:
    keyring = Keyring([pull_secret(registries.token.host, "alice", "not-her-password")])
    result = run_import(
        make_client(), f"{registries.token.host}/{registries.images.single_docker}", keyring=keyring
    )
    assert result.reason == "Unauthorized"
    message = result.condition["message"]  # type: ignore[index]
    assert "token server" in message and "secret team/pull" in message
    assert "not-her-password" not in message


def test_token_realm_is_guarded_too(registries: Registries, make_client: Any) -> None:
    # The registry is allowed, its token server (another loopback port) is not.
    client = make_client(allowed=(registries.token.host,))
    result = run_import(client, f"{registries.token.host}/{registries.images.public}")
    assert result.reason == "Forbidden"
    assert registries.token_server.host in result.condition["message"]  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# Failures


def test_registry_that_is_down_is_unreachable(make_client: Any) -> None:
    host = f"127.0.0.1:{free_port()}"
    client = make_client(allowed=(host,), insecure=(host,), connect_timeout=2.0)
    result = run_import(client, f"{host}/test/app:v1")
    assert result.reason == "Unreachable"
    message = result.condition["message"]  # type: ignore[index]
    assert f"could not reach registry {host}" in message
    assert "refused" in message


def test_plain_http_needs_insecure(registries: Registries, make_client: Any) -> None:
    client = make_client(insecure=())
    source = f"{registries.open.host}/{registries.images.single_docker}"
    # The tag's own importPolicy.insecure allows plain HTTP …
    spec = {
        "name": "t",
        "from": {"kind": "DockerImage", "name": source},
        "importPolicy": {"insecure": True},
    }
    tag = parse_tag_reference(spec)
    assert import_tag(tag, namespace="team", stream="s", client=client).succeeded
    # … for that tag only: another tag on the same client is not downgraded.
    result = run_import(client, source)
    assert result.reason == "TLSHandshakeFailed"
    message = result.condition["message"]  # type: ignore[index]
    assert "TLS" in message and "importPolicy.insecure" in message


def test_address_guard_refuses_loopback_unless_allowed(
    registries: Registries, make_client: Any
) -> None:
    source = f"{registries.open.host}/{registries.images.single_docker}"
    refused = run_import(make_client(allowed=()), source)
    assert refused.reason == "Forbidden"
    message = refused.condition["message"]  # type: ignore[index]
    assert "127.0.0.1" in message and "loopback" in message
    assert f"--allow-registry {registries.open.host}" in message
    with pytest.raises(AddressRefused):
        make_client(allowed=()).head_manifest(Repository(registries.open.host, "test/app"), "v1")
    # Another port of the same host is not allowed by allowing one.
    other_port = f"127.0.0.1:{free_port()}"
    assert run_import(make_client(allowed=(other_port,)), source).reason == "Forbidden"
    assert run_import(make_client(allowed=(registries.open.host,)), source).succeeded


def test_localhost_name_is_guarded(registries: Registries, make_client: Any) -> None:
    port = registries.open.host.rsplit(":", 1)[1]
    result = run_import(make_client(allowed=()), f"localhost:{port}/test/app:v1")
    assert result.reason == "Forbidden"
    assert "loopback" in result.condition["message"]  # type: ignore[index]


def test_manifest_size_limit(registries: Registries, make_client: Any) -> None:
    client = make_client(max_manifest_bytes=100)
    result = run_import(client, f"{registries.open.host}/{registries.images.multi_oci}")
    assert result.reason == "InternalError"
    assert "larger than 100 bytes" in result.condition["message"]  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# Misbehaving registries (a scripted proxy in front of the real one)


def test_retry_after_on_429_is_honoured(
    registries: Registries, make_client: Any, scripted_proxy: ScriptedProxy
) -> None:
    scripted_proxy.canned = [(429, {"Retry-After": "1"})]
    hosts = (scripted_proxy.host,)
    client = make_client(allowed=hosts, insecure=hosts)
    started = time.monotonic()
    result = run_import(client, f"{scripted_proxy.host}/{registries.images.single_docker}")
    elapsed = time.monotonic() - started
    assert result.event is not None
    assert result.event["image"] == registries.images.digests[registries.images.single_docker]
    statuses = [status for _, method, _, status in scripted_proxy.log if method == "GET"]
    assert statuses[:2] == [429, 200]
    times = [when for when, method, _, _ in scripted_proxy.log if method == "GET"]
    assert times[1] - times[0] >= 0.95
    assert elapsed >= 0.95


def test_retry_after_on_503_and_the_bounds(
    registries: Registries, make_client: Any, scripted_proxy: ScriptedProxy
) -> None:
    hosts = (scripted_proxy.host,)
    waits: list[float] = []
    client = make_client(allowed=hosts, insecure=hosts, sleep=waits.append, max_retries=2)
    source = f"{scripted_proxy.host}/{registries.images.single_docker}"

    scripted_proxy.canned = [(503, {"Retry-After": "3"}), (429, {})]
    assert run_import(client, source).succeeded
    assert waits == [3.0, 2.0]  # the server's wait, then our own backoff for the bare 429

    # More refusals than retries: fail with the registry's answer.
    waits.clear()
    scripted_proxy.canned = [(429, {"Retry-After": "1"})] * 3
    result = run_import(client, source)
    assert result.reason == "RateLimited"
    assert waits == [1.0, 1.0]
    assert "429" in result.condition["message"]  # type: ignore[index]
    assert result.retry_after == 1.0

    # A wait longer than the bound is not slept: the caller gets retry_after to schedule.
    waits.clear()
    scripted_proxy.canned = [(503, {"Retry-After": "3600"})]
    result = run_import(client, source)
    assert waits == []
    assert result.reason == "Unavailable"
    assert result.retry_after == 3600.0
    assert "retry after 3600s" in result.condition["message"]  # type: ignore[index]


def test_tampered_manifest_is_rejected(
    registries: Registries, make_client: Any, scripted_proxy: ScriptedProxy
) -> None:
    scripted_proxy.tamper = True
    hosts = (scripted_proxy.host,)
    client = make_client(allowed=hosts, insecure=hosts)
    ref = registries.images.single_docker
    digest = registries.images.digests[ref]
    result = run_import(client, f"{scripted_proxy.host}/{ref}")
    assert result.reason == "InternalError"
    message = result.condition["message"]  # type: ignore[index]
    assert digest in message and "altered" in message
    repo = Repository(scripted_proxy.host, "test/app")
    with pytest.raises(DigestMismatch):
        client.get_manifest(repo, digest)  # by digest: checked against the digest asked for
    with pytest.raises(DigestMismatch):
        client.get_manifest(repo, "v1")  # by tag: checked against Docker-Content-Digest
    # HEAD carries no body, so the advertised digest is all there is; a GET is what verifies.
    assert client.head_manifest(repo, "v1").digest == digest


def test_error_classes_carry_status(registries: Registries, make_client: Any) -> None:
    client = make_client()
    with pytest.raises(Unauthorized) as caught:
        client.head_manifest(Repository(registries.htpasswd.host, "test/app"), "v1")
    assert caught.value.status == 401
    down = f"127.0.0.1:{free_port()}"
    with pytest.raises(InternalError) as down_error:
        make_client(allowed=(down,), insecure=(down,)).get_manifest(Repository(down, "x"), "1")
    assert down_error.value.status is None  # no HTTP answer at all


def test_expired_token_is_renewed(registries: Registries, make_client: Any) -> None:
    keyring = Keyring([pull_secret(registries.token.host, "alice", registries.users["alice"])])
    client = make_client()
    source = f"{registries.token.host}/{registries.images.single_docker}"
    registries.token_server.lifetime = 1  # renewed after half its life: 0.5 s
    try:
        before = len(registries.token_server.requests)
        assert run_import(client, source, keyring=keyring).succeeded
        assert run_import(client, source, keyring=keyring).succeeded
        assert len(registries.token_server.requests) == before + 1  # still fresh: reused
        time.sleep(0.6)
        assert run_import(client, source, keyring=keyring).succeeded
        assert len(registries.token_server.requests) == before + 2
    finally:
        registries.token_server.lifetime = 300


def test_credentials_never_reach_logs_or_messages(
    registries: Registries, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    password = registries.users["alice"]
    encoded = base64.b64encode(f"alice:{password}".encode()).decode()
    good = Keyring([pull_secret(registries.htpasswd.host, "alice", password)])
    caplog.set_level(logging.DEBUG)
    results = [
        run_import(make_client(), f"{registries.htpasswd.host}/test/app:v1", keyring=good),
        run_import(make_client(), f"{registries.htpasswd.host}/test/app:nope", keyring=good),
        run_import(make_client(), f"{registries.token.host}/test/app:v1", keyring=good),
    ]
    assert [r.reason for r in results] == [None, "NotFound", "Unauthorized"]
    text = caplog.text + repr(results) + repr(good)
    assert password not in text
    assert encoded not in text


# ---------------------------------------------------------------------------------------------
# Connections


def test_concurrent_imports_reuse_their_connections(registries: Registries) -> None:
    # The guard resolves once per connection it dials: counting resolutions counts them.
    dialled: list[str] = []

    def counting_resolver(host: str, port: int) -> list[str]:
        dialled.append(host)
        return system_resolver(host, port)

    workers, rounds = 16, 4  # more workers than requests' default pool of 10
    config = ClientConfig(allowed_registries=registries.hosts, insecure_registries=registries.hosts)
    repo = Repository(registries.open.host, split(registries.images.single_oci)[0])
    tag = split(registries.images.single_oci)[1]
    barrier = threading.Barrier(workers)

    def head(_: int) -> str | None:
        barrier.wait(10)  # all at once: as many connections in use as workers
        return client.head_manifest(repo, tag).digest

    with (
        RegistryClient(config, resolver=counting_resolver) as client,
        ThreadPoolExecutor(workers) as pool,
    ):
        client.head_manifest(repo, tag)  # learns that the registry speaks plain HTTP
        assert dialled  # every connection goes through the guard
        dialled.clear()
        for _ in range(rounds):
            assert len(set(pool.map(head, range(workers)))) == 1
    # Never more connections than were in use at once: each was kept and reused.
    assert 0 < len(dialled) <= workers


# ---------------------------------------------------------------------------------------------
# Scheduled checks sharing answers (controller.shared_answers)


def test_streams_following_one_tag_share_a_scheduled_check(
    registries: Registries, make_client: Any
) -> None:
    """Fifty streams' scheduled checks of one tag within the window: one HEAD; a private
    image checked with a pull secret is never answered from what anonymous access got."""
    from webhook.controller.shared_answers import SharedAnswers

    seen: list[tuple[str, int]] = []
    client = make_client(on_response=lambda host, method, status: seen.append((method, status)))
    now = [0.0]
    shared = SharedAnswers(client, 60.0, lambda: now[0])
    public = f"{registries.token.host}/{registries.images.public}"
    first = run_import(client, public)
    seen.clear()
    checks = [run_import(shared, public, previous=first) for _ in range(50)]
    assert all(check.unchanged for check in checks)
    assert seen == [("HEAD", 200)]

    private = f"{registries.token.host}/{registries.images.single_docker}"
    anonymous = run_import(shared, private)  # a namespace without the secret
    assert anonymous.reason == "Unauthorized"
    keyring = Keyring([pull_secret(registries.token.host, "alice", registries.users["alice"])])
    with_secret = run_import(client, private, keyring=keyring)
    seen.clear()
    again = run_import(shared, private, keyring=keyring, previous=with_secret)
    assert again.unchanged  # asked with alice's token, not answered from the 401
    assert ("HEAD", 200) in seen
    assert run_import(shared, private).reason == "Unauthorized"  # and not shared back

    now[0] = 61.0  # past the window: asked again
    seen.clear()
    assert run_import(shared, public, previous=first).unchanged
    assert seen == [("HEAD", 200)]
