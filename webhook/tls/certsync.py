"""`imagestreams certs-sync`: the webhook's own CA and serving certificate, kept in a Secret.

The Helm chart's self-managed certificate mode runs this in a one-replica Deployment
(`--interval 1h`) and once more as a post-install/post-upgrade hook Job (`--once`). Each pass:

1. reads the `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, plus `ca.crt`, `ca.key`) and
   decides (`decide`, pure) whether the CA or the serving certificate must be made again:
   missing, unreadable, not matching its key, not issued by the CA, not covering the
   Service's DNS names, or expiring within `--rotate-before`;
2. writes the new material with optimistic concurrency (create, or replace at the
   resourceVersion it read; a conflict means another run won, so it reads again), owned by
   the webhook's Service so that deleting the release garbage-collects it;
3. makes the caBundle of every webhook in the named Mutating (and, if one exists,
   Validating) WebhookConfiguration trust the CA (`next_ca_bundle`, pure). When the CA
   itself changes, the previous CA stays in the bundle next to the new one, so pods still
   serving the old certificate keep working until the kubelet refreshes their volume.

Webhook pods mount the Secret as a volume; the kubelet updates it in place and the server
re-reads its certificate files when they change (`webhook.server.ReloadingSSLContext`):
rotation needs no restart. The serving certificate is replaced while the previous one
still has `--rotate-before` (30 days) to live, so a slow volume refresh is harmless.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import logging
import re
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook.kube import api, errors
from webhook.tls.certs import (
    CA_CERT,
    CA_KEY,
    SERVING_VALIDITY,
    TLS_CERT,
    TLS_KEY,
    KeyPair,
    new_ca,
    new_serving_cert,
)

log = logging.getLogger(__name__)

SECRET_TYPE = "kubernetes.io/tls"
MANAGED_BY = {"app.kubernetes.io/managed-by": "imagestreams-certs-sync"}
DEFAULT_ROTATE_BEFORE = dt.timedelta(days=30)
# Seconds per API call: a hung connection must not stall the loop forever.
_TIMEOUT = 30
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.DOTALL)
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> dt.timedelta:
    """`30d`, `720h`, `1d12h`, `90m`, `45s` (a bare number is seconds)."""
    value = text.strip()
    if value.isdigit():
        value += "s"
    match = _DURATION.fullmatch(value)
    if not value or match is None:
        raise ValueError(f"invalid duration {text!r} (examples: 30d, 720h, 90m)")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    result = dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if result <= dt.timedelta(0):
        raise ValueError(f"duration must be positive, not {text!r}")
    return result


def service_dns_names(
    service: str, namespace: str, cluster_domain: str = "cluster.local", extra: Sequence[str] = ()
) -> tuple[str, ...]:
    """The names a client may use for the Service; the API server uses `svc.ns.svc`."""
    names = [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
        f"{service}.{namespace}",
        service,
        *extra,
    ]
    return tuple(dict.fromkeys(n for n in names if n))


# --- the pure part: what the Secret holds, and what to do about it ----------------------


@dataclass(frozen=True)
class Decision:
    new_ca: bool
    new_serving: bool
    reason: str

    @property
    def changes(self) -> bool:
        return self.new_ca or self.new_serving


def decide(
    data: Mapping[str, bytes] | None,
    dns_names: Sequence[str],
    now: dt.datetime,
    rotate_before: dt.timedelta = DEFAULT_ROTATE_BEFORE,
    serving_validity: dt.timedelta = SERVING_VALIDITY,
) -> Decision:
    """Whether the CA and/or the serving certificate in `data` must be made again."""
    if not data or not any(data.get(k) for k in (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY)):
        return Decision(True, True, "no certificate yet")
    ca = _load_pair(data, CA_CERT, CA_KEY)
    if isinstance(ca, str):
        return Decision(True, True, f"CA: {ca}")
    if not _is_ca(ca.cert):
        return Decision(True, True, f"CA: {CA_CERT} is not a CA certificate")
    if ca.cert.not_valid_after_utc - now < rotate_before:
        return Decision(True, True, f"CA expires {_day(ca.cert.not_valid_after_utc)}")

    serving = _load_pair(data, TLS_CERT, TLS_KEY)
    reason: str | None = None
    if isinstance(serving, str):
        reason = serving
    elif not _issued_by(serving.cert, ca.cert):
        reason = f"{TLS_CERT} was not issued by the CA in {CA_CERT}"
    elif missing := [n for n in dns_names if n not in _dns_names(serving.cert)]:
        reason = f"{TLS_CERT} does not cover {', '.join(missing)}"
    elif serving.cert.not_valid_after_utc - now < rotate_before:
        reason = f"{TLS_CERT} expires {_day(serving.cert.not_valid_after_utc)}"
    if reason is None:
        assert not isinstance(serving, str)
        return Decision(False, False, f"valid until {_day(serving.cert.not_valid_after_utc)}")
    if ca.cert.not_valid_after_utc < now + serving_validity:
        # A certificate must not outlive its issuer: a new one needs a new CA as well.
        return Decision(True, True, f"{reason}; the CA expires before a new certificate would")
    return Decision(False, True, reason)


def issue(
    decision: Decision,
    data: Mapping[str, bytes] | None,
    dns_names: Sequence[str],
    now: dt.datetime,
    serving_validity: dt.timedelta = SERVING_VALIDITY,
) -> dict[str, bytes]:
    """The Secret's data after carrying out `decision` (the same data when nothing changes)."""
    current = dict(data or {})
    if not decision.changes:
        return current
    if decision.new_ca:
        ca = new_ca(now=now)
    else:
        loaded = _load_pair(current, CA_CERT, CA_KEY)
        if isinstance(loaded, str):
            raise ValueError(f"cannot reuse the CA: {loaded}")
        ca = loaded
    serving = new_serving_cert(ca, dns_names, now=now, validity=serving_validity)
    return {
        **current,
        CA_CERT: ca.cert_pem,
        CA_KEY: ca.key_pem,
        TLS_CERT: serving.cert_pem,
        TLS_KEY: serving.key_pem,
    }


