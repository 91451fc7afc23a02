#!/usr/bin/env python3
"""Compares what two Prometheus servers hold after scraping the same node for a while: one
podstat (the DaemonSet), one the kubelet's embedded cAdvisor (/metrics/cadvisor).

For every row both report under the cluster's cgroup root (pods, containers, sandboxes):
  - the same label sets, family by family (container, pod, namespace, image, name, id,
    interface, device, and every other label);
  - the same values: a counter read by podstat at t lies between the kubelet's readings just
    before and just after t; a gauge equals what the kubelet read within PAIRED seconds of t,
    in most such pairs (memory figures give or take the memory cgroup's per-CPU charge batch);
and the kubernetes-mixin's container recording rules give the same series and values on both.
Families only one side has must be in the lists below, each with its reason (README.md).

Exit status 1 on any difference not listed; the report names every one.
"""
import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request

# Families the kubelet (cAdvisor v0.38.6) writes and podstat does not, and why.
KUBELET_ONLY = {
    "container_cpu_load_average_10s": "podstat: behind [collectors] tasks (off by default); "
    "the kubelet writes constant 0 (its load reader is never enabled)",
    "container_tasks_state": "podstat: behind [collectors] tasks (off by default); the kubelet "
    "writes constant 0",
    "machine_nvm_avg_power_budget_watts": "Intel Optane (libipmctl), 0 from the kubelet's builds",
    "machine_nvm_capacity": "Intel Optane (libipmctl), 0 from the kubelet's builds",
}
# Families podstat writes that cAdvisor v0.38.6 (Kubernetes 1.20) does not: newer cAdvisors
# have them (docs/cadvisor-compat.md), so they are shown, not failed.
NEWER_THAN_0_38 = {
    "container_blkio_device_usage_total", "container_memory_kernel_usage",
    "container_memory_total_active_file_bytes", "container_memory_total_inactive_file_bytes",
    "container_oom_events_total", "machine_swap_bytes",
}
# Differences found by this test and kept on purpose (README "cAdvisor differences"): a
# predicate over (family, row labels, podstat's values, the kubelet's values) and the reason.
def _pod_or_qos_row(labels):
    return not dict(labels).get("name")


LISTED = [
    (lambda family, labels, p, k: family.startswith("container_fs_")
     and family.endswith(("reads_total", "writes_total", "reads_bytes_total", "writes_bytes_total"))
     and _pod_or_qos_row(labels) and k and all(v == 0 for v in k),
     "v1 block IO of pod and QoS rows: podstat gives the subtree's IO "
     "(blkio.throttle.*_recursive, as v2's io.stat does); cAdvisor reads the non-recursive file, "
     "which is 0 for a cgroup without processes of its own"),
    (lambda family, labels, p, k: family in ("container_file_descriptors", "container_sockets",
                                             "container_threads", "container_processes")
     and dict(labels).get("container") == "podstat",
     "podstat's own container, read by podstat in the middle of its own scrape (its connection "
     "and the files it has open then are counted); the kubelet reads it between scrapes"),
    (lambda family, labels, p, k: family.startswith("container_fs_") and not p
     and all(v == 0 for v in k),
     "a block device without any IO: podstat writes no series (v1 lists every device the "
     "cgroup ever touched, and loop devices), cAdvisor writes zeros"),
    (lambda family, labels, p, k: family == "container_cpu_usage_seconds_total" and not k
     and all(v == 0 for v in p),
     "a cgroup that has used no CPU: podstat writes 0, cAdvisor leaves the series out (and so "
     "loses its first increase to rate())"),
]


def listed(family, labels, p_values, k_values):
    for predicate, reason in LISTED:
        if predicate(family, labels, p_values, k_values):
            return reason
    return None


TOO_YOUNG = ("a container started seconds ago: the kubelet's side holds one reading of it (cAdvisor "
             "re-reads every 10 to 15 s), and rate() needs two; podstat's holds two, 5 s apart")
SCRAPE_SECONDS = 5
SHORTER_THAN_A_SCRAPE = ("a container that lived less than a scrape interval: podstat reads at "
                         "scrape time and never saw it; cAdvisor reads a new cgroup at once")
