//! What gets reported: the row and namespace filters, and the series budget.
//!
//! Filters run before a cgroup's files are read (a filtered namespace costs nothing). The
//! budget runs after collection, when each cgroup's series count is known: over
//! `max_series`, whole cgroups are left out in a fixed order, so the same cgroups stay
//! visible from one scrape to the next and the output stays valid:
//!
//! 1. raw cgroups (outside Kubernetes), newest first;
//! 2. Kubernetes containers, sandboxes and pod rows, newest first;
//! 3. the QoS rows, then the root `/` (only when the budget is smaller than they are).
//!
//! (ties by path, descending). "Newest" is `container_start_time_seconds`: keeping the
//! long-running cgroups keeps dashboards and alerts continuous, and what is dropped is what
//! just appeared. The budget is hard: `podstat_series` never exceeds it.

use std::collections::HashSet;

use crate::config::Config;
use crate::discovery::{CgroupKind, Target};
use crate::exposition::names::{self, FamilyMask};
use crate::meta::join::Resolved;
use crate::snapshot::{BudgetOutcome, ContainerSample};

pub struct Policy {
    namespaces_include: HashSet<String>,
    namespaces_exclude: HashSet<String>,
    exclude_cgroups: crate::config::PatternSet,
    pod_rows: bool,
    qos_rows: bool,
    pub mask: Vec<bool>,
    pub drop_metrics: Vec<String>,
    pub max_series: usize,
}

impl Policy {
    pub fn new(config: &Config) -> Result<Policy, String> {
        let f = &config.filters;
        Ok(Policy {
            namespaces_include: f.namespaces_include.iter().cloned().collect(),
            namespaces_exclude: f.namespaces_exclude.iter().cloned().collect(),
            exclude_cgroups: f.exclude_cgroups.clone(),
            pod_rows: f.pod_rows,
            qos_rows: f.qos_rows,
            mask: names::family_mask(&f.drop_metrics)?,
            drop_metrics: f.drop_metrics.clone(),
            max_series: config.limits.max_series,
        })
    }

    /// Whether `target` is left out whatever its labels say (its row kind is off, or its path
    /// is excluded): such a cgroup has no use for pod metadata, so it never asks for a fetch.
    pub fn excludes_by_path(&self, target: &Target) -> bool {
        match target.kind {
            CgroupKind::Root => false,
            CgroupKind::Qos if !self.qos_rows => true,
            CgroupKind::Pod { .. } if !self.pod_rows => true,
            _ => self.exclude_cgroups.is_match(&target.path),
        }
    }

    /// Whether `target` (with its resolved labels) is reported at all.
    pub fn keeps(&self, target: &Target, labels: &Resolved) -> bool {
        if target.kind == CgroupKind::Root {
            return true;
        }
        if self.excludes_by_path(target) {
            return false;
        }
        if target.pod_uid().is_some() {
            if !self.namespaces_include.is_empty()
                && !self.namespaces_include.contains(&labels.namespace)
            {
                return false;
            }
            if self.namespaces_exclude.contains(&labels.namespace) {
                return false;
            }
        }
        true
    }

    /// Enforces `max_series` on `samples` (0: no limit), keeping their order.
    pub fn apply_budget(&self, samples: &mut Vec<ContainerSample>) -> BudgetOutcome {
        apply_budget(samples, &self.mask, self.max_series)
    }
}

/// Drop class: lower is dropped first.
fn drop_class(kind: &CgroupKind) -> u8 {
    match kind {
        CgroupKind::Raw | CgroupKind::Skip => 0,
        CgroupKind::Pod { .. } | CgroupKind::Container { .. } => 1,
        CgroupKind::Qos => 2,
        CgroupKind::Root => 3,
    }
}