def next_ca_bundle(current: bytes, ca_pem: bytes, now: dt.datetime) -> bytes | None:
    """The caBundle that trusts `ca_pem`, or None when `current` already does.

    The first certificate of the old bundle that is still valid stays after the new CA:
    during a CA rotation, pods keep serving the old certificate until their volume is
    refreshed. Anything unreadable or expired in the old bundle is dropped.
    """
    wanted = x509.load_pem_x509_certificate(ca_pem)
    kept: list[x509.Certificate] = []
    for block in _PEM_CERT.findall(current or b""):
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError:
            continue
        if cert == wanted:
            return None
        if cert.not_valid_after_utc > now:
            kept.append(cert)
    pems = [wanted, *kept[:1]]
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in pems)


def _load_pair(data: Mapping[str, bytes], cert_key: str, key_key: str) -> KeyPair | str:
    cert_pem, key_pem = data.get(cert_key), data.get(key_key)
    if not cert_pem or not key_pem:
        return f"{cert_key if not cert_pem else key_key} is missing"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return f"{cert_key} is not a PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return f"{key_key} is not an unencrypted PEM private key"
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return f"{key_key} is not an EC key"
    if _spki(cert.public_key()) != _spki(key.public_key()):
        return f"{key_key} does not match {cert_key}"
    return KeyPair(cert, key)


def _spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(sans.get_values_for_type(x509.DNSName))


