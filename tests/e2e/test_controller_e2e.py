"""The import controller against the real API server and the loopback registry.

These tests stop the cluster's own controller and run their own replicas with a short
scheduled interval and their own Lease, so that scheduling and fail-over can be watched in
seconds; the cluster's controller is started again afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterkit import Namespace, push_image
from localcluster import Cluster, free_ports

pytestmark = pytest.mark.e2e

INTERVAL = "3s"


class Controllers:
    """Controller replicas started by a test, each a real `imagestreams controller`."""

    def __init__(self, cluster: Cluster, logs: Path, lease: str) -> None:
        self.cluster, self.logs, self.lease = cluster, logs, lease
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"controller-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            self.cluster.controller_command(
                "--scheduled-interval", INTERVAL, "--lease-name", self.lease, "-n", "default",
                *extra,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def log(self, i: int) -> str:
        return (self.logs / f"controller-{i}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def controllers(
    cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Controllers]:
    """The cluster's controller stopped, ours run with a Lease of their own (by the test's
    node ID: unique across the modules that use this fixture), the cluster's started again
    afterwards."""
    cluster.stop_controller()
    lease = f"e2e-{abs(hash(request.node.nodeid)) % 10**8}"
    running = Controllers(cluster, tmp_path, lease)
    yield running
    running.stop_all()
    cluster.start_controller()


def stream(ns: Namespace, name: str, tags: list[dict[str, Any]]) -> None:
    ns.cluster.apply(
        {
            "apiVersion": "image.openshift.io/v1",
            "kind": "ImageStream",
            "metadata": {"name": name, "namespace": ns.name},
            "spec": {"lookupPolicy": {"local": True}, "tags": tags},
        }
    )


def history(ns: Namespace, name: str, tag: str) -> list[str]:
    out = ns.kubectl("get", "imagestream", name, "-o", "json").stdout
    for entry in json.loads(out).get("status", {}).get("tags") or []:
        if entry["tag"] == tag:
            return [item["image"] for item in entry.get("items") or []]
    return []


def conditions(ns: Namespace, name: str, tag: str) -> list[dict[str, Any]]:
    out = ns.kubectl("get", "imagestream", name, "-o", "json").stdout
    for entry in json.loads(out).get("status", {}).get("tags") or []:
        if entry["tag"] == tag:
            return list(entry.get("conditions") or [])
    return []


def wait_for(cluster: Cluster, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    cluster.wait(what, check, timeout)


def test_scheduled_tag_is_reimported_and_history_keeps_both(
    namespace: Namespace, controllers: Controllers, tmp_path: Path
) -> None:
    repo = f"{namespace.cluster.registry}/{namespace.name}/sched"
    first = push_image(f"{repo}:1", "one", tmp_path)
    controllers.start()
    stream(
        namespace,
        "sched",
        [
            {
                "name": "1",
                "from": {"kind": "DockerImage", "name": f"{repo}:1"},
                "importPolicy": {"scheduled": True, "insecure": True},
            },
            {"name": "latest", "from": {"kind": "ImageStreamTag", "name": "1"}},
        ],
    )
    wait_for(
        namespace.cluster, "the first import", lambda: history(namespace, "sched", "1") == [first]
    )
    wait_for(
        namespace.cluster, "the alias", lambda: history(namespace, "sched", "latest") == [first]
    )
    assert namespace.dry_run_pod("sched:1") == f"{repo}@{first}"

    second = push_image(f"{repo}:1", "two", tmp_path)
    wait_for(
        namespace.cluster,
        "the scheduled re-import",
        lambda: history(namespace, "sched", "1") == [second, first],
        timeout=30,
    )
    wait_for(
        namespace.cluster,
        "the alias to follow",
        lambda: history(namespace, "sched", "latest")[:1] == [second],
    )
    namespace.sync()
    assert namespace.dry_run_pod("sched:latest") == f"{repo}@{second}"


def test_unchanged_scheduled_tag_causes_no_writes(
    namespace: Namespace, controllers: Controllers, tmp_path: Path
) -> None:
    repo = f"{namespace.cluster.registry}/{namespace.name}/quiet"
    digest = push_image(f"{repo}:1", "quiet", tmp_path)
    port = free_ports(["metrics"])["metrics"]
    controllers.start("--metrics-bind", f"127.0.0.1:{port}")
    stream(
        namespace,
        "quiet",
        [
            {
                "name": "1",
                "from": {"kind": "DockerImage", "name": f"{repo}:1"},
                "importPolicy": {"scheduled": True},
            }
        ],
    )
    wait_for(namespace.cluster, "the import", lambda: history(namespace, "quiet", "1") == [digest])
    version = namespace.get("imagestream", "quiet", "{.metadata.resourceVersion}")
    before = metrics(port)
    time.sleep(8)  # two or more scheduled checks at 3s
    after = metrics(port)
    assert namespace.get("imagestream", "quiet", "{.metadata.resourceVersion}") == version
    assert after["writes"] == before["writes"]  # nothing changed: no API write
    assert after["head"] >= before["head"] + 2  # each check is one HEAD ...
    assert after["get"] == before["get"]  # ... and no manifest GET


def metrics(port: int) -> dict[str, float]:
    """Status writes and manifest HEAD/GET requests, from the controller's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    totals = {"writes": 0.0, "head": 0.0, "get": 0.0}
    for line in text.splitlines():
        if line.startswith("imagestreams_status_writes_total"):
            totals["writes"] += float(line.split()[-1])
        elif line.startswith("imagestreams_registry_requests_total"):
            for method in ("HEAD", "GET"):
                if f'method="{method}"' in line and 'code="200"' in line:
                    totals[method.lower()] += float(line.split()[-1])
    return totals


