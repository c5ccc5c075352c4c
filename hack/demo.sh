#!/usr/bin/env bash
# The README's walk-through on the local one-node cluster (`make up` first; `make demo` does
# both): the chart's webhook and controller run as pods, and so does every workload.
#
# Pushes two keycloak "releases" into the local registry, tracks them in an ImageStream with
# local lookup, creates a Deployment by short name and shows the pod Running from the pinned
# digest; moves the tag and shows a second Deployment running the new digest while the first
# keeps its own; rolls the tag back and shows a triggered Deployment's pods roll back; and
# caches a tag in the in-cluster registry (reference policy Local), from which the node keeps
# pulling after the upstream registry is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${DEV:-.dev}
if [[ ! -f $DEV/env ]]; then
	echo "no cluster in $DEV: run 'make up' first" >&2
	exit 1
fi
# shellcheck disable=SC1091
source "$DEV/env" # KUBECONFIG, REGISTRY, PATH with our kubectl, crane and imagestreams first
PY=.venv/bin/python
NS=demo

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() {
	printf '$ %s\n' "$*"
	"$@"
}

# push VERSION TAG: the demo workload (an HTTP server saying VERSION; nothing can be pulled
# from the internet here) as $REGISTRY/keycloak:TAG; prints its digest.
push() { "$PY" hack/localimages.py app "$1" "$REGISTRY/keycloak:$2"; }

current_image() { # STREAM TAG → the digest the stream currently gives for it
	kubectl get imagestream "$1" -n "$NS" \
		-o jsonpath="{.status.tags[?(@.tag==\"$2\")].items[0].image}"
}

