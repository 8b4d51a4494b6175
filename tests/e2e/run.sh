#!/usr/bin/env bash
# End-to-end suite of the operator against whatever Kubernetes cluster KUBECONFIG names.
#
#   KUBECONFIG=… tests/e2e/run.sh [SCENARIO …]       # default: every scenario, in order
#
# It builds the image (scripts/build-image.sh), makes it available to the cluster
# (E2E_LOAD_IMAGE, e.g. "kind load docker-image --name flotilla-e2e"; nothing for a cluster
# whose kubelet runs on the local Docker), installs the operator with Helm (tests/e2e/helm.sh:
# a real `helm`, or the Helm v4 library from PyPI where none is installed), creates a
# RaftCluster and runs the scenarios below. Every scenario runs `flotilla-writer` as a pod that
# writes through the cluster's client Service the whole time, records every acknowledged put
# and checks at the end that each one is readable, that nothing unacknowledged appeared and
# that acknowledged order holds; a scenario passes only with lost=0.
#
#   install   RaftCluster of 3 Ready; etcdctl through the client Service; Helm NOTES right
#   scale     kubectl scale 3 → 5 → 3 → 1 → 3 under load; status, columns and Events follow
#   pods      delete a middle pod; then delete a pod with its claim (lost volume: the member is
#             removed and added again with a fresh identity)
#   operator  the operator is killed in the middle of a scale step; its successor finishes it
#   kill9     kill -9 of the flotilla process in a pod: the container restarts, same identity
#   upgrade   spec.image and a raft setting change while one member is frozen (SIGSTOP): the
#             operator waits, never takes a second member down, restarts the leader last
#   storage   spec.storage.size edited: refused with a condition, the cluster keeps serving
#   badspec   replicas: 0 refused by the API server; heartbeatTicks ≥ electionTicks gets
#             Reconciled=False InvalidSpec and an Event, and no StatefulSet
#   regrow    scale 3 → 5 → 3 → 5 with retentionOnScaleDown Delete (fresh members, no stale
#             volume) and Retain (refused with Reconciled=False StaleVolumeRetained until the
#             retained claims are deleted; the StatefulSet never grows onto them)
#   metrics   each pod's /metrics (pod IP, through the API server's proxy) and the operator's;
#             every metric the Grafana dashboard queries exists; reconciles per minute at idle
#   removed   `etcdctl member remove` of a member behind the operator's back: the member stops
#             and exits 1 naming itself; the operator reads that from the pod's termination
#             message, deletes the stale volume and the pod rejoins as a new member (needs pod
#             IPs routable from here, else SKIPPED)
#   alerts    a real Prometheus (tests/e2e/prometheus.py) configured from the chart's
#             PodMonitor, ServiceMonitor and PrometheusRule: every dashboard query returns
#             data; a member held down fires FlotillaMemberDown for it alone (and
#             FlotillaQuorumAtRisk matches), nothing else; needs `prometheus` and PyYAML and
#             pod IPs routable from here (local-k8s), else it is reported SKIPPED
#   tls       a second RaftCluster with spec.tls.mode Operator: certificate Secrets, etcdctl
#             over https with the admin client certificate (plaintext, an untrusting client
#             and member remove without a certificate refused), scaled 3 → 5 → 3 under a TLS
#             writer, one certificate per member left
#   backup    an S3 server pod (scripts/build-s3-image.sh); spec.backup with the backup-now
#             annotation and a schedule: both backups succeed; a new RaftCluster with
#             spec.bootstrap.fromBackup starts with every key
#   quorum    a third cluster loses 2 of 3 volumes: QuorumLost=True and the survivor left
#             alone; spec.recovery.allowDataLoss: 3 voters again with every acknowledged write
#
# Environment: FLOTILLA_IMAGE (flotilla:e2e), E2E_SKIP_BUILD=1 (use the image as it is),
# E2E_LOAD_IMAGE (command + args; the image name is appended), E2E_NAMESPACE (flotilla-e2e),
# E2E_KEEP=1 (leave everything installed), E2E_TIMEOUT (seconds per wait, 300),
# E2E_FIGURE_KEYS=N (backup and quorum first load N keys of 256 B with flotilla-load — built
# here with cargo, or FLOTILLA_LOAD names one — and compact, so their timings are for a store of that size: the figures
# the README quotes are for N=100000).
# Needs: kubectl, docker, python3 (for Helm from PyPI), etcdctl (Debian: etcd-client); for
# `alerts`: prometheus and python3-yaml (Debian), curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

IMAGE="${FLOTILLA_IMAGE:-flotilla:e2e}"
NS="${E2E_NAMESPACE:-flotilla-e2e}"
OPNS=flotilla-system
RELEASE=flotilla-operator
RC=demo
TIMEOUT="${E2E_TIMEOUT:-300}"
HELM="$ROOT/tests/e2e/helm.sh"
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(install scale regrow pods removed operator kill9 upgrade storage badspec metrics alerts tls backup quorum)
# Every other scenario works on the cluster `install` creates.
[ "${SCENARIOS[0]}" = install ] || SCENARIOS=(install "${SCENARIOS[@]}")
WORK="$(mktemp -d /tmp/flotilla-e2e.XXXXXX)"
SUMMARY="$WORK/summary"
SUITE_START=$SECONDS

log() { echo "--- $(date +%T) [$((SECONDS - SUITE_START))s] $*"; }
die() { echo "FAILED: $*" >&2; diagnostics >&2; exit 1; }

[ -n "${KUBECONFIG:-}" ] || { echo "FAILED: set KUBECONFIG to the cluster to test" >&2; exit 1; }
for tool in kubectl docker python3 etcdctl; do
  command -v "$tool" >/dev/null || { echo "FAILED: $tool not found" >&2; exit 1; }
done
export ETCDCTL_API=3

# `grep -q` in a pipeline under pipefail: grep exits at the first match, the writer gets
# SIGPIPE, and the pipeline fails although the line was there. grep to /dev/null reads it all.
matches() { grep "$@" >/dev/null; }
k() { kubectl "$@"; }
kn() { kubectl -n "$NS" "$@"; }

diagnostics() {
  echo "=== diagnostics"
  kn get raftcluster,sts,pods,pvc -o wide 2>&1 || true
  kn get raftcluster "$RC" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' 2>&1 || true
  kn get events --sort-by=.lastTimestamp 2>&1 | tail -30 || true
  k -n "$OPNS" logs deploy/"$RELEASE" --tail=60 2>&1 || true
}

# wait_for DESCRIPTION COMMAND…: retry until the command succeeds or TIMEOUT passes.
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${TIMEOUT}s waiting for: $what"
    sleep 1
  done
}

jp() { kn get raftcluster "$RC" -o jsonpath="$1" 2>/dev/null; }
cond() { jp "{.status.conditions[?(@.type==\"$1\")].status}"; }
# Every one of N members is a healthy voter, the StatefulSet is at N, the phase is Running.
settled() {
  local n=$1
  [ "$(jp '{.status.phase}')" = Running ] || return 1
  [ "$(jp '{.status.replicas}')" = "$n" ] || return 1
  [ "$(jp '{.status.readyReplicas}')" = "$n" ] || return 1
  [ "$(jp '{range .status.members[*]}{.role}/{.healthy}{"\n"}{end}' | grep -c '^Voter/true$')" = "$n" ] || return 1
  [ "$(jp '{.status.members[*].name}' | wc -w)" = "$n" ] || return 1
  [ "$(cond Available)" = True ]
}
member_id() { jp "{.status.members[?(@.name==\"$1\")].id}"; }
# Conditions for wait_for: functions, so each retry reads the cluster again.
claims_are() { [ "$(kn get pvc -o name | wc -l)" = "$1" ]; }
ns_gone() { ! k get namespace "$NS" >/dev/null 2>&1; }
pod_phase_is() { [ "$(kn get pod "$1" -o jsonpath='{.status.phase}' 2>/dev/null)" = "$2" ]; }
sts_at() { [ "$(kn get sts "$RC" -o jsonpath='{.spec.replicas}' 2>/dev/null)" = "$1" ]; }
restarted_since() { [ "$(restarts "$1")" -gt "$2" ]; }
pod_not_ready() {
  ! kn get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | matches True
}
member_replaced() { local id; id=$(member_id "$1"); [ -n "$id" ] && [ "$id" != "$2" ]; }

