"""API-server restarts against the loopback control plane (hack/localcluster.py).

Two controller replicas (a leader and a follower on one Lease) and the cluster's webhook run
through RESTARTS restarts of kube-apiserver. Measured: the time from the API server answering
/readyz again to the webhook resolving a stream written after the restart (goal: under 5 s,
every time), and how often a controller replica exited (goal: never). A replica that exits
is started again, as the kubelet would, and counted.

IMAGESTREAMS_RESTARTS overrides the number of restarts (default 10).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for clusterkit.py

from clusterkit import started_cluster
from localcluster import Cluster, stream_status

from webhook.kube.connect import connect

pytestmark = pytest.mark.e2e

RESTARTS = int(os.environ.get("IMAGESTREAMS_RESTARTS", "10"))
RESYNC_GOAL = 5.0  # seconds from /readyz to resolving again
RESYNC_GIVE_UP = 45.0  # a single wait longer than this fails the test outright
RENEW_DEADLINE = 10.0  # leader.py's default
NAMESPACE = "outages"


class Replicas:
    """Controller replicas on one Lease, restarted when they exit (as the kubelet would)."""

    def __init__(self, cluster: Cluster, logs: Path, count: int, lease: str) -> None:
        self.cluster, self.logs, self.lease = cluster, logs, lease
        self.procs: list[subprocess.Popen[bytes]] = [self._spawn(i) for i in range(count)]
        self.restarts = 0
        self.exits: list[str] = []

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        log = (self.logs / f"controller-{i}.log").open("ab")
        proc = subprocess.Popen(
            self.cluster.controller_command("--lease-name", self.lease, "-n", "default"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        return proc

    def check(self, when: str) -> None:
        """Restart (and count) every replica that has exited."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                self.exits.append(f"replica {i} exited with {proc.returncode} {when}")
                self.restarts += 1
                self.procs[i] = self._spawn(i)

    def log(self, i: int) -> str:
        return (self.logs / f"controller-{i}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture(scope="module")
def outage_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane of its own: restarting its API server must not disturb other tests."""
    with started_cluster(tmp_path_factory.mktemp("outages")) as running:
        yield running


def _until(what: str, check: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Poll `check` until true; the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # the API server may still refuse a request or two
            pass
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


class Probe:
    """Writes a fresh ImageStream and asks the API server (a dry-run Pod, so admission runs)
    whether the webhook resolves it: only a watch that is current again can."""

    def __init__(self, cluster: Cluster) -> None:
        from kubernetes import client

        api_client = connect(str(cluster.kubeconfig)).api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.registry = cluster.registry

    def pinned(self, name: str) -> str:
        digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        return f"{self.registry}/outages/{name}@{digest}"

    def write_stream(self, name: str) -> None:
        """Create the stream (again, if a first try got no answer) and record its image."""
        from kubernetes.client.exceptions import ApiException

        group, version, plural = "image.openshift.io", "v1", "imagestreams"
        body = {
            "apiVersion": f"{group}/{version}",
            "kind": "ImageStream",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"lookupPolicy": {"local": True}},
        }
        status = stream_status({"t": self.pinned(name)})
        try:
            self.custom.create_namespaced_custom_object(group, version, NAMESPACE, plural, body)
        except ApiException as err:
            if err.status != 409:
                raise
        self.custom.patch_namespaced_custom_object_status(
            group, version, NAMESPACE, plural, name, status
        )

    def resolved(self, image: str) -> str:
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }
        answer = self.core.create_namespaced_pod(NAMESPACE, pod, dry_run="All")
        return str(answer.spec.containers[0].image)


def identity(proc: subprocess.Popen[bytes]) -> str:
    """The Lease holder identity of a replica (leader.py: host name and pid)."""
    return f"{socket.gethostname()}_{proc.pid}"


@pytest.fixture
def replicas(
    outage_cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Replicas]:
    """Two controller replicas on a Lease of their own, in place of the cluster's controller
    (a Lease of their own: one left by killed replicas would hold them back)."""
    outage_cluster.ensure_namespace(NAMESPACE)
    outage_cluster.stop_controller()
    lease = f"outages-{abs(hash(request.node.name)) % 10**8}"
    running = Replicas(outage_cluster, tmp_path, 2, lease)
    yield running
    running.stop()
    outage_cluster.start_controller()


def test_api_server_restarts_keep_controllers_up_and_resync_fast(
    outage_cluster: Cluster, replicas: Replicas
) -> None:
    """RESTARTS crashes and restarts of the API server (killed, then started again: an
    outage of a few seconds, shorter than the renew deadline)."""
    cluster = outage_cluster
    probe = Probe(cluster)
    resyncs: list[float] = []
    outages: list[float] = []
    probe.write_stream("before")
    pinned = probe.pinned("before")
    _until("the webhook to resolve before:t", lambda: probe.resolved("before:t") == pinned, 30)
    time.sleep(3)  # a replica leads, the other follows
    replicas.check("before the first restart")
    for i in range(RESTARTS):
        stopped = time.monotonic()
        cluster.stop_apiserver(grace=0)
        cluster.start_apiserver()
        ready = time.monotonic()
        outages.append(ready - stopped)
        name = f"after-{i}"
        written: list[str] = []

        def resolves(name: str = name, written: list[str] = written) -> bool:
            if not written:
                probe.write_stream(name)
                written.append(name)
            return probe.resolved(f"{name}:t") == probe.pinned(name)

        resyncs.append(_until(f"the webhook to resolve {name}:t", resolves, RESYNC_GIVE_UP))
        replicas.check(f"after restart {i}")
    time.sleep(2)  # an exit that lags the last restart still counts
    replicas.check("after the last restart")
    print(
        f"\n{RESTARTS} API-server restarts: outage (stop to /readyz) "
        f"{min(outages):.1f}-{max(outages):.1f}s; /readyz to resolving again: worst "
        f"{max(resyncs):.2f}s, all {[round(r, 2) for r in resyncs]}; controller restarts: "
        f"{replicas.restarts}"
    )
    assert replicas.restarts == 0, "\n".join(replicas.exits) + "\n" + replicas.log(0)[-3000:]
    assert max(resyncs) < RESYNC_GOAL, resyncs


def test_an_outage_longer_than_the_renew_deadline_costs_only_the_leader(
    outage_cluster: Cluster, replicas: Replicas
) -> None:
    """A graceful stop of the API server here takes over 10 s (it stops listening at once,
    then takes until SIGKILL to exit): longer than the renew deadline. As client-go's
    controllers do, the leader steps down and exits; the follower stays and takes over."""
    from kubernetes import client

    cluster = outage_cluster
    leases = client.CoordinationV1Api(connect(str(cluster.kubeconfig)).api_client)

    def holder() -> str:
        lease = leases.read_namespaced_lease(replicas.lease, "default")
        return str(lease.spec.holder_identity or "")

    ids = [identity(proc) for proc in replicas.procs]
    _until("a replica to lead", lambda: holder() in ids, 30)
    leader = ids.index(holder())
    time.sleep(3)  # the follower sees the leader renew (it times the lease from then)
    stopped = time.monotonic()
    cluster.stop_apiserver()
    cluster.start_apiserver()
    outage = time.monotonic() - stopped
    assert outage > RENEW_DEADLINE, f"the restart took {outage:.1f}s: no test of the deadline"
    follower = ids[1 - leader]
    took = _until("the follower to take over", lambda: holder() == follower, 30)
    replicas.check("after the long outage")
    print(
        f"\nan API-server outage of {outage:.1f}s: the follower led {took:.1f}s after /readyz;"
        f" exits: {replicas.exits}"
    )
    assert replicas.exits == [f"replica {leader} exited with 1 after the long outage"]
