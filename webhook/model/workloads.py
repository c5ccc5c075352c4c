"""The kinds that carry pod templates, in one table: where each keeps its pod spec, its API
group and resource, the names a user types for it, and whether image triggers apply; and how
their images, the resolve-names annotation and their owners are read.

Admission, policy, `resolve`, the image triggers and the CLI's workload verbs all read this
table, so a kind is added (or its path fixed) in one place.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeGuard

RESOLVE_NAMES_ANNOTATION = "alpha.image.policy.openshift.io/resolve-names"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True, slots=True)
class WorkloadKind:
    kind: str
    group: str  # "" for the core group
    resource: str  # plural, as in URLs and RBAC
    pod_spec: tuple[str, ...]  # the path to its pod spec
    short_names: tuple[str, ...] = ()
    triggers: bool = False  # image.openshift.io/triggers applies
    user_verbs: bool = True  # `set image-lookup KIND/NAME`, `set triggers`
    # The API server rejects any change of the pod template after creation (a Job's).
    immutable_template: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def snake_name(self) -> str:
        """`StatefulSet` → `stateful_set`, as client libraries name their methods."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.kind).lower()

    @property
    def type_name(self) -> str:
        """kubectl's `kind.group` printed before `/name`: deployment.apps, pod."""
        singular = self.kind.lower()
        return f"{singular}.{self.group}" if self.group else singular

    @property
    def template(self) -> tuple[str, ...]:
        """The path to the pod template (its metadata holds template annotations)."""
        return self.pod_spec[:-1]


_TEMPLATE = ("spec", "template", "spec")
WORKLOADS: Mapping[str, WorkloadKind] = {
    w.kind: w
    for w in (
        WorkloadKind("Pod", "", "pods", ("spec",), ("po",)),
        WorkloadKind("Deployment", "apps", "deployments", _TEMPLATE, ("deploy",), triggers=True),
        WorkloadKind("ReplicaSet", "apps", "replicasets", _TEMPLATE, ("rs",)),
        WorkloadKind("StatefulSet", "apps", "statefulsets", _TEMPLATE, ("sts",), triggers=True),
        WorkloadKind("DaemonSet", "apps", "daemonsets", _TEMPLATE, ("ds",), triggers=True),
        WorkloadKind("Job", "batch", "jobs", _TEMPLATE, immutable_template=True),
        WorkloadKind(
            "CronJob",
            "batch",
            "cronjobs",
            ("spec", "jobTemplate", "spec", "template", "spec"),
            ("cj",),
            triggers=True,
        ),
        WorkloadKind("ReplicationController", "", "replicationcontrollers", _TEMPLATE, ("rc",)),
        WorkloadKind("PodTemplate", "", "podtemplates", ("template", "spec"), user_verbs=False),
    )
}
# Where each kind keeps its pod spec: the view admission and `resolve` need.
POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = {k: w.pod_spec for k, w in WORKLOADS.items()}
_GROUPS = {w.group for w in WORKLOADS.values()}
_POINTERS = {k: "/" + "/".join(path) for k, path in POD_SPEC_PATHS.items()}  # JSON pointers

# Controllers whose pods and children were resolved when their own template was written:
# resolving those one by one would mix digests within one rollout. Operators' custom
# resources are not among them (DESIGN.md: operator-owned workloads are resolved).
BUILTIN_OWNERS = frozenset(
    (w.group, w.kind) for w in WORKLOADS.values() if w.kind not in ("Pod", "PodTemplate")
)


class Image(NamedTuple):
    """One container image field: its JSON pointer, container name and value. A named tuple,
    not a frozen dataclass: admission makes one per container of every review, and a frozen
    dataclass's __init__ (a object.__setattr__ per field) costs three times as much."""

    pointer: str
    list_name: str
    container: str
    image: str
    # What an UPDATE matches old and new containers by: the name, unique across all the
    # container lists of a pod; a container without one (never from an API server) by place.
    key: str


def request_kind(request: Mapping[str, Any]) -> str | None:
    """The pod-bearing kind an admission request is about (a key of WORKLOADS), or None.

    Every field is type-checked before it is looked up: a review is untrusted input, and a
    list where a string belongs must mean "not ours", not an unhashable-type crash."""
    kind = request.get("kind")
    if not is_mapping(kind):
        return None
    name, group = kind.get("kind"), kind.get("group", "")
    if not isinstance(name, str) or not isinstance(group, str):
        return None
    if group not in _GROUPS or name not in WORKLOADS:
        return None
    sub = request.get("subResource") or ""
    if sub and not (name == "Pod" and sub == "ephemeralcontainers"):
        return None
    return name