UNNAMED_YET = ("a container that lived shorter than it took the kubelet's pod list to name it "
               "(podstat showed it with its pod, without container and image, which the rule's "
               "image!=\"\" leaves out; cAdvisor asks the runtime)")
# Labels Prometheus adds per target: they differ by construction (two targets).
TARGET_LABELS = {"instance"}
# Slack on top of the kubelet's own readings around t, for memory figures (bytes): cgroup v1's
# memory.usage_in_bytes includes what each CPU holds pre-charged for the cgroup (up to
# MEMCG_CHARGE_BATCH = 64 pages per CPU, given back when another cgroup charges on that CPU),
# and memory.stat's counters are per-CPU batched to the same threshold: two readers moments
# apart see the same cgroup differ by that much without a page changing hands.
CHARGE_BATCH_PAGES = 64
PAGE = 4096
# How far apart (seconds) two gauge readings may be to be compared.
PAIRED = 0.5
# How far a reading's time may be from its sample's timestamp: podstat reads a cgroup during
# the scrape, some milliseconds after the time Prometheus gives the samples; cAdvisor stamps
# its samples before it reads. A counter is bracketed by the kubelet's readings at least this
# far before and after podstat's (a CPU counter moved 3.6 ms past the kubelet's next reading
# 12 ms after the scrape began, on the busy QoS row).
SKEW = 1.0
# Values that are a time, compared against the time of their own sample.
OWN_TIME = {"container_last_seen"}
# Rule outputs: rates of two scrapers whose scrapes are seconds apart.
RULE_REL, RULE_ABS = 0.05, {"cpu": 0.005, "bytes": 1 << 20}


def query(base, promql, at):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{base}: {promql}: {body}")
    return body["data"]["result"]


def key_of(metric):
    labels = {k: v for k, v in metric.items() if k != "__name__" and k not in TARGET_LABELS}
    return metric["__name__"], tuple(sorted(labels.items()))


def series(base, at, window):
    out = {}
    selector = '{__name__=~"container_.+|machine_.+", job="kubelet"}'
    for item in query(base, f"{selector}[{window}s]", at):
        out[key_of(item["metric"])] = [(float(t), float(v)) for t, v in item["values"]]
    return out


def wait_up(bases, limit):
    start = time.time()
    while True:
        missing = []
        for name, base in bases.items():
            try:
                result = query(base, "up", time.time())
            except OSError as error:
                missing.append(f"{name}: {error}")
                continue
            jobs = {r["metric"]["job"]: r["value"][1] for r in result}
            for job in ("kubelet", "kube-state-metrics"):
                if jobs.get(job) != "1":
                    missing.append(f"{name}: job {job} up={jobs.get(job)}")
        if not missing:
            return
        if time.time() - start > limit:
            raise SystemExit("targets not up: " + "; ".join(missing))
        time.sleep(2)


def unit_of(family):
    return "bytes" if family.endswith("_bytes") or "_memory_" in family else "other"


def is_counter(family):
    # cAdvisor's one counter without the suffix.
    return family.endswith("_total") or family == "container_memory_failcnt"


