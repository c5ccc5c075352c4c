"""What `serve` imports in gunicorn's master before the fork, for its workers to share, when
a kubeconfig needs the kubernetes client (an exec plugin, a password, a proxy: otherwise the
webhook watches through kube/listwatch.py and imports no client at all): the API classes the
webhook uses, which the client loads lazily (CoreV1Api and its models alone are 21 MiB a
process)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from webhook.kube.connect import import_client
import_client()
print("kubernetes.client.api.core_v1_api" in sys.modules,
      "kubernetes.client.api.custom_objects_api" in sys.modules,
      "kubernetes.watch" in sys.modules)
"""


def test_import_client_loads_the_api_classes_the_webhook_uses() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["True", "True", "True"]
