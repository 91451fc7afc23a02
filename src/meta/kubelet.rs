//! The kubelet source: `GET /pods` on the node's kubelet over HTTPS with the service-account
//! token, polled every `refresh_interval`, early (at most once per `min_refresh_interval`)
//! when a cgroup of an unknown container appears, with exponential backoff and jitter on
//! errors. The kubelet cannot be watched, and its `/pods` is served from memory, so polling
//! costs the control plane nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::podlist::{parse_pod_list_kept, Keep, PodListError};
use super::{MetaIndex, MetaStore};
use crate::config::{KubernetesConfig, LabelsConfig};

/// Projected service-account tokens rotate; kube-client re-reads its token about this often.
const TOKEN_RELOAD: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot reach the kubelet at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("TLS handshake with the kubelet at {url} failed: {detail} (check ca_file, or set insecure_skip_verify for a self-signed kubelet certificate)")]
    Handshake { url: String, detail: String },
    #[error("the kubelet at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("the kubelet at {url} answered HTTP {status}{hint}")]
    Http {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("the /pods body from {url} is larger than max_response_bytes ({limit})")]
    TooLarge { url: String, limit: usize },
    #[error("the /pods body from {url} is not a pod list: {source}")]
    Decode { url: String, source: PodListError },
}

impl FetchError {
    /// The `kind` label of `podstat_metadata_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Token { .. } => "token",
            FetchError::Tls(_) | FetchError::Handshake { .. } => "tls",
            FetchError::Connect { .. } => "connect",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Http { .. } => "http",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Decode {
                source: PodListError::TooManyPods { .. },
                ..
            } => "too_large",
            FetchError::Decode { .. } => "decode",
        }
    }
}