def short(labels):
    d = dict(labels)
    return f"{d.get('namespace', '')}/{d.get('pod', '')}/{d.get('container', '') or '<' + d.get('id', '')[-12:] + '>'}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--podstat", required=True)
    ap.add_argument("--kubelet", required=True)
    ap.add_argument("--cgroup-root", required=True)
    ap.add_argument("--seconds", type=int, default=90, help="the window compared (>= 60)")
    ap.add_argument("--no-wait", action="store_true",
                    help="compare what the servers hold now (a cluster kept by run.sh --hold)")
    ap.add_argument("--at", type=float,
                    help="compare as of this time (unix seconds): a kept run's data, replayed")
    ap.add_argument("--report", required=True)
    args = ap.parse_args()
    bases = {"podstat": args.podstat, "kubelet": args.kubelet}
    report = []
    problems = []

    def say(line):
        report.append(line)

    if args.at is None:
        wait_up(bases, 120)
        if not args.no_wait:
            time.sleep(args.seconds)
    at = time.time() - 5 if args.at is None else args.at
    say(f"compared as of {at:.1f}, over {args.seconds - 10} s")
    window = args.seconds - 10
    got = {name: series(base, at, window) for name, base in bases.items()}
    p_all, k_all = got["podstat"], got["kubelet"]

    # ---- families
    p_fam = {f for f, _ in p_all}
    k_fam = {f for f, _ in k_all}
    for family in sorted(k_fam - p_fam):
        if family in KUBELET_ONLY:
            say(f"family only from the kubelet (listed): {family}: {KUBELET_ONLY[family]}")
        else:
            problems.append(f"family only from the kubelet: {family}")
    for family in sorted(p_fam - k_fam):
        note = "newer cAdvisor" if family in NEWER_THAN_0_38 else "podstat's own (docs/metrics.md)"
        say(f"family only from podstat ({note}): {family}")

    # ---- rows under the cluster's cgroup root, live on a side for the whole last 45 s
    def in_cluster(labels):
        return dict(labels).get("id", "").startswith(args.cgroup_root + "/")

    def live_ids(all_series):
        ids = {}
        for (family, labels), samples in all_series.items():
            # Every row has it (cAdvisor leaves out the CPU usage of a cgroup that used none).
            if family != "container_memory_usage_bytes" or not in_cluster(labels):
                continue
            first, last = samples[0][0], samples[-1][0]
            # The kubelet's cAdvisor re-reads an idle cgroup at most every 15 s
            # (max_housekeeping_interval) and stamps its samples with that time.
            ids[dict(labels)["id"]] = (first <= at - 45, last >= at - 40)
        return ids

    p_ids, k_ids = live_ids(p_all), live_ids(k_all)
    steady = lambda ids: {i for i, (old, recent) in ids.items() if old and recent}
    recent = lambda ids: {i for i, (_, r) in ids.items() if r}
    for i in sorted(steady(k_ids) - recent(p_ids)):
        problems.append(f"row only from the kubelet: {i}")
    for i in sorted(steady(p_ids) - recent(k_ids)):
        problems.append(f"row only from podstat: {i}")
    common = steady(k_ids) & steady(p_ids)
    say(f"rows compared: {len(common)} (kubelet {len(k_ids)}, podstat {len(p_ids)} seen)")
    if len(common) < 10:
        problems.append(f"only {len(common)} rows on both sides: nothing much was compared")

    # ---- label sets and values, family by family, row by row
    def by_row(all_series):
        rows = {}
        for (family, labels), samples in all_series.items():
            row = dict(labels).get("id")
            if row in common:
                rows.setdefault((family, row), {})[labels] = samples
        return rows

    p_rows, k_rows = by_row(p_all), by_row(k_all)
    cpus = max((s[-1][1] for (f, _), s in k_all.items() if f == "machine_cpu_cores"), default=1)
    compared = mismatched = gauge_pairs = pairs_apart = 0
    listed_seen = set()
    for (family, row) in sorted(set(p_rows) & set(k_rows)):
        p_sets, k_sets = p_rows[(family, row)], k_rows[(family, row)]
        for labels in sorted(set(k_sets) - set(p_sets)):
            problems.append(f"{family}: label set only from the kubelet: {dict(labels)}")
        for labels in sorted(set(p_sets) - set(k_sets)):
            problems.append(f"{family}: label set only from podstat: {dict(labels)}")
        for labels in set(p_sets) & set(k_sets):
            p_samples, k_samples = p_sets[labels], k_sets[labels]
            verdict, pairs, apart = compare_values(family, p_samples, k_samples, cpus)
            compared += 1
            gauge_pairs += pairs
            pairs_apart += apart
            if verdict:
                reason = listed(family, labels, [v for _, v in p_samples], [v for _, v in k_samples])
                if reason:
                    listed_seen.add(f"{family}: {reason}")
                else:
                    mismatched += 1
                    problems.append(f"{family} {short(labels)}: {verdict}")
    for family in sorted(p_fam & k_fam):
        rows_p = {r for f, r in p_rows if f == family}
        rows_k = {r for f, r in k_rows if f == family}
        for row in sorted(rows_k - rows_p):
            values = [v for samples in k_rows[(family, row)].values() for _, v in samples]
            reason = listed(family, next(iter(k_rows[(family, row)])), [], values)
            if reason:
                listed_seen.add(f"{family}: {reason}")
            else:
                problems.append(f"{family}: row only from the kubelet: {row}")
        for row in sorted(rows_p - rows_k):
            values = [v for samples in p_rows[(family, row)].values() for _, v in samples]
            reason = listed(family, next(iter(p_rows[(family, row)])), values, [])
            if reason:
                listed_seen.add(f"{family}: {reason}")
            else:
                problems.append(f"{family}: row only from podstat: {row}")
    say(f"series compared: {compared} (gauge readings paired: {gauge_pairs}, of them apart: "
        f"{pairs_apart}), series out of bounds: {mismatched}")
    for line in sorted(listed_seen):
        say(f"listed difference: {line}")

    # ---- machine_* label sets
    for family in sorted(f for f in p_fam & k_fam if f.startswith("machine_")):
        p_sets = {labels for f, labels in p_all if f == family}
        k_sets = {labels for f, labels in k_all if f == family}
        if p_sets != k_sets:
            problems.append(f"{family}: label sets differ: podstat {sorted(map(dict, p_sets), key=str)} "
                            f"kubelet {sorted(map(dict, k_sets), key=str)}")

    # ---- the kubernetes-mixin's container rules
    rules_checked = compare_rules(bases, at, problems, say, recent(k_ids), window)
    say(f"recording rules with series on both sides: {rules_checked}")
    if rules_checked < 4:
        problems.append(f"only {rules_checked} mixin rules recorded anything on both sides")

    report.extend(f"DIFFERENCE: {p}" for p in problems)
    with open(args.report, "w") as f:
        f.write("\n".join(report) + "\n")
    for line in report:
        print("  " + line)
    if problems:
        print(f"cluster comparison: {len(problems)} differences (report: {args.report})")
        sys.exit(1)
    print("cluster comparison: podstat and the kubelet's cAdvisor agree")


