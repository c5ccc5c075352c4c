"""certs-sync's rules: when the CA or the serving certificate is made again, and what the
caBundle becomes. Plain data in, decisions out; the API calls are tested end to end."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509

from webhook.cli.main import build_parser
from webhook.tls.certs import CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, new_ca, new_serving_cert
from webhook.tls.certsync import (
    Decision,
    SyncOptions,
    bundle_patch,
    decide,
    issue,
    next_ca_bundle,
    parse_duration,
    service_dns_names,
    validate,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
NAMES = service_dns_names("imagestreams", "imagestreams-system")


def material(now: dt.datetime = NOW, names: tuple[str, ...] = NAMES) -> dict[str, bytes]:
    """What a first run writes at `now`."""
    return issue(Decision(True, True, "first"), None, names, now)


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


# --- decide ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, {}, {"tls.crt": b"", "tls.key": b""}])
def test_nothing_yet_makes_everything(data: dict[str, bytes] | None) -> None:
    decision = decide(data, NAMES, NOW)
    assert (decision.new_ca, decision.new_serving) == (True, True)
    assert decision.reason == "no certificate yet"


def test_fresh_material_is_kept() -> None:
    decision = decide(material(), NAMES, NOW + DAY)
    assert not decision.changes
    assert decision.reason.startswith("valid until 2031-01-01")


def test_serving_certificate_is_renewed_before_expiry_with_the_same_ca() -> None:
    data = material()
    # Valid for 365 days; renewed once fewer than 30 are left.
    assert not decide(data, NAMES, NOW + 334 * DAY).changes
    decision = decide(data, NAMES, NOW + 336 * DAY)
    assert (decision.new_ca, decision.new_serving) == (False, True)
    assert "expires 2031-01-01" in decision.reason

    renewed = issue(decision, data, NAMES, NOW + 336 * DAY)
    assert renewed[CA_CERT] == data[CA_CERT] and renewed[CA_KEY] == data[CA_KEY]
    assert renewed[TLS_CERT] != data[TLS_CERT]
    load(renewed[TLS_CERT]).verify_directly_issued_by(load(data[CA_CERT]))
    assert not decide(renewed, NAMES, NOW + 337 * DAY).changes


def test_rotate_before_is_honoured() -> None:
    data = material()
    assert not decide(data, NAMES, NOW + 300 * DAY, rotate_before=60 * DAY).changes
    assert decide(data, NAMES, NOW + 306 * DAY, rotate_before=60 * DAY).new_serving


def test_new_service_name_reissues_the_serving_certificate() -> None:
    data = material()
    other = service_dns_names("renamed", "imagestreams-system")
    decision = decide(data, other, NOW)
    assert (decision.new_ca, decision.new_serving) == (False, True)
    assert "does not cover renamed.imagestreams-system.svc" in decision.reason


def test_ca_near_its_end_is_replaced_with_the_serving_certificate() -> None:
    data = material()
    # The CA lives 10 years; 20 days before its end both are made again.
    decision = decide(data, NAMES, NOW + dt.timedelta(days=3650 - 20))
    assert (decision.new_ca, decision.new_serving) == (True, True)
    assert decision.reason.startswith("CA expires")


def test_serving_certificate_never_outlives_its_ca() -> None:
    """A renewal when the CA has less than a certificate's lifetime left takes a new CA."""
    ca = new_ca(now=NOW - dt.timedelta(days=3650 - 200))  # 200 days left
    serving = new_serving_cert(ca, NAMES, now=NOW - 340 * DAY)  # 25 days left
    data = {CA_CERT: ca.cert_pem, CA_KEY: ca.key_pem}
    data |= {TLS_CERT: serving.cert_pem, TLS_KEY: serving.key_pem}
    decision = decide(data, NAMES, NOW)
    assert (decision.new_ca, decision.new_serving) == (True, True)
    assert "the CA expires before a new certificate would" in decision.reason


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (TLS_CERT, b"garbage", "tls.crt is not a PEM certificate"),
        (TLS_KEY, b"garbage", "tls.key is not an unencrypted PEM private key"),
        (TLS_KEY, None, "tls.key is missing"),
    ],
)
def test_broken_serving_pair_is_reissued(key: str, value: bytes | None, reason: str) -> None:
    data = material()
    if value is None:
        del data[key]
    else:
        data[key] = value
    decision = decide(data, NAMES, NOW)
    assert (decision.new_ca, decision.new_serving) == (False, True)
    assert decision.reason == reason


def test_mismatched_key_is_reissued() -> None:
    data = material()
    data[TLS_KEY] = material()[TLS_KEY]
    assert decide(data, NAMES, NOW).reason == "tls.key does not match tls.crt"