/// The `/pods` URL from config and the Downward API environment.
pub fn kubelet_url(cfg: &KubernetesConfig) -> Result<String, String> {
    if !cfg.kubelet_url.is_empty() {
        return Ok(cfg.kubelet_url.clone());
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(ip) = env("HOST_IP") {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        return Ok(format!("https://{host}:10250/pods"));
    }
    let node = Some(cfg.node_name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| env("NODE_NAME"));
    match node {
        Some(n) => Ok(format!("https://{n}:10250/pods")),
        None => Err(
            "[kubernetes] source = \"kubelet\" needs kubelet_url, or HOST_IP or NODE_NAME in the environment (Downward API)"
                .into(),
        ),
    }
}

/// Accepts any server certificate: `insecure_skip_verify`, the explicit opt-in for kubelets
/// with self-signed serving certificates. Signatures are still checked, so the session is
/// encrypted to whoever holds the key; only the identity is not verified.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An HTTP/1.1 client for the cluster's HTTPS endpoints (the kubelet, and the API server's
/// reviews in `http::delegated`): `connect_timeout`, and the server verified against
/// `ca_file` (or not, with `insecure_skip_verify`).
pub(crate) fn https_client<B>(
    cfg: &KubernetesConfig,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, FetchError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(cfg.connect_timeout.0));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(cfg)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

fn tls_config(cfg: &KubernetesConfig) -> Result<rustls::ClientConfig, FetchError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Tls(e.to_string()))?;
    if cfg.insecure_skip_verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&cfg.ca_file)
        .map_err(|e| FetchError::Tls(format!("{}: {e}", cfg.ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| FetchError::Tls(format!("{}: {e}", cfg.ca_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| FetchError::Tls(format!("{}: {e}", cfg.ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(FetchError::Tls(format!(
            "{}: no certificate in the file",
            cfg.ca_file.display()
        )));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

pub struct KubeletClient {
    url: String,
    uri: hyper::Uri,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    token_file: PathBuf,
    token: Option<(HeaderValue, Instant)>,
    timeout: Duration,
    max_bytes: usize,
    max_pods: usize,
}

impl KubeletClient {
    pub fn new(cfg: &KubernetesConfig) -> Result<KubeletClient, FetchError> {
        let url = kubelet_url(cfg).map_err(FetchError::Tls)?;
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| FetchError::Tls(format!("kubelet_url {url:?}: {e}")))?;
        let client = https_client(cfg)?;
        Ok(KubeletClient {
            url,
            uri,
            client,
            token_file: cfg.token_file.clone(),
            token: None,
            timeout: cfg.request_timeout.0,
            max_bytes: cfg.max_response_bytes,
            max_pods: cfg.max_pods,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn bearer(&mut self) -> Result<HeaderValue, FetchError> {
        if let Some((value, at)) = &self.token {
            if at.elapsed() < TOKEN_RELOAD {
                return Ok(value.clone());
            }
        }
        let token = read_token(&self.token_file)?;
        self.token = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Drops the cached token so the next fetch re-reads the file (after a 401).
    pub fn forget_token(&mut self) {
        self.token = None;
    }

    /// One `GET /pods`, body capped and the whole exchange bounded by the request timeout.
    pub async fn fetch(&mut self) -> Result<Bytes, FetchError> {
        let token = self.bearer()?;
        let request = hyper::Request::get(self.uri.clone())
            .header(AUTHORIZATION, token)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Tls(e.to_string()))?;
        let url = self.url.clone();
        let max = self.max_bytes;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                let (url, detail) = (url.clone(), error_chain(&e));
                if is_tls_failure(&e) {
                    FetchError::Handshake { url, detail }
                } else {
                    FetchError::Connect { url, detail }
                }
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(FetchError::Http {
                    url: url.clone(),
                    status: status.as_u16(),
                    hint: match status.as_u16() {
                        401 => " (the token was refused: check token_file)",
                        403 => " (forbidden: grant get on nodes/pods, or nodes/proxy before Kubernetes 1.33)",
                        _ => "",
                    },
                });
            }
            let body = Limited::new(response.into_body(), max);
            match body.collect().await {
                Ok(collected) => Ok(collected.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(FetchError::TooLarge {
                    url: url.clone(),
                    limit: max,
                }),
                Err(e) => Err(FetchError::Connect {
                    url: url.clone(),
                    detail: format!("reading the body: {e}"),
                }),
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout {
                url: self.url.clone(),
                timeout: self.timeout,
            }),
        }
    }
}

pub(crate) fn read_token(path: &Path) -> Result<HeaderValue, FetchError> {
    let text = std::fs::read_to_string(path).map_err(|source| FetchError::Token {
        path: path.to_path_buf(),
        source,
    })?;
    HeaderValue::from_str(&format!("Bearer {}", text.trim())).map_err(|_| FetchError::Token {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the token is not a valid header value",
        ),
    })
}

/// Whether the TLS layer refused the connection (a certificate from another CA, an expired
/// one, a protocol mismatch): rustls' error somewhere in the chain. The connector wraps it in
/// I/O errors (twice), whose `source()` skips the wrapped error itself, so those are opened
/// with `get_ref`.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Fetches and decodes once, and publishes the result or records the failure in the store
/// (used by the loop and by `podstat once`).
pub async fn refresh_once(
    client: &mut KubeletClient,
    store: &MetaStore,
    labels: &LabelsConfig,
    max_pod_labels: usize,
) -> Result<usize, FetchError> {
    let result = fetch_and_decode(client, labels, max_pod_labels).await;
    match result {
        Ok((pods, index)) => {
            store.publish(index);
            Ok(pods)
        }
        Err(e) => {
            store.record_error(e.kind(), e.to_string());
            Err(e)
        }
    }
}

async fn fetch_and_decode(
    client: &mut KubeletClient,
    labels: &LabelsConfig,
    max_pod_labels: usize,
) -> Result<(usize, MetaIndex), FetchError> {
    let body = client.fetch().await?;
    let url = client.url().to_owned();
    let max_pods = client.max_pods;
    let labels = labels.clone();
    // Decoding a 1 MiB list takes milliseconds: off the runtime threads.
    let decoded = tokio::task::spawn_blocking(move || {
        let keep_annotation = |k: &str| {
            k == super::MIRROR_ANNOTATION
                || k == super::HASH_ANNOTATION
                || labels.pod_annotations.is_match(k)
        };
        let keep = Keep {
            max_pods,
            label: &|k| labels.pod_labels.is_match(k),
            annotation: &keep_annotation,
        };
        let decoded = parse_pod_list_kept(&body, &keep)
            .map(|pods| (pods.len(), MetaIndex::build(&pods, &labels, max_pod_labels)));
        drop(body);
        crate::malloc_tuning::release_free_memory();
        decoded
    })
    .await
    .map_err(|e| FetchError::Connect {
        url: url.clone(),
        detail: format!("decode task failed: {e}"),
    })?;
    decoded.map_err(|source| FetchError::Decode { url, source })
}

/// `base` ±20 %, from the clock's nanoseconds (no RNG needed for spreading retries).
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + 0.4 * (f64::from(nanos % 1000) / 1000.0);
    base.mul_f64(factor)
}

/// Polls the kubelet for as long as the agent runs.
pub async fn run(
    store: Arc<MetaStore>,
    cfg: KubernetesConfig,
    labels: LabelsConfig,
    max_pod_labels: usize,
) {
    // The client's own setup is retried too: a CA file or token mounted a moment after the
    // container starts (a projected volume, a Secret not yet created) must not leave the pods
    // unlabelled until the next restart.
    let mut setup_backoff = Duration::from_secs(1);
    let mut client = loop {
        match KubeletClient::new(&cfg) {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?setup_backoff, "cannot set up the kubelet client; pod labels stay empty until it works");
                store.record_error(e.kind(), e.to_string());
                tokio::time::sleep(setup_backoff).await;
                setup_backoff = (setup_backoff * 2).min(Duration::from_secs(60));
            }
        }
    };
    if cfg.insecure_skip_verify {
        tracing::warn!(
            url = client.url(),
            "insecure_skip_verify: the kubelet's certificate is NOT verified"
        );
    }
    tracing::info!(url = client.url(), interval = ?cfg.refresh_interval.0, "pod metadata from the kubelet");
    let max_backoff = cfg.refresh_interval.0.max(Duration::from_secs(60));
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    loop {
        let started = Instant::now();
        let wait = match refresh_once(&mut client, &store, &labels, max_pod_labels).await {
            Ok(pods) => {
                if failing {
                    tracing::info!(pods, "kubelet metadata recovered");
                }
                failing = false;
                backoff = Duration::from_secs(1);
                cfg.refresh_interval.0
            }
            Err(e) => {
                if matches!(e, FetchError::Http { status: 401, .. }) {
                    client.forget_token();
                }
                tracing::warn!(error = %e, kind = e.kind(), retry_in = ?backoff, "kubelet metadata fetch failed; serving the last good view");
                failing = true;
                let wait = jitter(backoff);
                backoff = (backoff * 2).min(max_backoff);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = store.wake.notified() => {
                let since = started.elapsed();
                if since < cfg.min_refresh_interval.0 {
                    tokio::time::sleep(cfg.min_refresh_interval.0 - since).await;
                }
            }
        }
    }
}