def _day(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d")


# --- the edges: one run against the API server -------------------------------------------


@dataclass(frozen=True)
class SyncOptions:
    secret_namespace: str
    secret_name: str
    webhook: str
    service: str
    namespace: str  # the Service's namespace
    rotate_before: dt.timedelta = DEFAULT_ROTATE_BEFORE
    cluster_domain: str = "cluster.local"
    extra_dns: tuple[str, ...] = ()

    @property
    def dns_names(self) -> tuple[str, ...]:
        return service_dns_names(self.service, self.namespace, self.cluster_domain, self.extra_dns)


@dataclass
class SyncReport:
    reason: str = ""
    secret: str = "unchanged"  # created | updated | unchanged
    patched: list[str] = field(default_factory=list)  # "MutatingWebhookConfiguration/name"
    missing: list[str] = field(default_factory=list)

    def summary(self, options: SyncOptions) -> str:
        where = f"{options.secret_namespace}/{options.secret_name}"
        text = f"secret {where} {self.secret} ({self.reason})"
        if self.patched:
            text += f"; caBundle updated in {', '.join(self.patched)}"
        for name in self.missing:
            text += f"; {name} not found (its caBundle is set on the next run)"
        return text


def validate(options: SyncOptions) -> None:
    if options.rotate_before >= SERVING_VALIDITY:
        raise ValueError(
            f"--rotate-before must be shorter than the certificate's validity "
            f"({SERVING_VALIDITY.days}d), or every run would rotate"
        )
    if not options.secret_name or not options.webhook or not options.service:
        raise ValueError("--secret, --webhook and --service must not be empty")


def sync_once(api_client: Any, options: SyncOptions, now: dt.datetime | None = None) -> SyncReport:
    """One pass: the Secret first, then the webhook configurations' caBundle."""
    validate(options)
    now = now or dt.datetime.now(dt.UTC)
    core = api.core(api_client)
    report = SyncReport()
    data = _sync_secret(core, options, now, report)
    admission = api.admission_registration(api_client)
    _sync_bundles(admission, options, data[CA_CERT], now, report)
    return report


def _sync_secret(
    core: Any, options: SyncOptions, now: dt.datetime, report: SyncReport
) -> dict[str, bytes]:
    ns, name = options.secret_namespace, options.secret_name

    def attempt() -> dict[str, bytes]:
        secret = _read(
            functools.partial(core.read_namespaced_secret, name, ns, _request_timeout=_TIMEOUT)
        )
        if secret is not None and secret.type != SECRET_TYPE:
            raise ValueError(
                f"secret {ns}/{name} has type {secret.type}, not {SECRET_TYPE}: "
                "delete it or name another one with --secret"
            )
        current = _decode(secret.data if secret is not None else None)
        decision = decide(current, options.dns_names, now, options.rotate_before)
        report.reason = decision.reason
        data = issue(decision, current, options.dns_names, now)
        owner = _service_owner(core, options) if ns == options.namespace else None
        if secret is None:
            metadata: dict[str, Any] = {"name": name, "namespace": ns, "labels": dict(MANAGED_BY)}
            if owner:
                metadata["ownerReferences"] = [owner]
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata}
            body |= {"type": SECRET_TYPE, "data": _encode(data)}
            core.create_namespaced_secret(ns, body, _request_timeout=_TIMEOUT)
            report.secret = "created"
            return data
        refs = list(secret.metadata.owner_references or [])
        add_owner = owner is not None and all(r.uid != owner["uid"] for r in refs)
        if not decision.changes and not add_owner:
            return data
        secret.data = _encode(data)
        if add_owner:
            secret.metadata.owner_references = [*refs, owner]
        # At the resourceVersion read: a concurrent writer makes this fail with 409 (another
        # run created or changed it meanwhile), and the attempt runs again on a fresh read.
        core.replace_namespaced_secret(name, ns, secret, _request_timeout=_TIMEOUT)
        report.secret = "updated" if decision.changes else "unchanged (owner set)"
        return data

    return api.retry_on_conflict(attempt)


