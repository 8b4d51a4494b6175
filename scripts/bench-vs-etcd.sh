#!/usr/bin/env bash
# Flotilla against etcd 3.4 on this machine, the comparison of issue 12 ("Performance, round 2"):
# three `flotilla node` processes and three `etcd` processes on loopback, each member with its
# own data dir, both driven by etcd's own load generator (`tools/benchmark` of etcd 3.4) in the
# same invocation. Every workload runs ROUNDS times, alternating which system goes first, and
# the table shows the medians and the ratio (the median of each round's Flotilla / etcd
# throughput, so load that drifts between rounds on a shared machine cancels out).
#
#   ./scripts/bench-vs-etcd.sh
#
# What it needs, and where it looks:
#   etcd, etcdctl   ETCD_BIN / ETCDCTL_BIN, else on PATH. Debian: `apt-get install etcd-server
#                   etcd-client` (3.4.23 in bookworm).
#   benchmark       ETCD_BENCHMARK (etcd 3.4's tools/benchmark binary), else the workspace's
#                   sibling `../shared/tools/etcd-benchmark`, which builds it offline from
#                   Debian's source package. To build it yourself: `apt-get install golang-go
#                   golang-etcd-server-dev`, `apt-get source etcd` (needs a deb-src line), then in
#                   etcd-3.4.23/: copy tools/benchmark to $G/src/go.etcd.io/etcd/tools/ and run
#                   `GO111MODULE=off GOPATH=$G:/usr/share/gocode go build` there.
#   flotilla        FLOTILLA_BIN, else built here (`cargo build --release`, honouring
#                   CARGO_TARGET_DIR).
#   grpc_floor      FLOOR_BIN, else built here (`cargo build --release --example grpc_floor`):
#                   etcd's KV service on the same tonic stack, answering each Put at once.
# Knobs (environment): ROUNDS (3), BENCH_DIR (a fresh temporary dir), PUT1_TOTAL (3000),
# PUT256_TOTAL (50000), PUT1000_TOTAL (100000), RANGE_TOTAL (100000), IDLE_SETTLE_S (5),
# WORKLOADS (all: "put1 put256 put1000 rangel ranges").
#
# Where the CPU goes: every run also records the CPU time the three members used (from
# /proc/PID/stat) and the load generator's own (bash's `times`), per request. On a machine the
# load saturates, throughput is the inverse of their sum. The floor runs the put workloads
# against `grpc_floor` once per round: one gRPC round trip with no work behind it, the least a
# member's client port costs per request with this stack.
#
# The 1-client put goes to each cluster's leader (the physical path the issue measures: one
# proposal, the leader's and a follower's fdatasync, one loopback round trip); the other
# workloads spread 100 connections over the three members, as a real client pool would.
# Idle RSS is each member's VmRSS once the cluster is healthy and has been quiet IDLE_SETTLE_S;
# "after" is after every round. Both report the largest of the three members.
# The machine's load average is printed before and after: on a shared machine, read only the
# ratios, which are taken from runs interleaved in the same minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench-vs-etcd: $*" >&2; exit 2; }

rounds=${ROUNDS:-3}
put1_total=${PUT1_TOTAL:-3000}
put256_total=${PUT256_TOTAL:-50000}
put1000_total=${PUT1000_TOTAL:-100000}
range_total=${RANGE_TOTAL:-100000}
settle=${IDLE_SETTLE_S:-5}
workloads=${WORKLOADS:-put1 put256 put1000 rangel ranges}

etcd_bin=${ETCD_BIN:-$(command -v etcd || true)}
etcdctl_bin=${ETCDCTL_BIN:-$(command -v etcdctl || true)}
[ -x "$etcd_bin" ] || die "etcd not found: install Debian's etcd-server package (apt-get install etcd-server etcd-client) or set ETCD_BIN"
[ -x "$etcdctl_bin" ] || die "etcdctl not found: install Debian's etcd-client package or set ETCDCTL_BIN"
"$etcd_bin" --version | grep -q 'etcd Version: 3\.4\.' ||
  echo "bench-vs-etcd: warning: $("$etcd_bin" --version | head -1), the issue's reference is 3.4" >&2

