#!/usr/bin/env bash
# podstat beside the kubelet's own cAdvisor on the same N kubelet-shaped container cgroups
# (benches/bench_cgroups.sh): CPU per minute and memory-cgroup charge of each, both scraped
# every INTERVAL seconds (default 15, as Prometheus does, with gzip) for MINUTES (default 2)
# after a warm-up of WARMUP seconds (default 40: cAdvisor's first housekeeping round). The
# cAdvisor is benches/cadvisor/main.go, built inside the Kubernetes 1.20 source tree that
# tests/cluster/build.sh fetches (its first run also builds the cluster's binaries, ~5 min):
# the cAdvisor library the kubelet vendors, set up and served as the kubelet does it. Each
# process runs in cgroups of its own (memory, cpuacct, cpu), whose charge is what is reported;
# the bench cgroups' files are looked up once before either starts (touch_files), so neither is
# charged for the dentries and inodes the other reads through too.
# Usage: benches/cadvisor.sh [N ...] (root; default 400 2000); PODSTAT_CONFIG=file passes podstat a
# config (e.g. `[reader] max_open_files = 1000`). Cleans up by PID and by its own
# unique cgroup names.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -e /sys/fs/cgroup/cpuacct/cgroup.procs ] || { echo "cgroup v1 only (reads cpuacct.usage)" >&2; exit 2; }
cargo build --release -q
bash tests/cluster/build.sh >/dev/null
cache="${CLUSTER_CACHE:-$PWD/target/cluster}"
cache="$(cd "$cache" && pwd)"
tree="$(readlink -f "$cache/gopath/src/k8s.io/kubernetes")"
mkdir -p "$tree/cmd/podstat-cadvisor-bench"
cp benches/cadvisor/main.go "$tree/cmd/podstat-cadvisor-bench/main.go"
(export GOPATH="$cache/gopath" GO111MODULE=off GOFLAGS= CGO_ENABLED=1 GOCACHE="$cache/gocache"
 cd "$cache/gopath/src/k8s.io/kubernetes" && go build -o "$cache/bin/cadvisor-kubelet" ./cmd/podstat-cadvisor-bench)
SIZES=("${@:-400 2000}"); SIZES=(${SIZES[@]})
INTERVAL=${INTERVAL:-15}; MINUTES=${MINUTES:-2}; WARMUP=${WARMUP:-40}
TOP="podstat-cadv-$$"
. benches/bench_cgroups.sh
bench_controllers
PIDS=()
selfcg() { echo "/sys/fs/cgroup/$1/$TOP-$2"; }
cleanup() {
  # cAdvisor does not exit on SIGTERM: SIGKILL, by PID.
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  sleep 0.5
  remove_containers "$TOP"
  for who in podstat cadvisor; do for h in memory cpuacct cpu; do rmdir "$(selfcg $h $who)" 2>/dev/null || true; done; done
}
trap cleanup EXIT
trap "exit 130" INT TERM
for who in podstat cadvisor; do for h in memory cpuacct cpu; do mkdir -p "$(selfcg $h $who)"; done; done
start_in() { # WHO CMD...: runs CMD in WHO's cgroups, prints its PID
  local who=$1; shift
  ( for h in memory cpuacct cpu; do echo "$BASHPID" > "$(selfcg $h "$who")/cgroup.procs"; done; exec "$@" ) >/dev/null 2>&1 &
  echo $!
}
cpu_ns() { cat "$(selfcg cpuacct "$1")/cpuacct.usage"; }
charge() { cat "$(selfcg memory "$1")/memory.usage_in_bytes"; }
# cAdvisor leaves out the CPU usage of a cgroup that used none: the memory usage counts rows.
series() { curl -s "http://127.0.0.1:$1/metrics" | grep '^container_memory_usage_bytes{' | grep -c "$TOP/" || true; }
printf "%-6s %-8s | %-22s %-22s %-8s | %s\n" containers cgroups "CPU ms/min podstat" "cAdvisor" ratio "charge MiB podstat / cAdvisor; RSS MiB; series"
for N in "${SIZES[@]}"; do
  make_containers "$TOP" "$N"
  touch_files "$TOP"
  # The same for the binaries' pages: read here, they are charged to neither process (a page
  # cache evicted since the build was charged to whichever faulted it back: up to 7 MiB seen).
  cat ./target/release/podstat "$cache/bin/cadvisor-kubelet" > /dev/null
  CG=$(find "${CTRLS[0]}/$TOP" -mindepth 1 -type d | wc -l)
  P=$(start_in podstat ./target/release/podstat ${PODSTAT_CONFIG:+--config "$PODSTAT_CONFIG"} --listen 127.0.0.1:19796 --log-level warn); PIDS+=("$P")
  C=$(start_in cadvisor "$cache/bin/cadvisor-kubelet" --listen 127.0.0.1:19797); PIDS+=("$C")
  for _ in $(seq 600); do
    [ "$(series 19797)" -ge "$N" ] && [ "$(series 19796)" -ge "$N" ] && break
    sleep 1
  done
  sleep "$WARMUP"
  P0=$(cpu_ns podstat); C0=$(cpu_ns cadvisor); T0=$(date +%s.%N)
  for ((k = 0; k < MINUTES * 60 / INTERVAL; k++)); do
    for port in 19796 19797; do curl -s -H 'Accept-Encoding: gzip' -o /dev/null "http://127.0.0.1:$port/metrics"; done
    sleep "$INTERVAL"
  done
  P1=$(cpu_ns podstat); C1=$(cpu_ns cadvisor); T1=$(date +%s.%N)
  MIN=$(echo "($T1 - $T0) / 60" | bc -l)
  PM=$(echo "($P1 - $P0) / 1000000 / $MIN" | bc -l); CM=$(echo "($C1 - $C0) / 1000000 / $MIN" | bc -l)
  PR=$(awk '/VmRSS/{print $2}' /proc/$P/status); CR=$(awk '/VmRSS/{print $2}' /proc/$C/status)
  printf "%-6s %-8s | %-22.0f %-22.0f %-8.1f | %.1f / %.1f; %.1f / %.1f; %s / %s\n" "$N" "$CG" "$PM" "$CM" "$(echo "$CM / $PM" | bc -l)" \
    "$(echo "$(charge podstat) / 1048576" | bc -l)" "$(echo "$(charge cadvisor) / 1048576" | bc -l)" \
    "$(echo "$PR / 1024" | bc -l)" "$(echo "$CR / 1024" | bc -l)" "$(series 19796)" "$(series 19797)"
  kill -9 "$P" "$C" 2>/dev/null || true; wait "$P" "$C" 2>/dev/null || true
  PIDS=()
  remove_containers "$TOP"
done
