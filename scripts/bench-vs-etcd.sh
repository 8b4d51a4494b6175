#!/usr/bin/env bash
# Side-by-side load: a 3-member Flotilla cluster and a 3-member etcd 3.4 cluster (Debian's
# etcd-server), both on loopback, driven by the same `flotilla-load` binary in the same run.
#
#   ./scripts/bench-vs-etcd.sh [CLIENTS=64] [DURATION=10s] [READ_RATIO=0.5]
#
# Prints one block per system: ops/s and p50/p99/max latency for puts (256 B) and linearizable
# gets. Each member is its own process with its own data dir under $BENCH_DIR (default: a fresh
# temporary folder), so both systems pay for the same fsyncs and the same loopback hops.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-64}; duration=${2:-10s}; read_ratio=${3:-0.5}
dir=${BENCH_DIR:-$(mktemp -d /tmp/flotilla-bench.XXXXXX)}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if ! command -v etcd >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client
fi
cargo build --release -p flotilla-node --bin flotilla --bin flotilla-load
bin=target/release

wait_healthy() { # endpoints
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --endpoints="$1" --command-timeout=1s endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "cluster at $1 did not become healthy" >&2; return 1
}

# etcd: clients 42379.., peers 42389..
cl=""; etcd_eps=""
for i in 1 2 3; do cl+="${cl:+,}e$i=http://127.0.0.1:$((42388+i))"; etcd_eps+="${etcd_eps:+,}127.0.0.1:$((42378+i))"; done
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$dir/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$((42378+i))" --advertise-client-urls "http://127.0.0.1:$((42378+i))" \
    --listen-peer-urls "http://127.0.0.1:$((42388+i))" --initial-advertise-peer-urls "http://127.0.0.1:$((42388+i))" \
    --initial-cluster "$cl" --initial-cluster-token bench --initial-cluster-state new \
    --quota-backend-bytes 8589934592 >"$dir/etcd-$i.log" 2>&1 &
  pids+=($!)
done

# flotilla: clients 52379.., peers 52389.., metrics 52399..
cl=""; flo_eps=""
for i in 1 2 3; do cl+="${cl:+,}f$i=http://127.0.0.1:$((52388+i))"; flo_eps+="${flo_eps:+,}127.0.0.1:$((52378+i))"; done
for i in 1 2 3; do
  "$bin/flotilla" node --name "f$i" --data-dir "$dir/flotilla-$i" \
    --listen-client "127.0.0.1:$((52378+i))" --listen-peer "127.0.0.1:$((52388+i))" \
    --listen-metrics "127.0.0.1:$((52398+i))" --initial-cluster "$cl" --cluster-token bench \
    >"$dir/flotilla-$i.log" 2>&1 &
  pids+=($!)
done

wait_healthy "$etcd_eps"
wait_healthy "$flo_eps"
echo "== $(nproc) cores; $clients clients; $duration per system; read ratio $read_ratio; data in $dir"
for run in etcd flotilla; do
  if [ "$run" = etcd ]; then eps=$etcd_eps; else eps=$flo_eps; fi
  "$bin/flotilla-load" --endpoints "$eps" --clients "$clients" --conns 16 \
    --duration "$duration" --read-ratio "$read_ratio" --label "$run"
done
