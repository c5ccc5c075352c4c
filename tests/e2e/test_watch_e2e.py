"""The list-then-watch loop (webhook/kube/watch.py) against the real API server: the initial
list comes in pages (`limit`/`continue`), so that a worker never holds one response with
every stream of the cluster, and the index built from the pages is complete."""

from __future__ import annotations

import time
from typing import Any

import pytest
from clusterkit import Namespace

from webhook.kube.connect import GROUP, PLURAL, VERSION
from webhook.kube.watch import Watcher
from webhook.serving.stream_index import StreamIndex

pytestmark = pytest.mark.e2e

STREAMS = 7
PAGE = 3


def test_the_initial_list_is_read_in_pages_into_a_complete_index(namespace: Namespace) -> None:
    from kubernetes import client, config

    for i in range(STREAMS):
        namespace.cluster.apply(
            {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStream",
                "metadata": {"name": f"s{i}", "namespace": namespace.name},
                "spec": {"lookupPolicy": {"local": True}},
            }
        )
    api = client.CustomObjectsApi(
        config.new_client_from_config(config_file=str(namespace.cluster.kubeconfig))
    )
    calls: list[dict[str, Any]] = []

    def listing(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("watch"):
            calls.append(kwargs)
        return api.list_namespaced_custom_object(*args, **kwargs)

    index = StreamIndex()
    watcher = Watcher(index, listing, GROUP, VERSION, namespace.name, PLURAL, page_size=PAGE)
    watcher.start()
    try:
        assert index.wait_ready(20), "the list never completed"
        names = {f"s{i}" for i in range(STREAMS)}
        assert {n for n in names if index.get(namespace.name, n) is not None} == names
        assert [c.get("limit") for c in calls] == [PAGE, PAGE, PAGE]
        assert [bool(c.get("_continue")) for c in calls] == [False, True, True]
        # ...and the watch resumes from the list's version: a new stream arrives.
        namespace.cluster.apply(
            {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStream",
                "metadata": {"name": "late", "namespace": namespace.name},
                "spec": {"lookupPolicy": {"local": True}},
            }
        )
        deadline = time.monotonic() + 20
        while index.get(namespace.name, "late") is None:
            assert time.monotonic() < deadline, "the watch after a paged list saw nothing"
            time.sleep(0.05)
    finally:
        watcher.stop()
