"""The controller's stream cache: what it keeps of a stream, and which changes are urgent."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator
from typing import Any

from webhook.controller.stream_cache import StreamCache, lean, pack, requested, unpack
from webhook.kube.workqueue import WorkQueue

D1 = "sha256:" + "1" * 64


def stream(
    name: str = "app", *, spec_generation: int = 2, seen: int | None = 2, labels: Any = None
) -> dict[str, Any]:
    status_tags = []
    if seen is not None:
        item = {
            "created": "2026-11-20T10:00:00Z",
            "dockerImageReference": f"quay.io/org/app@{D1}",
            "image": D1,
            "generation": seen,
        }
        status_tags.append({"tag": "1.0", "items": [item]})
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "team",
        "uid": "u-1",
        "resourceVersion": "41",
        "generation": 2,
        "creationTimestamp": "2026-11-01T10:00:00Z",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 4000},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:tags": {}}}}],
    }
    if labels is not None:
        metadata["labels"] = labels
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": metadata,
        "spec": {
            "lookupPolicy": {"local": True},
            "tags": [
                {
                    "name": "1.0",
                    "from": {"kind": "DockerImage", "name": "quay.io/org/app:1.0"},
                    "generation": spec_generation,
                    "importPolicy": {"scheduled": True},
                }
            ],
        },
        "status": {"dockerImageRepository": "", "tags": status_tags},
    }


def test_lean_keeps_what_reconciling_reads_and_drops_the_rest() -> None:
    obj = stream(labels={"team": "a"})
    kept = lean(obj)
    assert kept["metadata"] == {
        "name": "app",
        "namespace": "team",
        "generation": 2,
        "resourceVersion": "41",
        "uid": "u-1",
        "labels": {"team": "a"},
    }
    assert kept["spec"] == obj["spec"] and kept["status"] == obj["status"]
    assert (kept["apiVersion"], kept["kind"]) == ("image.openshift.io/v1", "ImageStream")


def test_packed_is_small_and_unpacks_to_the_lean_object() -> None:
    obj = stream()
    packed = pack(obj)
    assert unpack(packed) == lean(obj)
    assert len(packed) < 600  # the object, annotation and managedFields included, is > 4 KiB


def test_a_tag_waiting_for_its_import_is_requested() -> None:
    assert requested(stream(spec_generation=3, seen=2))  # edited, or import-image
    assert requested(stream(seen=None))  # new
    assert not requested(stream(spec_generation=2, seen=2))  # answered: a status write
    aliased = stream()
    aliased["spec"]["tags"].append({"name": "a", "from": {"kind": "ImageStreamTag", "name": "1.0"}})
    assert requested(aliased)  # a new alias is a user's change too
    assert not requested({"metadata": {"name": "x"}, "spec": {"tags": 5}})  # invalid


def test_a_users_change_is_queued_ahead_of_the_list() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    cache = StreamCache(queue)
    cache.replace_all(stream(f"s{i}") for i in range(100))  # a pass over unchanged streams
    cache.upsert(stream("s50"))  # its status write comes back: nothing for a person
    cache.upsert(stream("s70", spec_generation=3))  # `import-image s70`
    assert queue.urgent() == 1
    assert queue.get(0) == ("team", "s70")
    assert queue.get(0) == ("team", "s0")


def test_the_list_is_consumed_object_by_object() -> None:
    """A paginated list reaches the cache as an iterator: each object is packed and let go
    before the next one is read, so the list is never held whole."""

    class Obj(dict[str, Any]):  # a dict that can be weakly referenced
        pass

    refs: list[weakref.ref[Obj]] = []

    def objects() -> Iterator[Obj]:
        for i in range(50):
            obj = Obj(stream(f"s{i}"))
            refs.append(weakref.ref(obj))
            yield obj
            del obj
            # Only the one being packed is alive (the consumer's loop variable).
            assert all(ref() is None for ref in refs[:-1])

    cache = StreamCache(WorkQueue())
    cache.replace_all(objects())
    assert len(cache) == 50 and cache.listed.is_set()


def test_get_returns_a_fresh_copy_and_labels_are_at_hand() -> None:
    cache = StreamCache(WorkQueue())
    obj = stream(labels={"team": "a"})
    cache.upsert(obj)
    first = cache.get(("team", "app"))
    assert first is not None
    first["status"]["tags"].clear()
    again = cache.get(("team", "app"))
    assert again is not None and again["status"] == obj["status"]
    assert cache.labels(("team", "app")) == {"team": "a"}
    unlabelled = copy.deepcopy(obj)
    del unlabelled["metadata"]["labels"]
    cache.upsert(unlabelled)
    assert cache.labels(("team", "app")) == {}
    cache.delete(unlabelled)
    assert cache.get(("team", "app")) is None


def test_the_echo_of_our_own_status_write_is_kept_but_not_queued() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    cache = StreamCache(queue)
    written = stream()
    written["metadata"]["resourceVersion"] = "42"
    cache.wrote(written)
    cache.upsert(written)  # the watch brings our write back
    assert len(queue) == 0
    assert cache.get(("team", "app"))["metadata"]["resourceVersion"] == "42"  # type: ignore[index]
    other = stream()
    other["metadata"]["resourceVersion"] = "43"  # someone else's change after ours
    cache.upsert(other)
    assert queue.get(0) == ("team", "app")


def test_a_write_whose_echo_was_overtaken_does_not_hide_later_changes() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    cache = StreamCache(queue)
    later = stream()
    later["metadata"]["resourceVersion"] = "44"
    cache.wrote({**later, "metadata": {**later["metadata"], "resourceVersion": "42"}})
    cache.upsert(later)  # another writer's version reached us first
    assert queue.get(0) == ("team", "app")
