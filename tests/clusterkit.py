"""Helpers of the tiers that run hack/localcluster.py (tests/e2e, tests/reliability,
tests/node): a cluster started for a fixture, a namespace driven through real kubectl, a
one-layer image pushed by crane, a strict server-side dry run. A module of its own, not a
conftest, so that every tier imports it by one name no test directory uses:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests/ directory
    import clusterkit
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "hack"))

from localcluster import Cluster, ClusterError, tool  # noqa: E402

_names = itertools.count(1)


@contextlib.contextmanager
def started_cluster(
    state: Path,
    *,
    node: bool = False,
    errors: tuple[type[Exception], ...] = (ClusterError,),
    what: str = "local cluster",
) -> Iterator[Cluster]:
    """A cluster for a fixture's lifetime. One that does not start fails the session with
    the reason and no traceback (these tests never skip)."""
    try:
        running = Cluster.start(state, REPO_ROOT, node=node)
    except errors as err:
        raise pytest.fail.Exception(f"{what} did not start: {err}", pytrace=False) from None
    yield running
    running.stop()


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the process group of `proc` (started with start_new_session), SIGKILL
    after `grace` seconds. A leader that has exited may leave children in its group: they
    are signalled too, unless the leader was reaped (its pid, the group's ID, may be reused)."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def namespace_name(hint: str) -> str:
    """A fresh namespace name from `hint` (a test's name): a DNS label, unique in the session."""
    name = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-")[:40].strip("-")
    return f"{name}-{next(_names)}"


@dataclass(frozen=True)
class Image:
    repository: str  # 127.0.0.1:PORT/e2e/app
    tag: str
    digest: str

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"


def push_image(ref: str, content: str, work: Path) -> str:
    """Push a one-layer image holding `content` as `ref` with crane; return its digest."""
    work.mkdir(parents=True, exist_ok=True)
    layer_dir = Path(tempfile.mkdtemp(dir=work))
    (layer_dir / "content.txt").write_text(content)
    layer = layer_dir / "layer.tar.gz"
    with tarfile.open(layer, "w:gz") as tar:
        tar.add(layer_dir / "content.txt", arcname="content.txt")
    crane = str(tool("crane"))
    subprocess.run(
        [crane, "append", "--oci-empty-base", "-f", str(layer), "-t", ref],
        check=True,
        capture_output=True,
    )
    digest = subprocess.run([crane, "digest", ref], check=True, capture_output=True, text=True)
    return digest.stdout.strip()


def server_dry_run(
    cluster: Cluster, docs: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """Apply `docs` as a strict server-side dry run (admission runs, nothing is stored) and
    check that the API server accepted every one of them."""
    proc = cluster.kubectl(
        # No -n: every namespaced object names its namespace itself.
        "apply", "--dry-run=server", "--validate=strict", "-f", "-",
        input=yaml.safe_dump_all(docs), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(docs)
    return proc


class Namespace:
    """One test's namespace, with helpers that drive the cluster through real kubectl."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.name, *args, check=check)

    def get(self, kind: str, name: str, jsonpath: str) -> str:
        return self.kubectl("get", kind, name, "-o", f"jsonpath={jsonpath}").stdout.strip()

    def pod_images(self, selector: str) -> list[str]:
        """The first container's image of each Pod of `selector`, as the API server stored
        it."""
        out = self.kubectl("get", "pods", "-l", selector, "-o",
                           "jsonpath={.items[*].spec.containers[0].image}")  # fmt: skip
        return out.stdout.split()

    def stream(
        self,
        name: str,
        tags: dict[str, Image | None],
        *,
        lookup: bool = True,
    ) -> None:
        """An ImageStream whose spec tracks each tag; a tag mapped to an Image also gets the
        status an import would write (None: spec only, never imported)."""
        spec_tags = [
            {"name": tag, "from": {"kind": "DockerImage", "name": f"{self._repo(img)}:{tag}"}}
            for tag, img in tags.items()
        ]
        self.cluster.apply(
            {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStream",
                "metadata": {"name": name, "namespace": self.name},
                "spec": {"lookupPolicy": {"local": lookup}, "tags": spec_tags},
            }
        )
        imported = {tag: img.pinned for tag, img in tags.items() if img is not None}
        if imported:
            self.write_status(name, imported)
        self.sync()

    def write_status(self, stream: str, pinned: dict[str, str]) -> None:
        """Give each tag one history entry, `tag -> repository@digest`, through the status
        subresource (as the import controller does)."""
        self.cluster.write_stream_status(self.name, stream, pinned)

    def _repo(self, image: Image | None) -> str:
        return image.repository if image else f"{self.cluster.registry}/e2e/missing"

    def sync(self, timeout: float = 30) -> None:
        """Wait until the webhook has seen every ImageStream write made so far.

        Its index is fed by one watch, and a watch delivers events in order: once a stream
        written now resolves, every earlier write is in the index too. Without this, a test
        that expects "unchanged" could pass only because the webhook had not caught up.
        """
        name = f"sync-{next(_names)}"
        digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        pinned = f"{self.cluster.registry}/sync@{digest}"
        self.cluster.pin_stream(self.name, name, {"t": pinned})
        self.cluster.wait(
            f"the webhook to see ImageStream {self.name}/{name}",
            lambda: self.dry_run_pod(f"{name}:t") == pinned,
            timeout,
        )

    def dry_run_pod(self, image: str) -> str:
        """The image a Pod would be stored with (server-side dry run: admission runs)."""
        return self.cluster.dry_run_pod(self.name, image)
