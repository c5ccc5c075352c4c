"""The proxy rules (registry/proxies.py) over plain data, and the registry trust context."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.registry.guard import trust_context
from webhook.registry.proxies import ProxyConfig, ProxyError, parse_no_proxy, redacted
from webhook.tls.certs import new_ca

PROXY = "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("", "https://quay.io/v2/", False),
        ("quay.io", "https://quay.io/v2/", True),
        ("quay.io", "https://cdn.quay.io/v2/", True),  # a domain covers its subdomains
        (".quay.io", "https://cdn.quay.io/v2/", True),
        (".quay.io", "https://quay.io/v2/", True),
        ("quay.io", "https://notquay.io/v2/", False),
        ("registry.corp:5000", "https://registry.corp:5000/v2/", True),
        ("registry.corp:5000", "https://registry.corp/v2/", False),  # that port only
        ("10.0.0.0/8", "https://10.1.2.3:5000/v2/", True),
        ("10.0.0.0/8", "https://11.1.2.3/v2/", False),
        ("10.0.0.0/8", "https://ten.example/v2/", False),  # a CIDR never matches a name
        ("::1", "https://[::1]:5000/v2/", True),
        ("[fd00::]/8", "https://[fd00::5]/v2/", False),  # not a CIDR in brackets: a name
        ("*", "https://anything.example/v2/", True),
        (" quay.io , , gcr.io ", "https://gcr.io/v2/", True),
        ("QUAY.IO", "https://quay.io./v2/", True),
    ],
)
def test_no_proxy(no_proxy: str, url: str, direct: bool) -> None:
    config = ProxyConfig.from_settings(PROXY, PROXY, no_proxy)
    assert config.proxy_for(url) == (None if direct else PROXY)


def test_each_scheme_has_its_own_proxy() -> None:
    config = ProxyConfig.from_settings("http://secure.corp:3128", "")
    assert config.proxy_for("https://quay.io/v2/") == "http://secure.corp:3128"
    assert config.proxy_for("http://quay.io/v2/") is None
    both = ProxyConfig.from_settings(None, "proxy.corp:8080")  # no scheme: http://, as curl
    assert both.proxy_for("http://quay.io/v2/") == "http://proxy.corp:8080"
    assert both.proxy_for("https://quay.io/v2/") is None
    assert ProxyConfig().proxy_for("https://quay.io/v2/") is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("socks5://proxy.corp:1080", "SOCKS proxies are not supported"),
        ("http://:3128", "names no host"),
        ("http://proxy.corp:port", "is not a proxy URL"),
        ("http://proxy.corp:3128/path", "has a path"),
    ],
)
def test_bad_proxy_settings_are_refused_by_name(url: str, problem: str) -> None:
    with pytest.raises(ProxyError, match=problem) as caught:
        ProxyConfig.from_settings(url, None)
    assert "HTTPS proxy" in str(caught.value)


def test_a_bad_no_proxy_port_is_refused() -> None:
    with pytest.raises(ProxyError, match="port is not a number"):
        parse_no_proxy("registry.corp:http")


def test_proxy_passwords_never_show() -> None:
    url = "http://user:s3cret@proxy.corp:3128"
    assert redacted(url) == "http://proxy.corp:3128"
    with pytest.raises(ProxyError) as caught:
        ProxyConfig.from_settings("ftp://user:s3cret@proxy.corp", None)
    assert "s3cret" not in str(caught.value)


def test_trust_adds_private_cas_to_the_default_roots(tmp_path: Path) -> None:
    assert trust_context(()) is None  # requests' own default context then
    first, second = new_ca("first private CA"), new_ca("second private CA")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(first.cert_pem + second.cert_pem)
    context = trust_context([str(bundle)])
    assert context is not None
    subjects = [dict(x[0] for x in cert["subject"]) for cert in context.get_ca_certs()]
    names = {s.get("commonName") for s in subjects}
    assert {"first private CA", "second private CA"} <= names
    assert len(subjects) > 100  # the default roots are still there


def test_controller_proxy_flags_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook.cli.main import build_parser

    monkeypatch.setenv("HTTPS_PROXY", "http://shared.corp:3128")
    monkeypatch.setenv("NO_PROXY", ".corp.example")
    monkeypatch.delenv("IMAGESTREAMS_HTTPS_PROXY", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    args = build_parser().parse_args(["controller"])
    assert (args.https_proxy, args.http_proxy, args.no_proxy) == (
        "http://shared.corp:3128",
        "",
        ".corp.example",
    )
    # The chart's Secret-held URL (a password in it) wins over the shared variable ...
    monkeypatch.setenv("IMAGESTREAMS_HTTPS_PROXY", "http://u:p@proxy.corp:3128")
    assert build_parser().parse_args(["controller"]).https_proxy == "http://u:p@proxy.corp:3128"
    # ... and a flag over both.
    flagged = build_parser().parse_args(["controller", "--https-proxy", "http://other:1"])
    assert flagged.https_proxy == "http://other:1"