bench=${ETCD_BENCHMARK:-}
if [ -z "$bench" ] && [ -x ../shared/tools/etcd-benchmark ]; then
  bench=$(../shared/tools/etcd-benchmark) || die "../shared/tools/etcd-benchmark failed to build the benchmark tool"
fi
[ -n "$bench" ] && [ -x "$bench" ] || die "etcd's benchmark tool not found: set ETCD_BENCHMARK to etcd 3.4's tools/benchmark binary (how to build it: see this script's header)"

if [ -n "${FLOTILLA_BIN:-}" ]; then
  flotilla=$FLOTILLA_BIN
else
  cargo build --release -q -p flotilla-node --bin flotilla
  flotilla=${CARGO_TARGET_DIR:-target}/release/flotilla
fi
[ -x "$flotilla" ] || die "no flotilla binary at $flotilla"
if [ -n "${FLOOR_BIN:-}" ]; then
  floor=$FLOOR_BIN
else
  cargo build --release -q -p flotilla-node --example grpc_floor
  floor=${CARGO_TARGET_DIR:-target}/release/examples/grpc_floor
fi
[ -x "$floor" ] || die "no grpc_floor binary at $floor"

dir=${BENCH_DIR:-$(mktemp -d /tmp/flotilla-bench.XXXXXX)}
mkdir -p "$dir/runs"
declare -A pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# etcd: clients 42379.., peers 42389..; flotilla: clients 52379.., peers 52389.., metrics 52399..
etcd_cl=""; etcd_eps=""; flo_cl=""; flo_eps=""
for i in 1 2 3; do
  etcd_cl+="${etcd_cl:+,}e$i=http://127.0.0.1:$((42388 + i))"; etcd_eps+="${etcd_eps:+,}127.0.0.1:$((42378 + i))"
  flo_cl+="${flo_cl:+,}f$i=http://127.0.0.1:$((52388 + i))"; flo_eps+="${flo_eps:+,}127.0.0.1:$((52378 + i))"
done
for i in 1 2 3; do
  "$etcd_bin" --name "e$i" --data-dir "$dir/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$((42378 + i))" --advertise-client-urls "http://127.0.0.1:$((42378 + i))" \
    --listen-peer-urls "http://127.0.0.1:$((42388 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((42388 + i))" \
    --initial-cluster "$etcd_cl" --initial-cluster-token bench --initial-cluster-state new \
    --quota-backend-bytes 8589934592 >"$dir/etcd-$i.log" 2>&1 &
  pids[etcd-$i]=$!
  "$flotilla" node --name "f$i" --data-dir "$dir/flotilla-$i" \
    --listen-client "127.0.0.1:$((52378 + i))" --listen-peer "127.0.0.1:$((52388 + i))" \
    --listen-metrics "127.0.0.1:$((52398 + i))" --initial-cluster "$flo_cl" --cluster-token bench \
    --quota-backend-bytes 8589934592 >"$dir/flotilla-$i.log" 2>&1 &
  pids[flotilla-$i]=$!
done
"$floor" 127.0.0.1:52377 >"$dir/floor.log" 2>&1 &
pids[floor-1]=$!
floor_eps=127.0.0.1:52377

