"""Short names resolved at admission, driven the way users do: kubectl, helm, and
kube-controller-manager creating Pods from a Deployment.

The ImageStream status is written by the tests (as an import would write it), naming an image
really pushed into the loopback registry, so a pinned reference is the registry's real digest.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from localcluster import Cluster, tool

if TYPE_CHECKING:
    from clusterkit import Image, Namespace

pytestmark = pytest.mark.e2e

CHARTS = Path(__file__).parent / "charts"
REPO_ROOT = Path(__file__).resolve().parents[2]
POD_SPEC = "{.spec.template.spec.containers[0].image}"
RESOLVE_NAMES = "alpha.image.policy.openshift.io/resolve-names"


@pytest.fixture
def ns(namespace: Namespace, app_image: Image) -> Namespace:
    """A namespace whose stream `app` has lookup enabled and tag 1.0 imported."""
    namespace.stream("app", {"1.0": app_image})
    return namespace


def test_create_deployment(ns: Namespace, app_image: Image) -> None:
    ns.kubectl("create", "deployment", "web", "--image", "app:1.0")
    assert ns.get("deployment", "web", POD_SPEC) == app_image.pinned


def test_create_job(ns: Namespace, app_image: Image) -> None:
    ns.kubectl("create", "job", "once", "--image", "app:1.0")
    assert ns.get("job", "once", POD_SPEC) == app_image.pinned


def test_create_cronjob(ns: Namespace, app_image: Image) -> None:
    ns.kubectl("create", "cronjob", "nightly", "--image", "app:1.0", "--schedule", "0 3 * * *")
    path = "{.spec.jobTemplate.spec.template.spec.containers[0].image}"
    assert ns.get("cronjob", "nightly", path) == app_image.pinned


def test_run_pod(ns: Namespace, app_image: Image) -> None:
    ns.kubectl("run", "shell", "--image", "app:1.0", "--restart=Never")
    assert ns.get("pod", "shell", "{.spec.containers[0].image}") == app_image.pinned


def test_lookup_disabled_is_unchanged(namespace: Namespace, app_image: Image) -> None:
    namespace.stream("app", {"1.0": app_image}, lookup=False)
    namespace.kubectl("create", "deployment", "web", "--image", "app:1.0")
    assert namespace.get("deployment", "web", POD_SPEC) == "app:1.0"


def test_stream_in_another_namespace_is_unchanged(
    ns: Namespace, new_namespace: Callable[[str], Namespace]
) -> None:
    other = new_namespace("other")
    other.sync()
    other.kubectl("create", "deployment", "web", "--image", "app:1.0")
    assert other.get("deployment", "web", POD_SPEC) == "app:1.0"


def test_digest_is_unchanged(ns: Namespace) -> None:
    image = "app@sha256:" + "0" * 64
    ns.kubectl("create", "deployment", "web", "--image", image)
    assert ns.get("deployment", "web", POD_SPEC) == image


def test_unimported_tag_is_unchanged_with_a_warning(ns: Namespace, app_image: Image) -> None:
    ns.stream("app", {"1.0": app_image, "9.9": None})
    created = ns.kubectl("create", "deployment", "web", "--image", "app:9.9")
    assert ns.get("deployment", "web", POD_SPEC) == "app:9.9"
    assert "Warning:" in created.stderr
    assert "9.9" in created.stderr


def test_deployment_pods_carry_the_digest(
    ns: Namespace, app_image: Image, cluster: Cluster
) -> None:
    ns.kubectl("create", "deployment", "web", "--image", "app:1.0", "--replicas", "2")
    # No kubelet: the ReplicaSet controller creates the Pods and they stay Pending.
    cluster.wait(
        "kube-controller-manager to create the Pods", lambda: len(ns.pod_images("app=web")) == 2
    )
    assert ns.pod_images("app=web") == [app_image.pinned] * 2


def test_helm_install(ns: Namespace, app_image: Image, cluster: Cluster) -> None:
    subprocess.run(
        [str(tool("helm")), "install", "rel", str(CHARTS / "shortname"), "-n", ns.name],
        check=True,
        capture_output=True,
        env=cluster.env,
    )
    assert ns.get("deployment", "rel", POD_SPEC) == app_image.pinned


def test_webhook_down_with_failure_policy_ignore(
    ns: Namespace, app_image: Image, cluster: Cluster
) -> None:
    cluster.stop_webhook()
    try:
        ns.kubectl("create", "deployment", "web", "--image", "app:1.0")
        assert ns.get("deployment", "web", POD_SPEC) == "app:1.0"
    finally:
        cluster.start_webhook()
    # Back up: resolution works again once the webhook has listed the streams.
    ns.sync()
    ns.kubectl("create", "deployment", "web2", "--image", "app:1.0")
    assert ns.get("deployment", "web2", POD_SPEC) == app_image.pinned


def test_set_image_on_update(ns: Namespace, app_image: Image) -> None:
    ns.kubectl("create", "deployment", "web", "--image", "app@sha256:" + "0" * 64)
    ns.kubectl("set", "image", "deployment/web", "app=app:1.0")
    assert ns.get("deployment", "web", POD_SPEC) == app_image.pinned


def test_controller_imports_from_the_registry(
    namespace: Namespace, app_image: Image, cluster: Cluster
) -> None:
    """No status written by the test: the import controller fills it from the registry."""
    assert cluster.controller_running, "imagestreams controller is not running"
    namespace.cluster.apply(
        {
            "apiVersion": "image.openshift.io/v1",
            "kind": "ImageStream",
            "metadata": {"name": "app", "namespace": namespace.name},
            "spec": {
                "lookupPolicy": {"local": True},
                "tags": [
                    {
                        "name": "1.0",
                        "from": {"kind": "DockerImage", "name": f"{app_image.repository}:1.0"},
                    }
                ],
            },
        }
    )
    cluster.wait(
        "the controller to import app:1.0",
        lambda: namespace.dry_run_pod("app:1.0") == app_image.pinned,
    )


# --- turning on image lookup for an existing workload (issue 14, point 1) -------------------


def test_set_image_lookup_pins_an_existing_deployment(
    namespace: Namespace, app_image: Image, cluster: Cluster
) -> None:
    """The stream has no local lookup, so `app:1.0` stays as written until the workload asks
    for lookups: `set image-lookup deploy/web` only adds the annotation to the pod template,
    and that update must pin the images the Deployment already has (OpenShift does)."""
    namespace.stream("app", {"1.0": app_image}, lookup=False)
    namespace.kubectl("create", "deployment", "web", "--image", "app:1.0")
    assert namespace.get("deployment", "web", POD_SPEC) == "app:1.0"
    subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "imagestreams"), "-n", namespace.name,
         "set", "image-lookup", "deploy/web"],
        check=True, capture_output=True, env=cluster.env, timeout=120,
    )  # fmt: skip
    assert namespace.get("deployment", "web", POD_SPEC) == app_image.pinned


def test_annotate_pins_an_existing_deployment(namespace: Namespace, app_image: Image) -> None:
    """The same through `kubectl annotate` on the Deployment itself; and turning it off
    again leaves the pinned images as they are."""
    namespace.stream("app", {"1.0": app_image}, lookup=False)
    namespace.kubectl("create", "deployment", "web", "--image", "app:1.0")
    namespace.kubectl("annotate", "deployment", "web", f"{RESOLVE_NAMES}=*")
    assert namespace.get("deployment", "web", POD_SPEC) == app_image.pinned
    namespace.kubectl("annotate", "deployment", "web", f"{RESOLVE_NAMES}-")
    assert namespace.get("deployment", "web", POD_SPEC) == app_image.pinned


def test_annotate_an_existing_job_is_allowed_unchanged(
    namespace: Namespace, app_image: Image
) -> None:
    """A Job's pod template is immutable: the webhook must not patch it on that update."""
    namespace.stream("app", {"1.0": app_image}, lookup=False)
    namespace.kubectl("create", "job", "once", "--image", "app:1.0")
    namespace.kubectl("annotate", "job", "once", f"{RESOLVE_NAMES}=*")
    assert namespace.get("job", "once", POD_SPEC) == "app:1.0"