def request_namespace(request: Mapping[str, Any], obj: Mapping[str, Any]) -> str:
    """The namespace of an admission request (the request's, else the object's), or ""."""
    for namespace in (request.get("namespace"), metadata(obj).get("namespace")):
        if isinstance(namespace, str) and namespace:
            return namespace
    return ""


def pod_images(obj: Mapping[str, Any], kind: str) -> Iterator[Image]:
    """Every container image of `obj`'s pod spec, with its JSON pointer."""
    spec = walk(obj, POD_SPEC_PATHS[kind])
    if not is_mapping(spec):
        return
    base = _POINTERS[kind]
    for list_name in CONTAINER_LISTS:
        containers = spec.get(list_name)
        if not isinstance(containers, list):
            continue
        for i, container in enumerate(containers):
            if not is_mapping(container):
                continue
            image = container.get("image")
            if isinstance(image, str):
                name = container.get("name")
                if isinstance(name, str) and name:
                    label, key = name, f"name:{name}"
                else:
                    label, key = str(i), f"{list_name}:{i}"
                yield Image(f"{base}/{list_name}/{i}/image", list_name, label, image, key)


def images_by_container(obj: Mapping[str, Any], kind: str) -> dict[str, str]:
    """Container key (Image.key) → image: what an UPDATE compares against. A name is looked
    up across all the lists, init containers first (OpenShift's order), so a container that
    moves between lists with its image is unchanged."""
    found: dict[str, str] = {}
    for image in pod_images(obj, kind):
        found.setdefault(image.key, image.image)
    return found


def changed_images(obj: Mapping[str, Any], kind: str, old: Any = None) -> Iterator[Image]:
    """The images of `obj` that an UPDATE from `old` changed: a container that is new (by
    name) or whose image differs. Every image when there is no old object (CREATE)."""
    if not is_mapping(old):
        yield from pod_images(obj, kind)
        return
    before = images_by_container(old, kind)
    for image in pod_images(obj, kind):
        if before.get(image.key) != image.image:
            yield image


def images_to_resolve(obj: Mapping[str, Any], kind: str, old: Any = None) -> Iterator[Image]:
    """The images admission resolves, as OpenShift's image policy chooses them: on CREATE
    all; on UPDATE the changed ones, unless the update turned the resolve-names annotation
    on or off (on the object or its pod template; only "*" counts as on, and moving it
    between the two is no change): then all, so that `set image-lookup deploy/NAME` or
    `kubectl annotate` on an existing workload pins the images it already has. Not for a
    kind whose pod template cannot change: the API server would reject the update that our
    patch made of `kubectl annotate job/NAME` (OpenShift rewrites no Job update at all)."""
    if not is_mapping(old):
        return pod_images(obj, kind)
    turned = resolve_names_forced(obj, kind) != resolve_names_forced(old, kind)
    if turned and not WORKLOADS[kind].immutable_template:
        return pod_images(obj, kind)
    return changed_images(obj, kind, old)


def resolve_names_forced(obj: Mapping[str, Any], kind: str) -> bool:
    """The resolve-names annotation is on the object or on its pod template."""
    template = walk(obj, WORKLOADS[kind].template) if kind != "Pod" else None
    for holder in (obj, template):
        if is_mapping(holder):
            annotations = metadata(holder).get("annotations")
            forced = is_mapping(annotations) and annotations.get(RESOLVE_NAMES_ANNOTATION)
            if forced == "*":
                return True
    return False


def controlled_by_builtin_workload(obj: Mapping[str, Any]) -> bool:
    owners = metadata(obj).get("ownerReferences")
    if not isinstance(owners, list):
        return False
    for owner in owners:
        if is_mapping(owner) and owner.get("controller") is True:
            api_version, kind = owner.get("apiVersion"), owner.get("kind")
            if not isinstance(api_version, str) or not isinstance(kind, str):
                return False  # not a built-in controller's reference: the object is resolved
            return (api_version.rpartition("/")[0], kind) in BUILTIN_OWNERS
    return False


def is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """isinstance(value, Mapping), with a shortcut for dict: what JSON decodes to. The ABC
    check costs ~0.5 µs, and a review's walk makes thirty of them (a tenth of its CPU)."""
    return type(value) is dict or isinstance(value, Mapping)


def metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if is_mapping(meta) else {}


def walk(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not is_mapping(obj):
            return None
        obj = obj.get(key)
    return obj
