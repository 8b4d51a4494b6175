#!/usr/bin/env bash
# Runs Kubernetes' own API server on a Flotilla cluster and checks that it behaves as on etcd.
#
#   scripts/k8s-on-flotilla.sh [--up 'CMD'] [--down 'CMD']
#
# It starts three `flotilla node` processes on loopback (client ports 22379/22389/22399), then
# runs the --up command with FLOTILLA_ENDPOINTS set to their URLs. That command must start a
# Kubernetes control plane whose kube-apiserver uses `--etcd-servers=$FLOTILLA_ENDPOINTS`, and
# print `export KUBECONFIG=…` (or leave KUBECONFIG exported in this script's environment through
# the K8S_KUBECONFIG variable). By default it uses the repo's sibling tool
# `../shared/tools/local-k8s up --etcd-servers …` (a Kubernetes 1.20.2 built from Debian's
# source). KUBECTL (default: the local-k8s kubectl, else `kubectl`) drives the checks:
#
#   1. the API server is ready and `kubectl get componentstatuses` says etcd-0 is Healthy
#      (the API server GETs Flotilla's /health);
#   2. a CRD with scale and status subresources: create, `kubectl scale`, write status;
#   3. server-side apply, and a conflicting manager refused;
#   4. 500 ConfigMaps, listed in pages of 50;
#   5. a watch across a bulk create and delete sees every ADDED and DELETED event;
#   6. Flotilla compacted under the API server: lists and new watches keep working;
#   7. a member restarted, then the leader killed -9: the API server keeps serving writes;
#   8. a Deployment's pod scheduled and Running (controller-manager, scheduler and kubelet
#      all through Flotilla).
#
# Environment: FLOTILLA_BIN (default target/release/flotilla, else target/debug/flotilla),
# WORK (default a temp dir), BUSYBOX_IMAGE (local/busybox:1.35).
set -euo pipefail
cd "$(dirname "$0")/.."

UP=${K8S_UP:-}
DOWN=${K8S_DOWN:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --up) UP=$2; shift 2;;
    --down) DOWN=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
LOCAL_K8S=../shared/tools/local-k8s
if [ -z "$UP" ]; then
  [ -x "$LOCAL_K8S" ] || { echo "no --up command and no $LOCAL_K8S" >&2; exit 2; }
  UP="$LOCAL_K8S up --etcd-servers \"\$FLOTILLA_ENDPOINTS\""
  DOWN="$LOCAL_K8S down"
  export KUBECONFIG=${KUBECONFIG:-/tmp/local-k8s/kubeconfig}
  KUBECTL=${KUBECTL:-/var/cache/local-k8s/bin/kubectl}
fi
KUBECTL=${KUBECTL:-kubectl}
BIN=${FLOTILLA_BIN:-}
if [ -z "$BIN" ]; then
  if [ -x target/release/flotilla ]; then BIN=target/release/flotilla; else BIN=target/debug/flotilla; fi
fi
[ -x "$BIN" ] || { echo "build flotilla first (cargo build --release -p flotilla-node)" >&2; exit 2; }
BUSYBOX=${BUSYBOX_IMAGE:-local/busybox:1.35}
WORK=${WORK:-$(mktemp -d /tmp/k8s-on-flotilla.XXXXXX)}
mkdir -p "$WORK"
K() { "$KUBECTL" "$@"; }
log() { printf '[k8s-on-flotilla %s] %s\n' "$(date +%T)" "$*"; }
fail() { log "FAILED: $*"; exit 1; }
wait_for() { # seconds, description, command...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || fail "timed out after ${t}s waiting for $what"
    sleep 1
  done
}

