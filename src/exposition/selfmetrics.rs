//! The agent's own series (`podstat_*`), the machine families, and cAdvisor's
//! `container_scrape_error`. Written with the same encoder as the container series: they are a
//! few dozen lines, and one writer keeps the body in one format with one set of escaping rules.

use super::encode::{Encoder, MetricType};
use super::names::{Family, MACHINE_FAMILIES, VERSION_INFO};
use crate::discovery::CgroupKind;
use crate::meta::MetaHealth;
use crate::snapshot::{ErrorCounts, Snapshot};

use MetricType::{Counter, Gauge};

/// Every self-metric (its help and type for the encoder, and the docs).
pub const SELF_FAMILIES: &[Family<()>] = &[
    Family { name: "container_scrape_error", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "1 if discovering cgroups failed during this collection, else 0 (cAdvisor compatible)." },
    Family { name: "podstat_build_info", kind: Gauge, group: "self", labels: "version, cgroup_mode", source: "", emit: (),
        help: "Always 1; labels tell the podstat version and the host's cgroup mode." },
    Family { name: "podstat_cgroups_dropped", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Cgroups left out of the last collection by the series budget ([limits] max_series)." },
    Family { name: "podstat_cgroups_filtered", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Cgroups left out of the last collection by [filters]." },
    Family { name: "podstat_collections_total", kind: Counter, group: "self", labels: "", source: "", emit: (),
        help: "Collections run since start (scrapes within min_collect_interval_ms share one)." },
    Family { name: "podstat_collector_duration_seconds", kind: Gauge, group: "self", labels: "collector", source: "", emit: (),
        help: "Time each collector spent in the last collection, in seconds." },
    Family { name: "podstat_collector_success", kind: Gauge, group: "self", labels: "collector", source: "", emit: (),
        help: "1 if the collector read every available file without error in the last collection." },
    Family { name: "podstat_containers_discovered", kind: Gauge, group: "self", labels: "kind", source: "", emit: (),
        help: "Cgroups reported in the last collection, by kind (root, qos, pod, container, raw)." },
    Family { name: "podstat_discovery_dirs_listed", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Cgroup directories listed by the last collection's walk; the others had no cgroup created, removed or renamed in them since their last listing ([discovery] watch)." },
    Family { name: "podstat_discovery_watches", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Cgroup directories watched with inotify for created and removed cgroups; 0 when [discovery] watch is off." },
    Family { name: "podstat_files_read", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Files opened by the last collection (reads through kept descriptors are not counted)." },
    Family { name: "podstat_http_connections", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "HTTP connections open now." },
    Family { name: "podstat_http_connections_closed_total", kind: Counter, group: "self", labels: "reason", source: "", emit: (),
        help: "HTTP connections closed by podstat: evicted (made room for a newer one at [server] max_connections), refused (none idle to evict), idle_timeout, header_timeout, slow_client." },
    Family { name: "podstat_http_connections_limit", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Most HTTP connections open at once ([server] max_connections)." },
    Family { name: "podstat_http_connections_total", kind: Counter, group: "self", labels: "", source: "", emit: (),
        help: "HTTP connections accepted since start." },
    Family { name: "podstat_http_tls_handshake_failures_total", kind: Counter, group: "self", labels: "", source: "", emit: (),
        help: "TLS handshakes that failed (wrong, expired or missing client certificate, protocol errors)." },
    Family { name: "podstat_http_unauthorized_total", kind: Counter, group: "self", labels: "", source: "", emit: (),
        help: "Requests refused with 401 (missing or wrong basic-auth credentials)." },
    Family { name: "podstat_kept_descriptors", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Cgroup file descriptors kept open between collections." },
    Family { name: "podstat_kept_descriptors_limit", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Most cgroup file descriptors podstat keeps open ([reader] max_open_files: by default what fits in podstat's memory limit, within RLIMIT_NOFILE); 0 when keep_files_open is off." },
    Family { name: "podstat_label_values_truncated_total", kind: Counter, group: "self", labels: "", source: "", emit: (),
        help: "Label values cut to [limits] max_label_value_length (counted when a cgroup's labels are rendered)." },
    Family { name: "podstat_metadata_age_seconds", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Age of the pod metadata served (since the last successful fetch); absent before the first. Only with a metadata source." },
    Family { name: "podstat_metadata_errors_total", kind: Counter, group: "self", labels: "kind", source: "", emit: (),
        help: "Failed metadata fetches by kind: connect, timeout, http, too_large, decode, token, tls." },
    Family { name: "podstat_metadata_fetches_total", kind: Counter, group: "self", labels: "", source: "", emit: (),
        help: "Metadata fetches, successful or not." },
    Family { name: "podstat_metadata_last_success_timestamp_seconds", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Unix time of the last successful metadata fetch; absent before the first." },
    Family { name: "podstat_metadata_pods", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Pods in the metadata served." },
    Family { name: "podstat_metadata_refresh_requests_total", kind: Counter, group: "self", labels: "", source: "", emit: (),
        help: "Early metadata fetches asked for because a cgroup of an unknown pod or container appeared." },
    Family { name: "podstat_metadata_up", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "1 if the last metadata fetch succeeded." },
    Family { name: "podstat_read_errors_total", kind: Counter, group: "self", labels: "kind", source: "", emit: (),
        help: "Errors while reading cgroup and proc files: parse (unexpected content), io, vanished (cgroup removed mid-read)." },
    Family { name: "podstat_scrape_duration_seconds", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Duration of the last collection, in seconds." },
    Family { name: "podstat_series", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Container series in the last collection (after filters and budget)." },
    Family { name: "podstat_series_dropped_total", kind: Counter, group: "self", labels: "reason", source: "", emit: (),
        help: "Container series left out by the series budget (reason=\"max_series\"), summed over collections." },
    Family { name: "podstat_settled_watches", kind: Gauge, group: "self", labels: "", source: "", emit: (),
        help: "Cgroup files watched with inotify for writes (limits, weights, v2 memory.events, v1 memory.failcnt), which are read again only after one ([reader] watch_settled); 0 when off." },
];

fn help(name: &str) -> (&'static str, MetricType) {
    let found = SELF_FAMILIES.iter().find(|f| f.name == name);
    // Every family written here must be in the table (its help and type, and the docs made
    // from it); a missing one fails every test that encodes the self-metrics.
    debug_assert!(found.is_some(), "{name} is not in SELF_FAMILIES");
    found.map_or(("", Gauge), |f| (f.help, f.kind))
}

fn family(enc: &mut Encoder, name: &'static str) {
    let (h, t) = help(name);
    enc.header(name, h, t);
}

/// A family with one sample and no container labels.
fn single(enc: &mut Encoder, name: &'static str, labels: &[(&str, &str)], value: f64) {
    family(enc, name);
    enc.sample(name, "", labels, value);
}

/// A family with one sample per value of one label.
fn labelled<'a>(
    enc: &mut Encoder,
    name: &'static str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, f64)>,
) {
    family(enc, name);
    for (value, n) in samples {
        enc.sample(name, "", &[(label, value)], n);
    }
}

/// Running totals kept across collections.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub collections: u64,
    pub errors: ErrorCounts,
    pub series_dropped: u64,
    pub labels_truncated: u64,
}

impl Totals {
    pub fn add(&mut self, snapshot: &Snapshot) {
        self.collections += 1;
        self.series_dropped += snapshot.budget.dropped_series as u64;
        self.labels_truncated += snapshot.labels_truncated;
        self.errors.parse += snapshot.errors.parse;
        self.errors.io += snapshot.errors.io;
        self.errors.vanished += snapshot.errors.vanished;
    }
}

pub fn encode_machine(enc: &mut Encoder, snapshot: &Snapshot, drop: &[String]) {
    // `[collectors] machine = false`: none of them.
    if !snapshot.collectors.iter().any(|run| run.name == "machine") {
        return;
    }
    let m = &snapshot.machine;
    let id = &m.identity;
    let labels = [
        ("boot_id", id.boot_id.as_str()),
        ("machine_id", id.machine_id.as_str()),
        ("system_uuid", id.system_uuid.as_str()),
    ];
    for family in MACHINE_FAMILIES {
        if drop.iter().any(|d| d == family.name) {
            continue;
        }
        if let Some(v) = (family.emit)(m) {
            let labels: &[(&str, &str)] = if family.labels.is_empty() {
                &[]
            } else {
                &labels
            };
            enc.header(family.name, family.help, family.kind);
            enc.sample(family.name, "", labels, v);
        }
    }
    let (name, help) = (VERSION_INFO.name, VERSION_INFO.help);
    if !drop.iter().any(|d| d == name) {
        enc.header(name, help, Gauge);
        enc.sample(
            name,
            "",
            &[
                ("cadvisorRevision", ""),
                ("cadvisorVersion", ""),
                ("dockerVersion", ""),
                ("kernelVersion", id.kernel_version.as_str()),
                ("osVersion", id.os_version.as_str()),
            ],
            1.0,
        );
    }
}

pub fn encode_self(enc: &mut Encoder, snapshot: &Snapshot, totals: &Totals, cgroup_mode: &str) {
    single(
        enc,
        "container_scrape_error",
        &[],
        if snapshot.discovery_failed { 1.0 } else { 0.0 },
    );

    single(
        enc,
        "podstat_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("cgroup_mode", cgroup_mode),
        ],
        1.0,
    );

    single(
        enc,
        "podstat_collections_total",
        &[],
        totals.collections as f64,
    );

    encode_collector_runs(enc, snapshot);
    encode_rows_and_walk(enc, snapshot);
    single(enc, "podstat_files_read", &[], snapshot.files_read as f64);

    single(
        enc,
        "podstat_kept_descriptors",
        &[],
        snapshot.kept_descriptors.0 as f64,
    );
    single(
        enc,
        "podstat_kept_descriptors_limit",
        &[],
        snapshot.kept_descriptors.1 as f64,
    );

    single(
        enc,
        "podstat_label_values_truncated_total",
        &[],
        totals.labels_truncated as f64,
    );

    let errors = &totals.errors;
    labelled(
        enc,
        "podstat_read_errors_total",
        "kind",
        [
            ("parse", errors.parse as f64),
            ("io", errors.io as f64),
            ("vanished", errors.vanished as f64),
        ],
    );

    single(
        enc,
        "podstat_scrape_duration_seconds",
        &[],
        snapshot.duration.as_secs_f64(),
    );
    single(enc, "podstat_series", &[], snapshot.budget.series as f64);
    single(
        enc,
        "podstat_series_dropped_total",
        &[("reason", "max_series")],
        totals.series_dropped as f64,
    );
    single(
        enc,
        "podstat_settled_watches",
        &[],
        snapshot.settled_watches as f64,
    );
}

/// `podstat_collector_duration_seconds` and `podstat_collector_success`, per collector.
fn encode_collector_runs(enc: &mut Encoder, snapshot: &Snapshot) {
    let runs = &snapshot.collectors;
    labelled(
        enc,
        "podstat_collector_duration_seconds",
        "collector",
        runs.iter().map(|r| (r.name, r.duration.as_secs_f64())),
    );
    labelled(
        enc,
        "podstat_collector_success",
        "collector",
        runs.iter()
            .map(|r| (r.name, if r.success { 1.0 } else { 0.0 })),
    );
}

/// Rows dropped, filtered and reported by kind, and what the walk listed and watched.
fn encode_rows_and_walk(enc: &mut Encoder, snapshot: &Snapshot) {
    single(
        enc,
        "podstat_cgroups_dropped",
        &[],
        snapshot.budget.dropped_cgroups as f64,
    );
    single(
        enc,
        "podstat_cgroups_filtered",
        &[],
        snapshot.filtered as f64,
    );

    let mut counts = [0u64; 5];
    for c in &snapshot.containers {
        let i = match c.target.kind {
            CgroupKind::Root => 0,
            CgroupKind::Qos => 1,
            CgroupKind::Pod { .. } => 2,
            CgroupKind::Container { .. } => 3,
            CgroupKind::Raw | CgroupKind::Skip => 4,
        };
        counts[i] += 1;
    }
    labelled(
        enc,
        "podstat_containers_discovered",
        "kind",
        ["root", "qos", "pod", "container", "raw"]
            .into_iter()
            .zip(counts.map(|n| n as f64)),
    );

    single(
        enc,
        "podstat_discovery_dirs_listed",
        &[],
        snapshot.walk.dirs_listed as f64,
    );
    single(
        enc,
        "podstat_discovery_watches",
        &[],
        snapshot.walk.watches as f64,
    );
}

/// The listener's counters and gauges, as the HTTP layer reports them.
#[derive(Debug, Clone, Copy)]
pub struct HttpStats {
    pub open: usize,
    pub limit: usize,
    pub accepted: u64,
    /// (reason label, connections closed for it)
    pub closed: [(&'static str, u64); 5],
    pub tls_failures: u64,
    pub unauthorized: u64,
}

/// Whatever serves HTTP hands the agent one of these, so the self-metrics can include it
/// without the collection knowing the server.
pub trait HttpStatsSource: Send + Sync {
    fn http_stats(&self) -> HttpStats;
}

/// The `podstat_http_*` families (only when serving HTTP).
pub fn encode_http(enc: &mut Encoder, s: &HttpStats) {
    single(enc, "podstat_http_connections", &[], s.open as f64);
    labelled(
        enc,
        "podstat_http_connections_closed_total",
        "reason",
        s.closed.map(|(why, n)| (why, n as f64)),
    );
    single(enc, "podstat_http_connections_limit", &[], s.limit as f64);
    single(
        enc,
        "podstat_http_connections_total",
        &[],
        s.accepted as f64,
    );
    single(
        enc,
        "podstat_http_tls_handshake_failures_total",
        &[],
        s.tls_failures as f64,
    );
    single(
        enc,
        "podstat_http_unauthorized_total",
        &[],
        s.unauthorized as f64,
    );
}

/// The `podstat_metadata_*` families (only when a metadata source is configured).
pub fn encode_metadata(enc: &mut Encoder, h: &MetaHealth) {
    if let Some((at, _)) = h.last_success {
        single(
            enc,
            "podstat_metadata_age_seconds",
            &[],
            at.elapsed().as_secs_f64(),
        );
    }
    labelled(
        enc,
        "podstat_metadata_errors_total",
        "kind",
        METADATA_ERROR_KINDS
            .iter()
            .map(|kind| (*kind, h.errors.get(kind).copied().unwrap_or(0) as f64)),
    );
    single(enc, "podstat_metadata_fetches_total", &[], h.fetches as f64);
    if let Some((_, wall)) = h.last_success {
        let unix = wall
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        single(
            enc,
            "podstat_metadata_last_success_timestamp_seconds",
            &[],
            unix,
        );
    }
    single(enc, "podstat_metadata_pods", &[], h.pods as f64);
    single(
        enc,
        "podstat_metadata_refresh_requests_total",
        &[],
        h.early_requests as f64,
    );
    let up = h.last_error.is_none() && h.last_success.is_some();
    single(enc, "podstat_metadata_up", &[], if up { 1.0 } else { 0.0 });
}

/// Every `kind` of `podstat_metadata_errors_total`, always all emitted so rates work from 0.
pub const METADATA_ERROR_KINDS: &[&str] = &[
    "connect",
    "decode",
    "http",
    "timeout",
    "tls",
    "token",
    "too_large",
];
