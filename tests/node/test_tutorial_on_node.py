"""The tutorial with pods running: the chart's webhook (behind its Service) pins short names,
the chart's controller imports, and the kubelet starts containers from exactly the digests
that were written."""

from __future__ import annotations

from collections.abc import Callable

from localcluster import Cluster
from nodekit import Namespace, wait_until


def current_image(ns: Namespace, stream: str, tag: str) -> str:
    return ns.get("imagestream", stream, f'{{.status.tags[?(@.tag=="{tag}")].items[0].image}}')


def wait_for_import(ns: Namespace, stream: str, tag: str, digest: str) -> None:
    wait_until(
        f"the controller to import {stream}:{tag} as {digest}",
        lambda: current_image(ns, stream, tag) == digest,
    )
    # The webhook's index is fed by its own watch, a moment behind the API server.
    wait_until(
        f"the webhook to resolve {stream}:{tag} to {digest}",
        lambda: ns.dry_run_pod(f"{stream}:{tag}").endswith(f"@{digest}"),
        timeout=60,
    )


def test_short_names_run_as_pinned_digests(
    cluster: Cluster, namespace: Namespace, push_app: Callable[[str, str], str]
) -> None:
    repository = f"{cluster.registry}/{namespace.name}/keycloak"
    d20 = push_app(f"{namespace.name}/keycloak:20.0", "20.0.2")
    namespace.imagestreams("create", "istag", "keycloak:20.0", "--from-image", f"{repository}:20.0")
    namespace.imagestreams("set", "image-lookup", "keycloak")
    wait_for_import(namespace, "keycloak", "20.0", d20)

    namespace.kubectl("create", "deployment", "mykeycloak", "--image", "keycloak:20.0")
    assert namespace.get(
        "deployment", "mykeycloak", "{.spec.template.spec.containers[0].image}"
    ) == (f"{repository}@{d20}")
    namespace.wait_rollout("mykeycloak")
    # What the kubelet ran, as containerd resolved it: the stream's digest.
    assert namespace.image_digests("app=mykeycloak") == {d20}

    # The tag moves; a new deployment runs the new digest, the first keeps its own.
    d20b = push_app(f"{namespace.name}/keycloak:20.0", "20.0.3")
    namespace.imagestreams("import-image", "keycloak:20.0")
    wait_for_import(namespace, "keycloak", "20.0", d20b)
    namespace.kubectl("create", "deployment", "mykeycloak2", "--image", "keycloak:20.0")
    namespace.wait_rollout("mykeycloak2")
    assert namespace.image_ids("app=mykeycloak2") == {f"{repository}@{d20b}"}
    assert namespace.image_digests("app=mykeycloak") == {d20}


def test_rollback_rolls_triggered_pods_back(
    cluster: Cluster, namespace: Namespace, push_app: Callable[[str, str], str]
) -> None:
    repository = f"{cluster.registry}/{namespace.name}/app"
    first = push_app(f"{namespace.name}/app:1", "1.0.0")
    namespace.imagestreams("create", "istag", "app:1", "--from-image", f"{repository}:1")
    namespace.imagestreams("set", "image-lookup", "app")
    wait_for_import(namespace, "app", "1", first)
    namespace.kubectl("create", "deployment", "web", "--image", "app:1")
    namespace.imagestreams("set", "triggers", "deploy/web", "--from-image", "app:1", "-c", "app")
    namespace.wait_rollout("web")

    second = push_app(f"{namespace.name}/app:1", "1.0.1")
    namespace.imagestreams("import-image", "app:1")
    wait_until(
        "the trigger to roll web forward",
        lambda: namespace.image_digests("app=web") == {second},
        timeout=180,
    )

    namespace.imagestreams("rollback", "app:1")
    wait_until(
        "the rollback to roll web's pods back",
        lambda: namespace.image_digests("app=web") == {first},
        timeout=180,
    )
    namespace.wait_rollout("web")
