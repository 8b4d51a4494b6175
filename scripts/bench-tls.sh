#!/usr/bin/env bash
# Put throughput with TLS against without, in the same run: two 3-member Flotilla clusters on
# loopback (separate `flotilla node` processes), one plain, one with TLS on the client ports
# (--trusted-ca-file: client certificates optional, as for ordinary clients) and mutual TLS
# between peers. `flotilla-load` drives them in alternating rounds, so both see the same
# machine load over time, and the medians are printed.
#
#   ./scripts/bench-tls.sh [ROUNDS=3] [CLIENTS=64] [DURATION=10s]
#
# Certificates come from openssl (ECDSA P-256, one CA). Data and logs in $BENCH_DIR (default: a
# fresh temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; clients=${2:-64}; duration=${3:-10s}
dir=${BENCH_DIR:-$(mktemp -d /tmp/flotilla-bench-tls.XXXXXX)}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cargo build --release -p flotilla-node --bin flotilla --bin flotilla-load
bin=${CARGO_TARGET_DIR:-target}/release

pki=$dir/pki; mkdir -p "$pki"
openssl ecparam -name prime256v1 -genkey -noout -out "$pki/ca.key" 2>/dev/null
openssl req -x509 -new -key "$pki/ca.key" -subj /CN=bench-ca -days 2 -out "$pki/ca.crt" 2>/dev/null
for n in t1 t2 t3; do
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$n.key" 2>/dev/null
  openssl req -new -key "$pki/$n.key" -subj "/CN=$n" -out "$pki/$n.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$pki/ext"
  openssl x509 -req -in "$pki/$n.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/ext" -out "$pki/$n.crt" 2>/dev/null
done

start() { # prefix base scheme [tls flags...]
  local prefix=$1 base=$2 scheme=$3; shift 3
  local cl=""
  for i in 1 2 3; do cl+="${cl:+,}$prefix$i=$scheme://127.0.0.1:$((base+10+i))"; done
  for i in 1 2 3; do
    local tls=()
    if [ "$scheme" = https ]; then
      tls=(--cert-file "$pki/t$i.crt" --key-file "$pki/t$i.key" --trusted-ca-file "$pki/ca.crt"
           --peer-cert-file "$pki/t$i.crt" --peer-key-file "$pki/t$i.key"
           --peer-trusted-ca-file "$pki/ca.crt")
    fi
    "$bin/flotilla" node --name "$prefix$i" --data-dir "$dir/$prefix$i" \
      --listen-client "127.0.0.1:$((base+i))" --listen-peer "127.0.0.1:$((base+10+i))" \
      --listen-metrics "127.0.0.1:$((base+20+i))" --initial-cluster "$cl" --cluster-token bench \
      "${tls[@]}" >"$dir/$prefix$i.log" 2>&1 &
    pids+=($!)
  done
}
start p 53300 http
start t 53400 https
plain_eps=127.0.0.1:53301,127.0.0.1:53302,127.0.0.1:53303
tls_eps=https://127.0.0.1:53401,https://127.0.0.1:53402,https://127.0.0.1:53403

wait_healthy() { # endpoints [etcdctl TLS flags...]
  local eps=$1; shift
  for _ in $(seq 1 150); do
    ETCDCTL_API=3 etcdctl --endpoints="$eps" --command-timeout=1s "$@" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "cluster at $eps did not become healthy" >&2; return 1
}
wait_healthy "$plain_eps"
wait_healthy "$tls_eps" --cacert "$pki/ca.crt"

echo "== $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $clients clients, $duration per round, $rounds rounds each, puts of 256 B; data in $dir"
for r in $(seq 1 "$rounds"); do
  "$bin/flotilla-load" --endpoints "$plain_eps" --clients "$clients" --conns 16 \
    --duration "$duration" --label "plain-$r" | tee -a "$dir/results"
  "$bin/flotilla-load" --endpoints "$tls_eps" --cacert "$pki/ca.crt" --clients "$clients" \
    --conns 16 --duration "$duration" --label "tls-$r" | tee -a "$dir/results"
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { # kind name
  grep -E "^ *$1-[0-9]+ put " "$dir/results" | sed -E "s|.* $2=([0-9.]+).*|\1|"
}
echo "== medians over $rounds rounds (put)"
for kind in plain tls; do
  printf '%6s ops/s=%s p50=%sms p99=%sms\n' "$kind" \
    "$(field "$kind" ops/s | median)" "$(field "$kind" p50 | median)" "$(field "$kind" p99 | median)"
done
