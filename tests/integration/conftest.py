"""Fixtures for integration tests against a real OCI registry on loopback.

See registry_fixtures.py for how the registries, the token server, the scripted proxy and the
test images are made. The session fixture `registries` starts them once for all tests.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from registry_fixtures import (
    TOKEN_ISSUER,
    TOKEN_SERVICE,
    Crane,
    Registries,
    RegistryServer,
    ScriptedProxy,
    TokenIssuer,
    TokenServer,
    push_test_images,
    start_registry,
)

# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registries]:
    import bcrypt  # test dependency: the registry's htpasswd accepts bcrypt hashes only

    workdir = tmp_path_factory.mktemp("registry")
    storage = workdir / "storage"
    storage.mkdir()
    users = {"alice": secrets.token_urlsafe(12)}
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(
        "".join(
            f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4, b'2a')).decode()}\n"
            for user, password in users.items()
        )
    )
    issuer = TokenIssuer.generate()
    bundle = workdir / "token-ca.pem"
    bundle.write_bytes(issuer.cert_pem)
    token_server = TokenServer(issuer, users)
    token_server.start()

    started: list[RegistryServer] = []
    try:
        started.append(start_registry(workdir, storage, "open"))
        started.append(
            start_registry(
                workdir,
                storage,
                "htpasswd",
                {"htpasswd": {"realm": "imagestreams-test", "path": str(htpasswd)}},
            )
        )
        started.append(
            start_registry(
                workdir,
                storage,
                "token",
                {
                    "token": {
                        "realm": token_server.realm,
                        "service": TOKEN_SERVICE,
                        "issuer": TOKEN_ISSUER,
                        "rootcertbundle": str(bundle),
                    }
                },
            )
        )
        crane = Crane(workdir)
        images = push_test_images(crane, started[0].host, workdir)
        yield Registries(
            started[0], started[1], started[2], token_server, users, images, crane, workdir
        )
    finally:
        for server in started:
            server.stop()
        token_server.stop()


@pytest.fixture
def scripted_proxy(registries: Registries) -> Iterator[ScriptedProxy]:
    proxy = ScriptedProxy(registries.open.url)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def make_client(registries: Registries) -> Iterator[Callable[..., Any]]:
    """`make_client(allowed=…, insecure=…, **config)` → a RegistryClient, closed after the test.

    By default every test registry is both allowed past the address guard and insecure
    (they serve plain HTTP on loopback); tests of those two rules pass their own lists.
    """
    from webhook.registry.client import ClientConfig, RegistryClient

    clients: list[RegistryClient] = []

    def make(
        allowed: tuple[str, ...] | None = None,
        insecure: tuple[str, ...] | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        on_response: Callable[[str, str, int], None] | None = None,
        **options: Any,
    ) -> RegistryClient:
        config = ClientConfig(
            allowed_registries=registries.hosts if allowed is None else allowed,
            insecure_registries=registries.hosts if insecure is None else insecure,
            **options,
        )
        client = RegistryClient(config, sleep=sleep or time.sleep, on_response=on_response)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
