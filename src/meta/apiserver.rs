//! The API-server source (`--features apiserver`): a watch of this node's pods with kube-rs:
//! one LIST (served from the watch cache: `resourceVersion=0`), then a WATCH that resumes from
//! the last resourceVersion after a disconnect and re-lists only when the server answers
//! `410 Gone`. A reflector store holds the pods; every change (debounced) rebuilds the index.
//! It never polls with LISTs: a per-node LIST from thousands of agents is what overloads an
//! API server (kubernetes#77733).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;

use super::podlist::{cadvisor_image, push_instances, PodInfo};
use super::{MetaIndex, MetaStore};
use crate::config::{KubernetesConfig, LabelsConfig};

/// Events closer together than this are applied together (a rollout touches many pods).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The node whose pods are watched.
pub fn node_name(cfg: &KubernetesConfig) -> Result<String, String> {
    super::node_name(cfg).ok_or_else(|| {
            "[kubernetes] source = \"apiserver\" needs node_name or NODE_NAME (Downward API spec.nodeName)"
                .to_owned()
        })
}

async fn client(cfg: &KubernetesConfig) -> Result<kube::Client, String> {
    let config = if cfg.apiserver_url.is_empty() {
        kube::Config::incluster().map_err(|e| format!("in-cluster config: {e}"))?
    } else {
        let url = cfg
            .apiserver_url
            .parse()
            .map_err(|e| format!("apiserver_url {:?}: {e}", cfg.apiserver_url))?;
        let mut c = kube::Config::new(url);
        // kube re-reads a token file itself (rotation) but sends its bytes untrimmed; a file
        // ending in a newline (a hand-made Secret) becomes a static, trimmed token instead.
        match std::fs::read_to_string(&cfg.token_file) {
            Ok(t) if t.trim_end() != t => {
                tracing::warn!(file = %cfg.token_file.display(), "token file ends in whitespace: using its trimmed value without reloading it");
                c.auth_info.token = Some(t.trim().to_owned().into());
            }
            Ok(_) => c.auth_info.token_file = Some(cfg.token_file.display().to_string()),
            Err(e) => {
                return Err(format!(
                    "cannot read the token file {}: {e}",
                    cfg.token_file.display()
                ))
            }
        }
        if cfg.insecure_skip_verify {
            c.accept_invalid_certs = true;
        } else if cfg.ca_file.exists() {
            c.root_cert_file = Some(cfg.ca_file.clone());
        }
        c
    };
    let mut config = config;
    config.connect_timeout = Some(cfg.connect_timeout.0);
    kube::Client::try_from(config).map_err(|e| format!("API client: {e}"))
}

/// What podstat keeps of a Pod object.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let uid = pod.metadata.uid.clone().filter(|u| !u.is_empty())?;
    let spec_image = |name: &str| -> Option<String> {
        let spec = pod.spec.as_ref()?;
        spec.containers
            .iter()
            .map(|c| (&c.name, &c.image))
            .chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .map(|c| (&c.name, &c.image)),
            )
            .chain(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|c| (&c.name, &c.image)),
            )
            .find(|(n, _)| n.as_str() == name)
            .and_then(|(_, i)| i.clone())
    };
    let mut containers = Vec::new();
    if let Some(status) = &pod.status {
        for st in [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten()
        {
            let previous = st
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.container_id.as_deref());
            let image = cadvisor_image(
                st.container_id.as_deref(),
                Some(st.image.as_str()),
                Some(st.image_id.as_str()),
                || spec_image(&st.name),
            );
            push_instances(
                &mut containers,
                &st.name,
                image,
                [st.container_id.as_deref(), previous],
            );
        }
    }
    Some(PodInfo {
        uid,
        name: pod.name_any(),
        namespace: pod.namespace().unwrap_or_default(),
        labels: pod.labels().clone(),
        annotations: pod.annotations().clone(),
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
        containers,
    })
}

/// Watches this node's pods for as long as the agent runs.
pub async fn run(
    store: Arc<MetaStore>,
    cfg: KubernetesConfig,
    labels: LabelsConfig,
    max_pod_labels: usize,
) {
    let node = match node_name(&cfg) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "pod metadata disabled");
            store.record_error("connect", e);
            return;
        }
    };
    let client = match client(&cfg).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "pod metadata disabled: cannot set up the API client");
            store.record_error("tls", e);
            return;
        }
    };
    tracing::info!(node, "pod metadata from a watch of this node's pods");
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .any_semantic();
    let (reader, writer) = reflector::store::<Pod>();
    let events = watcher(api, config)
        .default_backoff()
        .modify(|pod: &mut Pod| {
            // Half of an object's metadata, and podstat never reads it.
            pod.managed_fields_mut().clear();
        })
        .reflect(writer);
    futures_util::pin_mut!(events);
    let mut ready = false;
    loop {
        let next = if ready {
            // Something changed: apply it once the burst is over.
            match tokio::time::timeout(DEBOUNCE, events.next()).await {
                Ok(event) => event,
                Err(_) => {
                    let pods: Vec<PodInfo> =
                        reader.state().iter().filter_map(|p| pod_info(p)).collect();
                    store.publish(MetaIndex::build(&pods, &labels, max_pod_labels));
                    ready = false;
                    continue;
                }
            }
        } else {
            events.next().await
        };
        match next {
            None => {
                tracing::error!("the pod watch ended");
                store.record_error("connect", "the pod watch ended".into());
                return;
            }
            Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
            Some(Ok(_)) => ready = true,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pod watch failed; retrying with backoff, serving the last good view");
                store.record_error("connect", e.to_string());
            }
        }
    }
}
