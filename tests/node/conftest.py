"""Fixtures for the node tier: a real one-node cluster (kubelet, containerd, runc, a bridge
CNI network, kube-proxy, CoreDNS) with the chart installed from this repository's image,
started once per session by hack/localcluster.py in a temporary directory.

Pods really start here: the tests look at what the kubelet ran (`imageID`), not only at what
the API server stored. The node needs root and the tools of `make tools`; a missing one fails
the session with its name: these tests never skip.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "hack"))

import localchart  # noqa: E402
import localimages  # noqa: E402
import localnode  # noqa: E402
from localcluster import Cluster, ClusterError  # noqa: E402
from nodekit import Namespace  # noqa: E402

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
