//! The join: a cgroup's pod UID and container ID (from its path) against the pod list, giving
//! the label set the kubelet's `/metrics/cadvisor` would show for it:
//!
//! | row | container | image | pod, namespace |
//! |---|---|---|---|
//! | container in the list | its name | its image | set |
//! | pod cgroup | `""` | `""` | set |
//! | the first-made cgroup of a known pod that the list does not show (the sandbox) | `""` (containerd) or `POD` (Docker, CRI-O) | `sandbox_image` | set |
//! | a later one (a container not listed yet: just started, or restarted) | `""` | `""` | set |
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
    /// A container cgroup of a known pod whose ID is in none of its status lists, and the
    /// first of them to be made: the sandbox. Network series go on this row.
    pub sandbox: bool,
    /// Whether the cgroup was its pod's first unlisted one when this was rendered (an input:
    /// a rendering is reused only while it still holds).
    pub first_unlisted: bool,
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

/// Resolves `target` against `index` (no caching). `first_unlisted`: the target is the
/// first-made of its pod's container cgroups that the index does not know ([`first_unlisted_by_pod`]).
/// Only that one is the sandbox: a container the kubelet does not list yet (seconds after it
/// started or restarted) is not labelled with the pause image, which would count it twice in
/// `image!=""` sums, with the sandbox's labels. Found by the cluster test (tests/cluster): an
/// OOM-killed container's restarts showed as a second sandbox.
pub fn resolve(
    target: &Target,
    index: &MetaIndex,
    policy: &JoinPolicy,
    first_unlisted: bool,
) -> Resolved {
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
                if first_unlisted {
                    labels.container = policy.sandbox_name(*runtime).to_owned();
                    labels.image.clone_from(&policy.sandbox_image);
                    sandbox = true;
                }
                labels.pod.clone_from(&pod.name);
                labels.namespace.clone_from(&pod.namespace);
                extra = &pod.extra;
                unknown = true;
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
        first_unlisted,
    }
}

/// Which of `targets` is its pod's sandbox: per pod UID, the container cgroup the index does
/// not know that was made first (by creation time, then path). Parallel to `targets`; pods the
/// index does not know have none.
pub fn first_unlisted_by_pod(targets: &[Arc<Target>], index: &MetaIndex) -> Vec<bool> {
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, target) in targets.iter().enumerate() {
        let CgroupKind::Container { pod_uid, id, .. } = &target.kind else {
            continue;
        };
        if index.container(id).is_some() || index.pod(pod_uid).is_none() {
            continue;
        }
        let earlier = |t: &Target, than: &Target| (t.created, &t.path) < (than.created, &than.path);
        first
            .entry(pod_uid.as_str())
            .and_modify(|f| {
                if earlier(target, &targets[*f]) {
                    *f = i;
                }
            })
            .or_insert(i);
    }
    let mut flags = vec![false; targets.len()];
    for i in first.into_values() {
        flags[i] = true;
    }
    flags
}

