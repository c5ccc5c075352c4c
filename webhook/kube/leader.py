"""Leader election on a coordination.k8s.io/v1 Lease, with the kubernetes client's own
LeaderElection: of several controller replicas only the holder of the lease imports.

A leader that cannot renew stops the whole process (as client-go controllers do): its
workers may be mid-import, and a clean restart as a follower is the only safe state.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseOptions:
    name: str = "imagestreams-controller"
    namespace: str = "default"
    lease_duration: int = 15
    renew_deadline: int = 10
    retry_period: int = 2
    identity: str = ""


def run_as_leader(
    api_client: Any,
    options: LeaseOptions,
    lead: Callable[[], None],
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Block until this process holds the lease, then run `lead` while renewing it."""
    from kubernetes import client
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    identity = options.identity or f"{socket.gethostname()}_{os.getpid()}"
    lock = LeaseLock(options.name, options.namespace, identity)
    lock.api_instance = client.CoordinationV1Api(api_client)  # not the global default client
    started = threading.Event()

    def started_leading() -> None:
        started.set()
        log.info("%s leads (lease %s/%s)", identity, options.namespace, options.name)
        lead()

    def stopped_leading() -> None:
        log.error("%s lost the lease %s/%s; exiting", identity, options.namespace, options.name)
        (on_lost or _exit)()

    config = electionconfig.Config(
        lock,
        lease_duration=options.lease_duration,
        renew_deadline=options.renew_deadline,
        retry_period=options.retry_period,
        onstarted_leading=started_leading,
        onstopped_leading=stopped_leading,
    )
    log.info("%s waiting for the lease %s/%s", identity, options.namespace, options.name)
    leaderelection.LeaderElection(config).run()


def _exit() -> None:
    os._exit(1)
