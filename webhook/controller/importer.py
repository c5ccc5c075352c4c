"""One spec tag → a TagEvent, or an `ImportSuccess=False` condition saying why not.

`import_tag` handles `from.kind: DockerImage`: given the spec tag as the controller already
holds it (a `streams.TagReference`; `streams.parse_tag_reference` reads one from JSON), it asks
the registry (through a client that satisfies `ManifestSource`, normally
`registry.RegistryClient`) what the tag points at and returns an `ImportResult` holding either

- `event`: the status history item `{created, dockerImageReference, image, generation}`, with
  `dockerImageReference` always fully qualified (`docker.io/library/mysql@sha256:…`), or
- `condition`: `{type: ImportSuccess, status: "False", lastTransitionTime, reason, message,
  generation}` with a reason from `REASONS`: OpenShift's NotFound, Unauthorized, Forbidden
  and InternalError, and where OpenShift says InternalError for what a person must tell
  apart, RateLimited, Unavailable, Timeout, Unreachable and TLSHandshakeFailed (the
  registry's failures, `registry.errors`), and Conflict for an `ImageStreamImage` prefix
  that several images match,

plus what the status item has no field for: the platforms an index contains, the digest the
tag pointed at in the registry, and a `Retry-After` the registry asked for.

Import modes (DESIGN.md): `PreserveOriginal`, the default here, pins whatever the tag points
at (for a multi-arch tag the index digest, so arm64 and amd64 nodes both work) and records the
index's platforms; `Legacy` pins one platform's manifest, chosen by the tag annotations
`importer.image.openshift.io/prefer-os` / `prefer-arch`, else linux/amd64 (a single-platform
manifest is taken as is).

`reference: true` tags are recorded without contacting the registry. `ImageStreamTag` and
`ImageStreamImage` sources need other streams, which the reconcile loop reads; the pure
helpers `import_from_stream_tag` and `import_from_stream_image` turn them into results too.

No exception escapes for bad input or a failing registry: both become conditions.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.model import stream_images, streams
from webhook.model.reference import DEFAULT_TAG, InvalidReference, Reference, parse_normalized
from webhook.model.streams import LEGACY, PRESERVE_ORIGINAL, TagReference
from webhook.registry import errors
from webhook.registry.client import ManifestHead, Repository
from webhook.registry.credentials import Keyring
from webhook.registry.errors import RegistryError
from webhook.registry.manifests import (
    DEFAULT_PLATFORM,
    INDEX_MEDIA_TYPES,
    Manifest,
    Platform,
    choose_platform,
    normalize_platform,
)

IMPORT_MODES = (PRESERVE_ORIGINAL, LEGACY)
DEFAULT_IMPORT_MODE = PRESERVE_ORIGINAL
PREFER_ARCH_ANNOTATION = "importer.image.openshift.io/prefer-arch"
PREFER_OS_ANNOTATION = "importer.image.openshift.io/prefer-os"

NOT_FOUND = "NotFound"
UNAUTHORIZED = "Unauthorized"
FORBIDDEN = "Forbidden"
INTERNAL_ERROR = "InternalError"
CONFLICT = "Conflict"  # OpenShift's answer to an ImageStreamImage prefix that is ambiguous
# Every reason a failed import is recorded with: a fixed set, so alerts, Event reasons and
# the metrics' `result` label can rely on it.
REASONS: tuple[str, ...] = (*errors.REASONS, CONFLICT)


class ManifestSource(Protocol):
    """What the importer needs from a registry client (RegistryClient satisfies it)."""

    def head_manifest(self, repo: Repository, reference: str) -> ManifestHead: ...

    def get_manifest(self, repo: Repository, reference: str) -> Manifest: ...


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The outcome of importing one spec tag: exactly one of `event` and `condition`."""

    tag: str
    event: dict[str, Any] | None = None
    condition: dict[str, Any] | None = None
    import_mode: str = DEFAULT_IMPORT_MODE
    # The digest the tag pointed at in the registry: for a multi-arch tag in Legacy mode the
    # index digest, while event["image"] is the chosen platform's manifest. Comparing a HEAD
    # against it tells whether anything changed.
    manifest_digest: str | None = None
    media_type: str | None = None
    platforms: tuple[Platform, ...] = ()  # an index's platforms; () for a single manifest
    retry_after: float | None = None  # seconds a rate-limiting registry asked us to wait
    unchanged: bool = False  # a HEAD showed that `previous` still holds; nothing was fetched

    @property
    def succeeded(self) -> bool:
        return self.event is not None

    @property
    def reason(self) -> str | None:
        return None if self.condition is None else str(self.condition["reason"])


