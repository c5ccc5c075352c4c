"""The local cluster's node: containerd + runc, a bridge CNI network, kubelet, kube-proxy and
CoreDNS, all on this machine, with every file under the cluster's state directory.

The node's address lives on the pod bridge (kubelet refuses a loopback node IP), so the API
server and the registry listen there too: pods, the host and containerd then reach both
under one name. Nothing here leaves the machine: the pod network is a bridge with no route
out (no masquerading), and every image the node runs is built here and pushed to the local
registry.

Facts of this machine kind that shape the configuration: cgroup v1 (kubelet's
`failCgroupV1: false`, driver cgroupfs) and no CAP_SYS_RESOURCE (containerd's
`restrict_oom_score_adj`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

NODE_NAME = "imagestreams-node"
BRIDGE = "imgs0"
POD_CIDR = "10.88.0.0/16"
NODE_IP = "10.88.0.1"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CONTAINERD_NAMESPACE = "k8s.io"
# The in-chart registry's fixed ClusterIP, which the node maps the Service's name to
# (nodes do not use cluster DNS: docs/local-registry.md).
LOCAL_REGISTRY_IP = "10.0.0.50"
HOSTS_FILE = Path("/etc/hosts")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")
HOSTS_MARKER = "# imagestreams local node"


class NodeError(RuntimeError):
    """The node could not be set up or torn down."""


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def require_root() -> None:
    if os.geteuid() != 0:
        raise NodeError("the local node needs root (containerd, kubelet and the pod network)")


@dataclass(frozen=True)
class NodeLayout:
    """Where the node keeps its files, under the cluster's state directory."""

    state_dir: Path

    @property
    def containerd(self) -> Path:
        return self.state_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def crictl_config(self) -> Path:
        return self.containerd / "crictl.yaml"

    @property
    def certs_d(self) -> Path:
        """containerd's per-registry hosts.toml files (read on every pull)."""
        return self.containerd / "certs.d"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.state_dir / "cni" / "ipam"

    @property
    def kubelet(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def kubelet_root(self) -> Path:
        return self.kubelet / "root"

    @property
    def kube_proxy(self) -> Path:
        return self.state_dir / "kube-proxy"

    @property
    def coredns(self) -> Path:
        return self.state_dir / "coredns"


# --- network ---------------------------------------------------------------------------


def _link_exists(name: str) -> bool:
    return _run("ip", "link", "show", name, check=False).returncode == 0


def bridge_exists() -> bool:
    return _link_exists(BRIDGE)


def kubelet_running() -> bool:
    """Whether a local node's kubelet runs on this machine (from any state directory)."""
    marker = f"--hostname-override={NODE_NAME}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                if b"kubelet" in cmdline and marker in cmdline:
                    return True
    return False


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key.replace(".", "/")
    if path.exists() and path.read_text().strip() != value:
        path.write_text(value)


def setup_network(layout: NodeLayout) -> None:
    """The pod bridge with the node's address, and a CNI configuration that uses it.

    The bridge exists before the first pod (the CNI bridge plugin reuses it), because the
    API server and the registry listen on its address from the start.
    """
    if not _link_exists(BRIDGE):
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    prefix = POD_CIDR.split("/")[1]
    addresses = _run("ip", "-4", "-o", "addr", "show", "dev", BRIDGE).stdout
    if f"{NODE_IP}/{prefix}" not in addresses:
        _run("ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # Pods reach Services through the host's NAT rules (kube-proxy): bridged traffic must go
    # through iptables, and the host must forward between the bridge's ports.
    if not Path("/proc/sys/net/bridge").is_dir():
        raise NodeError("the kernel has no br_netfilter (modprobe br_netfilter)")
    _sysctl("net.ipv4.ip_forward", "1")
    _sysctl("net.bridge.bridge-nf-call-iptables", "1")

    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    layout.cni_ipam_dir.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "1.0.0",
        "name": "imagestreams",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # No masquerading: pods talk to this machine and to each other, nothing else.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (layout.cni_conf_dir / "10-imagestreams.conflist").write_text(json.dumps(conflist, indent=2))


def teardown_network() -> None:
    if _link_exists(BRIDGE):
        _run("ip", "link", "delete", BRIDGE, check=False)


# --- containerd ------------------------------------------------------------------------


def containerd_config(layout: NodeLayout, sandbox_image: str) -> str:
    """containerd 1.6's configuration: everything under the state directory."""
    c = layout.containerd
    return f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{c / "containerd.sock.ttrpc"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # No CAP_SYS_RESOURCE here: runc's nsexec may not lower oom_score_adj below ours.
  restrict_oom_score_adj = true
  enable_selinux = false
  # Pods' network namespaces under the state directory, so `down` finds every one.
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{layout.cni_conf_dir}"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{layout.certs_d}"
"""


def write_registry_host(
    layout: NodeLayout, host: str, *, scheme: str = "http", ca: bytes | None = None
) -> None:
    """A hosts.toml telling containerd how to pull from `host` (plain HTTP, or HTTPS with a
    CA trusted for that host only)."""
    directory = layout.certs_d / host
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f'server = "{scheme}://{host}"',
        "",
        f'[host."{scheme}://{host}"]',
        '  capabilities = ["pull", "resolve"]',
    ]
    if ca is not None:
        (directory / "ca.crt").write_bytes(ca)
        lines.append(f'  ca = "{directory / "ca.crt"}"')
    (directory / "hosts.toml").write_text("\n".join(lines) + "\n")


def write_crictl_config(layout: NodeLayout) -> None:
    endpoint = f"unix://{layout.containerd_socket}"
    config = {"runtime-endpoint": endpoint, "image-endpoint": endpoint, "timeout": 30}
    layout.crictl_config.write_text(yaml.safe_dump(config))


# --- kubelet and kube-proxy ------------------------------------------------------------


def kubelet_config(
    layout: NodeLayout, *, healthz_port: int, client_ca: Path, cert: Path, key: Path
) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        # This machine has cgroup v1 and no systemd.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "podLogsDir": str(layout.kubelet / "pod-logs"),
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(_resolv_conf(layout)),
        # A development machine's disk is shared with everything else on it: evict only
        # when it is really full, and never garbage-collect the images we built.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "protectKernelDefaults": False,
        # kube-proxy owns the NAT rules; the kubelet's own chains (KUBE-FIREWALL, canaries)
        # would only be more to clean up.
        "makeIPTablesUtilChains": False,
        "staticPodPath": "",
        "maxPods": 110,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
        # Secret volumes (rotated certificates) follow within seconds, not a minute.
        "syncFrequency": "15s",
    }
    return yaml.safe_dump(config)


def _resolv_conf(layout: NodeLayout) -> Path:
    """The resolv.conf that pods with dnsPolicy Default get: none of the host's resolvers
    (nothing outside this machine is reachable), so only cluster DNS answers."""
    return layout.kubelet / "resolv.conf"


def write_resolv_conf(layout: NodeLayout) -> None:
    _resolv_conf(layout).write_text(f"nameserver {NODE_IP}\n")


def kube_proxy_config(kubeconfig: Path, *, healthz_port: int, metrics_port: int) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clusterCIDR": POD_CIDR,
        # NodePorts only on the pod bridge, never on the machine's own interfaces.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # Leave the machine's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
    }
    return yaml.safe_dump(config)


def corefile(kubeconfig: Path, health_port: int, ready_port: int) -> str:
    """Cluster DNS for Service and Pod names, on the node's address (the kubelet's
    clusterDNS). Nothing is forwarded upstream: no resolver outside this machine is
    reachable, and the pods have no business asking one."""
    return f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


def coredns_rbac(user: str) -> list[dict[str, object]]:
    """What CoreDNS's kubernetes plugin reads, for its client certificate's user."""
    name = "imagestreams:local-coredns"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    ]


# --- /etc/hosts: the in-chart registry's name, as docs/local-registry.md tells users ----


def add_hosts_entry(state_dir: Path, ip: str, name: str) -> None:
    marker = f"{HOSTS_MARKER} {state_dir}"
    lines = [line for line in HOSTS_FILE.read_text().splitlines() if not line.endswith(marker)]
    lines.append(f"{ip}\t{name}\t{marker}")
    _write_hosts(lines)


def remove_hosts_entries(state_dir: Path) -> None:
    marker = f"{HOSTS_MARKER} {state_dir}"
    with contextlib.suppress(OSError):
        lines = HOSTS_FILE.read_text().splitlines()
        kept = [line for line in lines if not line.endswith(marker)]
        if kept != lines:
            _write_hosts(kept)


def _write_hosts(lines: list[str]) -> None:
    # In place: /etc/hosts may be a bind mount, which a rename would not replace.
    HOSTS_FILE.write_text("\n".join(lines) + "\n")


# --- teardown --------------------------------------------------------------------------


def remove_pods(crictl: Path, layout: NodeLayout) -> None:
    """Stop and remove every pod sandbox through CRI, so the CNI plugin releases each pod's
    address, veth and network namespace."""
    if not layout.containerd_socket.exists() or not layout.crictl_config.exists():
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            [str(crictl), "--config", str(layout.crictl_config), "rmp", "--all", "--force"],
            capture_output=True,
            timeout=120,
        )


def unmount_under(root: Path) -> None:
    """Unmount everything mounted below `root` (kubelet volumes, container root file systems,
    sandbox shm), deepest first."""
    prefix = str(root.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        _run("umount", "--lazy", point, check=False)


def remove_pod_cgroups() -> None:
    """kubelet's `kubepods` cgroups, in every v1 hierarchy, children first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
        for path in [*reversed(dirs), top]:
            with contextlib.suppress(OSError):
                path.rmdir()


def remove_kubelet_chains() -> None:
    """The chains a kubelet makes (kube-proxy --cleanup removes only its own), in case one
    ran with its defaults."""
    for iptables in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            for parent in ("INPUT", "OUTPUT"):
                jump = [iptables, "-t", table, "-D", parent, "-j", "KUBE-FIREWALL"]
                while _run(*jump, check=False).returncode == 0:
                    pass
            for chain in KUBELET_CHAINS:
                _run(iptables, "-t", table, "-F", chain, check=False)
                _run(iptables, "-t", table, "-X", chain, check=False)


def remove_log_links(layout: NodeLayout) -> None:
    """kubelet links every container's log from /var/log/containers (a fixed path)."""
    logs = str(layout.kubelet / "pod-logs") + "/"
    for link in CONTAINER_LOG_LINKS.glob("*.log"):
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(logs):
                link.unlink()


def cleanup_state(layout: NodeLayout) -> None:
    """What survives the processes: mounts, cgroups, the bridge, log links."""
    unmount_under(layout.state_dir)
    remove_log_links(layout)
    remove_kubelet_chains()
    remove_pod_cgroups()
    teardown_network()
    remove_hosts_entries(layout.state_dir)
    # Addresses of pods that no longer exist.
    shutil.rmtree(layout.cni_ipam_dir, ignore_errors=True)
