//! Configuration: one TOML file, every key optional, defaults in `config/podstat.toml` (which is
//! embedded, so the file and the built-in default cannot drift apart).
//!
//! Every struct denies unknown keys and every value is checked while deserialising (socket
//! addresses, enums, glob patterns), so all errors carry toml's span and can be reported as
//! `file:line:column: reason`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

pub const DEFAULT_CONFIG: &str = include_str!("../config/podstat.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "defaults::server")]
    pub server: ServerConfig,
    #[serde(default = "defaults::paths")]
    pub paths: PathsConfig,
    #[serde(default = "defaults::reader")]
    pub reader: ReaderConfig,
    #[serde(default = "defaults::log")]
    pub log: LogConfig,
    #[serde(default = "defaults::collectors")]
    pub collectors: CollectorsConfig,
    #[serde(default = "defaults::discovery")]
    pub discovery: DiscoveryConfig,
    #[serde(default = "defaults::kubernetes")]
    pub kubernetes: KubernetesConfig,
    #[serde(default = "defaults::labels")]
    pub labels: LabelsConfig,
    #[serde(default = "defaults::filters")]
    pub filters: FiltersConfig,
    #[serde(default = "defaults::limits")]
    pub limits: LimitsConfig,
}

/// Where pod metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource {
    None,
    Kubelet,
    /// Only in builds with `--features apiserver`.
    ApiServer,
}

impl<'de> Deserialize<'de> for MetadataSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "none" => Ok(MetadataSource::None),
            "kubelet" => Ok(MetadataSource::Kubelet),
            "apiserver" if cfg!(feature = "apiserver") => Ok(MetadataSource::ApiServer),
            "apiserver" => Err(serde::de::Error::custom(
                "source \"apiserver\" is not available in this build (build with --features apiserver); use \"kubelet\"",
            )),
            other => Err(serde::de::Error::custom(format!(
                "unknown source {other:?}: expected \"none\", \"kubelet\" or \"apiserver\""
            ))),
        }
    }
}

/// A duration written with a unit: "500ms", "30s", "5m", "1h".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub std::time::Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(HumanDuration).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "bad duration {text:?}: use e.g. \"500ms\", \"30s\", \"5m\""
            ))
        })
    }
}

fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    #[serde(default = "defaults::source")]
    pub source: MetadataSource,
    #[serde(default = "defaults::node_name")]
    pub node_name: String,
    #[serde(default = "defaults::kubelet_url")]
    pub kubelet_url: String,
    #[serde(default = "defaults::apiserver_url")]
    pub apiserver_url: String,
    #[serde(default = "defaults::token_file")]
    pub token_file: PathBuf,
    #[serde(default = "defaults::ca_file")]
    pub ca_file: PathBuf,
    #[serde(default = "defaults::insecure_skip_verify")]
    pub insecure_skip_verify: bool,
    #[serde(default = "defaults::refresh_interval")]
    pub refresh_interval: HumanDuration,
    #[serde(default = "defaults::min_refresh_interval")]
    pub min_refresh_interval: HumanDuration,
    #[serde(default = "defaults::wait_for_first_list")]
    pub wait_for_first_list: HumanDuration,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout: HumanDuration,
    #[serde(default = "defaults::max_response_bytes")]
    pub max_response_bytes: usize,
    #[serde(default = "defaults::max_pods")]
    pub max_pods: usize,
    #[serde(default = "defaults::sandbox_container")]
    pub sandbox_container: String,
    #[serde(default = "defaults::sandbox_image")]
    pub sandbox_image: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsConfig {
    #[serde(default = "defaults::pod_labels")]
    pub pod_labels: KeyPatterns,
    #[serde(default = "defaults::pod_annotations")]
    pub pod_annotations: KeyPatterns,
}

/// Label or annotation keys: exact, or globs where `*` matches any run of characters.
#[derive(Clone)]
pub struct KeyPatterns {
    pub patterns: Vec<String>,
    set: globset::GlobSet,
}