# until SECONDS WHAT CMD...: poll CMD every half second.
until_true() {
	local limit=$1 what=$2
	shift 2
	for _ in $(seq $((limit * 2))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	echo "timed out after ${limit}s waiting for $what" >&2
	exit 1
}

imported() { [[ $(current_image "$1" "$2") == "$3" ]]; }
# The webhook answers from its own watch of the streams, a moment behind the API server.
resolves() {
	kubectl run probe -n "$NS" --image "$1:$2" --restart=Never --dry-run=server \
		-o jsonpath='{.spec.containers[0].image}' | grep -q "@$3$"
}
wait_for_stream() { # STREAM TAG DIGEST
	until_true 120 "the controller to import $1:$2" imported "$1" "$2" "$3"
	until_true 60 "the webhook to resolve $1:$2" resolves "$1" "$2" "$3"
}

pods() { # DEPLOYMENT: its pods, their phase and the image the kubelet ran
	kubectl get pods -n "$NS" -l "app=$1" \
		-o custom-columns='POD:.metadata.name,STATUS:.status.phase,IMAGE ID (what the kubelet ran):.status.containerStatuses[0].imageID'
}
ran() { # DEPLOYMENT DIGEST: every running pod of DEPLOYMENT (not being deleted) runs DIGEST
	local ids
	ids=$(kubectl get pods -n "$NS" -l "app=$1" --field-selector=status.phase=Running \
		-o jsonpath='{range .items[*]}{.metadata.deletionTimestamp}|{.status.containerStatuses[0].imageID}{"\n"}{end}' |
		sed -n 's/^|//p' | sort -u)
	[[ $ids == *"@$2" && $(wc -l <<<"$ids") -eq 1 ]]
}
rolled_out() { kubectl rollout status "deployment/$1" -n "$NS" --timeout=180s >/dev/null; }

step "The chart's pods on the node"
run kubectl get pods -n imagestreams-system -o wide

step "Push keycloak 20.0.2 and 19.0.3 into the local registry $REGISTRY"
d20=$(push 20.0.2 20.0)
d19=$(push 19.0.3 19.0)
echo "keycloak:20.0 -> $d20"
echo "keycloak:19.0 -> $d19"

step "An ImageStream tracking both tags, with local lookup"
kubectl delete namespace "$NS" --ignore-not-found --wait >/dev/null
run kubectl create namespace "$NS"
until_true 30 "the namespace's default ServiceAccount" kubectl get serviceaccount default -n "$NS"
run imagestreams -n "$NS" create istag keycloak:20.0 --from-image "$REGISTRY/keycloak:20.0"
run imagestreams -n "$NS" create istag keycloak:19.0 --from-image "$REGISTRY/keycloak:19.0"
run imagestreams -n "$NS" set image-lookup keycloak
wait_for_stream keycloak 20.0 "$d20"
wait_for_stream keycloak 19.0 "$d19"
run kubectl get imagestream keycloak -n "$NS"

step "Create a Deployment by short name: its pod runs the pinned digest"
run kubectl create deployment mykeycloak -n "$NS" --image keycloak:20.0
rolled_out mykeycloak
echo "stored image:   $(kubectl get deployment mykeycloak -n "$NS" -o jsonpath='{..image}')"
echo "stream digest:  $d20"
until_true 60 "mykeycloak's pod to run $d20" ran mykeycloak "$d20"
pods mykeycloak

step "Move the tag: keycloak 20.0.3 is pushed as 20.0"
d20new=$(push 20.0.3 20.0)
echo "keycloak:20.0 -> $d20new"
run imagestreams -n "$NS" import-image keycloak:20.0
wait_for_stream keycloak 20.0 "$d20new"

step "A second Deployment runs the new digest; the first keeps its own"
run kubectl create deployment mykeycloak2 -n "$NS" --image keycloak:20.0
rolled_out mykeycloak2
until_true 60 "mykeycloak2's pod to run $d20new" ran mykeycloak2 "$d20new"
pods mykeycloak
pods mykeycloak2

step "Roll the tag back: the triggered Deployment's pods follow"
run imagestreams -n "$NS" set triggers deploy/mykeycloak2 --from-image keycloak:20.0 -c keycloak
run imagestreams -n "$NS" rollback keycloak:20.0
until_true 180 "mykeycloak2's pods to roll back to $d20" ran mykeycloak2 "$d20"
rolled_out mykeycloak2
pods mykeycloak2

step "Reference policy Local: pods pull from the in-cluster registry"
run imagestreams -n "$NS" tag "$REGISTRY/keycloak:19.0" cached:19.0 --reference-policy local
run imagestreams -n "$NS" set image-lookup cached
mirrored() {
	kubectl get imagestream cached -n "$NS" \
		-o jsonpath='{.status.tags[0].conditions[?(@.type=="Mirrored")].status}' | grep -q True
}
until_true 180 "the copy into the in-cluster registry" mirrored
local_repo=$(kubectl get imagestream cached -n "$NS" -o jsonpath='{.status.dockerImageRepository}')
until_true 60 "the webhook to resolve cached:19.0 locally" \
	bash -c "kubectl run probe -n $NS --image cached:19.0 --restart=Never --dry-run=server -o jsonpath='{..image}' | grep -q '^$local_repo@'"
run kubectl create deployment cached -n "$NS" --image cached:19.0
rolled_out cached
pods cached

step "The upstream registry stops; a new pod still starts, pulled from the cluster's copy"
run "$PY" hack/localcluster.py stop-registry --dir "$DEV"
# Forget the node's copy of the image, so the new pod really pulls.
crictl rmi "$local_repo@$d19" >/dev/null 2>&1 || true
run kubectl delete pod -n "$NS" -l app=cached --wait=false
rolled_out cached
until_true 120 "a new cached pod running $d19" ran cached "$d19"
pods cached
run "$PY" hack/localcluster.py start-registry --dir "$DEV"

step "Your turn"
cat <<EOF
  source $DEV/env                 # KUBECONFIG, REGISTRY, crictl's endpoint, the tools on PATH
  kubectl get pods -A
  kubectl imagestream -n $NS describe is keycloak
  kubectl create deployment web -n $NS --image keycloak:19.0
  make down                        # stop the cluster
EOF
