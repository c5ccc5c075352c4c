"""The webhook's matchConditions (charts/imagestreams/values.yaml) on the real API server:
what admission would only skip (an object controlled by a built-in workload, a subresource)
is never sent, and everything else still is. The session registers its webhook with the
chart's conditions (hack/localcluster.py); the webhook's own request counter tells which
requests reached it.

The API server's CEL is compared with the Python rule (workloads.controlled_by_builtin_workload)
on a table of owner references, and a Deployment rollout is counted with and without the
conditions (the figure: `pytest -s` prints it).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from localcluster import Cluster
from prometheus_client.parser import text_string_to_metric_families

from webhook.model.workloads import controlled_by_builtin_workload

if TYPE_CHECKING:
    from clusterkit import Image, Namespace

pytestmark = pytest.mark.e2e

WEBHOOK_CONFIGURATION = "imagestreams"
REPLICAS = 10


def requests_seen(cluster: Cluster, kind: str | None = None) -> float:
    """Reviews the session's webhook has answered (of one kind, or all)."""
    context = ssl.create_default_context(cafile=str(cluster.webhook_certs / "ca.crt"))
    with urllib.request.urlopen(f"{cluster.webhook_url}/metrics", context=context) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "imagestreams_admission_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and kind in (None, sample.labels["kind"]):
                total += sample.value
    return total


def owner(api_version: str, kind: str, controller: bool | None = True) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "name": "owner",
        "uid": "00000000-0000-0000-0000-000000000001",
    }
    if controller is not None:
        ref["controller"] = controller
    return ref


def pod(namespace: str, image: str, owners: list[dict[str, Any]]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "probe", "namespace": namespace}
    if owners:
        metadata["ownerReferences"] = owners
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def dry_run_create(namespace: Namespace, obj: dict[str, Any]) -> dict[str, Any]:
    out = namespace.cluster.kubectl(
        "-n", namespace.name, "create", "--dry-run=server", "-o", "json", "-f", "-",
        input=json.dumps(obj),
    ).stdout  # fmt: skip
    created: dict[str, Any] = json.loads(out)
    return created


def reached_webhook(namespace: Namespace, obj: dict[str, Any]) -> bool:
    before = requests_seen(namespace.cluster, "Pod")
    dry_run_create(namespace, obj)
    return requests_seen(namespace.cluster, "Pod") > before


# Owner references: the built-in controllers, other versions and groups of them, operators'
# custom resources, and references that are not a controller's.
OWNERS: list[list[dict[str, Any]]] = [
    [],
    [owner("apps/v1", "ReplicaSet")],
    [owner("apps/v1", "Deployment")],
    [owner("apps/v1", "StatefulSet")],
    [owner("apps/v1", "DaemonSet")],
    [owner("batch/v1", "Job")],
    [owner("batch/v1", "CronJob")],
    [owner("v1", "ReplicationController")],
    [owner("apps/v1beta2", "ReplicaSet")],  # any version of the group
    [owner("extensions/v1beta1", "ReplicaSet")],  # another group: not built-in
    [owner("apps/v1", "Job")],  # a kind of another group
    [owner("v1", "Pod")],
    [owner("v1", "PodTemplate")],
    [owner("example.com/v1", "ReplicaSet")],  # an operator's kind of the same name
    [owner("keycloak.org/v1alpha1", "Keycloak")],
    [owner("apps/v1", "ReplicaSet", controller=False)],
    [owner("apps/v1", "ReplicaSet", controller=None)],
    [owner("apps/v1", "ReplicaSet", controller=False), owner("keycloak.org/v1", "Keycloak")],
    [owner("keycloak.org/v1", "Keycloak", controller=False), owner("batch/v1", "Job")],
]


def test_the_api_servers_cel_agrees_with_the_python_rule(namespace: Namespace) -> None:
    """Each owner table row, dry-run created as a Pod: it reaches the webhook exactly when
    admission would not skip it."""
    rows = []
    for owners in OWNERS:
        obj = pod(namespace.name, "app:1", owners)
        rows.append(
            (owners, reached_webhook(namespace, obj), not controlled_by_builtin_workload(obj))
        )
    disagree = [(owners, sent) for owners, sent, wanted in rows if sent != wanted]
    assert not disagree, disagree
    # Not vacuous: both answers occur.
    assert {sent for _, sent, _ in rows} == {True, False}


def test_replica_set_pod_is_not_sent_and_a_bare_pod_is_resolved(
    namespace: Namespace, app_image: Image
) -> None:
    namespace.stream("app", {"1.0": app_image})
    owned = pod(namespace.name, "app:1.0", [owner("apps/v1", "ReplicaSet")])
    before = requests_seen(namespace.cluster)
    created = dry_run_create(namespace, owned)
    assert created["spec"]["containers"][0]["image"] == "app:1.0"
    assert requests_seen(namespace.cluster) == before

    bare = dry_run_create(namespace, pod(namespace.name, "app:1.0", []))
    assert bare["spec"]["containers"][0]["image"] == app_image.pinned
    assert requests_seen(namespace.cluster) == before + 1