ctl() { ETCDCTL_API=3 "$etcdctl_bin" --command-timeout=2s "$@"; }
wait_healthy() { # endpoints
  for _ in $(seq 1 150); do
    ctl --endpoints="$1" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "cluster at $1 did not become healthy (logs in $dir)"
}
# The client endpoint of the member that leads (`endpoint status`, 5th column: IS LEADER).
leader_of() { # endpoints
  ctl --endpoints="$1" endpoint status -w simple 2>/dev/null | awk -F', ' '$5 == "true" { print $1; exit }'
}
# Largest VmRSS of a system's three members, in MB.
rss_mb() { # etcd|flotilla
  local max=0 kb
  for i in 1 2 3; do
    kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/${pids[$1-$i]}/status")
    [ "$kb" -gt "$max" ] && max=$kb
  done
  echo $((max / 1024))
}
eps_of() { case $1 in etcd) echo "$etcd_eps" ;; flotilla) echo "$flo_eps" ;; *) echo "$floor_eps" ;; esac; }
# CPU clock ticks (user + system) the system's processes have used so far.
cpu_ticks() { # etcd|flotilla|floor
  local sum=0 i t
  for i in 1 2 3; do
    [ -n "${pids[$1-$i]:-}" ] || continue
    t=$(awk '{ print $14 + $15 }' "/proc/${pids[$1-$i]}/stat")
    sum=$((sum + t))
  done
  echo "$sum"
}
# The CPU time this shell's finished children have used: bash's `times` (second line) goes to
# a file, since in a pipe or `$(…)` it would run in a subshell that has no children yet.
children_times() { times >"$1"; } # file
children_secs() { # file written by children_times
  awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, /m|s/); s += a[1] * 60 + a[2] } printf "%.3f", s }' "$1"
}
hz=$(getconf CLK_TCK)

wait_healthy "$etcd_eps"
wait_healthy "$flo_eps"
sleep "$settle"
declare -A rss_idle=([etcd]=$(rss_mb etcd) [flotilla]=$(rss_mb flotilla))
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores, $(uname -r); $("$etcd_bin" --version | head -1); flotilla $(git describe --always --dirty 2>/dev/null || echo '?')"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg); data and raw outputs in $dir"

# One run of etcd's benchmark; prints "ops/s p50_ms p99_ms server_cpu_us load_cpu_us" (CPU
# per request: the system's processes together, and the load generator).
run() { # system workload round
  local eps args out total ticks0 ticks1 load0 load1
  eps=$(eps_of "$1")
  case $2 in
    put1)
      if [ "$1" != floor ]; then eps=$(leader_of "$eps"); [ -n "$eps" ] || die "$1 has no leader"; fi
      args=(--conns=1 --clients=1 put --key-size=8 --sequential-keys --key-space-size=100000 --val-size=256 --total="$put1_total") ;;
    put256) args=(--conns=100 --clients=256 put --key-size=8 --sequential-keys --key-space-size=100000 --val-size=256 --total="$put256_total") ;;
    put1000) args=(--conns=100 --clients=1000 put --key-size=8 --sequential-keys --key-space-size=100000 --val-size=256 --total="$put1000_total") ;;
    rangel) args=(--conns=100 --clients=1000 range k --consistency=l --total="$range_total") ;;
    ranges) args=(--conns=100 --clients=1000 range k --consistency=s --total="$range_total") ;;
    *) die "unknown workload $2" ;;
  esac
  out="$dir/runs/$3-$2-$1.txt"
  total=$(printf '%s\n' "${args[@]}" | sed -n 's/^--total=//p')
  ticks0=$(cpu_ticks "$1"); children_times "$out.t0"
  "$bench" --precise --endpoints="$eps" "${args[@]}" >"$out" 2>/dev/null || die "benchmark failed against $1 ($out)"
  ticks1=$(cpu_ticks "$1"); children_times "$out.t1"
  load0=$(children_secs "$out.t0"); load1=$(children_secs "$out.t1")
  awk -v t="$total" -v dt=$((ticks1 - ticks0)) -v hz="$hz" -v l0="$load0" -v l1="$load1" \
    '/Requests\/sec:/ { rps = $2 } /^ *50% in/ { p50 = $3 * 1000 } /^ *99% in/ { p99 = $3 * 1000 }
     END { if (rps == "") exit 1
           printf "%.0f %.2f %.2f %.0f %.0f\n", rps, p50, p99, dt / hz * 1e6 / t, (l1 - l0) * 1e6 / t }' "$out" ||
    die "could not read the benchmark's summary in $out"
}

