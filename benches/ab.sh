#!/usr/bin/env bash
# Compares the CPU per scrape of two podstat builds (root): both run at once on the same N
# kubelet-shaped container cgroups (as benches/scrape.sh makes them), each in a cgroup of its
# own, with min_collect_interval_ms = 0 so every scrape collects; their scrapes are alternated
# in random order, back to back, so the VM's drift (tens of percent over minutes here) hits
# both alike. Same-binary runs agreed to 1.4 % and better over 400 pairs; whole-process scrapes with
# pauses (benches/scrape.sh) drift by more than most changes to the scrape path. Instruction
# counts (benches/instructions.sh) do not drift but can mislead: fewer instructions has
# measured slower here. Usage: benches/ab.sh BIN_A BIN_B [N (default 100)] [PAIRS (default 400)]
# Cleans up by PID and by its own unique cgroup names.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 BIN_A BIN_B [N] [PAIRS]" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); N=${3:-100}; PAIRS=${4:-400}
TOP="podstat-ab-$$"
. benches/bench_cgroups.sh
bench_controllers
if [ -e /sys/fs/cgroup/cpuacct/cgroup.procs ]; then
  SELF=/sys/fs/cgroup/cpuacct/$TOP-self; CPUFILE=cpuacct.usage
else
  SELF=/sys/fs/cgroup/$TOP-self; CPUFILE=cpu.stat
fi
# On v1 each podstat also gets a cgroup of its own in the cpu hierarchy, where cgroup.procs is
# read: in its root cgroup, each would count (and readlink) the other's kept descriptors on every
# scrape, so a build that keeps fewer would be charged for the other's more (seen: 14 %).
PROCS=""
[ -e /sys/fs/cgroup/cpu/cgroup.procs ] && [ "$SELF" != "/sys/fs/cgroup/cpu/$TOP-self" ] && PROCS=/sys/fs/cgroup/cpu/$TOP-self
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  remove_containers "$TOP"
  rmdir "$SELF/a" "$SELF/b" "$SELF" 2>/dev/null || true
  [ -n "$PROCS" ] && rmdir "$PROCS/a" "$PROCS/b" "$PROCS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
make_containers "$TOP" "$N"
printf '[server]\nmin_collect_interval_ms = 0\n' > "$WORK/podstat.toml"
mkdir -p "$SELF/a" "$SELF/b"
[ -n "$PROCS" ] && mkdir -p "$PROCS/a" "$PROCS/b"
join() { echo "$BASHPID" > "$SELF/$1/cgroup.procs"; [ -z "$PROCS" ] || echo "$BASHPID" > "$PROCS/$1/cgroup.procs"; }
(join a; exec "$A" --config "$WORK/podstat.toml" --listen 127.0.0.1:19781 --log-level error) & PIDS+=($!)
(join b; exec "$B" --config "$WORK/podstat.toml" --listen 127.0.0.1:19782 --log-level error) & PIDS+=($!)
for port in 19781 19782; do
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:$port/healthz && break; sleep 0.1; done
done
python3 benches/ab_client.py 19781 19782 "$SELF/a/$CPUFILE" "$SELF/b/$CPUFILE" "$PAIRS"
