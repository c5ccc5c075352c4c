"""The controller's index of workloads with image triggers, fed as its watches feed it
(metadata-only dicts), and its memory at 10,000 workloads."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterator
from typing import Any

from kubernetes import watch

from webhook.controller.workload_index import (
    METADATA_LIST,
    METADATA_WATCH,
    WorkloadIndex,
    metadata_lister,
)
from webhook.model.triggers import TRIGGERS_ANNOTATION, Trigger, field_path_for, triggers_json

WEB = field_path_for("Deployment", "web")
INIT = field_path_for("Deployment", "init", "initContainers")


def meta(
    name: str,
    namespace: str = "demo",
    triggers: list[Trigger] | str | None = None,
    *,
    generation: int = 2,
    uid: str = "",
) -> dict[str, Any]:
    """A workload as a metadata-only watch delivers it (PartialObjectMetadata)."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{namespace}-{name}",
        "generation": generation,
        "resourceVersion": "1",
    }
    if triggers is not None:
        text = triggers if isinstance(triggers, str) else triggers_json(triggers)
        metadata["annotations"] = {TRIGGERS_ANNOTATION: text}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, str, str], tuple[Trigger, ...]]] = []

    def __call__(self, key: tuple[str, str, str], triggers: tuple[Trigger, ...]) -> None:
        self.calls.append((key, triggers))

    def take(self) -> list[tuple[tuple[str, str, str], tuple[Trigger, ...]]]:
        calls, self.calls = self.calls, []
        return calls


def test_the_first_list_applies_only_workloads_never_changed_since_created() -> None:
    changes = Recorder()
    index = WorkloadIndex(changes)
    sink = index.sink("Deployment")
    sink.replace_all(
        [
            meta("new", triggers=[Trigger("app", "1", WEB)], generation=1),
            meta("old", triggers=[Trigger("app", "1", WEB)], generation=5),
            meta("plain"),
        ]
    )
    assert changes.take() == [
        (("Deployment", "demo", "new"), (Trigger("app", "1", WEB, "demo"),)),
    ]
    assert len(sink) == 2 and len(index) == 2
    assert index.following("demo", "app", {"1"}) == [
        ("Deployment", "demo", "new"),
        ("Deployment", "demo", "old"),
    ]
    assert index.following("demo", "app", {"2"}) == []
    assert index.wait_listed(0) is False  # the other kinds have not listed yet
    for kind in ("StatefulSet", "DaemonSet", "CronJob"):
        index.sink(kind).replace_all([])
    assert index.wait_listed(0) is True


def test_watch_events() -> None:
    changes = Recorder()
    index = WorkloadIndex(changes)
    sink = index.sink("Deployment")
    sink.replace_all([])
    web = [Trigger("app", "1", WEB)]
    sink.upsert(meta("web", triggers=web))  # created (or annotated) while watched
    assert changes.take() == [(("Deployment", "demo", "web"), (Trigger("app", "1", WEB, "demo"),))]
    sink.upsert(meta("web", triggers=web))  # scaled, rolled back, its image patched: nothing
    assert changes.take() == []
    both = [*web, Trigger("db", "1", INIT, "ops")]
    sink.upsert(meta("web", triggers=both))  # an entry added: that entry applies
    assert changes.take() == [(("Deployment", "demo", "web"), (Trigger("db", "1", INIT, "ops"),))]
    # A trigger on a stream in another namespace is found under that namespace.
    assert index.following("ops", "db", {"1"}) == [("Deployment", "demo", "web")]
    sink.upsert(meta("web", triggers=web, uid="another"))  # deleted and created again
    assert changes.take() == [(("Deployment", "demo", "web"), (Trigger("app", "1", WEB, "demo"),))]
    assert index.following("ops", "db", {"1"}) == []
    sink.delete(meta("web"))
    assert index.following("demo", "app", {"1"}) == [] and len(index) == 0


def test_problems_are_reported_once_per_change() -> None:
    changes = Recorder()
    sink = WorkloadIndex(changes).sink("Deployment")
    sink.replace_all([])
    sink.upsert(meta("web", triggers='[{"from": {}}]'))
    assert changes.take() == [(("Deployment", "demo", "web"), ())]  # read it, report
    sink.upsert(meta("web", triggers='[{"from": {}}]'))
    assert changes.take() == []
    sink.upsert(meta("web", triggers="["))
    assert changes.take() == [(("Deployment", "demo", "web"), ())]