def test_missing_tag_fails_then_imports_after_backoff(
    namespace: Namespace, controllers: Controllers, tmp_path: Path
) -> None:
    repo = f"{namespace.cluster.registry}/{namespace.name}/late"
    controllers.start()
    stream(namespace, "late", [{"name": "1", "from": {"kind": "DockerImage", "name": f"{repo}:1"}}])
    wait_for(
        namespace.cluster,
        "the NotFound condition",
        lambda: [c.get("reason") for c in conditions(namespace, "late", "1")] == ["NotFound"],
    )
    events = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
    warnings = [
        (e["reason"], e["message"]) for e in events if e["involvedObject"]["name"] == "late"
    ]
    assert warnings and all(reason == "NotFound" for reason, _ in warnings)  # the condition's
    assert "import of tag '1' failed" in warnings[0][1]
    digest = push_image(f"{repo}:1", "late", tmp_path)
    wait_for(
        namespace.cluster,
        "the retried import",
        lambda: history(namespace, "late", "1") == [digest],
        timeout=60,
    )
    assert conditions(namespace, "late", "1") == []


def test_killing_the_leader_lets_the_other_replica_import(
    namespace: Namespace, controllers: Controllers, tmp_path: Path
) -> None:
    repo = f"{namespace.cluster.registry}/{namespace.name}/ha"
    first = push_image(f"{repo}:1", "ha-1", tmp_path)
    leader = controllers.start()
    time.sleep(3)  # let the first replica take the lease
    controllers.start()
    stream(namespace, "ha", [{"name": "1", "from": {"kind": "DockerImage", "name": f"{repo}:1"}}])
    wait_for(
        namespace.cluster, "the leader's import", lambda: history(namespace, "ha", "1") == [first]
    )
    assert "leads" in controllers.log(0)
    assert "leads" not in controllers.log(1)

    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait(10)
    second = push_image(f"{repo}:2", "ha-2", tmp_path)
    namespace.kubectl(
        "patch", "imagestream", "ha", "--type=json", "-p",
        json.dumps([{"op": "add", "path": "/spec/tags/-", "value": {
            "name": "2", "from": {"kind": "DockerImage", "name": f"{repo}:2"}}}]),
    )  # fmt: skip
    wait_for(
        namespace.cluster,
        "the other replica to take over and import",
        lambda: history(namespace, "ha", "2") == [second],
        timeout=60,
    )
    assert "leads" in controllers.log(1)


def test_changing_a_tags_source_reimports_it(namespace: Namespace, tmp_path: Path) -> None:
    """The webhook stamps new and changed tags with a generation (as OpenShift's API server
    does), so editing `from` with plain kubectl is enough for the controller to import."""
    cluster = namespace.cluster
    assert cluster.controller_running, "the cluster's imagestreams controller is not running"
    repo = f"{cluster.registry}/{namespace.name}/edit"
    first = push_image(f"{repo}:1", "edit-1", tmp_path)
    second = push_image(f"{repo}:2", "edit-2", tmp_path)
    stream(namespace, "edit", [{"name": "v", "from": {"kind": "DockerImage", "name": f"{repo}:1"}}])
    assert namespace.get("imagestream", "edit", "{.spec.tags[0].generation}") == "1"
    wait_for(cluster, "the first import", lambda: history(namespace, "edit", "v") == [first])
    namespace.kubectl(
        "patch", "imagestream", "edit", "--type=json", "-p",
        json.dumps([{"op": "replace", "path": "/spec/tags/0/from/name", "value": f"{repo}:2"}]),
    )  # fmt: skip
    assert namespace.get("imagestream", "edit", "{.spec.tags[0].generation}") == "2"
    wait_for(
        cluster,
        "the import of the new source",
        lambda: history(namespace, "edit", "v") == [second, first],
    )


