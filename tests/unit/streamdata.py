"""Plain-data builders for ImageStreams and AdmissionReviews, shared by the unit tests."""

from __future__ import annotations

import base64
import json
from typing import Any

from webhook.serving.stream_index import StreamIndex

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64


def image_stream(
    name: str,
    namespace: str = "team",
    *,
    local: bool = True,
    tags: dict[str, str | None] | None = None,
    spec_tags: list[dict[str, Any]] | None = None,
    repository: str = "",
) -> dict[str, Any]:
    """A stream whose status gives each tag in `tags` one image (or none, for None).

    Tag values are `repo@digest` strings; the tags also appear in spec as DockerImage tags.
    """
    tags = tags if tags is not None else {}
    status_tags = []
    for tag, ref in tags.items():
        items = []
        if ref is not None:
            digest = ref.partition("@")[2]
            items.append(
                {
                    "created": "2026-11-01T10:00:00Z",
                    "dockerImageReference": ref,
                    "image": digest,
                    "generation": 2,
                }
            )
        status_tags.append({"tag": tag, "items": items})
    if spec_tags is None:
        spec_tags = [
            {"name": tag, "from": {"kind": "DockerImage", "name": f"quay.io/x/{name}:{tag}"}}
            for tag in tags
        ]
    status: dict[str, Any] = {"tags": status_tags}
    if repository:
        status["dockerImageRepository"] = repository
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"lookupPolicy": {"local": local}, "tags": spec_tags},
        "status": status,
    }


def index_of(*streams: dict[str, Any]) -> StreamIndex:
    index = StreamIndex()
    index.replace_all(streams)
    return index


def review(
    kind: str,
    obj: dict[str, Any],
    *,
    namespace: str = "team",
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    sub_resource: str | None = None,
    uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002",
) -> dict[str, Any]:
    """An AdmissionReview shaped like the API server's."""
    group, resource = RESOURCES[kind]
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "requestKind": {"group": group, "version": "v1", "kind": kind},
        "requestResource": {"group": group, "version": "v1", "resource": resource},
        "name": obj.get("metadata", {}).get("name", ""),
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "admin", "groups": ["system:masters"]},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


RESOURCES = {
    "Pod": ("", "pods"),
    "Deployment": ("apps", "deployments"),
    "ReplicaSet": ("apps", "replicasets"),
    "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"),
    "Job": ("batch", "jobs"),
    "CronJob": ("batch", "cronjobs"),
    "ReplicationController": ("", "replicationcontrollers"),
    "PodTemplate": ("", "podtemplates"),
    "ConfigMap": ("", "configmaps"),
    "ImageStream": ("image.openshift.io", "imagestreams"),
}

API_VERSIONS = {"": "v1", "apps": "apps/v1", "batch": "batch/v1"}


def pod_spec(*images: str, init: tuple[str, ...] = (), ephemeral: tuple[str, ...] = ()) -> dict:
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]
    }
    if init:
        spec["initContainers"] = [{"name": f"i{i}", "image": im} for i, im in enumerate(init)]
    if ephemeral:
        spec["ephemeralContainers"] = [
            {"name": f"e{i}", "image": im} for i, im in enumerate(ephemeral)
        ]
    return spec


def workload(kind: str, spec: dict[str, Any], name: str = "app", **metadata: Any) -> dict:
    """An object of `kind` carrying `spec` as its pod spec."""
    group = RESOURCES[kind][0]
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    body: dict[str, Any]
    if kind == "Pod":
        body = {"spec": spec}
    elif kind == "CronJob":
        body = {"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}
    elif kind == "PodTemplate":
        body = {"template": template}
    else:
        body = {"spec": {"template": template}}
    return {
        "apiVersion": API_VERSIONS[group],
        "kind": kind,
        "metadata": {"name": name, **metadata},
        **body,
    }


def decoded_patch(answer: dict[str, Any]) -> list[dict[str, Any]]:
    patch = answer["response"].get("patch")
    return json.loads(base64.b64decode(patch)) if patch else []
