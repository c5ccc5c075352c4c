#!/usr/bin/env python3
"""A local Kubernetes cluster for the demo and the tests, entirely on this machine.

    python hack/localcluster.py up|down|status [--dir .dev] [--no-node]

Two tiers share this code:

- the node tier (`up`, `make up`): etcd, kube-apiserver, kube-controller-manager and
  kube-scheduler, an OCI registry, and a node (hack/localnode.py: containerd, runc, a bridge
  CNI network, kubelet, kube-proxy, CoreDNS); the chart is installed with the project's own
  image (hack/localchart.py), so the webhook, the controller, certs-sync and the in-chart
  registry run as pods, and workloads' pods really start. Needs root.
- the loopback tier (`--no-node`, the e2e tests): the same control plane with the webhook and
  the controller as processes on 127.0.0.1 and no kubelet, so Pods stay Pending; it starts
  in seconds.

Either way `up` waits until a short name really gets pinned through the webhook. Tests use
the Python API: `Cluster.start(state_dir, repo_root, node=...)`.

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

import localchart
import localimages
import localnode
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from localnode import NODE_IP, NODE_NAME, NodeLayout

from webhook.tls.certs import KeyPair, issue, load_pair

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
# Start order; stop runs it backwards. The loopback tier runs the webhook and the
# controller as processes; the node tier runs them as the chart's pods.
CONTROL_PLANE = ["etcd", "registry", "kube-apiserver", "kube-controller-manager"]
LOOPBACK_COMPONENTS = [*CONTROL_PLANE, "webhook", "controller"]
NODE_COMPONENTS = [
    *CONTROL_PLANE,
    "kube-scheduler",
    "containerd",
    "coredns",
    "kubelet",
    "kube-proxy",
]
COMPONENTS = [*LOOPBACK_COMPONENTS, *NODE_COMPONENTS[len(CONTROL_PLANE) :]]
# What /proc/<pid>/cmdline must contain before we signal a recorded pid: a pid file can
# outlive its process, and the number may since belong to someone else.
CMDLINE_MARKERS = {
    "etcd": "etcd",
    "registry": "registry",
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
    "webhook": "serve",
    "controller": "controller",
    "kube-scheduler": "kube-scheduler",
    "containerd": "containerd",
    "coredns": "coredns",
    "kubelet": "kubelet",
    "kube-proxy": "kube-proxy",
}
PORT_NAMES = ["etcd", "etcd-peer", "apiserver", "controller-manager", "registry", "webhook"]
NODE_PORT_NAMES = [
    *PORT_NAMES, "scheduler", "kubelet-healthz", "proxy-healthz", "proxy-metrics",
    "coredns-health", "coredns-ready",
]  # fmt: skip
# The chart, as `make up` installs it.
RELEASE = "imagestreams"
RELEASE_NAMESPACE = "imagestreams-system"


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
    """CA, apiserver serving cert, client certs (EC P-256) and the RSA service-account key;
    the node's certificates too (kubelet, kube-proxy, scheduler, CoreDNS).

    Kept across `down`/`up` so an existing kubeconfig stays valid; a pair that is missing
    (an older state directory) is issued from the same CA.
    """
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "ca.crt").exists():
        ca = load_pair(pki / "ca.crt", pki / "ca.key")
    else:
        ca = issue(None, "imagestreams-local-ca", is_ca=True)
        _write_pair(pki, "ca", ca)

    service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    pairs: dict[str, Callable[[], KeyPair]] = {
        # The node's address too: pods reach the API server there.
        "apiserver": lambda: issue(
            ca, "kube-apiserver", dns=dns, ips=[HOST, NODE_IP, service_ip], server=True
        ),
        "admin": lambda: issue(ca, "admin", organization="system:masters", client=True),
        "controller-manager": lambda: issue(ca, "system:kube-controller-manager", client=True),
        "scheduler": lambda: issue(ca, "system:kube-scheduler", client=True),
        "kubelet-client": lambda: issue(
            ca, f"system:node:{NODE_NAME}", organization="system:nodes", client=True
        ),
        "kubelet-serving": lambda: issue(
            ca, NODE_NAME, dns=[NODE_NAME], ips=[NODE_IP], server=True
        ),
        "apiserver-kubelet-client": lambda: issue(
            ca, "kube-apiserver-kubelet-client", organization="system:masters", client=True
        ),
        "kube-proxy": lambda: issue(ca, "system:kube-proxy", client=True),
        "coredns": lambda: issue(ca, "imagestreams:coredns", client=True),
    }
    for name, make in pairs.items():
        if not (pki / f"{name}.crt").exists():
            _write_pair(pki, name, make())

    if (pki / "sa.key").exists():
        return
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


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    # An empty ProxyHandler: loopback checks must never go through an HTTP(S)_PROXY.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def webhook_rules(resources: Sequence[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """Admission rules for creating and updating each group's (namespaced) resources."""
    return [
        {
            "apiGroups": [group],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": names,
            "scope": "Namespaced",
        }
        for group, names in resources
    ]