NAMES=(f1 f2 f3)
CLIENT=(22379 22389 22399)
PEER=(22380 22390 22400)
METRICS=(22381 22391 22401)
IC=""
for i in 0 1 2; do IC+="${IC:+,}${NAMES[$i]}=http://127.0.0.1:${PEER[$i]}"; done
ENDPOINTS=""
for i in 0 1 2; do ENDPOINTS+="${ENDPOINTS:+,}http://127.0.0.1:${CLIENT[$i]}"; done
export FLOTILLA_ENDPOINTS=$ENDPOINTS
PIDS=(0 0 0)
start_member() {
  local i=$1
  FLOTILLA_LOG=info "$BIN" node --name "${NAMES[$i]}" --data-dir "$WORK/${NAMES[$i]}" \
    --listen-client "127.0.0.1:${CLIENT[$i]}" --listen-peer "127.0.0.1:${PEER[$i]}" \
    --listen-metrics "127.0.0.1:${METRICS[$i]}" --initial-cluster "$IC" \
    --cluster-token "k8s-on-flotilla-$$" >>"$WORK/${NAMES[$i]}.log" 2>&1 &
  PIDS[$i]=$!
}
cleanup() {
  set +e
  [ -n "$DOWN" ] && eval "$DOWN" >/dev/null 2>&1
  for p in "${PIDS[@]}"; do [ "$p" != 0 ] && kill "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
E() { ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" "$@"; }

started=$SECONDS
for i in 0 1 2; do start_member "$i"; done
wait_for 30 "Flotilla healthy" E endpoint health
log "Flotilla: $(E endpoint status -w table | sed -n 4,6p | awk -F'|' '{print $2 $5}' | tr -s ' ' | tr '\n' ';')"
log "starting Kubernetes: $UP"
eval "$UP"
K version --short 2>/dev/null | sed 's/^/  /' || true

log "1. ready, and etcd-0 Healthy in componentstatuses"
wait_for 120 "apiserver /readyz" K get --raw /readyz
wait_for 60 "etcd-0 Healthy" sh -c "\"$KUBECTL\" get componentstatuses 2>/dev/null | grep -E '^etcd-0 +Healthy'"

log "2. CRD with scale and status subresources"
cat >"$WORK/crd.yaml" <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.flotilla.test}
spec:
  group: flotilla.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {replicas: {type: integer}}}
          status: {type: object, properties: {replicas: {type: integer}}}
EOF
K apply -f "$WORK/crd.yaml" >/dev/null
wait_for 60 "CRD established" K wait --for condition=established --timeout=5s crd/widgets.flotilla.test
printf 'apiVersion: flotilla.test/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {replicas: 1}\n' \
  | K apply -f - >/dev/null
K scale widget/w1 --replicas=3 >/dev/null
[ "$(K get widget w1 -o jsonpath='{.spec.replicas}')" = 3 ] || fail "scale subresource did not set spec.replicas"
K get widget w1 -o json | python3 -c 'import json,sys; o=json.load(sys.stdin); o["status"]={"replicas":3}; print(json.dumps(o))' \
  >"$WORK/w1-status.json"
K replace --raw /apis/flotilla.test/v1/namespaces/default/widgets/w1/status -f "$WORK/w1-status.json" >/dev/null
[ "$(K get widget w1 -o jsonpath='{.status.replicas}')" = 3 ] || fail "status subresource did not write status"

log "3. server-side apply"
K create namespace ssa >/dev/null
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned, namespace: ssa}\ndata: {a: "1"}\n' >"$WORK/ssa.yaml"
K apply --server-side --field-manager=first -f "$WORK/ssa.yaml" >/dev/null
sed 's/"1"/"2"/' "$WORK/ssa.yaml" >"$WORK/ssa2.yaml"
if K apply --server-side --field-manager=second -f "$WORK/ssa2.yaml" >/dev/null 2>"$WORK/ssa.err"; then
  fail "a conflicting field manager was not refused"
fi
grep -q conflict "$WORK/ssa.err" || fail "the refusal does not name the conflict: $(cat "$WORK/ssa.err")"
K apply --server-side --field-manager=second --force-conflicts -f "$WORK/ssa2.yaml" >/dev/null
[ "$(K -n ssa get cm owned -o jsonpath='{.data.a}')" = 2 ] || fail "forced apply did not take"

log "4. 500 ConfigMaps, listed in pages of 50"
K create namespace bulk >/dev/null
python3 - "$WORK/bulk.json" <<'EOF'
import json, sys
items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i:03d}", "namespace": "bulk"},
          "data": {"v": "x" * 200}} for i in range(500)]
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(sys.argv[1], "w"))
EOF
K create -f "$WORK/bulk.json" >/dev/null
n=$(K -n bulk get cm --chunk-size=50 -o name | grep -c '^configmap/cm-')
[ "$n" = 500 ] || fail "paginated list returned $n of 500"
limit_json=$(K get --raw "/api/v1/namespaces/bulk/configmaps?limit=50")
python3 -c 'import json,sys; o=json.loads(sys.argv[1]); assert len(o["items"])==50 and o["metadata"].get("continue"), "no continue token"' "$limit_json" \
  || fail "a limited list did not return a page and a continue token"