def test_a_relist_finds_what_changed_while_the_watch_was_away() -> None:
    changes = Recorder()
    index = WorkloadIndex(changes)
    sink = index.sink("StatefulSet")
    kept = meta("kept", triggers=[Trigger("app", "1", WEB)])
    sink.replace_all([kept, meta("gone", triggers=[Trigger("app", "1", WEB)])])
    assert changes.take() == []
    sink.replace_all([kept, meta("new", triggers=[Trigger("app", "2", WEB)])])
    assert changes.take() == [
        (("StatefulSet", "demo", "new"), (Trigger("app", "2", WEB, "demo"),)),
    ]
    assert index.following("demo", "app", {"1", "2"}) == [
        ("StatefulSet", "demo", "kept"),
        ("StatefulSet", "demo", "new"),
    ]


class FakeAppsApi:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def list_deployment_for_all_namespaces(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return "response"


def test_the_watch_asks_for_metadata_and_keeps_events_as_dicts() -> None:
    apps = FakeAppsApi()
    lister = metadata_lister(apps, "Deployment")
    assert lister(_preload_content=False) == "response"
    assert lister(watch=True, resource_version="5") == "response"
    assert apps.calls == [
        {"_headers": {"Accept": METADATA_LIST}, "_preload_content": False},
        {"_headers": {"Accept": METADATA_WATCH}, "watch": True, "resource_version": "5"},
    ]
    assert "as=PartialObjectMetadataList;" in METADATA_LIST
    assert "as=PartialObjectMetadata;" in METADATA_WATCH
    # The kubernetes client's Watch finds no model to turn events into: they stay dicts,
    # so a PartialObjectMetadata is never forced into a V1Deployment.
    assert watch.Watch().get_return_type(lister) == ""
    event = watch.Watch().unmarshal_event(json.dumps({"type": "ADDED", "object": meta("x")}), "")
    assert event["object"] == meta("x")


# --- memory ---------------------------------------------------------------------------------


def cluster_of(count: int, *, own_streams: bool = False) -> Iterator[dict[str, Any]]:
    """`count` Deployments as a metadata-only list delivers them: 50 per namespace, each
    following one of its namespace's 10 streams (or, with own_streams, a stream of its
    own), every tenth also an init container from a shared namespace; with the labels,
    managedFields and kubectl's last-applied annotation real objects carry (never kept)."""
    for i in range(count):
        namespace, name = f"team-{i // 50:04d}", f"app-{i:05d}"
        stream = f"app-{i:05d}" if own_streams else f"service-{i % 10}"
        triggers = [Trigger(stream, "prod", WEB)]
        if i % 10 == 0:
            triggers.append(Trigger("base", "1", INIT, "shared"))
        obj = meta(name, namespace, triggers, uid=f"{i:08d}-0000-4000-8000-000000000000")
        metadata = obj["metadata"]
        metadata["labels"] = {"app": name, "team": namespace}
        metadata["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "x" * 1500
        metadata["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}] * 3
        yield obj


def retained_bytes(index: WorkloadIndex) -> int:
    """The bytes of everything the index keeps, each object once (a string shared by many
    workloads once). tracemalloc agrees within the interpreter's own tables (interned
    strings), but tracing every allocation would make this test take half a minute."""
    seen: set[int] = set()
    total = 0
    stack: list[Any] = [index._workloads, index._by_stream]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def test_memory_at_10000_workloads() -> None:
    """Prints the figure (pytest -s); asserts only that the index stays lean: per workload
    its key, uid and parsed triggers, never the object."""
    for label, own in (("10 streams per namespace", False), ("a stream per workload", True)):
        index = WorkloadIndex(lambda key, triggers: None)
        index.sink("Deployment").replace_all(cluster_of(10_000, own_streams=own))
        used = retained_bytes(index)
        print(
            f"\nFIGURES trigger index, {label}: {len(index)} workloads,"
            f" {used / 1e6:.1f} MB ({used / len(index):.0f} bytes each)"
        )
        assert len(index) == 10_000
        assert used / len(index) < 2_000  # a metadata-only object alone is several KB


# --- the reconciler on the index, with the API faked ----------------------------------------


class Response:
    def __init__(self, obj: Any) -> None:
        self.data = json.dumps(obj).encode()


class FakeCluster:
    """Deployments, one image stream and the access reviews, as the reconciler calls them."""

    def __init__(self, stream: dict[str, Any], grants: set[tuple[str, str]]) -> None:
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.stream = stream
        self.grants = grants  # (workload namespace, stream namespace)
        self.events: list[tuple[str, str, str]] = []

    def add(self, namespace: str, name: str, triggers: list[Trigger]) -> None:
        obj = meta(name, namespace, triggers)
        obj["spec"] = {"template": {"spec": {"containers": [{"name": "web", "image": "x:0"}]}}}
        self.deployments[(namespace, name)] = obj

    def image(self, namespace: str, name: str) -> str:
        return str(
            self.deployments[(namespace, name)]["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
        )

    # AppsV1Api
    def read_namespaced_deployment(self, name: str, namespace: str, **_: Any) -> Response:
        return Response(self.deployments[(namespace, name)])

    def patch_namespaced_deployment(
        self, name: str, namespace: str, ops: list[dict[str, Any]], **_: Any
    ) -> None:
        for op in ops:
            if op["path"].endswith("/image"):
                containers = self.deployments[(namespace, name)]["spec"]["template"]["spec"]
                containers["containers"][0]["image"] = op["value"]

    # CustomObjectsApi
    def get_namespaced_custom_object(self, *args: str) -> dict[str, Any]:
        return self.stream

    # AuthorizationV1Api
    def create_subject_access_review(self, review: Any) -> Any:
        user = review.spec.user.split(":")[2]
        allowed = (user, review.spec.resource_attributes.namespace) in self.grants
        return type("Review", (), {"status": type("Status", (), {"allowed": allowed})()})()

    # CoreV1Api
    def create_namespaced_event(self, namespace: str, event: Any) -> None:
        self.events.append((namespace, event.involved_object.name, event.message))


def ops_stream(digest: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "base", "namespace": "ops"},
        "spec": {"tags": [{"name": "1", "from": {"kind": "DockerImage", "name": "r.io/base:1"}}]},
        "status": {
            "tags": [
                {
                    "tag": "1",
                    "items": [
                        {
                            "created": "",
                            "dockerImageReference": f"r.io/base@{digest}",
                            "image": digest,
                            "generation": 1,
                        }
                    ],
                }
            ]
        },
    }


def test_cross_namespace_triggers_follow_moves_where_the_namespace_may_read() -> None:
    from webhook.controller.triggers import TriggerReconciler

    old, new = ("sha256:" + ch * 64 for ch in "ab")
    fake = FakeCluster(ops_stream(new), grants={("demo", "ops")})
    follows = [Trigger("base", "1", WEB, "ops")]
    fake.add("demo", "web", follows)
    fake.add("stranger", "web", follows)
    reconciler = TriggerReconciler(fake, fake, fake, fake, fake)
    reconciler.index.sink("Deployment").replace_all(fake.deployments.values())  # no apply
    updates = reconciler.stream_changed(ops_stream(new), ops_stream(old))
    assert [u.new for u in updates] == [f"r.io/base@{new}"]
    assert fake.image("demo", "web") == f"r.io/base@{new}"
    assert fake.image("stranger", "web") == "x:0"
    assert fake.events[-1] == (
        "stranger",
        "web",
        "trigger from ops/base:1: the service accounts of namespace stranger may not get"
        " imagestreams in namespace ops; grant them that to follow its streams",
    )


def test_a_new_workload_is_applied_by_the_worker_against_the_stream_as_it_is_now() -> None:
    from webhook.controller.triggers import TriggerReconciler

    digest = "sha256:" + "c" * 64
    fake = FakeCluster(ops_stream(digest), grants=set())
    fake.add("ops", "new", [Trigger("base", "1", WEB)])
    reconciler = TriggerReconciler(fake, fake, fake, fake, fake)
    sink = reconciler.index.sink("Deployment")
    sink.replace_all([])
    sink.upsert(fake.deployments[("ops", "new")])  # queued for the worker
    reconciler._apply_pending(("Deployment", "ops", "new"))  # what the worker thread does
    assert fake.image("ops", "new") == f"r.io/base@{digest}"
    assert fake.events == [
        ("ops", "new", f"image trigger base:1: container web set to r.io/base@{digest}")
    ]
