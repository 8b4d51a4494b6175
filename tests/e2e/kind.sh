#!/usr/bin/env bash
# End-to-end: kind cluster, load the image, helm install, create a RaftCluster, wait Available,
# write with etcdctl, scale 3 → 5 → 3, check data and status, delete a pod and see it rejoin.
#
#   FLOTILLA_IMAGE=flotilla:dev tests/e2e/kind.sh      # image built beforehand (Dockerfile)
#
# Without kind (or helm, kubectl, etcdctl, docker) it prints "SKIPPED: …" and exits 0, unless
# E2E_REQUIRE_KIND=1 (CI), where a missing tool is a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE="${FLOTILLA_IMAGE:-flotilla:dev}"
CLUSTER="${KIND_CLUSTER:-flotilla-e2e}"
NS=e2e
TIMEOUT=300

for tool in kind helm kubectl etcdctl docker; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "${E2E_REQUIRE_KIND:-0}" = 1 ]; then
      echo "FAILED: $tool not found" >&2
      exit 1
    fi
    echo "SKIPPED: $tool not found (the kind end-to-end test needs kind, helm, kubectl, etcdctl and docker)"
    exit 0
  fi
done

log() { echo "--- $(date +%T) $*"; }

# wait_for DESCRIPTION COMMAND...: retry until the command succeeds or TIMEOUT passes.
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "timed out waiting for: $what" >&2
      kubectl -n "$NS" get raftcluster,sts,pods,pvc -o wide >&2 || true
      kubectl -n "$NS" describe raftcluster demo >&2 || true
      kubectl -n flotilla-system logs deploy/flotilla-operator --tail=100 >&2 || true
      exit 1
    fi
    sleep 2
  done
}

cleanup() {
  kill "${PF_PID:-0}" 2>/dev/null || true
  [ "${E2E_KEEP:-0}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "helm install"
repo="${IMAGE%:*}"; tag="${IMAGE##*:}"
helm upgrade --install flotilla-operator charts/flotilla-operator \
  --namespace flotilla-system --create-namespace \
  --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never \
  --wait --timeout 180s

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
cat <<YAML | kubectl -n "$NS" apply -f -
apiVersion: flotilla.dev/v1alpha1
kind: RaftCluster
metadata:
  name: demo
spec:
  replicas: 3
  image: $IMAGE
  imagePullPolicy: Never
  storage:
    size: 256Mi
YAML

available() {
  [ "$(kubectl -n "$NS" get raftcluster demo -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" = True ]
}
members_are() {
  local n=$1
  [ "$(kubectl -n "$NS" get raftcluster demo -o jsonpath='{.status.phase}')" = Running ] &&
  [ "$(kubectl -n "$NS" get raftcluster demo -o jsonpath='{.status.members[*].role}' | wc -w)" = "$n" ] &&
  ! kubectl -n "$NS" get raftcluster demo -o jsonpath='{.status.members[*].role}' | grep -q Learner
}

log "waiting for 3 members"
wait_for "Available" available
wait_for "3 voters" members_are 3

kubectl -n "$NS" port-forward svc/demo 23790:2379 >/dev/null 2>&1 &
PF_PID=$!
ETCD=(etcdctl --endpoints=127.0.0.1:23790 --command-timeout=5s)
wait_for "port-forward" "${ETCD[@]}" endpoint health

log "writes"
for i in $(seq 1 20); do "${ETCD[@]}" put "key-$i" "value-$i" >/dev/null; done

log "scale 3 → 5"
start=$SECONDS
kubectl -n "$NS" scale raftcluster/demo --replicas=5
wait_for "5 voters" members_are 5
echo "3 → 5 took $((SECONDS - start)) s"

log "scale 5 → 3"
kubectl -n "$NS" scale raftcluster/demo --replicas=3
wait_for "3 voters" members_are 3
wait_for "StatefulSet at 3" test "$(kubectl -n "$NS" get sts demo -o jsonpath='{.spec.replicas}')" = 3

kill "$PF_PID" 2>/dev/null || true
kubectl -n "$NS" port-forward svc/demo 23790:2379 >/dev/null 2>&1 &
PF_PID=$!
wait_for "port-forward" "${ETCD[@]}" endpoint health
got=$("${ETCD[@]}" get key-20 --print-value-only)
[ "$got" = value-20 ] || { echo "lost data: key-20=$got" >&2; exit 1; }
count=$("${ETCD[@]}" get key- --prefix --count-only -w fields | awk '/"Count"/ {print $3}')
[ "$count" = 20 ] || { echo "expected 20 keys, got $count" >&2; exit 1; }

log "delete a pod and see it rejoin"
kubectl -n "$NS" delete pod demo-1 --wait=false
wait_for "pod back" kubectl -n "$NS" wait pod/demo-1 --for=condition=Ready --timeout=5s
wait_for "3 voters again" members_are 3
wait_for "Available" available

echo "PASSED: kind end-to-end"
