"""Reference policy Local end to end: `imagestreams tag SRC DEST --reference-policy local`, the
controller mirroring the image into a "local" registry, and Deployments written with the
short name pinned to `<local registry>/<namespace>/<stream>@sha256:…`, still after the
upstream registry is gone.

Each test runs two CNCF Distribution registries of its own on loopback (plain HTTP): an
upstream that crane pushes into and that the test may stop (the cluster's registry serves
every other test, so it is never the one stopped), and the local one. Like
test_controller_e2e.py, the tests stop the cluster's controller, run one of their own (with
`--local-registry` and its own Lease), and start the cluster's again afterwards.

The chart's localRegistry renderings are also checked by the API server itself (a strict
server-side dry run in a namespace enforcing Pod Security `restricted`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from clusterkit import push_image, server_dry_run, stop_group
from localcluster import Cluster, free_ports, tool
from test_controller_e2e import Controllers, conditions, controllers, history

if TYPE_CHECKING:
    from clusterkit import Namespace

pytestmark = pytest.mark.e2e
__all__ = ["controllers"]  # the fixture (test_controller_e2e.py's), used here by name

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "imagestreams"


# --- registries owned by a test ---------------------------------------------------------------


class LoopbackRegistry:
    """A distribution registry on 127.0.0.1:`port` with its own storage, plain HTTP.

    `start()` may be called again after `stop()`: same port, same storage."""

    def __init__(self, work: Path, name: str, port: int) -> None:
        self.name, self.port = name, port
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = work / f"{name}.yaml"
        self.log = work / f"{name}.log"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "info"},
                    "storage": {
                        "filesystem": {"rootdirectory": str(work / f"{name}-storage")},
                        "delete": {"enabled": True},
                    },
                    "http": {"addr": self.host},
                }
            )
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LoopbackRegistry:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(tool("registry")), "serve", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                # Distribution v3 exports OpenTelemetry traces by default, to no collector.
                env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"registry {self.name} did not start:\n{self.log_text()}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_group(proc, 10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def _answers(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.host}/v2/", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False


class Registries:
    def __init__(self, work: Path) -> None:
        ports = free_ports(["upstream", "local"])
        self.upstream = LoopbackRegistry(work, "upstream", ports["upstream"])
        self.local = LoopbackRegistry(work, "local", ports["local"])

    def stop(self) -> None:
        self.upstream.stop()
        self.local.stop()


@pytest.fixture
def registries(tmp_path: Path) -> Iterator[Registries]:
    running = Registries(tmp_path)
    yield running
    running.stop()


def start_mirroring(controllers: Controllers, registries: Registries) -> None:
    """A controller that imports from the upstream and mirrors Local tags to the local one
    (both on loopback: allowed explicitly; both plain HTTP). No import rate limit: the
    session's earlier tests leave scheduled tags in other namespaces, and at the default 60
    imports a minute a pass over them delays this test's scheduled re-import past its wait."""
    upstream, local = registries.upstream.host, registries.local.host
    controllers.start(
        "--allow-registry", upstream, "--insecure-registry", upstream,
        "--allow-registry", local,
        "--local-registry", local, "--local-registry-insecure",
        "--import-rate", "0", "--registry-import-rate", "0",
    )  # fmt: skip


# --- the user's side: the CLI, kubectl, crane ------------------------------------------------


def imagestreams(ns: Namespace, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(ns.cluster.imagestreams_bin), "-n", ns.name, *args],
        capture_output=True,
        text=True,
        env=ns.cluster.env,
        timeout=120,
    )
    assert proc.returncode == 0, f"imagestreams {' '.join(args)}:\n{proc.stderr}"
    return proc


