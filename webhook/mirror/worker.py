"""Reference policy `Local` in the controller: a queue of copies and deletions, with backoff.

`MirrorWorker` runs copies (`copier.Mirrorer`) and deletions off the reconcile workers, one
stream tag at a time, with backoff, metrics (`MirrorMetrics`), and a callback that writes the
tag's Mirrored condition (`ConditionWriter`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.kube import api as kube_api
from webhook.kube.workqueue import WorkQueue
from webhook.mirror.copier import Mirrorer, MirrorStats
from webhook.mirror.status import (
    DEFAULT_HISTORY_LIMIT,
    MirrorJob,
    mirror_failure_condition,
    mirror_jobs,
    mirrored_condition,
    prune_plan,
    record_mirror,
    referenced_images,
)
from webhook.model.backoff import backoff
from webhook.model.streams import ImageStream
from webhook.registry.client import Repository
from webhook.registry.credentials import Keyring
from webhook.registry.errors import RegistryError

log = logging.getLogger(__name__)

INITIAL_MIRROR_BACKOFF = 10.0
MAX_MIRROR_BACKOFF = 600.0


def mirror_backoff(failures: int, retry_after: float | None, cap: float) -> float:
    """Before retrying a failed copy: from INITIAL_MIRROR_BACKOFF, never sooner than a
    registry asked."""
    return backoff(failures, initial=INITIAL_MIRROR_BACKOFF, cap=cap, retry_after=retry_after)


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

    def submit(self, stream: ImageStream) -> list[MirrorJob]:
        """Queue the Local tags of `stream` whose current image is not mirrored; forget
        jobs of this stream that its status no longer asks for. Returns the new jobs."""
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
            succeeded = False
            condition = mirror_failure_condition(
                error.reason, error.message, job.digest, job.generation
            )
            retry_after = error.retry_after
            self.metrics.mirrors.labels(result=error.reason).inc()
            log.info("mirroring %s for %s/%s:%s failed: %s", job.source, *key[1:], error)
        else:
            succeeded = True
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
    """Writes a Mirrored condition into the stream's status (`record_mirror` through
    kube.api.StreamStatus: read, change, replace at the read resourceVersion, again on a
    conflict). False when the stream is gone."""

    def __init__(self, custom_objects_api: Any, attempts: int = kube_api.CONFLICT_RETRIES) -> None:
        self.status = kube_api.StreamStatus(custom_objects_api, retries=attempts)

    def __call__(self, job: MirrorJob, condition: Mapping[str, Any]) -> bool:
        def change(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
            status = dict(obj.get("status") or {})
            tags, changed = record_mirror(status.get("tags") or [], job.tag, job.digest, condition)
            return {**obj, "status": {**status, "tags": tags}} if changed else None

        return self.status.update(job.namespace, job.stream, change).before is not None