impl KeyPatterns {
    pub fn new(patterns: Vec<String>) -> Result<KeyPatterns, String> {
        if patterns.iter().any(String::is_empty) {
            return Err("empty key pattern".into());
        }
        // Keys have no path structure: `*` may match `/` (`app.kubernetes.io/*`).
        let set = glob_set(&patterns, false, "key pattern")?;
        Ok(KeyPatterns { patterns, set })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn is_match(&self, key: &str) -> bool {
        self.set.is_match(key)
    }
}

impl fmt::Debug for KeyPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.patterns).finish()
    }
}

impl<'de> Deserialize<'de> for KeyPatterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        KeyPatterns::new(Vec::<String>::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersConfig {
    #[serde(default = "defaults::namespaces_include")]
    pub namespaces_include: Vec<String>,
    #[serde(default = "defaults::namespaces_exclude")]
    pub namespaces_exclude: Vec<String>,
    #[serde(default = "defaults::drop_metrics")]
    pub drop_metrics: Vec<String>,
    #[serde(default = "defaults::exclude_cgroups")]
    pub exclude_cgroups: PatternSet,
    #[serde(default = "defaults::pod_rows")]
    pub pod_rows: bool,
    #[serde(default = "defaults::qos_rows")]
    pub qos_rows: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "defaults::max_series")]
    pub max_series: usize,
    #[serde(default = "defaults::max_label_value_length")]
    pub max_label_value_length: usize,
    #[serde(default = "defaults::max_pod_labels")]
    pub max_pod_labels: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    #[serde(default = "defaults::gzip")]
    pub gzip: bool,
    #[serde(default = "defaults::gzip_writer")]
    pub gzip_writer: GzipWriter,
    #[serde(default = "defaults::min_collect_interval_ms")]
    pub min_collect_interval_ms: u64,
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Empty: none.
    #[serde(default = "defaults::web_config_file")]
    pub web_config_file: PathBuf,
    #[serde(default = "defaults::kubernetes_auth")]
    pub kubernetes_auth: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    #[serde(default = "defaults::cgroup_root")]
    pub cgroup_root: PathBuf,
    #[serde(default = "defaults::proc_root")]
    pub proc_root: PathBuf,
    #[serde(default = "defaults::sys_root")]
    pub sys_root: PathBuf,
    #[serde(default = "defaults::machine_id_file")]
    pub machine_id_file: PathBuf,
    #[serde(default = "defaults::os_release_file")]
    pub os_release_file: PathBuf,
    #[serde(default = "defaults::rootfs")]
    pub rootfs: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    #[serde(default = "defaults::keep_files_open")]
    pub keep_files_open: bool,
    #[serde(default = "defaults::max_open_files")]
    pub max_open_files: MaxOpenFiles,
    #[serde(default = "defaults::watch_settled")]
    pub watch_settled: bool,
    #[serde(default = "defaults::settled_refresh")]
    pub settled_refresh: HumanDuration,
}

/// `[reader] max_open_files`: "auto" or a number of descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxOpenFiles {
    /// As many as fit in podstat's memory limit (see `memlimit`), within RLIMIT_NOFILE.
    Auto,
    /// At most this many; 0: as many as RLIMIT_NOFILE allows.
    Count(usize),
}

