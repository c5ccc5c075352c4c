"""Mirroring Local tags between two real registries on loopback (see mirror_fixtures.py).

The "upstream" is an open distribution registry, the "local" one a distribution registry
with token auth. Byte identity is checked with crane (`crane manifest`, `crane digest`,
`crane config`) against both registries; requests are counted by the clients' `on_response`
hook, independently of the stats the mirror reports. Figures are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import tarfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mirror_fixtures import (
    MirrorSetup,
    TamperingProxy,
    make_layer,
    mirror_setup,  # noqa: F401 (a fixture)
    start_upstream,
)

from webhook.mirror.copier import Mirrorer, MirrorStats
from webhook.mirror.plan import CopyBlob, LocalRegistry, MountBlob, Step
from webhook.mirror.status import MirrorJob, prune_plan, record_mirror, referenced_images
from webhook.mirror.worker import MirrorWorker
from webhook.model import streams
from webhook.model.streams import MIRRORED, is_mirrored, parse_image_stream
from webhook.registry.blobs import PUSH, BlobClient
from webhook.registry.client import ClientConfig, Repository
from webhook.registry.credentials import Credential
from webhook.registry.errors import DigestMismatch, InternalError

pytestmark = pytest.mark.integration


@dataclass
class Env:
    setup: MirrorSetup
    source: BlobClient
    target: BlobClient
    local: LocalRegistry
    log: list[tuple[str, str, int]] = field(default_factory=list)
    clients: list[BlobClient] = field(default_factory=list)

    def client(self, *extra_hosts: str) -> BlobClient:
        hosts = (*self.setup.allowed, *extra_hosts)
        client = BlobClient(
            ClientConfig(allowed_registries=hosts, insecure_registries=hosts),
            on_response=self.record,
        )
        self.clients.append(client)
        return client

    def record(self, host: str, method: str, status: int) -> None:
        self.log.append((host, method, status))

    def mirrorer(self, **options: Any) -> Mirrorer:
        return Mirrorer(self.source, self.target, self.local, **options)

    def upstream_repo(self, name: str, host: str | None = None) -> Repository:
        return Repository(host or self.setup.upstream.host, f"test/{name}", insecure=True)

    def requests_to(self, host: str, method: str | None = None) -> int:
        """Answered requests (a refused https attempt before http is not counted)."""
        return sum(1 for h, m, s in self.log if h == host and method in (None, m) and s)

    def crane(self, *args: str) -> str:
        return self.setup.crane(*args)


@pytest.fixture
def env(mirror_setup: MirrorSetup) -> Iterator[Env]:  # noqa: F811
    setup = mirror_setup
    credential = Credential(setup.user, setup.password, "test secret")
    local = LocalRegistry(setup.local.host, insecure=True, credential=credential)
    environment = Env(setup, None, None, local)  # type: ignore[arg-type]
    environment.source = environment.client()
    environment.target = environment.client()
    yield environment
    for client in environment.clients:
        client.close()


def figures(label: str, stats: MirrorStats) -> None:
    print(
        f"\nFIGURES {label}: blobs copied {stats.blobs_copied} ({stats.bytes_copied} bytes),"
        f" mounted {stats.blobs_mounted} ({stats.bytes_mounted} bytes), present"
        f" {stats.blobs_present}; manifests pushed {stats.manifests_pushed}"
        f" ({stats.manifest_bytes} bytes), tags {stats.tags_pushed}; requests"
        f" {stats.total_requests} {stats.requests}; {stats.seconds:.3f}s"
    )


def blob_sizes(manifest: dict[str, Any]) -> dict[str, int]:
    sizes = {manifest["config"]["digest"]: manifest["config"]["size"]}
    sizes.update({layer["digest"]: layer["size"] for layer in manifest["layers"]})
    return sizes


# ---------------------------------------------------------------------------------------------
# Byte identity


def test_single_arch_image_is_mirrored_byte_identical(env: Env) -> None:
    setup = env.setup
    digest = setup.digests["app:1"]
    stats = env.mirrorer().copy(env.upstream_repo("app"), digest, "team", "app", tag="1")
    figures("single-arch", stats)

    local, upstream = f"{setup.local_view.host}/team/app", setup.upstream_ref("app")
    manifest = env.crane("manifest", f"{local}@{digest}")
    assert manifest == env.crane("manifest", f"{upstream}@{digest}")
    assert env.crane("digest", f"{local}:1") == digest
    assert env.crane("config", f"{local}@{digest}") == env.crane("config", f"{upstream}@{digest}")

    sizes = blob_sizes(json.loads(manifest))
    assert stats.blobs_copied == len(sizes) == 4  # config and three layers
    assert stats.bytes_copied == sum(sizes.values())
    assert (stats.manifests_pushed, stats.tags_pushed, stats.blobs_mounted) == (1, 1, 0)
    # The hook saw exactly the requests the mirror reports, and each blob was read once.
    assert stats.total_requests == len(env.log)
    assert env.requests_to(setup.upstream.host, "GET") == 1 + len(sizes)  # manifest + blobs


def test_multi_arch_image_is_mirrored_byte_identical(env: Env) -> None:
    setup = env.setup
    digest = setup.digests["multi:1"]
    stats = env.mirrorer().copy(env.upstream_repo("multi"), digest, "team", "multi", tag="1")
    figures("multi-arch", stats)

    local, upstream = f"{setup.local_view.host}/team/multi", setup.upstream_ref("multi")
    index = env.crane("manifest", f"{local}@{digest}")
    assert index == env.crane("manifest", f"{upstream}@{digest}")
    assert json.loads(index)["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert env.crane("digest", f"{local}:1") == digest
    for platform, child in setup.platform_digests.items():
        assert env.crane("manifest", f"{local}@{child}") == env.crane(
            "manifest", f"{upstream}@{child}"
        )
        assert env.crane("digest", "--platform", platform, f"{local}:1") == child
    # Two platforms on one shared base layer: two configs and three layers, each once.
    assert (stats.manifests_pushed, stats.blobs_copied) == (3, 5)


def test_second_tag_copies_only_new_blobs_and_other_streams_mount(env: Env) -> None:
    setup = env.setup
    mirrorer = env.mirrorer()
    first = mirrorer.copy(env.upstream_repo("app"), setup.digests["app:1"], "share", "app", tag="1")
    assert first.blobs_copied == 4

    env.log.clear()
    second = mirrorer.copy(
        env.upstream_repo("app"), setup.digests["app:2"], "share", "app", tag="2"
    )
    figures("second tag, same stream", second)
    # app:2 = app:1's three layers + one new layer, and its own config.
    assert (second.blobs_present, second.blobs_copied, second.blobs_mounted) == (3, 2, 0)
    upstream_manifest = json.loads(env.crane("manifest", setup.upstream_ref("app:2")))
    new = {
        d: s
        for d, s in blob_sizes(upstream_manifest).items()
        if d not in blob_sizes(json.loads(env.crane("manifest", setup.upstream_ref("app:1"))))
    }
    assert second.bytes_copied == sum(new.values())
    assert env.requests_to(setup.upstream.host, "GET") == 1 + 2  # manifest + the new blobs
    assert second.total_requests == len(env.log)

    env.log.clear()
    third = mirrorer.copy(env.upstream_repo("app"), setup.digests["app:2"], "other", "app", tag="2")
    figures("same image, another stream (mounts)", third)
    assert (third.blobs_mounted, third.blobs_copied, third.bytes_copied) == (5, 0, 0)
    assert env.requests_to(setup.upstream.host, "GET") == 1  # the manifest only
    assert env.crane("digest", f"{setup.local_view.host}/other/app:2") == setup.digests["app:2"]

    env.log.clear()
    again = env.mirrorer().copy(
        env.upstream_repo("app"), setup.digests["app:2"], "other", "app", tag="2"
    )
    assert again.already_present
    assert again.total_requests == len(env.log) <= 3  # HEAD digest, HEAD tag (+ a token)
    assert env.requests_to(setup.upstream.host) == 0


def test_mount_from_a_repository_that_lost_the_blob_falls_back_to_a_copy(env: Env) -> None:
    setup = env.setup
    mirrorer = env.mirrorer()
    manifest = json.loads(env.crane("manifest", setup.upstream_ref("app:1")))
    # A wrong home for every blob: the registry answers the mount with an upload session.
    mirrorer.homes.record(blob_sizes(manifest), "nowhere/empty")
    stats = mirrorer.copy(env.upstream_repo("app"), setup.digests["app:1"], "fallback", "app")
    assert (stats.blobs_mounted, stats.blobs_copied) == (0, 4)
    assert env.crane("digest", f"{setup.local_view.host}/fallback/app@{setup.digests['app:1']}")


def test_chunked_upload(env: Env) -> None:
    setup = env.setup
    digest = setup.digests["big:1"]
    stats = env.mirrorer(chunk_size=1024 * 1024).copy(
        env.upstream_repo("big"), digest, "chunked", "big", tag="1"
    )
    figures("chunked upload (1 MiB chunks)", stats)
    layer = json.loads(env.crane("manifest", setup.upstream_ref("big:1")))["layers"][0]
    assert env.requests_to(setup.local.host, "PATCH") == -(-layer["size"] // (1024 * 1024)) >= 4
    local = f"{setup.local_view.host}/chunked/big"
    assert env.crane("manifest", f"{local}@{digest}") == env.crane(
        "manifest", f"{setup.upstream_ref('big')}@{digest}"
    )
    assert env.crane("digest", f"{local}:1") == digest


# ---------------------------------------------------------------------------------------------
# Interruptions and bad sources


class Interrupted(Exception):
    pass


def stop_after_blobs(count: int) -> Callable[[Step], None]:
    seen = [0]

    def hook(step: Step) -> None:
        if isinstance(step, CopyBlob | MountBlob):
            seen[0] += 1
            if seen[0] == count:
                raise Interrupted

    return hook


def test_interrupted_copy_resumes_and_never_publishes_an_incomplete_manifest(env: Env) -> None:
    setup = env.setup
    digest = setup.digests["multi:1"]
    source = env.upstream_repo("multi")
    with pytest.raises(Interrupted):
        env.mirrorer().copy(source, digest, "resume", "multi", tag="1", on_step=stop_after_blobs(2))
    dst = env.local.target("resume", "multi")
    assert env.target.head_manifest_as(dst, digest, actions=PUSH) is None
    for child in setup.platform_digests.values():
        assert env.target.head_manifest_as(dst, child, actions=PUSH) is None
    assert env.target.head_manifest_as(dst, "1", actions=PUSH) is None

    env.log.clear()
    resumed = env.mirrorer().copy(source, digest, "resume", "multi", tag="1")  # a restart
    figures("resumed multi-arch copy", resumed)
    assert (resumed.blobs_present, resumed.blobs_copied, resumed.manifests_pushed) == (2, 3, 3)
    assert env.crane("manifest", f"{setup.local_view.host}/resume/multi@{digest}") == env.crane(
        "manifest", f"{setup.upstream_ref('multi')}@{digest}"
    )


def test_interrupted_after_a_child_manifest_skips_that_child(env: Env) -> None:
    setup = env.setup
    digest = setup.digests["multi:1"]
    source = env.upstream_repo("multi")
    with pytest.raises(Interrupted):
        env.mirrorer().copy(source, digest, "resume2", "multi", on_step=stop_after_blobs(4))
    resumed = env.mirrorer().copy(source, digest, "resume2", "multi")
    # amd64 (config, common layer, own layer) and its manifest landed before the
    # interruption, then arm64's config: arm64 finds config and common layer present and
    # copies its own layer; its manifest and the index are left to push.
    assert (resumed.manifests_present, resumed.blobs_present) == (1, 2)
    assert (resumed.blobs_copied, resumed.manifests_pushed) == (1, 2)


@pytest.mark.parametrize("chunk_size", [None, 1024 * 1024], ids=["monolithic", "chunked"])
@pytest.mark.parametrize("mode", ["flip", "truncate"])
def test_a_spoiled_blob_never_lands(env: Env, mode: str, chunk_size: int | None) -> None:
    setup = env.setup
    proxy = TamperingProxy(setup.upstream.host, mode=mode).start()
    try:
        source_client = env.client(proxy.host)
        mirrorer = Mirrorer(source_client, env.target, env.local, chunk_size=chunk_size)
        digest = setup.digests["big:1"]
        namespace = f"spoiled-{mode}-{chunk_size or 0}"
        expected = DigestMismatch if mode == "flip" else InternalError
        with pytest.raises(expected):
            mirrorer.copy(env.upstream_repo("big", proxy.host), digest, namespace, "big")
    finally:
        proxy.stop()
    dst = env.local.target(namespace, "big")
    layer = json.loads(env.crane("manifest", setup.upstream_ref("big:1")))["layers"][0]
    assert env.target.head_blob(dst, layer["digest"], actions=PUSH) is None
    assert env.target.head_manifest_as(dst, digest, actions=PUSH) is None
    # The same copy from the real upstream then completes.
    stats = env.mirrorer().copy(env.upstream_repo("big"), digest, namespace, "big")
    assert stats.manifests_pushed == 1


# ---------------------------------------------------------------------------------------------
# Upstream gone, resolution


def local_stream(
    namespace: str, name: str, repository: str, tags: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """A stream with Local tags: tag → (dockerImageReference, image)."""
    return {
        "metadata": {"namespace": namespace, "name": name, "generation": 1},
        "spec": {
            "tags": [
                {
                    "name": tag,
                    "from": {"kind": "DockerImage", "name": ref},
                    "referencePolicy": {"type": "Local"},
                    "importPolicy": {"insecure": True},
                }
                for tag, (ref, _) in tags.items()
            ]
        },
        "status": {
            "dockerImageRepository": repository,
            "tags": [
                {
                    "tag": tag,
                    "items": [
                        {
                            "created": "2024-01-01T00:00:00Z",
                            "dockerImageReference": ref,
                            "image": image,
                            "generation": 1,
                        }
                    ],
                }
                for tag, (ref, image) in tags.items()
            ],
        },
    }


class StatusStore:
    """Stands in for the API server's copy of one stream: `write` is a ConditionWriter."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.lock = threading.Lock()

    def write(self, job: MirrorJob, condition: Any) -> bool:
        with self.lock:
            tags, changed = record_mirror(
                self.obj["status"]["tags"], job.tag, job.digest, condition
            )
            if changed:
                self.obj = {**self.obj, "status": {**self.obj["status"], "tags": tags}}
        return True

    def condition(self, tag: str) -> dict[str, Any]:
        entry = next(t for t in self.obj["status"]["tags"] if t["tag"] == tag)
        return next(c for c in entry.get("conditions", []) if c["type"] == MIRRORED)


