#!/usr/bin/env bash
# A real single-node Kubernetes (v1.20.2, built from Debian 12's source package) with podstat
# deployed from daemonset/ beside the kubelet's own cAdvisor; see tests/cluster/README.md.
#   tests/cluster/run.sh          build (cached in target/cluster), start, check, tear down
#   tests/cluster/run.sh --hold   keep the cluster up after the checks, for a look around
# Runs as root. The host keeps its mounts, network, kernel settings and cgroups: the cluster
# lives in a mount and network namespace of its own, its cgroups under one parent that is
# emptied (by PID) and removed on the way out.
set -euo pipefail
cd "$(dirname "$0")/../.."
hold=0
[[ "${1:-}" == --hold ]] && hold=1
total=0

SECONDS=0
tests/cluster/build.sh
echo "cluster: binaries ready in ${SECONDS}s"
total=$((total + SECONDS))

# Short paths: unix sockets under it must stay below 108 bytes.
state="$(mktemp -d /tmp/podstat-cluster.XXXXXX)"
cgroup_root="podstat-cluster-$$"
control="podstat-cluster-control-$$"
hierarchies=()
for h in /sys/fs/cgroup/*/; do
  h="${h%/}"
  # v1 hierarchies only (hybrid's unified tree has no controllers; a pure v2 host has one tree).
  [[ -e "$h/cgroup.procs" && "$(basename "$h")" != unified ]] && hierarchies+=("$h")
done
[[ ${#hierarchies[@]} -gt 0 ]] || hierarchies=(/sys/fs/cgroup)
# On a hybrid host runc also makes each container's cgroup in the unified tree (under the
# kubelet's cgroup root): emptied and removed with the others.
unified=()
[[ -e /sys/fs/cgroup/unified/cgroup.procs ]] && unified=(/sys/fs/cgroup/unified)

# Kills every process in a cgroup tree, by PID, until none is left, then removes the tree.
empty_and_remove() {
  local dir="$1" tries=0 pids
  [[ -d "$dir" ]] || return 0
  while pids="$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null)" && [[ -n "$pids" ]]; do
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    ((++tries < 100)) || { echo "cluster: $dir still has processes: $pids" >&2; break; }
    sleep 0.1
  done
  find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  [[ ! -d "$dir" ]] || echo "cluster: could not remove $dir" >&2
}
cleanup() {
  local rc=$?
  set +e
  for h in "${hierarchies[@]}"; do empty_and_remove "$h/$control"; done
  for h in "${hierarchies[@]}" "${unified[@]}"; do empty_and_remove "$h/$cgroup_root"; done
  # The namespace's mounts went with its last process; what is left is plain files.
  if [[ "${CLUSTER_KEEP_STATE:-0}" == 1 || $rc -ne 0 ]]; then
    echo "cluster: state and logs kept in $state"
  else
    rm -rf "$state"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The kubelet's cgroupRoot must exist in every hierarchy; the control group holds every process
# the cluster starts (daemons, shims) so that none outlives the run.
pids_hierarchy=/sys/fs/cgroup/pids
[[ -d "$pids_hierarchy" ]] || pids_hierarchy="${hierarchies[0]}"
for h in "${hierarchies[@]}"; do
  mkdir "$h/$cgroup_root"
  if [[ -e "$h/cpuset.cpus" ]]; then
    cat "$h/cpuset.cpus" >"$h/$cgroup_root/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h/$cgroup_root/cpuset.mems"
  fi
done
mkdir "$pids_hierarchy/$control"

SECONDS=0
tests/cluster/images.sh "$state/images" >/dev/null
echo "cluster: images ready in ${SECONDS}s"
total=$((total + SECONDS))

SECONDS=0
# The inner shell joins the control group before it starts anything.
unshare --mount --net --fork --kill-child -- bash -c \
  'echo $$ >"$1/cgroup.procs" && shift && exec bash "$@"' _ "$pids_hierarchy/$control" \
  tests/cluster/node.sh "$state" "/$cgroup_root" "$hold"
echo "cluster: started and checked in ${SECONDS}s"
total=$((total + SECONDS))
echo "cluster: total ${total}s"
