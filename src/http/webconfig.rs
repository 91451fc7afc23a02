//! The listener's web config: TLS and basic auth, in the file format of the Prometheus
//! exporter-toolkit (`--web.config.file`), so the file an SRE already wrote for node_exporter
//! works here. Relative paths in it are relative to the file's directory, as there.
//!
//! The file and every file it names are checked for changes at most once a second, when a
//! connection arrives: a renewed certificate (cert-manager, a rotated Secret) or a changed
//! password is used from the next connection on, with no restart and no dropped scrape. A
//! change that does not load is logged and the previous config kept.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("web config {path}: {reason}")]
pub struct WebConfigError {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted for compatibility; podstat serves HTTP/1.1 only.
    #[serde(default)]
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The headers exporter-toolkit lets a web config set; the rest are the server's to decide.
const SETTABLE_HEADERS: &[&str] = &[
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "x-xss-protection",
];

/// A loaded web config.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    /// User name → bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether client certificates are verified (then a connection that completed its
    /// handshake has proved who it is).
    pub client_certs_required: bool,
}

impl WebConfig {
    pub fn auth_required(&self) -> bool {
        !self.users.is_empty()
    }
}

/// Reads and checks `path`; returns the config and the files it depends on (for reloads).
pub fn load(path: &Path) -> Result<(WebConfig, Vec<PathBuf>), WebConfigError> {
    let fail = |reason: String| WebConfigError {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let (config, mut files) = parse(&text, dir).map_err(fail)?;
    files.insert(0, path.to_path_buf());
    Ok((config, files))
}

/// A web config's text; relative paths in it are relative to `dir`. Returns the config and
/// the files it names.
pub fn parse(text: &str, dir: &Path) -> Result<(WebConfig, Vec<PathBuf>), String> {
    let file: WebConfigFile = if text.trim().is_empty() {
        WebConfigFile {
            tls_server_config: None,
            http_server_config: None,
            basic_auth_users: BTreeMap::new(),
        }
    } else {
        serde_yaml::from_str(text).map_err(|e| e.to_string())?
    };
    let mut files = Vec::new();
    let mut config = WebConfig::default();
    for (user, hash) in &file.basic_auth_users {
        if user.contains(':') {
            return Err(format!(
                "basic_auth_users: user {user:?} contains ':', which basic auth cannot carry"
            ));
        }
        hash.parse::<bcrypt::HashParts>().map_err(|e| {
            format!(
                "basic_auth_users: the password of {user:?} is not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':'`"
            )
        })?;
    }
    config.users = file.basic_auth_users;
    if let Some(http) = file.http_server_config {
        for (name, value) in http.headers {
            if !SETTABLE_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "http_server_config.headers: {name:?} cannot be set (allowed: {})",
                    SETTABLE_HEADERS.join(", ")
                ));
            }
            let name =
                HeaderName::try_from(name.as_str()).map_err(|e| format!("header {name:?}: {e}"))?;
            let value =
                HeaderValue::try_from(value.as_str()).map_err(|e| format!("header {name}: {e}"))?;
            config.headers.push((name, value));
        }
    }
    if let Some(tls) = file.tls_server_config {
        let resolve = |p: &Path| dir.join(p);
        let (server, verified) = tls_config(&tls, &resolve)?;
        files.push(resolve(&tls.cert_file));
        files.push(resolve(&tls.key_file));
        if let Some(ca) = &tls.client_ca_file {
            files.push(resolve(ca));
        }
        config.tls = Some(Arc::new(server));
        config.client_certs_required = verified;
    }
    Ok((config, files))
}

/// A version's rank (1.2 → 2, 1.3 → 3), for min/max.
fn tls_version(text: &str) -> Result<u8, String> {
    match text {
        "TLS12" => Ok(2),
        "TLS13" => Ok(3),
        "TLS10" | "TLS11" => Err(format!(
            "{text} is not supported (obsolete); use TLS12 or TLS13"
        )),
        other => Err(format!("unknown TLS version {other:?}: use TLS12 or TLS13")),
    }
}