def test_upstream_stopped_after_mirroring(env: Env, tmp_path: Path) -> None:
    setup = env.setup
    upstream = start_upstream(tmp_path, "doomed")
    try:
        layer = make_layer(tmp_path / "doomed.tar.gz", "doomed", 64 * 1024)
        setup.crane("append", "-f", str(layer), "-t", f"{upstream.host}/team/app:1")
        digest = setup.crane("digest", f"{upstream.host}/team/app:1")
        source_ref = f"{upstream.host}/team/app@{digest}"
        source_client = env.client(upstream.host)
        mirrorer = Mirrorer(source_client, env.target, env.local)
        repository = env.local.repository("gone", "app")
        store = StatusStore(local_stream("gone", "app", repository, {"1": (source_ref, digest)}))
        worker = MirrorWorker(mirrorer, store.write)
        assert [job.source for job in worker.submit(parse_image_stream(store.obj))] == [source_ref]
        assert streams.pinned_reference(streams.parse_image_stream(store.obj), "1") == source_ref
        assert worker.run_once()
    finally:
        upstream.stop()

    stream = streams.parse_image_stream(store.obj)
    assert is_mirrored(stream.history("1"))
    assert streams.pinned_reference(stream, "1") == f"{setup.local.host}/gone/app@{digest}"
    assert worker.submit(parse_image_stream(store.obj)) == []

    # The upstream is gone: crane pulls from the local registry.
    target = tmp_path / "pulled.tar"
    setup.crane("pull", f"{setup.local_view.host}/gone/app@{digest}", str(target))
    with tarfile.open(target) as archive:
        assert "manifest.json" in archive.getnames()
    # A restarted controller re-runs the copy: complete without contacting the upstream.
    env.log.clear()
    stats = Mirrorer(env.client(upstream.host), env.target, env.local).copy(
        Repository(upstream.host, "team/app", insecure=True), digest, "gone", "app", tag="1"
    )
    assert stats.already_present
    assert env.requests_to(upstream.host) == 0


