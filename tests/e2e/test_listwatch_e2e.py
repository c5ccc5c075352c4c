"""The webhook's thin list/watch client (webhook/kube/listwatch.py) against the real API
server: it lists in pages, watches, resumes a watch the server ended, authenticates with a
client certificate and with a service account's token (inline and from a file); and
`serve` watch-fed through it never imports the kubernetes client, unless the kubeconfig
needs what only that client does."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from webhook.kube.connect import GROUP, PLURAL, VERSION, rest_config
from webhook.kube.listwatch import ApiError, ListWatch, RestClient, collection_path
from webhook.kube.watch import Watcher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from sinks import NameSink as Names

pytestmark = pytest.mark.e2e

STREAMS, PAGE = 7, 3


class Recording:
    """A ListWatch that records its requests."""

    def __init__(self, inner: ListWatch) -> None:
        self.inner = inner
        self.pages: list[str | None] = []
        self.watches: list[str] = []

    def list_page(self, limit: int, token: str | None) -> bytes:
        self.pages.append(token)
        return self.inner.list_page(limit, token)

    def watch(self, resource_version: str, timeout: int) -> Iterator[tuple[str, dict[str, Any]]]:
        self.watches.append(resource_version)
        return self.inner.watch(resource_version, timeout)

    def readyz(self, timeout: float) -> int | None:
        return self.inner.readyz(timeout)


def stream(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageStream",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"lookupPolicy": {"local": True}},
    }


def wait_for(what: str, check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def namespaced(ns: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"


def test_pages_watch_and_resume_with_a_client_certificate(namespace: Any) -> None:
    config = rest_config(str(namespace.cluster.kubeconfig))
    assert config.cert_data and config.key_data and config.token is None  # the admin's cert
    namespace.cluster.apply([stream(namespace.name, f"s{i}") for i in range(STREAMS)])
    source = Recording(RestClient(config).resource(namespaced(namespace.name)))
    sink = Names()
    # The server ends each watch after 1 s: the loop must resume from its version.
    watcher = Watcher(sink, source, page_size=PAGE, watch_timeout=1).start()
    try:
        assert sink.listed.wait(20), "the list never completed"
        assert sink.names == {f"s{i}" for i in range(STREAMS)}
        assert len(source.pages) == 3 and source.pages[0] is None and all(source.pages[1:])
        wait_for("a second watch", lambda: len(source.watches) >= 3)
        namespace.cluster.apply(stream(namespace.name, "late"))
        wait_for("the watch to see a new stream", lambda: "late" in sink.names)
        namespace.kubectl("delete", "imagestream", "s0")
        wait_for("the watch to see a deletion", lambda: "s0" not in sink.names)
        assert sink.lists == 1, "a resumed watch relisted"
    finally:
        watcher.stop()


def service_account_token(namespace: Any) -> str:
    """A token of a service account that may list and watch this namespace's streams."""
    ns = namespace.name
    namespace.kubectl("create", "serviceaccount", "reader")
    namespace.kubectl(
        "create", "role", "read-streams", "--verb=list,watch", f"--resource={PLURAL}.{GROUP}"
    )
    namespace.kubectl(
        "create", "rolebinding", "read-streams", "--role=read-streams",
        f"--serviceaccount={ns}:reader",
    )  # fmt: skip
    return namespace.kubectl("create", "token", "reader").stdout.strip()


def token_kubeconfig(admin: Path, path: Path, user: dict[str, str]) -> Path:
    """The admin kubeconfig's cluster, with `user` instead of its client certificate."""
    doc = yaml.safe_load(admin.read_text())
    doc["users"] = [{"name": "reader", "user": user}]
    doc["contexts"][0]["context"]["user"] = "reader"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("how", ["token", "tokenFile"])
def test_a_service_account_token(namespace: Any, tmp_path: Path, how: str) -> None:
    token = service_account_token(namespace)
    (tmp_path / "token").write_text(token)
    user = {"token": token} if how == "token" else {"tokenFile": "token"}  # relative to it
    kubeconfig = token_kubeconfig(namespace.cluster.kubeconfig, tmp_path / "config", user)
    config = rest_config(str(kubeconfig))
    assert config.cert_data is None and (config.token or config.token_file)
    client = RestClient(config)
    namespace.cluster.apply(stream(namespace.name, "visible"))
    sink = Names()
    watcher = Watcher(sink, client.resource(namespaced(namespace.name))).start()
    try:
        assert sink.listed.wait(20) and sink.names == {"visible"}
        namespace.cluster.apply(stream(namespace.name, "later"))
        wait_for("the watch to see a new stream", lambda: "later" in sink.names)
    finally:
        watcher.stop()
    # The token is the service account's, not the admin's: all namespaces are forbidden.
    with pytest.raises(ApiError) as forbidden:
        client.resource(collection_path(GROUP, VERSION, PLURAL)).list_page(1, None)
    assert forbidden.value.status == 403 and "system:serviceaccount" in forbidden.value.body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_imports(cluster: Any, kubeconfig: Path, work: Path) -> tuple[set[str], str]:
    """Run `serve` watch-fed (one worker) until /readyz says its indexes are loaded; the
    modules its master and worker imported (PYTHONPROFILEIMPORTTIME), and its log."""
    certs = work / "certs"
    subprocess.run(
        [str(cluster.imagestreams_bin), "certs", "--out-dir", str(certs), "--ip", "127.0.0.1"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = work / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(cluster.imagestreams_bin), "serve", "--bind", f"127.0.0.1:{port}",
                "--certfile", str(certs / "tls.crt"), "--keyfile", str(certs / "tls.key"),
                "--kubeconfig", str(kubeconfig), "--workers", "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                ready = requests.get(
                    f"https://127.0.0.1:{port}/readyz", verify=str(certs / "ca.crt"), timeout=2
                )
                if ready.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    text = log.read_text()
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("import time:")
    }
    return modules, text


def is_client(module: str) -> bool:
    return module == "kubernetes" or module.startswith("kubernetes.")


def test_serve_watch_fed_never_imports_the_kubernetes_client(cluster: Any, tmp_path: Path) -> None:
    modules, log = serve_imports(cluster, cluster.kubeconfig, tmp_path)
    # The listing works (importlib.import_module's own module gets no line; what it
    # imports does): urllib3 in the master, validation in the worker.
    assert "urllib3.poolmanager" in modules and "webhook.serving.validation" in modules
    assert not [m for m in modules if is_client(m)], "the kubernetes client was imported"
    assert "watching through the kubernetes client" not in log


def test_serve_falls_back_to_the_kubernetes_client_and_says_why(
    cluster: Any, tmp_path: Path
) -> None:
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    # The client certificate still authenticates; the password is what the thin client
    # does not do (the API server ignores a Basic header).
    doc["users"][0]["user"].update(username="admin", password="unused")
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump(doc))
    modules, log = serve_imports(cluster, kubeconfig, tmp_path)
    assert [m for m in modules if is_client(m)], "the kubernetes client was not imported"
    assert "watching through the kubernetes client: the kubeconfig's user uses password" in log


def test_the_token_is_never_in_a_repr(namespace: Any, tmp_path: Path) -> None:
    token = base64.b64encode(b"not-a-real-token").decode()
    kubeconfig = token_kubeconfig(namespace.cluster.kubeconfig, tmp_path / "c", {"token": token})
    client = RestClient(rest_config(str(kubeconfig)))
    assert token not in repr(client) and token not in repr(client.resource("/api/v1/namespaces"))
