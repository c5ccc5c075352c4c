"""`/validate`: one AdmissionReview judged against the ImagePolicies, from the caches (no
API call), counted, and answered: the validating twin of admission.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webhook.kube.policy_cache import PolicyIndex
from webhook.model import policy, workloads
from webhook.serving import limits

if TYPE_CHECKING:
    from prometheus_client import Counter


@dataclass(frozen=True)
class PolicyMetrics:
    validations: Counter
    violations: Counter


def new_policy_metrics(registry: Any) -> PolicyMetrics:
    """Counters in the app's registry (one exposition; across workers when multiprocess)."""
    # Imported here: prometheus_client picks its value store when first imported (server.py).
    from prometheus_client import Counter

    return PolicyMetrics(
        validations=Counter(
            "imagestreams_policy_validations",
            "Validation reviews answered, by result (allowed, warned, audited, denied).",
            ["result"],
            registry=registry,
        ),
        violations=Counter(
            "imagestreams_policy_violations",
            "Image policy violations found, by policy, mode and rule.",
            ["policy", "mode", "rule"],
            registry=registry,
        ),
    )


def answer(
    request: Mapping[str, Any], index: PolicyIndex, metrics: PolicyMetrics | None = None
) -> dict[str, Any]:
    """The AdmissionReview answering one validation from the caches (no API calls)."""
    policies = index.policies.all()
    verdict = policy.Verdict()
    if policies:
        obj = request.get("object")
        namespace = workloads.request_namespace(request, obj if isinstance(obj, Mapping) else {})
        labels = index.namespaces.labels(namespace) if namespace else {}
        verdict = policy.validate(request, policies, labels, index.streams)
    if metrics is not None and not request.get("dryRun"):
        for v in verdict.violations:
            metrics.violations.labels(policy=v.policy, mode=v.mode, rule=v.rule).inc()
        metrics.validations.labels(result=_result(verdict)).inc()
    return respond(str(request["uid"]), verdict)


def _result(verdict: policy.Verdict) -> str:
    for mode, result in (
        (policy.ENFORCE, "denied"),
        (policy.WARN, "warned"),
        (policy.AUDIT, "audited"),
    ):
        if verdict.by_mode(mode):
            return result
    return "allowed"


def respond(uid: str, verdict: policy.Verdict) -> dict[str, Any]:
    """The AdmissionReview answering a validation: denied (403) when an Enforce policy is
    violated; Warn violations as warnings; Audit violations as an audit annotation. Each
    part bounded (serving.limits), however many violations there are."""
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": verdict.denial_message(shown=limits.DENIAL_VIOLATIONS),
        }
    warnings = limits.warnings(v.message for v in verdict.by_mode(policy.WARN))
    if warnings:
        response["warnings"] = warnings
    audits = verdict.by_mode(policy.AUDIT)
    if audits:
        records: list[dict[str, Any]] = [v.record() for v in audits[: limits.AUDIT_RECORDS]]
        if len(audits) > len(records):
            records.append({"omitted": len(audits) - len(records)})
        response["auditAnnotations"] = {
            policy.AUDIT_ANNOTATION: json.dumps(records, separators=(",", ":"))
        }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
