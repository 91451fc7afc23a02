#!/usr/bin/env bash
# User-space instructions per scrape (collection + gzip body), counted by callgrind: unlike
# CPU time on a shared VM they do not drift, so a change to the scrape path can be compared
# to a few tenths of a percent. Kernel work (the reads) is not counted; benches/scrape.sh
# measures the whole. Needs valgrind; reads this host's cgroups (run it next to
# `benches/scrape.sh`'s cgroups, or your own). Usage: benches/instructions.sh [SCRAPES]
# (default 10); NO_GZIP=1 counts collection alone.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench scrape_loop --no-run -q 2>/dev/null
BIN=$(ls -t target/release/deps/scrape_loop-* | grep -v '\.d$' | head -1)
K=${1:-10}
valgrind --tool=callgrind --toggle-collect='scrape_loop::measured' --callgrind-out-file="${CALLGRIND_OUT:-/dev/null}" \
  "$BIN" "$K" 2>&1 |
  awk -v k="$K" '/Collected :/ { printf "%.0f instructions per scrape (%d scrapes)\n", $NF / k, k }'
