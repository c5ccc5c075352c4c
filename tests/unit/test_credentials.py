"""Pull-secret parsing and registry matching (webhook/credentials.py), with plain Secret dicts."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from webhook.registry.credentials import (
    DOCKERCFG_TYPE,
    DOCKERCONFIGJSON_TYPE,
    Credential,
    Keyring,
    canonical_registry,
    entries_from_secret,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": b64(f"{user}:{password}")}


def dockerconfigjson(
    name: str, auths: dict[str, Any], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "team"}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": DOCKERCONFIGJSON_TYPE,
        "data": {".dockerconfigjson": b64(json.dumps({"auths": auths}))},
    }


def dockercfg(name: str, auths: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "team"},
        "type": DOCKERCFG_TYPE,
        "data": {".dockercfg": b64(json.dumps(auths))},
    }


def test_dockerconfigjson_auth_field() -> None:
    keyring = Keyring([dockerconfigjson("quay", {"quay.io": auth("bob", "s3cr:et")})])
    credential = keyring.lookup("quay.io", "org/app")
    assert credential == Credential("bob", "s3cr:et", "secret team/quay")


def test_username_password_fields() -> None:
    secret = dockerconfigjson("q", {"quay.io": {"username": "bob", "password": "pw"}})
    assert Keyring([secret]).lookup("quay.io") == Credential("bob", "pw", "secret team/q")


def test_dockercfg_legacy_format() -> None:
    secret = dockercfg("old", {"https://index.docker.io/v1/": {**auth("hub", "pw"), "email": "x"}})
    assert Keyring([secret]).lookup("docker.io", "library/mysql") == Credential(
        "hub", "pw", "secret team/old"
    )


@pytest.mark.parametrize(
    "key", ["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"]
)
@pytest.mark.parametrize("registry", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_aliases_all_match(key: str, registry: str) -> None:
    keyring = Keyring([dockerconfigjson("hub", {key: auth("hub", "pw")})])
    assert keyring.lookup(registry, "library/mysql") is not None


def test_url_keys_with_scheme_and_path() -> None:
    secret = dockerconfigjson("s", {"https://registry.example.com:5000/v2/": auth("u", "p")})
    keyring = Keyring([secret])
    assert keyring.lookup("registry.example.com:5000", "a/b") is not None
    assert keyring.lookup("REGISTRY.example.com:5000", "a/b") is not None


def test_port_must_match() -> None:
    keyring = Keyring([dockerconfigjson("s", {"registry.example.com:5000": auth("u", "p")})])
    assert keyring.lookup("registry.example.com") is None
    assert keyring.lookup("registry.example.com:5001") is None
    no_port = Keyring([dockerconfigjson("s", {"registry.example.com": auth("u", "p")})])
    assert no_port.lookup("registry.example.com:5000") is None


def test_other_registry_does_not_match() -> None:
    keyring = Keyring([dockerconfigjson("s", {"quay.io": auth("u", "p")})])
    assert keyring.lookup("docker.io", "library/mysql") is None
    assert keyring.lookup("evilquay.io") is None
    assert keyring.lookup("quay.io.evil.com") is None


def test_repository_prefix_keys_prefer_the_most_specific() -> None:
    secret = dockerconfigjson(
        "s",
        {
            "quay.io": auth("general", "p"),
            "quay.io/team": auth("team", "p"),
            "quay.io/team/app": auth("app", "p"),
        },
    )
    keyring = Keyring([secret])
    assert keyring.lookup("quay.io", "team/app").username == "app"  # type: ignore[union-attr]
    assert keyring.lookup("quay.io", "team/other").username == "team"  # type: ignore[union-attr]
    assert keyring.lookup("quay.io", "teamx/app").username == "general"  # type: ignore[union-attr]
    assert [c.username for c in keyring.candidates("quay.io", "team/app")] == [
        "app",
        "team",
        "general",
    ]


def test_wildcard_host_matches_one_label() -> None:
    keyring = Keyring([dockerconfigjson("s", {"*.example.com": auth("u", "p")})])
    assert keyring.lookup("registry.example.com") is not None
    assert keyring.lookup("example.com") is None
    assert keyring.lookup("a.b.example.com") is None


def test_exact_host_beats_wildcard() -> None:
    secret = dockerconfigjson(
        "s", {"*.example.com": auth("wild", "p"), "registry.example.com": auth("exact", "p")}
    )
    assert Keyring([secret]).lookup("registry.example.com").username == "exact"  # type: ignore[union-attr]


def test_excluded_secret_is_ignored() -> None:
    excluded = dockerconfigjson(
        "ex", {"quay.io": auth("u", "p")}, {"openshift.io/image.excludeSecret": "true"}
    )
    assert Keyring([excluded]).lookup("quay.io") is None
    not_excluded = dockerconfigjson(
        "ok", {"quay.io": auth("u", "p")}, {"openshift.io/image.excludeSecret": "false"}
    )
    assert Keyring([not_excluded]).lookup("quay.io") is not None


def test_namespace_secret_beats_global_and_global_is_a_fallback() -> None:
    namespace = dockerconfigjson("mine", {"quay.io": auth("mine", "p")})
    global_secret = dockerconfigjson(
        "global", {"quay.io": auth("global", "p"), "gcr.io": auth("g", "p")}
    )
    keyring = Keyring([namespace], global_secret)
    assert keyring.lookup("quay.io").username == "mine"  # type: ignore[union-attr]
    assert keyring.lookup("gcr.io").username == "g"  # type: ignore[union-attr]
    # Even a more specific global key loses to a namespace secret.
    specific_global = dockerconfigjson("global", {"quay.io/team": auth("global", "p")})
    assert Keyring([namespace], specific_global).lookup("quay.io", "team/x").username == "mine"  # type: ignore[union-attr]


def test_first_namespace_secret_wins_among_equals() -> None:
    first = dockerconfigjson("a", {"quay.io": auth("first", "p")})
    second = dockerconfigjson("b", {"quay.io": auth("second", "p")})
    assert Keyring([first, second]).lookup("quay.io").username == "first"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "secret",
    [
        {
            "type": "Opaque",
            "data": {".dockerconfigjson": b64('{"auths":{"quay.io":{"auth":"dTpw"}}}')},
        },
        {"type": DOCKERCONFIGJSON_TYPE, "data": {".dockerconfigjson": "not base64!"}},
        {"type": DOCKERCONFIGJSON_TYPE, "data": {".dockerconfigjson": b64("not json")}},
        {"type": DOCKERCONFIGJSON_TYPE, "data": {".dockerconfigjson": b64("[1, 2]")}},
        {"type": DOCKERCONFIGJSON_TYPE, "data": {".dockerconfigjson": b64('{"auths": []}')}},
        {"type": DOCKERCONFIGJSON_TYPE, "data": {}},
        {"type": DOCKERCONFIGJSON_TYPE},
        {"type": DOCKERCFG_TYPE, "data": {".dockercfg": b64('{"quay.io": "nope"}')}},
        {
            "type": DOCKERCONFIGJSON_TYPE,
            "data": {".dockerconfigjson": b64('{"auths":{"quay.io":{"auth":"%%%"}}}')},
        },
        {
            "type": DOCKERCONFIGJSON_TYPE,
            "data": {
                ".dockerconfigjson": b64('{"auths":{"quay.io":{"auth":"' + b64("nocolon") + '"}}}')
            },
        },
        {
            "type": DOCKERCONFIGJSON_TYPE,
            "data": {".dockerconfigjson": b64('{"auths":{"quay.io":{"email":"x"}}}')},
        },
    ],
)
def test_malformed_secrets_yield_nothing(secret: dict[str, Any]) -> None:
    assert entries_from_secret(secret) == []
    assert Keyring([secret]).lookup("quay.io") is None


def test_string_data_is_read_for_hand_written_objects() -> None:
    secret = {
        "type": DOCKERCONFIGJSON_TYPE,
        "metadata": {"name": "s"},
        "stringData": {".dockerconfigjson": json.dumps({"auths": {"quay.io": auth("u", "p")}})},
    }
    assert Keyring([secret]).lookup("quay.io") == Credential("u", "p", "secret s")


def test_password_never_in_repr() -> None:
    credential = Credential("bob", "hunter2", "secret team/quay")
    assert "hunter2" not in repr(credential)
    assert "hunter2" not in str(credential)
    keyring = Keyring([dockerconfigjson("q", {"quay.io": auth("bob", "hunter2")})])
    assert "hunter2" not in repr(keyring)


def test_empty_keyring_is_falsy() -> None:
    assert not Keyring()
    assert Keyring([dockerconfigjson("q", {"quay.io": auth("u", "p")})])


def test_canonical_registry() -> None:
    assert canonical_registry("Index.Docker.io") == "docker.io"
    assert canonical_registry("registry-1.docker.io") == "docker.io"
    assert canonical_registry("Quay.io") == "quay.io"
    assert canonical_registry("localhost:5000") == "localhost:5000"


def test_ipv6_registry_with_port() -> None:
    keyring = Keyring([dockerconfigjson("s", {"[fd00::1]:5000": auth("u", "p")})])
    assert keyring.lookup("[fd00::1]:5000") is not None
    assert keyring.lookup("[fd00::1]") is None
