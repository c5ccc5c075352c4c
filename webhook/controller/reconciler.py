"""`imagestreams controller`: keeps every ImageStream's status true to its sources.

A watch fills a cache of streams and queues each changed one; workers reconcile a stream
at a time:

1. decide which tags are due (`due_tags`, pure): a spec generation status has not
   answered, a failed import whose backoff has passed, a scheduled tag whose interval has;
2. import them (registry tags under the global and per-registry rate limits, HEAD first
   when the tag was imported before, a scheduled check answered from another stream's
   check of the same tag moments ago where there is one (`shared_answers`); stream-sourced
   tags from the cache);
3. fold the results into status (`streams.record_event` / `record_failure`), follow
   same-stream aliases, and write status only if it changed — with the resourceVersion
   read, retrying on conflict against a fresh read so no other writer's history is lost;
4. come back when the next scheduled check or retry is due.

Everything that talks to the API server or a registry is in `Controller`; the rules are in
`streams.py`, `importer.py` and the pure functions here.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.controller import importer
from webhook.controller.importer import ImportResult
from webhook.controller.metrics import ControllerMetrics
from webhook.controller.planning import (
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    SCHEDULE_JITTER,
    SCHEDULED,
    StreamState,
    apply_results,
    backoff,
    current_images,
    due_tags,
    next_scheduled_check,
    next_visit,
    remembered,
    status_tags_of,
    with_status_tags,
)
from webhook.controller.policy_labels import PolicyLabeler
from webhook.controller.ratelimit import ImportLimiter
from webhook.controller.shared_answers import SharedAnswers
from webhook.controller.stream_cache import Key, StreamCache, key_of
from webhook.kube import api, errors
from webhook.kube.connect import GROUP, PLURAL, VERSION
from webhook.kube.listwatch import RestClient
from webhook.kube.watch import Source
from webhook.kube.workqueue import WorkQueue
from webhook.mirror.copier import Mirrorer
from webhook.mirror.plan import LocalRegistry, local_repository, with_local_repository
from webhook.mirror.status import DEFAULT_HISTORY_LIMIT, trim_history
from webhook.mirror.worker import ConditionWriter, MirrorMetrics, MirrorWorker
from webhook.model import streams
from webhook.model.reference import InvalidReference, parse_normalized
from webhook.model.streams import ImageStream, ObjectReference, TagReference
from webhook.registry.client import ClientConfig, RegistryClient
from webhook.registry.credentials import DOCKERCFG_TYPE, DOCKERCONFIGJSON_TYPE, Credential, Keyring
from webhook.registry.proxies import ProxyConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControllerOptions:
    scheduled_interval: float = 900.0
    workers: int = 4
    imports_per_minute: float = 60.0
    imports_per_registry_per_minute: float = 60.0
    allowed_registries: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    registry_ca_files: tuple[str, ...] = ()  # private CAs, trusted besides the default roots
    proxies: ProxyConfig | None = None
    # Registries named in the metrics' registry label (besides the configured ones).
    metrics_registries: tuple[str, ...] = ()
    global_pull_secret: str | None = None  # "namespace/name"
    max_backoff: float = MAX_BACKOFF
    secret_cache_seconds: float = 30.0
    # Reference policy Local (mirror.py): the in-cluster registry, off when None.
    local_registry: str | None = None  # HOST[:PORT], as nodes pull from it
    local_registry_endpoint: str = ""  # HOST[:PORT] to push to, when it differs
    local_registry_insecure: bool = False
    local_registry_ca: str | None = None  # CA bundle file
    local_registry_secret: str | None = None  # "namespace/name", dockerconfigjson
    history_limit: int = DEFAULT_HISTORY_LIMIT
    mirror_workers: int = 2


# --- the controller ----------------------------------------------------------------------

# Called with (before, after) when a status write moved a tag's current image.
StreamListener = Callable[[Mapping[str, Any], Mapping[str, Any]], object]


class Controller:
    def __init__(
        self,
        api_client: Any,
        options: ControllerOptions,
        *,
        registry: RegistryClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        rest: RestClient | None = None,
    ) -> None:
        """`rest`, the thin client, writes the streams' status where the configuration
        allows it (kube.api.StreamStatus); else `api_client` does."""
        self.options = options
        self.api_client = api_client
        self.custom = api.custom_objects(api_client)
        self.core = api.core(api_client)
        self.auth = api.authorization(api_client)
        self.status = api.StreamStatus(self.custom, rest=rest)
        source_config = ClientConfig(
            allowed_registries=options.allowed_registries,
            insecure_registries=options.insecure_registries,
            ca_files=options.registry_ca_files,
            proxies=options.proxies,
        )
        self.registry = registry or RegistryClient(source_config, on_response=self._count_response)
        self.clock = clock
        # Scheduled checks of streams that follow the same tag share the registry's answer
        # for as long as a check may come early anyway (shared_answers.py).
        self.shared = SharedAnswers(
            self.registry,
            options.scheduled_interval * SCHEDULE_JITTER,
            clock,
            before_asking=lambda repo: self.limiter.wait(repo.registry),
        )
        self.metrics = ControllerMetrics(registries=_named_registries(options))
        self.queue: WorkQueue[Key] = WorkQueue(clock)
        self.cache = StreamCache(self.queue)
        self.state: dict[Key, StreamState] = {}
        self.limiter = ImportLimiter(
            options.imports_per_minute, options.imports_per_registry_per_minute
        )
        self.metrics.watch(self.queue, self._oldest_scheduled_check)
        self.listeners: list[StreamListener] = []
        self._secrets: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._stop = threading.Event()
        # Policies (policy_labels.py): namespace labels for the enforced webhook, and
        # `allowedRegistriesForImport` checked again at import time. Started with run().
        self.policy: PolicyLabeler | None = None
        self.mirror: MirrorWorker | None = None
        if options.local_registry:
            local = LocalRegistry(
                options.local_registry,
                options.local_registry_endpoint,
                options.local_registry_insecure,
                self._local_credential(),
            )
            mirrorer = Mirrorer.create(
                local,
                source_config,
                ca_bundle=options.local_registry_ca,
                on_response=self._count_response,
            )
            self.mirror = MirrorWorker(
                mirrorer,
                ConditionWriter(self.custom),
                keyring_for=self._keyring,
                workers=options.mirror_workers,
                history_limit=options.history_limit,
                metrics=MirrorMetrics(self.metrics.registry),
            )
            worker = self.mirror
            self.cache.deleted.append(lambda obj: worker.prune(obj, None))

    # -- running ---------------------------------------------------------------------------

    def run(self, streams: Source | None = None) -> None:
        """Watch and work until `stop()`; blocks. `streams` is where the ImageStreams are
        listed and watched: the thin client (kube.listwatch) where the configuration
        allows it, which reads each event once where the kubernetes client's Watch parses
        it twice and serialises it once; else the kubernetes client."""
        from webhook.kube.watch import StreamWatcher, Watcher

        if self.mirror is not None:
            self.mirror.start()
        self.policy = PolicyLabeler(self.api_client).start()
        if streams is not None:
            watcher = Watcher(self.cache, streams, what="image streams").start()
        else:
            watcher = StreamWatcher(self.cache, self.custom).start()
        workers = [
            threading.Thread(target=self._work, name=f"import-{i}", daemon=True)
            for i in range(self.options.workers)
        ]
        for worker in workers:
            worker.start()
        self._stop.wait()
        watcher.stop()
        self.policy.stop()
        self.queue.close()
        for worker in workers:
            worker.join(timeout=10)
        if self.mirror is not None:
            self.mirror.stop()

    def stop(self) -> None:
        self._stop.set()

    def _count_response(self, host: str, method: str, status: int) -> None:
        self.metrics.count_request(host, method, status)

    def _oldest_scheduled_check(self) -> float:
        """Seconds since the least recently checked scheduled tag was checked: a scheduled
        pass is complete when this is below the interval."""
        now = self.clock()
        checks = [
            tag.last_checked if tag.last_checked is not None else now
            for state in list(self.state.values())
            for tag in list(state.tags.values())
            if tag.next_scheduled is not None
        ]
        return max((now - c for c in checks), default=0.0)

    def _work(self) -> None:
        while (key := self.queue.get()) is not None:
            try:
                delay = self.reconcile(key)
                if delay is not None:
                    self.queue.add_after(key, delay)
            except Exception:  # one bad stream must not stop the worker
                log.exception("reconciling image stream %s/%s failed", *key)
                self.queue.add_after(key, INITIAL_BACKOFF)
            finally:
                self.queue.done(key)

    # -- one stream ------------------------------------------------------------------------

    def reconcile(self, key: Key) -> float | None:
        """Bring one stream's status up to date; return when to look at it again."""
        obj = self.cache.get(key)
        if obj is None:
            self.state.pop(key, None)
            return None
        try:
            stream = streams.parse_image_stream(obj)
        except streams.InvalidImageStream as err:
            log.warning("image stream %s/%s is invalid: %s", *key, err)
            return None
        state = self.state.setdefault(key, StreamState())
        now = self.clock()
        interval = self.options.scheduled_interval
        next_check = next_scheduled_check(now, interval)  # one for the tags checked together
        results = [
            self._import_registry_tag(stream, spec, why, state, next_check)
            for spec, why in due_tags(stream, state, now, interval)
        ]
        results += self._stream_sourced(obj, stream, results)
        written = None
        if results or self._local_repository_missing(obj):
            written = self._write_status(key, obj, results)
        if self.mirror is not None:
            self.mirror.submit(stream if written is None else _reparsed(written, stream))
        return next_visit(stream, state, self.clock())

    def _local_repository_missing(self, obj: Mapping[str, Any]) -> bool:
        if not self.options.local_registry:
            return False
        key = key_of(obj)
        wanted = local_repository(self.options.local_registry, *key)
        return (obj.get("status") or {}).get("dockerImageRepository") != wanted

    def _import_registry_tag(
        self,
        stream: ImageStream,
        spec: TagReference,
        why: str,
        state: StreamState,
        next_check: float,
    ) -> ImportResult:
        tag = state.tag(spec.name)
        generation = streams.tag_generation(stream, spec)
        registry = _registry_of(spec)
        started = self.clock()
        denial = self._import_denial(stream, spec)
        if denial is not None:
            condition = importer.failure_condition(
                importer.FORBIDDEN, denial, generation, importer.rfc3339(_utcnow())
            )
            result = ImportResult(
                spec.name, condition=condition, import_mode=importer.import_mode_of(spec)
            )
        else:
            if not spec.reference and why != SCHEDULED:
                self.limiter.wait(registry)  # a scheduled check waits only if it asks
            previous = _same_repository(tag.previous or _previous_from_status(stream, spec), spec)
            result = importer.import_tag(
                spec,
                namespace=stream.namespace,
                stream=stream.name,
                client=self.shared if why == SCHEDULED else self.registry,
                keyring=None if spec.reference else self._keyring(stream.namespace),
                generation=generation,
                previous=previous,
            )
        now = self.clock()
        tag.last_checked = now
        if result.succeeded:
            tag.previous, tag.failures, tag.retry_at = remembered(result), 0, 0.0
        else:
            tag.failures += 1
            tag.retry_at = now + backoff(tag.failures, result.retry_after, self.options.max_backoff)
            log.info(
                "import of %s/%s:%s failed (%s), retry in %.0fs",
                stream.namespace,
                stream.name,
                spec.name,
                result.reason,
                tag.retry_at - now,
            )
        if spec.scheduled:
            tag.next_scheduled = next_check
        self.metrics.observe_import(registry, result, why, now - started)
        return result

    def _import_denial(self, stream: ImageStream, spec: TagReference) -> str | None:
        """Why a policy forbids this import (`allowedRegistriesForImport`), or None."""
        if self.policy is None or spec.source is None:
            return None
        labels = self.cache.labels((stream.namespace, stream.name))
        return self.policy.import_denial(stream.namespace, labels, spec.source.name)

    def _stream_sourced(
        self, obj: Mapping[str, Any], stream: ImageStream, registry_results: list[ImportResult]
    ) -> list[ImportResult]:
        """Results for ImageStreamTag and ImageStreamImage tags.

        Same-stream aliases track their source on every pass (against the status this pass
        is about to write); other sources are copied once per generation.
        """
        status_tags, _ = apply_results(status_tags_of(obj), registry_results)
        current = with_status_tags(obj, status_tags)
        results = []
        for spec in stream.spec_tags:
            source = spec.source
            if source is None or source.kind not in (
                streams.IMAGE_STREAM_TAG,
                streams.IMAGE_STREAM_IMAGE,
            ):
                continue
            alias = streams.alias_target(stream, spec)
            generation = streams.tag_generation(stream, spec)
            seen = streams.seen_generation(stream.history(spec.name))
            if alias is None and seen is not None and seen >= generation:
                continue
            result = self._from_stream(current, stream, spec, generation, alias)
            if alias is not None and result.condition is not None and seen is not None:
                continue  # an alias whose source has no image yet: nothing to record
            results.append(result)
            if result.event is not None:  # later aliases may chain on this one
                status_tags, _ = apply_results(status_tags, [result])
                current = with_status_tags(obj, status_tags)
        return results

    def _from_stream(
        self,
        current: Mapping[str, Any],
        stream: ImageStream,
        spec: TagReference,
        generation: int,
        alias: str | None,
    ) -> ImportResult:
        """The result for one stream-sourced tag; `alias` is the tag it tracks within this
        stream (streams.alias_target), or None."""
        assert spec.source is not None
        source_ns = spec.source.namespace or stream.namespace
        separator = "@" if spec.source.kind == streams.IMAGE_STREAM_IMAGE else ":"
        source_name = stream.name if alias else spec.source.name.partition(separator)[0]
        if (source_ns, source_name) == (stream.namespace, stream.name):
            source: Mapping[str, Any] | None = current
        elif source_ns != stream.namespace and not self._may_read(stream.namespace, source_ns):
            when = importer.rfc3339(_utcnow())
            message = (
                f"image stream {stream.namespace}/{stream.name} may not read image streams in"
                f" namespace {source_ns} (grant its service accounts get on imagestreams there)"
            )
            return ImportResult(
                spec.name,
                condition=importer.failure_condition(importer.FORBIDDEN, message, generation, when),
            )
        else:
            source = self.cache.get((source_ns, source_name))
        if spec.source.kind == streams.IMAGE_STREAM_IMAGE:
            return importer.import_from_stream_image(
                spec, source, source_namespace=source_ns, generation=generation
            )
        if alias is not None:  # `from` may name the tag alone: spell out the stream
            source_ref = ObjectReference(streams.IMAGE_STREAM_TAG, f"{stream.name}:{alias}")
            spec = dataclasses.replace(spec, source=source_ref)
        return importer.import_from_stream_tag(
            spec, source, source_namespace=source_ns, generation=generation
        )

    # -- writing status --------------------------------------------------------------------

    def _write_status(
        self, key: Key, obj: Mapping[str, Any], results: list[ImportResult]
    ) -> Mapping[str, Any] | None:
        """Fold `results` into status and write it, unless nothing changed.

        On a conflict the same results are folded into a fresh read: whatever another
        writer added (history, other tags) is kept.
        """

        def change(current: Mapping[str, Any]) -> Mapping[str, Any] | None:
            status_tags, changed = apply_results(status_tags_of(current), results)
            body = with_status_tags(current, status_tags)
            if self.options.local_registry:
                status_tags, trimmed = trim_history(status_tags, self.options.history_limit)
                repository = local_repository(self.options.local_registry, *key)
                body, moved = with_local_repository(
                    with_status_tags(current, status_tags), repository
                )
                changed = changed or trimmed or moved
            return body if changed else None

        write = self.status.update(key[0], key[1], change, current=obj)
        if write.written is None or write.before is None:
            return None  # nothing to write, or the stream was deleted meanwhile
        self.metrics.status_writes.inc()
        self.cache.wrote(write.written)
        self._after_write(write.before, write.written, results)
        if self.mirror is not None:
            self.mirror.prune(write.before, write.written)
        return write.written

    def _after_write(
        self, before: Mapping[str, Any], after: Mapping[str, Any], results: list[ImportResult]
    ) -> None:
        for result in results:
            if result.condition is not None:
                self._event(after, result.tag, result.condition)
        if current_images(before) != current_images(after):
            for listener in self.listeners:
                try:
                    listener(before, after)
                except Exception:
                    log.exception("stream listener failed")

    def _event(self, stream: Mapping[str, Any], tag: str, condition: Mapping[str, Any]) -> None:
        """A Warning Event on the stream for a failed import (best effort), with the
        condition's reason as its own: `kubectl get events --field-selector
        reason=RateLimited` finds every throttled import."""
        reason = str(condition.get("reason"))
        api.record_event(
            self.core,
            stream,
            kind="ImageStream",
            api_version=f"{GROUP}/{VERSION}",
            type_="Warning",
            reason=reason if reason in importer.REASONS else importer.INTERNAL_ERROR,
            message=f"import of tag {tag!r} failed: {condition.get('message')}",
        )

    # -- credentials and permissions -------------------------------------------------------

    def _local_credential(self) -> Credential | None:
        """Push (and delete) credentials for the local registry, read once at start."""
        if not self.options.local_registry_secret:
            return None
        namespace, _, name = self.options.local_registry_secret.partition("/")
        secret = self.api_client.sanitize_for_serialization(
            self.core.read_namespaced_secret(name, namespace)
        )
        keyring = Keyring([secret])
        endpoint = self.options.local_registry_endpoint or self.options.local_registry or ""
        return keyring.lookup(endpoint) or keyring.lookup(self.options.local_registry or "")

    def _keyring(self, namespace: str) -> Keyring:
        """Pull secrets of the stream's own namespace, and the global one: never others."""
        secrets = self._cached_secrets(namespace)
        global_secret = None
        if self.options.global_pull_secret:
            global_ns, _, global_name = self.options.global_pull_secret.partition("/")
            global_secret = next(
                (
                    s
                    for s in self._cached_secrets(global_ns)
                    if s.get("metadata", {}).get("name") == global_name
                ),
                None,
            )
        return Keyring(secrets, global_secret)

    def _cached_secrets(self, namespace: str) -> list[dict[str, Any]]:
        now = self.clock()
        cached = self._secrets.get(namespace)
        if cached is not None and now - cached[0] < self.options.secret_cache_seconds:
            return cached[1]
        secrets: list[dict[str, Any]] = []
        for secret_type in (DOCKERCONFIGJSON_TYPE, DOCKERCFG_TYPE):
            try:
                found = self.core.list_namespaced_secret(
                    namespace, field_selector=f"type={secret_type}"
                )
            except Exception as err:
                log.warning("cannot list pull secrets in %s: %s", namespace, errors.describe(err))
                continue
            secrets += [self.api_client.sanitize_for_serialization(s) for s in found.items]
        self._secrets[namespace] = (now, secrets)
        return secrets

    def _may_read(self, namespace: str, source_namespace: str) -> bool:
        """Whether `namespace`'s service accounts may get image streams in another one."""
        try:
            return api.service_accounts_may(
                self.auth, namespace, verb="get", resource=PLURAL, group=GROUP,
                in_namespace=source_namespace,
            )  # fmt: skip
        except Exception as err:
            log.warning("access review failed: %s", errors.describe(err))
            return False