def _service_owner(core: Any, options: SyncOptions) -> dict[str, Any] | None:
    """An ownerReference to the webhook's Service (None while it does not exist yet)."""
    service = _read(
        functools.partial(
            core.read_namespaced_service,
            options.service,
            options.namespace,
            _request_timeout=_TIMEOUT,
        )
    )
    if service is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": service.metadata.name,
        "uid": service.metadata.uid,
    }


def _sync_bundles(
    admission: Any, options: SyncOptions, ca_pem: bytes, now: dt.datetime, report: SyncReport
) -> None:
    kinds = {
        "MutatingWebhookConfiguration": (
            admission.read_mutating_webhook_configuration,
            admission.patch_mutating_webhook_configuration,
        ),
        "ValidatingWebhookConfiguration": (
            admission.read_validating_webhook_configuration,
            admission.patch_validating_webhook_configuration,
        ),
    }
    for kind, (read, patch) in kinds.items():

        def attempt(kind: str = kind, read: Any = read, patch: Any = patch) -> None:
            config = _read(functools.partial(read, options.webhook, _request_timeout=_TIMEOUT))
            if config is None:
                if kind.startswith("Mutating"):
                    report.missing.append(f"{kind}/{options.webhook}")
                return
            ops = bundle_patch(
                [(w.name, w.client_config.ca_bundle) for w in config.webhooks or []], ca_pem, now
            )
            if not ops:
                return
            patch(
                options.webhook,
                ops,
                _content_type="application/json-patch+json",
                _request_timeout=_TIMEOUT,
            )
            report.patched.append(f"{kind}/{options.webhook}")

        # A failed `test` (422: the list changed under us) or a conflict: read again.
        api.retry_on_conflict(attempt, statuses=(errors.CONFLICT, errors.INVALID))


def bundle_patch(
    webhooks: Sequence[tuple[str, str | None]], ca_pem: bytes, now: dt.datetime
) -> list[dict[str, Any]]:
    """A JSON patch setting each webhook's caBundle that does not trust `ca_pem` yet.

    Each change is guarded by a `test` of the webhook's name at its index, so a list that
    changed since it was read fails the patch instead of writing into the wrong webhook.
    """
    ops: list[dict[str, Any]] = []
    for i, (name, bundle) in enumerate(webhooks):
        current = base64.b64decode(bundle) if bundle else b""
        new = next_ca_bundle(current, ca_pem, now)
        if new is None:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": name})
        ops.append(
            {
                "op": "add",
                "path": f"/webhooks/{i}/clientConfig/caBundle",
                "value": base64.b64encode(new).decode(),
            }
        )
    return ops


def _read(call: Any) -> Any:
    """The object, or None on 404."""
    try:
        return call()
    except errors.ApiException as err:
        if errors.status_of(err) == errors.NOT_FOUND:
            return None
        raise


def _decode(data: Mapping[str, str] | None) -> dict[str, bytes] | None:
    if data is None:
        return None
    return {k: base64.b64decode(v) for k, v in data.items() if v is not None}


def _encode(data: Mapping[str, bytes]) -> dict[str, bytes | str]:  # base64 text, as sent
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


def run(api_client: Any, options: SyncOptions, interval: float | None = None) -> int:
    """`--once` (interval None): one pass, exit 1 on failure. Otherwise a pass every
    `interval` seconds until SIGTERM/SIGINT, retrying a failed pass after a minute."""
    validate(options)
    if interval is None:
        try:
            log.info(sync_once(api_client, options).summary(options))
        except Exception as err:  # the Job's log says why; its exit code fails the hook
            log.error("certificate sync failed: %s", errors.describe(err))
            return 1
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        wait = interval
        try:
            log.info(sync_once(api_client, options).summary(options))
        except Exception as err:  # a loop that must outlive one failed pass
            log.error("certificate sync failed: %s", errors.describe(err))
            wait = min(interval, 60.0)
        stop.wait(wait)
    return 0
