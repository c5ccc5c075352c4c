"""The chart on the local node, installed as a user would: `helm upgrade --install` from
charts/imagestreams with the project's own image, built here and pushed to the local
registry, and the in-chart registry for reference policy `Local`.

What a real cluster's operator does by hand around the chart is done here too, as
docs/local-registry.md describes it: a volume for the registry (there is no storage
provisioner on this node), the registry's name in /etc/hosts and its CA in containerd's
hosts.toml (nodes do not use cluster DNS).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from typing import TYPE_CHECKING, Any

import localimages
import localnode
import yaml

if TYPE_CHECKING:
    from localcluster import Cluster

RELEASE = "imagestreams"
NAMESPACE = "imagestreams-system"
LOCAL_REGISTRY_SERVICE = f"{RELEASE}-registry"
LOCAL_REGISTRY_HOST = f"{LOCAL_REGISTRY_SERVICE}.{NAMESPACE}.svc:5000"
REGISTRY_VOLUME = "imagestreams-local-registry"
UID = 65532


class ChartError(RuntimeError):
    pass


def product_image(cluster: Cluster) -> str:
    """The `imagestreams` image, built from this repository without a daemon (cached by
    content) and pushed to the cluster's registry: REPOSITORY@DIGEST."""
    import image  # hack/image.py

    return str(image.build_and_push(f"{cluster.registry}/imagestreams/imagestreams"))


def values(cluster: Cluster, product: str, registry_image: str) -> dict[str, Any]:
    repository, digest = product.split("@")
    registry_repository, registry_digest = registry_image.split("@")
    return {
        "image": {"repository": repository, "digest": digest},
        "controller": {
            # The local registry is both internal (the pod bridge) and plain HTTP.
            "allowRegistries": [cluster.registry],
            "insecureRegistries": [cluster.registry],
        },
        "localRegistry": {
            "enabled": True,
            "image": {
                "repository": registry_repository,
                "tag": "local",
                "digest": registry_digest,
            },
            "service": {"clusterIP": localnode.LOCAL_REGISTRY_IP},
            # The volume made below; "-": no StorageClass (there is no provisioner).
            "persistence": {"storageClass": "-", "size": "5Gi"},
        },
    }


def registry_volume(cluster: Cluster) -> dict[str, Any]:
    """A hostPath PersistentVolume for the in-chart registry, bound to the chart's claim."""
    path = cluster.state_dir / "volumes" / "registry"
    path.mkdir(parents=True, exist_ok=True)
    # hostPath volumes get no fsGroup ownership: the registry (UID 65532) must own it.
    os.chown(path, UID, UID)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": REGISTRY_VOLUME},
        "spec": {
            "capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": NAMESPACE, "name": LOCAL_REGISTRY_SERVICE},
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }


def namespace() -> dict[str, Any]:
    """The release namespace, under Pod Security `restricted` (enforced, not just warned)."""
    labels = {
        f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": labels},
    }


def helm(cluster: Cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    from localcluster import tool

    proc = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, env=cluster.env,
        timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ChartError(f"helm {' '.join(args[:2])} failed:\n{proc.stderr.strip()}")
    return proc


def install(cluster: Cluster, extra_values: dict[str, Any] | None = None) -> None:
    """Build and push the images, install (or upgrade) the chart and wait for every pod;
    then let the node pull from the in-chart registry."""
    product = product_image(cluster)
    registry_image = cluster.push_image(
        localimages.registry_spec(localimages.registry_binary()), "imagestreams/registry:local"
    )
    cluster.apply([namespace(), registry_volume(cluster)])
    values_file = cluster.state_dir / "chart-values.yaml"
    chosen = values(cluster, product, registry_image)
    for key, value in (extra_values or {}).items():
        chosen[key] = {**chosen.get(key, {}), **value} if isinstance(value, dict) else value
    values_file.write_text(yaml.safe_dump(chosen))
    chart = cluster.repo_root / "charts" / "imagestreams"
    # --take-ownership: a node kept from before the CRDs moved from crds/ into templates has
    # them without Helm's ownership labels (docs/install.md, upgrading from chart 0.1.0).
    helm(
        cluster, "upgrade", "--install", RELEASE, str(chart), "-n", NAMESPACE,
        "-f", str(values_file), "--wait", "--timeout", "8m", "--take-ownership",
    )  # fmt: skip
    trust_local_registry(cluster)


def trust_local_registry(cluster: Cluster) -> None:
    """What docs/local-registry.md asks of every node: the registry's name and its CA."""
    host = LOCAL_REGISTRY_HOST.rsplit(":", 1)[0]
    localnode.add_hosts_entry(cluster.state_dir, localnode.LOCAL_REGISTRY_IP, host)
    secret = cluster.kubectl(
        "get", "secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE, "-o", "json"
    ).stdout
    ca = base64.b64decode(json.loads(secret)["data"]["ca.crt"])
    localnode.write_registry_host(cluster.layout, LOCAL_REGISTRY_HOST, scheme="https", ca=ca)


def pods(cluster: Cluster) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items