# ---------------------------------------------------------------------------------------------
# Status objects


def rfc3339(moment: datetime.datetime) -> str:
    """Kubernetes' timestamp form: UTC, whole seconds, `Z`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_now() -> str:
    return rfc3339(datetime.datetime.now(datetime.UTC))


def tag_event(reference: str, image: str, generation: int, created: str) -> dict[str, Any]:
    return {
        "created": created,
        "dockerImageReference": reference,
        "image": image,
        "generation": generation,
    }


def failure_condition(reason: str, message: str, generation: int, when: str) -> dict[str, Any]:
    return {
        "type": streams.IMPORT_SUCCESS,
        "status": "False",
        "lastTransitionTime": when,
        "reason": reason,
        "message": message,
        "generation": generation,
    }


# ---------------------------------------------------------------------------------------------
# Reading a spec tag (streams.parse_tag_reference turns its JSON into a TagReference)


def spec_generation(spec_tag: TagReference, fallback: int = 0) -> int:
    return spec_tag.generation if spec_tag.generation is not None else fallback


def import_mode_of(spec_tag: TagReference) -> str:
    """The tag's importMode; an empty or unknown one means the default (the CRD validates)."""
    mode = spec_tag.import_mode
    return mode if mode in IMPORT_MODES else DEFAULT_IMPORT_MODE


def preferred_platform(spec_tag: TagReference) -> Platform:
    """Legacy mode's platform: the prefer-os/prefer-arch tag annotations, else linux/amd64.

    `prefer-arch` may carry a variant (`arm64/v8`, `arm/v7`), as `--platform` strings do.
    """
    annotations = spec_tag.annotations
    os_name = annotations.get(PREFER_OS_ANNOTATION) or DEFAULT_PLATFORM.os
    arch_text = annotations.get(PREFER_ARCH_ANNOTATION) or DEFAULT_PLATFORM.architecture
    architecture, _, variant = arch_text.partition("/")
    return normalize_platform(os_name, architecture, variant)


def _source_name(spec_tag: TagReference) -> str:
    return spec_tag.source.name if spec_tag.source is not None else ""


def _source_kind(spec_tag: TagReference) -> str:
    # No `from`, or one without a kind, counts as DockerImage: import_tag then reports the
    # missing name as an unreadable reference rather than as a source it cannot import.
    source = spec_tag.source
    return source.kind if source is not None and source.kind else streams.DOCKER_IMAGE


# ---------------------------------------------------------------------------------------------
# DockerImage


def import_tag(
    spec_tag: TagReference,
    *,
    namespace: str,
    stream: str,
    client: ManifestSource,
    keyring: Keyring | None = None,
    generation: int | None = None,
    previous: ImportResult | None = None,
    now: datetime.datetime | None = None,
) -> ImportResult:
    """Import one `from.kind: DockerImage` spec tag of image stream `namespace/stream`.

    `keyring` holds the pull secrets of `namespace` only (see credentials.py). `generation`
    overrides the spec tag's own (OpenShift uses the stream's metadata.generation when the
    tag has none). With `previous`, a successful earlier result for the same tag and mode,
    a HEAD whose digest still matches it returns that result marked `unchanged` without a
    GET: one request, no pull-limit quota.
    """
    tag = spec_tag.name
    gen = generation if generation is not None else spec_generation(spec_tag)
    when = rfc3339(now or datetime.datetime.now(datetime.UTC))
    mode = import_mode_of(spec_tag)

    def fail(reason: str, message: str, retry_after: float | None = None) -> ImportResult:
        condition = failure_condition(reason, message, gen, when)
        return ImportResult(tag, condition=condition, import_mode=mode, retry_after=retry_after)

    kind = _source_kind(spec_tag)
    if kind != streams.DOCKER_IMAGE:
        return fail(
            INTERNAL_ERROR,
            f"tag {tag!r} of image stream {namespace}/{stream} has from.kind {kind}, which is"
            " resolved from other image streams, not imported from a registry",
        )
    name = _source_name(spec_tag)
    try:
        ref = parse_normalized(name)
    except InvalidReference as error:
        return fail(
            INTERNAL_ERROR,
            f"tag {tag!r} of image stream {namespace}/{stream}: from.name is not an image"
            f" reference: {error.reason} ({name!r})",
        )

    if spec_tag.reference:
        # Recorded as written (fully qualified), never fetched: the user vouches for it.
        event = tag_event(str(ref), ref.digest or "", gen, when)
        return ImportResult(tag, event=event, import_mode=mode, manifest_digest=ref.digest)

    repo = Repository(
        registry=ref.domain,
        path=ref.path,
        credential=keyring.lookup(ref.domain, ref.path) if keyring else None,
        insecure=spec_tag.insecure,
    )
    target = ref.digest or ref.tag or DEFAULT_TAG
    try:
        if _reusable(previous, mode):
            assert previous is not None and previous.event is not None
            head = client.head_manifest(repo, target)
            if head.digest == previous.manifest_digest:
                event = dict(previous.event, generation=gen)
                return dataclasses.replace(previous, event=event, tag=tag, unchanged=True)
        manifest = client.get_manifest(repo, target)
        return _result_from_manifest(tag, ref, manifest, spec_tag, mode, gen, when)
    except RegistryError as error:
        return fail(error.reason, error.message, error.retry_after)


