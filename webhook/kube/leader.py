"""Leader election on a coordination.k8s.io/v1 Lease: of several controller replicas only
the holder of the lease imports.

A small loop of our own over the Lease API, following client-go's leaderelection, rather
than the kubernetes client's LeaderElection: that one lets any error that is not an
ApiException (urllib3's MaxRetryError, whenever the API server restarts) escape `run()`, in
the followers as much as in the leader, so every replica exited together on a blip of a
second or two; it also times the lease on the wall clock. Here:

- a follower tries to take the lease every retry period (with jitter), forever, whatever
  the API server answers or fails to answer. It takes the lease over only when the holder
  has not renewed it for the lease's duration, timed on our own monotonic clock from the
  moment we last saw the lease change, so clock skew between replicas does not matter;
- the leader renews every retry period, and retries a failed renewal with backoff. Only
  when no renewal has succeeded for the renew deadline does it step down: `on_lost`, by
  default the end of the process, since its workers may be mid-import and a restart as a
  follower is the only clean state. The renew deadline (plus a retry period) is shorter
  than the lease duration, so it stops before another replica can take over;
- when `lead` returns, the lease is released (no holder), so a successor need not wait.

Every request to the API server has a timeout that ends before the deadline it serves, and
goes out once (no urllib3 retries hidden inside it): the loop decides when to try again.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from webhook.model.backoff import backoff

log = logging.getLogger(__name__)

MIN_REQUEST_TIMEOUT = 0.2  # seconds; a request given less than this would only fail
JITTER = 1.2  # client-go's JitterFactor: followers try every 1 to 1.2 retry periods


@dataclass(frozen=True)
class LeaseOptions:
    name: str = "imagestreams-controller"
    namespace: str = "default"
    # client-go's defaults (kube-controller-manager's too), in seconds.
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline:
            raise ValueError("the retry period must be shorter than the renew deadline")
        if self.renew_deadline + self.retry_period >= self.lease_duration:
            # The leader gives up at its last renewal + retry period + renew deadline; a
            # follower takes over at that renewal + lease duration: strictly later.
            raise ValueError("the lease must outlast the renew deadline plus a retry period")


class LeaderLost(Exception):
    """The lease could not be renewed within the renew deadline."""


class Elector:
    """One candidate's view of the Lease: `try_acquire_or_renew` is one attempt.

    Mirrors client-go's tryAcquireOrRenew. `clock` is monotonic; times written into the
    Lease (acquireTime, renewTime) are for people and other tools, never compared here."""

    def __init__(
        self,
        leases: Any,  # kubernetes.client.CoordinationV1Api
        options: LeaseOptions,
        identity: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = leases
        self.options = options
        self.identity = identity
        self._clock = clock
        self._observed_version: str | None = None  # resourceVersion last seen
        self._observed_at = 0.0  # when we saw it change

    def try_acquire_or_renew(self, deadline: float) -> bool:
        """Create, take over or renew the lease, by `deadline` (on `clock`); True when we
        hold it afterwards, False when another holder's lease is still valid. Raises on any
        failed request, and TimeoutError when the deadline passes."""
        from kubernetes.client.exceptions import ApiException

        name, namespace = self.options.name, self.options.namespace
        now = _micro_time()
        try:
            response = self._leases.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=self._left(deadline)
            )
        except ApiException as err:
            if err.status != 404:
                raise
            spec = self._spec(now, now, transitions=0)
            body = {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
            created = self._leases.create_namespaced_lease(
                namespace, body, _preload_content=False, _request_timeout=self._left(deadline)
            )
            self._observe(json.loads(created.data))
            return True
        lease = json.loads(response.data)
        spec = lease.get("spec") or {}
        version = (lease.get("metadata") or {}).get("resourceVersion")
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, self._clock()
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.options.lease_duration)
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            lease["spec"] = self._spec(spec.get("acquireTime") or now, now, transitions)
        elif holder and self._observed_at + duration > self._clock():
            return False  # held, and renewed within its duration as far as we can tell
        else:  # expired, or released: ours now
            lease["spec"] = self._spec(now, now, transitions + 1)
        # The resourceVersion read is sent back: a concurrent writer makes this a 409.
        replaced = self._leases.replace_namespaced_lease(
            name, namespace, lease, _preload_content=False, _request_timeout=self._left(deadline)
        )
        self._observe(json.loads(replaced.data))
        return True

    def release(self, deadline: float) -> None:
        """Give the lease up (no holder), if we hold it: a successor need not wait it out."""
        response = self._leases.read_namespaced_lease(
            self.options.name,
            self.options.namespace,
            _preload_content=False,
            _request_timeout=self._left(deadline),
        )
        lease = json.loads(response.data)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time())
        lease["spec"] = spec
        self._leases.replace_namespaced_lease(
            self.options.name,
            self.options.namespace,
            lease,
            _preload_content=False,
            _request_timeout=self._left(deadline),
        )

    def _left(self, deadline: float) -> float:
        """The timeout for a request that must be answered by `deadline`."""
        left = deadline - self._clock()
        if left < MIN_REQUEST_TIMEOUT:
            raise TimeoutError("too little time left for another request")
        return left

    def _spec(self, acquired: str, renewed: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.options.lease_duration),
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

    def _observe(self, lease: dict[str, Any]) -> None:
        self._observed_version = (lease.get("metadata") or {}).get("resourceVersion")
        self._observed_at = self._clock()


def _micro_time() -> str:
    """Now, as a Lease's MicroTime (RFC 3339 with microseconds, always six digits)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_client(api_client: Any) -> Any:
    """A CoordinationV1Api on a client of its own that sends each request once.

    A connection pool of its own, so that renewals never queue behind the controller's other
    requests; and no urllib3 retries, which would send a request up to four times, each with
    the full timeout, past the deadline the leader must keep."""
    from kubernetes import client

    configuration = copy.copy(api_client.configuration)
    configuration.retries = False
    return client.CoordinationV1Api(client.ApiClient(configuration))


