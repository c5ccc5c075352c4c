"""The webhook's thin list/watch client's configuration (webhook/kube/kubeconfig.py), over
plain data: kubectl's merge of a $KUBECONFIG list, the context's cluster and user, a pod's
service account, and when the kubernetes client has to connect instead."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from webhook.kube.kubeconfig import (
    RestConfig,
    Unsupported,
    from_kubeconfig,
    in_cluster,
    merge,
)
from webhook.kube.listwatch import Token, collection_path

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
B64 = base64.b64encode(PEM.encode()).decode()
SERVER = "https://127.0.0.1:6443"


def kubeconfig(cluster: dict[str, Any], user: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "clusters": [{"name": "c", "cluster": {"server": SERVER, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
        **extra,
    }


ACCEPTED = [
    ("client cert data", {"certificate-authority-data": B64}, {
        "client-certificate-data": B64, "client-key-data": B64,
    }, RestConfig(SERVER, ca_data=PEM, cert_data=PEM, key_data=PEM)),
    ("client cert files, relative", {"certificate-authority": "ca.crt"}, {
        "client-certificate": "u.crt", "client-key": "/abs/u.key",
    }, RestConfig(SERVER, ca_file="/conf/ca.crt", cert_file="/conf/u.crt", key_file="/abs/u.key")),
    ("token", {"insecure-skip-tls-verify": True}, {"token": "t0k"},
     RestConfig(SERVER, insecure=True, token="t0k")),
    ("token file, re-read", {"tls-server-name": "kubernetes"}, {"tokenFile": "tok"},
     RestConfig(SERVER, tls_server_name="kubernetes", token_file="/conf/tok")),
    ("a token wins over a token file", {}, {"token": "t0k", "tokenFile": "tok"},
     RestConfig(SERVER, token="t0k")),
    ("no user at all, extensions ignored", {"extensions": [{"name": "x"}]}, {},
     RestConfig(SERVER)),
    ("a string is not insecure", {"insecure-skip-tls-verify": "false"}, {}, RestConfig(SERVER)),
]  # fmt: skip


@pytest.mark.parametrize(("cluster", "user", "expected"), [a[1:] for a in ACCEPTED],
                         ids=[a[0] for a in ACCEPTED])  # fmt: skip
def test_the_thin_client_takes_what_it_can_do(
    cluster: dict[str, Any], user: dict[str, Any], expected: RestConfig
) -> None:
    merged = merge([("/conf", kubeconfig(cluster, user))])
    assert from_kubeconfig(merged, None, {}) == expected


FALLBACK = [
    ("exec plugin", {}, {"exec": {"command": "aws"}}, "user uses exec"),
    ("auth provider", {}, {"auth-provider": {"name": "oidc"}}, "user uses auth-provider"),
    ("basic auth", {}, {"username": "a", "password": "b"}, "user uses password, username"),
    ("impersonation", {}, {"token": "t", "as": "admin"}, "user uses as"),
    ("proxy-url", {"proxy-url": "http://proxy:3128"}, {}, "cluster uses proxy-url"),
    ("bad base64", {"certificate-authority-data": "%%%"}, {}, "not base64"),
]  # fmt: skip


@pytest.mark.parametrize(("cluster", "user", "reason"), [f[1:] for f in FALLBACK],
                         ids=[f[0] for f in FALLBACK])  # fmt: skip
def test_what_only_the_kubernetes_client_does_falls_back_with_the_reason(
    cluster: dict[str, Any], user: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Unsupported, match=reason):
        from_kubeconfig(merge([("/conf", kubeconfig(cluster, user))]), None, {})


PROXIES = [
    ({"HTTPS_PROXY": "http://proxy:3128"}, True),
    ({"https_proxy": "http://proxy:3128", "NO_PROXY": "127.0.0.1"}, False),
    ({"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "*"}, False),
    ({"HTTP_PROXY": "http://proxy:3128"}, False),  # an https:// server
    ({}, False),
]


@pytest.mark.parametrize(("environ", "falls_back"), PROXIES)
def test_a_proxy_the_kubernetes_client_would_use_falls_back(
    environ: dict[str, str], falls_back: bool
) -> None:
    merged = merge([("/conf", kubeconfig({}, {}))])
    if falls_back:
        with pytest.raises(Unsupported, match="HTTPS_PROXY"):
            from_kubeconfig(merged, None, environ)
    else:
        assert from_kubeconfig(merged, None, environ).server == SERVER


def test_contexts_are_chosen_by_name_and_a_missing_one_falls_back() -> None:
    doc = kubeconfig({}, {"token": "a"})
    doc["clusters"].append({"name": "c2", "cluster": {"server": "https://other:443/"}})
    doc["contexts"].append({"name": "second", "context": {"cluster": "c2", "user": "u"}})
    merged = merge([("/conf", doc)])
    assert from_kubeconfig(merged, "second", {}).server == "https://other:443"
    assert from_kubeconfig(merged, None, {}).server == SERVER
    with pytest.raises(Unsupported, match="no context 'nope'"):
        from_kubeconfig(merged, "nope", {})
    doc["contexts"][0]["context"]["cluster"] = "gone"
    with pytest.raises(Unsupported, match="no cluster"):
        from_kubeconfig(merge([("/conf", doc)]), None, {})


def test_a_kubeconfig_list_merges_as_kubectl_does() -> None:
    first = {
        "users": [{"name": "u", "user": {"tokenFile": "first-token"}}],
        "current-context": "",
    }
    second = kubeconfig({"certificate-authority": "ca.crt"}, {"token": "second"})
    second["current-context"] = "ctx"
    merged = merge([("/one", first), ("/two", None), ("/three", second)])
    config = from_kubeconfig(merged, None, {})
    # The first file to name user "u" wins; each path is its own file's.
    assert config.token_file == "/one/first-token" and config.token is None
    assert config.ca_file == "/three/ca.crt"


IN_CLUSTER = [
    ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
     "https://10.0.0.1:443"),
    ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"},
     "https://[fd00::1]:6443"),
]  # fmt: skip


@pytest.mark.parametrize(("environ", "server"), IN_CLUSTER)
def test_in_cluster_reads_the_service_account(environ: dict[str, str], server: str) -> None:
    assert in_cluster(environ, "/sa") == RestConfig(
        server, ca_file="/sa/ca.crt", token_file="/sa/token"
    )


def test_in_cluster_without_the_service_address_is_an_error() -> None:
    with pytest.raises(ValueError, match="KUBERNETES_SERVICE_PORT"):
        in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


def test_secrets_stay_out_of_repr() -> None:
    config = RestConfig(SERVER, token="s3cret", key_data="PRIVATE", cert_data=PEM)
    assert "s3cret" not in repr(config) and "PRIVATE" not in repr(config)
    assert "s3cret" not in repr(Token("s3cret", None))


def test_a_token_file_is_read_again_after_its_refresh_period(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    fresh, cached = Token(None, str(path), refresh=0.0), Token(None, str(path), refresh=3600)
    assert fresh.get() == cached.get() == "first"
    path.write_text("rotated\n")
    assert fresh.get() == "rotated" and cached.get() == "first"
    cached.expire()  # as after a 401
    assert cached.get() == "rotated"
    path.unlink()  # mid-rotation: the token read last stays
    assert fresh.get() == "rotated"


def test_collection_paths() -> None:
    assert collection_path("", "v1", "namespaces") == "/api/v1/namespaces"
    assert collection_path("image.openshift.io", "v1", "imagestreams") == (
        "/apis/image.openshift.io/v1/imagestreams"
    )
