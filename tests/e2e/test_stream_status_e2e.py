"""ImageStream status writes (webhook/kube/api.py StreamStatus) against the real API server,
through each of the two writers the controller may use: the kubernetes client, and the thin
client (webhook/kube/listwatch.py RestClient.put) where the configuration allows it. Both
must behave alike: a write that carries the read's resourceVersion, a conflict answered by
re-applying the change to a fresh read (keeping what the other writer wrote), a stream
deleted meanwhile taken as gone, and an error status raised with the server's message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from clusterkit import Namespace
from localcluster import stream_status

from webhook.kube import api, errors
from webhook.kube.connect import GROUP, VERSION, connect, custom_objects, rest_config
from webhook.kube.listwatch import RestClient

pytestmark = pytest.mark.e2e

OURS = {"ours": "registry.example/team/app@sha256:" + "1" * 64}
THEIRS = {"theirs": "registry.example/team/other@sha256:" + "2" * 64}


@pytest.fixture(params=["kubernetes", "thin"])
def writer(request: pytest.FixtureRequest, namespace: Namespace) -> api.StreamStatus:
    kubeconfig = str(namespace.cluster.kubeconfig)
    custom = custom_objects(connect(kubeconfig))
    if request.param == "kubernetes":
        return api.StreamStatus(custom)
    return api.StreamStatus(custom, rest=RestClient(rest_config(kubeconfig)))


def create_stream(namespace: Namespace, name: str) -> None:
    namespace.cluster.apply(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ImageStream",
            "metadata": {"name": name, "namespace": namespace.name},
            "spec": {"lookupPolicy": {"local": True}},
        }
    )


def stored_tags(namespace: Namespace, name: str) -> list[str]:
    status = json.loads(namespace.get("imagestream", name, "{.status}") or "{}")
    return [t["tag"] for t in status.get("tags") or []]


class AddTags:
    """A change that appends `pinned`'s tags to the stream's status unless it has them;
    records each object it was given."""

    def __init__(self, pinned: dict[str, str]) -> None:
        self.added: list[dict[str, Any]] = stream_status(pinned)["status"]["tags"]
        self.seen: list[Mapping[str, Any]] = []

    def __call__(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        self.seen.append(obj)
        tags = list((obj.get("status") or {}).get("tags") or [])
        if {t["tag"] for t in self.added} <= {t["tag"] for t in tags}:
            return None
        return {**obj, "status": {**(obj.get("status") or {}), "tags": tags + self.added}}


def test_a_write_and_a_change_with_nothing_to_write(
    namespace: Namespace, writer: api.StreamStatus
) -> None:
    create_stream(namespace, "app")
    change = AddTags(OURS)
    write = writer.update(namespace.name, "app", change)
    assert write.before is not None and write.written is not None
    assert [t["tag"] for t in write.written["status"]["tags"]] == ["ours"]
    version = write.written["metadata"]["resourceVersion"]
    assert version != write.before["metadata"]["resourceVersion"]
    assert stored_tags(namespace, "app") == ["ours"]
    assert namespace.get("imagestream", "app", "{.metadata.resourceVersion}") == version
    # Written already: the change says so, and nothing is sent.
    again = writer.update(namespace.name, "app", change, current=write.written)
    assert again.written is None and again.before == write.written
    assert namespace.get("imagestream", "app", "{.metadata.resourceVersion}") == version


def test_a_conflict_is_retried_on_a_fresh_read_keeping_the_other_writers_change(
    namespace: Namespace, writer: api.StreamStatus
) -> None:
    create_stream(namespace, "app")
    stale = writer.read(namespace.name, "app")
    assert stale is not None
    namespace.cluster.write_stream_status(namespace.name, "app", THEIRS)  # in between
    change = AddTags(OURS)
    write = writer.update(namespace.name, "app", change, current=stale)
    assert len(change.seen) == 2, "the change was not applied again to a fresh read"
    assert change.seen[0] is stale
    assert write.before is not None and write.written is not None
    assert [t["tag"] for t in write.before["status"]["tags"]] == ["theirs"]
    assert stored_tags(namespace, "app") == ["theirs", "ours"]


def test_endless_conflicts_give_up_with_the_409(
    namespace: Namespace, writer: api.StreamStatus
) -> None:
    create_stream(namespace, "app")

    def change(obj: Mapping[str, Any]) -> dict[str, Any]:
        # Another writer gets in before every one of ours.
        namespace.cluster.write_stream_status(
            namespace.name, "app", {f"t{len(seen)}": OURS["ours"]}
        )
        seen.append(obj)
        return AddTags(OURS)(obj) or {}

    seen: list[Mapping[str, Any]] = []
    writer.retries = 2
    with pytest.raises(errors.API_ERRORS) as lost:
        writer.update(namespace.name, "app", change)
    assert errors.status_of(lost.value) == errors.CONFLICT and len(seen) == 2
    assert "the object has been modified" in errors.server_message(lost.value)


def test_a_stream_deleted_meanwhile_is_gone(namespace: Namespace, writer: api.StreamStatus) -> None:
    create_stream(namespace, "app")
    stale = writer.read(namespace.name, "app")
    assert stale is not None
    namespace.kubectl("delete", "imagestream", "app")
    change = AddTags(OURS)
    write = writer.update(namespace.name, "app", change, current=stale)
    assert write == api.StatusWrite(None, None) and len(change.seen) == 1
    assert writer.update(namespace.name, "app", change) == api.StatusWrite(None, None)
    assert len(change.seen) == 1  # never read, never changed


def test_an_error_status_is_raised_with_the_servers_message(
    namespace: Namespace, writer: api.StreamStatus
) -> None:
    create_stream(namespace, "app")

    def invalid(obj: Mapping[str, Any]) -> dict[str, Any]:
        return {**obj, "status": {"tags": [{"tag": "bad", "items": "not a list"}]}}

    with pytest.raises(errors.API_ERRORS) as refused:
        writer.update(namespace.name, "app", invalid)
    assert errors.status_of(refused.value) == errors.INVALID
    assert "status.tags[0].items" in errors.server_message(refused.value)
    assert errors.body_of(refused.value)["reason"] == "Invalid"
    assert stored_tags(namespace, "app") == []
