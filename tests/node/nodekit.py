"""Helpers of the node tier's tests: a namespace driven through real kubectl and the
installed CLI, and polling. A module of its own (not conftest) so that test modules import
it by a name no other test directory uses."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import clusterkit
from localcluster import Cluster


class Namespace(clusterkit.Namespace):
    """One test's namespace, driven through real kubectl and the installed CLI."""

    def imagestreams(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.cluster.imagestreams_bin), "-n", self.name, *args],
            capture_output=True, text=True, env=self.cluster.env, timeout=180,
        )  # fmt: skip
        assert proc.returncode == 0, f"imagestreams {' '.join(args)}:\n{proc.stderr}"
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def running_pods(self, selector: str) -> list[dict[str, Any]]:
        """Pods of `selector` that are Running and Ready, not being deleted."""
        pods = self.json("pods", "-l", selector)["items"]
        return [p for p in pods if _running_and_ready(p)]

    def wait_rollout(self, deployment: str, timeout: int = 180) -> None:
        self.kubectl("rollout", "status", f"deployment/{deployment}", f"--timeout={timeout}s")

    def image_ids(self, selector: str) -> set[str]:
        """What the kubelet reports it ran (`imageID`) for the running pods of `selector`:
        the digest containerd resolved, whatever the spec said."""
        return {
            status["imageID"]
            for pod in self.running_pods(selector)
            for status in pod["status"].get("containerStatuses", [])
        }

    def image_digests(self, selector: str) -> set[str]:
        return {image_id.rsplit("@", 1)[-1] for image_id in self.image_ids(selector)}


def _running_and_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp") or pod["status"].get("phase") != "Running":
        return False
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def crictl(cluster: Cluster, *args: str) -> str:
    return cluster.crictl(*args).stdout
