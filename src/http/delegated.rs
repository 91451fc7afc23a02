//! Delegated authentication and authorization for `/metrics`, the way the kubelet guards its
//! own `/metrics/cadvisor` (and kube-rbac-proxy guards exporters): the scraper's bearer token
//! is checked with a TokenReview, and its right to read this node's metrics with a
//! SubjectAccessReview (`get` on `nodes/metrics`, the node's name). A Prometheus whose service
//! account may scrape the kubelet's cAdvisor endpoint may scrape podstat, and nothing else may.
//!
//! Verdicts are cached for a while under a SHA-256 of the token (the token itself is never
//! kept), so a scrape costs the API server two requests per token per TTL, not per scrape.
//! When the API server cannot be asked, the request is refused (503) and nothing is cached:
//! failures close the door, they never open it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::config::KubernetesConfig;

/// The outcome of a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// The token is not valid (401).
    Unauthenticated,
    /// Valid, but not allowed to read this node's metrics (403).
    Forbidden,
}

/// How long verdicts are reused: kube-rbac-proxy's defaults (allowed 2 min, refused 30 s).
const ALLOWED_TTL: Duration = Duration::from_secs(120);
const REFUSED_TTL: Duration = Duration::from_secs(30);
/// Cached verdicts kept; past it the cache starts over.
const CACHE_ENTRIES: usize = 1024;
/// The largest review answer read.
const MAX_ANSWER: usize = 1 << 20;

pub struct DelegatedAuth {
    api: String,
    node: String,
    token_file: PathBuf,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    cache: Mutex<HashMap<[u8; 32], (Verdict, Instant)>>,
}

/// The API server's URL: `[kubernetes] apiserver_url`, else the in-cluster service address.
fn apiserver_url(cfg: &KubernetesConfig) -> Result<String, String> {
    if !cfg.apiserver_url.is_empty() {
        return Ok(cfg.apiserver_url.trim_end_matches('/').to_owned());
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")) {
        (Some(host), Some(port)) if host.contains(':') => Ok(format!("https://[{host}]:{port}")),
        (Some(host), Some(port)) => Ok(format!("https://{host}:{port}")),
        _ => Err("[server] kubernetes_auth needs [kubernetes] apiserver_url, or KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (set in every pod)".into()),
    }
}

fn node_name(cfg: &KubernetesConfig) -> Result<String, String> {
    crate::meta::node_name(cfg).ok_or_else(|| {
        "[server] kubernetes_auth needs [kubernetes] node_name or NODE_NAME (Downward API spec.nodeName)".into()
    })
}

/// What the configuration must provide, checked at start and by `--check-config`.
pub fn check(cfg: &KubernetesConfig) -> Result<(), String> {
    apiserver_url(cfg)?;
    node_name(cfg)?;
    Ok(())
}

impl DelegatedAuth {
    pub fn new(cfg: &KubernetesConfig) -> Result<DelegatedAuth, String> {
        let api = apiserver_url(cfg)?;
        let node = node_name(cfg)?;
        let client = crate::meta::kubelet::https_client(cfg).map_err(|e| e.to_string())?;
        Ok(DelegatedAuth {
            api,
            node,
            token_file: cfg.token_file.clone(),
            timeout: cfg.request_timeout.0,
            client,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The verdict for a request's `Authorization` header; `Err` when the API server could
    /// not be asked (the request is then refused, and nothing cached).
    pub async fn review(&self, header: Option<&HeaderValue>) -> Result<Verdict, String> {
        let Some(token) = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Ok(Verdict::Unauthenticated);
        };
        let key = {
            let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
            let mut key = [0u8; 32];
            key.copy_from_slice(digest.as_ref());
            key
        };
        if let Some((verdict, until)) = self.cache.lock().ok().and_then(|c| c.get(&key).copied()) {
            if Instant::now() < until {
                return Ok(verdict);
            }
        }
        let verdict = self.ask(token).await?;
        let ttl = if verdict == Verdict::Allowed {
            ALLOWED_TTL
        } else {
            REFUSED_TTL
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, (verdict, Instant::now() + ttl));
        }
        Ok(verdict)
    }

    async fn ask(&self, token: &str) -> Result<Verdict, String> {
        let review = self
            .post(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                serde_json::json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                }),
            )
            .await?;
        let status = &review["status"];
        if status["authenticated"] != serde_json::Value::Bool(true) {
            return Ok(Verdict::Unauthenticated);
        }
        let user = &status["user"];
        let access = self
            .post(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                serde_json::json!({
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": {
                        "user": user["username"],
                        "uid": user["uid"],
                        "groups": user["groups"],
                        "extra": user["extra"],
                        "resourceAttributes": {
                            "verb": "get",
                            "resource": "nodes",
                            "subresource": "metrics",
                            "name": self.node,
                        },
                    },
                }),
            )
            .await?;
        Ok(
            if access["status"]["allowed"] == serde_json::Value::Bool(true) {
                Verdict::Allowed
            } else {
                Verdict::Forbidden
            },
        )
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let own = crate::meta::kubelet::read_token(&self.token_file).map_err(|e| e.to_string())?;
        let url = format!("{}{path}", self.api);
        let request = hyper::Request::post(&url)
            .header(AUTHORIZATION, own)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("{url}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("{url}: reading the answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!(
                    "{url}: HTTP {status} (podstat's service account needs create on tokenreviews and subjectaccessreviews)"
                ));
            }
            serde_json::from_slice(&bytes).map_err(|e| format!("{url}: not JSON: {e}"))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("{url}: no answer within {:?}", self.timeout))?
    }
}