/// The rustls server config, and whether every client must present a verified certificate.
fn tls_config(
    tls: &TlsFile,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<(ServerConfig, bool), String> {
    let (certs, key) = server_identity(tls, resolve)?;
    let min = tls_version(tls.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = tls_version(tls.max_version.as_deref().unwrap_or("TLS13"))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(rank, _)| (min..=max).contains(rank))
            .map(|(_, v)| v)
            .collect();
    if versions.is_empty() {
        return Err("min_version is above max_version".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let auth_type = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let roots = || client_roots(tls, auth_type, resolve);
    let (builder, verified) = match auth_type {
        "NoClientCert" => {
            if tls.client_ca_file.is_some() {
                return Err(
                    "client_ca_file is set but client_auth_type is NoClientCert: set client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven".into(),
                );
            }
            (builder.with_no_client_auth(), false)
        }
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(roots()?, Arc::clone(&provider));
            let required = auth_type == "RequireAndVerifyClientCert";
            if !required {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| e.to_string())?;
            (builder.with_client_cert_verifier(verifier), required)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "client_auth_type {auth_type} is not supported: it accepts certificates without verifying them; use RequireAndVerifyClientCert"
            ))
        }
        other => {
            return Err(format!(
                "unknown client_auth_type {other:?}: use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ))
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file and key_file do not make a key pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, verified))
}

/// The server's certificate chain and key (`cert_file`, `key_file`).
fn server_identity(
    tls: &TlsFile,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert_path = resolve(&tls.cert_file);
    let key_path = resolve(&tls.key_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cert_file {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "cert_file {}: no PEM certificate in it",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("key_file {}: {e}", key_path.display()))?;
    Ok((certs, key))
}

/// The CAs client certificates must chain to (`client_ca_file`).
fn client_roots(
    tls: &TlsFile,
    auth_type: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Arc<rustls::RootCertStore>, String> {
    let Some(ca) = &tls.client_ca_file else {
        return Err(format!("client_auth_type {auth_type} needs client_ca_file"));
    };
    let ca = resolve(ca);
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca)
        .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?
    {
        let cert = cert.map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
    }
    if store.is_empty() {
        return Err(format!("client_ca_file {}: no certificate", ca.display()));
    }
    Ok(Arc::new(store))
}

/// What identifies a file's version: modification time, size, inode (a Secret update swaps a
/// symlink, which changes the inode).
type Stamp = Option<(i64, i64, u64, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.mtime(), m.mtime_nsec(), m.len(), m.ino()))
        })
        .collect()
}

/// The web config in force, re-read when its files change.
pub struct WebConfigWatch {
    state: Mutex<Watched>,
}

struct Watched {
    /// None: no web config (plain HTTP, no authentication).
    path: Option<PathBuf>,
    config: Arc<WebConfig>,
    files: Vec<PathBuf>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

/// How often the files are looked at (one stat each): often enough that a renewed certificate
/// is in use within a second, rarely enough to cost nothing under a connection flood.
const RECHECK: Duration = Duration::from_secs(1);

impl Watched {
    fn none() -> Watched {
        Watched {
            path: None,
            config: Arc::new(WebConfig::default()),
            files: Vec::new(),
            stamps: Vec::new(),
            checked: Instant::now(),
        }
    }
}

/// `path` loaded (empty: no web config).
fn load_watched(path: &Path) -> Result<Watched, WebConfigError> {
    if path.as_os_str().is_empty() {
        return Ok(Watched::none());
    }
    let (config, files) = load(path)?;
    Ok(Watched {
        path: Some(path.to_path_buf()),
        config: Arc::new(config),
        stamps: stamps(&files),
        files,
        checked: Instant::now(),
    })
}

impl WebConfigWatch {
    /// No web config: plain HTTP, no authentication.
    pub fn none() -> WebConfigWatch {
        WebConfigWatch {
            state: Mutex::new(Watched::none()),
        }
    }

    /// Loads `path` (empty: none); an error here stops the start.
    pub fn new(path: &Path) -> Result<WebConfigWatch, WebConfigError> {
        Ok(WebConfigWatch {
            state: Mutex::new(load_watched(path)?),
        })
    }