declare -A results=()
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then order="etcd flotilla"; else order="flotilla etcd"; fi
  for w in $workloads; do
    for s in $order; do
      line=$(run "$s" "$w" "$r")
      results[$s-$w]+="$line"$'\n'
      printf 'round %s  %-8s %-8s %8s/s  p50 %6s ms  p99 %6s ms  cpu/req %5s µs (load %s µs)\n' "$r" "$w" "$s" $line
    done
    case $w in
      put*)
        line=$(run floor "$w" "$r")
        results[floor-$w]+="$line"$'\n'
        printf 'round %s  %-8s %-8s %8s/s  p50 %6s ms  p99 %6s ms  cpu/req %5s µs (load %s µs)\n' "$r" "$w" floor $line ;;
    esac
  done
done
declare -A rss_after=([etcd]=$(rss_mb etcd) [flotilla]=$(rss_mb flotilla))
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"

median() { # column (1 ops/s, 2 p50, 3 p99) < lines
  awk -v c="$1" 'NF { print $c }' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
med() { printf '%s' "${results[$1-$2]}" | median "$3"; }
thousands() { echo "$1" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# The median of the rounds' own throughput ratios: the two runs of a round are adjacent in
# time, so load that drifts between rounds (a shared machine) cancels out of each ratio.
round_ratio() { # workload
  paste <(printf '%s' "${results[flotilla-$1]}" | awk 'NF { print $1 }') \
    <(printf '%s' "${results[etcd-$1]}" | awk 'NF { print $1 }') |
    awk '$2 > 0 { print $1 / $2 }' | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }'
}
cell() { # system workload what(p50|p99)
  local col=2; [ "$3" = p99 ] && col=3
  printf '%s/s (%s %s ms)' "$(thousands "$(med "$1" "$2" 1)")" "$3" "$(med "$1" "$2" "$col")"
}
label() {
  case $1 in
    put1) echo "put, 1 client, to the leader (p50)" ;;
    put256) echo "put, 256 clients / 100 conns (p99)" ;;
    put1000) echo "put, 1000 clients / 100 conns, 100k keys (p99)" ;;
    rangel) echo "linearizable range, 1000 clients (p99)" ;;
    ranges) echo "serializable range, 1000 clients (p99)" ;;
  esac
}

echo
echo "medians of $rounds alternating rounds; ratio = median over the rounds of Flotilla / etcd throughput"
echo
echo "| workload | etcd 3.4 | Flotilla | ratio |"
echo "|---|---|---|---|"
for w in $workloads; do
  what=p99; [ "$w" = put1 ] && what=p50
  echo "| $(label "$w") | $(cell etcd "$w" $what) | $(cell flotilla "$w" $what) | $(round_ratio "$w") |"
done
echo "| RSS per member, idle (largest of 3) | ${rss_idle[etcd]} MB | ${rss_idle[flotilla]} MB | $(ratio "${rss_idle[flotilla]}" "${rss_idle[etcd]}") |"
echo "| RSS per member after the runs (largest of 3) | ${rss_after[etcd]} MB | ${rss_after[flotilla]} MB | $(ratio "${rss_after[flotilla]}" "${rss_after[etcd]}") |"

echo
echo "Where the CPU goes (medians, µs per request): the members together, and etcd's load generator"
echo "in the same runs. The gRPC floor is grpc_floor (one process answering each Put at once over"
echo "the same tonic stack): its throughput bounds what any member behind that stack can serve."
echo
echo "| workload | etcd members | Flotilla members | load generator (etcd / Flotilla runs) | gRPC floor |"
echo "|---|---|---|---|---|"
for w in $workloads; do
  floor_cell="-"
  [ -n "${results[floor-$w]:-}" ] &&
    floor_cell="$(thousands "$(med floor "$w" 1)")/s, $(med floor "$w" 4) µs"
  echo "| $(label "$w") | $(med etcd "$w" 4) | $(med flotilla "$w" 4) | $(med etcd "$w" 5) / $(med flotilla "$w" 5) | $floor_cell |"
done