def test_worker_records_failures_and_retries_with_backoff(env: Env) -> None:
    setup = env.setup
    now = [1000.0]
    missing = "sha256:" + "0" * 64
    repository = env.local.repository("work", "app")
    store = StatusStore(
        local_stream(
            "work",
            "app",
            repository,
            {
                "ok": (
                    f"{setup.upstream_ref('app')}@{setup.digests['app:1']}",
                    setup.digests["app:1"],
                ),
                "missing": (f"{setup.upstream_ref('app')}@{missing}", missing),
            },
        )
    )
    worker = MirrorWorker(env.mirrorer(), store.write, clock=lambda: now[0])
    assert len(worker.submit(parse_image_stream(store.obj))) == 2
    while worker.run_once():
        pass
    assert store.condition("ok")["status"] == "True"
    failed = store.condition("missing")
    assert (failed["status"], failed["reason"]) == ("False", "NotFound")
    assert missing in failed["message"]

    # Submitting again queues nothing: one tag is done, the other waits for its backoff.
    assert worker.submit(parse_image_stream(store.obj)) == []
    assert not worker.run_once()
    sample = worker.metrics.registry.get_sample_value
    assert sample("imagestreams_mirror_pending") == 1
    now[0] += 20.0  # past the first backoff (10 s at most)
    assert worker.run_once()
    assert store.condition("missing")["status"] == "False"
    assert not worker.run_once()  # the second backoff is longer
    assert sample("imagestreams_mirrors_total", {"result": "NotFound"}) == 2
    assert sample("imagestreams_mirrors_total", {"result": "copied"}) == 1


