#!/usr/bin/env bash
# The README's walk-through, against the local cluster (`make up` first; `make demo` does both).
#
# Pushes two keycloak "releases" into the loopback registry, tracks them in an ImageStream with
# local lookup, creates a Deployment by short name and shows the pinned digest it got; then
# moves the tag and shows that a new Deployment gets the new digest while the first keeps its own.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${DEV:-.dev}
if [[ ! -f $DEV/env ]]; then
	echo "no cluster in $DEV: run 'make up' first" >&2
	exit 1
fi
# shellcheck disable=SC1091
source "$DEV/env" # KUBECONFIG, REGISTRY, PATH with our kubectl and crane first

NS=demo
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# quiet CMD...: hide a tool's chatter on stderr unless it fails.
quiet() {
	"$@" 2>"$work/stderr" || {
		cat "$work/stderr" >&2
		return 1
	}
}
run() {
	printf '$ %s\n' "$*"
	"$@"
}

# push_image VERSION [TAG...]: a one-layer image (nothing external is reachable, so it is built
# here from a file) pushed as $REGISTRY/keycloak:VERSION and :TAG; prints its digest.
push_image() {
	local version=$1
	shift
	mkdir -p "$work/$version/opt/keycloak"
	echo "keycloak $version" >"$work/$version/opt/keycloak/VERSION"
	tar -C "$work/$version" -czf "$work/$version.tar.gz" opt
	quiet crane append --oci-empty-base -f "$work/$version.tar.gz" -t "$REGISTRY/keycloak:$version" >/dev/null
	for tag in "$@"; do quiet crane tag "$REGISTRY/keycloak:$version" "$tag"; done
	quiet crane digest "$REGISTRY/keycloak:$version"
}

# The import controller fills status from the registry when it runs; without it the demo writes
# the status itself, exactly as an import would.
controller_running() {
	local pid
	pid=$(cat "$DEV/pids/controller.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null
}

current_image() { # TAG → the digest the stream currently gives for it
	kubectl get imagestream keycloak -n "$NS" \
		-o jsonpath="{.status.tags[?(@.tag==\"$1\")].items[0].image}"
}

wait_for_import() { # TAG DIGEST
	for _ in $(seq 120); do
		[[ $(current_image "$1") == "$2" ]] && return 0
		sleep 0.5
	done
	echo "timed out waiting for the controller to import keycloak:$1 ($2)" >&2
	exit 1
}

# The webhook answers from its own watch of the streams, a moment behind the API server:
# wait until a Pod would get TAG's new DIGEST before relying on it.
wait_for_webhook() { # TAG DIGEST
	for _ in $(seq 120); do
		kubectl run probe -n "$NS" --image "keycloak:$1" --restart=Never --dry-run=server \
			-o jsonpath='{.spec.containers[0].image}' 2>/dev/null | grep -q "@$2$" && return 0
		sleep 0.5
	done
	echo "timed out waiting for the webhook to resolve keycloak:$1 to $2" >&2
	exit 1
}

# item DIGEST: one status history entry.
item() {
	printf '{"created":"%s","dockerImageReference":"%s/keycloak@%s","image":"%s","generation":1}' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$REGISTRY" "$1" "$1"
}

# write_status ITEMS_20 ITEMS_19: replace status.tags (a merge patch replaces whole lists).
write_status() {
	kubectl patch imagestream keycloak -n "$NS" --subresource=status --type=merge \
		-p "{\"status\":{\"tags\":[{\"tag\":\"20.0\",\"items\":[$1]},{\"tag\":\"19.0\",\"items\":[$2]}]}}" \
		>/dev/null
}

deployment_image() {
	kubectl get deployment "$1" -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].image}'
}

step "Push keycloak 20.0.2 and 19.0.3 into the local registry $REGISTRY"
d20=$(push_image 20.0.2 20.0)
d19=$(push_image 19.0.3 19.0)
echo "keycloak:20.0 -> $d20"
echo "keycloak:19.0 -> $d19"

step "An ImageStream tracking both tags, with local lookup"
kubectl delete namespace "$NS" --ignore-not-found --wait >/dev/null
run kubectl create namespace "$NS"
kubectl apply -n "$NS" -f - <<EOF
apiVersion: image.openshift.io/v1
kind: ImageStream
metadata:
  name: keycloak
spec:
  lookupPolicy:
    local: true
  tags:
  - name: "20.0"
    from: {kind: DockerImage, name: $REGISTRY/keycloak:20.0}
  - name: "19.0"
    from: {kind: DockerImage, name: $REGISTRY/keycloak:19.0}
EOF
if controller_running; then
	echo "waiting for the controller to import the tags"
	wait_for_import 20.0 "$d20"
	wait_for_import 19.0 "$d19"
else
	echo "(no import controller running: writing the status an import would write)"
	write_status "$(item "$d20")" "$(item "$d19")"
fi
wait_for_webhook 20.0 "$d20"
run kubectl get imagestream keycloak -n "$NS"

step "Create a Deployment by short name"
# Pods need the namespace's default ServiceAccount, which the controller-manager creates.
for _ in $(seq 150); do
	kubectl get serviceaccount default -n "$NS" >/dev/null 2>&1 && break
	sleep 0.2
done
run kubectl create deployment mykeycloak -n "$NS" --image keycloak:20.0
echo "stored image:    $(deployment_image mykeycloak)"
echo "registry digest: $d20"

step "Move the tag: keycloak 20.0.3 is pushed as 20.0"
d20new=$(push_image 20.0.3 20.0)
echo "keycloak:20.0 -> $d20new"
if controller_running; then
	if .venv/bin/imagestreams import-image --help >/dev/null 2>&1; then
		run .venv/bin/imagestreams import-image keycloak:20.0 -n "$NS"
	else
		# Any spec change moves the stream's generation past what status has seen, and a tag
		# without its own generation follows the stream's: the controller imports it again.
		run kubectl patch imagestream keycloak -n "$NS" --type=json \
			-p '[{"op":"add","path":"/spec/tags/0/generation","value":0}]'
	fi
	wait_for_import 20.0 "$d20new"
else
	write_status "$(item "$d20new"),$(item "$d20")" "$(item "$d19")"
fi
wait_for_webhook 20.0 "$d20new"

step "A second Deployment gets the new digest; the first keeps its own"
run kubectl create deployment mykeycloak2 -n "$NS" --image keycloak:20.0
echo "mykeycloak:  $(deployment_image mykeycloak)"
echo "mykeycloak2: $(deployment_image mykeycloak2)"
echo "its pods (created by kube-controller-manager; no kubelet, so they stay Pending):"
sleep 2
kubectl get pods -n "$NS" -o custom-columns='POD:.metadata.name,IMAGE:.spec.containers[0].image'

step "Your turn"
cat <<EOF
  source $DEV/env                 # KUBECONFIG, REGISTRY and the tools on PATH
  kubectl get imagestreams -A
  kubectl create deployment web -n $NS --image keycloak:19.0
  make down                        # stop the cluster
EOF