impl<'de> Deserialize<'de> for MaxOpenFiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MaxOpenFiles;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\" or a number of descriptors")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MaxOpenFiles, E> {
                match v {
                    "auto" => Ok(MaxOpenFiles::Auto),
                    _ => Err(E::custom(format!(
                        "bad max_open_files {v:?}: use \"auto\" or a number"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<MaxOpenFiles, E> {
                usize::try_from(v)
                    .map(MaxOpenFiles::Count)
                    .map_err(|_| E::custom(format!("bad max_open_files {v}: must not be negative")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<MaxOpenFiles, E> {
                usize::try_from(v)
                    .map(MaxOpenFiles::Count)
                    .map_err(|_| E::custom("max_open_files is too large"))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Which gzip writer compresses /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum GzipWriter {
    /// crates/hinted-deflate: copies what the encoder says repeats.
    #[serde(rename = "hinted")]
    Hinted,
    /// flate2 with zlib-rs at level 1: a stock compressor, the fallback.
    #[serde(rename = "zlib-rs")]
    ZlibRs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "defaults::format")]
    pub format: LogFormat,
    #[serde(default = "defaults::level")]
    pub level: LogLevel,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorsConfig {
    #[serde(default = "defaults::cpu")]
    pub cpu: bool,
    #[serde(default = "defaults::memory")]
    pub memory: bool,
    #[serde(default = "defaults::diskio")]
    pub diskio: bool,
    #[serde(default = "defaults::network")]
    pub network: bool,
    #[serde(default = "defaults::process")]
    pub process: bool,
    #[serde(default = "defaults::oom")]
    pub oom: bool,
    #[serde(default = "defaults::pressure")]
    pub pressure: bool,
    #[serde(default = "defaults::machine")]
    pub machine: bool,
    #[serde(default = "defaults::process_files")]
    pub process_files: bool,
    #[serde(default = "defaults::filesystem")]
    pub filesystem: bool,
    #[serde(default = "defaults::tasks")]
    pub tasks: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    #[serde(default = "defaults::max_depth")]
    pub max_depth: usize,
    #[serde(default = "defaults::raw_include")]
    pub raw_include: RawInclude,
    #[serde(default = "defaults::raw_exclude")]
    pub raw_exclude: PatternSet,
    #[serde(default = "defaults::watch")]
    pub watch: bool,
}

/// `[discovery] raw_include`: which cgroups outside kubepods are reported.
#[derive(Debug, Clone)]
pub enum RawInclude {
    /// [`KUBELET_RAW_ROWS`] on a Kubernetes node (a metadata source is configured), else
    /// [`HOST_RAW_ROWS`]. [`parse`] resolves it; unresolved it acts as on a plain host.
    Auto,
    Patterns(PatternSet),
}

/// The raw rows the kubelet's `/metrics/cadvisor` shows besides `/` and kubepods: its own
/// service wherever the distribution puts it, and the container runtime's (the kubelet shows
/// that one only where it knows the runtime's cgroup: dockershim, or `--runtime-cgroups`).
pub const KUBELET_RAW_ROWS: &[&str] = &[
    "/kubelet.service",
    "/system.slice/kubelet.service",
    "/kubelet.slice/kubelet.service",
    "/system.slice/containerd.service",
    "/system.slice/docker.service",
    "/system.slice/crio.service",
];

/// A plain host's services and slices, and Docker and Podman containers run without
/// Kubernetes (Podman's cgroupfs and systemd managers).
pub const HOST_RAW_ROWS: &[&str] = &[
    "/*.slice",
    "/*.service",
    "/system.slice/*.service",
    "/docker/*",
    "/libpod_parent/libpod-*",
    "/machine.slice/libpod-*.scope",
];

impl RawInclude {
    fn patterns(rows: &[&str]) -> PatternSet {
        #[allow(clippy::expect_used)]
        PatternSet::new(rows.iter().map(|p| (*p).to_owned()).collect())
            .expect("the built-in row patterns compile (tested)")
    }

    /// "auto" made concrete for a node whose metadata comes from `source`.
    pub fn resolve(&mut self, source: MetadataSource) {
        if matches!(self, RawInclude::Auto) {
            let rows = if source == MetadataSource::None {
                HOST_RAW_ROWS
            } else {
                KUBELET_RAW_ROWS
            };
            *self = RawInclude::Patterns(Self::patterns(rows));
        }
    }

    pub fn is_match(&self, path: &str) -> bool {
        match self {
            RawInclude::Patterns(p) => p.is_match(path),
            RawInclude::Auto => {
                static HOST: std::sync::OnceLock<PatternSet> = std::sync::OnceLock::new();
                HOST.get_or_init(|| Self::patterns(HOST_RAW_ROWS))
                    .is_match(path)
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawInclude {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Word(String),
            Patterns(Vec<String>),
        }
        match Wire::deserialize(d)? {
            Wire::Word(w) if w == "auto" => Ok(RawInclude::Auto),
            Wire::Word(w) => Err(serde::de::Error::custom(format!(
                "raw_include {w:?}: use \"auto\" or a list of patterns"
            ))),
            Wire::Patterns(p) => PatternSet::new(p)
                .map(RawInclude::Patterns)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Compiles `patterns` into one set; `what` names them in errors. With `literal_separator`,
/// `*` stays within one `/`-separated component.
fn glob_set(
    patterns: &[String],
    literal_separator: bool,
    what: &str,
) -> Result<globset::GlobSet, String> {
    // globset compiles a list in time linear in its length (0.2 s and ~100 MB for 10,000
    // path globs, measured), but past that its automaton outgrows the regex size limit with
    // a bare "error building NFA"; a list that long is a generated one, better written as a
    // few broader globs.
    if patterns.len() > MAX_PATTERNS {
        return Err(format!(
            "{} {what}s in one list, at most {MAX_PATTERNS}: use fewer, broader globs (`**` matches any depth, `*` any name)",
            patterns.len()
        ));
    }
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(literal_separator)
            .build()
            .map_err(|e| format!("bad {what} {p:?}: {}", e.kind()))?;
        builder.add(glob);
    }
    builder.build().map_err(|e| {
        format!(
            "these {} {what}s do not compile together ({e}): use fewer, broader globs",
            patterns.len()
        )
    })
}

/// Most patterns in one list (see [`glob_set`]).
const MAX_PATTERNS: usize = 10_000;

/// A list of cgroup path globs, compiled once at load time.
#[derive(Clone)]
pub struct PatternSet {
    pub patterns: Vec<String>,
    set: globset::GlobSet,
}

impl PatternSet {
    pub fn new(patterns: Vec<String>) -> Result<PatternSet, String> {
        let set = glob_set(&patterns, true, "pattern")?;
        Ok(PatternSet { patterns, set })
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.set.is_match(path)
    }
}

impl fmt::Debug for PatternSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.patterns).finish()
    }
}

impl<'de> Deserialize<'de> for PatternSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let patterns = Vec::<String>::deserialize(d)?;
        PatternSet::new(patterns).map_err(serde::de::Error::custom)
    }
}

/// A config error with where it happened, printed as `file:line:column: reason`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        reason: String,
    },
}

/// Parses a config file. Missing keys take their value from the embedded default; unknown
/// keys and bad values fail with the position in `text`.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let mut config = toml::from_str::<Config>(text).map_err(|err| {
        let (line, column) = err
            .span()
            .map(|s| line_column(text, s.start))
            .unwrap_or((1, 1));
        ConfigError::Invalid {
            path: origin.to_owned(),
            line,
            column,
            reason: err.message().trim().to_owned(),
        }
    })?;
    config
        .discovery
        .raw_include
        .resolve(config.kubernetes.source);
    if let Err((key, reason)) = check_ranges(&config) {
        let (line, column) = key_position(text, key);
        return Err(ConfigError::Invalid {
            path: origin.to_owned(),
            line,
            column,
            reason,
        });
    }
    Ok(config)
}

/// Values the types accept but the agent cannot work with: the offending key and why.
fn check_ranges(c: &Config) -> Result<(), (&'static str, String)> {
    use std::time::Duration;
    let k = &c.kubernetes;
    // 0s fetched the pod list in a loop (440 times in 10 s); seconds are sane, a tenth of one
    // is the floor (tests use it to be quick).
    let floor = Duration::from_millis(100);
    if k.refresh_interval.0 < floor {
        return Err(("refresh_interval", "must be at least 100ms".into()));
    }
    if k.min_refresh_interval.0 < floor {
        return Err(("min_refresh_interval", "must be at least 100ms".into()));
    }
    for (key, d) in [
        ("connect_timeout", k.connect_timeout.0),
        ("request_timeout", k.request_timeout.0),
    ] {
        if d.is_zero() {
            return Err((key, "must be longer than 0s".into()));
        }
    }
    let s = &c.server;
    if s.max_connections == 0 {
        return Err(("max_connections", "must be at least 1".into()));
    }
    // Beyond this the connections' descriptors would crowd out the cgroup files they are set
    // apart from (RLIMIT_NOFILE is often 1024 soft); a node has a few scrapers.
    if s.max_connections > 10_000 {
        return Err(("max_connections", "must be at most 10000".into()));
    }
    for (key, d) in [
        ("header_read_timeout", s.header_read_timeout.0),
        ("idle_timeout", s.idle_timeout.0),
    ] {
        if d < floor {
            return Err((key, "must be at least 100ms".into()));
        }
    }
    // Scrapes within this interval share one collection: past a minute they would be served
    // numbers older than any scrape interval.
    if c.server.min_collect_interval_ms > 60_000 {
        return Err((
            "min_collect_interval_ms",
            "must be at most 60000 (one minute)".into(),
        ));
    }
    Ok(())
}

/// Where `key` is set in `text` (the first line that assigns it), else the start.
fn key_position(text: &str, key: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, line)| {
            let trimmed = line.trim_start();
            let rest = trimmed.strip_prefix(key)?;
            rest.trim_start()
                .starts_with('=')
                .then(|| (i + 1, line.len() - trimmed.len() + 1))
        })
        .unwrap_or((1, 1))
}

