"""Fixtures for the node tier: a real one-node cluster (kubelet, containerd, runc, a bridge
CNI network, kube-proxy, CoreDNS) with the chart installed from this repository's image,
started once per session by hack/localcluster.py in a temporary directory.

Pods really start here: the tests look at what the kubelet ran (`imageID`), not only at what
the API server stored. The node needs root and the tools of `make tools`; a missing one fails
the session with its name: these tests never skip.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "hack"))

import localchart  # noqa: E402
import localimages  # noqa: E402
import localnode  # noqa: E402
from localcluster import Cluster, ClusterError, tool  # noqa: E402

_names = itertools.count(1)
pytestmark = pytest.mark.node


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("node")
    try:
        running = Cluster.start(state, REPO_ROOT, node=True)
    except (ClusterError, localnode.NodeError, localchart.ChartError) as err:
        raise pytest.fail.Exception(f"local node did not start: {err}", pytrace=False) from None
    yield running
    running.stop()


class Namespace:
    """One test's namespace, driven through real kubectl and the installed CLI."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.name, *args, check=check)

    def imagestreams(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.cluster.imagestreams_bin), "-n", self.name, *args],
            capture_output=True, text=True, env=self.cluster.env, timeout=180,
        )  # fmt: skip
        assert proc.returncode == 0, f"imagestreams {' '.join(args)}:\n{proc.stderr}"
        return proc

    def get(self, kind: str, name: str, jsonpath: str) -> str:
        return self.kubectl("get", kind, name, "-o", f"jsonpath={jsonpath}").stdout.strip()

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def running_pods(self, selector: str) -> list[dict[str, Any]]:
        """Pods of `selector` that are Running and Ready, not being deleted."""
        pods = self.json("pods", "-l", selector)["items"]
        return [p for p in pods if _running_and_ready(p)]

    def wait_rollout(self, deployment: str, timeout: int = 180) -> None:
        self.kubectl("rollout", "status", f"deployment/{deployment}", f"--timeout={timeout}s")

    def image_ids(self, selector: str) -> set[str]:
        """What the kubelet reports it ran (`imageID`) for the running pods of `selector`:
        the digest containerd resolved, whatever the spec said."""
        return {
            status["imageID"]
            for pod in self.running_pods(selector)
            for status in pod["status"].get("containerStatuses", [])
        }

    def image_digests(self, selector: str) -> set[str]:
        return {image_id.rsplit("@", 1)[-1] for image_id in self.image_ids(selector)}

    def dry_run_pod(self, image: str) -> str:
        out = self.kubectl(
            "run", "probe", f"--image={image}", "--restart=Never", "--dry-run=server",
            "-o", "jsonpath={.spec.containers[0].image}",
        )  # fmt: skip
        return out.stdout.strip()


def _running_and_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp") or pod["status"].get("phase") != "Running":
        return False
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Namespace:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{name}-{next(_names)}"
    cluster.ensure_namespace(name)
    return Namespace(cluster, name)


@pytest.fixture
def release(cluster: Cluster) -> Namespace:
    """The chart's namespace."""
    return Namespace(cluster, localchart.NAMESPACE)


@pytest.fixture(scope="session")
def push_app(cluster: Cluster) -> Callable[[str, str], str]:
    """Push the demo workload (an HTTP server saying its version) as REPOSITORY:TAG in the
    cluster's registry; returns its digest. Each version is its own image."""

    def push(repository_tag: str, version: str) -> str:
        pinned = cluster.push_image(localimages.app_spec(version), repository_tag)
        return pinned.rsplit("@", 1)[1]

    return push


def wait_until(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def crictl(cluster: Cluster, *args: str) -> str:
    return cluster.crictl(*args).stdout


__all__ = ["Namespace", "crictl", "tool", "wait_until"]