/// The target's labels for `index`, from `cache` (the target's last rendering) when the
/// generation and `first_unlisted` match. The bool is true when the labels were rendered now
/// (so their truncations are new).
pub fn resolve_cached(
    target: &Target,
    cache: &Mutex<Option<Arc<Resolved>>>,
    index: &MetaIndex,
    policy: &JoinPolicy,
    first_unlisted: bool,
) -> (Arc<Resolved>, bool) {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = cache
        .as_ref()
        .filter(|r| r.generation == index.generation && r.first_unlisted == first_unlisted)
    {
        return (Arc::clone(r), false);
    }
    let fresh = Arc::new(resolve(target, index, policy, first_unlisted));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Runtime;
    use crate::labels::Labels;
    use std::time::Duration;

    const POD: &str = "6f1c3a2e-1b7d-4c1e-9a55-0c2f4d8e9b10";
    const LISTED: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
    const SANDBOX: &str = "bbbb000000000000000000000000000000000000000000000000000000000002";
    const RESTARTED: &str = "cccc000000000000000000000000000000000000000000000000000000000003";

    fn container(id: &str, created_s: u64) -> Arc<Target> {
        let path = format!("/kubepods/burstable/pod{POD}/{id}");
        Arc::new(Target {
            labels: Labels {
                id: path.clone(),
                name: id.to_owned(),
                ..Labels::default()
            },
            path,
            kind: CgroupKind::Container {
                pod_uid: POD.to_owned(),
                id: id.to_owned(),
                runtime: Runtime::Containerd,
            },
            inode: 0,
            dirs: Default::default(),
            created: Duration::from_secs(created_s),
            files: Default::default(),
        })
    }

    /// A pod list that shows one container (LISTED), as the kubelet does seconds after another
    /// container of the pod restarted (RESTARTED not shown yet) and always for the sandbox.
    fn index() -> MetaIndex {
        let list = serde_json::json!({"kind": "PodList", "items": [{
            "metadata": {"name": "web", "namespace": "shop", "uid": POD},
            "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "hog", "image": "hog:1"}]},
            "status": {"containerStatuses": [
                {"name": "app", "image": "app:1", "containerID": format!("containerd://{LISTED}")}
            ]}
        }]});
        let pods = crate::meta::podlist::parse_pod_list(list.to_string().as_bytes()).expect("list");
        let config = crate::config::parse("", "test").expect("config");
        MetaIndex::build(&pods, &config.labels, config.limits.max_pod_labels)
    }

    fn policy() -> JoinPolicy {
        let config = crate::config::parse(
            "[kubernetes]\nsandbox_image = \"registry.k8s.io/pause:3.10\"\n",
            "test",
        )
        .expect("config");
        JoinPolicy::new(&config.kubernetes, config.limits.max_label_value_length)
    }

    #[test]
    fn only_the_first_made_unlisted_cgroup_of_a_pod_is_its_sandbox() {
        let index = index();
        // Made later than the sandbox, listed in between, and discovered first.
        let targets = vec![
            container(RESTARTED, 300),
            container(LISTED, 200),
            container(SANDBOX, 100),
        ];
        let first = first_unlisted_by_pod(&targets, &index);
        assert_eq!(first, [false, false, true]);

        let policy = policy();
        let sandbox = resolve(&targets[2], &index, &policy, true);
        assert!(sandbox.sandbox && sandbox.unknown);
        assert!(sandbox
            .prefix
            .contains(r#"image="registry.k8s.io/pause:3.10""#));
        assert!(sandbox.prefix.contains(r#"container="""#));

        // The restarted container keeps its pod but not the pause image until it is listed.
        let pending = resolve(&targets[0], &index, &policy, false);
        assert!(!pending.sandbox && pending.unknown);
        assert!(pending.prefix.contains(r#"image="""#), "{}", pending.prefix);
        assert!(
            pending.prefix.contains(r#"pod="web""#),
            "{}",
            pending.prefix
        );
        assert!(
            pending.prefix.contains(r#"namespace="shop""#),
            "{}",
            pending.prefix
        );

        let listed = resolve(&targets[1], &index, &policy, false);
        assert!(
            listed.prefix.contains(r#"container="app""#),
            "{}",
            listed.prefix
        );
        assert!(!listed.unknown);
    }

    #[test]
    fn a_cached_rendering_is_redone_when_the_pod_sandbox_changes() {
        let index = index();
        let policy = policy();
        let target = container(RESTARTED, 300);
        let cache = Mutex::new(None);
        let (first, fresh) = resolve_cached(&target, &cache, &index, &policy, false);
        assert!(fresh && !first.sandbox);
        let (again, fresh) = resolve_cached(&target, &cache, &index, &policy, false);
        assert!(!fresh && Arc::ptr_eq(&first, &again));
        // Its older sibling went away: now it is the first unlisted one.
        let (now, fresh) = resolve_cached(&target, &cache, &index, &policy, true);
        assert!(fresh && now.sandbox);
    }
}