# --- small helpers -----------------------------------------------------------------------


def _registry_of(spec: TagReference) -> str:
    try:
        return parse_normalized(spec.source.name if spec.source else "").domain
    except InvalidReference:
        return "invalid"


def _previous_from_status(stream: ImageStream, spec: TagReference) -> ImportResult | None:
    """After a restart, the status's current image stands in for the last result."""
    event = streams.current_event(stream, spec.name)
    if event is None or not event.image:
        return None
    mode = importer.import_mode_of(spec)
    if mode != streams.PRESERVE_ORIGINAL:
        return None  # Legacy pins a platform manifest; a HEAD sees the index digest
    item = {
        "created": event.created,
        "dockerImageReference": event.docker_image_reference,
        "image": event.image,
        "generation": event.generation,
    }
    return ImportResult(spec.name, event=item, import_mode=mode, manifest_digest=event.image)


def _same_repository(previous: ImportResult | None, spec: TagReference) -> ImportResult | None:
    """`previous` when it came from the repository the tag names now, else None: a HEAD
    that finds the same digest elsewhere must not keep the old repository's reference."""
    if previous is None or previous.event is None or spec.source is None:
        return None
    try:
        wanted = parse_normalized(spec.source.name).name
        had = parse_normalized(str(previous.event["dockerImageReference"])).name
    except InvalidReference:
        return None
    return previous if wanted == had else None


def _utcnow() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _reparsed(written: Mapping[str, Any], fallback: ImageStream) -> ImageStream:
    """The stream as just written (its status moved), parsed once for the mirror."""
    try:
        return streams.parse_image_stream(written)
    except streams.InvalidImageStream:
        return fallback  # the API server stored what we sent; cannot happen in practice


def _named_registries(options: ControllerOptions) -> tuple[str, ...]:
    """The registries the operator named: the only ones the metrics call by name."""
    local = (options.local_registry or "", options.local_registry_endpoint)
    return tuple(
        name
        for name in (
            *options.metrics_registries,
            *options.allowed_registries,
            *options.insecure_registries,
            *local,
        )
        if name
    )
