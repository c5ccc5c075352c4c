#!/usr/bin/env bash
# Installs the Debian packages the local node and the image build need, when missing:
# containerd, runc and the CNI plugins run the node's pods; iptables and conntrack are what
# kube-proxy drives; debootstrap builds the product image's root file system (no Docker
# daemon and no base image to pull here). Needs root, as the node itself does.
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins iptables conntrack busybox-static debootstrap)

missing=()
for package in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
	echo "[packages] missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
	exit 1
fi
echo "[packages] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package's own service would take /run/containerd; the local node runs its own
# containerd with everything under the cluster's directory, and no init system runs here.