def test_tag_moved_during_the_copy_is_not_marked_mirrored(env: Env) -> None:
    setup = env.setup
    old, new = setup.digests["app:1"], setup.digests["app:2"]
    store = StatusStore(
        local_stream(
            "moving",
            "app",
            env.local.repository("moving", "app"),
            {"1": (f"{setup.upstream_ref('app')}@{old}", old)},
        )
    )
    worker = MirrorWorker(env.mirrorer(), store.write)
    worker.submit(parse_image_stream(store.obj))
    # The tag moves to app:2 before the copy of app:1 is recorded.
    entry = store.obj["status"]["tags"][0]
    entry["items"].insert(
        0,
        {
            **entry["items"][0],
            "image": new,
            "dockerImageReference": f"{setup.upstream_ref('app')}@{new}",
        },
    )
    assert worker.run_once()
    assert "conditions" not in entry
    assert [job.digest for job in worker.submit(parse_image_stream(store.obj))] == [new]
    assert worker.run_once()
    repository = env.local.repository("moving", "app")
    history = streams.parse_image_stream(store.obj).history("1")
    assert is_mirrored(history)
    assert history is not None
    mirrored = [c for c in history.conditions if c.type == MIRRORED]
    assert [c.message for c in mirrored] == [f"mirrored to {repository}@{new}"]


