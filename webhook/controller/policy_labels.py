"""The namespace label that picks the fail-closed validating webhook.

The validating webhook is registered twice: `failurePolicy: Fail` for namespaces labelled
`imagestreams.io/policy-enforced: "true"`, `Ignore` for every other. A namespace carries the
label exactly when some `Enforce` ImagePolicy selects it, so that an outage of the webhook
stops image changes where a platform team enforces a policy and nowhere else.

`label_changes` decides (pure); `PolicyLabeler` watches policies and namespaces and applies
the changes. It runs in the controller, under its leader election.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from webhook.kube import api, errors
from webhook.model.policy import (
    ENFORCE,
    ENFORCED_LABEL,
    Policy,
    import_problem,
    namespace_labels_of,
)

log = logging.getLogger(__name__)

ENFORCED_VALUE = "true"
RESYNC_SECONDS = 300.0
RETRY_SECONDS = 5.0
CACHE_WAIT = 10.0


def enforced_namespaces(
    policies: Iterable[Policy], namespaces: Mapping[str, Mapping[str, str]]
) -> set[str]:
    """The namespaces that some Enforce policy selects (object selectors aside: a namespace
    where any object is enforced fails closed as a whole)."""
    enforcing = [p for p in policies if p.mode == ENFORCE]
    return {
        name
        for name, labels in namespaces.items()
        if any(p.namespace_selector.matches(_selectable(name, labels)) for p in enforcing)
    }


def label_changes(
    policies: Iterable[Policy], namespaces: Mapping[str, Mapping[str, str]]
) -> dict[str, str | None]:
    """namespace → the label value to set ("true"), or None to remove the label."""
    wanted = enforced_namespaces(policies, namespaces)
    changes: dict[str, str | None] = {}
    for name, labels in namespaces.items():
        has = labels.get(ENFORCED_LABEL)
        if name in wanted and has != ENFORCED_VALUE:
            changes[name] = ENFORCED_VALUE
        elif name not in wanted and has is not None:
            changes[name] = None
    return changes


def _selectable(name: str, labels: Mapping[str, str]) -> dict[str, str]:
    # Our own label never decides (policies may not select on it; see policy.py).
    selectable = {k: v for k, v in labels.items() if k != ENFORCED_LABEL}
    return namespace_labels_of(name, selectable)


def label_patch(value: str | None) -> dict[str, Any]:
    """A JSON merge patch setting (or, with None, removing) the label."""
    return {"metadata": {"labels": {ENFORCED_LABEL: value}}}


class PolicyLabeler:
    """Keeps the enforced label on namespaces true to the ImagePolicies.

    Reacts to every policy or namespace change (a label it writes comes back as a namespace
    change and then finds nothing to do), and resyncs every `resync` seconds. Also answers
    the controller's import check from the same caches.
    """

    def __init__(self, api_client: Any, *, resync: float = RESYNC_SECONDS) -> None:
        from webhook.kube.policy_cache import PolicyIndex, StreamImages

        self._api_client = api_client
        self._resync = resync
        self._wake = threading.Event()
        self._stop = threading.Event()
        images = StreamImages()
        images.replace_all([])
        self.index = PolicyIndex(None, images, on_change=self._wake.set, namespace_wait=0.0)
        self._thread = threading.Thread(target=self._run, name="policy-labels", daemon=True)

    def start(self) -> PolicyLabeler:
        self.index.watch(self._api_client)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.index.stop()

    def wait_ready(self, timeout: float) -> bool:
        """True once policies and namespaces have been listed."""
        deadline = time.monotonic() + timeout
        for sink in (self.index.policies, self.index.namespaces):
            if not sink.wait_ready(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def import_denial(
        self, namespace: str, stream_labels: Mapping[str, str], source: str
    ) -> str | None:
        """Why an Enforce policy forbids a stream of `namespace` to import `source`, or None.

        For the controller, before it imports a DockerImage tag (admission already refused
        such a tag, but a policy may have been created after the stream). Waits up to
        `CACHE_WAIT` seconds for the first lists; past that it does not hold imports back."""
        if not self.wait_ready(CACHE_WAIT):
            log.warning("image policies not loaded: import check of %s skipped", namespace)
            return None
        labels = self.index.namespaces.labels(namespace)
        for policy in self.index.policies.all():
            allowed = policy.rules.allowed_registries_for_import
            if policy.mode != ENFORCE or not allowed:
                continue
            if not policy.applies_to(labels, stream_labels):
                continue
            problem = import_problem(source, allowed)
            if problem is not None:
                return f'{problem} (ImagePolicy "{policy.name}", rule allowedRegistriesForImport)'
        return None

    def reconcile(self) -> bool:
        """Apply the label changes once; False when some write failed (retry soon)."""
        if not (self.index.policies.ready and self.index.namespaces.ready):
            return True
        core = api.core(self._api_client)
        changes = label_changes(self.index.policies.all(), self.index.namespaces.snapshot())
        ok = True
        for name, value in sorted(changes.items()):
            try:
                core.patch_namespace(
                    name, label_patch(value), _content_type="application/merge-patch+json"
                )
                log.info(
                    "namespace %s: %s %s",
                    name,
                    "labelled" if value else "unlabelled",
                    ENFORCED_LABEL,
                )
            except errors.ApiException as err:
                if errors.status_of(err) != errors.NOT_FOUND:  # deleted: nothing to label
                    ok = False
                    log.warning("labelling namespace %s failed: %s", name, errors.describe(err))
        return ok

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._resync)
            if self._stop.is_set():
                break
            self._wake.clear()
            try:
                ok = self.reconcile()
            except Exception:  # keep labelling after any single failure
                log.exception("policy label reconcile failed")
                ok = False
            if not ok:
                self._stop.wait(RETRY_SECONDS)
                self._wake.set()
