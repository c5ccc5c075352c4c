"""Fixtures for the node tier: a real one-node cluster (kubelet, containerd, runc, a bridge
CNI network, kube-proxy, CoreDNS) with the chart installed from this repository's image,
started once per session by hack/localcluster.py in a temporary directory.

Pods really start here: the tests look at what the kubelet ran (`imageID`), not only at what
the API server stored. The node needs root and the tools of `make tools`; a missing one fails
the session with its name: these tests never skip.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for clusterkit.py
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

import localchart
import localimages
import localnode
from clusterkit import namespace_name, started_cluster
from localcluster import Cluster, ClusterError
from nodekit import Namespace

pytestmark = pytest.mark.node


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    errors = (ClusterError, localnode.NodeError, localchart.ChartError)
    with started_cluster(
        tmp_path_factory.mktemp("node"), node=True, errors=errors, what="local node"
    ) as running:
        yield running


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Namespace:
    name = namespace_name(request.node.name)
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