log "5. a watch across a bulk create and delete"
K create namespace watched >/dev/null
K -n watched get cm --watch-only --output-watch-events -o json >"$WORK/watch.out" 2>&1 &
WATCH=$!
sleep 2
python3 - "$WORK/watched.json" <<'EOF'
import json, sys
items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"w-{i:03d}", "namespace": "watched"}}
         for i in range(200)]
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(sys.argv[1], "w"))
EOF
K create -f "$WORK/watched.json" >/dev/null
K -n watched delete cm --all --wait=false >/dev/null
# `-o json` with --output-watch-events prints one {"type", "object"} document per event.
count_events() {
  python3 -c '
import json, sys
text, want = open(sys.argv[1]).read(), sys.argv[2]
dec, at, names = json.JSONDecoder(), 0, set()
while True:
    while at < len(text) and text[at].isspace():
        at += 1
    try:
        ev, at = dec.raw_decode(text, at)
    except ValueError:
        break
    name = ev.get("object", {}).get("metadata", {}).get("name", "")
    if ev.get("type") == want and name.startswith("w-"):
        names.add(name)
print(len(names))' "$WORK/watch.out" "$1"
}
end=$((SECONDS + 60))
until [ "$(count_events ADDED)" = 200 ] && [ "$(count_events DELETED)" = 200 ]; do
  [ $SECONDS -lt $end ] || fail "the watch saw $(count_events ADDED) ADDED and $(count_events DELETED) DELETED of 200"
  sleep 1
done
kill $WATCH 2>/dev/null || true
log "   watch saw $(count_events ADDED) ADDED, $(count_events DELETED) DELETED"

log "6. Flotilla compacted under the API server"
rev=$(E endpoint status -w json | python3 -c 'import json,sys; print(max(s["Status"]["header"]["revision"] for s in json.load(sys.stdin)))')
E compact "$rev" >/dev/null
n=$(K -n bulk get cm --chunk-size=100 -o name | grep -c '^configmap/cm-')
[ "$n" = 500 ] || fail "list after compaction returned $n of 500"
K -n bulk get cm --watch-only -o name >"$WORK/watch2.out" 2>&1 &
WATCH=$!
sleep 1
K -n bulk create cm after-compaction >/dev/null
wait_for 30 "a watch started after compaction sees new objects" grep -q after-compaction "$WORK/watch2.out"
kill $WATCH 2>/dev/null || true

log "7. a member restarted, then the leader killed -9"
kill -TERM "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
start_member 2
wait_for 30 "the restarted member healthy" E --endpoints "http://127.0.0.1:${CLIENT[2]}" endpoint health
K create namespace after-restart >/dev/null
leader_idx=$(E endpoint status -w json | python3 -c '
import json, sys
st = json.load(sys.stdin)
print(next(i for i, s in enumerate(st) if s["Status"]["header"]["member_id"] == s["Status"]["leader"]))')
[ -n "$leader_idx" ] || fail "no leader found"
kill -9 "${PIDS[$leader_idx]}"; wait "${PIDS[$leader_idx]}" 2>/dev/null || true
PIDS[$leader_idx]=0
wait_for 60 "writes through the API server after the leader died" K create namespace after-kill
start_member "$leader_idx"
wait_for 30 "the killed member back" E --endpoints "http://127.0.0.1:${CLIENT[$leader_idx]}" endpoint health

log "8. a Deployment's pod scheduled and Running"
K create deployment sleeper --image="$BUSYBOX" -- sleep 3600 >/dev/null
K patch deployment sleeper --type=json \
  -p '[{"op":"add","path":"/spec/template/spec/containers/0/imagePullPolicy","value":"IfNotPresent"}]' >/dev/null
wait_for 180 "the pod Running" sh -c "\"$KUBECTL\" get pods -l app=sleeper -o jsonpath='{.items[*].status.phase}' | grep -qw Running"

hashes=$(E endpoint hashkv -w json | python3 -c 'import json,sys; print(len({s["HashKV"]["hash"] for s in json.load(sys.stdin)}))' 2>/dev/null || echo "?")
log "PASSED in $((SECONDS - started))s; Flotilla revision $(E endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])'), distinct hashkv across members: $hashes"