# --- the write checker ---------------------------------------------------------------------
writer_start() { # NAME PREFIX [TLS-SECRET [EXTRA-ARGS]]: with a client certificate Secret, over TLS
  local name=$1 prefix=$2 tls=${3:-} extra=${4:-}
  local args='' mounts='' volumes=''
  if [ -n "$tls" ]; then
    args=', --cacert, /tls/ca.crt, --cert, /tls/tls.crt, --key, /tls/tls.key'
    mounts="    volumeMounts: [{name: tls, mountPath: /tls, readOnly: true}]"
    volumes="  volumes: [{name: tls, secret: {secretName: $tls}}]"
  fi
  kn delete pod "$name" --ignore-not-found --wait=true >/dev/null
  cat <<YAML | kn apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata:
  name: $name
  labels: {app.kubernetes.io/name: flotilla-e2e-writer}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 200
  containers:
  - name: writer
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    command: [flotilla-writer, --endpoints, "$RC.$NS.svc:2379", --prefix, "$prefix",
              --workers, "4", --stop-file, /tmp/stop, --verify-timeout, 150s$args$extra]
$mounts
$volumes
YAML
  wait_for "writer $name running" pod_phase_is "$name" Running
  wait_for "writer $name acknowledged writes" writer_acked_some "$name"
}
writer_acked_some() { kn logs "$1" | matches -E 'progress acked=[1-9]'; }
# Stops the writer, waits for its verdict, appends "acked lost" to the scenario's numbers.
writer_finish() { # NAME
  local name=$1
  kn exec "$name" -- touch /tmp/stop
  wait_for "writer $name verdict" pod_done "$name"
  local result
  result=$(kn logs "$name" | grep -E '^(RESULT|VERIFY_ERROR)' | tail -1)
  echo "    $name: $result"
  kn logs "$name" | grep -E '^(note|lost|unexpected|out_of_order|revision)' | head -5 | sed 's/^/    /' || true
  [ "$(kn get pod "$name" -o jsonpath='{.status.phase}')" = Succeeded ] \
    || die "writer $name found a problem: $result"
  WRITER_ACKED=$(sed -E 's/.*acked=([0-9]+).*/\1/' <<<"$result")
  WRITER_LOST=$(sed -E 's/.*lost=([0-9]+).*/\1/' <<<"$result")
  kn delete pod "$name" --wait=false >/dev/null
}
pod_done() {
  local phase
  phase=$(kn get pod "$1" -o jsonpath='{.status.phase}')
  [ "$phase" = Succeeded ] || [ "$phase" = Failed ]
}

record() { # SCENARIO STARTED ACKED LOST
  printf '%-10s %8s %10s %6s\n' "$1" "$(($SECONDS - $2))" "$3" "$4" >>"$SUMMARY"
}

# Events the operator published about the RaftCluster, as "Reason: message" lines.
events() {
  kn get events --field-selector involvedObject.kind=RaftCluster,involvedObject.name="$RC" \
    -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' 2>/dev/null
}
events_have() { events | matches "^$1"; }
show() { kn get raftcluster "$RC"; }

# --- set-up ---------------------------------------------------------------------------------
setup() {
  if [ "${E2E_SKIP_BUILD:-0}" != 1 ]; then
    log "building $IMAGE"
    local t=$SECONDS
    scripts/build-image.sh "$IMAGE"
    echo "image build: $((SECONDS - t)) s" >>"$WORK/timings"
  fi
  docker image inspect "$IMAGE" >/dev/null || die "image $IMAGE does not exist"
  # A tag per image content: pods pin an image by tag, so a rebuilt image under the same tag
  # would leave an operator Deployment from an earlier run on the old binary.
  local id
  id=$(docker image inspect -f '{{.Id}}' "$IMAGE" | sed 's/^sha256://' | cut -c1-12)
  docker tag "$IMAGE" "${IMAGE%:*}:e2e-$id"
  IMAGE="${IMAGE%:*}:e2e-$id"
  log "testing image $IMAGE"
  if [ -n "${E2E_LOAD_IMAGE:-}" ]; then
    log "loading $IMAGE: $E2E_LOAD_IMAGE $IMAGE"
    $E2E_LOAD_IMAGE "$IMAGE"
  fi
  log "removing what an earlier run left"
  kn delete pod -l app.kubernetes.io/name=flotilla-e2e-writer --grace-period=0 --force >/dev/null 2>&1 || true
  kn delete raftcluster --all --wait=true --timeout=120s >/dev/null 2>&1 || true
  k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  wait_for "namespace $NS gone" ns_gone
  k create namespace "$NS" >/dev/null

  log "helm install (CRD from the chart, operator image $IMAGE)"
  local repo="${IMAGE%:*}" tag="${IMAGE##*:}"
  # CRDs are never upgraded by Helm: apply the chart's copy first, as the chart README says.
  k apply -f charts/flotilla-operator/crds/ >/dev/null
  "$HELM" upgrade --install "$RELEASE" charts/flotilla-operator --namespace "$OPNS" \
    --create-namespace --set image.repository="$repo" --set image.tag="$tag" \
    --set image.pullPolicy=IfNotPresent --set logJson=false --wait --timeout 180s
}

