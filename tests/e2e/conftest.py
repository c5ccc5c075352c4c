"""Fixtures for end-to-end tests: a real kube-apiserver, etcd, kube-controller-manager, OCI
registry and the imagestreams webhook, all on 127.0.0.1, started once per session by
hack/localcluster.py in a temporary directory. Their helpers (Namespace, push_image, …) are
in tests/clusterkit.py, which the node and reliability tiers share.

The binaries come from `make tools`. A missing one fails the session with its name: these
tests never skip.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for clusterkit.py

from clusterkit import Image, Namespace, namespace_name, push_image, started_cluster
from localcluster import Cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with started_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="session")
def app_image(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """A one-layer image pushed into the cluster's registry as e2e/app:1.0 by crane."""
    repository = f"{cluster.registry}/e2e/app"
    digest = push_image(f"{repository}:1.0", "imagestreams e2e\n", tmp_path_factory.mktemp("image"))
    return Image(repository, "1.0", digest)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Namespace:
    """A fresh namespace per test (left for the session's teardown to discard)."""
    return _new_namespace(cluster, request.node.name)


@pytest.fixture
def new_namespace(cluster: Cluster) -> Callable[[str], Namespace]:
    """Makes more namespaces: `new_namespace("other")`."""
    return lambda hint: _new_namespace(cluster, hint)


def _new_namespace(cluster: Cluster, hint: str) -> Namespace:
    name = namespace_name(hint)
    cluster.ensure_namespace(name)
    return Namespace(cluster, name)
