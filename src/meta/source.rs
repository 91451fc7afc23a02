//! The configured pod-metadata source (`[kubernetes] source`), in one place: what it needs from
//! the environment, the loop that keeps the index fresh, and a single fetch for one-shot
//! commands. `none` does nothing; `apiserver` exists only in builds with that feature (the
//! config rejects it otherwise).

use std::sync::Arc;

use super::MetaStore;
use crate::config::{Config, MetadataSource};

/// What the source needs that the config may leave to the environment (the Downward API's
/// NODE_NAME and HOST_IP): checked at start and by `--check-config` alike.
pub fn check(config: &Config) -> Result<(), String> {
    match config.kubernetes.source {
        MetadataSource::Kubelet => super::kubelet::kubelet_url(&config.kubernetes).map(|_| ()),
        #[cfg(feature = "apiserver")]
        MetadataSource::ApiServer => super::apiserver::node_name(&config.kubernetes).map(|_| ()),
        _ => Ok(()),
    }
}

/// Starts the source's loop on the current tokio runtime; it publishes into `meta` until the
/// process ends.
pub fn spawn(meta: &Arc<MetaStore>, config: &Config) {
    let (k, labels, max) = (
        config.kubernetes.clone(),
        config.labels.clone(),
        config.limits.max_pod_labels,
    );
    match config.kubernetes.source {
        MetadataSource::None => {}
        MetadataSource::Kubelet => {
            tokio::spawn(super::kubelet::run(Arc::clone(meta), k, labels, max));
        }
        #[cfg(feature = "apiserver")]
        MetadataSource::ApiServer => {
            tokio::spawn(super::apiserver::run(Arc::clone(meta), k, labels, max));
        }
        #[cfg(not(feature = "apiserver"))]
        MetadataSource::ApiServer => {}
    }
}

/// One pod list into `meta` (for `podstat once` and `cardinality`), bounded by the request
/// timeout for the API server's first list.
pub async fn fetch_once(meta: &Arc<MetaStore>, config: &Config) -> anyhow::Result<()> {
    match config.kubernetes.source {
        MetadataSource::None => Ok(()),
        #[cfg(feature = "apiserver")]
        MetadataSource::ApiServer => {
            let watch = super::apiserver::run(
                Arc::clone(meta),
                config.kubernetes.clone(),
                config.labels.clone(),
                config.limits.max_pod_labels,
            );
            let listed = async {
                while meta.health().last_success.is_none() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            };
            tokio::select! {
                () = watch => anyhow::bail!("the pod watch ended"),
                r = tokio::time::timeout(config.kubernetes.request_timeout.0, listed) => {
                    r.map_err(|_| anyhow::anyhow!("no pod list from the API server in time"))
                }
            }
        }
        _ => {
            let mut client = super::kubelet::KubeletClient::new(&config.kubernetes)?;
            super::kubelet::refresh_once(
                &mut client,
                meta,
                &config.labels,
                config.limits.max_pod_labels,
            )
            .await?;
            Ok(())
        }
    }
}
