#!/usr/bin/env bash
# Whole-process benchmark on real cgroups (root): creates N kubelet-shaped container cgroups
# (cgroupfs driver layout, 3 containers per pod; they hold no processes, so neither podstat nor
# the floor reads a pod's /proc/<pid>/net/dev), runs the release binary, scrapes it, and prints CPU per scrape, latency p50/p99,
# body size plain and gzip, RSS between scrapes and its peak (reached during a gzip scrape),
# the memory its cgroup is charged (RSS plus kernel memory, which includes ~4.5 KiB per kept
# descriptor; the cgroups' files are looked up once before podstat starts, so their dentries and
# inodes are not charged to it: benches/bench_cgroups.sh touch_files), the descriptors kept, and the floor reader's CPU per pass over the same cgroups
# (benches/floor.rs), its passes put between the scrapes, with the ratio (of the totals, and
# scrape by scrape against the pass after it: median and 10-90 % range). CPU is what
# podstat's own cgroup is charged (ns), so it includes serving HTTP.
# Usage: benches/scrape.sh [N ...]   (default: 100 500 1000); SCRAPES=k scrapes per size
# (default 20). Container IDs and pod UIDs are random-looking hex, as on a real node
# (IDS=sequential: the index in hex, which flatters gzip: 53 against 93 KB at 100 containers).
# Scrapes go over one kept-alive connection, as Prometheus makes them (benches/scrape_client.py);
# CONN=new makes a new connection per scrape (curl), which adds a TCP handshake to each.
# PODSTAT_CONFIG=file passes a config (e.g. `[reader] max_open_files = 0`). PODSTAT_KUBELET=1
# also runs a loopback HTTPS kubelet (benches/fake_kubelet.py) listing the bench's pods and
# points podstat at it, to measure the cost of the metadata join. Cleans up by PID and by its own unique top-level
# cgroup name.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
cargo bench --bench floor --no-run -q 2>/dev/null || true
FLOOR=$(ls -t target/release/deps/floor-* | grep -v '\.d$' | head -1)
SIZES=("${@:-100 500 1000}"); SIZES=(${SIZES[@]})
TOP="podstat-bench-$$"
. benches/bench_cgroups.sh
bench_controllers
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.3
  remove_containers "$TOP"
}
trap cleanup EXIT
PORT=19780
# podstat runs in cgroups of its own, to read what the kernel charges it: memory, and CPU in
# nanoseconds (tick-sampled /proc/<pid>/stat is too coarse for a few ms per scrape).
if [ -e /sys/fs/cgroup/memory/cgroup.procs ]; then
  MEMCG=/sys/fs/cgroup/memory/$TOP-self; CHARGE=memory.usage_in_bytes
  CPUCG=/sys/fs/cgroup/cpuacct/$TOP-self
  cpu_ns() { cat "$CPUCG/cpuacct.usage"; }
else
  MEMCG=/sys/fs/cgroup/$TOP-self; CHARGE=memory.current; CPUCG=$MEMCG
  cpu_ns() { awk '/^usage_usec/{print $2 * 1000}' "$CPUCG/cpu.stat"; }
