"""Connecting to the API server: kubeconfig, context and namespace, as kubectl does."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from webhook.kube.kubeconfig import RestConfig, Unsupported, from_kubeconfig, in_cluster, merge

# The API's names, defined in the model; the edge modules read them from here too.
from webhook.model.streams import GROUP as GROUP
from webhook.model.streams import PLURAL as PLURAL
from webhook.model.streams import VERSION as VERSION

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Connection:
    api_client: Any  # kubernetes.client.ApiClient
    namespace: str  # the default namespace: kubeconfig context's, else the pod's, else default


class ClusterConfigError(Exception):
    """No usable cluster configuration; the message says where we looked and what to do."""


NO_CONFIGURATION = (
    "no cluster configuration: no --kubeconfig, $KUBECONFIG is not set, {default} does not"
    " exist, and this is not a pod (KUBERNETES_SERVICE_HOST is not set); point --kubeconfig"
    " or $KUBECONFIG at a kubeconfig file"
)


def connect(
    kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
) -> Connection:
    """An API client from --kubeconfig, $KUBECONFIG, ~/.kube/config, or in-cluster.

    Raises ClusterConfigError when none of them gives one."""
    from kubernetes import config

    path = kubeconfig_path(kubeconfig)
    if path is not None:
        try:
            return _from_kubeconfig(path, context, namespace)
        except config.ConfigException as err:
            raise ClusterConfigError(f"kubeconfig {path}: {err}") from None
    try:
        return _in_cluster(namespace)
    except config.ConfigException as err:
        raise ClusterConfigError(f"in-cluster configuration: {err}") from None


def kubeconfig_path(kubeconfig: str | None) -> str | None:
    """The kubeconfig to read (a $KUBECONFIG-style list, perhaps), or None in a pod.

    Raises ClusterConfigError when there is neither."""
    default_path = os.path.expanduser("~/.kube/config")
    path = kubeconfig or os.environ.get("KUBECONFIG") or default_path
    if kubeconfig or os.environ.get("KUBECONFIG") or os.path.exists(default_path):
        if not _any_exists(path):
            raise ClusterConfigError(f"kubeconfig {path} does not exist")
        return path
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        # The client would say "Service host/port is not set", which names neither the
        # kubeconfig nor what to do.
        raise ClusterConfigError(NO_CONFIGURATION.format(default=default_path))
    return None


def rest_config(kubeconfig: str | None = None, context: str | None = None) -> RestConfig:
    """What the webhook's thin list/watch client (webhook.kube.listwatch) needs, found
    where `connect` looks. Raises Unsupported, with the reason, for a configuration only
    the kubernetes client handles (or that it should report the error of), and
    ClusterConfigError when there is none at all."""
    path = kubeconfig_path(kubeconfig)
    if path is None:
        config = in_cluster(os.environ)
        for file in (config.ca_file, config.token_file):
            if file and not os.path.isfile(file):
                raise Unsupported(f"{file} does not exist")
        return config
    import yaml

    try:
        documents = [_read_kubeconfig(p) for p in path.split(os.pathsep) if os.path.exists(p)]
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise Unsupported(f"kubeconfig {path}: {err}") from None
    return from_kubeconfig(merge(documents), context, os.environ)


def _read_kubeconfig(path: str) -> tuple[str, Any]:
    import yaml

    with open(path) as f:
        return os.path.dirname(os.path.abspath(path)), yaml.safe_load(f)


def _from_kubeconfig(path: str, context: str | None, namespace: str | None) -> Connection:
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=path, context=context)
    _, active = config.list_kube_config_contexts(config_file=path)
    if context:
        contexts, _ = config.list_kube_config_contexts(config_file=path)
        active = next((c for c in contexts if c["name"] == context), active)
    default = (active or {}).get("context", {}).get("namespace") or "default"
    return Connection(api_client=api_client, namespace=namespace or default)


def _in_cluster(namespace: str | None) -> Connection:
    from kubernetes import client, config

    config.load_incluster_config()
    return Connection(api_client=client.ApiClient(), namespace=namespace or _in_cluster_namespace())


def _any_exists(paths: str) -> bool:
    """Whether any file of a $KUBECONFIG-style list exists."""
    return any(os.path.exists(p) for p in paths.split(os.pathsep) if p)


def custom_objects(connection: Connection) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(connection.api_client)


def _in_cluster_namespace() -> str:
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


# What the webhook's workers use of the client (kube.watch, kube.policy_cache): the client
# imports an API class, and the hundreds of models its methods name, on first use.
WEBHOOK_CLIENT_CLASSES = ("ApiClient", "Configuration", "CustomObjectsApi", "CoreV1Api")


def import_client() -> None:
    """Import the kubernetes client and the API classes the webhook uses (~50 MiB of
    modules: CoreV1Api alone brings 254 models, 21 MiB) now: the webhook's master does, so
    that its workers share those pages instead of each importing them on first use."""
    import kubernetes.watch  # noqa: F401
    from kubernetes import client

    for name in WEBHOOK_CLIENT_CLASSES:
        getattr(client, name)


def thin_client(
    kubeconfig: str | None, context: str | None, *, say_why: bool, pool_size: int | None = None
) -> Any:
    """The thin client (kube.listwatch.RestClient), where `connect` looks, with room for
    `pool_size` requests at once (else the webhook's few); None when only the kubernetes
    client can connect (an exec plugin, an auth provider, ...: `rest_config` says why,
    logged here if say_why; the webhook's master says it once for all its workers)."""
    from webhook.kube.listwatch import POOL_SIZE, RestClient

    try:
        return RestClient(rest_config(kubeconfig, context), pool_size=pool_size or POOL_SIZE)
    except Unsupported as err:
        if say_why:
            log.info("watching and writing through the kubernetes client: %s", err)
        return None
