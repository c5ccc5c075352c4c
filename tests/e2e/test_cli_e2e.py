"""The user verbs end to end: the installed `imagestreams` (and `kubectl imagestream`) against
the local control plane, a real registry with images pushed by crane, and the webhook.

The seed tutorial runs as a user would type it. Imports and image triggers are the
controller's work: the session's cluster runs `imagestreams controller`, and the tests wait
for its effects.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from clusterkit import push_image
from localcluster import Cluster, tool

from webhook.model import streams

if TYPE_CHECKING:
    from collections.abc import Callable

    from clusterkit import Namespace

pytestmark = pytest.mark.e2e

RESOLVE_NAMES = "alpha.image.policy.openshift.io/resolve-names"
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- images in the registry -----------------------------------------------------------------


class Registry:
    """Pushes small distinct images with crane; each push gives a new digest."""

    def __init__(self, cluster: Cluster, work: Path) -> None:
        self.cluster = cluster
        self.work = work
        self.repo = f"{cluster.registry}/e2e-cli/keycloak"
        self._count = 0

    def push(self, tag: str) -> str:
        """Push a fresh image as keycloak:`tag`; returns its digest."""
        self._count += 1
        content = f"{tag} build {self._count} {time.time()}\n"
        return push_image(f"{self.repo}:{tag}", content, self.work)

    def digest(self, tag: str) -> str:
        out = subprocess.run(
            [str(tool("crane")), "digest", f"{self.repo}:{tag}"],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def pinned(self, digest: str) -> str:
        return f"{self.repo}@{digest}"


@pytest.fixture(scope="module")
def registry(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry(cluster, tmp_path_factory.mktemp("cli-images"))


@pytest.fixture(scope="module")
def images(registry: Registry) -> dict[str, str]:
    """keycloak 20.0.2, 20.0.3 and 19.0 → their digests."""
    return {tag: registry.push(tag) for tag in ("20.0.2", "20.0.3", "19.0")}


# --- running the CLI ------------------------------------------------------------------------


class Cli:
    def __init__(self, cluster: Cluster, namespace: Namespace) -> None:
        self.cluster = cluster
        self.ns = namespace

    def __call__(
        self, *args: str, check: bool = True, program: str = "imagestreams"
    ) -> subprocess.CompletedProcess[str]:
        binary = REPO_ROOT / ".venv" / "bin" / program
        proc = subprocess.run(
            [str(binary), "-n", self.ns.name, *args],
            capture_output=True,
            text=True,
            env=self.cluster.env,
            timeout=180,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"imagestreams {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def stream(self, name: str) -> dict[str, Any]:
        out = self.ns.kubectl("get", "imagestream", name, "-o", "json").stdout
        return dict(json.loads(out))

    def workload_image(self, kind: str, name: str, container: int = 0) -> str:
        return self.ns.get(kind, name, f"{{.spec.template.spec.containers[{container}].image}}")


@pytest.fixture
def cli(cluster: Cluster, namespace: Namespace) -> Cli:
    return Cli(cluster, namespace)


# --- imports and triggers: the controller's work --------------------------------------------


def settle(cli: Cli, name: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until the controller has answered every spec tag of the stream; return it."""
    assert cli.cluster.controller_running, "the cluster's imagestreams controller is not running"
    cli.cluster.wait(
        f"the controller to answer every tag of {name}", lambda: _answered(cli, name), timeout
    )
    return cli.stream(name)


def _answered(cli: Cli, name: str) -> bool:
    stream = streams.parse_image_stream(cli.stream(name))
    for spec in stream.spec_tags:
        if spec.reference or spec.source is None or streams.alias_target(stream, spec):
            continue
        seen = streams.seen_generation(stream.history(spec.name))
        if seen is None or seen < streams.tag_generation(stream, spec):
            return False
    return True


