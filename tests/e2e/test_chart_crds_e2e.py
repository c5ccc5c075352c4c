"""The chart's CRDs through real `helm install`/`upgrade`/`uninstall` against the loopback
kube-apiserver: an upgrade whose CRD gains a field makes the API server keep that field from
then on (CRDs in crds/ were never upgraded, so the old schema went on pruning it), and
uninstall keeps the CRDs and every object of theirs.

The session already serves the chart's real CRDs (hack/localcluster.py applies them), and a
CRD belongs to one release at a time, so this module installs a copy of the chart whose two
CRDs are renamed into groups of their own (`*.crds-e2e.test`): the same templates and the same
schemas, and nothing the other tests use is touched. "Version 1" of that copy lacks
`spec.tags[].importPolicy.importMode` (a field OpenShift added in 4.12).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from localcluster import Cluster, tool

if TYPE_CHECKING:
    from clusterkit import Namespace

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "imagestreams"
# Renamed groups: (the chart's group, this module's group).
GROUPS = {"image.openshift.io": "image.crds-e2e.test", "imagestreams.io": "policy.crds-e2e.test"}
STREAMS_CRD = "imagestreams.image.crds-e2e.test"
POLICIES_CRD = "imagepolicies.policy.crds-e2e.test"
STREAM_API = "image.crds-e2e.test/v1"
RELEASE = "crds-e2e"
# Nothing but the CRDs needs to work here: no webhook registration that could see another
# test's namespace, no controller.
VALUES = [
    "--set", "webhook.namespaceSelector.matchLabels.crds-e2e=never",
    "--set", "policy.enabled=false",
    "--set", "controller.enabled=false",
]  # fmt: skip


def helm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, env=cluster.env, timeout=300
    )
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}"
    return proc


def chart_copy(dest: Path, *, without_import_mode: bool) -> Path:
    """The chart with its CRDs renamed into this module's groups; optionally "version 1",
    whose ImageStream schema has no importMode."""
    shutil.copytree(CHART, dest)
    for path in (dest / "files" / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group = GROUPS[crd["spec"]["group"]]
        crd["spec"]["group"] = group
        crd["metadata"]["name"] = f"{crd['spec']['names']['plural']}.{group}"
        if without_import_mode and crd["spec"]["names"]["kind"] == "ImageStream":
            schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            tag = schema["properties"]["spec"]["properties"]["tags"]["items"]
            del tag["properties"]["importPolicy"]["properties"]["importMode"]
        path.write_text(yaml.safe_dump(crd))
    return dest


def stream(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": STREAM_API,
        "kind": "ImageStream",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "tags": [
                {
                    "name": "1",
                    "from": {"kind": "DockerImage", "name": "registry.example/app:1"},
                    "importPolicy": {"scheduled": True, "importMode": "Legacy"},
                }
            ]
        },
    }


def write(cluster: Cluster, obj: dict[str, Any]) -> dict[str, Any]:
    """Create the object as a client that sends no field validation (the controller's
    Python client): unknown fields are pruned, not refused. Returns what was stored."""
    cluster.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(obj))
    return read(cluster, obj["metadata"]["namespace"], obj["metadata"]["name"])


def read(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", STREAMS_CRD, name, "-n", namespace, "-o", "json").stdout
    stored: dict[str, Any] = json.loads(out)
    return stored


def import_policy(stored: dict[str, Any]) -> dict[str, Any]:
    policy: dict[str, Any] = stored["spec"]["tags"][0]["importPolicy"]
    return policy


@pytest.fixture
def renamed_crds(cluster: Cluster) -> Iterator[None]:
    yield
    cluster.kubectl("delete", "crd", STREAMS_CRD, POLICIES_CRD, "--ignore-not-found")


def test_upgrade_adds_a_field_and_uninstall_keeps_crds_and_streams(
    cluster: Cluster, namespace: Namespace, tmp_path: Path, renamed_crds: None
) -> None:
    release_ns = namespace.name
    v1 = chart_copy(tmp_path / "v1", without_import_mode=True)
    v2 = chart_copy(tmp_path / "v2", without_import_mode=False)

    helm(cluster, "install", RELEASE, str(v1), "-n", release_ns, "--no-hooks", *VALUES)
    cluster.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", STREAMS_CRD)
    before = write(cluster, stream(release_ns, "app"))
    # Version 1's schema prunes the field: a newer controller's writes would lose it.
    assert import_policy(before) == {"scheduled": True}

    helm(cluster, "upgrade", RELEASE, str(v2), "-n", release_ns, "--no-hooks", *VALUES)
    crd = json.loads(cluster.kubectl("get", "crd", STREAMS_CRD, "-o", "json").stdout)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    after = write(cluster, stream(release_ns, "app"))
    assert import_policy(after) == {"scheduled": True, "importMode": "Legacy"}

    # crds.install=false on upgrade drops the CRDs from the release, and keep leaves them.
    helm(cluster, "upgrade", RELEASE, str(v2), "-n", release_ns, "--no-hooks", *VALUES,
         "--set", "crds.install=false")  # fmt: skip
    assert cluster.kubectl("get", "crd", STREAMS_CRD, check=False).returncode == 0

    helm(cluster, "upgrade", RELEASE, str(v2), "-n", release_ns, "--no-hooks", *VALUES)
    uninstall = helm(cluster, "uninstall", RELEASE, "-n", release_ns, "--no-hooks")
    assert "kept due to the resource policy" in uninstall.stdout, uninstall.stdout
    for crd_name in (STREAMS_CRD, POLICIES_CRD):
        assert cluster.kubectl("get", "crd", crd_name, check=False).returncode == 0, crd_name
    kept = read(cluster, release_ns, "app")
    assert kept["metadata"]["uid"] == before["metadata"]["uid"]
    assert import_policy(kept)["importMode"] == "Legacy"
