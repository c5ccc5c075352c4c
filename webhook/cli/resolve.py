"""Offline resolution: manifests in, manifests with pinned digests out.

For pipelines that want digests in Git. The same rules as admission, namespace from
`metadata.namespace` or the default given; documents that need no change are written
back exactly as they were read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import yaml

from webhook.model.resolution import StreamLookup
from webhook.model.workloads import POD_SPEC_PATHS
from webhook.serving.admission import resolve_object

_DOC_SEPARATOR = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)


@dataclass
class Resolved:
    text: str
    images_resolved: int = 0
    warnings: list[str] = field(default_factory=list)


def resolve_manifests(text: str, streams: StreamLookup, default_namespace: str) -> Resolved:
    result = Resolved(text="")
    pieces = []
    for doc_text in split_documents(text):
        pieces.append(_resolve_document(doc_text, streams, default_namespace, result))
    result.text = "---\n".join(pieces) if len(pieces) > 1 else "".join(pieces)
    return result


def split_documents(text: str) -> Iterator[str]:
    """The text of each YAML document, separators removed, nothing else touched."""
    start = 0
    for match in _DOC_SEPARATOR.finditer(text):
        yield text[start : match.start()]
        start = match.end() + 1
    yield text[start:]


def _resolve_document(
    doc_text: str, streams: StreamLookup, default_namespace: str, result: Resolved
) -> str:
    try:
        obj = yaml.safe_load(doc_text)
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML: {err}") from err
    if not isinstance(obj, Mapping) or obj.get("kind") not in POD_SPEC_PATHS:
        return doc_text
    kind = str(obj["kind"])
    metadata: Any = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or default_namespace)
    outcome = resolve_object(obj, kind, namespace, streams)
    name = f"{kind}/{metadata.get('name', '?')}"
    result.warnings.extend(f"{name}: {w}" for w in outcome.warnings)
    if not outcome.patch:
        return doc_text
    result.images_resolved += len(outcome.patch)
    resolved = jsonpatch.apply_patch(obj, outcome.patch)
    return str(yaml.safe_dump(resolved, sort_keys=False, default_flow_style=False))
