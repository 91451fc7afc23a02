//! Pod metadata: where the `pod`, `namespace`, `container` and `image` labels come from.
//!
//! A source (the kubelet's `/pods`, polled by [`kubelet`]) publishes a [`MetaIndex`] into the
//! shared [`MetaStore`]; every collection takes the current index (an `Arc` clone, no
//! waiting) and [`join`] resolves each cgroup's labels against it. A source that fails never
//! blocks a scrape: the last good index stays in place and the store's health says how old it
//! is and what went wrong.

#[cfg(feature = "apiserver")]
pub mod apiserver;
pub mod join;
pub mod kubelet;
pub mod labels;
pub mod podlist;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::LabelsConfig;
use podlist::PodInfo;

/// This node's name: `[kubernetes] node_name`, else the Downward API's NODE_NAME.
pub fn node_name(cfg: &crate::config::KubernetesConfig) -> Option<String> {
    Some(cfg.node_name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
}

/// What the join needs of one pod. Shared by the pod's containers and its index entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    /// Allow-listed pod labels and annotations, already named (`label_app`, …).
    pub extra: Vec<(String, String)>,
}

/// A container instance: its pod and its name and image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMeta {
    pub pod: Arc<PodMeta>,
    pub name: String,
    pub image: String,
}

/// The pods of this node, indexed for the join.
#[derive(Debug, Default)]
pub struct MetaIndex {
    /// Bumped whenever the content changes, so cgroups re-resolve their labels only then.
    pub generation: u64,
    /// By pod UID, and for static pods also by the config hash (the cgroup's UID) that the
    /// mirror pod carries in `kubernetes.io/config.mirror`.
    pods: HashMap<String, Arc<PodMeta>>,
    /// By runtime container ID (current and previous instances).
    containers: HashMap<String, ContainerMeta>,
}

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
pub const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";

impl MetaIndex {
    /// Builds the index from decoded pods, applying the label allowlists.
    pub fn build(pods: &[PodInfo], labels: &LabelsConfig, max_pod_labels: usize) -> MetaIndex {
        let mut index = MetaIndex::default();
        for pod in pods {
            let meta = Arc::new(PodMeta {
                name: pod.name.clone(),
                namespace: pod.namespace.clone(),
                extra: labels::pod_extra_labels(
                    &pod.labels,
                    &pod.annotations,
                    &labels.pod_labels,
                    &labels.pod_annotations,
                    max_pod_labels,
                ),
            });
            index.pods.insert(pod.uid.clone(), Arc::clone(&meta));
            for key in [MIRROR_ANNOTATION, HASH_ANNOTATION] {
                if let Some(hash) = pod.annotations.get(key).filter(|h| **h != pod.uid) {
                    index
                        .pods
                        .entry(hash.clone())
                        .or_insert_with(|| Arc::clone(&meta));
                }
            }
            for c in &pod.containers {
                index.containers.insert(
                    c.id.clone(),
                    ContainerMeta {
                        pod: Arc::clone(&meta),
                        name: c.name.clone(),
                        image: c.image.clone(),
                    },
                );
            }
        }
        index
    }

    pub fn pod(&self, uid: &str) -> Option<&Arc<PodMeta>> {
        self.pods.get(uid)
    }

    pub fn container(&self, id: &str) -> Option<&ContainerMeta> {
        self.containers.get(id)
    }

