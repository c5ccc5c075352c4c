"""ImagePolicy: which images may run where, decided over plain data.

A platform team writes cluster-scoped `ImagePolicy` objects (imagestreams.io/v1alpha1). Each
selects namespaces (and optionally objects) by labels, has a mode (`Enforce` denies, `Warn`
allows with a warning kubectl prints, `Audit` allows with an audit annotation) and rules:

- `requireDigest`: every container image is pinned by digest (after resolution).
- `requireImageStream`: every image comes from an ImageStream of the object's namespace:
  a short name a stream resolves, or a reference equal to an image of some stream's history.
- `allowedRegistries` / `blockedRegistries`: prefixes (`quay.io/myorg/`,
  `registry.example.com:5000`) matched on path-component boundaries against the normalized
  reference (`nginx` is `docker.io/library/nginx`).
- `allowedRegistriesForImport`: where the DockerImage tags of ImageStreams may import from.

`validate` answers one admission request; on UPDATE only images (or stream tags) that differ
from `oldObject` are judged, so existing objects stay editable under a new policy. Every
denial names the object, the container, the image, the rule and the fix. Nothing here does
I/O: the caller supplies the policies, the namespace's labels and the stream view.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from webhook.model import reference, workloads
from webhook.model.resolution import resolve_image
from webhook.model.streams import LOCAL_POLICY, ImageStream, StreamEntry, entry_once

GROUP, VERSION, PLURAL, KIND = "imagestreams.io", "v1alpha1", "imagepolicies", "ImagePolicy"

ENFORCE, WARN, AUDIT = "Enforce", "Warn", "Audit"
MODES = (ENFORCE, WARN, AUDIT)

REQUIRE_DIGEST = "requireDigest"
REQUIRE_IMAGE_STREAM = "requireImageStream"
ALLOWED_REGISTRIES = "allowedRegistries"
BLOCKED_REGISTRIES = "blockedRegistries"
ALLOWED_REGISTRIES_FOR_IMPORT = "allowedRegistriesForImport"
VALID_REFERENCE = "validReference"  # not a rule of its own: a broken string fails every rule

# The namespace label the controller maintains (policy_labels.py) to pick the fail-closed
# webhook registration; a policy selecting on it would chase its own tail.
ENFORCED_LABEL = "imagestreams.io/policy-enforced"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
AUDIT_ANNOTATION = "violations"

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
# Longest value a message quotes from the object (a name, an image, a namespace): a real one
# is far shorter, and a message per container and rule must not copy a huge one each time.
QUOTED_CHARS = 256
_IMAGE_STREAM_GROUP = "image.openshift.io"
_PLACEHOLDER_REGISTRY = "<registry>"


class InvalidPolicy(ValueError):
    """An ImagePolicy that cannot be used; the message names the policy and the field."""


# --- selectors ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True, slots=True)
class Selector:
    """A metav1.LabelSelector; the empty selector matches everything."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.expressions
        )

    def label_keys(self) -> set[str]:
        return set(self.match_labels) | {r.key for r in self.expressions}


# --- policies ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rules:
    require_digest: bool = False
    require_image_stream: bool = False
    allowed_registries: tuple[str, ...] = ()  # normalized prefixes: "quay.io/myorg"
    blocked_registries: tuple[str, ...] = ()
    allowed_registries_for_import: tuple[str, ...] = ()

    @property
    def checks_workloads(self) -> bool:
        return bool(
            self.require_digest
            or self.require_image_stream
            or self.allowed_registries
            or self.blocked_registries
        )


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    mode: str
    namespace_selector: Selector
    object_selector: Selector | None = None
    rules: Rules = Rules()

    def applies_to(
        self, namespace_labels: Mapping[str, str], object_labels: Mapping[str, str]
    ) -> bool:
        if not self.namespace_selector.matches(namespace_labels):
            return False
        return self.object_selector is None or self.object_selector.matches(object_labels)


def parse_policy(obj: Any) -> Policy:
    """Read an ImagePolicy object. Raises InvalidPolicy naming the policy and the field."""
    if not isinstance(obj, Mapping):
        raise InvalidPolicy("an ImagePolicy must be an object")
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        raise InvalidPolicy("ImagePolicy: metadata.name is required")
    try:
        return _parse_spec(name, obj.get("spec"))
    except InvalidPolicy as err:
        raise InvalidPolicy(f"ImagePolicy {_q(name)}: {err}") from None