def _reusable(previous: ImportResult | None, mode: str) -> bool:
    return (
        previous is not None
        and previous.succeeded
        and previous.manifest_digest is not None
        and previous.import_mode == mode
    )


def _result_from_manifest(
    tag: str,
    ref: Reference,
    manifest: Manifest,
    spec_tag: TagReference,
    mode: str,
    generation: int,
    when: str,
) -> ImportResult:
    image = manifest.digest
    platforms: tuple[Platform, ...] = manifest.platforms() if manifest.is_index else ()
    if manifest.is_index and mode == LEGACY:
        wanted = preferred_platform(spec_tag)
        chosen = choose_platform(manifest.manifests, wanted)
        where = f"{ref.name}:{ref.tag or DEFAULT_TAG}" if not ref.digest else str(ref)
        if chosen is None:
            available = ", ".join(str(p) for p in platforms) or "none"
            message = (
                f"{where} has no image for {wanted} (it has: {available}); set the tag"
                f" annotations {PREFER_OS_ANNOTATION} / {PREFER_ARCH_ANNOTATION}, or use"
                f" importMode {PRESERVE_ORIGINAL} to import every platform"
            )
            return ImportResult(
                tag,
                condition=failure_condition(NOT_FOUND, message, generation, when),
                import_mode=mode,
                manifest_digest=manifest.digest,
                media_type=manifest.media_type,
                platforms=platforms,
            )
        if chosen.media_type in INDEX_MEDIA_TYPES:
            message = f"{where}: the entry for {wanted} is itself an index; not supported"
            return ImportResult(
                tag,
                condition=failure_condition(INTERNAL_ERROR, message, generation, when),
                import_mode=mode,
            )
        image = chosen.digest
        platforms = (chosen.platform,) if chosen.platform else ()
    event = tag_event(str(ref.with_digest(image)), image, generation, when)
    return ImportResult(
        tag,
        event=event,
        import_mode=mode,
        manifest_digest=manifest.digest,
        media_type=manifest.media_type,
        platforms=platforms,
    )


# ---------------------------------------------------------------------------------------------
# ImageStreamTag and ImageStreamImage (pure: the caller fetches the source stream)


def _status_tag(stream: Mapping[str, Any], tag: str) -> Mapping[str, Any] | None:
    for item in (stream.get("status") or {}).get("tags") or []:
        if isinstance(item, Mapping) and item.get("tag") == tag:
            return item
    return None


def current_item(stream: Mapping[str, Any], tag: str) -> Mapping[str, Any] | None:
    """The tag's current image (`items[0]`) in a stream's status, or None."""
    status_tag = _status_tag(stream, tag)
    items = (status_tag or {}).get("items") or []
    return items[0] if items and isinstance(items[0], Mapping) else None


