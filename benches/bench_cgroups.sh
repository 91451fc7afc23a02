# Sourced by benches/scrape.sh and benches/ab.sh: the container cgroups a benchmark reads.

# The hierarchies to make them in, into CTRLS: the v1 controllers podstat reads, else the
# v2 root.
bench_controllers() {
  CTRLS=()
  for c in cpu cpuacct memory blkio pids; do [ -e "/sys/fs/cgroup/$c/cgroup.procs" ] && CTRLS+=("/sys/fs/cgroup/$c"); done
  [ ${#CTRLS[@]} -eq 0 ] && CTRLS=(/sys/fs/cgroup)
  return 0
}

# make_containers TOP N: N kubelet-shaped container cgroups (cgroupfs driver layout, 3 per
# pod, random-looking IDs as on a real node) under TOP in every hierarchy.
make_containers() {
  local top=$1 names name c
  mapfile -t names < <(python3 benches/fake_kubelet.py --names "$2")
  for c in "${CTRLS[@]}"; do
    for name in "${names[@]}"; do mkdir -p "$c/$top/kubepods/burstable/$name"; done
  done
}

# touch_files TOP: looks up every file of TOP's cgroups once, from this script's own cgroup. The
# dentry and inode the kernel makes at a file's first lookup (~0.9 KiB, reclaimable) are charged
# to the memory cgroup of whoever looks first: on a node that is the runtime and the kubelet,
# within seconds of a container's start. Here the process started first would pay for every
# file the other reads too (8.9 MiB of podstat's 29.4 at 300 containers, when it started
# before cAdvisor), so neither does.
touch_files() {
  local c
  for c in "${CTRLS[@]}"; do
    find "$c/$1" -type f -print0 | xargs -0 -r stat -c %i > /dev/null
  done
}

# remove_containers TOP: removes TOP's own tree, deepest first, and nothing else.
remove_containers() {
  local c
  for c in "${CTRLS[@]}"; do
    [ -d "$c/$1" ] && find "$c/$1" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  return 0
}
