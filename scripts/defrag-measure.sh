#!/usr/bin/env bash
# The defragment scenario of issue 9, against any etcd v3 cluster (Flotilla or etcd):
# 50 MB written over one key range (5,120 puts of 10 KiB over 500 keys, by `flotilla-load`),
# then `etcdctl compact` to the current revision, then `etcdctl defrag` of each member (timed),
# printing `endpoint status` (db size, and db size in use) after each step.
#
#   ./scripts/defrag-measure.sh ENDPOINTS LABEL [FLOTILLA_LOAD=target/release/flotilla-load]
#
# e.g. with the reference etcd 3.4 cluster of ../shared/tools/etcd-cluster:
#   ./scripts/defrag-measure.sh 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 etcd
set -euo pipefail
eps=$1; label=$2; load=${3:-target/release/flotilla-load}
export ETCDCTL_API=3
ctl() { etcdctl --endpoints="$eps" --command-timeout=60s "$@"; }
sizes() { # one line per member: endpoint, db size, db size in use (bytes)
  ctl endpoint status -w json | python3 -c '
import json, sys
for m in json.load(sys.stdin):
    st = m["Status"]
    print("  %-18s db_size %10d  in_use %10d" % (m["Endpoint"], st.get("dbSize", 0), st.get("dbSizeInUse", 0)))'
}
echo "== $label: 50 MB over 500 keys"
"$load" --endpoints "$eps" --clients 16 --conns 4 --total 5120 --value-size 10240 \
  --key-space 500 --label "$label" | tail -n 3
echo "-- after the writes"; sizes
rev=$(ctl get probe -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
ctl compact "$rev" >/dev/null
echo "-- after compact $rev"; sizes
for ep in ${eps//,/ }; do
  start=$(date +%s%N)
  etcdctl --endpoints="$ep" --command-timeout=120s defrag >/dev/null
  echo "  defrag $ep: $(( ($(date +%s%N) - start) / 1000000 )) ms (etcdctl round trip)"
done
echo "-- after defrag"; sizes