# ---------------------------------------------------------------------------------------------
# Garbage


def test_pruned_history_deletes_manifests_and_unshared_children(env: Env) -> None:
    setup = env.setup
    digests = setup.digests
    mirrorer = env.mirrorer()
    for tag, name in (("multi", "multi"), ("arm", "arm"), ("app", "app")):
        mirrorer.copy(env.upstream_repo(name), digests[f"{name}:1"], "prune", "s", tag=tag)
    repository = env.local.repository("prune", "s")
    before = local_stream(
        "prune",
        "s",
        repository,
        {
            "multi": (f"{setup.upstream_ref('multi')}@{digests['multi:1']}", digests["multi:1"]),
            "arm": (f"{setup.upstream_ref('arm')}@{digests['arm:1']}", digests["arm:1"]),
            "app": (f"{setup.upstream_ref('app')}@{digests['app:1']}", digests["app:1"]),
        },
    )
    after = json.loads(json.dumps(before))
    after["status"]["tags"] = [t for t in after["status"]["tags"] if t["tag"] != "multi"]
    assert prune_plan(before["status"]["tags"], after["status"]["tags"]) == [digests["multi:1"]]

    worker = MirrorWorker(mirrorer, lambda job, condition: True)
    assert worker.prune(before, after) == [digests["multi:1"]]
    env.log.clear()
    assert worker.run_once()
    deletes = env.requests_to(setup.local.host, "DELETE")
    print(f"\nFIGURES prune: {deletes} DELETEs, {len(env.log)} requests")

    dst = env.local.target("prune", "s")

    def present(reference: str) -> bool:
        return env.target.head_manifest_as(dst, reference, actions=PUSH) is not None

    amd64, arm64 = setup.platform_digests["linux/amd64"], setup.platform_digests["linux/arm64/v8"]
    assert not present(digests["multi:1"]) and not present("multi")  # the tag went with it
    assert not present(amd64)  # only the deleted index listed it
    assert present(arm64) and present(digests["arm:1"]) and present(digests["app:1"])
    assert deletes == 2
    assert env.crane("digest", f"{setup.local_view.host}/prune/s:arm") == digests["arm:1"]

    # The stream is deleted: everything goes.
    assert set(worker.prune(after, None)) == set(referenced_images(after["status"]["tags"]))
    assert worker.run_once()
    assert not any(present(d) for d in (arm64, digests["arm:1"], digests["app:1"]))


def test_a_refused_mount_falls_back_to_a_copy(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials that may push to this stream's repository but not read the other one."""
    setup = env.setup
    mirrorer = env.mirrorer()
    digest = setup.digests["app:1"]
    mirrorer.copy(env.upstream_repo("app"), digest, "vault", "app")
    server = setup.token_server
    original = server.handle

    def no_vault(request: Any) -> None:
        url = urllib.parse.urlsplit(request.path)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(url.query) if "vault/" not in v]
        request.path = url._replace(query=urllib.parse.urlencode(query)).geturl()
        original(request)

    monkeypatch.setattr(server, "handle", no_vault)
    env.log.clear()
    stats = mirrorer.copy(env.upstream_repo("app"), digest, "team2", "app")
    assert (stats.blobs_mounted, stats.blobs_copied) == (0, 4)
    local_answers = [(m, s) for h, m, s in env.log if h == setup.local.host]
    assert ("POST", 401) in local_answers
    assert env.crane("digest", f"{setup.local_view.host}/team2/app@{digest}") == digest
