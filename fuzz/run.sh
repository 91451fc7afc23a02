#!/usr/bin/env bash
# Runs the AFL++ fuzz targets (fuzz/src/main.rs) on the stable toolchain through cargo-afl.
# Usage: fuzz/run.sh SECONDS [TARGET ...]   (default: every target, one after the other;
# JOBS=n runs n afl-fuzz instances per target, one main and n-1 secondaries).
# Installs cargo-afl if missing (crates.io; it builds its own AFL++), seeds the corpora from the
# fixtures (fuzz/seed.py), prints executions and crashes per target, and exits 1 if any
# target crashed (the crashing inputs stay in fuzz/out/<target>/*/crashes).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:?usage: fuzz/run.sh SECONDS [TARGET ...]}; shift
TARGETS=("${@:-cgroup procfs podlist config http deflate}"); TARGETS=(${TARGETS[@]})
JOBS=${JOBS:-1}
command -v cargo-afl >/dev/null || cargo install --locked cargo-afl
cargo afl config --build >/dev/null 2>&1 || true
# The main crate's lock file, so the fuzzed code is built with the versions it ships with.
cp ../Cargo.lock Cargo.lock
cargo afl build --release -q 2>/dev/null || cargo afl build --release
BIN=target/release/podstat-fuzz
SEEDS=$(mktemp -d); trap 'rm -rf "$SEEDS"' EXIT
python3 seed.py "$SEEDS" >/dev/null
# No UI, no CPU governor or core_pattern demands (containers and CI machines cannot change them).
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
printf "%-8s %-12s %-10s %-8s %-6s %s\n" target executions per_s crashes hangs paths
status=0
for t in "${TARGETS[@]}"; do
  out=out/$t; rm -rf "$out"; mkdir -p "$out"
  pids=()
  for j in $(seq 1 "$JOBS"); do
    role=-S; [ "$j" = 1 ] && role=-M
    FUZZ_TARGET=$t timeout $((SECONDS_EACH + 60)) cargo afl fuzz -i "$SEEDS/$t" -o "$out" $role f$j -V "$SECONDS_EACH" -t 5000 -- "$BIN" \
      > "$out/log$j" 2>&1 & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  execs=0; crashes=0; hangs=0; paths=0; speed=0
  for stats in "$out"/*/fuzzer_stats; do
    [ -f "$stats" ] || continue
    v() { awk -F' *: *' -v k="$1" '$1==k{print $2}' "$stats"; }
    execs=$((execs + $(v execs_done))); crashes=$((crashes + $(v saved_crashes)))
    hangs=$((hangs + $(v saved_hangs))); paths=$((paths + $(v corpus_count)))
    speed=$(awk -v a="$speed" -v b="$(v execs_per_sec)" 'BEGIN{printf "%.0f", a + b}')
  done
  if [ "$execs" = 0 ]; then
    echo "$t: afl-fuzz did not run; its log:"; tail -20 "$out/log1"; status=1; continue
  fi
  printf "%-8s %-12s %-10s %-8s %-6s %s\n" "$t" "$execs" "$speed" "$crashes" "$hangs" "$paths"
  [ "$crashes" = 0 ] || status=1
done
exit $status