    /// The config to use for a new connection or request.
    pub fn current(&self) -> Arc<WebConfig> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = state.path.clone() {
            if state.checked.elapsed() >= RECHECK {
                state.checked = Instant::now();
                let now = stamps(&state.files);
                if now != state.stamps {
                    match load(&path) {
                        Ok((config, files)) => {
                            tracing::info!(file = %path.display(), tls = config.tls.is_some(), users = config.users.len(), "web config reloaded");
                            state.config = Arc::new(config);
                            state.stamps = stamps(&files);
                            state.files = files;
                        }
                        Err(e) => {
                            // Not retried until the files change again: one line per change.
                            tracing::error!(error = %e, "web config not reloaded; the previous one stays in force");
                            state.stamps = now;
                        }
                    }
                }
            }
        }
        Arc::clone(&state.config)
    }

    /// Loads `path` now (SIGHUP; empty: no web config), in force for the next connections;
    /// false (and logged) when it does not load, and the previous one stays.
    pub fn switch_to(&self, path: &Path) -> bool {
        match load_watched(path) {
            Ok(watched) => {
                *self.state.lock().unwrap_or_else(|p| p.into_inner()) = watched;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "web config not reloaded; the previous one stays in force");
                false
            }
        }
    }
}

/// Checks basic-auth credentials. bcrypt is slow on purpose (~50-100 ms at cost 10), so
/// results are cached under a SHA-256 of user, password and hash (a changed hash is a new key;
/// the password itself is never kept), and at most one check runs at a time, so a flood of
/// wrong passwords costs at most one core and cannot starve the scrapes.
pub struct BasicAuth {
    cache: Mutex<HashMap<[u8; 32], bool>>,
    gate: tokio::sync::Semaphore,
}

/// Cached results kept; past it the cache starts over (a real scraper's entry comes back on
/// its next scrape).
const CACHE_ENTRIES: usize = 1024;

impl Default for BasicAuth {
    fn default() -> Self {
        BasicAuth {
            cache: Mutex::new(HashMap::new()),
            gate: tokio::sync::Semaphore::new(1),
        }
    }
}

/// The user and password of an `Authorization: Basic` header.
pub fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let text = header.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A hash to check unknown users against, so a wrong user name takes as long as a wrong
/// password and names cannot be probed by timing.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| bcrypt::hash("podstat decoy", bcrypt::DEFAULT_COST).unwrap_or_default())
}

impl BasicAuth {
    /// Whether `header` carries credentials of one of `config`'s users.
    pub async fn check(&self, config: &WebConfig, header: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        let hash = config.users.get(&user);
        let key = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(user.as_bytes());
            ctx.update(&[0]);
            ctx.update(password.as_bytes());
            ctx.update(&[0]);
            ctx.update(hash.map_or(&b""[..], |h| h.as_bytes()));
            let digest = ctx.finish();
            let mut key = [0u8; 32];
            key.copy_from_slice(digest.as_ref());
            key
        };
        if let Some(ok) = self.cache.lock().ok().and_then(|c| c.get(&key).copied()) {
            return ok;
        }
        let Ok(_permit) = self.gate.acquire().await else {
            return false;
        };
        // Another request may have checked the same credentials while this one waited.
        if let Some(ok) = self.cache.lock().ok().and_then(|c| c.get(&key).copied()) {
            return ok;
        }
        let verify = || match hash {
            Some(h) => bcrypt::verify(password.as_bytes(), h).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password.as_bytes(), decoy_hash());
                false
            }
        };
        let ok = super::server::run_blocking(verify);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, ok);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let h = HeaderValue::from_static("Basic cHJvbTpzM2NyM3Q6eA=="); // prom:s3cr3t:x
        assert_eq!(
            basic_credentials(&h),
            Some(("prom".into(), "s3cr3t:x".into()))
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer abc")),
            None
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Basic !!!")),
            None
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("web.yml");
        let cases = [
            ("basic_auth_users:\n  prom: plain\n", "not a bcrypt hash"),
            (
                "tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n",
                "cert_file",
            ),
            (
                "http_server_config:\n  headers:\n    Content-Type: x\n",
                "cannot be set",
            ),
            ("unknown_key: 1\n", "unknown field"),
        ];
        for (text, reason) in cases {
            std::fs::write(&path, text).expect("write");
            let err = load(&path).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
        std::fs::write(&path, "").expect("write");
        assert!(load(&path).is_ok(), "an empty file is no config");
    }
}
