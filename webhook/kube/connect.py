"""Connecting to the API server: kubeconfig, context and namespace, as kubectl does."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# The API's names, defined in the model; the edge modules read them from here too.
from webhook.model.streams import GROUP as GROUP
from webhook.model.streams import PLURAL as PLURAL
from webhook.model.streams import VERSION as VERSION

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Connection:
    api_client: Any  # kubernetes.client.ApiClient
    namespace: str  # the default namespace: kubeconfig context's, else the pod's, else default


def connect(
    kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
) -> Connection:
    """An API client from --kubeconfig, $KUBECONFIG, ~/.kube/config, or in-cluster."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if kubeconfig or os.environ.get("KUBECONFIG") or os.path.exists(path):
        api_client = config.new_client_from_config(config_file=path, context=context)
        _, active = config.list_kube_config_contexts(config_file=path)
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=path)
            active = next((c for c in contexts if c["name"] == context), active)
        default = (active or {}).get("context", {}).get("namespace") or "default"
    else:
        config.load_incluster_config()
        api_client = client.ApiClient()
        default = _in_cluster_namespace()
    return Connection(api_client=api_client, namespace=namespace or default)


def custom_objects(connection: Connection) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(connection.api_client)


def _in_cluster_namespace() -> str:
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"