fi
# The floor reader runs in a cgroup of its own that is not a row (its name matches no raw_include
# pattern): in the root cgroup, podstat's process_files collector would count (and readlink) its
# thousands of kept descriptors on every scrape, a cost no real node has.
if [ -e /sys/fs/cgroup/cpu/cgroup.procs ]; then FLCG=/sys/fs/cgroup/cpu/$TOP-floor; else FLCG=/sys/fs/cgroup/$TOP-floor; fi
mkdir -p "$MEMCG" "$CPUCG" "$FLCG"
FLDIR=$(mktemp -d)
trap 'cleanup; rmdir "$MEMCG" "$CPUCG" "$FLCG" 2>/dev/null || true; rm -rf "$FLDIR"' EXIT
printf "%-6s %-8s %-9s %-8s %-8s %-9s %-8s %-13s %-10s %-7s %-20s %-16s %s\n" containers cgroups cpu_ms/scr p50_ms p99_ms plain_KiB gzip_KiB rss/peak_MiB memcg_MiB kept_fd "floor open/pread ms" "floor kept/files" "cpu/floor"
for N in "${SIZES[@]}"; do
  make_containers "$TOP" "$N"
  touch_files "$TOP"
  cat ./target/release/podstat > /dev/null # its pages charged to this script, as the files'
  CONF="${PODSTAT_CONFIG:-}"
  if [ -n "${PODSTAT_KUBELET:-}" ]; then
    KD=$(mktemp -d); KPORT=$((PORT + 1))
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
      -keyout "$KD/key.pem" -out "$KD/cert.pem" 2>/dev/null
    echo bench-token > "$KD/token"
    python3 benches/fake_kubelet.py $KPORT "$KD/cert.pem" "$KD/key.pem" bench-token "$N" & KPID=$!; PIDS+=($KPID)
    { [ -n "$CONF" ] && cat "$CONF"; printf '[kubernetes]\nsource = "kubelet"\nkubelet_url = "https://127.0.0.1:%s/pods"\ntoken_file = "%s"\nca_file = "%s"\n' $KPORT "$KD/token" "$KD/cert.pem"; } > "$KD/podstat.toml"
    CONF="$KD/podstat.toml"; sleep 1
  fi
  (echo "$BASHPID" > "$MEMCG/cgroup.procs"; echo "$BASHPID" > "$CPUCG/cgroup.procs"; exec ./target/release/podstat ${CONF:+--config "$CONF"} --listen 127.0.0.1:$PORT --log-level warn) & PS=$!; PIDS+=($PS)
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:$PORT/healthz && break; sleep 0.1; done
  # The floor reader (benches/floor.rs) over the same cgroups, its passes put between the
  # scrapes (paced like them, so both see the same caches and the same machine).
  rm -f "$FLDIR/fifo"; mkfifo "$FLDIR/fifo"
  (echo "$BASHPID" > "$FLCG/cgroup.procs"; exec "$FLOOR" /sys/fs/cgroup 0 interleave) < "$FLDIR/fifo" > "$FLDIR/out" & FPID=$!; PIDS+=($FPID)
  exec 7> "$FLDIR/fifo"
  for _ in $(seq 600); do grep -q ready "$FLDIR/out" 2>/dev/null && break; sleep 0.1; done
  LAT=()
  if [ "${CONN:-keepalive}" = keepalive ]; then
    coproc SCRAPER { exec python3 benches/scrape_client.py 127.0.0.1:$PORT; }
    PIDS+=("$SCRAPER_PID")
    scrape() { echo go >&"${SCRAPER[1]}"; local t; read -r t <&"${SCRAPER[0]}"; LAT+=("$t"); }
  else
    scrape() { LAT+=($(curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%{time_total}' http://127.0.0.1:$PORT/metrics)); }
  fi
  sleep 1; scrape; sleep 0.55; LAT=()
  T0=$(cpu_ns)
  K=${SCRAPES:-20}
  MARKS=("$T0")
  for ((k = 0; k < K; k++)); do
    scrape; sleep 0.55
    echo pread >&7; sleep 0.55
    MARKS+=("$(cpu_ns)")
  done
  T1=${MARKS[K]}
  if [ "${CONN:-keepalive}" = keepalive ]; then
    exec {SCRAPER[1]}>&-; wait "$SCRAPER_PID" 2>/dev/null || true
  fi
  # Memory between scrapes (what the process holds most of the time), and its peak so far,
  # which came during a gzip scrape: the plain ones below would raise it.
  RSS=$(awk '/VmRSS/{print $2}' /proc/$PS/status); HWM=$(awk '/VmHWM/{print $2}' /proc/$PS/status)
  MEM=$(cat "$MEMCG/$CHARGE")
  for _ in 1 2 3 4 5; do echo open >&7; sleep 0.55; done
  exec 7>&-; wait $FPID || true
  IDLE0=$(cpu_ns); sleep 3; IDLE1=$(cpu_ns)
  PLAIN=$(curl -s http://127.0.0.1:$PORT/metrics | wc -c)
  GZ=$(curl -s -H 'Accept-Encoding: gzip' http://127.0.0.1:$PORT/metrics | wc -c)
  SELF=$(curl -s http://127.0.0.1:$PORT/metrics | grep '^podstat_')
  CG=$(echo "$SELF" | awk -F'[{} ]' '/^podstat_containers_discovered/{s+=$NF} END{print s}')
  KEPT=$(echo "$SELF" | awk '/^podstat_kept_descriptors /{print $2}')
  JOINED=$(curl -s http://127.0.0.1:$PORT/metrics | grep '^container_cpu_usage_seconds_total{' | grep -vc 'image=""' || true)
  kill $PS; wait $PS 2>/dev/null || true
  [ -n "${PODSTAT_KUBELET:-}" ] && { kill "$KPID" 2>/dev/null || true; }
  SORTED=($(printf '%s\n' "${LAT[@]}" | sort -n))
  P50=${SORTED[$((K / 2))]}; P99=${SORTED[$((K - 1))]}
  FLOUT=$(grep '^floor:' "$FLDIR/out")
  FL=$(echo "$FLOUT" | sed -E 's/.*close ([0-9.]+) ms.*pread ([0-9.]+) ms.*/\1 \/ \2/')
  FK=$(echo "$FLOUT" | sed -E 's/.* ([0-9]+) cgroups, ([0-9]+) files.*\(([0-9]+) kept.*/\3\/\2/')
  CPU=$(echo "($T1 - $T0) / 1000000 / $K" | bc -l)
  # Each scrape's CPU over the floor pass that followed it: how much the ratio moves pair to
  # pair (the VM's drift, which the pairing cancels out of the total, shows up here).
  SPREAD=$(for ((k = 0; k < K; k++)); do echo "$(( MARKS[k + 1] - MARKS[k] ))"; done |
    paste - <(grep '^pass pread' "$FLDIR/out" | awk '{print $3}') |
    awk '$2 > 0 { print $1 / 1e6 / $2 }' | sort -n |
    awk '{ r[NR] = $1 } END { if (NR) printf "%.2f, 10-90%% %.2f-%.2f over %d pairs", r[int((NR + 1) / 2)], r[int(NR * 0.1) + 1], r[(int(NR * 0.9) > 0) ? int(NR * 0.9) : 1], NR }')
  PREAD=$(echo "$FLOUT" | sed -E 's/.*pread ([0-9.]+) ms.*/\1/')
  printf "%-6s %-8s %-9s %-8s %-8s %-9s %-8s %-13s %-10s %-7s %-20s %-16s %s\n" "$N" "$CG" \
    "$(printf '%.2f' "$CPU")" \
    "$(echo "$P50 * 1000" | bc -l | xargs printf '%.1f')" "$(echo "$P99 * 1000" | bc -l | xargs printf '%.1f')" \
    "$((PLAIN / 1024))" "$((GZ / 1024))" "$(echo "$RSS / 1024" | bc -l | xargs printf '%.1f')/$(echo "$HWM / 1024" | bc -l | xargs printf '%.1f')" \
    "$(echo "$MEM / 1048576" | bc -l | xargs printf '%.1f')" "$KEPT" "$FL" "$FK" "$(echo "$CPU / $PREAD" | bc -l | xargs printf '%.2f')"
  echo "  idle: $(( (IDLE1 - IDLE0) / 1000 )) us of CPU in 3 s without scrapes; cpu/floor pair by pair: median $SPREAD"
  [ -n "${PODSTAT_KUBELET:-}" ] && echo "  containers labelled from the kubelet (image!=\"\"): $JOINED"
  remove_containers "$TOP"
done
