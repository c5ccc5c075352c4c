"""The pure parts of mirroring: copy plans, history trimming, garbage, conditions, resolution,
and the streamed blob check."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.mirror.plan import (
    Blob,
    LocalRegistry,
    MountBlob,
    Node,
    PutManifest,
    Step,
    blobs_to_probe,
    image_blobs,
    manifests_to_probe,
    plan_copy,
    with_local_repository,
)
from webhook.mirror.status import (
    mirror_failure_condition,
    mirror_jobs,
    mirrored_condition,
    prune_plan,
    record_mirror,
    referenced_images,
    trim_history,
)
from webhook.mirror.worker import mirror_backoff
from webhook.model import streams
from webhook.model.streams import MIRRORED, is_mirrored
from webhook.registry.blobs import VerifiedBlob, repository_scope, with_query
from webhook.registry.errors import DigestMismatch, InternalError
from webhook.registry.manifests import OCI_INDEX, OCI_MANIFEST


def digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


def blob(label: str, size: int = 10) -> Blob:
    return Blob(digest(label), size, "application/vnd.oci.image.layer.v1.tar+gzip")


def image(label: str, *blobs: Blob) -> Node:
    return Node(digest(label), OCI_MANIFEST, label.encode(), blobs)


def index(label: str, *children: Node) -> Node:
    return Node(digest(label), OCI_INDEX, label.encode(), (), children)


def kinds(steps: list[Step]) -> list[tuple[str, str]]:
    names = {}
    for node_label in ("img", "amd", "arm", "idx", "c1", "c2", "l1", "l2", "l3", "base"):
        names[digest(node_label)] = node_label
    out = []
    for step in steps:
        if isinstance(step, PutManifest):
            out.append(
                (
                    "tag" if step.is_tag else "put",
                    step.reference if step.is_tag else names[step.digest],
                )
            )
        elif isinstance(step, MountBlob):
            out.append(("mount", names[step.blob.digest]))
        else:
            out.append(("copy", names[step.blob.digest]))
    return out


# --- plan_copy ---------------------------------------------------------------------------


def test_single_image_blobs_before_manifest_then_tag() -> None:
    tree = image("img", blob("c1"), blob("l1"), blob("l2"))
    assert kinds(plan_copy(tree, set(), tag="1")) == [
        ("copy", "c1"),
        ("copy", "l1"),
        ("copy", "l2"),
        ("put", "img"),
        ("tag", "1"),
    ]


def test_present_blobs_are_skipped() -> None:
    tree = image("img", blob("c1"), blob("l1"), blob("l2"))
    steps = plan_copy(tree, {digest("l1"), digest("c1")})
    assert kinds(steps) == [("copy", "l2"), ("put", "img")]


def test_index_children_first_shared_blob_once_index_last() -> None:
    amd = image("amd", blob("c1"), blob("base"), blob("l1"))
    arm = image("arm", blob("c2"), blob("base"), blob("l2"))
    tree = index("idx", amd, arm)
    assert kinds(plan_copy(tree, set(), tag="v1")) == [
        ("copy", "c1"),
        ("copy", "base"),
        ("copy", "l1"),
        ("put", "amd"),
        ("copy", "c2"),
        ("copy", "l2"),
        ("put", "arm"),
        ("put", "idx"),
        ("tag", "v1"),
    ]


def test_a_present_child_manifest_stands_for_its_blobs() -> None:
    amd = image("amd", blob("c1"), blob("base"))
    arm = image("arm", blob("c2"), blob("base"))
    steps = plan_copy(index("idx", amd, arm), {digest("amd")})
    assert kinds(steps) == [("copy", "c2"), ("copy", "base"), ("put", "arm"), ("put", "idx")]


def test_present_top_needs_only_the_tag_unless_it_points_there() -> None:
    tree = index("idx", image("amd", blob("c1")))
    assert plan_copy(tree, {digest("idx")}) == []
    assert kinds(plan_copy(tree, {digest("idx")}, tag="v1")) == [("tag", "v1")]
    assert plan_copy(tree, {digest("idx")}, tag="v1", tagged=digest("idx")) == []


def test_blobs_held_elsewhere_are_mounted_but_never_from_the_target_itself() -> None:
    tree = image("img", blob("c1"), blob("l1"), blob("l2"))
    homes = {digest("l1"): "team/other", digest("l2"): "team/app"}
    steps = plan_copy(tree, set(), homes, target_path="team/app")
    assert kinds(steps) == [("copy", "c1"), ("mount", "l1"), ("copy", "l2"), ("put", "img")]
    mount = steps[1]
    assert isinstance(mount, MountBlob) and mount.source == "team/other"


def test_foreign_layers_are_not_copied() -> None:
    foreign = Blob(
        digest("l1"), 10, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", True
    )
    tree = image("img", blob("c1"), foreign)
    assert kinds(plan_copy(tree, set())) == [("copy", "c1"), ("put", "img")]
    assert blobs_to_probe(tree, set()) == [blob("c1")]


def test_probes() -> None:
    amd = image("amd", blob("c1"), blob("base"))
    arm = image("arm", blob("c2"), blob("base"))
    tree = index("idx", amd, arm)
    assert manifests_to_probe(tree, {digest("idx")}) == [digest("amd"), digest("arm")]
    assert [b.digest for b in blobs_to_probe(tree, {digest("amd")})] == [
        digest("c2"),
        digest("base"),
    ]
    assert blobs_to_probe(tree, {digest("idx")}) == []


@st.composite
def trees(draw: st.DrawFn) -> Node:
    pool = [blob(f"b{i}", i + 1) for i in range(8)]

    def an_image(n: int) -> Node:
        chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=5, unique=True))
        return Node(digest(f"image{n}"), OCI_MANIFEST, f"image{n}".encode(), tuple(chosen))

    if draw(st.booleans()):
        return an_image(0)
    count = draw(st.integers(1, 4))
    children = tuple(an_image(n) for n in range(count))
    if draw(st.booleans()):  # a nested index sharing the first child
        children += (Node(digest("inner"), OCI_INDEX, b"inner", (), children[:1]),)
    return Node(digest("top"), OCI_INDEX, b"top", (), children)


@settings(max_examples=300, deadline=None)
@given(trees(), st.data())
def test_plan_never_publishes_a_manifest_before_its_content(
    tree: Node, data: st.DataObject
) -> None:
    nodes = list(tree.walk())
    # What a previous, interrupted run may have left: any blobs, and manifests whose
    # content was complete (the invariant itself).
    present: set[str] = set(
        data.draw(st.sets(st.sampled_from([b.digest for b in tree.all_blobs()])))
    )
    for node in nodes:
        below = {b.digest for b in node.blobs if not b.foreign} | {c.digest for c in node.children}
        if below <= present and data.draw(st.booleans()):
            present.add(node.digest)
    homes = {b.digest: "elsewhere/repo" for b in tree.all_blobs()[:2]}
    steps = plan_copy(tree, present, homes, target_path="ns/s", tag="t")

    # Independently: the manifests not covered by a present manifest above them.
    covered: set[str] = set()

    def cover(node: Node) -> None:
        covered.add(node.digest)
        for child in node.children:
            cover(child)

    for node in nodes:
        if node.digest in present:
            cover(node)
    needed = {b.digest for n in nodes if n.digest not in covered for b in n.blobs}

    available = set(present)
    moved: list[str] = []
    for step in steps:
        if isinstance(step, PutManifest):
            node = next(n for n in nodes if n.digest == step.digest)
            assert {b.digest for b in node.blobs} | {c.digest for c in node.children} <= available
            available.add(step.digest)
        else:
            assert step.blob.digest not in available  # never a blob that is there already
            assert step.blob.digest in needed  # nor one only a present manifest needs
            available.add(step.blob.digest)
            moved.append(step.blob.digest)
    assert len(moved) == len(set(moved))
    assert tree.digest in available
    assert set(moved) == needed - present
    assert isinstance(steps[-1], PutManifest) and steps[-1].reference == "t"


# --- manifests ---------------------------------------------------------------------------


def test_image_blobs_reads_config_and_layers() -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "c", "digest": digest("c1"), "size": 3},
            "layers": [
                {"mediaType": "l", "digest": digest("l1"), "size": 5},
                {
                    "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                    "digest": digest("l2"),
                    "size": 7,
                    "urls": ["https://example.com/layer"],
                },
            ],
        }
    ).encode()
    blobs = image_blobs(body, digest("img"))
    assert [(b.digest, b.size, b.foreign) for b in blobs] == [
        (digest("c1"), 3, False),
        (digest("l1"), 5, False),
        (digest("l2"), 7, True),
    ]


@pytest.mark.parametrize(
    "document",
    [
        {"config": {"digest": "sha256:nothex", "size": 1}, "layers": []},
        {"config": {"digest": digest("c"), "size": -1}, "layers": []},
        {"config": {"digest": digest("c"), "size": True}, "layers": []},
        {"config": {"digest": digest("c"), "size": 1}, "layers": "no"},
        {"config": {"digest": digest("c"), "size": 1}, "layers": ["no"]},
        ["not", "an", "object"],
    ],
)
def test_image_blobs_rejects_bad_descriptors(document: Any) -> None:
    with pytest.raises(InternalError):
        image_blobs(json.dumps(document).encode(), digest("img"))


# --- history and garbage -----------------------------------------------------------------


def item(label: str) -> dict[str, Any]:
    return {
        "created": "2024-01-01T00:00:00Z",
        "dockerImageReference": f"r@{digest(label)}",
        "image": digest(label),
        "generation": 1,
    }


def test_trim_history_keeps_the_newest_items() -> None:
    tags = [
        {"tag": "a", "items": [item(str(i)) for i in range(12)]},
        {"tag": "b", "items": [item("x")]},
    ]
    trimmed, changed = trim_history(tags, 10)
    assert changed and [len(t["items"]) for t in trimmed] == [10, 1]
    assert trimmed[0]["items"][0] == item("0")
    assert len(tags[0]["items"]) == 12  # the input is not modified
    assert trim_history(trimmed, 10) == (trimmed, False)


def test_prune_plan_lists_images_that_left_the_history() -> None:
    history = [item(str(i)) for i in range(10)]
    old: list[dict[str, Any]] = [
        {"tag": "a", "items": history},
        {"tag": "b", "items": [item("9")]},
    ]
    new: list[dict[str, Any]] = [
        {"tag": "a", "items": [item("new"), *history]},
        {"tag": "b", "items": [item("9")]},
    ]
    # "9" fell off tag a's history but tag b still holds it; nothing else left.
    assert prune_plan(old, new, 10) == []
    new[1]["items"] = [item("other")]
    assert prune_plan(old, new, 10) == [digest("9")]
    # A smaller limit cuts deeper; deleting the stream takes everything.
    assert prune_plan(old, new, 8) == [digest("7"), digest("8"), digest("9")]
    assert prune_plan(old, None) == referenced_images(old)
    assert set(prune_plan(old, None)) == {digest(str(i)) for i in range(10)}


def test_prune_plan_ignores_recorded_references_without_a_digest() -> None:
    old = [{"tag": "a", "items": [{"dockerImageReference": "x:1", "image": ""}]}]
    assert prune_plan(old, []) == []


# --- conditions and resolution -----------------------------------------------------------

REPO = "registry.local:5000/team/app"


def stream(policy: str = "Local", conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"tag": "1", "items": [item("cur"), item("old")]}
    if conditions is not None:
        entry["conditions"] = conditions
    return {
        "metadata": {"namespace": "team", "name": "app", "generation": 2},
        "spec": {
            "tags": [
                {
                    "name": "1",
                    "from": {"kind": "DockerImage", "name": "quay.io/org/app:1"},
                    "referencePolicy": {"type": policy},
                },
            ]
        },
        "status": {"dockerImageRepository": REPO, "tags": [entry]},
    }


def test_record_mirror_only_for_the_current_image() -> None:
    obj = stream()
    tags = obj["status"]["tags"]
    done = mirrored_condition(REPO, digest("cur"), 1, "2024-01-02T00:00:00Z")
    assert record_mirror(tags, "1", digest("old"), done) == (tags, False)
    assert record_mirror(tags, "other", digest("cur"), done)[1] is False
    updated, changed = record_mirror(tags, "1", digest("cur"), done)
    assert changed and updated[0]["conditions"] == [done]
    assert "conditions" not in tags[0]  # the input is not modified
    # The same outcome again writes nothing, even at another time.
    later = dict(done, lastTransitionTime="2024-01-03T00:00:00Z")
    assert record_mirror(updated, "1", digest("cur"), later)[1] is False


def test_record_mirror_replaces_its_own_condition_and_keeps_others() -> None:
    imported = {"type": "ImportSuccess", "status": "False", "reason": "NotFound", "generation": 2}
    failed = mirror_failure_condition("Unauthorized", "denied", digest("cur"), 1)
    obj = stream(conditions=[imported, failed])
    done = mirrored_condition(REPO, digest("cur"), 1)
    updated, changed = record_mirror(obj["status"]["tags"], "1", digest("cur"), done)
    assert changed and updated[0]["conditions"] == [imported, done]


def test_is_mirrored_and_resolution() -> None:
    # What a short name resolves to (`streams.pinned_reference`): the source until the copy
    # of the current image into the stream's local repository is recorded as complete.
    source_reference = f"docker.io/library/r@{digest('cur')}"
    unmirrored = streams.parse_image_stream(stream())
    assert not is_mirrored(unmirrored.history("1"))
    assert streams.pinned_reference(unmirrored, "1") == source_reference

    failed = streams.parse_image_stream(
        stream(conditions=[mirror_failure_condition("NotFound", "gone", digest("cur"), 1)])
    )
    assert streams.pinned_reference(failed, "1") == source_reference

    done_obj = stream(conditions=[mirrored_condition(REPO, digest("cur"), 1)])
    done = streams.parse_image_stream(done_obj)
    assert is_mirrored(done.history("1"))
    # The tag moves: record_event clears the condition, which spoke of the old image.
    moved_tags, _ = streams.record_event(
        done_obj["status"]["tags"], "1", {"dockerImageReference": "docker.io/library/r@"
        + digest("new"), "image": digest("new"), "generation": 2, "created": "t"},
    )  # fmt: skip
    assert not any(c.get("type") == MIRRORED for c in moved_tags[0].get("conditions") or [])
    # The operator moves --local-registry: the new repository holds no copy yet.
    relocated, changed = with_local_repository(done_obj, "elsewhere:5000/team/app")
    assert changed
    relocated_stream = streams.parse_image_stream(relocated)
    assert not is_mirrored(relocated_stream.history("1"))
    assert streams.pinned_reference(relocated_stream, "1") == source_reference
    assert streams.pinned_reference(done, "1") == f"{REPO}@{digest('cur')}"
    source = streams.parse_image_stream(
        stream("Source", conditions=[mirrored_condition(REPO, digest("cur"), 1)])
    )
    assert streams.pinned_reference(source, "1") == source_reference


def test_mirror_jobs_for_unmirrored_local_tags() -> None:
    obj = stream()
    obj["spec"]["tags"][0]["importPolicy"] = {"insecure": True}
    obj["status"]["tags"][0]["items"][0]["dockerImageReference"] = (
        f"quay.io/org/app@{digest('cur')}"
    )
    [job] = mirror_jobs(streams.parse_image_stream(obj), REPO)
    assert (job.namespace, job.stream, job.tag, job.digest) == ("team", "app", "1", digest("cur"))
    assert (job.source_registry, job.source_path, job.insecure) == ("quay.io", "org/app", True)
    assert job.source == f"quay.io/org/app@{digest('cur')}"
    assert mirror_jobs(streams.parse_image_stream(stream("Source")), REPO) == []
    done = stream(conditions=[mirrored_condition(REPO, digest("cur"), 1)])
    assert mirror_jobs(streams.parse_image_stream(done), REPO) == []
    assert len(mirror_jobs(streams.parse_image_stream(done), "elsewhere:5000/team/app")) == 1
    no_digest = stream()
    no_digest["status"]["tags"][0]["items"][0]["image"] = ""
    assert mirror_jobs(streams.parse_image_stream(no_digest), REPO) == []


def test_local_registry_names() -> None:
    local = LocalRegistry("registry.example:5000", endpoint="imagestreams-registry.infra.svc:5000")
    assert local.repository("team", "app") == "registry.example:5000/team/app"
    target = local.target("team", "app")
    assert (target.registry, target.path) == ("imagestreams-registry.infra.svc:5000", "team/app")
    obj, changed = with_local_repository({"status": {"tags": []}}, local.repository("team", "app"))
    assert changed and obj["status"]["dockerImageRepository"] == "registry.example:5000/team/app"
    assert with_local_repository(obj, "registry.example:5000/team/app")[1] is False


def test_mirror_backoff_grows_is_capped_and_honours_retry_after() -> None:
    assert 8.0 <= mirror_backoff(1, None, 600) <= 10.0
    assert 16.0 <= mirror_backoff(2, None, 600) <= 20.0
    assert mirror_backoff(30, None, 600) <= 600
    assert mirror_backoff(1, 120.0, 600) == 120.0


def test_condition_shapes() -> None:
    done = mirrored_condition(REPO, digest("cur"), 3, "2024-01-02T00:00:00Z")
    assert done == {
        "type": MIRRORED,
        "status": "True",
        "lastTransitionTime": "2024-01-02T00:00:00Z",
        "reason": "Mirrored",
        "message": f"mirrored to {REPO}@{digest('cur')}",
        "generation": 3,
    }
    failed = mirror_failure_condition("Forbidden", "x" * 2000, digest("cur"), 3)
    assert failed["status"] == "False" and len(failed["message"]) == 1024


# --- the streamed blob check -------------------------------------------------------------


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def read_all(blob_reader: VerifiedBlob, amount: int = 7) -> bytes:
    out = b""
    while piece := blob_reader.read(amount):
        out += piece
    return out


def test_verified_blob_passes_the_content_through() -> None:
    data = bytes(range(256)) * 10
    reader = VerifiedBlob(
        iter(chunks_of(data, 100)), f"sha256:{hashlib.sha256(data).hexdigest()}", len(data), "t"
    )
    assert len(reader) == len(data)
    assert read_all(reader) == data
    assert reader.read() == b""


def test_verified_blob_fails_before_handing_over_the_last_bytes() -> None:
    data = b"a" * 1000
    wrong = "sha256:" + hashlib.sha256(b"b" * 1000).hexdigest()
    reader = VerifiedBlob(iter(chunks_of(data, 100)), wrong, len(data), "t")
    handed = b""
    with pytest.raises(DigestMismatch):
        while piece := reader.read(50):
            handed += piece
    assert len(handed) == 900  # the last chunk never left


@pytest.mark.parametrize("size", [999, 1001])
def test_verified_blob_fails_on_a_wrong_size(size: int) -> None:
    data = b"a" * 1000
    reader = VerifiedBlob(
        iter(chunks_of(data, 100)), f"sha256:{hashlib.sha256(data).hexdigest()}", size, "t"
    )
    with pytest.raises(DigestMismatch):
        read_all(reader)


def test_verified_blob_slices_for_chunked_uploads() -> None:
    data = bytes(range(250))
    reader = VerifiedBlob(
        iter(chunks_of(data, 64)), f"sha256:{hashlib.sha256(data).hexdigest()}", 250, "t"
    )
    parts = []
    for length in (100, 100, 50):
        piece = reader.slice(length)
        assert len(piece) == length
        parts.append(b"".join(iter(piece)))
    assert b"".join(parts) == data


def test_upload_helpers() -> None:
    assert repository_scope("team/app", "pull,push") == "repository:team/app:pull,push"
    assert (
        with_query("http://r:5000/v2/a/blobs/uploads/u?_state=x%3D", digest="sha256:ab")
        == "http://r:5000/v2/a/blobs/uploads/u?_state=x%3D&digest=sha256%3Aab"
    )


# --- the condition writer (a stand-in for the API server's two calls) --------------------


class FakeStreams:
    """get/replace of one stream's status, with resourceVersion conflicts as the API server
    has them: a replace carrying an old resourceVersion fails with 409."""

    def __init__(self, obj: dict[str, Any] | None, interfere: int = 0) -> None:
        self.obj = obj
        self.interfere = interfere  # how many replaces another writer wins first
        self.replaces = 0

    def get_namespaced_custom_object(self, *args: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        assert args == ("image.openshift.io", "v1", "team", "imagestreams", "app")
        if self.obj is None:
            raise ApiException(status=404)
        copy: dict[str, Any] = json.loads(json.dumps(self.obj))
        return copy

    def replace_namespaced_custom_object_status(self, *args: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        assert self.obj is not None
        body: dict[str, Any] = args[5]
        self.replaces += 1
        if self.interfere:
            self.interfere -= 1
            version = int(self.obj["metadata"]["resourceVersion"]) + 1
            self.obj["metadata"]["resourceVersion"] = str(version)
            raise ApiException(status=409)
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        self.obj = body
        return body


def writer_job() -> Any:
    from webhook.mirror.status import MirrorJob

    return MirrorJob("team", "app", "1", digest("cur"), "quay.io", "org/app", 1)


def test_condition_writer_retries_conflicts_and_skips_no_ops() -> None:
    from webhook.mirror.worker import ConditionWriter

    obj = stream()
    obj["metadata"]["resourceVersion"] = "7"
    api = FakeStreams(obj, interfere=2)
    condition = mirrored_condition(REPO, digest("cur"), 1)
    assert ConditionWriter(api)(writer_job(), condition) is True
    assert api.replaces == 3
    assert api.obj is not None
    assert api.obj["status"]["tags"][0]["conditions"] == [condition]
    # Written already: no replace at all.
    assert ConditionWriter(api)(writer_job(), condition) is True
    assert api.replaces == 3


def test_condition_writer_on_a_deleted_stream_and_endless_conflicts() -> None:
    from kubernetes.client.exceptions import ApiException

    from webhook.mirror.worker import ConditionWriter

    condition = mirrored_condition(REPO, digest("cur"), 1)
    assert ConditionWriter(FakeStreams(None))(writer_job(), condition) is False
    obj = stream()
    obj["metadata"]["resourceVersion"] = "1"
    with pytest.raises(ApiException):
        ConditionWriter(FakeStreams(obj, interfere=10), attempts=3)(writer_job(), condition)