/// The embedded default, parsed once. It is a compile-time constant with every key present
/// (so parsing it never consults these defaults), and `tests::default_parses` proves it valid.
fn embedded() -> &'static Config {
    static EMBEDDED: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    EMBEDDED.get_or_init(|| {
        #[allow(clippy::expect_used)]
        toml::from_str(DEFAULT_CONFIG).expect("config/podstat.toml is valid (tested)")
    })
}

macro_rules! defaults {
    ($($name:ident: $ty:ty = $($field:ident).+;)*) => {
        mod defaults {
            use super::*;
            $(pub fn $name() -> $ty { embedded().$($field).+.clone() })*
        }
    };
}

defaults! {
    server: ServerConfig = server;
    paths: PathsConfig = paths;
    log: LogConfig = log;
    reader: ReaderConfig = reader;
    keep_files_open: bool = reader.keep_files_open;
    max_open_files: MaxOpenFiles = reader.max_open_files;
    watch_settled: bool = reader.watch_settled;
    settled_refresh: HumanDuration = reader.settled_refresh;
    collectors: CollectorsConfig = collectors;
    discovery: DiscoveryConfig = discovery;
    listen: SocketAddr = server.listen;
    gzip: bool = server.gzip;
    gzip_writer: GzipWriter = server.gzip_writer;
    min_collect_interval_ms: u64 = server.min_collect_interval_ms;
    max_connections: usize = server.max_connections;
    header_read_timeout: HumanDuration = server.header_read_timeout;
    idle_timeout: HumanDuration = server.idle_timeout;
    web_config_file: PathBuf = server.web_config_file;
    kubernetes_auth: bool = server.kubernetes_auth;
    cgroup_root: PathBuf = paths.cgroup_root;
    proc_root: PathBuf = paths.proc_root;
    sys_root: PathBuf = paths.sys_root;
    machine_id_file: PathBuf = paths.machine_id_file;
    os_release_file: PathBuf = paths.os_release_file;
    rootfs: PathBuf = paths.rootfs;
    format: LogFormat = log.format;
    level: LogLevel = log.level;
    cpu: bool = collectors.cpu;
    memory: bool = collectors.memory;
    diskio: bool = collectors.diskio;
    network: bool = collectors.network;
    process: bool = collectors.process;
    oom: bool = collectors.oom;
    pressure: bool = collectors.pressure;
    machine: bool = collectors.machine;
    process_files: bool = collectors.process_files;
    filesystem: bool = collectors.filesystem;
    tasks: bool = collectors.tasks;
    max_depth: usize = discovery.max_depth;
    raw_include: RawInclude = discovery.raw_include;
    raw_exclude: PatternSet = discovery.raw_exclude;
    watch: bool = discovery.watch;
    kubernetes: KubernetesConfig = kubernetes;
    labels: LabelsConfig = labels;
    filters: FiltersConfig = filters;
    limits: LimitsConfig = limits;
    source: MetadataSource = kubernetes.source;
    node_name: String = kubernetes.node_name;
    kubelet_url: String = kubernetes.kubelet_url;
    apiserver_url: String = kubernetes.apiserver_url;
    token_file: PathBuf = kubernetes.token_file;
    ca_file: PathBuf = kubernetes.ca_file;
    insecure_skip_verify: bool = kubernetes.insecure_skip_verify;
    refresh_interval: HumanDuration = kubernetes.refresh_interval;
    min_refresh_interval: HumanDuration = kubernetes.min_refresh_interval;
    wait_for_first_list: HumanDuration = kubernetes.wait_for_first_list;
    max_pods: usize = kubernetes.max_pods;
    connect_timeout: HumanDuration = kubernetes.connect_timeout;
    request_timeout: HumanDuration = kubernetes.request_timeout;
    max_response_bytes: usize = kubernetes.max_response_bytes;
    sandbox_container: String = kubernetes.sandbox_container;
    sandbox_image: String = kubernetes.sandbox_image;
    pod_labels: KeyPatterns = labels.pod_labels;
    pod_annotations: KeyPatterns = labels.pod_annotations;
    namespaces_include: Vec<String> = filters.namespaces_include;
    namespaces_exclude: Vec<String> = filters.namespaces_exclude;
    drop_metrics: Vec<String> = filters.drop_metrics;
    exclude_cgroups: PatternSet = filters.exclude_cgroups;
    pod_rows: bool = filters.pod_rows;
    qos_rows: bool = filters.qos_rows;
    max_series: usize = limits.max_series;
    max_label_value_length: usize = limits.max_label_value_length;
    max_pod_labels: usize = limits.max_pod_labels;
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

pub fn default_config() -> Result<Config, ConfigError> {
    parse("", "<built-in default>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses() {
        let c = default_config().expect("default config");
        assert_eq!(c.server.listen.port(), 9780);
        assert!(c.collectors.cpu);
        assert!(c
            .discovery
            .raw_include
            .is_match("/system.slice/cron.service"));
        assert!(!c
            .discovery
            .raw_include
            .is_match("/system.slice/a/b.service"));
        assert!(c
            .discovery
            .raw_exclude
            .is_match("/system.slice/run-x.mount"));
    }

    #[test]
    fn raw_rows_follow_the_kubelet_on_a_kubernetes_node_and_the_host_elsewhere() {
        let node = parse("[kubernetes]\nsource = \"kubelet\"\n", "t.toml").expect("parse");
        let rows = &node.discovery.raw_include;
        for kubelet_row in [
            "/system.slice/kubelet.service",
            "/kubelet.slice/kubelet.service",
            "/system.slice/containerd.service",
        ] {
            assert!(rows.is_match(kubelet_row), "{kubelet_row}");
        }
        for not_the_kubelets in ["/system.slice", "/user.slice", "/system.slice/cron.service"] {
            assert!(!rows.is_match(not_the_kubelets), "{not_the_kubelets}");
        }
        let explicit = parse(
            "[kubernetes]\nsource = \"kubelet\"\n[discovery]\nraw_include = [\"/x/*\"]\n",
            "t.toml",
        )
        .expect("parse");
        assert!(explicit.discovery.raw_include.is_match("/x/y"));
        assert!(!explicit
            .discovery
            .raw_include
            .is_match("/system.slice/kubelet.service"));
        let err = parse("[discovery]\nraw_include = \"all\"\n", "t.toml").expect_err("bad word");
        assert!(err.to_string().contains("auto"), "{err}");
    }

    #[test]
    fn override_keeps_other_defaults() {
        let c = parse("[server]\nlisten = \"127.0.0.1:1\"\n", "t.toml").expect("parse");
        assert_eq!(c.server.listen.port(), 1);
        assert!(c.server.gzip);
    }

    #[test]
    fn unknown_key_has_location() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n", "t.toml")
            .expect_err("must fail")
            .to_string();
        assert!(
            err.starts_with("t.toml:3:1: unknown field `lisen`"),
            "{err}"
        );
    }

    #[test]
    fn values_the_agent_cannot_work_with_are_rejected_where_they_are_set() {
        for (text, line, words) in [
            (
                "[kubernetes]\nrefresh_interval = \"0s\"\n",
                2,
                "at least 100ms",
            ),
            (
                "[kubernetes]\n  min_refresh_interval = \"50ms\"\n",
                2,
                "at least 100ms",
            ),
            (
                "[kubernetes]\nrequest_timeout = \"0s\"\n",
                2,
                "longer than 0s",
            ),
            (
                "[server]\nmin_collect_interval_ms = 18446744073709551615\n",
                2,
                "at most 60000",
            ),
        ] {
            match parse(text, "t.toml") {
                Err(ConfigError::Invalid {
                    line: l, reason, ..
                }) => {
                    assert_eq!(l, line, "{text}");
                    assert!(reason.contains(words), "{text}: {reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // The bounds themselves are fine.
        assert!(parse(
            "[server]\nmin_collect_interval_ms = 60000\n[kubernetes]\nrefresh_interval = \"100ms\"\nmin_refresh_interval = \"100ms\"\n",
            "t.toml"
        )
        .is_ok());
    }

    #[test]
    fn pattern_lists_have_a_bound_and_a_clear_error() {
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("/p{i}/*")).collect();
        let err = PatternSet::new(many).err().unwrap_or_default();
        assert!(err.contains("at most 10000"), "{err}");
        let t = std::time::Instant::now();
        let ok: Vec<String> = (0..2000).map(|i| format!("/pod-{i}/**/x{i}*")).collect();
        assert!(PatternSet::new(ok).is_ok());
        eprintln!("2000 patterns compiled in {:?}", t.elapsed());
    }

    #[test]
    fn durations_and_sources() {
        assert_eq!(
            parse_duration("250ms"),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("2m"),
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        let err = parse("[kubernetes]\nrefresh_interval = \"soon\"\n", "t.toml")
            .expect_err("bad duration")
            .to_string();
        assert!(err.starts_with("t.toml:2:20: bad duration"), "{err}");
        let apiserver = parse("[kubernetes]\nsource = \"apiserver\"\n", "t.toml");
        if cfg!(feature = "apiserver") {
            assert_eq!(
                apiserver.expect("built in").kubernetes.source,
                MetadataSource::ApiServer
            );
        } else {
            let err = apiserver.expect_err("not built").to_string();
            assert!(err.contains("not available in this build"), "{err}");
        }
        let c = parse("[kubernetes]\nsource = \"kubelet\"\n[labels]\npod_labels = [\"app.kubernetes.io/*\"]\n", "t.toml")
            .expect("kubelet");
        assert_eq!(c.kubernetes.source, MetadataSource::Kubelet);
        assert!(c.labels.pod_labels.is_match("app.kubernetes.io/name"));
        assert!(!c.labels.pod_labels.is_match("team"));
    }

    #[test]
    fn bad_values_have_location() {
        let err = parse("[server]\nlisten = \"nowhere\"\n", "t.toml")
            .expect_err("bad addr")
            .to_string();
        assert!(err.starts_with("t.toml:2:10:"), "{err}");
        let err = parse("[log]\nformat = \"xml\"\n", "t.toml")
            .expect_err("bad enum")
            .to_string();
        assert!(err.starts_with("t.toml:2:10:"), "{err}");
        let err = parse("[discovery]\nraw_include = [\"/a[\"]\n", "t.toml")
            .expect_err("bad glob")
            .to_string();
        assert!(err.starts_with("t.toml:2:15:"), "{err}");
    }

    #[test]
    fn max_open_files_is_auto_or_a_count() {
        assert_eq!(
            parse("", "t").expect("default").reader.max_open_files,
            MaxOpenFiles::Auto
        );
        let n = |text: &str| parse(text, "t.toml").map(|c| c.reader.max_open_files);
        assert_eq!(
            n("[reader]\nmax_open_files = 4096\n").expect("count"),
            MaxOpenFiles::Count(4096)
        );
        assert_eq!(
            n("[reader]\nmax_open_files = 0\n").expect("zero"),
            MaxOpenFiles::Count(0)
        );
        for bad in ["\"lots\"", "-1", "1.5"] {
            let err = n(&format!("[reader]\nmax_open_files = {bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(err.starts_with("t.toml:2:18:"), "{bad}: {err}");
        }
    }
}