def test_certificate_from_another_ca_is_reissued() -> None:
    """E.g. the Secret written by cert-manager before switching to self-managed."""
    data = material()
    foreign = material()
    data[TLS_CERT], data[TLS_KEY] = foreign[TLS_CERT], foreign[TLS_KEY]
    decision = decide(data, NAMES, NOW)
    assert (decision.new_ca, decision.new_serving) == (False, True)
    assert decision.reason == "tls.crt was not issued by the CA in ca.crt"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({CA_KEY: None}, "CA: ca.key is missing"),
        (
            {CA_CERT: b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"},
            "CA: ca.crt is not a PEM certificate",
        ),
        ({CA_KEY: "other"}, "CA: ca.key does not match ca.crt"),
        ({CA_CERT: "leaf", CA_KEY: "leafkey"}, "CA: ca.crt is not a CA certificate"),
    ],
)
def test_broken_ca_makes_everything(change: dict[str, object], reason: str) -> None:
    data = material()
    for key, value in change.items():
        if value is None:
            del data[key]
        elif value == "other":
            data[key] = material()[CA_KEY]
        elif value == "leaf":
            data[key] = data[TLS_CERT]
        elif value == "leafkey":
            data[key] = data[TLS_KEY]
        else:
            assert isinstance(value, bytes)
            data[key] = value
    decision = decide(data, NAMES, NOW)
    assert (decision.new_ca, decision.new_serving) == (True, True)
    assert decision.reason == reason


def test_issue_keeps_other_keys_and_makes_a_verifiable_chain() -> None:
    data = issue(Decision(True, True, "x"), {"extra": b"kept"}, NAMES, NOW)
    assert data["extra"] == b"kept"
    leaf, ca = load(data[TLS_CERT]), load(data[CA_CERT])
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == list(NAMES)


def test_issue_without_changes_is_the_same_data() -> None:
    data = material()
    assert issue(Decision(False, False, "ok"), data, NAMES, NOW) == data


# --- the caBundle ------------------------------------------------------------------------


def test_bundle_trusting_the_ca_is_left_alone() -> None:
    ca = material()[CA_CERT]
    assert next_ca_bundle(ca, ca, NOW) is None
    other = material()[CA_CERT]
    assert next_ca_bundle(other + ca, ca, NOW) is None


def test_empty_bundle_gets_the_ca() -> None:
    ca = material()[CA_CERT]
    assert next_ca_bundle(b"", ca, NOW) == ca


def test_new_ca_keeps_the_previous_one_for_the_changeover() -> None:
    old, new = material()[CA_CERT], material()[CA_CERT]
    assert next_ca_bundle(old, new, NOW) == new + old


def test_only_one_previous_ca_is_kept_and_expired_or_garbage_ones_are_dropped() -> None:
    expired = material(NOW - dt.timedelta(days=4000))[CA_CERT]
    previous, older, new = (material()[CA_CERT] for _ in range(3))
    garbage = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
    assert next_ca_bundle(garbage + expired + previous + older, new, NOW) == new + previous


def test_bundle_patch_touches_only_webhooks_that_need_it() -> None:
    ca = material()[CA_CERT]
    b64 = base64.b64encode(ca).decode()
    ops = bundle_patch([("a.example.com", b64), ("b.example.com", None)], ca, NOW)
    assert ops == [
        {"op": "test", "path": "/webhooks/1/name", "value": "b.example.com"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64},
    ]
    assert bundle_patch([("a.example.com", b64)], ca, NOW) == []


# --- options -----------------------------------------------------------------------------


def test_service_names_cover_what_the_api_server_dials() -> None:
    assert service_dns_names("wh", "ns", "corp.local", ["wh.example.com"]) == (
        "wh.ns.svc",
        "wh.ns.svc.corp.local",
        "wh.ns",
        "wh",
        "wh.example.com",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", 30 * DAY),
        ("720h", 30 * DAY),
        ("1d12h", 1.5 * DAY),
        ("90m", dt.timedelta(minutes=90)),
        ("45", dt.timedelta(seconds=45)),
    ],
)
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30x", "d", "0d", "-1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_rotate_before_must_be_shorter_than_the_validity() -> None:
    options = SyncOptions("ns", "tls", "wh", "svc", "ns", rotate_before=365 * DAY)
    with pytest.raises(ValueError, match="shorter than the certificate's validity"):
        validate(options)


def test_cli_parses_the_verb() -> None:
    base = ["certs-sync", "--secret", "ns/tls", "--webhook", "wh", "--service", "svc"]
    args = build_parser().parse_args(
        [*base, "-n", "ns", "--rotate-before", "10d", "--interval", "1h"]
    )
    assert (args.secret, args.webhook, args.service, args.namespace) == (
        "ns/tls",
        "wh",
        "svc",
        "ns",
    )
    assert (args.rotate_before, args.interval, args.once) == (10 * 86400, 3600, False)
    assert build_parser().parse_args(base).rotate_before == 30 * 86400


def test_cli_rejects_both_modes_and_bad_durations(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["certs-sync", "--secret", "tls", "--webhook", "wh", "--service", "svc"]
    for extra in (["--once", "--interval", "1h"], ["--rotate-before", "soon"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(base + extra)
    assert "invalid duration 'soon'" in capsys.readouterr().err
