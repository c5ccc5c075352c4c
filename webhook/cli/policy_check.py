"""`imagestreams policy check`: what the validating webhook would say about manifests.

For CI, before `kubectl apply`: every workload is first resolved as the mutating webhook
would resolve it (short names through the namespace's streams), then judged by the policies
that select its namespace, exactly as admission judges the final object. ImageStreams in the
manifests are judged by `allowedRegistriesForImport`.

Policies, streams and namespace labels come from files when given, else from the cluster.
Namespace labels: Namespace documents in the policies file or the manifests, else the
cluster's (when connected), else only `kubernetes.io/metadata.name`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from webhook.cli.manifests import documents
from webhook.kube import api, errors
from webhook.kube.connect import GROUP, PLURAL, VERSION
from webhook.kube.policy_cache import PolicyStreamView, StreamImages, load_policy_documents
from webhook.kube.watch import Tee
from webhook.model import policy
from webhook.model.policy import Policy, Violation
from webhook.model.workloads import POD_SPEC_PATHS
from webhook.serving import admission
from webhook.serving.stream_index import StreamIndex, load_streams

LABELS = {policy.ENFORCE: "DENY", policy.WARN: "WARN", policy.AUDIT: "AUDIT"}


@dataclass
class CheckResult:
    violations: list[Violation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # from resolution
    objects: int = 0  # documents judged

    @property
    def denied(self) -> bool:
        return any(v.mode == policy.ENFORCE for v in self.violations)

    def report(self) -> str:
        lines = [f"{LABELS[v.mode]:<6}{v.message}" for v in self.violations]
        counts = {mode: sum(v.mode == mode for v in self.violations) for mode in policy.MODES}
        lines.append(
            f"{self.objects} object(s) checked; violations: {counts[policy.ENFORCE]} deny, "
            f"{counts[policy.WARN]} warn, {counts[policy.AUDIT]} audit"
        )
        return "\n".join(lines) + "\n"


def parse_manifests(text: str, source: str = "<stdin>") -> list[dict[str, Any]]:
    """The objects of `text` (a List's items too). Raises manifests.ManifestError naming
    `source`, the document and the line of what is not YAML."""
    docs: list[dict[str, Any]] = []
    for document in documents(text, source):
        doc = document.obj
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        docs.extend(d for d in items or [] if isinstance(d, dict))
    return docs


def check(
    docs: Iterable[Mapping[str, Any]],
    default_namespace: str,
    policies: Iterable[Policy],
    labels_for: Callable[[str], Mapping[str, str]],
    streams: Iterable[Mapping[str, Any]],
) -> CheckResult:
    """Judge every workload and ImageStream of `docs`."""
    index = StreamIndex()
    images = StreamImages()
    Tee(index, images).replace_all(list(streams))
    view = PolicyStreamView(index, images)
    rules = list(policies)
    result = CheckResult()
    for doc in docs:
        kind = doc.get("kind")
        is_stream = kind == "ImageStream" and str(doc.get("apiVersion", "")).startswith(
            "image.openshift.io/"
        )
        if kind not in POD_SPEC_PATHS and not is_stream:
            continue
        result.objects += 1
        namespace = namespace_of(doc, default_namespace)
        applicable = policy.applicable_policies(rules, labels_for(namespace), doc)
        if is_stream:
            result.violations.extend(policy.check_image_stream(doc, namespace, applicable))
            continue
        outcome = admission.resolve_object(doc, str(kind), namespace, view)
        name = f"{kind}/{(doc.get('metadata') or {}).get('name', '?')}"
        result.warnings.extend(f"{name}: {w}" for w in outcome.warnings)
        resolved = jsonpatch.apply_patch(doc, outcome.patch) if outcome.patch else doc
        result.violations.extend(
            policy.check_workload(resolved, str(kind), namespace, applicable, view)
        )
    return result


def namespace_of(doc: Mapping[str, Any], default: str) -> str:
    metadata = doc.get("metadata")
    found = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    return str(found or default)


def namespace_docs(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """name → labels of the Namespace documents among `docs`."""
    found = {}
    for doc in docs:
        metadata = doc.get("metadata")
        if (
            doc.get("kind") == "Namespace"
            and isinstance(metadata, Mapping)
            and metadata.get("name")
        ):
            labels = metadata.get("labels")
            found[str(metadata["name"])] = (
                {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}
            )
    return found


# --- the command -------------------------------------------------------------------------


def run(
    manifests_text: str,
    namespace: str | None,
    policies_file: str | None,
    streams_file: str | None,
    connect: Callable[[], Any],
    source: str = "<stdin>",
) -> CheckResult:
    """Gather policies, streams and labels (files first, cluster otherwise) and check.

    `connect()` returns a kube.Connection; it is only called when the cluster is needed.
    """
    docs = parse_manifests(manifests_text, source)
    # Offline when both files are given; otherwise the cluster also lends namespace labels.
    connection: Any = connect() if not (policies_file and streams_file) else None
    known_labels: dict[str, dict[str, str]] = {}
    if policies_file:
        policy_objs, namespace_objs = load_policy_documents(policies_file)
        known_labels.update(namespace_docs(namespace_objs))
    else:
        policy_objs = _cluster_policies(connection.api_client)
    known_labels.update(namespace_docs(docs))
    default = namespace or (connection.namespace if connection is not None else "default")
    if streams_file:
        stream_objs = load_streams(streams_file)
    else:
        namespaces = sorted({namespace_of(d, default) for d in docs})
        stream_objs = _cluster_streams(connection.api_client, namespaces)

    def labels_for(name: str) -> Mapping[str, str]:
        if name not in known_labels:
            known_labels[name] = _cluster_labels(connection.api_client, name) if connection else {}
        return policy.namespace_labels_of(name, known_labels[name])

    return check(
        docs, default, [policy.parse_policy(p) for p in policy_objs], labels_for, stream_objs
    )


def _cluster_policies(api_client: Any) -> list[dict[str, Any]]:
    custom = api.custom_objects(api_client)
    try:
        result = custom.list_cluster_custom_object(policy.GROUP, policy.VERSION, policy.PLURAL)
    except errors.ApiException as err:
        if errors.status_of(err) == errors.NOT_FOUND:
            return []  # the ImagePolicy CRD is not installed: no policies
        raise ValueError(f"listing ImagePolicies failed: {errors.describe(err)}") from err
    return list(result.get("items") or [])


def _cluster_streams(api_client: Any, namespaces: Iterable[str]) -> list[dict[str, Any]]:
    custom = api.custom_objects(api_client)
    found: list[dict[str, Any]] = []
    for namespace in namespaces:
        try:
            result = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        except errors.ApiException as err:
            raise ValueError(
                f"listing ImageStreams in {namespace} failed: {errors.describe(err)}"
            ) from err
        found.extend(result.get("items") or [])
    return found


def _cluster_labels(api_client: Any, name: str) -> dict[str, str]:
    try:
        response = api.core(api_client).read_namespace(name, _preload_content=False)
    except errors.ApiException as err:
        if errors.status_of(err) == errors.NOT_FOUND:
            return {}  # not created yet: only its name label
        raise ValueError(f"reading namespace {name} failed: {errors.describe(err)}") from err
    labels = (json.loads(response.data).get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}
