#!/usr/bin/env bash
# Soak (root): podstat under churn, scrapes and kubelet faults for MINUTES (default 60), with
# its RSS, descriptors and threads printed every minute. Not a timed test: a flat table is the
# result (README "Soak").
#   - N (default 100) kubelet-shaped containers listed by a loopback HTTPS kubelet
#     (benches/fake_kubelet.py with FAULTS=1: every 10 s in turn ok, HTTP 500, an answer
#     slower than the timeout, a truncated body, ok, a dropped connection);
#   - churn: every second a container cgroup with a live process is created and the oldest
#     such one (after 20) removed, so series come and go and unknown containers ask for
#     early fetches;
#   - scrapes: every second over a kept-alive connection (gzip), plus /healthz and /readyz on
#     new connections; every 30 s a burst of 200 idle connections that are then dropped.
# Usage: benches/soak.sh [MINUTES] [N]. Cleans up by PID and its own unique cgroup name.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-60}; N=${2:-100}
cargo build --release -q
TOP="podstat-soak-$$"
. benches/bench_cgroups.sh
bench_controllers
WORK=$(mktemp -d)
PIDS=(); CHURN_PIDS=()
cleanup() {
  for p in "${CHURN_PIDS[@]:-}" "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  # The churn's processes, by the PIDs it wrote down (they outlive the churn loop itself).
  [ -f "$WORK/churn.pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done < "$WORK/churn.pids"
  sleep 0.5
  remove_containers "$TOP"
  rm -rf "$WORK"
}
trap cleanup EXIT
make_containers "$TOP" "$N"
for c in "${CTRLS[@]}"; do mkdir -p "$c/$TOP/churn"; done
KPORT=19791; PORT=19790
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
echo soak-token > "$WORK/token"
FAULTS=1 python3 benches/fake_kubelet.py $KPORT "$WORK/cert.pem" "$WORK/key.pem" soak-token "$N" 2>/dev/null & PIDS+=($!)
cat > "$WORK/podstat.toml" <<CONF
[discovery]
raw_include = ["/$TOP/churn/*"]
[kubernetes]
source = "kubelet"
kubelet_url = "https://127.0.0.1:$KPORT/pods"
token_file = "$WORK/token"
ca_file = "$WORK/cert.pem"
refresh_interval = "5s"
min_refresh_interval = "1s"
request_timeout = "3s"
CONF
sleep 1
./target/release/podstat --config "$WORK/podstat.toml" --listen 127.0.0.1:$PORT --log-level error & PS=$!; PIDS+=($PS)
# Ready: the first pod list is in (or wait_for_first_list, 10 s, is over).
for _ in $(seq 300); do curl -sf -o /dev/null http://127.0.0.1:$PORT/readyz && break; sleep 0.1; done
python3 - "$PORT" "$MINUTES" <<'PY' & PIDS+=($!)
import http.client, socket, sys, time
port, minutes = int(sys.argv[1]), float(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
end = time.time() + minutes * 60 + 5
failures = 0
retries = 0
n = 0
while time.time() < end:
    n += 1
    try:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        r = conn.getresponse(); r.read()
        if r.status != 200:
            failures += 1; print(f"# /metrics: HTTP {r.status}", flush=True)
        for path in ("/healthz", "/readyz"):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path); r = c.getresponse(); r.read(); c.close()
            if r.status != 200:
                failures += 1; print(f"# {path}: HTTP {r.status}", flush=True)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        # The kept-alive connection was closed while idle (the idle bursts evict the longest
        # idle connection, which between scrapes is this one): retry once on a new one, as
        # Prometheus' HTTP client does for a GET on a reused connection.
        retries += 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            r = conn.getresponse(); r.read()
            if r.status != 200: failures += 1
        except Exception as e:
            failures += 1; print(f"# scrape failed after a retry: {e!r}", flush=True)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    except Exception as e:
        failures += 1; print(f"# scrape failed: {e!r}", flush=True)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    if n % 30 == 0:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        time.sleep(0.5)
        for s in idle: s.close()
    if n % 60 == 0:
        print(f"# scraper: {n} rounds, {failures} failed, {retries} retried on a new connection", flush=True)
    time.sleep(1)
PY
# Churn: one container with a live process per second, the oldest removed after 20.
churn() {
  local i=0 rel
  local -a live=()
  while true; do
    rel="$TOP/churn/c$i"
    for c in "${CTRLS[@]}"; do mkdir -p "$c/$rel"; done
    sleep 600 & local p=$!
    echo "$p" >> "$WORK/churn.pids"
    for c in "${CTRLS[@]}"; do echo $p > "$c/$rel/cgroup.procs"; done
    live+=("$p:$rel")
    if [ ${#live[@]} -gt 20 ]; then
      local old=${live[0]}; live=("${live[@]:1}")
      kill "${old%%:*}" 2>/dev/null || true; wait "${old%%:*}" 2>/dev/null || true
      for c in "${CTRLS[@]}"; do rmdir "$c/${old#*:}" 2>/dev/null || true; done
    fi
    i=$((i + 1)); sleep 1
  done
}
churn & CHURN_PIDS+=($!)
printf "%-7s %-9s %-6s %-8s %-12s %-10s\n" minute rss_MiB fds threads collections read_errors
for m in $(seq 0 "$MINUTES"); do
  [ "$m" -gt 0 ] && sleep 60
  rss=$(awk '/^VmRSS/{printf "%.1f", $2/1024}' /proc/$PS/status)
  thr=$(awk '/^Threads/{print $2}' /proc/$PS/status)
  fds=$(ls /proc/$PS/fd | wc -l)
  body=$(curl -sf http://127.0.0.1:$PORT/metrics || true)
  col=$(grep -m1 '^podstat_collections_total ' <<<"$body" | awk '{print $2}')
  errs=$(grep '^podstat_read_errors_total' <<<"$body" | awk '{s+=$2} END {print s+0}')
  printf "%-7s %-9s %-6s %-8s %-12s %-10s\n" "$m" "$rss" "$fds" "$thr" "$col" "$errs"
done
kill "${CHURN_PIDS[@]}" 2>/dev/null || true
echo "# metadata errors by kind:"; curl -sf http://127.0.0.1:$PORT/metrics | grep '^podstat_metadata_errors_total' || true