def run_as_leader(
    api_client: Any,
    options: LeaseOptions,
    lead: Callable[[], None],
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Block until this process holds the lease, then run `lead` (in a thread) while
    renewing it. Returns when `lead` returns (the lease released); calls `on_lost` (default:
    exit the process) when the lease could not be renewed within the renew deadline."""
    identity = options.identity or f"{socket.gethostname()}_{os.getpid()}"
    elector = Elector(lease_client(api_client), options, identity)
    where = f"{options.namespace}/{options.name}"
    log.info("%s waiting for the lease %s", identity, where)
    acquired = _acquire(elector)
    log.info("%s leads (lease %s)", identity, where)
    failure: list[BaseException] = []

    def run_lead() -> None:
        try:
            lead()
        except BaseException as err:  # reported by the renewing thread
            failure.append(err)

    leading = threading.Thread(target=run_lead, name="lead", daemon=True)
    leading.start()
    try:
        _renew_while(elector, leading.is_alive, acquired)
    except LeaderLost as lost:
        log.error("%s: %s; stepping down", identity, lost)
        (on_lost or _exit)()
        return
    try:
        elector.release(time.monotonic() + options.renew_deadline)
        log.info("%s released the lease %s", identity, where)
    except Exception as err:
        log.warning("%s could not release the lease %s: %s", identity, where, err)
    if failure:
        raise failure[0]


def _acquire(elector: Elector) -> float:
    """Try every retry period (jittered) until we hold the lease, and return when the
    successful try started; never give up."""
    options = elector.options
    failing = False
    while True:
        started = time.monotonic()
        try:
            if elector.try_acquire_or_renew(started + options.renew_deadline):
                return started
            failing = False
        except Exception as err:
            if not failing:  # once per outage, not every retry period
                log.warning("the lease %s/%s: %s", options.namespace, options.name, err)
            failing = True
        time.sleep(options.retry_period * random.uniform(1.0, JITTER))


def _renew_while(elector: Elector, leading: Callable[[], bool], renewed: float) -> None:
    """Renew every retry period while `leading()`; raise LeaderLost when no renewal succeeds
    for a retry period plus the renew deadline after the last one (`renewed`, when its
    request started: the lease was written after that). As client-go: a round of retries
    starts a retry period after a renewal and may last the renew deadline."""
    options = elector.options
    clock = time.monotonic
    next_try = renewed + options.retry_period
    failures = 0
    while leading():
        now = clock()
        deadline = renewed + options.retry_period + options.renew_deadline
        if now >= deadline:
            raise LeaderLost(f"no renewal for {now - renewed:.1f}s")
        if now < next_try:
            time.sleep(min(next_try - now, deadline - now, 0.1))  # notices `leading()` soon
            continue
        try:
            held = elector.try_acquire_or_renew(deadline)
        except Exception as err:
            held = False
            if failures == 0:
                log.warning("renewing the lease failed, retrying: %s", err)
        if held:
            if failures:
                log.info("renewed the lease after %d failed tries", failures)
            renewed, failures = now, 0  # the renewal was written after it started
            next_try = renewed + options.retry_period
        else:
            failures += 1
            next_try = clock() + backoff(failures, initial=0.25, cap=options.retry_period)


def _exit() -> None:
    os._exit(1)
