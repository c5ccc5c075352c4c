"""The API calls every process makes the same way, one of each: the typed API groups, the
conflict-retry loop, ImageStream status writes and Events."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from webhook.kube import errors
from webhook.kube.connect import GROUP, PLURAL, VERSION

if TYPE_CHECKING:  # the CLI's verbs import this module, and never the thin client
    from webhook.kube.listwatch import RestClient

log = logging.getLogger(__name__)

T = TypeVar("T")
CONFLICT_RETRIES = 5
EVENT_MESSAGE_LIMIT = 1024


# --- the API groups ----------------------------------------------------------------------


def _group(name: str, api_client: Any) -> Any:
    from kubernetes import client

    return getattr(client, name)(api_client)


def core(api_client: Any) -> Any:
    return _group("CoreV1Api", api_client)


def apps(api_client: Any) -> Any:
    return _group("AppsV1Api", api_client)


def batch(api_client: Any) -> Any:
    return _group("BatchV1Api", api_client)


def custom_objects(api_client: Any) -> Any:
    return _group("CustomObjectsApi", api_client)


def authorization(api_client: Any) -> Any:
    return _group("AuthorizationV1Api", api_client)


def admission_registration(api_client: Any) -> Any:
    return _group("AdmissionregistrationV1Api", api_client)


def workload_api(api_client: Any, group: str) -> Any:
    """The API of a workload kind's group: "" (core), "apps" or "batch"."""
    return {"": core, "apps": apps, "batch": batch}[group](api_client)


# --- read, compute, write ----------------------------------------------------------------


def retry_on_conflict(
    attempt: Callable[[], T],
    *,
    retries: int = CONFLICT_RETRIES,
    statuses: tuple[int, ...] = (errors.CONFLICT,),
) -> T:
    """Run a read-compute-write `attempt` again when the write lost a race (409: someone
    wrote in between, so the attempt reads afresh); after `retries`, the error goes up."""
    for i in range(retries):
        try:
            return attempt()
        except Exception as err:  # the client's ApiException, or a caller's error with a status
            if errors.status_of(err) not in statuses or i + 1 == retries:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class StatusWrite:
    """What one status update did: the stream as read last (None: it is gone) and as
    written (None: nothing needed writing)."""

    before: Mapping[str, Any] | None
    written: Mapping[str, Any] | None


class StreamStatus:
    """Writes ImageStream status through the status subresource: `change` computes the new
    object from the one read, the write carries that read's resourceVersion, and on a
    conflict `change` runs again on a fresh read, so another writer's history is kept.

    The writes go through the thin client `rest` when there is one: the kubernetes client's
    own work on each object (call checks, walking it to serialise) cost 10-18% of a write's
    CPU (1.44 -> 1.17 ms, a stream of 5 tags), and a first import pass writes every stream.
    Reads, on a conflict only, stay on `custom_objects_api`."""

    def __init__(
        self,
        custom_objects_api: Any,
        retries: int = CONFLICT_RETRIES,
        *,
        rest: RestClient | None = None,
    ) -> None:
        self.custom = custom_objects_api
        self.retries = retries
        self.rest = rest

    def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except errors.ApiException as err:
            if errors.status_of(err) == errors.NOT_FOUND:
                return None
            raise
        return cast(Mapping[str, Any], obj)

    def replace(self, namespace: str, name: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """PUT `body` as the stream's status; the stream as written."""
        if self.rest is not None:
            return self.rest.put(_status_path(namespace, name), body)
        written = self.custom.replace_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, body
        )
        return cast(Mapping[str, Any], written)

    def update(
        self,
        namespace: str,
        name: str,
        change: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
        current: Mapping[str, Any] | None = None,
    ) -> StatusWrite:
        """`change(obj)` returns the object to write, or None when nothing changed.
        `current` saves the first read when the caller holds a fresh copy."""
        obj = current if current is not None else self.read(namespace, name)
        for attempt in range(self.retries):
            if obj is None:
                return StatusWrite(None, None)
            body = change(obj)
            if body is None:
                return StatusWrite(obj, None)
            try:
                return StatusWrite(obj, self.replace(namespace, name, body))
            except errors.API_ERRORS as err:
                status = errors.status_of(err)
                if status == errors.NOT_FOUND:
                    return StatusWrite(None, None)
                if status != errors.CONFLICT or attempt + 1 == self.retries:
                    raise
            obj = self.read(namespace, name)
        raise AssertionError("unreachable")


def _status_path(namespace: str, name: str) -> str:
    from webhook.kube.listwatch import object_path  # loaded already: a thin client exists

    return object_path(GROUP, VERSION, PLURAL, namespace, name) + "/status"


# --- access reviews ----------------------------------------------------------------------


def service_accounts_may(
    authorization_api: Any,
    namespace: str,
    *,
    verb: str,
    resource: str,
    group: str,
    in_namespace: str,
) -> bool:
    """Whether the service accounts of `namespace` may `verb` `resource` in `in_namespace`:
    what a cross-namespace reference made by that namespace is allowed to reach."""
    from kubernetes import client

    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:default",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
            resource_attributes=client.V1ResourceAttributes(
                group=group, resource=resource, verb=verb, namespace=in_namespace
            ),
        )
    )
    answer = authorization_api.create_subject_access_review(review)
    return bool(answer.status and answer.status.allowed)


# --- Events ------------------------------------------------------------------------------


def record_event(
    core_api: Any,
    obj: Mapping[str, Any],
    *,
    kind: str,
    api_version: str,
    type_: str,
    reason: str,
    message: str,
    component: str = "imagestreams-controller",
) -> bool:
    """An Event on `obj` (best effort: False, logged, when it could not be recorded)."""
    from kubernetes import client

    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace", ""))
    now = dt.datetime.now(dt.UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{metadata.get('name', kind.lower())}."),
        involved_object=client.V1ObjectReference(
            api_version=api_version,
            kind=kind,
            name=metadata.get("name"),
            namespace=namespace,
            uid=metadata.get("uid"),
            resource_version=metadata.get("resourceVersion"),
        ),
        reason=reason,
        message=message[:EVENT_MESSAGE_LIMIT],
        type=type_,
        source=client.V1EventSource(component=component),
        first_timestamp=now,
        last_timestamp=now,
        count=1,
    )
    try:
        core_api.create_namespaced_event(namespace, event)
    except Exception as err:  # an Event is never worth failing the work it reports on
        log.warning(
            "cannot record event %s on %s %s: %s",
            reason,
            kind,
            metadata.get("name"),
            errors.describe(err),
        )
        return False
    return True
