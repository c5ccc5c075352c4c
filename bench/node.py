"""Figure 7, on the local node: `create deployment` through the API server with the webhook
running as the chart's pods behind its Service, against the no-op floor deployed the same way.

The floor is the chart's own webhook Deployment with only the command swapped for
bench/floor_app.py (mounted from a ConfigMap; same image, gunicorn settings, certificate,
resources, probes and Service), registered by a MutatingWebhookConfiguration that differs from
the chart's only in its Service and namespaces. Both registrations answer through ClusterIPs
(kube-proxy's NAT) to pods on the pod bridge, as on a real cluster. The chart's validating
registration (ImagePolicy) is turned off for this figure, so both arms are one webhook call.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cluster import (
    FLOOR_NS,
    HOOK_NS,
    NOHOOK_NS,
    ClusterConfig,
    _measure_creates,
    load_localcluster,
)

HERE = Path(__file__).resolve().parent
FLOOR = "imagestreams-bench-floor"


def bench_node(config: ClusterConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    localcluster = load_localcluster()
    import localchart
    from kubernetes import client
    from kubernetes import config as kconfig

    state = config.state_dir or Path(tempfile.mkdtemp(prefix="imagestreams-bench-node-"))
    started = time.monotonic()
    log(f"  starting the local node and installing the chart in {state}")
    cluster = localcluster.Cluster.start(state, node=True)
    out: dict[str, Any] = {"cluster_start_s": round(time.monotonic() - started, 1)}
    try:
        # One webhook call per arm: the chart's ImagePolicy registration off, and the bench
        # namespaces kept from the chart's webhook.
        excluded = ["kube-system", "kube-node-lease", NOHOOK_NS, FLOOR_NS]
        chart = str(cluster.repo_root / "charts" / "imagestreams")
        localchart.helm(
            cluster, "upgrade", localchart.RELEASE, chart,
            "-n", localchart.NAMESPACE, "--reuse-values", "--set", "policy.enabled=false",
            "--set", f"webhook.excludedNamespaces={{{','.join(excluded)}}}", "--wait",
        )  # fmt: skip
        deploy_floor(cluster, localchart.NAMESPACE, localchart.RELEASE)
        api = kconfig.new_client_from_config(config_file=str(cluster.kubeconfig))
        arms = {"without_webhook": NOHOOK_NS, "floor_webhook": FLOOR_NS, "with_webhook": HOOK_NS}
        for ns in arms.values():
            cluster.ensure_namespace(ns)
        result = _measure_creates(
            cluster, client.AppsV1Api(api), client.CustomObjectsApi(api), arms, config, log
        )
        result["method"] += (
            "; both webhooks as pods (2 replicas, 2 gunicorn workers x 4 threads) behind a "
            "ClusterIP Service on the local node"
        )
        out.update(result)
    finally:
        cluster.stop()
        if config.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)
    return out


def deploy_floor(cluster: Any, namespace: str, release: str) -> None:
    """The floor as a copy of the chart's webhook Deployment, Service and registration."""
    deployment = _get(cluster, "deployment", f"{release}-webhook", namespace)
    service = _get(cluster, "service", f"{release}-webhook", namespace)
    registration = _get(cluster, "mutatingwebhookconfiguration", release)
    labels = {"app.kubernetes.io/name": FLOOR}

    floor_code = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": FLOOR, "namespace": namespace},
        "data": {"floor_app.py": (HERE / "floor_app.py").read_text()},
    }
    deployment = _fresh(deployment, FLOOR)
    deployment["spec"]["selector"] = {"matchLabels": labels}
    pod = deployment["spec"]["template"]
    pod["metadata"] = {"labels": labels}
    pod["spec"].pop("topologySpreadConstraints", None)
    container = pod["spec"]["containers"][0]
    serve_args = [a for a in container["args"] if a.split("=")[0] in _FLOOR_FLAGS]
    container["command"] = ["python3", "/bench/floor_app.py"]
    container["args"] = serve_args
    container["volumeMounts"].append({"name": "floor", "mountPath": "/bench", "readOnly": True})
    pod["spec"]["volumes"].append({"name": "floor", "configMap": {"name": FLOOR}})
    # The floor has no index to wait for: its /readyz is always ready, like its /healthz.
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in container:
            container[probe]["httpGet"]["path"] = "/readyz"

    service = _fresh(service, FLOOR)
    service["spec"] = {"selector": labels, "ports": service["spec"]["ports"]}

    registration = _fresh(registration, FLOOR)
    for hook in registration["webhooks"]:
        hook["name"] = "floor.bench.imagestreams.io"
        hook["clientConfig"]["service"]["name"] = FLOOR
        hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": FLOOR_NS}}
        hook.pop("objectSelector", None)
        hook.pop("matchConditions", None)
    cluster.apply([floor_code, deployment, service, registration])
    cluster.kubectl("rollout", "status", f"deployment/{FLOOR}", "-n", namespace, "--timeout=180s")


_FLOOR_FLAGS = {"--bind", "--certfile", "--keyfile", "--workers", "--health-bind"}


def _get(cluster: Any, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    obj: dict[str, Any] = json.loads(cluster.kubectl(*args).stdout)
    return obj


def _fresh(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy to create anew: renamed, without server-set fields and the chart's labels."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    obj["metadata"] = {
        "name": name,
        **({"namespace": meta["namespace"]} if "namespace" in meta else {}),
    }
    obj.pop("status", None)
    return obj


__all__ = ["HOOK_NS", "bench_node"]
