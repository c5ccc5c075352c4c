#!/usr/bin/env python3
"""A local Kubernetes control plane with the imagestreams webhook, all on 127.0.0.1.

    python hack/localcluster.py up|down|status [--dir .dev]

Starts etcd, kube-apiserver, kube-controller-manager, an OCI registry, the imagestreams
webhook (and the controller, once `imagestreams controller` exists), installs the CRD and the
MutatingWebhookConfiguration, and checks that a short name really gets pinned. There is no
kubelet: Pods are created and stay Pending, which is all admission tests need.

Tests use the Python API instead: `Cluster.start(state_dir, repo_root)`.

The binaries come from hack/tools.sh (`make tools`), in ~/.cache/imagestreams/bin.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from webhook.certs import KeyPair, issue

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("IMAGESTREAMS_CACHE", Path.home() / ".cache" / "imagestreams"))
TOOLS_BIN = CACHE_DIR / "bin"
SERVICE_CIDR = "10.0.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
SMOKE_NAMESPACE = "imagestreams-smoke"
# Namespaces the webhook never sees: the control plane's own, and the project's.
EXCLUDED_NAMESPACES = ["kube-system", "kube-node-lease", "imagestreams-system"]
WEBHOOK_RESOURCES = [
    ("", ["pods", "pods/ephemeralcontainers", "replicationcontrollers", "podtemplates"]),
    ("apps", ["deployments", "replicasets", "statefulsets", "daemonsets"]),
    ("batch", ["jobs", "cronjobs"]),
    # ImageStreams themselves: new and changed tags get a generation (see admission.py).
    ("image.openshift.io", ["imagestreams"]),
]
# Start order; stop runs it backwards.
COMPONENTS = [
    "etcd",
    "registry",
    "kube-apiserver",
    "kube-controller-manager",
    "webhook",
    "controller",
]
# What /proc/<pid>/cmdline must contain before we signal a recorded pid: a pid file can
# outlive its process, and the number may since belong to someone else.
CMDLINE_MARKERS = {
    "etcd": "etcd",
    "registry": "registry",
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
    "webhook": "serve",
    "controller": "controller",
}
PORT_NAMES = ["etcd", "etcd-peer", "apiserver", "controller-manager", "registry", "webhook"]


class ClusterError(RuntimeError):
    """Something the cluster needs is missing or did not come up."""


class MissingTool(ClusterError):
    pass


def tool(name: str) -> Path:
    """The path of a binary built by hack/tools.sh."""
    path = TOOLS_BIN / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    raise MissingTool(
        f"{name} not found in {TOOLS_BIN}: run `make tools` (hack/tools.sh {name}) to build it"
    )


# --- PKI -------------------------------------------------------------------------------


def _write_key(path: Path, pem: bytes) -> None:
    path.write_bytes(pem)
    path.chmod(0o600)


def _write_pair(pki: Path, name: str, pair: KeyPair) -> None:
    _write_key(pki / f"{name}.key", pair.key_pem)
    (pki / f"{name}.crt").write_bytes(pair.cert_pem)


def generate_pki(pki: Path) -> None:
    """CA, apiserver serving cert, client certs (EC P-256) and the RSA service-account key.

    Kept across `down`/`up` so an existing kubeconfig stays valid.
    """
    if (pki / "ca.crt").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    ca = issue(None, "imagestreams-local-ca", is_ca=True)
    _write_pair(pki, "ca", ca)

    service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    apiserver = issue(ca, "kube-apiserver", dns=dns, ips=[HOST, service_ip], server=True)
    _write_pair(pki, "apiserver", apiserver)
    _write_pair(pki, "admin", issue(ca, "admin", organization="system:masters", client=True))
    _write_pair(pki, "controller-manager", issue(ca, "system:kube-controller-manager", client=True))

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(
        pki / "sa.key",
        sa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_kubeconfig(path: Path, pki: Path, server: str, user: str) -> None:
    def b64(file: str) -> str:
        return base64.b64encode((pki / file).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(f"{user}.crt"),
                    "client-key-data": b64(f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


# --- processes -------------------------------------------------------------------------


def free_ports(names: Sequence[str]) -> dict[str, int]:
    """Free loopback ports, all distinct (sockets stay open until every port is picked)."""
    socks = []
    try:
        for _ in names:
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return {n: s.getsockname()[1] for n, s in zip(names, socks, strict=True)}
    finally:
        for s in socks:
            s.close()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As Go's listeners do: a port whose old connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) has an empty cmdline.
    return bool(_cmdline(pid))


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    # An empty ProxyHandler: loopback checks must never go through an HTTP(S)_PROXY.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Cluster:
    """A running (or startable) local cluster rooted at `state_dir`."""

    state_dir: Path
    repo_root: Path = REPO_ROOT
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    verbose: bool = False

    # --- layout --------------------------------------------------------------------

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def registry(self) -> str:
        return f"{HOST}:{self.ports['registry']}"

    @property
    def apiserver_url(self) -> str:
        return f"https://{HOST}:{self.ports['apiserver']}"

    @property
    def webhook_url(self) -> str:
        return f"https://{HOST}:{self.ports['webhook']}"

    @property
    def webhook_certs(self) -> Path:
        return self.state_dir / "webhook-certs"

    @property
    def imagestreams_bin(self) -> Path:
        return self.repo_root / ".venv" / "bin" / "imagestreams"

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses: our kubectl/helm/crane first, this cluster's config."""
        env = dict(os.environ)
        # The venv too, for `imagestreams` and the `kubectl imagestream` plugin.
        path = [str(TOOLS_BIN), str(self.repo_root / ".venv" / "bin"), env.get("PATH", "")]
        env["PATH"] = os.pathsep.join(path)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["REGISTRY"] = self.registry
        # Keep helm's repositories and cache out of the user's home.
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[var] = str(self.state_dir / "helm" / var.split("_")[1].lower())
        no_proxy = env.get("NO_PROXY", env.get("no_proxy", ""))
        env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, [no_proxy, HOST, "localhost"]))
        return env

    def _pid_file(self, name: str) -> Path:
        return self.state_dir / "pids" / f"{name}.pid"

    def _log_file(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    # --- helpers for callers -------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run our kubectl against this cluster; output captured as text."""
        proc = subprocess.run(
            [str(tool("kubectl")), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], *args: str) -> None:
        items = obj if isinstance(obj, list) else [obj]
        docs = {"apiVersion": "v1", "kind": "List", "items": items}
        self.kubectl("apply", "-f", "-", *args, input=json.dumps(docs))

    def ensure_namespace(self, name: str, timeout: float = 60) -> None:
        """Create a namespace and wait for its `default` ServiceAccount: until the
        controller-manager creates it, every Pod in the namespace is rejected."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.wait(
            f"serviceaccount {name}/default",
            lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
            timeout,
        )

    def is_running(self, name: str) -> bool:
        pid = self._read_pid(name)
        return pid is not None and _alive(pid)

    # --- lifecycle -----------------------------------------------------------------

    @classmethod
    def start(
        cls, state_dir: Path | str, repo_root: Path | str = REPO_ROOT, *, verbose: bool = False
    ) -> Cluster:
        """Start every component (stopping leftovers first) and wait until a short name
        is really resolved through the webhook."""
        cluster = cls(Path(state_dir).resolve(), Path(repo_root).resolve(), verbose=verbose)
        try:
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @classmethod
    def attach(cls, state_dir: Path | str, repo_root: Path | str = REPO_ROOT) -> Cluster:
        """A handle on a cluster started earlier (by `up`), from its recorded ports."""
        cluster = cls(Path(state_dir).resolve(), Path(repo_root).resolve())
        cluster.ports = cluster._load_ports() or {}
        return cluster

    def _say(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)

    def _start(self) -> None:
        # Fail before starting anything when a binary is missing.
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
            tool(name)
        self._registry_bin()
        if not self.imagestreams_bin.exists():
            raise MissingTool(f"{self.imagestreams_bin} not found: run `make venv`")
        self.stop()
        for sub in ("pids", "logs"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self._choose_ports()
        generate_pki(self.pki)
        write_kubeconfig(self.kubeconfig, self.pki, self.apiserver_url, "admin")
        write_kubeconfig(
            self.pki / "controller-manager.kubeconfig",
            self.pki,
            self.apiserver_url,
            "controller-manager",
        )
        self._write_env_file()

        started = time.monotonic()
        self._start_etcd()
        self._start_registry()
        self._start_apiserver()
        self._wait_http("etcd", f"http://{HOST}:{self.ports['etcd']}/health")
        self._wait_http("registry", f"http://{self.registry}/v2/")
        self._wait_http("kube-apiserver", f"{self.apiserver_url}/readyz", self._client_tls())
        self._start_controller_manager()
        self._install_crd()
        self.start_webhook()
        self._start_controller()
        self._wait_http(
            "kube-controller-manager",
            f"https://{HOST}:{self.ports['controller-manager']}/healthz",
            _insecure_tls(),
        )
        self._register_webhook()
        self._smoke_test()
        self._say(f"cluster up in {time.monotonic() - started:.1f}s")

    def stop(self) -> None:
        """Stop every component by its recorded pid; safe to call twice."""
        for name in reversed(COMPONENTS):
            self._stop(name)

    def start_webhook(self) -> None:
        """Start the webhook (certificates generated once) and wait for /readyz."""
        certs = self.webhook_certs
        if not (certs / "tls.crt").exists():
            subprocess.run(
                [
                    str(self.imagestreams_bin),
                    "certs",
                    "--out-dir",
                    str(certs),
                    "--dns",
                    "localhost",
                    "--ip",
                    HOST,
                ],
                check=True,
                capture_output=True,
            )
        self._spawn(
            "webhook",
            [
                str(self.imagestreams_bin),
                "serve",
                "--bind",
                f"{HOST}:{self.ports['webhook']}",
                "--certfile",
                str(certs / "tls.crt"),
                "--keyfile",
                str(certs / "tls.key"),
                "--kubeconfig",
                str(self.kubeconfig),
                # Each gunicorn worker runs its own watch; with one, a stream that resolves
                # proves that every earlier ImageStream write is visible (tests rely on it).
                "--workers",
                "1",
            ],
        )
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        self._wait_http("webhook", f"{self.webhook_url}/readyz", context)

    def stop_webhook(self) -> None:
        self._stop("webhook")

    def stop_controller(self) -> None:
        """Stop the import controller (e.g. to write ImageStream status by hand)."""
        self._stop("controller")

    def start_controller(self) -> None:
        self._start_controller()

    # --- components ----------------------------------------------------------------

    def _choose_ports(self) -> None:
        """Reuse the previous ports when they are all free, so a kubeconfig or a shell
        that sourced `env` keeps working across `down`/`up`; etcd's data records its
        peer URL, so new ports mean a fresh etcd."""
        old = self._load_ports()
        if old and set(old) == set(PORT_NAMES) and all(port_free(p) for p in old.values()):
            self.ports = old
            return
        self.ports = free_ports(PORT_NAMES)
        if (self.state_dir / "etcd").exists():
            self._say("ports changed: starting with an empty etcd")
            shutil.rmtree(self.state_dir / "etcd")
        (self.state_dir / "cluster.json").write_text(json.dumps({"ports": self.ports}, indent=2))

    def _load_ports(self) -> dict[str, int] | None:
        try:
            ports = json.loads((self.state_dir / "cluster.json").read_text())["ports"]
        except (OSError, ValueError, KeyError):
            return None
        return {str(k): int(v) for k, v in ports.items()}

    def _write_env_file(self) -> None:
        lines = [
            f"export KUBECONFIG={self.kubeconfig}",
            f"export REGISTRY={self.registry}",
            f'export PATH="{TOOLS_BIN}:{self.repo_root / ".venv" / "bin"}:$PATH"',
        ]
        (self.state_dir / "env").write_text("\n".join(lines) + "\n")

    def _start_etcd(self) -> None:
        client = f"http://{HOST}:{self.ports['etcd']}"
        peer = f"http://{HOST}:{self.ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                str(tool("etcd")),
                "--name=local",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                # A throwaway development store: durability is not worth the fsync latency.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

    def _registry_bin(self) -> Path:
        try:
            return tool("registry")
        except MissingTool:
            # Debian's docker-registry package is the same CNCF Distribution registry.
            found = shutil.which("docker-registry")
            if found:
                return Path(found)
            raise

    def _start_registry(self) -> None:
        config = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.state_dir / "registry")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.registry},
        }
        path = self.state_dir / "registry.yaml"
        path.write_text(yaml.safe_dump(config))
        # Distribution v3 exports OpenTelemetry traces by default, to a collector we lack.
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none"}
        self._spawn("registry", [str(self._registry_bin()), "serve", str(path)], env=env)

    def _start_apiserver(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(tool("kube-apiserver")),
                f"--etcd-servers=http://{HOST}:{self.ports['etcd']}",
                f"--bind-address={HOST}",
                f"--secure-port={self.ports['apiserver']}",
                f"--advertise-address={HOST}",
                # Loopback addresses are not valid Endpoints; there are no nodes anyway.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )

    def _start_controller_manager(self) -> None:
        pki = self.pki
        kubeconfig = pki / "controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                str(tool("kube-controller-manager")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={HOST}",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={pki / 'controller-manager'}",
                "--use-service-account-credentials",
                # Everything except what needs a cloud provider (there is none here).
                "--controllers=*,-cloud-node-lifecycle-controller,-service-lb-controller,"
                "-node-route-controller",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # One instance: a lease only adds seconds to start-up.
                "--leader-elect=false",
            ],
        )

    def _start_controller(self) -> None:
        """The import controller, once the CLI has it."""
        probe = subprocess.run(
            [str(self.imagestreams_bin), "controller", "--help"], capture_output=True
        )
        if probe.returncode != 0:
            self._say("imagestreams controller not available: not started")
            return
        self._spawn(
            "controller",
            [
                str(self.imagestreams_bin),
                "controller",
                "--kubeconfig",
                str(self.kubeconfig),
                # The loopback registry is both internal and plain HTTP: allow it explicitly.
                "--allow-registry",
                self.registry,
                "--insecure-registry",
                self.registry,
            ],
        )

    @property
    def controller_running(self) -> bool:
        return self.is_running("controller")

    def _install_crd(self) -> None:
        """The chart's CRDs (ImageStream, ImagePolicy), as `helm install` would."""
        crds = self.repo_root / "charts" / "imagestreams" / "crds"
        if not (crds / "imagestreams.yaml").exists():
            raise ClusterError(f"{crds}/imagestreams.yaml not found: the CRD comes first")
        self.kubectl("apply", "-f", str(crds))
        self.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")

    def webhook_configuration(self) -> dict[str, Any]:
        ca_bundle = base64.b64encode((self.webhook_certs / "ca.crt").read_bytes()).decode()
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "imagestreams"},
            "webhooks": [
                {
                    "name": "imagestreams.image.openshift.io",
                    "clientConfig": {"url": f"{self.webhook_url}/mutate", "caBundle": ca_bundle},
                    "rules": [
                        {
                            "apiGroups": [group],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": resources,
                            "scope": "Namespaced",
                        }
                        for group, resources in WEBHOOK_RESOURCES
                    ],
                    "failurePolicy": "Ignore",
                    "timeoutSeconds": 5,
                    "reinvocationPolicy": "IfNeeded",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "namespaceSelector": {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/metadata.name",
                                "operator": "NotIn",
                                "values": EXCLUDED_NAMESPACES,
                            }
                        ]
                    },
                }
            ],
        }

    def _register_webhook(self) -> None:
        self.apply(self.webhook_configuration())

    def _smoke_test(self, timeout: float = 60) -> None:
        """Wait until a Pod with a short name comes back pinned: only then is the whole
        path (registration, TLS, the webhook's watch) known to work."""
        ns = SMOKE_NAMESPACE
        self.ensure_namespace(ns)
        digest = "sha256:" + hashlib.sha256(b"imagestreams smoke test").hexdigest()
        # Status only, no spec tag: nothing for an import controller to overwrite.
        self.apply(
            {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStream",
                "metadata": {"name": "smoke", "namespace": ns},
                "spec": {"lookupPolicy": {"local": True}},
            }
        )
        pinned = f"{self.registry}/smoke@{digest}"
        status = {
            "status": {
                "tags": [
                    {
                        "tag": "1",
                        "items": [
                            {
                                "created": "2024-01-01T00:00:00Z",
                                "dockerImageReference": pinned,
                                "image": digest,
                                "generation": 1,
                            }
                        ],
                    }
                ],
            }
        }
        self.kubectl(
            "patch", "imagestream", "smoke", "-n", ns, "--subresource=status",
            "--type=merge", "-p", json.dumps(status),
        )  # fmt: skip

        def pinned_pod() -> bool:
            out = self.kubectl(
                "run", "smoke", "-n", ns, "--image=smoke:1", "--restart=Never",
                "--dry-run=server", "-o", "jsonpath={.spec.containers[0].image}",
            )  # fmt: skip
            return out.stdout.strip() == pinned

        self.wait("a short name resolved by the webhook", pinned_pod, timeout)
        self._say(f"smoke test: smoke:1 -> {pinned}")

    # --- process plumbing ----------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = self._log_file(name).open("ab")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        # Own session: a Ctrl-C in the shell that ran `up` does not reach the cluster, and
        # stopping signals the whole group (gunicorn's workers too).
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or self.env,
            cwd=self.state_dir,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        self._pid_file(name).write_text(f"{proc.pid}\n")
        self._say(f"started {name} (pid {proc.pid}), log {self._log_file(name)}")

    def _read_pid(self, name: str) -> int | None:
        try:
            pid = int(self._pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if CMDLINE_MARKERS[name] in _cmdline(pid) else None

    def _stop(self, name: str, grace: float = 10) -> None:
        pid = self._read_pid(name)
        if pid is not None and _alive(pid):
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, sig)
                deadline = time.monotonic() + wait
                while self._running(name, pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not self._running(name, pid):
                    break
            self._say(f"stopped {name} (pid {pid})")
        proc = self.procs.pop(name, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._pid_file(name).unlink(missing_ok=True)

    def _running(self, name: str, pid: int) -> bool:
        proc = self.procs.get(name)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None  # our child: poll() also reaps it
        return _alive(pid)

    def _check_running(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise ClusterError(
                f"{name} exited with {proc.returncode}; last lines of {self._log_file(name)}:\n"
                + _tail(self._log_file(name))
            )

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        """Poll `check` until true; fail early, with its log, if a component has exited."""
        deadline = time.monotonic() + timeout
        while True:
            for name in list(self.procs):
                self._check_running(name)
            if check():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.25)

    def _wait_http(
        self, name: str, url: str, context: ssl.SSLContext | None = None, timeout: float = 120
    ) -> None:
        started = time.monotonic()
        try:
            self.wait(f"{name} at {url}", lambda: _http_ok(url, context), timeout)
        except ClusterError as err:
            raise ClusterError(f"{err}\nlast lines of {self._log_file(name)}:\n"
                               + _tail(self._log_file(name))) from None  # fmt: skip
        self._say(f"{name} healthy after {time.monotonic() - started:.1f}s")

    def _client_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return context

    def status(self) -> dict[str, int | None]:
        """Pid of each running component, None for the stopped ones."""
        return {n: self._read_pid(n) if self.is_running(n) else None for n in COMPONENTS}


def _insecure_tls() -> ssl.SSLContext:
    # The controller-manager serves a self-signed certificate; only liveness matters here.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".dev", help="state directory")
    args = parser.parse_args(argv)
    state = Path(args.dir)

    if args.command == "up":
        try:
            cluster = Cluster.start(state, REPO_ROOT, verbose=True)
        except ClusterError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"\nregistry   {cluster.registry}\napiserver  {cluster.apiserver_url}")
        print(f"logs       {state / 'logs'}\n\nuse it:    source {state / 'env'}")
        print("stop it:   make down")
        return 0

    cluster = Cluster.attach(state, REPO_ROOT)
    if args.command == "down":
        cluster.verbose = True
        cluster.stop()
        return 0

    running = cluster.status()
    for name, pid in running.items():
        print(f"{name:24} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if cluster.ports:
        print(f"{'registry':24} {cluster.registry}\n{'apiserver':24} {cluster.apiserver_url}")
    required = [n for n in COMPONENTS if n != "controller"]
    return 0 if all(running[n] for n in required) else 1


if __name__ == "__main__":
    sys.exit(main())
