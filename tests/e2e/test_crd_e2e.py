"""The ImageStream CRD on the real API server accepts what OpenShift users apply.

Every ImageStream of the corpus fixtures (and, when ../shared is next to the checkout, all
532 of OpenShift's library) is created with a server-side dry run and strict field
validation. Six corpus files still use the pre-API-groups `apiVersion: v1`, which only
OpenShift's legacy API serves; they are sent as `image.openshift.io/v1`, their content
unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from clusterkit import Namespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tests/corpus.py
import corpus

pytestmark = pytest.mark.e2e

LEGACY_API_VERSION = "v1"


def as_served(stream: dict) -> dict:
    obj = dict(stream)
    if obj.get("apiVersion") == LEGACY_API_VERSION:
        obj["apiVersion"] = "image.openshift.io/v1"
    obj["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "namespace"}
    return obj


def dry_run_create(ns: Namespace, streams: list[dict]) -> str:
    """Create every stream with a server-side dry run; return kubectl's output."""
    listing = {"apiVersion": "v1", "kind": "List", "items": [as_served(s) for s in streams]}
    proc = ns.cluster.kubectl(
        "-n", ns.name, "create", "--dry-run=server", "--validate=strict", "-o", "name",
        "-f", "-",
        input=json.dumps(listing),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_corpus_fixtures_are_accepted(namespace: Namespace) -> None:
    streams = [s for _, s in corpus.iter_image_streams(corpus.FIXTURE_CORPUS)]
    out = dry_run_create(namespace, streams)
    assert out.count("imagestream.image.openshift.io/") == len(streams) > 20


@pytest.mark.skipif(not corpus.SHARED_CORPUS.is_dir(), reason="../shared corpus not present")
def test_full_corpus_is_accepted(namespace: Namespace) -> None:
    streams = [s for _, s in corpus.iter_image_streams(corpus.SHARED_CORPUS)]
    assert len(streams) == 532
    # Streams of the same name in different corpus directories: one dry run per name.
    batches: list[dict[str, dict]] = []
    for stream in streams:
        name = stream["metadata"]["name"]
        batch = next((b for b in batches if name not in b), None)
        if batch is None:
            batch = {}
            batches.append(batch)
        batch[name] = stream
    created = sum(
        dry_run_create(namespace, list(b.values())).count("imagestream.image.openshift.io/")
        for b in batches
    )
    assert created == 532


def test_invalid_stream_is_rejected_with_the_field(namespace: Namespace) -> None:
    bad = {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {"name": "bad"},
        "spec": {"tags": [{"name": "1", "from": {"kind": "Foo", "name": "x"}}]},
    }
    proc = namespace.cluster.kubectl(
        "-n", namespace.name, "create", "--dry-run=server", "-f", "-",
        input=json.dumps(bad), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "spec.tags[0].from.kind" in proc.stderr