def _parse_spec(name: str, spec: Any) -> Policy:
    if not isinstance(spec, Mapping):
        raise InvalidPolicy("spec is required")
    mode = spec.get("mode")
    if mode not in MODES:
        raise InvalidPolicy(f"spec.mode must be one of {', '.join(MODES)}, not {_q(mode)}")
    if "namespaceSelector" not in spec:
        raise InvalidPolicy("spec.namespaceSelector is required ({} selects every namespace)")
    namespace_selector = parse_selector(spec["namespaceSelector"], "spec.namespaceSelector")
    if ENFORCED_LABEL in namespace_selector.label_keys():
        raise InvalidPolicy(
            f"spec.namespaceSelector must not use the label {ENFORCED_LABEL}, "
            "which the controller maintains from the policies"
        )
    object_selector = None
    if spec.get("objectSelector") is not None:
        object_selector = parse_selector(spec["objectSelector"], "spec.objectSelector")
    rules = _parse_rules(spec.get("rules"))
    return Policy(name, str(mode), namespace_selector, object_selector, rules)


def parse_selector(obj: Any, where: str) -> Selector:
    if obj is None:
        return Selector()
    if not isinstance(obj, Mapping):
        raise InvalidPolicy(f"{where} must be a label selector object")
    unknown = set(obj) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise InvalidPolicy(f"{where}: unknown field {_q(sorted(unknown)[0])}")
    labels = obj.get("matchLabels") or {}
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidPolicy(f"{where}.matchLabels must map label keys to string values")
    expressions = obj.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise InvalidPolicy(f"{where}.matchExpressions must be a list")
    return Selector(
        dict(labels),
        tuple(
            _parse_requirement(e, f"{where}.matchExpressions[{i}]")
            for i, e in enumerate(expressions)
        ),
    )