pub fn apply_budget(
    samples: &mut Vec<ContainerSample>,
    mask: &FamilyMask,
    max_series: usize,
) -> BudgetOutcome {
    let counts: Vec<usize> = samples
        .iter()
        .map(|s| names::count_series(s, mask))
        .collect();
    let total: usize = counts.iter().sum();
    if max_series == 0 || total <= max_series {
        return BudgetOutcome {
            series: total,
            ..BudgetOutcome::default()
        };
    }
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (&samples[a].target, &samples[b].target);
        drop_class(&ta.kind)
            .cmp(&drop_class(&tb.kind))
            .then(tb.start_time().total_cmp(&ta.start_time()))
            .then(tb.path.cmp(&ta.path))
    });
    let mut drop = vec![false; samples.len()];
    let mut series = total;
    let mut outcome = BudgetOutcome::default();
    for i in order {
        if series <= max_series {
            break;
        }
        drop[i] = true;
        series -= counts[i];
        outcome.dropped_series += counts[i];
        outcome.dropped_cgroups += 1;
    }
    let mut i = 0;
    samples.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
    outcome.series = series;
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::discovery::Runtime;
    use crate::labels::Labels;
    use crate::snapshot::ContainerStats;

    fn sample(path: &str, kind: CgroupKind, start: f64) -> ContainerSample {
        ContainerSample {
            target: Arc::new(Target {
                path: path.into(),
                kind,
                inode: 0,
                dirs: Default::default(),
                labels: Labels::default(),
                created: std::time::Duration::from_secs_f64(start),
                files: Default::default(),
            }),
            labels: Arc::new(Resolved {
                generation: 0,
                prefix: format!("id=\"{path}\""),
                namespace: String::new(),
                truncated: 0,
                unknown: false,
                sandbox: false,
                first_unlisted: false,
            }),
            // Two series each: usage and processes.
            stats: ContainerStats {
                cpu_usage_seconds: Some(1.0),
                processes: Some(1),
                ..ContainerStats::default()
            },
        }
    }

    #[test]
    fn budget_drops_raw_then_kubernetes_newest_first_then_qos_then_root() {
        let ctr = |id: &str| CgroupKind::Container {
            pod_uid: "u".into(),
            id: id.into(),
            runtime: Runtime::Containerd,
        };
        let mut samples = vec![
            sample("/", CgroupKind::Root, 1.0),
            sample("/kubepods/burstable", CgroupKind::Qos, 1.0),
            sample("/kubepods/burstable/podu/old", ctr("old"), 100.0),
            sample("/kubepods/burstable/podu/new", ctr("new"), 300.0),
            sample("/system.slice/a.service", CgroupKind::Raw, 50.0),
            sample("/system.slice/b.service", CgroupKind::Raw, 10.0),
        ];
        let mask = vec![true; names::CONTAINER_FAMILIES.len()];
        let paths =
            |s: &[ContainerSample]| s.iter().map(|x| x.target.path.clone()).collect::<Vec<_>>();
        let per = names::count_series(&samples[0], &mask);
        assert!(per >= 2);
        // Room for three cgroups and a bit: both raw cgroups go (newest first), then the
        // newest Kubernetes container.
        let out = apply_budget(&mut samples, &mask, 3 * per + 1);
        assert_eq!(
            out,
            BudgetOutcome {
                series: 3 * per,
                dropped_series: 3 * per,
                dropped_cgroups: 3
            }
        );
        assert_eq!(
            paths(&samples),
            ["/", "/kubepods/burstable", "/kubepods/burstable/podu/old"]
        );
        // The budget is hard: under the last rows, QoS goes before the root.
        let out = apply_budget(&mut samples, &mask, per);
        assert_eq!(paths(&samples), ["/"]);
        assert_eq!(out.series, per);
        let out = apply_budget(&mut samples, &mask, 1);
        assert!(samples.is_empty());
        assert_eq!(out.series, 0);
        // No limit.
        assert_eq!(apply_budget(&mut samples, &mask, 0).dropped_cgroups, 0);
    }

    #[test]
    fn filters_rows_namespaces_and_cgroup_patterns() {
        let config = crate::config::parse(
            "[filters]\npod_rows = false\nqos_rows = false\nnamespaces_include = [\"web\", \"\"]\n\
             namespaces_exclude = [\"\"]\nexclude_cgroups = [\"/system.slice/*.service\"]\n",
            "t",
        )
        .expect("config");
        let policy = Policy::new(&config).expect("policy");
        let with_ns = |s: ContainerSample, ns: &str| {
            let mut r = (*s.labels).clone();
            r.namespace = ns.into();
            (s.target, r)
        };
        let ctr = CgroupKind::Container {
            pod_uid: "u".into(),
            id: "c".into(),
            runtime: Runtime::Containerd,
        };
        let cases = [
            (sample("/", CgroupKind::Root, 1.0), "", true),
            (sample("/kubepods", CgroupKind::Qos, 1.0), "", false),
            (
                sample("/kubepods/podu", CgroupKind::Pod { uid: "u".into() }, 1.0),
                "web",
                false,
            ),
            (sample("/kubepods/podu/c", ctr.clone(), 1.0), "web", true),
            (sample("/kubepods/podu/c", ctr.clone(), 1.0), "db", false),
            // Unknown metadata: namespace "" is excluded here by namespaces_exclude.
            (sample("/kubepods/podu/c", ctr, 1.0), "", false),
            (
                sample("/system.slice/cron.service", CgroupKind::Raw, 1.0),
                "",
                false,
            ),
            (sample("/system.slice", CgroupKind::Raw, 1.0), "", true),
        ];
        for (s, ns, keep) in cases {
            let (t, r) = with_ns(s, ns);
            assert_eq!(policy.keeps(&t, &r), keep, "{} in {ns:?}", t.path);
        }
        let bad = crate::config::parse("[filters]\ndrop_metrics = [\"container_nope\"]\n", "t")
            .expect("config");
        assert!(
            Policy::new(&bad).is_err(),
            "unknown family names are rejected"
        );
    }
}
