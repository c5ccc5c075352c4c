"""Generated ImageStreams and AdmissionReviews for the benchmarks.

Streams look like what the controller writes: spec tags from `DockerImage` sources and a
status history of fully qualified, pinned references. Reviews look like what the API server
sends for a `kubectl apply`: managedFields, a last-applied annotation, probes, resources and
env, so their size (4-10 KB) is that of real objects, not of test fixtures.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TAGS = ("1.0", "1.1", "2.0", "2.1", "latest")
STREAMS_PER_NAMESPACE = 100
SIDECAR = "docker.io/library/busybox:1.36"  # fully qualified: never a candidate


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def namespaces(count: int) -> int:
    """How many namespaces `count` streams are spread over (100 streams in each)."""
    return max(1, count // STREAMS_PER_NAMESPACE)


def namespace_of(i: int, count: int) -> str:
    return f"team-{i % namespaces(count)}"


def stream_name(i: int) -> str:
    return f"app-{i}"


def image_stream(
    i: int, count: int, *, tags: int = 5, history: int = 1, registry: str = "quay.io"
) -> dict[str, Any]:
    """Stream number `i` of `count`: `tags` tags, each with `history` items, newest first."""
    name = stream_name(i)
    namespace = namespace_of(i, count)
    repo = f"{registry}/bench/{name}"
    spec_tags = []
    status_tags = []
    for tag in TAGS[:tags] if tags <= len(TAGS) else [f"t{j}" for j in range(tags)]:
        spec_tags.append(
            {
                "name": tag,
                "annotations": None,
                "from": {"kind": "DockerImage", "name": f"{repo}:{tag}"},
                "generation": 2,
                "importPolicy": {"scheduled": True, "importMode": "PreserveOriginal"},
                "referencePolicy": {"type": "Source"},
            }
        )
        items = []
        for h in range(history):
            image = digest(f"{repo}:{tag}#{h}")
            items.append(
                {
                    "created": f"2026-11-{20 - h:02d}T10:00:00Z",
                    "dockerImageReference": f"{repo}@{image}",
                    "image": image,
                    "generation": 2,
                }
            )
        status_tags.append({"tag": tag, "items": items})
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.UUID(int=i)),
            "resourceVersion": str(1000 + i),
            "generation": 2,
            "creationTimestamp": "2026-11-01T10:00:00Z",
        },
        "spec": {"lookupPolicy": {"local": True}, "tags": spec_tags},
        "status": {"dockerImageRepository": "", "tags": status_tags},
    }


def image_streams(count: int, *, tags: int = 5, history: int = 1) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield image_stream(i, count, tags=tags, history=history)


def write_streams_file(path: Path, count: int, *, tags: int = 5, history: int = 1) -> Path:
    """A JSON `List` of `count` streams (JSON: the index reads it far faster than YAML)."""
    items = list(image_streams(count, tags=tags, history=history))
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return path


# --- AdmissionReviews -------------------------------------------------------------------


def _container(name: str, image: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "DB_HOST", "value": "postgres.db.svc.cluster.local"},
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
            },
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP"},
            "periodSeconds": 10,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": True}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }


def _init_container(name: str, image: str, port: int) -> dict[str, Any]:
    container = _container(name, image, port)
    del container["readinessProbe"], container["livenessProbe"]  # not allowed on init
    return {**container, "command": ["/bin/migrate"]}


def pod_spec(images: list[str], init: list[str]) -> dict[str, Any]:
    return {
        "initContainers": [
            _init_container(f"init-{i}", image, 9000 + i) for i, image in enumerate(init)
        ],
        "containers": [_container(f"c-{i}", image, 8080 + i) for i, image in enumerate(images)],
        "volumes": [{"name": "config", "configMap": {"name": "app-config", "defaultMode": 420}}],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
    }


def _metadata(name: str, namespace: str, manager: str, spec: dict[str, Any]) -> dict[str, Any]:
    applied = json.dumps({"metadata": {"name": name, "namespace": namespace}, "spec": spec})
    return {
        "name": name,
        "namespace": namespace,
        "labels": {"app": name, "app.kubernetes.io/part-of": "shop"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied},
        "managedFields": [
            {
                "manager": manager,
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-11-20T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:annotations": {".": {}}, "f:labels": {".": {}}},
                    "f:spec": {"f:template": {"f:spec": {"f:containers": {}}}},
                },
            }
        ],
    }


def workload(
    kind: str, name: str, namespace: str, images: list[str], init: list[str]
) -> dict[str, Any]:
    spec = pod_spec(images, init)
    labels = {"app": name}
    template = {"metadata": {"labels": labels, "creationTimestamp": None}, "spec": spec}
    metadata = _metadata(name, namespace, "kubectl-client-side-apply", spec)
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    if kind == "Deployment":
        body = {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": template,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        }
        return {"apiVersion": "apps/v1", "kind": kind, "metadata": metadata, "spec": body}
    if kind == "CronJob":
        job_spec = {**spec, "restartPolicy": "OnFailure"}
        job = {"template": {"metadata": {"creationTimestamp": None}, "spec": job_spec}}
        body = {
            "schedule": "*/5 * * * *",
            "concurrencyPolicy": "Forbid",
            "suspend": False,
            "jobTemplate": {"metadata": {"creationTimestamp": None}, "spec": job},
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1,
        }
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": metadata, "spec": body}
    raise ValueError(kind)


_RESOURCES = {"Pod": ("", "pods"), "Deployment": ("apps", "deployments")}
_RESOURCES["CronJob"] = ("batch", "cronjobs")


def admission_review(kind: str, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """An AdmissionReview v1 for a CREATE of `obj`, shaped like the API server's."""
    group, resource = _RESOURCES[kind]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "requestResource": {"group": group, "version": "v1", "resource": resource},
            "name": obj["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["system:masters", "system:authenticated"],
            },
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {
                "apiVersion": "meta.k8s.io/v1",
                "kind": "CreateOptions",
                "fieldManager": "kubectl-client-side-apply",
            },
        },
    }


# How many images each kind carries, and how many of them are short names to resolve.
SHAPES = {
    "Deployment": (3, 1),  # 3 containers (2 short names + a sidecar) and 1 init container
    "Pod": (2, 0),  # 2 containers (1 short name + a sidecar)
    "CronJob": (1, 0),  # 1 container, a short name
}


def reviews(count: int, streams: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` reviews cycling Deployment, Pod, CronJob; short names of random streams.

    Every short name resolves (its stream is in the object's namespace, with that tag),
    so each review exercises the whole path and answers with a patch.
    """
    rng = random.Random(seed)
    out = []
    kinds = list(SHAPES)
    for n in range(count):
        kind = kinds[n % len(kinds)]
        containers, inits = SHAPES[kind]
        nss = namespaces(streams)
        k = rng.randrange(nss)
        namespace = f"team-{k}"
        members = range(k, streams, nss)

        def short(members: range = members) -> str:
            return f"{stream_name(rng.choice(members))}:{rng.choice(TAGS)}"

        images = [short() for _ in range(containers - 1)] + [SIDECAR]
        if kind == "CronJob":
            images = [short()]
        init = [short() for _ in range(inits)]
        obj = workload(kind, f"{kind.lower()}-{n}", namespace, images, init)
        out.append(admission_review(kind, obj, namespace))
    return out


def expected_patches(kind: str) -> int:
    containers, inits = SHAPES[kind]
    return 1 if kind == "CronJob" else containers - 1 + inits


def encode(body: Any) -> bytes:
    """Compact JSON, as the API server sends it."""
    return json.dumps(body, separators=(",", ":")).encode()