# --- scenarios ------------------------------------------------------------------------------
scenario_install() {
  local t=$SECONDS
  log "install: RaftCluster of 3"
  cat <<YAML | kn apply -f - >/dev/null
apiVersion: flotilla.dev/v1alpha1
kind: RaftCluster
metadata:
  name: $RC
spec:
  replicas: 3
  image: $IMAGE
  imagePullPolicy: IfNotPresent
  storage:
    size: 64Mi
YAML
  wait_for "3 voters, Running" settled 3
  show
  log "etcdctl through the client Service"
  # The Service's cluster IP where this host routes it (kube-proxy on this host, as with a
  # local node), else `kubectl port-forward` to the Service (kind).
  local ip pf=0
  ip=$(kn get svc "$RC" -o jsonpath='{.spec.clusterIP}')
  local ETCD=(etcdctl --endpoints="$ip:2379" --command-timeout=5s --dial-timeout=3s)
  if ! "${ETCD[@]}" endpoint health >/dev/null 2>&1; then
    local port=$((23000 + RANDOM % 2000))
    kn port-forward "svc/$RC" "$port:2379" >"$WORK/pf.log" 2>&1 &
    pf=$!
    ETCD=(etcdctl --endpoints="127.0.0.1:$port" --command-timeout=5s)
    wait_for "port-forward to svc/$RC" "${ETCD[@]}" endpoint health
  fi
  echo "    etcdctl ${ETCD[1]}"
  "${ETCD[@]}" put e2e/hello world >/dev/null
  [ "$("${ETCD[@]}" get e2e/hello --print-value-only)" = world ] || die "etcdctl get"
  "${ETCD[@]}" member list -w table
  [ "$("${ETCD[@]}" member list | wc -l)" = 3 ] || die "member list"
  [ "$pf" = 0 ] || kill "$pf" 2>/dev/null || true
  log "Helm NOTES"
  local notes
  notes=$("$HELM" get notes "$RELEASE" --namespace "$OPNS")
  grep -q "namespace $OPNS" <<<"$notes" || die "NOTES do not name the namespace"
  grep -q "image: $IMAGE" <<<"$notes" || die "NOTES do not show the image in use ($IMAGE)"
  grep -q "kubectl get raftcluster" <<<"$notes" || die "NOTES lack the kubectl line"
  writer_start w-install e2e/install/
  sleep 3
  writer_finish w-install
  record install "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

scale_to() { # N
  local n=$1 t=$SECONDS
  kn scale "raftcluster/$RC" --replicas="$n" >/dev/null
  wait_for "$n voters, Running" settled "$n"
  wait_for "StatefulSet at $n" sts_at "$n"
  echo "    scaled to $n in $((SECONDS - t)) s"
  show | sed 's/^/    /'
}

scenario_scale() {
  local t=$SECONDS
  log "scale 3 → 5 → 3 → 1 → 3 under load"
  writer_start w-scale e2e/scale/
  scale_to 5
  events_have PromotingLearner || die "no PromotingLearner Event"
  [ "$(cond Progressing)" = False ] || die "Progressing still True after scaling up"
  scale_to 3
  events_have ScalingDown || die "no ScalingDown Event"
  scale_to 1
  scale_to 3
  writer_finish w-scale
  wait_for "the claims of removed members deleted (3 left)" claims_are 3
  record scale "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

scenario_pods() {
  local t=$SECONDS
  log "delete a middle pod; then a pod with its claim"
  writer_start w-pods e2e/pods/
  local before
  before=$(member_id "$RC-1")
  kn delete pod "$RC-1" --wait=false >/dev/null
  wait_for "$RC-1 not Ready" pod_not_ready "$RC-1"
  wait_for "3 voters again" settled 3
  [ "$(member_id "$RC-1")" = "$before" ] || die "$RC-1 changed identity after a plain restart"
  echo "    $RC-1 restarted with its identity $before"

  log "lost volume: delete data-$RC-1 and $RC-1"
  kn delete pvc "data-$RC-1" --wait=false >/dev/null
  kn delete pod "$RC-1" --wait=false >/dev/null
  wait_for "$RC-1 replaced by a new member" member_replaced "$RC-1" "$before"
  wait_for "3 voters after the replacement" settled 3
  echo "    $RC-1: $before → $(member_id "$RC-1")"
  events | grep -E '^(ReplacingMember|ReplacingRemovedMember|RestartingPod|RecreatingPod)' | sed 's/^/    /' || true
  local removals
  removals=$(events | grep -c "^ReplacingMember: removing $RC-1" || true)
  [ "$removals" -le 1 ] || die "the operator removed $RC-1 $removals times"
  writer_finish w-pods
  record pods "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

operator_pod() { k -n "$OPNS" get pods -l app.kubernetes.io/name=flotilla-operator -o jsonpath='{.items[0].metadata.name}'; }
kill_operator() {
  local p
  p=$(operator_pod)
  k -n "$OPNS" delete pod "$p" --grace-period=0 --force >/dev/null 2>&1
  echo "    killed operator pod $p"
}
# The operator's count of actions of one kind (scale, promote, remove, …), from its /metrics.
actions_done() {
  k get --raw "/api/v1/namespaces/$OPNS/services/$RELEASE-metrics:8080/proxy/metrics" 2>/dev/null |
    awk -v k="$1" '$1 == "flotilla_operator_membership_changes_total{kind=\"" k "\"}" {print $2}'
}
more_than() { local n; n=$(actions_done "$1"); [ -n "$n" ] && [ "${n%.*}" -gt "$2" ]; }
# Scales to N and kills the operator right after its first action of KIND: the step is then
# under way (the StatefulSet or the configuration has moved) and not finished.
scale_and_kill_operator() { # N KIND
  local before
  before=$(actions_done "$2"); before=${before%.*}
  kn scale "raftcluster/$RC" --replicas="$1" >/dev/null
  wait_for "the operator's first $2 action" more_than "$2" "${before:-0}"
  echo "    mid-step: StatefulSet at $(kn get sts "$RC" -o jsonpath='{.spec.replicas}'), configuration $(jp '{.status.members[*].name}')"
  kill_operator
}

scenario_operator() {
  local t=$SECONDS
  log "operator killed in the middle of a scale step"
  writer_start w-operator e2e/operator/
  scale_and_kill_operator 5 scale
  wait_for "5 voters, Running" settled 5
  scale_and_kill_operator 3 remove
  wait_for "3 voters, Running" settled 3
  wait_for "StatefulSet at 3" sts_at 3
  writer_finish w-operator
  record operator "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

restarts() { kn get pod "$1" -o jsonpath='{.status.containerStatuses[0].restartCount}'; }

# Runs SCRIPT (bash) as pod POD on the node of member VICTIM, in the host's PID namespace, as
# root, with `pids` defined: the PIDs of VICTIM's flotilla process (the container's PID 1 is
# flotilla itself, which its own PID namespace cannot SIGKILL or SIGSTOP; the host's can).
host_pid_pod() { # POD VICTIM SCRIPT
  local pod=$1 victim=$2 script=$3 node
  node=$(kn get pod "$victim" -o jsonpath='{.spec.nodeName}')
  kn delete pod "$pod" --ignore-not-found --wait=true >/dev/null
  {
    cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $pod}
spec:
  nodeName: $node
  hostPID: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    securityContext: {runAsUser: 0}
    command:
    - bash
    - -c
    - |
YAML
    sed 's/^/      /' <<SCRIPT
pids() {
  for p in /proc/[0-9]*; do
    tr '\0' ' ' <"\$p/cmdline" 2>/dev/null | grep -q "^flotilla node --name $victim " && echo "\${p#/proc/}"
  done
}
$script
SCRIPT
  } | kn apply -f - >/dev/null
}

# Sends SIGNAL (KILL, STOP, CONT) to the flotilla process of member NAME.
signal_member() { # NAME SIGNAL
  local victim=$1 sig=$2
  host_pid_pod signaller "$victim" '
for p in $(pids); do echo "kill -'"$sig"' $p"; kill -'"$sig"' "$p" && exit 0; done
echo "no flotilla process of '"$victim"' found"; exit 1'
  wait_for "signaller done" pod_done signaller
  kn logs signaller | sed 's/^/    /'
  [ "$(kn get pod signaller -o jsonpath='{.status.phase}')" = Succeeded ] || die "could not signal flotilla in $victim"
  kn delete pod signaller --wait=false >/dev/null
}

scenario_removed() {
  local t=$SECONDS victim="" leader ip id
  leader=$(jp '{.status.leader}')
  for m in $(jp '{.status.members[*].name}'); do [ "$m" != "$leader" ] && victim=$m; done
  ip=$(kn get pod "$leader" -o jsonpath='{.status.podIP}')
  if ! pod_ip_routable "$ip" 2379 2>/dev/null; then
    echo "    SKIPPED: pod IPs are not routable from here"
    printf '%-10s %8s %10s %6s  %s\n' removed - - - "SKIPPED: pod IPs not routable" >>"$SUMMARY"
    return 0
  fi
  log "etcdctl member remove $victim behind the operator's back"
  writer_start w-removed e2e/removed/
  id=$(member_id "$victim")
  ETCDCTL_API=3 etcdctl --endpoints "http://$ip:2379" member remove "$id" | sed 's/^/    /'
  wait_for "$victim rejoined as a new member" member_replaced "$victim" "$id"
  wait_for "3 voters" settled 3
  # The event names the removed id: from the member's Status while it still ran or, once it
  # stopped serving, from the line it exited with (the pod's termination message).
  events | grep -E "^ReplacingRemovedMember: $victim holds member $id " | sed 's/^/    /' \
    || die "no ReplacingRemovedMember Event naming $victim's removed id $id"
  echo "    $victim: $id → $(member_id "$victim")"
  writer_finish w-removed
  record removed "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

scenario_kill9() {
  local t=$SECONDS victim="$RC-2"
  log "kill -9 of flotilla in $victim"
  writer_start w-kill9 e2e/kill9/
  local before id
  before=$(restarts "$victim")
  id=$(member_id "$victim")
  signal_member "$victim" KILL
  wait_for "$victim restarted" restarted_since "$victim" "$before"
  wait_for "3 voters" settled 3
  [ "$(member_id "$victim")" = "$id" ] || die "$victim came back as $(member_id "$victim"), not $id"
  echo "    $victim restarted (restartCount $before → $(restarts "$victim")) as member $id"
  writer_finish w-kill9
  record kill9 "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

reconciled_reason_is() {
  [ "$(jp '{.status.conditions[?(@.type=="Reconciled")].reason}')" = "$1" ]
}
member_unhealthy() {
  [ "$(jp "{.status.members[?(@.name==\"$1\")].healthy}")" = false ]
}
pod_uids() { kn get pods -l app.kubernetes.io/instance="$RC" -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}' | sort; }
updated_all() { [ "$(jp '{.status.updatedReplicas}')" = "$1" ] && settled "$1"; }
# Samples, every second until STOP_FILE appears, how many of the cluster's pods are not Ready;
# prints the most seen at once.
watch_not_ready() { # STOP_FILE
  local most=0 n
  while [ ! -e "$1" ]; do
    n=$(kn get pods -l app.kubernetes.io/instance="$RC" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -vc True || true)
    [ "$n" -gt "$most" ] && most=$n
    sleep 1
  done
  echo "$most"
}

scenario_upgrade() {
  local t=$SECONDS
  log "rolling upgrade (image and a raft setting) under load, with one member down at the start"
  writer_start w-upgrade e2e/upgrade/
  local second="$IMAGE-b"
  docker tag "$IMAGE" "$second"
  [ -z "${E2E_LOAD_IMAGE:-}" ] || $E2E_LOAD_IMAGE "$second"
  local leader down m
  leader=$(jp '{.status.leader}')
  for m in $(jp '{.status.members[*].name}'); do [ "$m" != "$leader" ] && down=$m; done
  echo "    leader $leader; freezing $down (SIGSTOP) before the change"
  signal_member "$down" STOP
  wait_for "$down unhealthy" member_unhealthy "$down"
  local uids
  uids=$(pod_uids)
  kn patch raftcluster "$RC" --type merge \
    -p "{\"spec\":{\"image\":\"$second\",\"raft\":{\"snapshotThreshold\":20000}}}" >/dev/null
  wait_for "the operator to say it waits" events_have UpdateWaiting
  # Nothing may restart while a member is down: watch for a while (an absence, so a fixed
  # window), well below the liveness probe's 60 s that would restart the frozen member.
  sleep 15
  [ "$(pod_uids)" = "$uids" ] || die "a pod was replaced while $down was down"
  events | grep '^UpdateWaiting' | tail -1 | sed 's/^/    /'
  show | sed 's/^/    /'
  : >"$WORK/stop-watch"; rm -f "$WORK/stop-watch"
  watch_not_ready "$WORK/stop-watch" >"$WORK/not-ready" &
  local watcher=$!
  signal_member "$down" CONT
  wait_for "every member on the new template" updated_all 3
  touch "$WORK/stop-watch"; wait "$watcher"
  local most; most=$(cat "$WORK/not-ready")
  echo "    most members not Ready at once during the update: $most"
  [ "$most" -le 1 ] || die "$most members were down at once during the update"
  kn get events --field-selector involvedObject.kind=RaftCluster,involvedObject.name="$RC" \
    --sort-by=.metadata.creationTimestamp -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' \
    | grep -E '^(RestartingForUpdate|TransferringLeadership)' | tail -4 | sed 's/^/    /' | tee "$WORK/upgrade-events"
  # The leader restarts last, after leadership moved off it. Leadership may also move on its
  # own during the update (an election while members restart) onto a member already updated;
  # then the last member due is a follower and needs no move. Either way no member is
  # restarted while it leads: the last restart comes right after a move off that member, or
  # its Event names another leader.
  local moved restarted led_by
  moved=$(tail -2 "$WORK/upgrade-events" | sed -n 's/^    TransferringLeadership: moving leadership off \([^ ]*\) .*/\1/p')
  restarted=$(tail -1 "$WORK/upgrade-events" | sed -n 's/^    RestartingForUpdate: restarting \([^ ]*\) .*/\1/p')
  led_by=$(tail -1 "$WORK/upgrade-events" | sed -n 's/.*; leader \([^ )]*\))$/\1/p')
  if [ -n "$moved" ]; then
    [ "$moved" = "$restarted" ] || die "leadership moved off $moved, but $restarted was restarted"
  else
    [ -n "$led_by" ] && [ "$led_by" != "$restarted" ] && [ "$led_by" != unknown ] \
      || die "the last member restarted ($restarted) led (leader ${led_by:-?}) and was not moved off first"
    echo "    leadership had moved on its own to $led_by before $restarted was due: no move needed"
  fi
  [ "$(kn get sts "$RC" -o jsonpath='{.spec.template.spec.containers[0].image}')" = "$second" ] || die "StatefulSet image"
  for m in $(jp '{.status.members[*].name}'); do
    [ "$(kn get pod "$m" -o jsonpath='{.spec.containers[0].image}')" = "$second" ] || die "$m not on $second"
  done
  show | sed 's/^/    /'
  writer_finish w-upgrade
  record upgrade "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

scenario_storage() {
  local t=$SECONDS
  log "editing spec.storage.size: refused with a condition, the cluster keeps serving"
  writer_start w-storage e2e/storage/
  local gen
  if ! kn patch raftcluster "$RC" --type merge -p '{"spec":{"storage":{"size":"128Mi"}}}' >"$WORK/patch" 2>&1; then
    echo "    the API server refused the change: $(cat "$WORK/patch")"
  else
    gen=$(kn get raftcluster "$RC" -o jsonpath='{.metadata.generation}')
    wait_for "Reconciled=False StorageImmutable" reconciled_reason_is StorageImmutable
    kn get raftcluster "$RC" -o jsonpath='{.status.conditions[?(@.type=="Reconciled")].message}' | sed 's/^/    /'; echo
    [ "$(jp '{.status.observedGeneration}')" = "$gen" ] || die "status stopped following the spec"
    [ "$(kn get pvc "data-$RC-0" -o jsonpath='{.spec.resources.requests.storage}')" = 64Mi ] || die "claim changed"
    settled 3 || wait_for "still 3 voters" settled 3
    kn patch raftcluster "$RC" --type merge -p '{"spec":{"storage":{"size":"64Mi"}}}' >/dev/null
    wait_for "Reconciled=True again" reconciled_reason_is ReconcileSucceeded
  fi
  writer_finish w-storage
  record storage "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

scenario_badspec() {
  local t=$SECONDS
  log "bad input: rejected by the schema, or a condition and nothing touched"
  local out
  if out=$(cat <<YAML | kn apply -f - 2>&1
apiVersion: flotilla.dev/v1alpha1
kind: RaftCluster
metadata: {name: zero}
spec: {replicas: 0, image: $IMAGE}
YAML
  ); then die "replicas: 0 was accepted: $out"; fi
  echo "    replicas: 0 → $(tail -1 <<<"$out")"
  cat <<YAML | kn apply -f - >/dev/null
apiVersion: flotilla.dev/v1alpha1
kind: RaftCluster
metadata: {name: bad}
spec:
  replicas: 3
  image: $IMAGE
  raft: {heartbeatTicks: 10, electionTicks: 10}
YAML
  wait_for "bad: Reconciled=False InvalidSpec" bad_is_invalid
  echo "    bad: $(kn get raftcluster bad -o jsonpath='{.status.conditions[?(@.type=="Reconciled")].message}')"
  ! kn get sts bad >/dev/null 2>&1 || die "a StatefulSet was created for an invalid spec"
  kn get events --field-selector involvedObject.name=bad,reason=InvalidSpec -o name | matches . || die "no InvalidSpec Event"
  kn delete raftcluster bad --wait=true >/dev/null
  settled 3 || die "the running cluster was disturbed"
  record badspec "$t" - 0
}
bad_is_invalid() {
  [ "$(kn get raftcluster bad -o jsonpath='{.status.conditions[?(@.type=="Reconciled")].reason}')" = InvalidSpec ]
}

scenario_metrics() {
  local t=$SECONDS
  log "metrics: every pod's /metrics and the operator's; the dashboard's queries"
  local pods p
  pods=$(jp '{.status.members[*].name}')
  : >"$WORK/node-metrics"
  for p in $pods; do
    local ip
    ip=$(kn get pod "$p" -o jsonpath='{.status.podIP}')
    k get --raw "/api/v1/namespaces/$NS/pods/$p:9379/proxy/metrics" >"$WORK/metrics-$p" \
      || die "scraping $p ($ip:9379) through the API server"
    grep -q '^flotilla_' "$WORK/metrics-$p" || die "$p serves no flotilla_ metrics"
    echo "    $p ($ip:9379): $(grep -c '^flotilla_' "$WORK/metrics-$p") flotilla_ samples"
    cat "$WORK/metrics-$p" >>"$WORK/node-metrics"
  done
  local svc="$RELEASE-metrics"
  k get --raw "/api/v1/namespaces/$OPNS/services/$svc:8080/proxy/metrics" >"$WORK/operator-metrics" \
    || die "scraping the operator"
  grep -q '^flotilla_operator_reconciliations_total' "$WORK/operator-metrics" || die "operator metrics"
  cat "$WORK/operator-metrics" >>"$WORK/node-metrics"
  python3 - "$ROOT/deploy/grafana/flotilla.json" "$WORK/node-metrics" <<'PY'
import json, re, sys
dash = json.load(open(sys.argv[1]))
have = set()
for line in open(sys.argv[2]):
    if line and not line.startswith('#'):
        have.add(re.split(r'[{ ]', line, 1)[0])
exprs = []
def walk(x):
    if isinstance(x, dict):
        if isinstance(x.get('expr'), str):
            exprs.append(x['expr'])
        for v in x.values(): walk(v)
    elif isinstance(x, list):
        for v in x: walk(v)
walk(dash)
missing = []
for e in exprs:
    for name in set(re.findall(r'\b(flotilla_[a-z0-9_]+)', e)):
        if name not in have:
            missing.append((name, e))
print(f"    dashboard: {len(exprs)} queries, metric names all present: {not missing}")
for name, e in missing:
    print(f"    MISSING {name} in: {e}")
sys.exit(1 if missing else 0)
PY
  log "reconciles per minute at idle (60 s)"
  local a b
  a=$(k get --raw "/api/v1/namespaces/$OPNS/services/$svc:8080/proxy/metrics" | awk '/^flotilla_operator_reconciliations_total/ {print $2}')
  sleep 60
  b=$(k get --raw "/api/v1/namespaces/$OPNS/services/$svc:8080/proxy/metrics" | awk '/^flotilla_operator_reconciliations_total/ {print $2}')
  echo "    reconciles in 60 s at idle: $((${b%.*} - ${a%.*}))" | tee -a "$WORK/timings"
  log "reconciles per minute under write load (60 s)"
  writer_start w-metrics e2e/metrics/
  a=$(k get --raw "/api/v1/namespaces/$OPNS/services/$svc:8080/proxy/metrics" | awk '/^flotilla_operator_reconciliations_total/ {print $2}')
  sleep 60
  b=$(k get --raw "/api/v1/namespaces/$OPNS/services/$svc:8080/proxy/metrics" | awk '/^flotilla_operator_reconciliations_total/ {print $2}')
  echo "    reconciles in 60 s under write load: $((${b%.*} - ${a%.*}))" | tee -a "$WORK/timings"
  writer_finish w-metrics
  record metrics "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

# N voters healthy, N pods Ready, Available — whatever the spec asks (settled also wants it met).
serving() {
  [ "$(jp '{.status.readyReplicas}')" = "$1" ] || return 1
  [ "$(jp '{range .status.members[*]}{.role}/{.healthy}{"\n"}{end}' | grep -c '^Voter/true$')" = "$1" ] || return 1
  [ "$(cond Available)" = True ]
}
claim_exists() { kn get pvc "data-$RC-$1" >/dev/null 2>&1; }
sts_stays_at() { # N SECONDS: the StatefulSet keeps its size for a while (an absence, so a window)
  local end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do sts_at "$1" || return 1; sleep 2; done
}
# Events saying a member started on a volume it should not have (an old identity, a refused
# join): none may appear while the cluster regrows.
stale_start_events() { events | grep -cE '^(ReplacingRemovedMember|RecreatingPod|RestartingPod)' || true; }
# Member ids of the ordinals ≥ 3, "name=id" per line.
high_ids() { jp '{range .status.members[*]}{.name}={.id}{"\n"}{end}' | grep -E "^$RC-[34]=" | sort; }

scenario_regrow() {
  local t=$SECONDS
  log "scale 3 → 5 → 3 → 5 with retentionOnScaleDown Delete, then with Retain"
  writer_start w-regrow e2e/regrow/
  local stale0
  stale0=$(stale_start_events)
  kn patch raftcluster "$RC" --type merge -p '{"spec":{"storage":{"retentionOnScaleDown":"Delete"}}}' >/dev/null
  scale_to 5
  local before after
  before=$(high_ids)
  scale_to 3
  wait_for "Delete: the claims of demo-3 and demo-4 deleted" claims_are 3
  scale_to 5
  after=$(high_ids)
  echo "    Delete: ordinals 3 and 4 before: $(echo $before), after: $(echo $after)"
  [ -n "$after" ] && [ -z "$(comm -12 <(echo "$before") <(echo "$after"))" ] \
    || die "a regrown member kept its old identity (started on a stale volume)"
  [ "$(stale_start_events)" = "$stale0" ] || die "a member started on a stale volume: $(events | tail -5)"

  kn patch raftcluster "$RC" --type merge -p '{"spec":{"storage":{"retentionOnScaleDown":"Retain"}}}' >/dev/null
  before=$(high_ids)
  scale_to 3
  claim_exists 3 && claim_exists 4 || die "Retain: the claims of the removed members are gone"
  kn scale "raftcluster/$RC" --replicas=5 >/dev/null
  wait_for "Retain: Reconciled=False StaleVolumeRetained" reconciled_reason_is StaleVolumeRetained
  kn get raftcluster "$RC" -o jsonpath='{.status.conditions[?(@.type=="Reconciled")].message}' | sed 's/^/    /'; echo
  events_have StaleVolumeRetained || die "no StaleVolumeRetained Event"
  sts_stays_at 3 10 || die "Retain: the StatefulSet grew onto a retained volume"
  serving 3 || die "Retain: the cluster stopped serving while refusing"
  echo "    Retain: refused with a condition, StatefulSet still at 3; deleting the retained claims"
  kn delete pvc "data-$RC-3" "data-$RC-4" --wait=false >/dev/null
  wait_for "5 voters once the claims are gone" settled 5
  after=$(high_ids)
  echo "    Retain: ordinals 3 and 4 before: $(echo $before), after: $(echo $after)"
  [ -z "$(comm -12 <(echo "$before") <(echo "$after"))" ] || die "a member reused a retained identity"
  [ "$(stale_start_events)" = "$stale0" ] || die "a member started on a stale volume: $(events | tail -5)"

  kn patch raftcluster "$RC" --type merge -p '{"spec":{"storage":{"retentionOnScaleDown":"Delete"}}}' >/dev/null
  scale_to 3
  wait_for "the claims of removed members deleted (3 left)" claims_are 3
  writer_finish w-regrow
  record regrow "$t" "$WRITER_ACKED" "$WRITER_LOST"
}

# --- alerts: a real Prometheus, configured from the chart's PodMonitor, ServiceMonitor and
# PrometheusRule (tests/e2e/prometheus.py), scraping the members and the operator. Debian's
# Prometheus has no Kubernetes service discovery: prometheus.py discovers every 5 s into
# file_sd files carrying the same __meta_kubernetes_* labels, and the monitors' relabelings
# run on them unchanged.
PROM_PID=
PROM_SD_PID=
PROM_URL=
prom() { python3 "$ROOT/tests/e2e/prometheus.py" "$@"; }
stop_prometheus() {
  [ -z "$PROM_SD_PID" ] || kill "$PROM_SD_PID" 2>/dev/null || true
  [ -z "$PROM_PID" ] || kill "$PROM_PID" 2>/dev/null || true
  PROM_PID= PROM_SD_PID=
}
prom_has() { [ -n "$(prom query "$PROM_URL" "$1")" ]; }
prom_ready() { curl -fsS "$PROM_URL/-/ready" >/dev/null; }
alert_is() { # STATE NAME [LABEL=VALUE]
  prom alerts "$PROM_URL" | grep -E "^$1 $2( |$)" | matches -- "${3:-}"
}
pod_ip_routable() { # IP PORT
  python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)' "$1" "$2"
}
alerts_skip() { echo "    SKIPPED: $1"; printf '%-10s %8s %10s %6s  %s\n' alerts - - - "SKIPPED: $1" >>"$SUMMARY"; }

# Keeps the flotilla process of pod NAME stopped (SIGSTOP), and every process its container
# restarts with, until the pod `holder` is deleted: the member is hung, its /metrics and
# peer port unanswered, and its pod and IP stay (so the target stays, with up == 0).
hold_member_down() { # NAME
  host_pid_pod holder "$1" '
release() { for p in $(pids); do kill -CONT "$p"; done; echo released; exit 0; }
trap release TERM
echo holding
while :; do
  for p in $(pids); do kill -STOP "$p" 2>/dev/null; done
  sleep 0.5 & wait $!
done'
  wait_for "holder running" pod_phase_is holder Running
}

scenario_alerts() {
  local t=$SECONDS
  log "alerts: Prometheus with the chart's monitors and rules; dashboard queries; a member down"
  command -v prometheus >/dev/null || { alerts_skip "no prometheus binary (Debian: prometheus)"; return 0; }
  python3 -c 'import yaml' 2>/dev/null || { alerts_skip "no PyYAML (Debian: python3-yaml)"; return 0; }
  local ip0
  ip0=$(kn get pod "$RC-0" -o jsonpath='{.status.podIP}')
  pod_ip_routable "$ip0" 9379 || { alerts_skip "pod IPs ($ip0) are not routable from here"; return 0; }

  local dir="$WORK/prometheus"
  mkdir -p "$dir"
  "$HELM" template "$RELEASE" charts/flotilla-operator --namespace "$OPNS" \
    --set serviceMonitor.enabled=true --set prometheusRule.enabled=true \
    --set serviceMonitor.interval=5s >"$dir/chart.yaml"
  prom config "$dir/chart.yaml" "$dir" 5s | sed 's/^/    /'
  prom discover "$dir" || die "discovering targets with kubectl"
  if ! promtool check config "$dir/prometheus.yml" >"$dir/check" 2>&1; then
    cat "$dir/check"; die "promtool rejects the generated configuration"
  fi
  ( while sleep 5; do prom discover "$dir" 2>/dev/null || true; done ) &
  PROM_SD_PID=$!
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  PROM_URL="http://127.0.0.1:$port"
  prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$dir/log" 2>&1 &
  PROM_PID=$!
  trap stop_prometheus EXIT
  wait_for "Prometheus ready on $PROM_URL" prom_ready
  writer_start w-alerts e2e/alerts/
  wait_for "3 members scraped, up, labelled service=$RC" \
    prom_has "count(up{job=\"flotilla-members\",namespace=\"$NS\",service=\"$RC\"} == 1) == 3"
  wait_for "the operator scraped and up" prom_has 'up{job="flotilla-operator"} == 1'
  wait_for "the operator's condition gauges keep the cluster's namespace" \
    prom_has "flotilla_operator_cluster_condition{namespace=\"$NS\",name=\"$RC\",type=\"Available\"} == 1"
  # rate()/increase() need two samples in their window.
  wait_for "two scrapes of every member" prom_has "count(count_over_time(up{job=\"flotilla-members\",service=\"$RC\"}[1m]) >= 3) == 3"

  log "every query of the Grafana dashboard returns data"
  prom_has "count by (namespace) (flotilla_server_has_leader{namespace=\"$NS\"})" \
    || die "dashboard variable \$namespace would not offer $NS"
  prom_has "count by (service) (flotilla_server_has_leader{namespace=\"$NS\",service=\"$RC\"})" \
    || die "dashboard variable \$cluster would not offer $RC"
  python3 - "$ROOT/deploy/grafana/flotilla.json" >"$dir/exprs" <<'PY'
import json, sys
def walk(x):
    if isinstance(x, dict):
        if isinstance(x.get('expr'), str):
            print(x['expr'])
        for v in x.values(): walk(v)
    elif isinstance(x, list):
        for v in x: walk(v)
walk(json.load(open(sys.argv[1]))['panels'])
PY
  local expr q n empty=0 total=0
  while IFS= read -r expr; do
    q=${expr//\$namespace/$NS}; q=${q//\$cluster/$RC}
    n=$(prom query "$PROM_URL" "$q" | wc -l) || die "query failed: $q"
    total=$((total + 1))
    if [ "$n" = 0 ]; then empty=$((empty + 1)); echo "    NO DATA: $q"; fi
  done <"$dir/exprs"
  echo "    $total dashboard queries, $((total - empty)) return data" | tee -a "$WORK/timings"
  [ "$empty" = 0 ] || die "$empty dashboard queries return no data"
  ! alert_is firing FlotillaMemberDown || die "FlotillaMemberDown fires with every member up"
  ! alert_is firing FlotillaOperatorDown || die "FlotillaOperatorDown fires with the operator up"

  local leader victim m
  leader=$(jp '{.status.leader}')
  for m in $(jp '{.status.members[*].name}'); do [ "$m" != "$leader" ] && victim=$m; done
  log "holding $victim down (SIGSTOP, kept on every restart) until FlotillaMemberDown fires"
  local down_at=$SECONDS
  hold_member_down "$victim"
  wait_for "$victim's target down" prom_has "up{job=\"flotilla-members\",pod=\"$victim\"} == 0"
  wait_for "FlotillaMemberDown pending for $victim" alert_is pending FlotillaMemberDown "pod=$victim"
  local saved=$TIMEOUT
  TIMEOUT=$((saved > 330 ? saved : 330))
  wait_for "FlotillaMemberDown firing for $victim (for: 3m)" alert_is firing FlotillaMemberDown "pod=$victim"
  TIMEOUT=$saved
  echo "    FlotillaMemberDown fired $((SECONDS - down_at)) s after $victim was stopped" | tee -a "$WORK/timings"
  prom alerts "$PROM_URL" | sed 's/^/    /'
  [ "$(prom alerts "$PROM_URL" | grep -c '^firing FlotillaMemberDown ')" = 1 ] \
    || die "FlotillaMemberDown fires for more than the stopped member"
  ! alert_is firing FlotillaOperatorDown || die "FlotillaOperatorDown fires for a member's outage"
  alert_is '(pending|firing)' FlotillaQuorumAtRisk "name=$RC" \
    || die "FlotillaQuorumAtRisk does not match a 3-member cluster with one member down"
  ! alert_is '(pending|firing)' FlotillaQuorumLost || die "FlotillaQuorumLost matches with 2 of 3 up"

  log "releasing $victim"
  kn delete pod holder --wait=true >/dev/null
  wait_for "$victim scraped again" prom_has "up{job=\"flotilla-members\",pod=\"$victim\"} == 1"
  wait_for "FlotillaMemberDown resolved" bash -c "! python3 '$ROOT/tests/e2e/prometheus.py' alerts '$PROM_URL' | grep -q FlotillaMemberDown"
  wait_for "3 voters, Running" settled 3
  writer_finish w-alerts
  stop_prometheus
  record alerts "$t" "$WRITER_ACKED" "$WRITER_LOST"
}


# --- TLS, backups, quorum loss ----------------------------------------------------------------
# etcdctl from this host to a cluster through `kubectl port-forward` (127.0.0.1 is in every
# member's certificate); sets PF (the port-forward's pid) and E (the etcdctl command).
etcdctl_to() { # CLUSTER [TLS-DIR]
  # The Service's cluster IP where this host routes it (kube-proxy on this host, as local-k8s),
  # else `kubectl port-forward` (127.0.0.1 is in every member's certificate). Over the cluster
  # IP, which no certificate names, TLS checks the chain but not the name
  # (--insecure-skip-tls-verify is etcdctl's only way to do that); the node's tests check names.
  local ip port tls=()
  ip=$(kn get svc "$1" -o jsonpath='{.spec.clusterIP}')
  PF=0
  if [ -n "${2:-}" ]; then
    tls=(--cacert "$2/ca.crt" --cert "$2/tls.crt" --key "$2/tls.key")
    E=(etcdctl --endpoints="https://$ip:2379" "${tls[@]}" --insecure-skip-tls-verify --command-timeout=10s)
  else
    E=(etcdctl --endpoints="$ip:2379" --command-timeout=10s --dial-timeout=3s)
  fi
  "${E[@]}" endpoint health >/dev/null 2>&1 && return 0
  port=$((25000 + RANDOM % 3000))
  kn port-forward "svc/$1" "$port:2379" >"$WORK/pf-$1.log" 2>&1 &
  PF=$!
  if [ -n "${2:-}" ]; then
    E=(etcdctl --endpoints="https://127.0.0.1:$port" "${tls[@]}" --command-timeout=10s)
  else
    E=(etcdctl --endpoints="127.0.0.1:$port" --command-timeout=10s)
  fi
  wait_for "etcdctl to $1" "${E[@]}" endpoint health
}
# Keys under a prefix (etcdctl 3.4 has no --count-only).
# Loads E2E_FIGURE_KEYS keys of 256 B under load/ through the cluster IP of Service $1 and
# compacts to the revision reached, so the store is that many live keys and no history.
figure_load() { # SERVICE
  local n=${E2E_FIGURE_KEYS:-0}
  [ "$n" -gt 0 ] || return 0
  local load=${FLOTILLA_LOAD:-}
  if [ -z "$load" ]; then
    cargo build --quiet --release -p flotilla-node --bin flotilla-load
    load="$ROOT/target/release/flotilla-load"
  fi
  local ip; ip=$(kn get svc "$1" -o jsonpath='{.spec.clusterIP}')
  local l=$SECONDS
  "$load" --endpoints "$ip:2379" --clients 64 --conns 8 \
    --total "$n" --key-space "$n" --sequential-keys --value-size 256 --label figure | sed 's/^/    /'
  local rev
  rev=$(etcdctl --endpoints="$ip:2379" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')
  etcdctl --endpoints="$ip:2379" compact "$rev" --physical >/dev/null
  echo "    loaded $n keys of 256 B in $((SECONDS - l)) s; compacted at revision $rev"
}
member_keys() { # POD PREFIX: the keys that member holds itself (a serializable read)
  local ip; ip=$(kn get pod "$1" -o jsonpath='{.status.podIP}')
  etcdctl --endpoints="$ip:2379" --command-timeout=10s --dial-timeout=3s \
    get "$2" --prefix --keys-only --consistency=s 2>/dev/null | grep -c . || true
}
member_has() { [ "$(member_keys "$1" "$2")" = "$3" ]; }
count_keys() { "${E[@]}" get "$1" --prefix --keys-only | grep -c . || true; }
secret_file() { kn get secret "$1" -o jsonpath="{.data.${2//./\\.}}" | base64 -d; }
new_cluster() { # NAME REPLICAS EXTRA-SPEC-YAML
  cat <<YAML | kn apply -f - >/dev/null
apiVersion: flotilla.dev/v1alpha1
kind: RaftCluster
metadata:
  name: $1
spec:
  replicas: $2
  image: $IMAGE
  imagePullPolicy: IfNotPresent
  storage:
    size: 64Mi
$3
YAML
}

bundle_keys() {
  kn get secret "$RC-tls" -o jsonpath='{.data}' \
    | python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin))))'
}
bundle_is() { [ "$(bundle_keys)" = "$1" ]; }
scenario_tls() {
  local t=$SECONDS RC=tls d="$WORK/tls"
  log "tls: a RaftCluster with operator-managed certificates, 3 → 5 → 3 under writes"
  new_cluster "$RC" 3 "  tls: {mode: Operator}"
  wait_for "3 TLS voters, Running" settled 3
  [ "$(cond CertificatesReady)" = True ] || die "CertificatesReady is not True"
  kn get secret "$RC-tls" "$RC-ca" "$RC-client-tls" >/dev/null || die "certificate Secrets missing"
  mkdir -p "$d"
  for f in ca.crt tls.crt tls.key; do secret_file "$RC-client-tls" "$f" >"$d/$f"; done
  etcdctl_to "$RC" "$d"
  local url=${E[1]#--endpoints=}
  local insecure=()
  [[ " ${E[*]} " == *" --insecure-skip-tls-verify "* ]] && insecure=(--insecure-skip-tls-verify)
  "${E[@]}" put e2e/tls hello >/dev/null
  [ "$("${E[@]}" get e2e/tls --print-value-only)" = hello ] || die "etcdctl get over TLS"
  echo "    etcdctl --cacert --cert --key over https: ok"
  etcdctl --endpoints="${url/https/http}" --command-timeout=3s get e2e/tls >/dev/null 2>&1 \
    && die "the TLS port served plaintext"
  etcdctl --endpoints="$url" --command-timeout=3s get e2e/tls >/dev/null 2>&1 \
    && die "a client that does not trust the cluster's CA was served"
  local id; id=$(member_id "$RC-2")
  if etcdctl --endpoints="$url" --cacert "$d/ca.crt" "${insecure[@]}" --command-timeout=5s member remove "$id" \
      >"$WORK/rm.out" 2>&1; then die "member remove without a client certificate succeeded"; fi
  grep -qi "permission" "$WORK/rm.out" || die "member remove without a certificate: $(cat "$WORK/rm.out")"
  echo "    member remove without a client certificate: $(tail -1 "$WORK/rm.out")"
  [ "$PF" = 0 ] || kill "$PF" 2>/dev/null || true
  writer_start w-tls e2e/tls/ "$RC-client-tls"
  scale_to 5
  scale_to 3
  writer_finish w-tls
  wait_for "one certificate per member in $RC-tls" bundle_is "ca.crt tls-0.crt tls-0.key tls-1.crt tls-1.key tls-2.crt tls-2.key"
  echo "    $RC-tls holds: $(bundle_keys)"
  record tls "$t" "$WRITER_ACKED" "$WRITER_LOST"
  kn delete raftcluster "$RC" --wait=true --timeout=120s >/dev/null
}

S3_IMAGE="${E2E_S3_IMAGE:-flotilla-s3:dev}"
s3_ready() { kn exec s3 -- python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:9000/backups")'; }
backup_ok() { [ "$(cond BackupSucceeded)" = True ]; }
backup_name() { jp '{.status.backup.lastSuccessful.name}'; }
backup_changed() { local n; n=$(backup_name); [ -n "$n" ] && [ "$n" != "$1" ]; }
scenario_backup() {
  local t=$SECONDS
  log "backup: an S3 server, on-demand and scheduled backups of $RC, a cluster restored from one"
  docker image inspect "$S3_IMAGE" >/dev/null 2>&1 || scripts/build-s3-image.sh "$S3_IMAGE"
  cat <<YAML | kn apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: s3, labels: {app.kubernetes.io/name: flotilla-e2e-s3}}
spec:
  # The Service "s3" would inject S3_PORT=tcp://…, the variable the server's port is read from.
  enableServiceLinks: false
  containers:
  - {name: s3, image: $S3_IMAGE, imagePullPolicy: IfNotPresent, ports: [{containerPort: 9000}],
     env: [{name: S3_PORT, value: "9000"}]}
---
apiVersion: v1
kind: Service
# moto takes the first label of any DNS Host for a virtual-hosted bucket, path style or not:
# the backups reach it by the Service's cluster IP (S3_URL below).
metadata: {name: objects}
spec:
  selector: {app.kubernetes.io/name: flotilla-e2e-s3}
  ports: [{port: 9000, targetPort: 9000, protocol: TCP}]
---
apiVersion: v1
kind: Secret
metadata: {name: s3-creds}
stringData: {AWS_ACCESS_KEY_ID: flotilla-test, AWS_SECRET_ACCESS_KEY: flotilla-test-secret}
YAML
  wait_for "S3 server" s3_ready
  local S3_URL
  S3_URL="http://$(kn get svc objects -o jsonpath='{.spec.clusterIP}'):9000"
  figure_load "$RC"
  writer_start w-backup e2e/backup/ "" ', --value-size, "256"'
  sleep 30
  writer_finish w-backup
  etcdctl_to "$RC"
  local keys rev
  keys=$(count_keys e2e/backup/)
  [ "$PF" = 0 ] || kill "$PF" 2>/dev/null || true
  kn patch raftcluster "$RC" --type merge -p "{\"spec\":{\"backup\":{\"schedule\":\"*/2 * * * *\",
    \"retention\":{\"count\":3},\"target\":{\"s3\":{\"endpoint\":\"$S3_URL\",
    \"bucket\":\"backups\",\"prefix\":\"e2e/\",\"pathStyle\":true,\"credentialsSecret\":\"s3-creds\"}}}}}" >/dev/null
  local b=$SECONDS
  kn annotate raftcluster "$RC" flotilla.dev/backup-now=first --overwrite >/dev/null
  wait_for "the first backup" backup_ok
  local first; first=$(backup_name)
  echo "    backup-now: $first, $(jp '{.status.backup.lastSuccessful.size}') bytes at revision $(jp '{.status.backup.lastSuccessful.revision}'), $keys keys, $((SECONDS - b)) s from the annotation"
  TIMEOUT=240 wait_for "a scheduled backup" backup_changed "$first"
  echo "    scheduled: $(backup_name) (next: $(jp '{.status.backup.nextScheduled}'))"
  log "restore: a new RaftCluster from the latest backup"
  local r=$SECONDS
  new_cluster restored 3 "  bootstrap:
    fromBackup:
      cluster: $RC
      location: {s3: {endpoint: '$S3_URL', bucket: backups, prefix: e2e/, pathStyle: true, credentialsSecret: s3-creds}}"
  RC=restored wait_for "restored cluster: 3 voters" settled 3
  local restore_s=$((SECONDS - r))
  etcdctl_to restored
  local got
  got=$(count_keys e2e/backup/)
  [ "$PF" = 0 ] || kill "$PF" 2>/dev/null || true
  [ "$got" = "$keys" ] || die "restored cluster holds $got of the $keys keys"
  # Every member, not only the one the Service picked: the first member was restored, the
  # others joined empty and must have been sent its state.
  local p
  for p in restored-0 restored-1 restored-2; do
    wait_for "$p holds the $keys restored keys (its own, serializable)" member_has "$p" e2e/backup/ "$keys"
    if [ "${E2E_FIGURE_KEYS:-0}" -gt 0 ]; then
      wait_for "$p holds the $E2E_FIGURE_KEYS loaded keys" member_has "$p" load/ "$E2E_FIGURE_KEYS"
    fi
  done
  echo "    every member holds them itself $((SECONDS - r)) s after the RaftCluster was created"
  echo "    restored: $got keys, 3 voters in $restore_s s"
  RC=restored cond Restored | matches True || die "Restored condition"
  record backup "$t" "$keys" "$((keys - got))"
  kn delete raftcluster restored --wait=true --timeout=120s >/dev/null
}

quorum_lost() { [ "$(cond QuorumLost)" = True ]; }
scenario_quorum() {
  local t=$SECONDS RC=ql
  log "quorum: 2 of 3 members lose their volumes; QuorumLost, then allowDataLoss"
  new_cluster "$RC" 3 ""
  wait_for "3 voters" settled 3
  figure_load "$RC"
  writer_start w-quorum e2e/quorum/
  sleep 10
  writer_finish w-quorum
  local acked=$WRITER_ACKED
  kn delete pvc "data-$RC-1" "data-$RC-2" --wait=false >/dev/null
  kn delete pod "$RC-1" "$RC-2" --wait=false >/dev/null
  local l=$SECONDS
  wait_for "QuorumLost=True" quorum_lost
  echo "    QuorumLost after $((SECONDS - l)) s: $(jp '{.status.conditions[?(@.type=="QuorumLost")].message}')"
  sleep 20
  [ "$(kn get pod "$RC-0" -o jsonpath='{.status.containerStatuses[0].restartCount}')" = 0 ] \
    || die "the survivor was restarted without allowDataLoss"
  local r=$SECONDS
  kn patch raftcluster "$RC" --type merge -p '{"spec":{"recovery":{"allowDataLoss":true}}}' >/dev/null
  wait_for "recovered: 3 voters" settled 3
  echo "    recovered to 3 voters in $((SECONDS - r)) s"
  local recovering
  recovering=$(events | grep -E "^RecoveringFromQuorumLoss" || true)
  [ -n "$recovering" ] || die "no RecoveringFromQuorumLoss Event"
  echo "${recovering%%$'\n'*}" | cut -c1-300 | sed 's/^/    /'
  local from; from=$(jp '{.status.lastRecovery.member}')
  [ "$from" = "$RC-0" ] || die "status.lastRecovery names '$from', not $RC-0"
  echo "    status.lastRecovery: $(jp '{.status.lastRecovery}')"
  etcdctl_to "$RC"
  local got
  got=$(count_keys e2e/quorum/)
  "${E[@]}" put e2e/quorum-after ok >/dev/null || die "no write after recovery"
  [ "$PF" = 0 ] || kill "$PF" 2>/dev/null || true
  [ "$got" -ge "$acked" ] || die "after recovery $got keys, $acked were acknowledged"
  echo "    $got keys after recovery ($acked acknowledged before the loss)"
  record quorum "$t" "$acked" "$((acked > got ? acked - got : 0))"
  kn delete raftcluster "$RC" --wait=true --timeout=120s >/dev/null
}

teardown() {
  [ "${E2E_KEEP:-0}" = 1 ] && return 0
  kn delete raftcluster --all --wait=true --timeout=120s >/dev/null 2>&1 || true
  k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  "$HELM" uninstall "$RELEASE" --namespace "$OPNS" >/dev/null 2>&1 || true
}

setup
printf '%-10s %8s %10s %6s\n' scenario seconds acked lost >"$SUMMARY"
for s in "${SCENARIOS[@]}"; do
  "scenario_$s"
done
log "summary"
cat "$SUMMARY"
[ -f "$WORK/timings" ] && cat "$WORK/timings"
echo "total: $((SECONDS - SUITE_START)) s"
teardown
echo "PASSED: end-to-end ($(IFS=,; echo "${SCENARIOS[*]}"))"