def compare_values(family, p_samples, k_samples, cpus):
    """(why not, gauge pairs, gauge pairs apart): why is None when podstat's readings lie where
    the kubelet's say they must. A counter read at t must lie between the kubelet's readings
    before t - SKEW and after t + SKEW, every time. A gauge is compared only with kubelet readings at
    most PAIRED seconds from its own (the kubelet reads every 10 to 15 s), and most of those
    pairs must agree (a series with one pair is not judged): a gauge may move any amount
    between two readings half a second apart (the
    disk workload's dd takes and frees a MiB buffer every two seconds, and the QoS rows sum
    every workload), which shows as a pair now and then; reading another file, or computing the
    figure differently, shows in every pair."""
    if family in OWN_TIME:
        for t, v in p_samples[-3:] + k_samples[-3:]:
            if abs(v - t) > 15:
                return f"{v} is not the time of its reading {t:.0f}", 0, 0
        return None, 0, 0
    counter = is_counter(family)
    # The charge batch moves memory gauges; counters (failcnt, failures) get no slack.
    slack = CHARGE_BATCH_PAGES * PAGE * cpus if unit_of(family) == "bytes" and not counter else 0
    pairs = apart = 0
    first_apart = None
    for t, v in p_samples:
        if counter:
            before = [kv for kt, kv in k_samples if kt <= t - SKEW]
            after = [kv for kt, kv in k_samples if kt >= t + SKEW]
            if not before or not after:
                continue
            low, high = min(before[-1], after[0]), max(before[-1], after[0])
        else:
            near = [kv for kt, kv in k_samples if abs(kt - t) <= PAIRED]
            if not near:
                continue
            pairs += 1
            low, high = min(near), max(near)
        scale = max(abs(low), abs(high), 1.0)
        if not (low - slack - 1e-9 * scale <= v <= high + slack + 1e-9 * scale):
            why = f"podstat {v:g} at {t:.1f}, kubelet between {low:g} and {high:g}"
            if counter:
                return why, pairs, apart
            apart += 1
            first_apart = first_apart or why
    if pairs >= 2 and 2 * apart > pairs:
        return f"{apart} of {pairs} paired readings apart, e.g. {first_apart}", pairs, apart
    return None, pairs, apart