def _history(stream: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every history item of every tag of a stream's status, each tag's newest first."""
    items = []
    for status_tag in (stream.get("status") or {}).get("tags") or []:
        if isinstance(status_tag, Mapping):
            items += [i for i in status_tag.get("items") or [] if isinstance(i, Mapping)]
    return items


def find_in_history(stream: Mapping[str, Any], digest: str) -> Mapping[str, Any] | None:
    """The newest history item of any tag whose image is `digest`, or None."""
    same = [item for item in _history(stream) if item.get("image") == digest]
    return max(same, key=lambda item: str(item.get("created", "")), default=None)


def _copy_event(
    tag: str, item: Mapping[str, Any], generation: int, when: str, mode: str
) -> ImportResult:
    image = str(item.get("image", ""))
    event = tag_event(str(item.get("dockerImageReference", "")), image, generation, when)
    return ImportResult(tag, event=event, import_mode=mode, manifest_digest=image or None)


def _stream_failure(
    spec_tag: TagReference, reason: str, message: str, generation: int, when: str
) -> ImportResult:
    return ImportResult(
        spec_tag.name,
        condition=failure_condition(reason, message, generation, when),
        import_mode=import_mode_of(spec_tag),
    )


def import_from_stream_tag(
    spec_tag: TagReference,
    source: Mapping[str, Any] | None,
    *,
    source_namespace: str,
    generation: int | None = None,
    now: datetime.datetime | None = None,
) -> ImportResult:
    """`from: {kind: ImageStreamTag, name: "stream:tag"}` → the source tag's current image.

    Within one stream this is an alias that the reconcile loop re-runs whenever the source
    tag moves; across streams the reconcile loop runs it once. `source` is the source
    ImageStream object (None when it does not exist). Whether the stream's namespace may
    read a source in another namespace is the caller's check.
    """
    tag = spec_tag.name
    gen = generation if generation is not None else spec_generation(spec_tag)
    when = rfc3339(now or datetime.datetime.now(datetime.UTC))
    name = _source_name(spec_tag)
    stream_name, _, source_tag = name.partition(":")
    source_tag = source_tag or DEFAULT_TAG
    if not stream_name or "@" in name:
        return _stream_failure(
            spec_tag,
            INTERNAL_ERROR,
            f"tag {tag!r}: ImageStreamTag source {name!r} is not of the form STREAM:TAG",
            gen,
            when,
        )
    where = f"{source_namespace}/{stream_name}:{source_tag}"
    if source is None:
        message = f"image stream {source_namespace}/{stream_name} (source of tag {tag!r}) not found"
        return _stream_failure(spec_tag, NOT_FOUND, message, gen, when)
    item = current_item(source, source_tag)
    if item is None:
        message = f"image stream tag {where} (source of tag {tag!r}) has no image yet"
        return _stream_failure(spec_tag, NOT_FOUND, message, gen, when)
    return _copy_event(tag, item, gen, when, import_mode_of(spec_tag))


def import_from_stream_image(
    spec_tag: TagReference,
    source: Mapping[str, Any] | None,
    *,
    source_namespace: str,
    generation: int | None = None,
    now: datetime.datetime | None = None,
) -> ImportResult:
    """`from: {kind: ImageStreamImage, name: "stream@sha256:…"}` → that image from the source
    stream's history. This is how a rollback is written: pin a tag to an earlier image.

    As in OpenShift, the ID may be a unique prefix of the digest, with or without `sha256:`
    (model/stream_images.py; we ask for at least 7 characters of it).
    """
    tag = spec_tag.name
    gen = generation if generation is not None else spec_generation(spec_tag)
    when = rfc3339(now or datetime.datetime.now(datetime.UTC))
    name = _source_name(spec_tag)
    try:
        stream_name, image_id = stream_images.split_name(name)
    except ValueError:
        message = f"tag {tag!r}: ImageStreamImage source {name!r} is not of the form STREAM@DIGEST"
        return _stream_failure(spec_tag, INTERNAL_ERROR, message, gen, when)
    where = f"image stream {source_namespace}/{stream_name}"
    if source is None:
        message = f"{where} (source of tag {tag!r}) not found"
        return _stream_failure(spec_tag, NOT_FOUND, message, gen, when)
    try:
        image = stream_images.resolve((str(i.get("image", "")) for i in _history(source)), image_id)
    except stream_images.TooShort as error:
        message = f"tag {tag!r}: ImageStreamImage source {name!r}: {error}"
        return _stream_failure(spec_tag, INTERNAL_ERROR, message, gen, when)
    except stream_images.NoMatch:
        message = f"tag {tag!r}: no image in the history of {where} matches {image_id!r}"
        return _stream_failure(spec_tag, NOT_FOUND, message, gen, when)
    except stream_images.Ambiguous as error:
        message = (
            f"tag {tag!r}: {len(error.matches)} images in the history of {where} match the"
            f" prefix {image_id!r} ({', '.join(error.matches)}): give more of the digest"
        )
        return _stream_failure(spec_tag, CONFLICT, message, gen, when)
    item = find_in_history(source, image)
    assert item is not None  # resolve() chose it from this history
    return _copy_event(tag, item, gen, when, import_mode_of(spec_tag))