def test_image_stream_image_takes_a_unique_digest_prefix(namespace: Namespace) -> None:
    """A hand-written `from: {kind: ImageStreamImage, name: "stream@<prefix>"}` is imported
    to the full digest, as OpenShift does; a prefix that several images share gets a Conflict
    condition that lists them."""
    cluster = namespace.cluster
    assert cluster.controller_running, "the cluster's imagestreams controller is not running"
    repo = f"{cluster.registry}/{namespace.name}/hist"
    wanted = "sha256:9f8e7d6c" + "5" * 56
    twins = ["sha256:abcdef01" + "1" * 56, "sha256:abcdef02" + "2" * 56]
    stream(namespace, "hist", [])  # history only, as a rollback source
    namespace.write_status(
        "hist", {"old": f"{repo}@{wanted}", "a": f"{repo}@{twins[0]}", "b": f"{repo}@{twins[1]}"}
    )
    stream(
        namespace,
        "app",
        [
            {"name": "pinned", "from": {"kind": "ImageStreamImage", "name": "hist@9f8e7d6c"}},
            {"name": "twin", "from": {"kind": "ImageStreamImage", "name": "hist@abcdef0"}},
        ],
    )
    wait_for(
        cluster, "the prefix resolved", lambda: history(namespace, "app", "pinned") == [wanted]
    )
    out = namespace.kubectl("get", "imagestream", "app", "-o", "json").stdout
    pinned = next(t for t in json.loads(out)["status"]["tags"] if t["tag"] == "pinned")
    assert pinned["items"][0]["dockerImageReference"] == f"{repo}@{wanted}"

    wait_for(cluster, "the ambiguity reported", lambda: conditions(namespace, "app", "twin") != [])
    [condition] = conditions(namespace, "app", "twin")
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "ImportSuccess",
        "False",
        "Conflict",
    )
    assert f"({twins[0]}, {twins[1]})" in condition["message"]
    assert history(namespace, "app", "twin") == []


QUEUED = 150  # streams waiting for their import when the user asks for one


def imported(ns: Namespace) -> int:
    """How many of the namespace's streams hold an image."""
    out = json.loads(ns.kubectl("get", "imagestreams", "-o", "json").stdout)
    return sum(
        1
        for obj in out["items"]
        if any(entry.get("items") for entry in (obj.get("status") or {}).get("tags") or [])
    )


def test_what_a_user_asks_for_goes_ahead_of_the_queue(
    namespace: Namespace, controllers: Controllers, tmp_path: Path
) -> None:
    """Issue 15, item 10: an `import-image` waited 77 s behind 3,000 queued streams. A new
    stream and an import-image are served while a rate-limited queue of QUEUED streams
    (one import every 2 s, one worker: 5 minutes of work) is still almost whole."""
    repo = f"{namespace.cluster.registry}/{namespace.name}/busy"
    push_image(f"{repo}:1", "busy", tmp_path)
    tag = {
        "name": "1",
        "from": {"kind": "DockerImage", "name": f"{repo}:1"},
        "importPolicy": {"scheduled": True, "insecure": True},
    }
    namespace.cluster.apply(
        [
            {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStream",
                "metadata": {"name": f"queued-{i}", "namespace": namespace.name},
                "spec": {"tags": [tag]},
            }
            for i in range(QUEUED)
        ]
    )
    controllers.start("--workers", "1", "--import-rate", "30", "--registry-import-rate", "30")
    wait_for(namespace.cluster, "the queue to start", lambda: imported(namespace) > 0)

    started = time.monotonic()
    stream(namespace, "asked", [tag])
    wait_for(namespace.cluster, "the new stream", lambda: history(namespace, "asked", "1") != [])
    new_stream_s = time.monotonic() - started

    started = time.monotonic()
    proc = subprocess.run(
        [
            str(namespace.cluster.imagestreams_bin),
            "--kubeconfig", str(namespace.cluster.kubeconfig),
            "-n", namespace.name, "import-image", "asked:1", "--timeout", "60",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    import_image_s = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    done = imported(namespace) - 1
    print(
        f"\nwith {QUEUED} streams queued (1 import / 2 s): a new stream imported after"
        f" {new_stream_s:.1f} s, import-image took {import_image_s:.1f} s; {done} of the"
        f" queued streams were imported meanwhile"
    )
    assert done < QUEUED // 3, "the user's imports waited behind the queue"


def test_a_controller_started_and_at_once_stopped_is_stopped(cluster: Cluster) -> None:
    """Right after exec a child's /proc cmdline can read empty; stopping must not take that
    for a pid file naming some other process and leave the controller running."""
    cluster.stop_controller()
    try:
        cluster.start_controller()
        proc = cluster.procs["controller"]
        cluster.stop_controller()
        assert proc.poll() is not None
    finally:
        cluster.start_controller()