def compare_rules(bases, at, problems, say, kubelet_live, window):
    """The mixin's container rules on both sides: the series of containers alive at `at` must
    be the same; the values of those both recorded all along the last minute must agree (their
    averages over it, which smooths the seconds between the two scrapers' readings). A rule
    over a range (rate(...[5m])) is compared only once both sides hold that range: before, its
    value depends on when each side's series began."""
    names = query(bases["kubelet"], 'count by (__name__) ({__name__=~"node_namespace_pod_container:.+"})', at)
    checked = 0
    for item in sorted(names, key=lambda r: r["metric"]["__name__"]):
        name = item["metric"]["__name__"]
        kind = "cpu" if "cpu" in name else "bytes"
        alive, steady = {}, {}
        for side, base in bases.items():
            alive[side] = {key_of({**r["metric"], "__name__": name})[1] for r in query(base, name, at)}
            counts = {key_of({**r["metric"], "__name__": name})[1]: float(r["value"][1])
                      for r in query(base, f"count_over_time({name}[60s])", at)}
            steady[side] = {key_of({**r["metric"], "__name__": name})[1]: float(r["value"][1])
                            for r in query(base, f"avg_over_time({name}[60s])", at)
                            if counts.get(key_of({**r["metric"], "__name__": name})[1], 0) >= 10}
        for labels in sorted(alive["kubelet"] - alive["podstat"]):
            if dict(labels).get("id") not in kubelet_live:
                # A container gone for good: the kubelet's samples carry timestamps, so
                # Prometheus does not mark them stale and the rule sees them for 5 minutes.
                continue
            reason = why_unseen(bases, dict(labels).get("id", ""), at)
            if reason:
                say(f"listed difference: rule {name}: {short(labels)}: {reason}")
            else:
                problems.append(f"rule {name}: series only from the kubelet: {dict(labels)}")
        for labels in sorted(alive["podstat"] - alive["kubelet"]):
            if "rate" in name and kubelet_readings(bases, dict(labels), at) < 2:
                say(f"listed difference: rule {name}: {short(labels)}: {TOO_YOUNG}")
            else:
                problems.append(f"rule {name}: series only from podstat: {dict(labels)}")
        p, k = steady["podstat"], steady["kubelet"]
        needed = re.search(r"(\d+)m$", name.split(":")[-1])
        if needed and window < 60 * int(needed.group(1)) + 60:
            say(f"rule {name}: values not compared: {window} s of data, its range needs "
                f"{needed.group(1)} min (COMPARE_SECONDS)")
            p, k = {}, {}
        worst = 0.0
        for labels in set(p) & set(k):
            a, b = p[labels], k[labels]
            if abs(a - b) > max(RULE_ABS[kind], RULE_REL * max(abs(a), abs(b))):
                problems.append(f"rule {name} {short(labels)}: podstat {a:g}, kubelet {b:g}")
            worst = max(worst, abs(a - b))
        say(f"rule {name}: {len(alive['podstat'] & alive['kubelet'])} series on both, "
            f"{len(set(p) & set(k))} steady, largest difference {worst:g}")
        checked += bool(set(p) & set(k)) or bool(needed)
    return checked


def kubelet_readings(bases, labels, at):
    """The most readings the kubelet's side holds, over the last 5 minutes, of a container's
    CPU usage (any of its IDs)."""
    selector = ",".join(f'{k}="{labels.get(k, "")}"' for k in ("namespace", "pod", "container"))
    counts = query(bases["kubelet"], f"count_over_time(container_cpu_usage_seconds_total{{{selector}}}[5m])", at)
    return max((float(r["value"][1]) for r in counts), default=0)


def why_unseen(bases, row, at):
    """Why podstat has no rule series for a container row the kubelet has, if it is one of the
    listed reasons; else None."""
    lifetime = query(bases["kubelet"], f'max_over_time(timestamp(container_memory_usage_bytes{{id="{row}"}})[120s:1s]) - '
                     f'min_over_time(timestamp(container_memory_usage_bytes{{id="{row}"}})[120s:1s])', at)
    seen = query(bases["podstat"], f'count_over_time(container_memory_usage_bytes{{id="{row}"}}[120s])', at)
    unnamed = query(bases["podstat"], f'count_over_time(container_memory_usage_bytes{{id="{row}",image=""}}[120s])', at)
    if not seen and lifetime and float(lifetime[0]["value"][1]) < SCRAPE_SECONDS:
        return SHORTER_THAN_A_SCRAPE
    if seen and unnamed:
        return UNNAMED_YET
    return None


if __name__ == "__main__":
    main()
