//! The agent's own series (`podstat_*`), the machine families, and cAdvisor's
//! `container_scrape_error`. Written with the same encoder as the container series: they are a
//! few dozen lines, and one writer keeps the body in one format with one set of escaping rules.

use super::encode::{Encoder, MetricType};
use super::names::MACHINE_FAMILIES;
use crate::discovery::CgroupKind;
use crate::snapshot::{ErrorCounts, Snapshot};

use MetricType::{Counter, Gauge};

/// (name, type, labels, help) of every self-metric, for the encoder and the docs.
pub const SELF_FAMILIES: &[(&str, MetricType, &str, &str)] = &[
    ("container_scrape_error", Gauge, "", "1 if discovering cgroups failed during this collection, else 0 (cAdvisor compatible)."),
    ("podstat_build_info", Gauge, "version, cgroup_mode", "Always 1; labels tell the podstat version and the host's cgroup mode."),
    ("podstat_collections_total", Counter, "", "Collections run since start (scrapes within min_collect_interval_ms share one)."),
    ("podstat_collector_duration_seconds", Gauge, "collector", "Time each collector spent in the last collection, in seconds."),
    ("podstat_collector_success", Gauge, "collector", "1 if the collector read every available file without error in the last collection."),
    ("podstat_containers_discovered", Gauge, "kind", "Cgroups reported in the last collection, by kind (root, qos, pod, container, raw)."),
    ("podstat_files_read", Gauge, "", "Files opened by the last collection."),
    ("podstat_read_errors_total", Counter, "kind", "Errors while reading cgroup and proc files: parse (unexpected content), io, vanished (cgroup removed mid-read)."),
    ("podstat_scrape_duration_seconds", Gauge, "", "Duration of the last collection, in seconds."),
];

fn help(name: &str) -> (&'static str, MetricType) {
    SELF_FAMILIES
        .iter()
        .find(|f| f.0 == name)
        .map(|f| (f.3, f.1))
        .unwrap_or(("", Gauge))
}

fn family(enc: &mut Encoder, name: &'static str) {
    let (h, t) = help(name);
    enc.header(name, h, t);
}

/// Running totals kept across collections.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub collections: u64,
    pub errors: ErrorCounts,
}

impl Totals {
    pub fn add(&mut self, snapshot: &Snapshot) {
        self.collections += 1;
        self.errors.parse += snapshot.errors.parse;
        self.errors.io += snapshot.errors.io;
        self.errors.vanished += snapshot.errors.vanished;
    }
}

pub fn encode_machine(enc: &mut Encoder, snapshot: &Snapshot) {
    let m = &snapshot.machine;
    for ((name, kind, help), value) in
        MACHINE_FAMILIES
            .iter()
            .zip([m.cpu_cores, m.memory_bytes, m.swap_bytes])
    {
        if let Some(v) = value {
            enc.header(name, help, *kind);
            enc.sample(name, "", &[], v as f64);
        }
    }
}

pub fn encode_self(enc: &mut Encoder, snapshot: &Snapshot, totals: &Totals, cgroup_mode: &str) {
    family(enc, "container_scrape_error");
    enc.sample(
        "container_scrape_error",
        "",
        &[],
        if snapshot.discovery_failed { 1.0 } else { 0.0 },
    );

    family(enc, "podstat_build_info");
    enc.sample(
        "podstat_build_info",
        "",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("cgroup_mode", cgroup_mode),
        ],
        1.0,
    );

    family(enc, "podstat_collections_total");
    enc.sample(
        "podstat_collections_total",
        "",
        &[],
        totals.collections as f64,
    );

    family(enc, "podstat_collector_duration_seconds");
    for run in &snapshot.collectors {
        enc.sample(
            "podstat_collector_duration_seconds",
            "",
            &[("collector", run.name)],
            run.duration.as_secs_f64(),
        );
    }
    family(enc, "podstat_collector_success");
    for run in &snapshot.collectors {
        enc.sample(
            "podstat_collector_success",
            "",
            &[("collector", run.name)],
            if run.success { 1.0 } else { 0.0 },
        );
    }

    family(enc, "podstat_containers_discovered");
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
    for (kind, n) in ["root", "qos", "pod", "container", "raw"]
        .iter()
        .zip(counts)
    {
        enc.sample(
            "podstat_containers_discovered",
            "",
            &[("kind", kind)],
            n as f64,
        );
    }

    family(enc, "podstat_files_read");
    enc.sample("podstat_files_read", "", &[], snapshot.files_read as f64);

    family(enc, "podstat_read_errors_total");
    for (kind, n) in [
        ("parse", totals.errors.parse),
        ("io", totals.errors.io),
        ("vanished", totals.errors.vanished),
    ] {
        enc.sample("podstat_read_errors_total", "", &[("kind", kind)], n as f64);
    }

    family(enc, "podstat_scrape_duration_seconds");
    enc.sample(
        "podstat_scrape_duration_seconds",
        "",
        &[],
        snapshot.duration.as_secs_f64(),
    );
}
