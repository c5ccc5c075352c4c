"""Spec tag generations on the real API server, with the webhook stamping them and the
cluster's controller importing (issue 14, point 2): a stream that carries another
cluster's generations still re-imports when a tag is edited later."""

from __future__ import annotations

import json
from pathlib import Path

from clusterkit import Namespace, push_image
from localcluster import Cluster


def current(ns: Namespace, tag: str) -> tuple[str, int]:
    """The tag's current image and the generation status answered it at."""
    out = ns.get("imagestream", "app", f'{{.status.tags[?(@.tag=="{tag}")].items[0]}}')
    item = json.loads(out) if out else {}
    return str(item.get("image", "")), int(item.get("generation", 0))


def test_an_edit_reimports_a_stream_exported_with_its_generations(
    cluster: Cluster, namespace: Namespace, tmp_path: Path
) -> None:
    repository = f"{cluster.registry}/{namespace.name}/app"
    first = push_image(f"{repository}:1", "generation e2e, first", tmp_path)
    second = push_image(f"{repository}:2", "generation e2e, second", tmp_path)
    # As `oc get is -o yaml` from another cluster has it: the tag at generation 5.
    spec_tag = {"name": "t", "from": {"kind": "DockerImage", "name": f"{repository}:1"}}
    cluster.apply(
        {
            "apiVersion": "image.openshift.io/v1",
            "kind": "ImageStream",
            "metadata": {"name": "app", "namespace": namespace.name},
            "spec": {"tags": [{**spec_tag, "generation": 5}]},
        }
    )
    cluster.wait("the import at generation 5", lambda: current(namespace, "t") == (first, 5), 90)

    # A later edit of the source: stamped newer than status (not metadata.generation + 1 = 2,
    # which status already answered), so the controller imports the new source.
    edited = {**spec_tag, "from": {"kind": "DockerImage", "name": f"{repository}:2"}}
    namespace.kubectl(
        "patch", "imagestream", "app", "--type=json",
        "-p", json.dumps([{"op": "replace", "path": "/spec/tags/0/from", "value": edited["from"]}]),
    )  # fmt: skip
    stamped = int(namespace.get("imagestream", "app", "{.spec.tags[0].generation}"))
    assert stamped > 5
    cluster.wait(
        "the edited source imported", lambda: current(namespace, "t") == (second, stamped), 90
    )
