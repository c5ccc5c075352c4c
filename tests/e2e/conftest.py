"""Fixtures for end-to-end tests: a real kube-apiserver, etcd, kube-controller-manager, OCI
registry and the imagestreams webhook, all on 127.0.0.1, started once per session by
hack/localcluster.py in a temporary directory.

The binaries come from `make tools`. A missing one fails the session with its name: these
tests never skip.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "hack"))

from localcluster import Cluster, ClusterError, tool  # noqa: E402

_names = itertools.count(1)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("cluster")
    try:
        running = Cluster.start(state, REPO_ROOT)
    except ClusterError as err:
        raise pytest.fail.Exception(f"local cluster did not start: {err}", pytrace=False) from None
    yield running
    running.stop()


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


@pytest.fixture(scope="session")
def app_image(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """A one-layer image pushed into the cluster's registry as e2e/app:1.0 by crane."""
    repository = f"{cluster.registry}/e2e/app"
    digest = push_image(f"{repository}:1.0", "imagestreams e2e\n", tmp_path_factory.mktemp("image"))
    return Image(repository, "1.0", digest)


class Namespace:
    """One test's namespace, with helpers that drive the cluster through real kubectl."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.name, *args, check=check)

    def get(self, kind: str, name: str, jsonpath: str) -> str:
        return self.kubectl("get", kind, name, "-o", f"jsonpath={jsonpath}").stdout.strip()

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
        tags = [
            {
                "tag": tag,
                "items": [
                    {
                        "created": "2024-01-01T00:00:00Z",
                        "dockerImageReference": ref,
                        "image": ref.split("@", 1)[1],
                        "generation": 1,
                    }
                ],
            }
            for tag, ref in pinned.items()
        ]
        patch = json.dumps({"status": {"tags": tags}})
        self.kubectl(
            "patch", "imagestream", stream, "--subresource=status", "--type=merge", "-p", patch
        )

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
        self.cluster.apply(
            {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStream",
                "metadata": {"name": name, "namespace": self.name},
                "spec": {"lookupPolicy": {"local": True}},
            }
        )
        self.write_status(name, {"t": pinned})
        self.cluster.wait(
            f"the webhook to see ImageStream {self.name}/{name}",
            lambda: self.dry_run_pod(f"{name}:t") == pinned,
            timeout,
        )

    def dry_run_pod(self, image: str) -> str:
        """The image a Pod would be stored with (server-side dry run: admission runs)."""
        out = self.kubectl(
            "run", "probe", f"--image={image}", "--restart=Never", "--dry-run=server",
            "-o", "jsonpath={.spec.containers[0].image}",
        )  # fmt: skip
        return out.stdout.strip()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Namespace:
    """A fresh namespace per test (left for the session's teardown to discard)."""
    return _new_namespace(cluster, request.node.name)


@pytest.fixture
def new_namespace(cluster: Cluster) -> Callable[[str], Namespace]:
    """Makes more namespaces: `new_namespace("other")`."""
    return lambda hint: _new_namespace(cluster, hint)


def _new_namespace(cluster: Cluster, hint: str) -> Namespace:
    name = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-")[:40].strip("-")
    name = f"{name}-{next(_names)}"
    cluster.ensure_namespace(name)
    return Namespace(cluster, name)
