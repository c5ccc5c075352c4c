#!/usr/bin/env bash
# Builds the tools the local cluster and the tests need, from the Go module proxy only
# (this machine reaches no release pages and no container registries).
#
#   hack/tools.sh                 # all tools
#   hack/tools.sh crane helm      # only these
#
# Each tool lands in ~/.cache/imagestreams/<tool>-<version>/ and is symlinked into
# ~/.cache/imagestreams/bin/. A tool already built at the pinned version is not rebuilt,
# so a second run costs nothing.
set -euo pipefail

# Pinned versions: the newest patch of each line that the module proxy serves.
ETCD_VERSION=v3.6.16
KUBE_VERSION=v1.34.12
HELM_VERSION=v3.19.5
CRANE_VERSION=v0.22.1
REGISTRY_VERSION=v3.0.0
COREDNS_VERSION=v1.12.4
CRICTL_VERSION=v1.34.0

CACHE_DIR=${IMAGESTREAMS_CACHE:-$HOME/.cache/imagestreams}
BIN_DIR=$CACHE_DIR/bin
KUBE_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
ALL_TOOLS=(registry crane helm etcd coredns crictl "${KUBE_TOOLS[@]}")

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
# Static binaries, no paths of this machine inside, and never fetch another Go toolchain.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-buildvcs=false"
# Two cores: more parallel compiles only add memory pressure.
BUILD_FLAGS=(-trimpath -p 2)

log() { printf '[tools] %s\n' "$*" >&2; }

# installed TOOL VERSION: true when the binary is already in its versioned cache dir.
installed() { [[ -x "$CACHE_DIR/$1-$2/$1" ]]; }

# link TOOL VERSION: point bin/TOOL at the versioned binary.
link() {
	mkdir -p "$BIN_DIR"
	ln -sfn "$CACHE_DIR/$1-$2/$1" "$BIN_DIR/$1"
}

# publish TOOL VERSION FILE: move a freshly built binary into place (rename is atomic, so
# an interrupted build never leaves a half-written binary that looks installed).
publish() {
	local dir="$CACHE_DIR/$1-$2"
	mkdir -p "$dir"
	mv -f "$3" "$dir/$1.tmp"
	mv -f "$dir/$1.tmp" "$dir/$1"
	link "$1" "$2"
}

# go_install TOOL VERSION PACKAGE@VERSION [LDFLAGS]
go_install() {
	local tool=$1 version=$2 pkg=$3 ldflags=${4:-}
	local tmp
	tmp=$(mktemp -d)
	GOBIN="$tmp" "$GO" install "${BUILD_FLAGS[@]}" -ldflags "-s -w $ldflags" "$pkg"
	publish "$tool" "$version" "$tmp/$tool"
	rm -rf "$tmp"
}

build_registry() {
	go_install registry "$REGISTRY_VERSION" \
		"github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION" \
		"-X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION"
}

build_crane() {
	go_install crane "$CRANE_VERSION" \
		"github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
}

build_coredns() {
	go_install coredns "$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION"
}

build_crictl() {
	go_install crictl "$CRICTL_VERSION" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" \
		"-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
}

# The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`, and
# the chart's kubeVersion check): helm's own Makefile sets it from its client-go module, and
# a plain `go install` leaves helm's default, 1.20, which our chart refuses. We pin the
# version we run instead, as helm's release builds pin theirs.
KUBE_MINOR=${KUBE_VERSION#v1.}
KUBE_MINOR=${KUBE_MINOR%%.*}
HELM_LDFLAGS="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
HELM_LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	HELM_LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$KUBE_MINOR"
done
# The cache key carries a digest of the flags: a cached helm built with other flags (an
# older script, or another Kubernetes version) is rebuilt, never reused.
HELM_BUILD="$HELM_VERSION-$(printf '%s' "$HELM_LDFLAGS" | sha256sum | cut -c1-12)"

build_helm() {
	go_install helm "$HELM_BUILD" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$HELM_LDFLAGS"
}

# etcd's own go.mod replaces its sibling modules with relative paths, so
# `go install go.etcd.io/etcd/server/v3@…` is refused; a one-file wrapper module builds
# the same main instead.
build_etcd() {
	local tmp
	tmp=$(mktemp -d)
	cat >"$tmp/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
	(
		cd "$tmp"
		"$GO" mod init imagestreams.local/etcd >/dev/null 2>&1
		"$GO" mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
		"$GO" mod tidy
		"$GO" build "${BUILD_FLAGS[@]}" -ldflags "-s -w" -o etcd .
	)
	publish etcd "$ETCD_VERSION" "$tmp/etcd"
	rm -rf "$tmp"
}

# k8s.io/kubernetes requires its staging modules (k8s.io/api, …) at v0.0.0 and replaces them
# with ./staging paths; a wrapper module replaces each with its published v0.x tag instead.
# The three binaries share one wrapper so the packages they share compile once.
build_kube() {
	local tools=("$@") tmp gomod staging pkgs=()
	local minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	staging="v0.${KUBE_VERSION#v1.}"
	tmp=$(mktemp -d)
	gomod=$(cd "$tmp" && "$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
	(
		cd "$tmp"
		"$GO" mod init imagestreams.local/kube >/dev/null 2>&1
		"$GO" mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
		# Every `k8s.io/x => ./staging/src/k8s.io/x` line of the replace block.
		sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" |
			while read -r mod; do
				"$GO" mod edit -replace "$mod=$mod@$staging"
			done
		for tool in "${tools[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$tool"); done
		"$GO" get "${pkgs[@]/%/@$KUBE_VERSION}"
		# /version must report the real release: helm and kubectl compare against it.
		local ldflags="-s -w" pkg
		for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
			ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		done
		mkdir out
		"$GO" build "${BUILD_FLAGS[@]}" -ldflags "$ldflags" -o out/ "${pkgs[@]}"
	)
	for tool in "${tools[@]}"; do publish "$tool" "$KUBE_VERSION" "$tmp/out/$tool"; done
	rm -rf "$tmp"
}

version_of() {
	case $1 in
	registry) echo "$REGISTRY_VERSION" ;;
	crane) echo "$CRANE_VERSION" ;;
	helm) echo "$HELM_BUILD" ;;
	etcd) echo "$ETCD_VERSION" ;;
	coredns) echo "$COREDNS_VERSION" ;;
	crictl) echo "$CRICTL_VERSION" ;;
	kube-* | kubelet | kubectl) echo "$KUBE_VERSION" ;;
	*)
		log "unknown tool: $1 (known: ${ALL_TOOLS[*]})"
		return 1
		;;
	esac
}

main() {
	local wanted=("$@") kube=() tool version start
	[[ ${#wanted[@]} -gt 0 ]] || wanted=("${ALL_TOOLS[@]}")
	for tool in "${wanted[@]}"; do
		version=$(version_of "$tool")
		if installed "$tool" "$version"; then
			link "$tool" "$version"
			continue
		fi
		case $tool in
		kube-* | kubelet | kubectl) kube+=("$tool") ;;
		*)
			log "building $tool $version"
			start=$SECONDS
			"build_$tool"
			log "built $tool $version in $((SECONDS - start))s"
			;;
		esac
	done
	if [[ ${#kube[@]} -gt 0 ]]; then
		log "building ${kube[*]} $KUBE_VERSION"
		start=$SECONDS
		build_kube "${kube[@]}"
		log "built ${kube[*]} $KUBE_VERSION in $((SECONDS - start))s"
	fi
	log "tools in $BIN_DIR"
}

main "$@"