def test_ephemeral_containers_subresource_is_still_sent(
    namespace: Namespace, app_image: Image
) -> None:
    """The one subresource the webhook resolves (`kubectl debug`): the condition on
    subresources lets it through, and the debug container's short name is pinned."""
    namespace.stream("app", {"1.0": app_image})
    cluster = namespace.cluster
    cluster.apply(pod(namespace.name, "registry.example/web:1", []))
    target = json.loads(namespace.kubectl("get", "pod", "probe", "-o", "json").stdout)
    target["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "app:1.0"}]
    before = requests_seen(cluster, "Pod")
    path = f"/api/v1/namespaces/{namespace.name}/pods/probe/ephemeralcontainers"
    cluster.kubectl("replace", "--raw", path, "-f", "-", input=json.dumps(target))
    image = namespace.get("pod", "probe", "{.spec.ephemeralContainers[0].image}")
    assert image == app_image.pinned
    assert requests_seen(cluster, "Pod") == before + 1


def test_scale_subresource_is_not_sent(namespace: Namespace) -> None:
    namespace.kubectl("create", "deployment", "web", "--image", "registry.example/web:1")
    before = requests_seen(namespace.cluster, "Deployment")
    namespace.kubectl("scale", "deployment", "web", "--replicas", "3")
    assert namespace.get("deployment", "web", "{.spec.replicas}") == "3"
    assert requests_seen(namespace.cluster, "Deployment") == before


# --- the rollout figure ------------------------------------------------------------------------


@pytest.fixture
def without_conditions(cluster: Cluster) -> Iterator[None]:
    """The session's registration without its matchConditions, restored afterwards."""
    conditions = cluster.chart_match_conditions()
    cluster.kubectl(
        "patch", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/webhooks/0/matchConditions"}]),
    )  # fmt: skip
    try:
        yield
    finally:
        cluster.kubectl(
            "patch", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--type=json",
            "-p", json.dumps(
                [{"op": "add", "path": "/webhooks/0/matchConditions", "value": conditions}]
            ),
        )  # fmt: skip


def wait_until_registration_sends_owned_pods(namespace: Namespace, sent: bool) -> None:
    """The API server reads webhook registrations through an informer: wait until it uses
    the one just written."""
    probe = pod(namespace.name, "app:1", [owner("apps/v1", "ReplicaSet")])
    namespace.cluster.wait(
        f"the API server to {'send' if sent else 'skip'} ReplicaSet-owned Pods",
        lambda: reached_webhook(namespace, probe) == sent,
        timeout=30,
    )


def rollout(namespace: Namespace, name: str) -> float:
    """Create a Deployment of REPLICAS, change its image (a Recreate rollout: without a
    kubelet no Pod becomes ready, so a rolling update would stall) and wait until every Pod
    of the new ReplicaSet exists; the reviews the webhook answered meanwhile."""
    cluster = namespace.cluster
    before = requests_seen(cluster)
    labels = {"app": name}
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace.name},
            "spec": {
                "replicas": REPLICAS,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": name, "image": "registry.example/web:1"}]},
                },
            },
        }
    )
    wait_for_pods(namespace, name, "registry.example/web:1")
    namespace.kubectl("set", "image", f"deployment/{name}", f"{name}=registry.example/web:2")
    wait_for_pods(namespace, name, "registry.example/web:2")
    time.sleep(2)  # the controllers' last writes (status goes to a subresource)
    return requests_seen(cluster) - before


def wait_for_pods(namespace: Namespace, name: str, image: str) -> None:
    namespace.cluster.wait(
        f"{REPLICAS} pods of {image}",
        lambda: namespace.pod_images(f"app={name}") == [image] * REPLICAS,
        timeout=90,
    )


def test_rollout_requests_saved(namespace: Namespace, without_conditions: None) -> None:
    wait_until_registration_sends_owned_pods(namespace, sent=True)
    without = rollout(namespace, "before")
    cluster = namespace.cluster
    cluster.kubectl(
        "patch", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--type=json",
        "-p", json.dumps([{"op": "add", "path": "/webhooks/0/matchConditions",
                           "value": cluster.chart_match_conditions()}]),
    )  # fmt: skip
    wait_until_registration_sends_owned_pods(namespace, sent=False)
    with_conditions = rollout(namespace, "after")
    print(
        f"\nrollout of a Deployment of {REPLICAS} replicas (create + image change): "
        f"{without:.0f} reviews without matchConditions, {with_conditions:.0f} with them "
        f"({without - with_conditions:.0f} saved)"
    )
    # Every Pod of both ReplicaSets and the ReplicaSets themselves are no longer sent.
    assert without - with_conditions >= 2 * REPLICAS + 2