def stream_status(pinned: dict[str, str]) -> dict[str, Any]:
    """An ImageStream status patch: each tag (`tag -> repository@digest`) with one history
    entry, as an import writes it."""
    tags = [
        {
            "tag": tag,
            "items": [
                {
                    "created": "2024-01-01T00:00:00Z",
                    "dockerImageReference": ref,
                    "image": ref.split("@", 1)[1],
                    "generation": 1,
                }
            ],
        }
        for tag, ref in pinned.items()
    ]
    return {"status": {"tags": tags}}


@dataclass
class Cluster:
    """A running (or startable) local cluster rooted at `state_dir`."""

    state_dir: Path
    repo_root: Path = REPO_ROOT
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    verbose: bool = False
    # A real node (kubelet, containerd) with the chart installed, instead of the webhook
    # and the controller as loopback processes.
    node: bool = False

    # --- layout --------------------------------------------------------------------

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def host(self) -> str:
        """Where the API server and the registry listen: the node's address when there is a
        node (pods, containerd and the host all reach it), else loopback."""
        return NODE_IP if self.node else HOST

    @property
    def layout(self) -> NodeLayout:
        return NodeLayout(self.state_dir)

    @property
    def components(self) -> list[str]:
        return NODE_COMPONENTS if self.node else LOOPBACK_COMPONENTS

    @property
    def registry(self) -> str:
        return f"{self.host}:{self.ports['registry']}"

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.host}:{self.ports['apiserver']}"

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
        local = [HOST, "localhost", localnode.POD_CIDR, SERVICE_CIDR, NODE_IP]
        env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, [no_proxy, *local]))
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

    def pin_stream(self, namespace: str, stream: str, pinned: dict[str, str]) -> None:
        """An ImageStream with local lookup whose tags (`tag -> repository@digest`) have
        the status an import would write. Status only, no spec tags: nothing for an import
        controller to overwrite."""
        self.apply(
            {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStream",
                "metadata": {"name": stream, "namespace": namespace},
                "spec": {"lookupPolicy": {"local": True}},
            }
        )
        self.write_stream_status(namespace, stream, pinned)

    def write_stream_status(self, namespace: str, stream: str, pinned: dict[str, str]) -> None:
        """Give each tag one history entry, `tag -> repository@digest`, through the status
        subresource (as the import controller does)."""
        patch = json.dumps(stream_status(pinned))
        self.kubectl(
            "patch", "imagestream", stream, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", patch,
        )  # fmt: skip

    def dry_run_pod(self, namespace: str, image: str) -> str:
        """The image a Pod would be stored with (server-side dry run: admission runs)."""
        out = self.kubectl(
            "run", "probe", "-n", namespace, f"--image={image}", "--restart=Never",
            "--dry-run=server", "-o", "jsonpath={.spec.containers[0].image}",
        )  # fmt: skip
        return out.stdout.strip()

    def is_running(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None and _alive(pid)

    # --- lifecycle -----------------------------------------------------------------

    @classmethod
    def start(
        cls,
        state_dir: Path | str,
        repo_root: Path | str = REPO_ROOT,
        *,
        verbose: bool = False,
        node: bool = False,
    ) -> Cluster:
        """Start every component (stopping leftovers first) and wait until a short name
        is really resolved through the webhook."""
        cluster = cls(
            Path(state_dir).resolve(), Path(repo_root).resolve(), verbose=verbose, node=node
        )
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
        cluster.node = cluster._load_state().get("node") is True
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
        if self.node:
            self._check_node_tools()
        self.stop()
        for sub in ("pids", "logs"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self._choose_ports()
        generate_pki(self.pki)
        for user in ("admin", "controller-manager", "scheduler", "kube-proxy", "coredns"):
            name = "kubeconfig" if user == "admin" else f"{user}.kubeconfig"
            path = self.kubeconfig if user == "admin" else self.pki / name
            write_kubeconfig(path, self.pki, self.apiserver_url, user)
        write_kubeconfig(
            self.pki / "kubelet.kubeconfig", self.pki, self.apiserver_url, "kubelet-client"
        )
        self._write_env_file()

        started = time.monotonic()
        if self.node:
            if localnode.bridge_exists() and not localnode.kubelet_running():
                # A crashed node's leftovers (its processes are gone): its pods' mounts and
                # cgroups die with a reboot or go with `make down` of its directory.
                self._say(f"removing a stopped node's bridge {localnode.BRIDGE}")
                self._kube_proxy_cleanup()
                localnode.teardown_network()
                localnode.remove_kubelet_chains()
            if localnode.bridge_exists():
                raise ClusterError(
                    f"another local node is up (the bridge {localnode.BRIDGE} exists): stop it "
                    "with `make down` (its --dir), or see the README for cleaning up after a crash"
                )
            localnode.setup_network(self.layout)
        self._start_etcd()
        self._start_registry()
        self._start_apiserver()
        self._wait_http("etcd", f"http://{HOST}:{self.ports['etcd']}/health")
        self._wait_http("registry", f"http://{self.registry}/v2/")
        self._wait_http("kube-apiserver", f"{self.apiserver_url}/readyz", self._client_tls())
        self._start_controller_manager()
        if self.node:
            self._start_node()
            self._install_chart()
        else:
            self._install_crd()
            self.start_webhook()
            self._start_controller()
        self._wait_http(
            "kube-controller-manager",
            f"https://{HOST}:{self.ports['controller-manager']}/healthz",
            _insecure_tls(),
        )
        if not self.node:
            self._register_webhook()
        self._smoke_test()
        self._say(f"cluster up in {time.monotonic() - started:.1f}s")

    def stop(self) -> None:
        """Stop every component by its recorded pid, and with a node remove its pods,
        mounts, cgroups and network devices; safe to call twice."""
        for name in reversed(COMPONENTS):
            if name == "containerd":
                # The kubelet is stopped, so nothing recreates pods: CRI tears each one down
                # (the CNI plugin releases its address, veth and network namespace).
                with contextlib.suppress(MissingTool):
                    localnode.remove_pods(tool("crictl"), self.layout)
            self._stop(name)
        if self.layout.containerd.exists():
            self._kube_proxy_cleanup()
            localnode.cleanup_state(self.layout)

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

    def stop_registry(self) -> None:
        """Stop the registry alone: an upstream outage."""
        self._stop("registry")

    def start_registry(self) -> None:
        self._start_registry()
        self._wait_http("registry", f"http://{self.registry}/v2/")

    def stop_apiserver(self, grace: float = 10) -> None:
        """Stop the API server alone: a control-plane restart or outage. `grace` is the time
        it gets to exit after SIGTERM before SIGKILL (0: a crash)."""
        self._stop("kube-apiserver", grace)

    def start_apiserver(self) -> None:
        """Start the API server again and wait until /readyz answers ok."""
        self._start_apiserver()
        self._wait_http("kube-apiserver", f"{self.apiserver_url}/readyz", self._client_tls())

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
        names = NODE_PORT_NAMES if self.node else PORT_NAMES
        old = self._load_ports()
        same_mode = self._load_state().get("node", False) == self.node
        if old and same_mode and set(old) == set(names) and all(map(port_free, old.values())):
            self.ports = old
            return
        self.ports = free_ports(names)
        if (self.state_dir / "etcd").exists():
            self._say("ports changed: starting with an empty etcd")
            shutil.rmtree(self.state_dir / "etcd")
        state = {"ports": self.ports, "node": self.node}
        (self.state_dir / "cluster.json").write_text(json.dumps(state, indent=2))

    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.state_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _load_ports(self) -> dict[str, int] | None:
        try:
            ports = self._load_state()["ports"]
            return {str(k): int(v) for k, v in ports.items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def _write_env_file(self) -> None:
        lines = [
            f"export KUBECONFIG={self.kubeconfig}",
            f"export REGISTRY={self.registry}",
            f'export PATH="{TOOLS_BIN}:{self.repo_root / ".venv" / "bin"}:$PATH"',
        ]
        if self.node:
            # crictl talks to the node's containerd.
            lines.append(f"export CRI_CONFIG_FILE={self.layout.crictl_config}")
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
        args = [
            str(tool("kube-apiserver")),
            f"--etcd-servers=http://{HOST}:{self.ports['etcd']}",
            f"--bind-address={self.host}",
            f"--secure-port={self.ports['apiserver']}",
            f"--advertise-address={self.host}",
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
        ]
        if self.node:
            # Logs, exec and port-forward go to the kubelet, which checks our client cert.
            args += [
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            # Loopback addresses are not valid Endpoints; there are no nodes anyway.
            args.append("--endpoint-reconciler-type=none")
        self._spawn("kube-apiserver", args)

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

    def controller_command(self, *extra: str) -> list[str]:
        """`imagestreams controller` against this cluster, with `extra` flags."""
        return [
            str(self.imagestreams_bin), "controller",
            "--kubeconfig", str(self.kubeconfig),
            # The loopback registry is both internal and plain HTTP: allow it explicitly.
            "--allow-registry", self.registry,
            "--insecure-registry", self.registry,
            *extra,
        ]  # fmt: skip

    def _start_controller(self) -> None:
        """The import controller, once the CLI has it."""
        probe = subprocess.run(
            [str(self.imagestreams_bin), "controller", "--help"], capture_output=True
        )
        if probe.returncode != 0:
            self._say("imagestreams controller not available: not started")
            return
        self._spawn("controller", self.controller_command())

    # --- the node ------------------------------------------------------------------

    def _check_node_tools(self) -> None:
        localnode.require_root()
        for name in ("kube-scheduler", "kubelet", "kube-proxy", "coredns", "crictl", "crane"):
            tool(name)
        tool("helm")
        for binary in ("containerd", "containerd-shim-runc-v2", "runc", "iptables-restore"):
            if shutil.which(binary) is None:
                raise MissingTool(
                    f"{binary} not found: run `make tools` (hack/packages.sh installs Debian's "
                    "containerd, runc, containernetworking-plugins and iptables)"
                )
        if not (localnode.CNI_BIN_DIR / "bridge").exists():
            raise MissingTool(
                f"{localnode.CNI_BIN_DIR}/bridge not found: apt-get install "
                "containernetworking-plugins (hack/packages.sh)"
            )

    def push_image(self, spec: localimages.ImageSpec, ref: str) -> str:
        """Push a locally built image to this cluster's registry; REPOSITORY@DIGEST."""
        return localimages.push(
            tool("crane"), spec, f"{self.registry}/{ref}", self.state_dir / "images"
        )

    def _start_node(self) -> None:
        self._start_scheduler()
        # containerd pulls the sandbox image like any other: it must be in the registry first.
        pause = self.push_image(localimages.pause_spec(), "imagestreams/pause:local")
        self._start_containerd(pause)
        self._start_coredns()
        self._start_kubelet()
        self._start_kube_proxy()
        self.wait("node Ready", self.node_ready, 180)
        self._say(f"node {NODE_NAME} Ready at {NODE_IP}")

    def node_ready(self) -> bool:
        proc = self.kubectl(
            "get", "node", NODE_NAME, "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False,
        )  # fmt: skip
        return proc.stdout.strip() == "True"

    def _start_scheduler(self) -> None:
        kubeconfig = self.pki / "scheduler.kubeconfig"
        self._spawn(
            "kube-scheduler",
            [
                str(tool("kube-scheduler")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={HOST}",
                f"--secure-port={self.ports['scheduler']}",
                "--leader-elect=false",
            ],
        )

    def _start_containerd(self, sandbox_image: str) -> None:
        layout = self.layout
        layout.containerd.mkdir(parents=True, exist_ok=True)
        config = layout.containerd / "config.toml"
        config.write_text(localnode.containerd_config(layout, sandbox_image))
        localnode.write_registry_host(layout, self.registry)
        localnode.write_crictl_config(layout)
        self._spawn("containerd", ["containerd", "--config", str(config)])
        self.wait("containerd's CRI", self._cri_ready, 60)

    def crictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(tool("crictl")), "--config", str(self.layout.crictl_config), *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise ClusterError(f"crictl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def _cri_ready(self) -> bool:
        return (
            self.layout.containerd_socket.exists()
            and self.crictl("info", check=False).returncode == 0
        )

    def _start_coredns(self) -> None:
        # Read access to what cluster DNS serves, for CoreDNS's client certificate.
        self.apply(localnode.coredns_rbac("imagestreams:coredns"))
        layout = self.layout
        layout.coredns.mkdir(parents=True, exist_ok=True)
        corefile = layout.coredns / "Corefile"
        corefile.write_text(
            localnode.corefile(
                self.pki / "coredns.kubeconfig",
                self.ports["coredns-health"],
                self.ports["coredns-ready"],
            )
        )
        self._spawn("coredns", [str(tool("coredns")), "-conf", str(corefile)])
        self._wait_http("coredns", f"http://{HOST}:{self.ports['coredns-ready']}/ready")

    def _start_kubelet(self) -> None:
        layout = self.layout
        layout.kubelet_root.mkdir(parents=True, exist_ok=True)
        localnode.write_resolv_conf(layout)
        config = layout.kubelet / "config.yaml"
        config.write_text(
            localnode.kubelet_config(
                layout,
                healthz_port=self.ports["kubelet-healthz"],
                client_ca=self.pki / "ca.crt",
                cert=self.pki / "kubelet-serving.crt",
                key=self.pki / "kubelet-serving.key",
            )
        )
        self._spawn(
            "kubelet",
            [
                str(tool("kubelet")),
                f"--config={config}",
                f"--kubeconfig={self.pki / 'kubelet.kubeconfig'}",
                f"--root-dir={layout.kubelet_root}",
                f"--cert-dir={layout.kubelet / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        layout = self.layout
        layout.kube_proxy.mkdir(parents=True, exist_ok=True)
        config = layout.kube_proxy / "config.yaml"
        config.write_text(
            localnode.kube_proxy_config(
                self.pki / "kube-proxy.kubeconfig",
                healthz_port=self.ports["proxy-healthz"],
                metrics_port=self.ports["proxy-metrics"],
            )
        )
        self._spawn("kube-proxy", [str(tool("kube-proxy")), f"--config={config}"])
        self._wait_http("kube-proxy", f"http://{HOST}:{self.ports['proxy-healthz']}/healthz")

    def _install_chart(self) -> None:
        started = time.monotonic()
        localchart.install(self)
        self._say(f"chart installed in {time.monotonic() - started:.1f}s")

    def _kube_proxy_cleanup(self) -> None:
        """Remove the NAT rules kube-proxy wrote (its chains in every table)."""
        with contextlib.suppress(MissingTool, subprocess.TimeoutExpired):
            subprocess.run([str(tool("kube-proxy")), "--cleanup"], capture_output=True, timeout=60)

    @property
    def controller_running(self) -> bool:
        return self.is_running("controller")

    def _install_crd(self) -> None:
        """The chart's CRDs (ImageStream, ImagePolicy), as `helm install` would."""
        crds = self.repo_root / "charts" / "imagestreams" / "files" / "crds"
        if not (crds / "imagestreams.yaml").exists():
            raise ClusterError(f"{crds}/imagestreams.yaml not found: the CRD comes first")
        self.kubectl("apply", "-f", str(crds))
        self.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "--all")

    def webhook_client_config(self, path: str) -> dict[str, str]:
        """How the API server calls the loopback webhook at `path`, trusting its CA."""
        ca_bundle = base64.b64encode((self.webhook_certs / "ca.crt").read_bytes()).decode()
        return {"url": f"{self.webhook_url}{path}", "caBundle": ca_bundle}

    def webhook_configuration(self) -> dict[str, Any]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "imagestreams"},
            "webhooks": [
                {
                    "name": "imagestreams.image.openshift.io",
                    "clientConfig": self.webhook_client_config("/mutate"),
                    "rules": webhook_rules(WEBHOOK_RESOURCES),
                    # The chart's own conditions, so every e2e test runs behind them.
                    "matchConditions": self.chart_match_conditions(),
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

    def chart_match_conditions(self) -> list[dict[str, str]]:
        """The webhook's matchConditions as the chart's values.yaml defines them."""
        values = yaml.safe_load((self.repo_root / "charts/imagestreams/values.yaml").read_text())
        conditions: list[dict[str, str]] = values["webhook"]["matchConditions"]
        return conditions

    def _register_webhook(self) -> None:
        self.apply(self.webhook_configuration())

    def _smoke_test(self, timeout: float = 60) -> None:
        """Wait until a Pod with a short name comes back pinned: only then is the whole
        path (registration, TLS, the webhook's watch) known to work."""
        ns = SMOKE_NAMESPACE
        self.ensure_namespace(ns)
        digest = "sha256:" + hashlib.sha256(b"imagestreams smoke test").hexdigest()
        pinned = f"{self.registry}/smoke@{digest}"
        self.pin_stream(ns, "smoke", {"1": pinned})
        self.wait(
            "a short name resolved by the webhook",
            lambda: self.dry_run_pod(ns, "smoke:1") == pinned,
            timeout,
        )
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

    def pid(self, name: str) -> int | None:
        """The process id of a running component (`kube-apiserver`, `etcd`, `registry`, ...),
        or None (a benchmark counts its CPU by it)."""
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            # Our own child needs no marker, and right after exec its cmdline can still
            # read empty (as a zombie's does): a component started and at once stopped
            # was left running.
            return proc.pid
        try:
            pid = int(self._pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if CMDLINE_MARKERS[name] in _cmdline(pid) else None

    def _stop(self, name: str, grace: float = 10) -> None:
        pid = self.pid(name)
        if pid is not None and self._running(name, pid):
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
            self.wait(f"{name} at {url}", lambda: http_ok(url, context), timeout)
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
        return {n: self.pid(n) if self.is_running(n) else None for n in self.components}


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
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "stop-registry", "start-registry"],
        help="stop-registry/start-registry: the upstream registry alone (outage drills)",
    )
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".dev", help="state directory")
    parser.add_argument(
        "--no-node",
        dest="node",
        action="store_false",
        help="no node: the webhook and the controller as loopback processes (the fast tier)",
    )
    args = parser.parse_args(argv)
    state = Path(args.dir)

    if args.command == "up":
        try:
            cluster = Cluster.start(state, REPO_ROOT, verbose=True, node=args.node)
        except (ClusterError, localnode.NodeError, localchart.ChartError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"\nregistry   {cluster.registry}\napiserver  {cluster.apiserver_url}")
        if cluster.node:
            print(f"node       {NODE_NAME} ({NODE_IP}), chart {RELEASE} in {RELEASE_NAMESPACE}")
        print(f"logs       {state / 'logs'}\n\nuse it:    source {state / 'env'}")
        print("stop it:   make down")
        return 0

    cluster = Cluster.attach(state, REPO_ROOT)
    if args.command == "down":
        cluster.verbose = True
        cluster.stop()
        return 0
    if args.command == "stop-registry":
        cluster.stop_registry()
        return 0
    if args.command == "start-registry":
        cluster.start_registry()
        return 0

    running = cluster.status()
    for name, pid in running.items():
        print(f"{name:24} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if cluster.ports:
        print(f"{'registry':24} {cluster.registry}\n{'apiserver':24} {cluster.apiserver_url}")
    required = [n for n in cluster.components if n != "controller"]
    return 0 if all(running[n] for n in required) else 1


if __name__ == "__main__":
    sys.exit(main())