    /// Distinct pods (not index entries).
    pub fn pod_count(&self) -> usize {
        let mut seen: Vec<*const PodMeta> = self.pods.values().map(Arc::as_ptr).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    fn same_content(&self, other: &MetaIndex) -> bool {
        self.pods == other.pods && self.containers == other.containers
    }
}

/// Health of the metadata source, for `/readyz`, logs and `podstat_metadata_*`.
#[derive(Debug, Clone, Default)]
pub struct MetaHealth {
    /// "none", "kubelet" or "apiserver".
    pub source: &'static str,
    pub last_success: Option<(Instant, SystemTime)>,
    pub last_error: Option<String>,
    /// Failed fetches by kind (connect, timeout, http, too_large, decode, token).
    pub errors: BTreeMap<&'static str, u64>,
    pub fetches: u64,
    pub pods: usize,
    /// Early fetches asked for by unknown containers.
    pub early_requests: u64,
}

/// The shared, always-readable view of pod metadata.
pub struct MetaStore {
    index: Mutex<Arc<MetaIndex>>,
    health: Mutex<MetaHealth>,
    /// Wakes the source for an early fetch (an unknown container appeared).
    pub wake: tokio::sync::Notify,
    /// True once a pod list is in (or no source is configured).
    listed: tokio::sync::watch::Sender<bool>,
    /// Until when readiness and /metrics wait for the first list (`wait_for_first_list`).
    wait_until: Instant,
    gave_up_logged: std::sync::atomic::AtomicBool,
}

impl MetaStore {
    /// A store for `source` ("none" needs no list); readiness waits for the first list at
    /// most `wait` from now.
    pub fn new(source: &'static str, wait: Duration) -> MetaStore {
        MetaStore {
            index: Mutex::new(Arc::new(MetaIndex::default())),
            health: Mutex::new(MetaHealth {
                source,
                ..MetaHealth::default()
            }),
            wake: tokio::sync::Notify::new(),
            listed: tokio::sync::watch::Sender::new(source == "none"),
            wait_until: Instant::now() + wait,
            gave_up_logged: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether labels can be served: the first pod list is in, or its wait is over (then
    /// logged once: the series carry empty pod labels until a list arrives).
    pub fn first_list_settled(&self) -> bool {
        if *self.listed.borrow() {
            return true;
        }
        if Instant::now() < self.wait_until {
            return false;
        }
        if !self
            .gave_up_logged
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                "no pod list within wait_for_first_list; serving series with empty pod labels until one arrives"
            );
        }
        true
    }

    /// Waits (async) until [`MetaStore::first_list_settled`]: a scrape right after a restart
    /// gets labelled series, never a burst of label-less ones.
    pub async fn wait_first_list(&self) {
        let mut rx = self.listed.subscribe();
        let deadline = tokio::time::Instant::from_std(self.wait_until);
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|listed| *listed)).await;
    }

    /// The index to join against now.
    pub fn current(&self) -> Arc<MetaIndex> {
        Arc::clone(&self.index.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the index after a successful fetch (keeping the generation when nothing
    /// changed, so no label is rebuilt).
    pub fn publish(&self, mut next: MetaIndex) {
        let pods = next.pod_count();
        {
            let mut current = self.index.lock().unwrap_or_else(|p| p.into_inner());
            if !current.same_content(&next) {
                next.generation = current.generation + 1;
                *current = Arc::new(next);
            }
        }
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.fetches += 1;
        h.pods = pods;
        h.last_success = Some((Instant::now(), SystemTime::now()));
        h.last_error = None;
        drop(h);
        self.listed.send_replace(true);
    }

    /// Records a failed fetch; the last good index stays in place.
    pub fn record_error(&self, kind: &'static str, message: String) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.fetches += 1;
        *h.errors.entry(kind).or_default() += 1;
        h.last_error = Some(message);
    }

    /// Asks the source for an early fetch (it rate-limits them).
    pub fn request_refresh(&self) {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .early_requests += 1;
        self.wake.notify_one();
    }

    pub fn health(&self) -> MetaHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podlist::ContainerInfo;

    fn pod(uid: &str, name: &str, annotations: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            name: name.into(),
            namespace: "kube-system".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            containers: vec![ContainerInfo {
                id: format!("{name}-id"),
                name: "c".into(),
                image: "i".into(),
            }],
            ..PodInfo::default()
        }
    }

    #[test]
    fn static_pods_are_found_by_the_cgroup_hash_too() {
        let labels = crate::config::default_config().expect("config").labels;
        // As the API server shows a static pod: the mirror pod's UID plus the hash annotation.
        let mirror = pod(
            "9d2f0c1a-1111-4222-8333-444455556666",
            "etcd-node1",
            &[(MIRROR_ANNOTATION, "eaf7d48161d81d9c3359e1c008571fd6")],
        );
        let index = MetaIndex::build(&[mirror], &labels, 16);
        assert_eq!(
            index
                .pod("eaf7d48161d81d9c3359e1c008571fd6")
                .map(|p| p.name.as_str()),
            Some("etcd-node1")
        );
        assert!(index.pod("9d2f0c1a-1111-4222-8333-444455556666").is_some());
        assert_eq!(index.pod_count(), 1);
        assert_eq!(
            index.container("etcd-node1-id").map(|c| c.name.as_str()),
            Some("c")
        );
    }

    #[test]
    fn unchanged_lists_keep_the_generation() {
        let labels = crate::config::default_config().expect("config").labels;
        let store = MetaStore::new("kubelet", Duration::ZERO);
        let pods = [pod("u1", "a", &[])];
        store.publish(MetaIndex::build(&pods, &labels, 16));
        let g1 = store.current().generation;
        store.publish(MetaIndex::build(&pods, &labels, 16));
        assert_eq!(
            store.current().generation,
            g1,
            "same content, same generation"
        );
        store.publish(MetaIndex::build(&[pod("u1", "b", &[])], &labels, 16));
        assert_eq!(store.current().generation, g1 + 1);
        assert_eq!(store.health().fetches, 3);
    }
}