def change(cli: Cli, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a verb that moves tags of stream `name` and let the import settle; the
    controller then fires the image triggers (tests wait for their effect)."""
    proc = cli(*args)
    settle(cli, name)
    return proc


# --- the tutorial ---------------------------------------------------------------------------


def current_and_history(describe_text: str, tag: str) -> list[str]:
    """The references listed under `tag` in describe output, current first."""
    block = re.search(
        rf"^{re.escape(tag)}( \(.*\))?\n(.*?)(?:\n\n(?=\S)|\Z)", describe_text, re.S | re.M
    )
    assert block, f"tag {tag} not in:\n{describe_text}"
    return re.findall(r"^  [ *] (\S+)$", block.group(2), re.M)


def test_seed_tutorial(cli: Cli, registry: Registry, images: dict[str, str]) -> None:
    repo = registry.repo
    out = cli("create", "is", "keycloak").stdout
    assert out == "imagestream.image.openshift.io/keycloak created\n"
    again = cli("create", "is", "keycloak", check=False)
    assert again.returncode == 1
    assert 'imagestreams.image.openshift.io "keycloak" already exists' in again.stderr

    out = cli("create", "istag", "keycloak:20.0", "--from-image", f"{repo}:20.0.2").stdout
    assert out == "imagestreamtag.image.openshift.io/keycloak:20.0 created\n"
    cli("create", "istag", "keycloak:19.0", "--from-image", f"{repo}:19.0")
    dup = cli("create", "istag", "keycloak:19.0", "--from-image", f"{repo}:19.0", check=False)
    assert dup.returncode == 1 and '"keycloak:19.0" already exists' in dup.stderr
    settle(cli, "keycloak")

    text = cli("describe", "is", "keycloak").stdout
    assert text.startswith("Name:\t\t\tkeycloak\nNamespace:\t\t" + cli.ns.name + "\n")
    assert "Image Lookup:\t\tlocal=false\n" in text
    assert current_and_history(text, "20.0") == [registry.pinned(images["20.0.2"])]
    assert current_and_history(text, "19.0") == [registry.pinned(images["19.0"])]
    assert text.index("\n20.0\n") < text.index("\n19.0\n")  # newest version first, as oc

    # Move the tag: the new digest is current and the old one stays in the history.
    out = change(cli, "keycloak", "tag", f"{repo}:20.0.3", "keycloak:20.0").stdout
    assert out == f"Tag keycloak:20.0 set to {repo}:20.0.3.\n"
    text = cli("describe", "is", "keycloak").stdout
    assert current_and_history(text, "20.0") == [
        registry.pinned(images["20.0.3"]),
        registry.pinned(images["20.0.2"]),
    ]

    # Image lookup: short names resolve to the pinned digest, until it is turned off.
    out = cli("set", "image-lookup", "keycloak").stdout
    assert out == "imagestream.image.openshift.io/keycloak image lookup updated\n"
    table = cli("set", "image-lookup").stdout.splitlines()
    assert table[0].split() == ["NAME", "LOCAL"]
    assert ["keycloak", "true"] in [row.split() for row in table[1:]]
    cli.ns.sync()
    cli.ns.kubectl("create", "deployment", "mykeycloak", "--image", "keycloak:20.0")
    assert cli.workload_image("deployment", "mykeycloak") == registry.pinned(images["20.0.3"])
    cli("set", "image-lookup", "keycloak", "--enabled=false")
    cli.ns.sync()
    cli.ns.kubectl("create", "deployment", "plain", "--image", "keycloak:20.0")
    assert cli.workload_image("deployment", "plain") == "keycloak:20.0"


def test_scheduled_tag_picks_up_a_repushed_image(
    cli: Cli, registry: Registry, images: dict[str, str]
) -> None:
    if not cli.cluster.controller_running:
        pytest.fail("scheduled imports need the controller: start it with the cluster")
    cli("create", "is", "keycloak")
    tag = f"sched-{cli.ns.name}"
    first = registry.push(tag)
    out = cli("tag", "--scheduled", f"{registry.repo}:{tag}", "keycloak:sched").stdout
    assert out == f"Tag keycloak:sched set to import {registry.repo}:{tag} periodically.\n"
    settle(cli, "keycloak")
    text = cli("describe", "is", "keycloak").stdout
    assert f"  updates automatically from registry {registry.repo}:{tag}\n" in text
    assert current_and_history(text, "sched") == [registry.pinned(first)]

    second = registry.push(tag)
    interval = _controller_scheduled_interval(cli.cluster)
    if interval is not None and interval <= 60:
        # The controller's own schedule re-imports it.
        cli.cluster.wait(
            "the scheduled re-import",
            lambda: (
                current_and_history(cli("describe", "is", "keycloak").stdout, "sched")[:1]
                == [registry.pinned(second)]
            ),
            interval * 2 + 30,
        )
    else:
        # The cluster's controller checks every 15 minutes: ask for the import now instead.
        out = cli("import-image", "keycloak:sched", "--timeout", "60").stdout
        assert out.startswith("imagestream.image.openshift.io/keycloak imported\n\n")
        assert registry.pinned(second) in out
    text = cli("describe", "is", "keycloak").stdout
    assert current_and_history(text, "sched") == [registry.pinned(second), registry.pinned(first)]


def _controller_scheduled_interval(cluster: Cluster) -> float | None:
    """The running controller's --scheduled-interval in seconds (None: default 15m, or no
    controller)."""
    if not cluster.controller_running:
        return None
    pid = (cluster.state_dir / "pids" / "controller.pid").read_text().strip()
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    for i, arg in enumerate(args):
        value = arg.partition("=")[2] if arg.startswith("--scheduled-interval=") else None
        if arg == "--scheduled-interval" and i + 1 < len(args):
            value = args[i + 1]
        if value:
            match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)?", value)
            if match:
                return float(match[1]) * (60 if match[2] == "m" else 1)
    return None


def test_import_image_reports_failures(cli: Cli, registry: Registry) -> None:
    if not cli.cluster.controller_running:
        pytest.fail("import-image needs the controller: start it with the cluster")
    cli("create", "istag", "keycloak:gone", "--from-image", f"{registry.repo}:does-not-exist")
    proc = cli("import-image", "keycloak:gone", "--timeout", "60", check=False)
    assert proc.returncode == 1
    assert re.search(r"error: keycloak:gone: Import failed \(\w+\): ", proc.stderr), proc.stderr
    assert "! error: Import failed" in proc.stdout


def test_tag_copies_aliases_and_deletes(
    cli: Cli, registry: Registry, images: dict[str, str]
) -> None:
    repo = registry.repo
    cli("create", "istag", "keycloak:20.0", "--from-image", f"{repo}:20.0.2")
    not_yet = cli("tag", "keycloak:20.0", "copy:one", check=False)
    if not cli.cluster.controller_running:  # nothing imports it: the copy must refuse
        assert not_yet.returncode == 1 and "not imported yet" in not_yet.stderr
    settle(cli, "keycloak")

    # Copy: the current image, pinned as an ImageStreamImage, into a new stream.
    out = cli("tag", "keycloak:20.0", "copy:one").stdout
    assert out == f"Tag copy:one set to keycloak@{images['20.0.2']}.\n"
    copy = cli.stream("copy")
    assert copy["spec"]["tags"][0]["from"] == {
        "kind": "ImageStreamImage",
        "name": f"keycloak@{images['20.0.2']}",
    }
    # Alias: follows the tag as it moves.
    out = cli("tag", "--alias", "keycloak:20.0", "keycloak:latest").stdout
    assert out == "Tag keycloak:latest set up to track keycloak:20.0.\n"
    text = cli("describe", "is", "keycloak").stdout
    assert "\n20.0 (latest)\n" in text
    across = cli("tag", "--alias", "keycloak:20.0", "copy:latest", check=False)
    assert (
        across.returncode == 1
        and "cannot set alias across different Image Streams" in across.stderr
    )

    # Delete: spec and history go.
    assert cli("tag", "-d", "copy:one").stdout == f"Deleted tag {cli.ns.name}/copy:one.\n"
    copy = cli.stream("copy")
    assert not copy["spec"].get("tags") and not (copy.get("status") or {}).get("tags")
    gone = cli("tag", "-d", "copy:one", check=False)
    assert gone.returncode == 1 and '"copy:one" not found' in gone.stderr


def test_errors_name_the_object_and_exit_1(cli: Cli, cluster: Cluster, tmp_path: Path) -> None:
    missing = cli("describe", "is", "nope", check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith('error: imagestreams.image.openshift.io "nope" not found')
    no_tag = cli("rollback", "nope:1", check=False)
    assert no_tag.returncode == 1 and '"nope" not found' in no_tag.stderr
    cli("create", "is", "empty")
    rollback = cli("rollback", "empty:1", check=False)
    assert rollback.returncode == 1 and '"empty:1" not found' in rollback.stderr

    # A user without any RBAC is told so, with the server's reason.
    cli.ns.kubectl("create", "serviceaccount", "nobody")
    token = cli.ns.kubectl("create", "token", "nobody").stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "nobody", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "nobody"
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    proc = cli("--kubeconfig", str(kubeconfig), "describe", "is", "empty", check=False)
    assert proc.returncode == 1
    assert "forbidden" in proc.stderr and "ask a cluster administrator" in proc.stderr


def test_kubectl_plugin(cli: Cli, cluster: Cluster) -> None:
    cli("create", "is", "plugin", program="kubectl-imagestream")
    env = dict(cluster.env)
    env["PATH"] = f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(
        [str(tool("kubectl")), "imagestream", "-n", cli.ns.name, "describe", "is", "plugin"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert proc.stdout.startswith("Name:\t\t\tplugin\n")


def test_set_image_lookup_on_a_workload(cli: Cli) -> None:
    cli.ns.kubectl("create", "deployment", "web", "--image", "example.com/web:1")
    out = cli("set", "image-lookup", "deploy/web").stdout
    assert out == "deployment.apps/web image lookup updated\n"
    annotations = cli.ns.get("deployment", "web", "{.spec.template.metadata.annotations}")
    assert json.loads(annotations) == {RESOLVE_NAMES: "*"}
    listed = cli("set", "image-lookup", "deploy/web", "--list").stdout.splitlines()
    assert listed[1].split() == ["deployments/web", "true"]
    cli("set", "image-lookup", "deploy/web", "--enabled=false")
    assert cli.ns.get("deployment", "web", "{.spec.template.metadata.annotations}") in ("", "{}")


# --- triggers and rollback ------------------------------------------------------------------


@pytest.fixture
def triggered(cli: Cli, registry: Registry, images: dict[str, str]) -> Cli:
    """keycloak:20.0 (20.0.2) and keycloak:19.0, and Deployment web following keycloak:20.0."""
    repo = registry.repo
    cli("create", "istag", "keycloak:20.0", "--from-image", f"{repo}:20.0.2")
    cli("create", "istag", "keycloak:19.0", "--from-image", f"{repo}:19.0")
    settle(cli, "keycloak")
    cli.ns.kubectl("create", "deployment", "web", "--image", f"{repo}:19.0")
    return cli


def test_triggers_roll_forward_and_rollback_rolls_back(
    triggered: Cli, registry: Registry, images: dict[str, str]
) -> None:
    cli = triggered
    empty = cli("set", "triggers", "deploy/web").stdout.splitlines()
    assert [r.split() for r in empty] == [
        ["NAME", "TYPE", "VALUE", "AUTO"],
        ["deployments/web", "config", "true"],
    ]
    set_out = cli(
        "set", "triggers", "deploy/web", "--from-image", "keycloak:20.0", "-c", "keycloak"
    )
    assert set_out.stdout == "deployment.apps/web triggers updated\n"
    listed = [r.split() for r in cli("set", "triggers", "deploy/web").stdout.splitlines()]
    assert listed[2] == ["deployments/web", "image", "keycloak:20.0", "(keycloak)", "true"]
    # Setting the trigger applies it at once, as OpenShift does.
    assert cli.workload_image("deployment", "web") == registry.pinned(images["20.0.2"])

    # The tag moves: the Deployment rolls to the new digest.
    change(cli, "keycloak", "tag", f"{registry.repo}:20.0.3", "keycloak:20.0")
    cli.cluster.wait(
        "the trigger to roll web forward",
        lambda: cli.workload_image("deployment", "web") == registry.pinned(images["20.0.3"]),
    )

    # Rollback: the tag goes back, the history records it, the Deployment follows.
    out = change(cli, "keycloak", "rollback", "keycloak:20.0").stdout
    assert out == (
        f"Rolled back keycloak:20.0 from {registry.pinned(images['20.0.3'])}"
        f" to {registry.pinned(images['20.0.2'])}\n"
    )
    cli.cluster.wait(
        "the trigger to roll web back",
        lambda: cli.workload_image("deployment", "web") == registry.pinned(images["20.0.2"]),
    )
    text = cli("describe", "is", "keycloak").stdout
    assert current_and_history(text, "20.0") == [
        registry.pinned(images["20.0.2"]),
        registry.pinned(images["20.0.3"]),
        registry.pinned(images["20.0.2"]),
    ]
    assert f"  tagged from keycloak@{images['20.0.2']}\n" in text


def test_rollout_undo_holds_until_the_tag_moves(
    triggered: Cli, registry: Registry, images: dict[str, str]
) -> None:
    cli = triggered
    repo = registry.repo
    cli("set", "triggers", "deploy/web", "--from-image", "keycloak:20.0", "-c", "keycloak")
    # A probe following another tag of the same stream: once it has rolled, the trigger pass
    # for that stream change is over (workloads are visited in name order, web first).
    probe_tag = f"probe-{cli.ns.name}"
    registry.push(probe_tag)
    cli("create", "istag", "keycloak:probe", "--from-image", f"{repo}:{probe_tag}")
    settle(cli, "keycloak")
    cli.ns.kubectl("create", "deployment", "zz-probe", "--image", f"{repo}:20.0.2")
    cli("set", "triggers", "deploy/zz-probe", "--from-image", "keycloak:probe", "-c", "keycloak")

    change(cli, "keycloak", "tag", f"{repo}:20.0.3", "keycloak:20.0")
    cli.cluster.wait(
        "web to roll to 20.0.3",
        lambda: cli.workload_image("deployment", "web") == registry.pinned(images["20.0.3"]),
    )
    cli.ns.kubectl("rollout", "undo", "deployment/web")
    cli.cluster.wait(
        "rollout undo",
        lambda: cli.workload_image("deployment", "web") == registry.pinned(images["20.0.2"]),
    )

    # Another tag of the same stream moves: web keeps the image it was rolled back to.
    newer = registry.push(probe_tag)
    change(cli, "keycloak", "tag", f"{repo}:{probe_tag}", "keycloak:probe")
    cli.cluster.wait(
        "the probe to roll",
        lambda: cli.workload_image("deployment", "zz-probe") == registry.pinned(newer),
    )
    assert cli.workload_image("deployment", "web") == registry.pinned(images["20.0.2"])

    # Its own tag moves: web follows again.
    next_tag = f"next-{cli.ns.name}"
    following = registry.push(next_tag)
    change(cli, "keycloak", "tag", f"{repo}:{next_tag}", "keycloak:20.0")
    cli.cluster.wait(
        "web to follow its tag again",
        lambda: cli.workload_image("deployment", "web") == registry.pinned(following),
    )


def test_paused_trigger_and_removal(
    triggered: Cli, registry: Registry, images: dict[str, str]
) -> None:
    cli = triggered
    cli(
        "set",
        "triggers",
        "deploy/web",
        "--from-image",
        "keycloak:20.0",
        "-c",
        "keycloak",
        "--manual",
    )
    assert cli.workload_image("deployment", "web") == f"{registry.repo}:19.0"  # paused: not applied
    rows = [r.split() for r in cli("set", "triggers", "deploy/web").stdout.splitlines()]
    assert rows[2][-1] == "false"
    assert cli("set", "triggers", "deploy/web", "--auto").stdout == (
        "deployment.apps/web triggers updated\n"
    )
    assert cli.workload_image("deployment", "web") == registry.pinned(images["20.0.2"])
    cli("set", "triggers", "deploy/web", "--from-image", "keycloak:20.0", "--remove")
    annotations = cli.ns.get("deployment", "web", "{.metadata.annotations}")
    assert "image.openshift.io/triggers" not in annotations
    bad = cli(
        "set", "triggers", "deploy/web", "--from-image", "keycloak:20.0", "-c", "nope", check=False
    )
    assert bad.returncode == 1 and "not all container names exist: nope" in bad.stderr


def test_invalid_trigger_annotation_becomes_an_event(
    triggered: Cli, registry: Registry, cluster: Cluster
) -> None:
    cli = triggered
    cli.ns.kubectl("annotate", "deployment", "web", 'image.openshift.io/triggers=[{"from":{}}]')
    change(cli, "keycloak", "tag", f"{registry.repo}:20.0.3", "keycloak:20.0")
    cli.cluster.wait(
        "a warning event on web",
        lambda: (
            "InvalidImageTrigger"
            in cli.ns.kubectl("get", "events", "--field-selector", "involvedObject.name=web").stdout
        ),
    )


def test_another_namespace(
    new_namespace: Callable[[str], Namespace], cli: Cli, registry: Registry, images: dict[str, str]
) -> None:
    other = new_namespace("cli-other")
    cli("create", "istag", "keycloak:20.0", "--from-image", f"{registry.repo}:20.0.2")
    settle(cli, "keycloak")
    out = cli("tag", "keycloak:20.0", f"{other.name}/keycloak:copied").stdout
    assert out == f"Tag {other.name}/keycloak:copied set to keycloak@{images['20.0.2']}.\n"
    obj = json.loads(other.kubectl("get", "imagestream", "keycloak", "-o", "json").stdout)
    assert obj["spec"]["tags"][0]["from"] == {
        "kind": "ImageStreamImage",
        "name": f"keycloak@{images['20.0.2']}",
        "namespace": cli.ns.name,
    }