def _parse_requirement(obj: Any, where: str) -> Requirement:
    if not isinstance(obj, Mapping):
        raise InvalidPolicy(f"{where} must be an object")
    key, operator, values = obj.get("key"), obj.get("operator"), obj.get("values") or []
    if not isinstance(key, str) or not key:
        raise InvalidPolicy(f"{where}.key is required")
    if operator not in _OPERATORS:
        raise InvalidPolicy(f"{where}.operator must be one of {', '.join(_OPERATORS)}")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidPolicy(f"{where}.values must be a list of strings")
    if operator in ("In", "NotIn") and not values:
        raise InvalidPolicy(f"{where}.values must not be empty for operator {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise InvalidPolicy(f"{where}.values must be empty for operator {operator}")
    return Requirement(key, str(operator), frozenset(values))


def _parse_rules(obj: Any) -> Rules:
    if not isinstance(obj, Mapping):
        raise InvalidPolicy("spec.rules is required")
    for flag in (REQUIRE_DIGEST, REQUIRE_IMAGE_STREAM):
        if not isinstance(obj.get(flag, False), bool):
            raise InvalidPolicy(f"spec.rules.{flag} must be true or false")
    rules = Rules(
        require_digest=bool(obj.get(REQUIRE_DIGEST, False)),
        require_image_stream=bool(obj.get(REQUIRE_IMAGE_STREAM, False)),
        allowed_registries=_prefixes(obj, ALLOWED_REGISTRIES),
        blocked_registries=_prefixes(obj, BLOCKED_REGISTRIES),
        allowed_registries_for_import=_prefixes(obj, ALLOWED_REGISTRIES_FOR_IMPORT),
    )
    if not rules.checks_workloads and not rules.allowed_registries_for_import:
        raise InvalidPolicy("spec.rules sets no rule: the policy would check nothing")
    return rules


def _prefixes(rules: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = rules.get(key) or []
    if not isinstance(values, list):
        raise InvalidPolicy(f"spec.rules.{key} must be a list")
    return tuple(parse_registry_prefix(v, f"spec.rules.{key}[{i}]") for i, v in enumerate(values))


def parse_registry_prefix(text: Any, where: str = "registry") -> str:
    """`quay.io/myorg/` → `quay.io/myorg`; the host is required, the path optional."""
    example = "(examples: quay.io, quay.io/myorg/, registry.example.com:5000)"
    if not isinstance(text, str) or not text.strip("/"):
        raise InvalidPolicy(f"{where} must be a registry host or repository prefix {example}")
    try:
        ref = reference.parse(text.rstrip("/") + "/x")
    except reference.InvalidReference:
        ref = None
    if ref is None or ref.tag or ref.digest:
        raise InvalidPolicy(
            f"{where}: {_q(text)} is not a registry host or repository prefix {example}"
        )
    if not ref.domain:
        raise InvalidPolicy(
            f"{where}: {_q(text)} does not start with a registry host; "
            f"write docker.io/{text.strip('/')} for Docker Hub {example}"
        )
    domain = ref.domain.lower()
    if domain == reference.LEGACY_DEFAULT_DOMAIN:
        domain = reference.DEFAULT_DOMAIN
    path = ref.path[: -len("/x")] if "/" in ref.path else ""
    return f"{domain}/{path}" if path else domain


def registry_matches(repository: str, prefix: str) -> bool:
    """Does the normalized `repository` (`docker.io/library/nginx`) lie under `prefix`?

    Prefixes end on component boundaries: `quay.io/my` does not match `quay.io/myorg/x`;
    the port belongs to the host: `example.com` does not match `example.com:5000/x`.
    """
    domain, _, path = repository.partition("/")
    prefix_domain, _, prefix_path = prefix.partition("/")
    if domain.lower() != prefix_domain:
        return False
    return not prefix_path or path == prefix_path or path.startswith(prefix_path + "/")


def first_match(repository: str, prefixes: Iterable[str]) -> str | None:
    return next((p for p in prefixes if registry_matches(repository, p)), None)


# --- what the streams of a namespace hold ------------------------------------------------


class PolicyStreams(Protocol):
    """The stream index as policy sees it: lookup by name, and membership by image."""

    def get(self, namespace: str, name: str) -> StreamEntry | None: ...

    def has_image(self, namespace: str, repository: str, digest: str) -> bool: ...


def stream_images(stream: ImageStream) -> frozenset[tuple[str, str]]:
    """Every (normalized repository, digest) this stream has pointed at: each history event,
    its Local copy when the tag's policy is Local, and every tag's current pinned reference."""
    found: set[tuple[str, str]] = set()
    local_repo = _normalized_name(stream.status_repository) if stream.status_repository else None
    names: dict[str, str | None] = {}  # a tag's history shares one repository: read it once
    for history in stream.status_tags:
        spec = stream.spec_tag(history.tag)
        local = spec is not None and spec.reference_policy == LOCAL_POLICY and local_repo
        for event in history.items:
            pinned = _pinned(event.docker_image_reference, event.image, names)
            if pinned is None:
                continue
            found.add(pinned)
            if local and local_repo:
                found.add((local_repo, pinned[1]))
    for ref in entry_once(stream).images.values():
        pinned = _pinned(ref, "", names) if ref else None
        if pinned is not None:
            found.add(pinned)
    return frozenset(found)


def _pinned(ref_text: str, image: str, names: dict[str, str | None]) -> tuple[str, str] | None:
    """(normalized repository, digest) of a history event, or None when it names none.

    The same as reading the whole reference: it is valid when its digest (if any) is and
    the rest is; `names` remembers what the rest normalizes to."""
    rest, at, ref_digest = ref_text.partition("@")
    if at and not reference.is_valid_digest(ref_digest):
        return None
    if rest not in names:
        try:
            names[rest] = reference.parse_normalized(rest).name
        except reference.InvalidReference:
            names[rest] = None
    name = names[rest]
    if name is None:
        return None
    same = at and image == ref_digest  # as written by the controller: checked above
    digest = image if same or reference.is_valid_digest(image) else ref_digest
    return (name, digest) if digest else None


def _normalized_name(text: str) -> str | None:
    try:
        return reference.parse_normalized(text).name
    except reference.InvalidReference:
        return None


# --- verdicts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    policy: str
    mode: str
    rule: str
    subject: str  # `container "web"`, `tag "20.0"`
    image: str
    message: str  # the whole sentence, fix included

    def record(self) -> dict[str, str]:
        return {
            "policy": self.policy,
            "rule": self.rule,
            "subject": self.subject,
            "image": _short(self.image),
        }


@dataclass(slots=True)
class Verdict:
    violations: list[Violation] = field(default_factory=list)

    def by_mode(self, mode: str) -> list[Violation]:
        return [v for v in self.violations if v.mode == mode]

    @property
    def allowed(self) -> bool:
        return not self.by_mode(ENFORCE)

    def denial_message(self, shown: int | None = None) -> str:
        """The one violation's message, or a list of the first `shown` (None: all) and how
        many more there are."""
        denials = self.by_mode(ENFORCE)
        if len(denials) == 1:
            return denials[0].message
        lines = [f"- {v.message}" for v in denials[:shown]]
        if len(denials) > len(lines):
            lines.append(f"- and {len(denials) - len(lines)} more")
        return f"{len(denials)} image policy violations:\n" + "\n".join(lines)


# --- admission ---------------------------------------------------------------------------


def validate(
    request: Mapping[str, Any],
    policies: Sequence[Policy],
    namespace_labels: Mapping[str, str],
    streams: PolicyStreams,
) -> Verdict:
    """The verdict of every policy that applies to this request's object."""
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not isinstance(obj, Mapping):
        return Verdict()
    is_stream = _is_image_stream(request)
    kind = None if is_stream else workloads.request_kind(request)
    if kind is None and not is_stream:
        return Verdict()
    applicable = applicable_policies(policies, namespace_labels, obj)
    if not applicable:
        return Verdict()
    namespace = workloads.request_namespace(request, obj)
    old = request.get("oldObject") if request.get("operation") == "UPDATE" else None
    old = old if isinstance(old, Mapping) else None
    request_name = request.get("name")
    name = _object_name(obj, request_name if isinstance(request_name, str) else "")
    if is_stream:
        return Verdict(check_image_stream(obj, namespace, applicable, old, name))
    assert kind is not None
    return Verdict(check_workload(obj, kind, namespace, applicable, streams, old, name))


def applicable_policies(
    policies: Iterable[Policy], namespace_labels: Mapping[str, str], obj: Mapping[str, Any]
) -> list[Policy]:
    labels = object_labels(obj)
    return [p for p in policies if p.applies_to(namespace_labels, labels)]


def check_workload(
    obj: Mapping[str, Any],
    kind: str,
    namespace: str,
    policies: Sequence[Policy],
    streams: PolicyStreams,
    old: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> list[Violation]:
    """Each container image of `obj` against each policy's workload rules."""
    active = [p for p in policies if p.rules.checks_workloads]
    if not active:
        return []
    force = workloads.resolve_names_forced(obj, kind)
    found = []
    for image in workloads.changed_images(obj, kind, old):
        judge = _ImageJudge(image.image, namespace, streams, force)
        for policy in active:
            for rule, problem, fix in judge.violations(policy.rules):
                subject = f"{kind} {_q(name or _object_name(obj))}"
                container = f"{_CONTAINER_WORDS[image.list_name]} {_q(image.container)}"
                message = (
                    f"{subject} {container}: image {_q(image.image)} {problem} "
                    f"(ImagePolicy {_q(policy.name)}, rule {rule}); {fix}"
                )
                found.append(
                    Violation(policy.name, policy.mode, rule, container, image.image, message)
                )
    return found


_CONTAINER_WORDS = {
    "containers": "container",
    "initContainers": "init container",
    "ephemeralContainers": "ephemeral container",
}


class _ImageJudge:
    """One image string, parsed once, judged against any number of rule sets."""

    def __init__(self, image: str, namespace: str, streams: PolicyStreams, force: bool) -> None:
        self.image = image
        self.namespace = namespace
        self.streams = streams
        self.force = force
        self.error: str | None = None
        self._from_stream_answer: bool | None = None
        self.ref: reference.Reference | None = None
        self.normalized: reference.Reference | None = None
        try:
            self.ref = reference.parse(image)
            self.normalized = self.ref.normalized()
        except reference.InvalidReference as err:
            self.error = err.reason

    def violations(self, rules: Rules) -> Iterator[tuple[str, str, str]]:
        """(rule, what is wrong, how to fix it) for each rule the image breaks."""
        if self.ref is None or self.normalized is None:
            problem = f"is not a valid image reference ({_short(self.error or '')})"
            yield VALID_REFERENCE, problem, "fix the image reference"
            return
        repository = self.normalized.name
        blocked = first_match(repository, rules.blocked_registries)
        if blocked:
            problem = f"comes from {repository}, under the blocked registry prefix {blocked}"
            yield BLOCKED_REGISTRIES, problem, "use an image from another registry"
        if rules.allowed_registries and not first_match(repository, rules.allowed_registries):
            allowed = ", ".join(rules.allowed_registries)
            problem = f"comes from {repository}, which is not under an allowed registry ({allowed})"
            yield (
                ALLOWED_REGISTRIES,
                problem,
                "use an image from an allowed registry" + (self._stream_hint()),
            )
        # An image from a stream is pinned once resolved: the stream rule's fix covers both.
        if rules.require_image_stream and not self._from_stream():
            problem = f"does not come from an image stream of namespace {_q(self.namespace)}"
            yield REQUIRE_IMAGE_STREAM, problem, self._stream_fix()
        elif rules.require_digest and self.ref.digest is None:
            yield REQUIRE_DIGEST, "is not pinned to a digest", self._pin_fix()

    def _from_stream(self) -> bool:
        if self._from_stream_answer is None:
            self._from_stream_answer = self._find_in_streams()
        return self._from_stream_answer

    def _find_in_streams(self) -> bool:
        assert self.normalized is not None
        digest = self.normalized.digest
        if digest is not None:
            return self.streams.has_image(self.namespace, self.normalized.name, digest)
        pinned, _ = resolve_image(self.image, self.namespace, self.streams, self.force)
        return pinned is not None

    def _stream_target(self) -> tuple[str, str]:
        """(stream, tag) the image would be tagged as."""
        assert self.ref is not None
        return self.ref.last_component, self.ref.tag or reference.DEFAULT_TAG

    def _stream_fix(self) -> str:
        assert self.ref is not None
        ns = self._namespace_flag()
        stream, tag = self._stream_target()
        if self.ref.is_short or (self.force and self.ref.digest is None):
            entry = self.streams.get(self.namespace, stream)
            if entry is not None and tag in entry.images:
                if entry.images[tag] is None:
                    return (
                        f"image stream tag {stream}:{tag} has no image yet; import it with: "
                        f"kubectl imagestream import-image {stream}:{tag}{ns}"
                    )
                if not entry.lookup_local and not self.force:
                    return (
                        f"enable lookup on the image stream with: "
                        f"kubectl imagestream set image-lookup {stream}{ns}"
                    )
        source = self.image
        if self.ref.is_short:
            source = f"{_PLACEHOLDER_REGISTRY}/{self.image}"
        fix = f"create the tag with: kubectl imagestream tag {source} {stream}:{tag}{ns}"
        entry = self.streams.get(self.namespace, stream)
        if entry is None or not entry.lookup_local:
            fix += f", enable lookup with: kubectl imagestream set image-lookup {stream}{ns},"
        return f"{fix} and use the image {stream}:{tag}"

    def _namespace_flag(self) -> str:
        return f" -n {_short(self.namespace)}" if self.namespace else ""

    def _pin_fix(self) -> str:
        assert self.ref is not None and self.normalized is not None
        pinned, _ = resolve_image(self.image, self.namespace, self.streams, self.force)
        if pinned is not None:
            return f"its image stream resolves it to {pinned}: use that (it was not resolved here)"
        if self.ref.is_short:
            return self._stream_fix()
        return f"pin it ({self.normalized.name}@sha256:…), or " + self._stream_fix()

    def _stream_hint(self) -> str:
        assert self.ref is not None
        if not self.ref.is_short:
            return ""
        stream, tag = self._stream_target()
        ns = self._namespace_flag()
        return (
            f", or tag one into an image stream: kubectl imagestream tag "
            f"{_PLACEHOLDER_REGISTRY}/{self.image} {stream}:{tag}{ns}"
        )


def check_image_stream(
    obj: Mapping[str, Any],
    namespace: str,
    policies: Sequence[Policy],
    old: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> list[Violation]:
    """The import sources of an ImageStream (DockerImage spec tags, and the deprecated
    spec.dockerImageRepository) against each policy's allowedRegistriesForImport."""
    active = [p for p in policies if p.rules.allowed_registries_for_import]
    if not active:
        return []
    stream = name or _object_name(obj)
    previous = import_sources(old) if old is not None else {}
    found = []
    for subject, source in import_sources(obj).items():
        if previous.get(subject) == source:
            continue
        for policy in active:
            problem = import_problem(source, policy.rules.allowed_registries_for_import)
            if problem is None:
                continue
            allowed = ", ".join(policy.rules.allowed_registries_for_import)
            message = (
                f"ImageStream {_q(stream)} {subject}: {problem} "
                f"(ImagePolicy {_q(policy.name)}, rule {ALLOWED_REGISTRIES_FOR_IMPORT}); "
                f"import from an allowed registry ({allowed}) instead"
            )
            if namespace:
                message = f"{message} in namespace {_q(namespace)}"
            found.append(
                Violation(
                    policy.name,
                    policy.mode,
                    ALLOWED_REGISTRIES_FOR_IMPORT,
                    subject,
                    source,
                    message,
                )
            )
    return found


def import_problem(source: str, allowed: Sequence[str]) -> str | None:
    """Why importing `source` is outside the `allowed` prefixes, or None when it is not."""
    try:
        repository = reference.parse_normalized(source).name
    except reference.InvalidReference as err:
        reason = _short(err.reason)
        return f"imports from {_q(source)}, which is not a valid image reference ({reason})"
    if first_match(repository, allowed):
        return None
    return f"imports from {_q(source)} ({repository}), which is not under an allowed registry"


def import_sources(obj: Mapping[str, Any]) -> dict[str, str]:
    """subject → image reference for everything an ImageStream asks to import."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return {}
    sources = {}
    repository = spec.get("dockerImageRepository")
    if isinstance(repository, str) and repository:
        sources["spec.dockerImageRepository"] = repository
    tags = spec.get("tags")
    for tag in tags if isinstance(tags, list) else []:
        if not isinstance(tag, Mapping):
            continue
        source = tag.get("from")
        if (
            isinstance(source, Mapping)
            and source.get("kind") == "DockerImage"
            and isinstance(source.get("name"), str)
        ):
            sources[f"tag {_q(str(tag.get('name', '?')))}"] = str(source["name"])
    return sources


# --- reading objects ---------------------------------------------------------------------


def object_labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    """The object's labels; entries that are not string to string (never from an API server)
    are left out, so a selector only ever compares strings."""
    labels = _metadata(obj).get("labels")
    if not isinstance(labels, Mapping):
        return {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


def namespace_labels_of(name: str, labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """A namespace's labels with the one the API server always sets."""
    return {**(labels or {}), NAMESPACE_NAME_LABEL: name}


def _is_image_stream(request: Mapping[str, Any]) -> bool:
    kind = request.get("kind")
    return (
        isinstance(kind, Mapping)
        and kind.get("group") == _IMAGE_STREAM_GROUP
        and kind.get("kind") == "ImageStream"
        and not request.get("subResource")
    )


def _object_name(obj: Mapping[str, Any], fallback: str = "") -> str:
    metadata = _metadata(obj)
    name = metadata.get("name")
    if isinstance(name, str) and name:
        return name
    if fallback:
        return fallback
    generate = metadata.get("generateName")
    return f"{generate}<generated>" if isinstance(generate, str) and generate else "<unnamed>"


def _q(value: object) -> str:
    """A value in double quotes, as Kubernetes messages quote names (shortened)."""
    return json.dumps(_short(str(value)), ensure_ascii=False)


def _short(text: str) -> str:
    return text if len(text) <= QUOTED_CHARS else text[: QUOTED_CHARS - 1] + "…"


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}