def crane(*args: str) -> str:
    proc = subprocess.run([str(tool("crane")), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"crane {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def mirrored(ns: Namespace, stream: str, tag: str) -> dict[str, Any] | None:
    return next((c for c in conditions(ns, stream, tag) if c.get("type") == "Mirrored"), None)


def create_deployment(ns: Namespace, name: str, image: str) -> tuple[str, str]:
    """`kubectl create deployment NAME --image IMAGE`: the image stored, and kubectl's stderr
    (admission warnings)."""
    proc = ns.kubectl("create", "deployment", name, "--image", image)
    stored = ns.get("deployment", name, "{.spec.template.spec.containers[0].image}")
    return stored, proc.stderr


def status_repository(ns: Namespace, stream: str) -> str:
    return ns.get("imagestream", stream, "{.status.dockerImageRepository}")


# --- the tests ---------------------------------------------------------------------------------


def test_local_tag_is_pinned_to_the_local_registry_and_outlives_the_upstream(
    namespace: Namespace, registries: Registries, controllers: Controllers, tmp_path: Path
) -> None:
    upstream = registries.upstream.start()
    local = registries.local.start()
    source = f"{upstream.host}/team/app"
    digest = push_image(f"{source}:1", "local e2e", tmp_path)
    start_mirroring(controllers, registries)

    # As the OpenShift tutorial: a Local tag and local lookup, scheduled so that the
    # controller keeps re-importing (and keeps failing once the upstream is gone).
    imagestreams(namespace, "tag", f"{source}:1", "app:1", "--reference-policy", "local",
                 "--scheduled")  # fmt: skip
    imagestreams(namespace, "set", "image-lookup", "app")
    local_repo = f"{local.host}/{namespace.name}/app"
    namespace.cluster.wait(
        "the import and the Mirrored condition",
        lambda: (
            history(namespace, "app", "1") == [digest]
            and (mirrored(namespace, "app", "1") or {}).get("status") == "True"
        ),
        timeout=90,
    )
    condition = mirrored(namespace, "app", "1")
    assert condition is not None and condition["message"] == f"mirrored to {local_repo}@{digest}"
    assert status_repository(namespace, "app") == local_repo
    namespace.sync()  # the webhook has seen the condition

    pinned, warnings = create_deployment(namespace, "x", "app:1")
    assert pinned == f"{local_repo}@{digest}"
    assert "reference policy Local" not in warnings
    # The copy is the upstream's image byte for byte (same digest), tagged like the source.
    assert crane("digest", "--insecure", f"{local_repo}:1").strip() == digest
    assert crane("manifest", "--insecure", pinned) == crane(
        "manifest", "--insecure", f"{source}@{digest}"
    )

    # The upstream goes away: scheduled re-imports fail, resolution stays local, and the
    # image can still be pulled whole (every blob) from the local registry.
    upstream.stop()
    namespace.cluster.wait(
        "a failed re-import from the stopped upstream",
        lambda: any(
            c.get("type") == "ImportSuccess" and c.get("status") == "False"
            for c in conditions(namespace, "app", "1")
        ),
        timeout=60,
    )
    assert (mirrored(namespace, "app", "1") or {}).get("status") == "True"
    namespace.sync()
    again, _ = create_deployment(namespace, "y", "app:1")
    assert again == f"{local_repo}@{digest}"
    assert namespace.dry_run_pod("app:1") == again
    pulled = tmp_path / "pulled.tar"
    crane("pull", "--insecure", again, str(pulled))
    assert pulled.stat().st_size > 0


def test_until_the_copy_is_complete_the_source_is_used_with_a_warning(
    namespace: Namespace, registries: Registries, controllers: Controllers, tmp_path: Path
) -> None:
    """The local registry is down at first: the tag imports, the copy fails (Mirrored=False)
    and admission resolves to the source with a warning; once the registry answers, the
    retried copy completes and new objects are pinned to the local registry."""
    upstream = registries.upstream.start()
    local = registries.local  # not started yet
    source = f"{upstream.host}/team/late"
    digest = push_image(f"{source}:1", "late mirror", tmp_path)
    start_mirroring(controllers, registries)
    imagestreams(namespace, "tag", f"{source}:1", "late:1", "--reference-policy", "local")
    imagestreams(namespace, "set", "image-lookup", "late")
    namespace.cluster.wait(
        "the import and a failed copy",
        lambda: (
            history(namespace, "late", "1") == [digest]
            and (mirrored(namespace, "late", "1") or {}).get("status") == "False"
        ),
        timeout=90,
    )
    namespace.sync()
    early, warnings = create_deployment(namespace, "early", "late:1")
    assert early == f"{source}@{digest}"
    assert "reference policy Local" in warnings and "not complete yet" in warnings

    local.start()
    local_repo = f"{local.host}/{namespace.name}/late"
    namespace.cluster.wait(
        "the retried copy",
        lambda: (mirrored(namespace, "late", "1") or {}).get("status") == "True",
        timeout=120,
    )
    namespace.sync()
    late, warnings = create_deployment(namespace, "late", "late:1")
    assert late == f"{local_repo}@{digest}"
    assert "reference policy Local" not in warnings
    # Objects admitted earlier keep what they were given (admission pins once).
    assert namespace.get("deployment", "early", "{.spec.template.spec.containers[0].image}") == (
        early
    )


# --- the chart's renderings, as the API server sees them -----------------------------------

CHART_NS = "imagestreams-local-e2e"
FOREIGN_GROUPS = ("cert-manager.io/",)
CHART_SCENARIOS: dict[str, dict[str, Any]] = {
    "in-chart": {"localRegistry": {"enabled": True}},
    "in-chart-everything": {
        "networkPolicy": {"enabled": True, "registryFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
        "localRegistry": {
            "enabled": True,
            "host": "registry.example.internal:5000",
            "service": {"type": "NodePort", "nodePort": 30500},
            "persistence": {"storageClass": "-", "keepOnUninstall": False},
        },
    },
    "cert-manager": {"certManager": {"enabled": True}, "localRegistry": {"enabled": True}},
    "external": {
        "localRegistry": {
            "enabled": True,
            "external": {"host": "harbor.example", "secret": "push", "caSecret": "ca"},
        }
    },
}


def render_chart(cluster: Cluster, values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = subprocess.run(
        [str(tool("helm")), "template", "lr", str(CHART), "-n", CHART_NS,
         "--kube-version", "1.34.0", "-f", str(path)],
        capture_output=True, text=True, env=cluster.env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("scenario", list(CHART_SCENARIOS))
def test_chart_local_registry_passes_server_side_dry_run(
    cluster: Cluster, scenario: str, tmp_path: Path
) -> None:
    """Every object of each localRegistry rendering is valid for Kubernetes 1.34 (strict:
    unknown fields fail), and its pods are admitted under Pod Security `restricted`."""
    cluster.ensure_namespace(CHART_NS)
    cluster.kubectl(
        "label", "namespace", CHART_NS, "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    docs = render_chart(cluster, CHART_SCENARIOS[scenario], tmp_path)
    ours = [d for d in docs if not d["apiVersion"].startswith(FOREIGN_GROUPS)]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in ours}
    in_chart = scenario != "external"
    assert (("Deployment", "lr-imagestreams-registry") in kinds) == in_chart
    dry = server_dry_run(cluster, ours)
    assert "PodSecurity" not in dry.stderr, dry.stderr


def test_certs_sync_issues_the_registry_certificate(cluster: Cluster, tmp_path: Path) -> None:
    """certs-sync, run with the chart's arguments, writes one certificate that covers the
    webhook's and the registry's Service names, issued by the CA the controller and the
    nodes are given for the registry."""
    from cryptography import x509

    cluster.ensure_namespace(CHART_NS)
    docs = render_chart(cluster, {"localRegistry": {"enabled": True}}, tmp_path)
    job = next(d for d in docs if d["kind"] == "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == "--once"
    proc = subprocess.run(
        [str(cluster.imagestreams_bin), *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, env=cluster.env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    secret = json.loads(
        cluster.kubectl("-n", CHART_NS, "get", "secret", "lr-imagestreams-webhook-tls",
                        "-o", "json").stdout
    )  # fmt: skip
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    registry = f"lr-imagestreams-registry.{CHART_NS}.svc"
    assert {registry, f"{registry}.cluster.local", f"lr-imagestreams-webhook.{CHART_NS}.svc"} <= dns
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(data["ca.crt"]))
    # The controller's --local-registry names a host the certificate covers.
    controller = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("controller")
    )
    local = next(
        a.split("=", 1)[1]
        for a in controller["spec"]["template"]["spec"]["containers"][0]["args"]
        if a.startswith("--local-registry=")
    )
    assert local == f"{registry}:5000"


def test_registry_wrapper_restarts_on_a_renewed_certificate(tmp_path: Path) -> None:
    """The chart's registry container command, run here with the real registry binary: it
    serves TLS from the mounted pair, and its liveness command fails once the pair on disk
    is replaced (the kubelet then restarts it onto the new certificate)."""
    rendered = subprocess.run(
        [str(tool("helm")), "template", "lr", str(CHART), "-n", "x", "--kube-version", "1.34.0",
         "--set", "localRegistry.enabled=true"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("registry")
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and "config.yml" in d["data"])
    # Relocate the container's paths under tmp_path; everything else runs as rendered.
    (port,) = free_ports(["registry"]).values()
    paths = {
        "/tmp/": f"{tmp_path}/",  # first: tmp_path itself is under /tmp
        "/etc/registry/tls": str(tmp_path / "tls"),
        "/etc/registry/config.yml": str(tmp_path / "config.yml"),
        "/var/lib/registry": str(tmp_path / "storage"),
        ":5000": f"127.0.0.1:{port}",
    }

    def relocate(text: str) -> str:
        for old, new in paths.items():
            text = text.replace(old, new)
        return text

    (tmp_path / "config.yml").write_text(relocate(config_map["data"]["config.yml"]))
    certs = tmp_path / "tls"
    subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "imagestreams"), "certs", "--out-dir", str(certs),
         "--dns", "localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    command = [relocate(part) for part in container["command"] + container["args"]]
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}}
    env["PATH"] = f"{tool('registry').parent}{os.pathsep}{env['PATH']}"
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip
    liveness = [relocate(part) for part in container["livenessProbe"]["exec"]["command"]]
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    https = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        url = f"https://localhost:{port}/v2/"
        deadline = time.monotonic() + 30
        while True:
            try:
                with https.open(url, timeout=1) as resp:
                    assert resp.status == 200
                    break
            except (urllib.error.URLError, OSError):
                assert proc.poll() is None, (tmp_path / "registry.log").read_text()
                assert time.monotonic() < deadline, "the registry did not answer over TLS"
                time.sleep(0.1)
        # Deletes are enabled (the controller prunes history): an unknown digest is 404, not
        # 405 "unsupported".
        request = urllib.request.Request(
            f"https://localhost:{port}/v2/x/manifests/sha256:{'0' * 64}", method="DELETE"
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            https.open(request, timeout=5)
        assert err.value.code == 404
        assert subprocess.run(liveness, capture_output=True).returncode == 0
        subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "imagestreams"), "certs", "--out-dir",
             str(certs), "--dns", "localhost", "registry.example"],
            check=True, capture_output=True,
        )  # fmt: skip
        assert subprocess.run(liveness, capture_output=True).returncode != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        log.close()
