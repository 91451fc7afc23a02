//! The join: a cgroup's pod UID and container ID (from its path) against the pod list, giving
//! the label set the kubelet's `/metrics/cadvisor` would show for it:
//!
//! | row | container | image | pod, namespace |
//! |---|---|---|---|
//! | container in the list | its name | its image | set |
//! | pod cgroup | `""` | `""` | set |
//! | other cgroup of a known pod (the sandbox) | `""` (containerd) or `POD` (Docker, CRI-O) | `sandbox_image` | set |
//! | root, QoS, raw, unknown pod | `""` | `""` | `""` |
//!
//! The rendered label string is cached in the engine's per-cgroup state (collect/state.rs) and
//! rebuilt only when the index changes (its generation), so a steady node renders nothing per
//! scrape.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::MetaIndex;
use crate::config::KubernetesConfig;
use crate::discovery::{CgroupKind, Runtime, Target};
use crate::labels::{render_labels, Labels};

/// A target's labels for one index generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub generation: u64,
    /// `container="…",id="…",…,pod="…"[,label_…="…"]`, escaped.
    pub prefix: String,
    pub namespace: String,
    /// Label values cut to `max_label_value_length` in this rendering.
    pub truncated: u32,
    /// The cgroup belongs to a pod, but the index does not know it (or its container ID).
    pub unknown: bool,
    /// A container cgroup of a known pod whose ID is in none of its status lists: the sandbox
    /// (or a container the list does not show yet). Network series go on this row.
    pub sandbox: bool,
}

/// How sandbox rows are labelled and how long a label value may be.
#[derive(Debug, Clone)]
pub struct JoinPolicy {
    /// None: by runtime ("" for containerd, "POD" for Docker and CRI-O).
    pub sandbox_container: Option<String>,
    pub sandbox_image: String,
    pub max_label_value_length: usize,
    /// `min_refresh_interval` and `refresh_interval`: the first and last gaps between the
    /// early fetches an unknown cgroup may ask for ([`refresh_due`]).
    pub refresh_first_gap: Duration,
    pub refresh_last_gap: Duration,
}

impl JoinPolicy {
    pub fn new(k: &KubernetesConfig, max_label_value_length: usize) -> JoinPolicy {
        JoinPolicy {
            sandbox_container: (k.sandbox_container != "auto").then(|| k.sandbox_container.clone()),
            sandbox_image: k.sandbox_image.clone(),
            max_label_value_length,
            refresh_first_gap: k.min_refresh_interval.0,
            refresh_last_gap: k.refresh_interval.0,
        }
    }

    fn sandbox_name(&self, runtime: Runtime) -> &str {
        match (&self.sandbox_container, runtime) {
            (Some(fixed), _) => fixed,
            (None, Runtime::Docker | Runtime::CriO) => "POD",
            (None, _) => "",
        }
    }
}

/// Resolves `target` against `index` (no caching).
pub fn resolve(target: &Target, index: &MetaIndex, policy: &JoinPolicy) -> Resolved {
    let mut labels: Labels = target.labels.clone();
    let mut extra: &[(String, String)] = &[];
    let mut unknown = false;
    let mut sandbox = false;
    match &target.kind {
        CgroupKind::Pod { uid } => match index.pod(uid) {
            Some(pod) => {
                labels.pod.clone_from(&pod.name);
                labels.namespace.clone_from(&pod.namespace);
                extra = &pod.extra;
            }
            None => unknown = true,
        },
        CgroupKind::Container {
            pod_uid,
            id,
            runtime,
        } => {
            if let Some(c) = index.container(id) {
                labels.container.clone_from(&c.name);
                labels.image.clone_from(&c.image);
                labels.pod.clone_from(&c.pod.name);
                labels.namespace.clone_from(&c.pod.namespace);
                extra = &c.pod.extra;
            } else if let Some(pod) = index.pod(pod_uid) {
                labels.container = policy.sandbox_name(*runtime).to_owned();
                labels.image.clone_from(&policy.sandbox_image);
                labels.pod.clone_from(&pod.name);
                labels.namespace.clone_from(&pod.namespace);
                extra = &pod.extra;
                unknown = true;
                sandbox = true;
            } else {
                unknown = true;
            }
        }
        CgroupKind::Root | CgroupKind::Qos | CgroupKind::Raw | CgroupKind::Skip => {}
    }
    let (prefix, truncated) = render_labels(&labels, extra, policy.max_label_value_length);
    Resolved {
        generation: index.generation,
        prefix,
        namespace: labels.namespace,
        truncated,
        unknown,
        sandbox,
    }
}

/// The target's labels for `index`, from `cache` (the target's last rendering) when the
/// generation matches. The bool is true when the labels were rendered now (so their
/// truncations are new).
pub fn resolve_cached(
    target: &Target,
    cache: &Mutex<Option<Arc<Resolved>>>,
    index: &MetaIndex,
    policy: &JoinPolicy,
) -> (Arc<Resolved>, bool) {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = cache.as_ref().filter(|r| r.generation == index.generation) {
        return (Arc::clone(r), false);
    }
    let fresh = Arc::new(resolve(target, index, policy));
    *cache = Some(Arc::clone(&fresh));
    (fresh, true)
}

/// When a cgroup the pod metadata does not know may ask for an early fetch: at once, then
/// after `min_refresh_interval`, then at doubling gaps until the gap reaches
/// `refresh_interval`, where the regular fetches take over. A container the kubelet lists a
/// few seconds after its cgroup appears is labelled within about `min_refresh_interval` of
/// being listed (one early fetch was not enough: it could come too soon and leave the
/// container unlabelled for a whole `refresh_interval`), while a cgroup that is never listed
/// (a sandbox) asks only a handful of times.
#[derive(Debug, Default)]
pub struct RefreshBackoff {
    next: Option<Instant>,
    gap: Duration,
}

/// Whether a target with this `backoff` may ask for an early metadata fetch now (and if so,
/// when it may next).
pub fn refresh_due(backoff: &Mutex<RefreshBackoff>, now: Instant, policy: &JoinPolicy) -> bool {
    let mut b = backoff.lock().unwrap_or_else(|p| p.into_inner());
    match b.next {
        None => {
            b.gap = policy.refresh_first_gap;
            b.next = Some(now + b.gap);
            true
        }
        Some(at) if now >= at && b.gap < policy.refresh_last_gap => {
            b.gap = (b.gap * 2).min(policy.refresh_last_gap);
            b.next = Some(now + b.gap);
            true
        }
        Some(_) => false,
    }
}
