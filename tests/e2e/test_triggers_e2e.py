"""Image triggers on new and edited workloads, on the local control plane with the session's
`imagestreams controller` (issue 14, points 5 and 7): a Deployment created with a placeholder
image, an annotation added later, a rollout undo that holds, a bad entry next to a good one,
and a trigger that follows a stream in another namespace.

Tags move only through the controller's own imports (never a hand-written status): that is
where it learns a tag moved.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from clusterkit import push_image
from localcluster import Cluster

from webhook.model.triggers import TRIGGERS_ANNOTATION, Trigger, field_path_for, triggers_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from clusterkit import Namespace

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = "registry.example/placeholder:0"
WEB = field_path_for("Deployment", "web")


class Images:
    """Pushes small distinct images into the cluster's registry; each push a new digest."""

    def __init__(self, cluster: Cluster, work: Path) -> None:
        self.repo = f"{cluster.registry}/e2e-triggers/app"
        self.work = work
        self._count = 0

    def push(self, tag: str) -> str:
        """Push a fresh image as app:`tag`; its pinned reference."""
        self._count += 1
        content = f"{tag} build {self._count} {time.time()}\n"
        return f"{self.repo}@{push_image(f'{self.repo}:{tag}', content, self.work)}"


@pytest.fixture(scope="module")
def images(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Images:
    return Images(cluster, tmp_path_factory.mktemp("trigger-images"))


class Tags:
    """Moves tags of one namespace's streams as a user would, and waits for the import."""

    def __init__(self, cluster: Cluster, ns: Namespace, images: Images) -> None:
        self.cluster = cluster
        self.ns = ns
        self.images = images

    def point(self, stream_tag: str) -> str:
        """Push a new image and point `stream:tag` at it; wait until the controller has
        imported it (the tag moved). Returns the pinned reference a trigger writes."""
        source = f"{self.ns.name}-{stream_tag.replace(':', '-')}"
        pinned = self.images.push(source)
        assert self.cluster.controller_running, "the session's imagestreams controller is down"
        binary = REPO_ROOT / ".venv" / "bin" / "imagestreams"
        subprocess.run(
            [str(binary), "-n", self.ns.name, "tag", f"{self.images.repo}:{source}", stream_tag],
            check=True,
            capture_output=True,
            env=self.cluster.env,
        )
        stream, _, tag = stream_tag.partition(":")
        self.cluster.wait(
            f"the controller to import {self.ns.name}/{stream_tag}",
            lambda: self.current(stream, tag) == pinned.partition("@")[2],
        )
        return pinned

    def current(self, stream: str, tag: str) -> str:
        proc = self.ns.kubectl("get", "imagestream", stream, "-o", "json", check=False)
        if proc.returncode != 0:
            return ""
        for history in json.loads(proc.stdout).get("status", {}).get("tags") or []:
            if history.get("tag") == tag and history.get("items"):
                return str(history["items"][0]["image"])
        return ""


@pytest.fixture
def tags(cluster: Cluster, namespace: Namespace, images: Images) -> Tags:
    return Tags(cluster, namespace, images)


def triggers_for(*triggers: Trigger) -> dict[str, str]:
    return {TRIGGERS_ANNOTATION: triggers_json(triggers)}


def deployment(
    name: str, annotations: dict[str, str] | None = None, containers: tuple[str, ...] = ("web",)
) -> dict[str, Any]:
    labels = {"app": name}
    metadata: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    pod = {"containers": [{"name": c, "image": PLACEHOLDER} for c in containers]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def image_of(ns: Namespace, name: str, container: int = 0) -> str:
    return ns.get("deployment", name, f"{{.spec.template.spec.containers[{container}].image}}")


def events(ns: Namespace, name: str, reason: str) -> list[str]:
    out = ns.kubectl(
        "get", "events", "-o", "json",
        "--field-selector", f"involvedObject.name={name},reason={reason}",
    ).stdout  # fmt: skip
    return [str(e.get("message", "")) for e in json.loads(out)["items"]]


def apply(ns: Namespace, obj: dict[str, Any]) -> None:
    ns.cluster.apply({**obj, "metadata": {**obj["metadata"], "namespace": ns.name}})


def test_created_with_a_placeholder_image_starts_right_away(
    namespace: Namespace, tags: Tags
) -> None:
    """(a) As on OpenShift: a Deployment applied with a placeholder image and a trigger gets
    the tag's image at once, without waiting for the tag to move."""
    pinned = tags.point("app:prod")
    apply(namespace, deployment("web", triggers_for(Trigger("app", "prod", WEB))))
    namespace.cluster.wait(
        "the trigger to apply on create", lambda: image_of(namespace, "web") == pinned
    )
    assert events(namespace, "web", "ImageTriggered") == [
        f"image trigger app:prod: container web set to {pinned}"
    ]


def test_adding_the_annotation_applies_it(namespace: Namespace, tags: Tags) -> None:
    """(b) `kubectl annotate` on an existing Deployment applies the new trigger."""
    pinned = tags.point("app:prod")
    apply(namespace, deployment("web"))
    value = triggers_for(Trigger("app", "prod", WEB))[TRIGGERS_ANNOTATION]
    namespace.kubectl("annotate", "deployment", "web", f"{TRIGGERS_ANNOTATION}={value}")
    namespace.cluster.wait(
        "the added trigger to apply", lambda: image_of(namespace, "web") == pinned
    )


def test_rollout_undo_holds_until_the_tag_moves(namespace: Namespace, tags: Tags) -> None:
    """(c) A manual rollback is kept: the watch sees the undo (same annotation, older image)
    and leaves it; the next move of the tag rolls the Deployment forward again."""
    cluster = namespace.cluster
    first = tags.point("app:prod")
    apply(namespace, deployment("web", triggers_for(Trigger("app", "prod", WEB))))
    cluster.wait("web to get the tag's image", lambda: image_of(namespace, "web") == first)
    second = tags.point("app:prod")
    cluster.wait("web to follow the move", lambda: image_of(namespace, "web") == second)
    namespace.kubectl("rollout", "undo", "deployment/web")
    cluster.wait("the rollback", lambda: image_of(namespace, "web") == first)

    # A barrier: a Deployment created after the undo. Its watch events come after the
    # undo's, and one worker applies them in order; once it has rolled, the undo has been
    # seen and left alone.
    apply(namespace, deployment("zz-barrier", triggers_for(Trigger("app", "prod", WEB))))
    cluster.wait("the barrier to roll", lambda: image_of(namespace, "zz-barrier") == second)
    assert image_of(namespace, "web") == first

    third = tags.point("app:prod")
    cluster.wait("web to follow its tag again", lambda: image_of(namespace, "web") == third)


def test_a_bad_entry_next_to_a_good_one(namespace: Namespace, tags: Tags) -> None:
    """(d) One malformed entry is skipped with a Warning Event naming it; the good one
    applies."""
    pinned = tags.point("app:prod")
    bad = {"from": {"kind": "DockerImage", "name": "app:prod"}, "fieldPath": "side"}
    good = Trigger("app", "prod", WEB).to_json()
    annotations = {TRIGGERS_ANNOTATION: json.dumps([bad, good])}
    apply(namespace, deployment("web", annotations, containers=("web", "side")))
    namespace.cluster.wait(
        "the good trigger to apply", lambda: image_of(namespace, "web") == pinned
    )
    assert image_of(namespace, "web", 1) == PLACEHOLDER
    namespace.cluster.wait(
        "a Warning Event naming the bad entry",
        lambda: (
            events(namespace, "web", "InvalidImageTrigger")
            == [
                f"{TRIGGERS_ANNOTATION}[0]: from.kind must be ImageStreamTag, not 'DockerImage';"
                " that trigger is skipped, the others apply"
            ]
        ),
    )


def test_a_stream_in_another_namespace(
    namespace: Namespace,
    new_namespace: Callable[[str], Namespace],
    images: Images,
) -> None:
    """(e) A trigger following a stream in another namespace applies on create and follows
    later moves of that tag, once the workload's namespace may read streams there; a
    namespace without that grant gets a Warning Event instead."""
    cluster = namespace.cluster
    ops = new_namespace("triggers-ops")
    ops_tags = Tags(cluster, ops, images)
    ops.kubectl(
        "create", "role", "stream-reader", "--verb=get",
        "--resource=imagestreams.image.openshift.io",
    )  # fmt: skip
    ops.kubectl(
        "create", "rolebinding", "stream-reader", "--role=stream-reader",
        f"--group=system:serviceaccounts:{namespace.name}",
    )  # fmt: skip
    first = ops_tags.point("base:1")
    follows_ops = triggers_for(Trigger("base", "1", WEB, ops.name))
    apply(namespace, deployment("web", follows_ops))
    cluster.wait("the trigger to apply on create", lambda: image_of(namespace, "web") == first)

    stranger = new_namespace("triggers-stranger")
    apply(stranger, deployment("web", follows_ops))
    cluster.wait(
        "a Warning Event on the workload without the grant",
        lambda: any(
            f"may not get imagestreams in namespace {ops.name}" in message
            for message in events(stranger, "web", "InvalidImageTrigger")
        ),
    )

    second = ops_tags.point("base:1")
    cluster.wait("web to follow the move", lambda: image_of(namespace, "web") == second)
    assert image_of(stranger, "web") == PLACEHOLDER
