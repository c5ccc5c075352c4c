"""Reference policy `Local`: copy a tag's image into the in-cluster registry.

Without OpenShift's integrated registry, a `Local` tag is served from a registry the cluster
runs (or points at) by `--local-registry HOST[:PORT]`: the controller copies the tag's current
image to `<local registry>/<namespace>/<stream>` and, once the copy is complete, short names
resolve to `<local registry>/<namespace>/<stream>@<digest>`, so pods keep starting when the
upstream registry is slow, rate-limited or gone.

The copy (`Mirrorer.copy`):

1. HEAD the digest in the local repository: present means complete (a manifest is only ever
   published after everything it references), and a re-run after a restart costs one request
   and never touches the upstream.
2. Otherwise fetch the manifest tree from the source (an index and every manifest it lists,
   each digest-verified), HEAD its manifests and blobs in the local repository, and plan
   (`plan_copy`, pure): children before parents, blobs before the manifest that needs them,
   the index last; each blob that is not present is mounted from another repository of the
   local registry that holds it (`BlobHomes`, an in-memory map filled by earlier copies) or
   streamed from the source, verified on the way (`blobs.BlobClient`).
3. Run the steps. An interruption anywhere leaves only blobs and complete child manifests
   behind, which the next run finds present and skips.

Status and resolution (the controller wires these in):

- `status.dockerImageRepository` = `local_repository(...)` on every stream.
- A finished copy is recorded as a tag condition, OpenShift's TagEventCondition with a type of
  our own: `{type: Mirrored, status: "True", reason: Mirrored, message: "mirrored to
  <repository>@<digest>", generation}`; a failed one as `status: "False"` with the registry
  error's reason (NotFound, Unauthorized, Forbidden, InternalError) and message, retried with
  backoff. `record_mirror` writes it only while the tag's current image is still that digest;
  `streams.record_event` drops every condition when the tag moves, so a `Mirrored=True`
  condition always speaks of `items[0]`.
- `is_mirrored(history, digest, status.dockerImageRepository)` is what resolution checks
  (`local_reference`): a `Local` tag resolves to the local repository only when it holds;
  until then to the source reference (admission warns).

Garbage: `prune_plan(old status tags, new status tags, history_limit)` lists the images that
left the stream's history (trimmed past the limit, a tag removed, the stream deleted);
`Mirrorer.delete` deletes those manifests (and the platform manifests of a deleted index that
no kept index lists) by `DELETE /v2/<name>/manifests/<digest>`; the registry's own garbage
collection frees the blobs.

`MirrorWorker` runs copies and deletions off the reconcile workers, one stream tag at a time,
with backoff, metrics, and a callback that writes the condition (`ConditionWriter`).
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.model import streams
from webhook.model.reference import InvalidReference, is_valid_digest, parse_normalized
from webhook.model.streams import MIRRORED, is_mirrored
from webhook.registry.blobs import PUSH, BlobClient, RequestTally, UploadSession
from webhook.registry.client import ClientConfig, Repository, ResponseHook
from webhook.registry.credentials import Credential, Keyring
from webhook.registry.errors import Forbidden, InternalError, NotFound, RegistryError, Unauthorized
from webhook.registry.manifests import Manifest

log = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 10
INITIAL_MIRROR_BACKOFF = 10.0
MAX_MIRROR_BACKOFF = 600.0
MAX_TREE_DEPTH = 3  # an index of indexes of images is the deepest seen in practice
MAX_TREE_MANIFESTS = 512
HOMES_LIMIT = 65536
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


# ---------------------------------------------------------------------------------------------
# Pure: the local registry's names


@dataclass(frozen=True, slots=True)
class LocalRegistry:
    """The in-cluster registry: `host` is the name pods pull from (written into status);
    `endpoint` where the controller pushes, when that differs (a Service DNS name)."""

    host: str
    endpoint: str = ""
    insecure: bool = False
    credential: Credential | None = None

    @property
    def push_host(self) -> str:
        return self.endpoint or self.host

    def repository(self, namespace: str, stream: str) -> str:
        """`status.dockerImageRepository` of stream `namespace/stream`."""
        return local_repository(self.host, namespace, stream)

    def target(self, namespace: str, stream: str) -> Repository:
        return Repository(self.push_host, f"{namespace}/{stream}", self.credential, self.insecure)


def local_repository(local_registry: str, namespace: str, stream: str) -> str:
    return f"{local_registry.strip().rstrip('/')}/{namespace}/{stream}"


def with_local_repository(obj: Mapping[str, Any], repository: str) -> tuple[dict[str, Any], bool]:
    """The stream with `status.dockerImageRepository` set; and whether that changed it."""
    status = dict(obj.get("status") or {})
    if status.get("dockerImageRepository") == repository:
        return dict(obj), False
    status["dockerImageRepository"] = repository
    return {**obj, "status": status}, True


# ---------------------------------------------------------------------------------------------
# Pure: manifest trees and the copy plan


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int
    media_type: str = ""
    foreign: bool = False  # a non-distributable layer: registries do not hold it


@dataclass(frozen=True, slots=True)
class Node:
    """A manifest to copy: its exact bytes, the blobs it needs, the manifests it lists."""

    digest: str
    media_type: str
    body: bytes = field(repr=False)
    blobs: tuple[Blob, ...] = ()
    children: tuple[Node, ...] = ()

    def walk(self) -> Iterator[Node]:
        """Every node once, children before parents (the order a push needs)."""
        seen: set[str] = set()

        def visit(node: Node) -> Iterator[Node]:
            if node.digest in seen:
                return
            seen.add(node.digest)
            for child in node.children:
                yield from visit(child)
            yield node

        yield from visit(self)

    def all_blobs(self) -> list[Blob]:
        found: dict[str, Blob] = {}
        for node in self.walk():
            for blob in node.blobs:
                found.setdefault(blob.digest, blob)
        return list(found.values())


def image_blobs(body: bytes, digest: str) -> tuple[Blob, ...]:
    """The config and layers an image manifest (OCI or Docker schema 2) references."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InternalError(f"manifest {digest} is not valid JSON") from None
    if not isinstance(document, Mapping):
        raise InternalError(f"manifest {digest} is not a JSON object")
    entries: list[Any] = []
    if document.get("config") is not None:
        entries.append(document["config"])
    layers = document.get("layers") or []
    if not isinstance(layers, list):
        raise InternalError(f"manifest {digest}: layers is not a list")
    entries += layers
    blobs: list[Blob] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise InternalError(f"manifest {digest} has a descriptor that is not an object")
        blob_digest, size = entry.get("digest"), entry.get("size")
        if not isinstance(blob_digest, str) or not is_valid_digest(blob_digest):
            raise InternalError(f"manifest {digest} references an invalid digest {blob_digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InternalError(f"manifest {digest}: blob {blob_digest} has no valid size")
        media_type = str(entry.get("mediaType") or "")
        foreign = media_type in FOREIGN_LAYER_TYPES and bool(entry.get("urls"))
        blobs.append(Blob(blob_digest, size, media_type, foreign))
    return tuple(blobs)


def node_of(manifest: Manifest, children: Sequence[Node] = ()) -> Node:
    blobs = () if manifest.is_index else image_blobs(manifest.body, manifest.digest)
    return Node(manifest.digest, manifest.media_type, manifest.body, blobs, tuple(children))


@dataclass(frozen=True, slots=True)
class CopyBlob:
    blob: Blob


@dataclass(frozen=True, slots=True)
class MountBlob:
    blob: Blob
    source: str  # a repository path in the local registry that holds it


@dataclass(frozen=True, slots=True)
class PutManifest:
    digest: str
    media_type: str
    body: bytes = field(repr=False)
    reference: str = ""  # the digest, or a tag to point at it

    @property
    def is_tag(self) -> bool:
        return self.reference != self.digest


Step = CopyBlob | MountBlob | PutManifest


def manifests_to_probe(tree: Node, known: Collection[str]) -> list[str]:
    """Manifest digests of `tree` whose presence in the target is not known yet."""
    return [node.digest for node in tree.walk() if node.digest not in known]


def missing_nodes(tree: Node, present: Collection[str]) -> list[Node]:
    """The manifests of `tree` the target lacks, children before parents; a present
    manifest stands for everything below it."""
    seen: set[str] = set()
    missing: list[Node] = []

    def visit(node: Node) -> None:
        if node.digest in present or node.digest in seen:
            return
        seen.add(node.digest)
        for child in node.children:
            visit(child)
        missing.append(node)

    visit(tree)
    return missing


def blobs_to_probe(tree: Node, present: Collection[str]) -> list[Blob]:
    """Blobs needed by the manifests of `tree` that the target lacks (each once)."""
    found: dict[str, Blob] = {}
    for node in missing_nodes(tree, present):
        for blob in node.blobs:
            if not blob.foreign and blob.digest not in present:
                found.setdefault(blob.digest, blob)
    return list(found.values())


def plan_copy(
    tree: Node,
    present: Collection[str],
    homes: Mapping[str, str] | None = None,
    *,
    target_path: str = "",
    tag: str | None = None,
    tagged: str | None = None,
) -> list[Step]:
    """The steps that make the target repository hold `tree`.

    `present`: digests (blobs and manifests) the target already holds; a present manifest
    stands for everything below it. `homes`: blob digest → another repository of the same
    registry that holds it (mounted instead of copied). Blobs come before the manifest
    that references them and children before their index, so a manifest is never
    published before its content; with `tag`, the top manifest is also put under that tag
    unless `tagged` (the digest the tag has now) says it already points there.
    """
    homes = homes or {}
    steps: list[Step] = []
    done: set[str] = set(present)
    for node in missing_nodes(tree, present):
        for blob in node.blobs:
            if blob.foreign or blob.digest in done:
                continue
            done.add(blob.digest)
            home = homes.get(blob.digest)
            steps.append(MountBlob(blob, home) if home and home != target_path else CopyBlob(blob))
        done.add(node.digest)
        steps.append(PutManifest(node.digest, node.media_type, node.body, node.digest))
    if tag and tagged != tree.digest:
        steps.append(PutManifest(tree.digest, tree.media_type, tree.body, tag))
    return steps


# ---------------------------------------------------------------------------------------------
# Pure: history, garbage, conditions


def _items(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = entry.get("items") or []
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def referenced_images(
    status_tags: Iterable[Mapping[str, Any]], history_limit: int | None = None
) -> list[str]:
    """Image digests in the tags' histories (the newest `history_limit` items of each),
    each once, in order."""
    found: dict[str, None] = {}
    for entry in status_tags:
        items = _items(entry)
        for item in items if history_limit is None else items[:history_limit]:
            image = item.get("image")
            if isinstance(image, str) and is_valid_digest(image):
                found.setdefault(image)
    return list(found)


def trim_history(
    status_tags: Iterable[Mapping[str, Any]], history_limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Status tags with at most `history_limit` items each; and whether any was cut."""
    result: list[dict[str, Any]] = []
    changed = False
    for entry in status_tags:
        copy = dict(entry)
        items = entry.get("items")
        if isinstance(items, list) and len(items) > max(1, history_limit):
            copy["items"] = items[: max(1, history_limit)]
            changed = True
        result.append(copy)
    return result, changed


def prune_plan(
    old_tags: Iterable[Mapping[str, Any]],
    new_tags: Iterable[Mapping[str, Any]] | None,
    history_limit: int = DEFAULT_HISTORY_LIMIT,
) -> list[str]:
    """Manifests to delete from the stream's local repository after status went from
    `old_tags` to `new_tags` (None: the stream was deleted): images the old status named
    that the new one, cut to `history_limit` items a tag, names nowhere. A digest another
    tag of the stream still holds is kept."""
    keep = set(referenced_images(new_tags or [], max(1, history_limit)))
    return [digest for digest in referenced_images(old_tags) if digest not in keep]


def _conditions(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    conditions = entry.get("conditions") or []
    return [c for c in conditions if isinstance(c, Mapping)] if isinstance(conditions, list) else []


def mirrored_message(repository: str, digest: str) -> str:
    return f"mirrored to {repository}@{digest}"


def mirrored_condition(
    repository: str, digest: str, generation: int, when: str | None = None
) -> dict[str, Any]:
    return {
        "type": MIRRORED,
        "status": "True",
        "lastTransitionTime": when or _now(),
        "reason": MIRRORED,
        "message": mirrored_message(repository, digest),
        "generation": generation,
    }


def mirror_failure_condition(
    reason: str, message: str, digest: str, generation: int, when: str | None = None
) -> dict[str, Any]:
    return {
        "type": MIRRORED,
        "status": "False",
        "lastTransitionTime": when or _now(),
        "reason": reason,
        "message": f"mirroring {digest} into the local registry failed: {message}"[:1024],
        "generation": generation,
    }


def local_reference(stream: streams.ImageStream, tag: str) -> str | None:
    """`<status.dockerImageRepository>@<digest>` for a Local tag whose current image is
    mirrored; None otherwise (resolution then uses the source reference)."""
    spec = stream.spec_tag(tag)
    if spec is None or spec.reference_policy != streams.LOCAL_POLICY:
        return None
    history = stream.history(tag)
    if not stream.status_repository or history is None or not history.items:
        return None
    digest = history.items[0].image
    repository = stream.status_repository
    return f"{repository}@{digest}" if is_mirrored(history, digest, repository) else None


def record_mirror(
    status_tags: Iterable[Mapping[str, Any]], tag: str, digest: str, condition: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    """Status tags with the tag's Mirrored condition set to `condition`, only while the
    tag's current image is `digest` (a copy that finished after the tag moved on says
    nothing about the new image); and whether anything changed."""
    result = [dict(entry) for entry in status_tags]
    entry = next((e for e in result if e.get("tag") == tag), None)
    if entry is None:
        return result, False
    items = _items(entry)
    if not items or items[0].get("image") != digest:
        return result, False
    conditions = _conditions(entry)
    old = next((c for c in conditions if c.get("type") == MIRRORED), None)
    keys = ("status", "reason", "message")
    if old is not None and all(old.get(k) == condition.get(k) for k in keys):
        return result, False
    entry["conditions"] = [*(dict(c) for c in conditions if c.get("type") != MIRRORED)]
    entry["conditions"].append(dict(condition))
    return result, True


@dataclass(frozen=True, slots=True)
class MirrorJob:
    """One tag's current image to copy into the local repository of its stream."""

    namespace: str
    stream: str
    tag: str
    digest: str
    source_registry: str  # the image's registry, as in its dockerImageReference
    source_path: str
    generation: int = 0
    insecure: bool = False

    @property
    def key(self) -> tuple[str, str, str, str]:
        return ("mirror", self.namespace, self.stream, self.tag)

    @property
    def source(self) -> str:
        return f"{self.source_registry}/{self.source_path}@{self.digest}"


def mirror_jobs(stream: streams.ImageStream, repository: str) -> list[MirrorJob]:
    """The Local tags whose current image is not (known to be) mirrored to `repository`
    (the stream's local repository) yet."""
    jobs = []
    for spec in stream.spec_tags:
        if spec.reference_policy != streams.LOCAL_POLICY:
            continue
        history = stream.history(spec.name)
        if history is None or not history.items:
            continue
        event = history.items[0]
        if not is_valid_digest(event.image) or is_mirrored(history, event.image, repository):
            continue
        try:
            ref = parse_normalized(event.docker_image_reference)
        except InvalidReference:
            continue
        jobs.append(
            MirrorJob(
                stream.namespace,
                stream.name,
                spec.name,
                event.image,
                ref.domain,
                ref.path,
                event.generation,
                spec.insecure,
            )
        )
    return jobs


def mirror_backoff(failures: int, retry_after: float | None, cap: float) -> float:
    delay: float = min(cap, INITIAL_MIRROR_BACKOFF * 2.0 ** max(0, failures - 1))
    return max(delay * random.uniform(0.8, 1.0), retry_after or 0.0)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# I/O: fetching trees, copying, deleting


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
        the target one trusting `ca_bundle` and allowed past the address guard (the local
        registry is operator configuration, not user input), with `allowed` for other hosts
        it sends us to (a token service on another address)."""
        target_config = ClientConfig(
            allowed_registries=(local.push_host, *allowed),
            insecure_registries=(local.push_host,) if local.insecure else (),
            ca_bundle=ca_bundle,
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


# ---------------------------------------------------------------------------------------------
# Running in the controller: a queue of copies and deletions, with backoff


class MirrorMetrics:
    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry or CollectorRegistry()
        self.mirrors = Counter(
            "imagestreams_mirrors",
            "Copies of Local tags into the local registry, by result (copied, present, or the"
            " failure reason).",
            ["result"],
            registry=self.registry,
        )
        self.blobs = Counter(
            "imagestreams_mirror_blobs",
            "Blobs a copy needed, by action (copied, mounted, present).",
            ["action"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "imagestreams_mirror_bytes",
            "Blob bytes streamed from source registries into the local registry.",
            registry=self.registry,
        )
        self.seconds = Histogram(
            "imagestreams_mirror_duration_seconds",
            "Time to copy one image into the local registry.",
            buckets=(0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 1200.0),
            registry=self.registry,
        )
        self.deletions = Counter(
            "imagestreams_mirror_deletions",
            "Manifests deleted from the local registry (pruned history, deleted streams),"
            " by result (deleted, absent, or the failure reason).",
            ["result"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "imagestreams_mirror_pending",
            "Local tags whose current image is not mirrored yet (queued, copying or waiting"
            " to retry).",
            registry=self.registry,
        )

    def observe(self, stats: MirrorStats) -> None:
        self.mirrors.labels(result="present" if stats.already_present else "copied").inc()
        self.blobs.labels(action="copied").inc(stats.blobs_copied)
        self.blobs.labels(action="mounted").inc(stats.blobs_mounted)
        self.blobs.labels(action="present").inc(stats.blobs_present)
        self.bytes.inc(stats.bytes_copied)
        self.seconds.observe(stats.seconds)


WriteCondition = Callable[[MirrorJob, Mapping[str, Any]], bool]
KeyringFor = Callable[[str], Keyring | None]


@dataclass
class _JobState:
    job: MirrorJob
    failures: int = 0
    done: bool = False


class MirrorWorker:
    """Runs copies (`submit`) and deletions (`prune`) on its own threads.

    One queue key per stream tag: a tag that moves while its old image is being copied
    gets the new image copied next; a failed copy writes a `Mirrored=False` condition and
    is retried with exponential backoff; a finished one writes `Mirrored=True` (through
    `write`, which returns False when the stream is gone) and is not submitted again until
    the tag moves.
    """

    def __init__(
        self,
        mirrorer: Mirrorer,
        write: WriteCondition,
        *,
        keyring_for: KeyringFor | None = None,
        workers: int = 2,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        metrics: MirrorMetrics | None = None,
        max_backoff: float = MAX_MIRROR_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from webhook.kube.workqueue import WorkQueue

        self.mirrorer = mirrorer
        self.write = write
        self.keyring_for = keyring_for
        self.workers = workers
        self.history_limit = history_limit
        self.metrics = metrics or MirrorMetrics()
        self.max_backoff = max_backoff
        self.queue: WorkQueue[tuple[str, str, str, str]] = WorkQueue(clock)
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str, str, str], _JobState] = {}
        self._doomed: dict[tuple[str, str], dict[str, None]] = {}
        self._keep: dict[tuple[str, str], set[str]] = {}
        self._prune_failures: dict[tuple[str, str], int] = {}
        self._threads: list[threading.Thread] = []
        self.metrics.pending.set_function(self._pending)

    def _pending(self) -> float:
        with self._lock:
            return float(sum(1 for state in self._jobs.values() if not state.done))

    # -- feeding ----------------------------------------------------------------------------

    def submit(self, obj: Mapping[str, Any]) -> list[MirrorJob]:
        """Queue the Local tags of stream `obj` whose current image is not mirrored; forget
        jobs of this stream that its status no longer asks for. Returns the new jobs."""
        try:
            stream = streams.parse_image_stream(obj)
        except streams.InvalidImageStream:
            return []
        repository = self.mirrorer.local.repository(stream.namespace, stream.name)
        jobs = {job.key: job for job in mirror_jobs(stream, repository)}
        fresh = []
        with self._lock:
            for key in [k for k in self._jobs if k[1:3] == (stream.namespace, stream.name)]:
                if key not in jobs:
                    del self._jobs[key]
            for key, job in jobs.items():
                state = self._jobs.get(key)
                if state is not None and state.job == job:
                    continue  # queued, copying, waiting to retry, or done
                self._jobs[key] = _JobState(job)
                fresh.append(job)
        for job in fresh:
            self.queue.add(job.key)
        return fresh

    def prune(self, before: Mapping[str, Any], after: Mapping[str, Any] | None) -> list[str]:
        """Queue the deletion of images that left the stream's history between `before` and
        `after` (None: the stream was deleted). Returns the digests."""
        metadata = before.get("metadata") or {}
        key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        old_tags = (before.get("status") or {}).get("tags") or []
        new_tags = None if after is None else (after.get("status") or {}).get("tags") or []
        doomed = prune_plan(old_tags, new_tags, self.history_limit)
        if not doomed:
            return []
        with self._lock:
            pending = self._doomed.setdefault(key, {})
            pending.update(dict.fromkeys(doomed))
            self._keep[key] = set(referenced_images(new_tags or [], self.history_limit))
        self.queue.add(("prune", key[0], key[1], ""))
        return doomed

    # -- running ----------------------------------------------------------------------------

    def start(self) -> MirrorWorker:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"mirror-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout=10)
        self.mirrorer.close()

    def run_once(self, timeout: float = 0.0) -> bool:
        """Process one due key on the calling thread (tests); False when none was due."""
        key = self.queue.get(timeout=timeout)
        if key is None:
            return False
        self._process(key)
        return True

    def _work(self) -> None:
        while (key := self.queue.get()) is not None:
            self._process(key)

    def _process(self, key: tuple[str, str, str, str]) -> None:
        try:
            if key[0] == "prune":
                self._run_prune((key[1], key[2]))
            else:
                self._run_job(key)
        except Exception:  # one bad stream must not stop the worker
            log.exception("mirror work on %s failed", "/".join(key[1:]))
        finally:
            self.queue.done(key)

    def _run_job(self, key: tuple[str, str, str, str]) -> None:
        with self._lock:
            state = self._jobs.get(key)
        if state is None or state.done:
            return
        job = state.job
        keyring = self.keyring_for(job.namespace) if self.keyring_for else None
        source = Repository(
            job.source_registry,
            job.source_path,
            keyring.lookup(job.source_registry, job.source_path) if keyring else None,
            job.insecure,
        )
        retry_after = None
        try:
            stats = self.mirrorer.copy(source, job.digest, job.namespace, job.stream, tag=job.tag)
        except RegistryError as error:
            condition = mirror_failure_condition(
                error.reason, error.message, job.digest, job.generation
            )
            retry_after = error.retry_after
            self.metrics.mirrors.labels(result=error.reason).inc()
            log.info("mirroring %s for %s/%s:%s failed: %s", job.source, *key[1:], error)
        else:
            repository = self.mirrorer.local.repository(job.namespace, job.stream)
            condition = mirrored_condition(repository, job.digest, job.generation)
            self.metrics.observe(stats)
            log.info(
                "mirrored %s to %s@%s: %d blobs copied (%d bytes), %d mounted, %d present,"
                " %d manifests, %d requests, %.1fs",
                job.source,
                repository,
                job.digest,
                stats.blobs_copied,
                stats.bytes_copied,
                stats.blobs_mounted,
                stats.blobs_present,
                stats.manifests_pushed,
                stats.total_requests,
                stats.seconds,
            )
        succeeded = condition["status"] == "True"
        try:
            exists = self.write(job, condition)
        except Exception as error:
            log.warning("recording the mirror of %s failed: %s", "/".join(key[1:]), error)
            succeeded, exists = False, True
        with self._lock:
            if self._jobs.get(key) is not state:
                return  # the tag moved meanwhile; its new job is queued
            if not exists:
                del self._jobs[key]
                return
            if succeeded:
                state.done = True
                return
            state.failures += 1
            delay = mirror_backoff(state.failures, retry_after, self.max_backoff)
        self.queue.add_after(key, delay)

    def _run_prune(self, key: tuple[str, str]) -> None:
        with self._lock:
            doomed = list(self._doomed.pop(key, {}))
            keep = set(self._keep.get(key, set()))
        if not doomed:
            return
        try:
            stats = self.mirrorer.delete(key[0], key[1], doomed, keep)
        except RegistryError as error:
            self.metrics.deletions.labels(result=error.reason).inc()
            log.info("deleting %d images of %s/%s failed: %s", len(doomed), *key, error)
            with self._lock:
                self._doomed.setdefault(key, {}).update(dict.fromkeys(doomed))
                failures = self._prune_failures.get(key, 0) + 1
                self._prune_failures[key] = failures
            delay = mirror_backoff(failures, error.retry_after, self.max_backoff)
            self.queue.add_after(("prune", key[0], key[1], ""), delay)
            return
        with self._lock:
            self._prune_failures.pop(key, None)
        self.metrics.deletions.labels(result="deleted").inc(len(stats.deleted))
        self.metrics.deletions.labels(result="absent").inc(len(stats.absent))


class ConditionWriter:
    """Writes a Mirrored condition into the stream's status through the API server: read,
    `record_mirror`, replace with the read resourceVersion, again on a conflict."""

    def __init__(self, custom_objects_api: Any, attempts: int = 5) -> None:
        self.custom = custom_objects_api
        self.attempts = attempts

    def __call__(self, job: MirrorJob, condition: Mapping[str, Any]) -> bool:
        from kubernetes.client.exceptions import ApiException

        from webhook.kube.connect import GROUP, PLURAL, VERSION

        for attempt in range(self.attempts):
            try:
                obj = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, job.namespace, PLURAL, job.stream
                )
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            status = dict(obj.get("status") or {})
            tags, changed = record_mirror(status.get("tags") or [], job.tag, job.digest, condition)
            if not changed:
                return True
            status["tags"] = tags
            try:
                self.custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, job.namespace, PLURAL, job.stream, {**obj, "status": status}
                )
                return True
            except ApiException as error:
                if error.status == 404:
                    return False
                if error.status != 409 or attempt + 1 == self.attempts:
                    raise
        return True
