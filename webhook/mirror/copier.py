"""Copying images into the local registry, and deleting them again.

The copy (`Mirrorer.copy`):

1. HEAD the digest in the local repository: present means complete (a manifest is only ever
   published after everything it references), and a re-run after a restart costs one request
   and never touches the upstream.
2. Otherwise fetch the manifest tree from the source (an index and every manifest it lists,
   each digest-verified), HEAD its manifests and blobs in the local repository, and plan
   (`plan.plan_copy`); each blob that is not present is mounted from another repository of
   the local registry that holds it (`BlobHomes`, an in-memory map filled by earlier copies)
   or streamed from the source, verified on the way (`blobs.BlobClient`).
3. Run the steps.

`Mirrorer.delete` deletes the manifests `status.prune_plan` lists (and the platform manifests
of a deleted index that no kept index lists) by `DELETE /v2/<name>/manifests/<digest>`; the
registry's own garbage collection frees the blobs.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.mirror.plan import (
    Blob,
    LocalRegistry,
    MountBlob,
    Node,
    PutManifest,
    Step,
    blobs_to_probe,
    manifests_to_probe,
    node_of,
    plan_copy,
)
from webhook.model.reference import is_valid_digest
from webhook.registry.blobs import PUSH, BlobClient, RequestTally, UploadSession
from webhook.registry.client import ClientConfig, Repository, ResponseHook
from webhook.registry.errors import Forbidden, InternalError, NotFound, Unauthorized
from webhook.registry.manifests import Manifest

log = logging.getLogger(__name__)

MAX_TREE_DEPTH = 3  # an index of indexes of images is the deepest seen in practice
MAX_TREE_MANIFESTS = 512
HOMES_LIMIT = 65536


def fetch_tree(client: BlobClient, repo: Repository, digest: str) -> Node:
    """The manifest `digest` of `repo` and, for an index, every manifest below it."""
    budget = [MAX_TREE_MANIFESTS]
    fetched: dict[str, Node] = {}

    def fetch(reference: str, depth: int) -> Node:
        if reference in fetched:
            return fetched[reference]
        budget[0] -= 1
        if budget[0] < 0:
            raise InternalError(
                f"{repo.name}@{digest} lists more than {MAX_TREE_MANIFESTS} manifests"
            )
        manifest = client.get_manifest(repo, reference)
        children: list[Node] = []
        if manifest.is_index:
            if depth >= MAX_TREE_DEPTH:
                raise InternalError(f"{repo.name}@{digest} nests indexes too deeply")
            children = [fetch(entry.digest, depth + 1) for entry in manifest.manifests]
        node = node_of(manifest, children)
        fetched[reference] = node
        return node

    return fetch(digest, 0)


class BlobHomes:
    """Blob digest → a repository of the local registry known to hold it (bounded LRU)."""

    def __init__(self, limit: int = HOMES_LIMIT) -> None:
        self._limit = limit
        self._homes: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, digests: Iterable[str]) -> dict[str, str]:
        with self._lock:
            return {d: self._homes[d] for d in digests if d in self._homes}

    def record(self, digests: Iterable[str], repository: str) -> None:
        with self._lock:
            for digest in digests:
                self._homes[digest] = repository
                self._homes.move_to_end(digest)
            while len(self._homes) > self._limit:
                self._homes.popitem(last=False)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._homes.pop(digest, None)

    def __len__(self) -> int:
        return len(self._homes)


@dataclass
class MirrorStats:
    """What one copy did and cost."""

    digest: str = ""
    manifests_pushed: int = 0
    manifests_present: int = 0
    tags_pushed: int = 0
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    blobs_foreign: int = 0
    bytes_copied: int = 0  # blob bytes streamed from the source into the local registry
    bytes_mounted: int = 0  # blob bytes the local registry mounted instead
    manifest_bytes: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # host → HTTP requests
    seconds: float = 0.0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def already_present(self) -> bool:
        return self.manifests_pushed == 0 and self.blobs_copied == 0 and self.blobs_mounted == 0


@dataclass
class DeleteStats:
    deleted: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    requests: int = 0


StepHook = Callable[[Step], None]


class Mirrorer:
    """Copies images into the local registry and deletes them again (thread-safe; copies
    into one repository are serialized, different repositories run in parallel)."""

    def __init__(
        self,
        source: BlobClient,
        target: BlobClient,
        local: LocalRegistry,
        *,
        chunk_size: int | None = None,
        push_tags: bool = True,
        homes: BlobHomes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.target = target
        self.local = local
        self.chunk_size = chunk_size
        self.push_tags = push_tags
        self.homes = homes or BlobHomes()
        self._clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @classmethod
    def create(
        cls,
        local: LocalRegistry,
        source_config: ClientConfig,
        *,
        ca_bundle: str | None = None,
        allowed: Sequence[str] = (),
        on_response: ResponseHook | None = None,
        **options: Any,
    ) -> Mirrorer:
        """A mirrorer with its own clients: the source one configured as the importer's,
        the target one also trusting `ca_bundle` and allowed past the address guard (the local
        registry is operator configuration, not user input), with `allowed` for other hosts
        it sends us to (a token service on another address); it is reached directly, never
        through the source's proxies (it is in or next to the cluster)."""
        target_config = ClientConfig(
            allowed_registries=(local.push_host, *allowed),
            insecure_registries=(local.push_host,) if local.insecure else (),
            ca_files=(*source_config.ca_files, *([ca_bundle] if ca_bundle else [])),
            user_agent=source_config.user_agent,
        )
        return cls(
            BlobClient(source_config, on_response=on_response),
            BlobClient(target_config, on_response=on_response),
            local,
            **options,
        )

    def close(self) -> None:
        self.source.close()
        if self.target is not self.source:
            self.target.close()

    # -- copy -------------------------------------------------------------------------------

    def copy(
        self,
        source: Repository,
        digest: str,
        namespace: str,
        stream: str,
        *,
        tag: str | None = None,
        on_step: StepHook | None = None,
    ) -> MirrorStats:
        """Make `<local>/<namespace>/<stream>` hold image `digest` of `source` (and point
        `tag` at it); raises a RegistryError when it cannot."""
        if not is_valid_digest(digest):
            raise InternalError(f"cannot mirror {source.name}@{digest}: not a digest")
        dst = self.local.target(namespace, stream)
        tag = tag if self.push_tags else None
        stats = MirrorStats(digest)
        started = self._clock()
        with self._repository_lock(dst.path), self._tally() as tallies:
            try:
                self._copy(source, dst, digest, tag, stats, on_step)
            finally:
                for tally in tallies:
                    for host, count in tally.by_host().items():
                        stats.requests[host] = stats.requests.get(host, 0) + count
                stats.seconds = self._clock() - started
        return stats

    def _copy(
        self,
        source: Repository,
        dst: Repository,
        digest: str,
        tag: str | None,
        stats: MirrorStats,
        on_step: StepHook | None,
    ) -> None:
        top = self.target.head_manifest_as(dst, digest, actions=PUSH)
        if top is not None:
            stats.manifests_present = 1
            if tag is None:
                return
            current = self.target.head_manifest_as(dst, tag, actions=PUSH)
            if current is not None and current.digest == digest:
                return
            # Only the tag is missing: its bytes come from the local copy, not the source.
            manifest = self.target.get_manifest(dst, digest)
            tree = Node(manifest.digest, manifest.media_type, manifest.body)
            self._run(plan_copy(tree, {digest}, tag=tag), source, dst, stats, on_step)
            return
        tree = fetch_tree(self.source, source, digest)
        present: set[str] = set()
        for reference in manifests_to_probe(tree, {digest}):
            if self.target.head_manifest_as(dst, reference, actions=PUSH) is not None:
                present.add(reference)
                stats.manifests_present += 1
        for blob in blobs_to_probe(tree, present):
            if self.target.head_blob(dst, blob.digest, actions=PUSH) is not None:
                present.add(blob.digest)
                stats.blobs_present += 1
        blobs = tree.all_blobs()
        stats.blobs_foreign = sum(1 for blob in blobs if blob.foreign)
        homes = self.homes.lookup(blob.digest for blob in blobs if blob.digest not in present)
        steps = plan_copy(tree, present, homes, target_path=dst.path, tag=tag)
        self._run(steps, source, dst, stats, on_step)
        self.homes.record((blob.digest for blob in blobs if not blob.foreign), dst.path)

    def _run(
        self,
        steps: Sequence[Step],
        source: Repository,
        dst: Repository,
        stats: MirrorStats,
        on_step: StepHook | None,
    ) -> None:
        for step in steps:
            if isinstance(step, PutManifest):
                self.target.put_manifest(dst, step.reference, step.media_type, step.body)
                if step.is_tag:
                    stats.tags_pushed += 1
                else:
                    stats.manifests_pushed += 1
                    stats.manifest_bytes += len(step.body)
            elif isinstance(step, MountBlob):
                try:
                    session = self.target.start_upload(
                        dst, mount=step.blob.digest, mount_from=step.source
                    )
                except (Unauthorized, Forbidden):
                    # Credentials that may push here but not read the other repository.
                    log.debug("mount of %s from %s refused", step.blob.digest, step.source)
                    session = self.target.start_upload(dst)
                if session is None:
                    stats.blobs_mounted += 1
                    stats.bytes_mounted += step.blob.size
                else:  # the other repository no longer holds it: upload into this session
                    self.homes.forget(step.blob.digest)
                    self._copy_blob(source, dst, step.blob, session, stats)
            else:
                self._copy_blob(source, dst, step.blob, None, stats)
            if on_step is not None:
                on_step(step)

    def _copy_blob(
        self,
        source: Repository,
        dst: Repository,
        blob: Blob,
        session: UploadSession | None,
        stats: MirrorStats,
    ) -> None:
        try:
            with self.source.open_blob(source, blob.digest, blob.size) as reader:
                if session is None:
                    session = self.target.start_upload(dst)
                    assert session is not None
                opened, session = session, None  # upload() cancels it on failure
                self.target.upload(opened, reader, chunk_size=self.chunk_size)
        finally:
            if session is not None:
                self.target.cancel_upload(session)
        stats.blobs_copied += 1
        stats.bytes_copied += blob.size

    # -- delete -----------------------------------------------------------------------------

    def delete(
        self, namespace: str, stream: str, digests: Sequence[str], keep: Collection[str] = ()
    ) -> DeleteStats:
        """Delete manifests `digests` from the stream's local repository, and the manifests
        a deleted index lists unless a kept index (or `keep` itself) still lists them."""
        dst = self.local.target(namespace, stream)
        stats = DeleteStats()
        with self._repository_lock(dst.path), self._tally() as tallies:
            listed: dict[str, None] = {}
            for digest in (d for d in digests if d not in keep):
                manifest = self._local_manifest(dst, digest)
                if manifest is None:
                    stats.absent.append(digest)
                    continue
                for entry in manifest.manifests:
                    listed.setdefault(entry.digest)
                self._delete_one(dst, digest, stats)
            if listed:
                still_listed: set[str] = set(keep)
                for digest in keep:
                    manifest = self._local_manifest(dst, digest)
                    if manifest is not None:
                        still_listed.update(entry.digest for entry in manifest.manifests)
                for digest in listed:
                    if digest not in still_listed:
                        self._delete_one(dst, digest, stats)
            stats.requests = sum(tally.total for tally in tallies)
        return stats

    def _delete_one(self, dst: Repository, digest: str, stats: DeleteStats) -> None:
        if self.target.delete_manifest(dst, digest):
            stats.deleted.append(digest)
        else:
            stats.absent.append(digest)

    def _local_manifest(self, dst: Repository, digest: str) -> Manifest | None:
        try:
            return self.target.get_manifest(dst, digest)
        except NotFound:
            return None

    # -- helpers ----------------------------------------------------------------------------

    def _repository_lock(self, path: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(path, threading.Lock())

    @contextlib.contextmanager
    def _tally(self) -> Iterator[list[RequestTally]]:
        with contextlib.ExitStack() as stack:
            clients = [self.source] if self.source is self.target else [self.source, self.target]
            yield [stack.enter_context(client.counting()) for client in clients]
