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
    #[serde(default = "defaults::log")]
    pub log: LogConfig,
    #[serde(default = "defaults::collectors")]
    pub collectors: CollectorsConfig,
    #[serde(default = "defaults::discovery")]
    pub discovery: DiscoveryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    #[serde(default = "defaults::gzip")]
    pub gzip: bool,
    #[serde(default = "defaults::min_collect_interval_ms")]
    pub min_collect_interval_ms: u64,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    #[serde(default = "defaults::max_depth")]
    pub max_depth: usize,
    #[serde(default = "defaults::raw_include")]
    pub raw_include: PatternSet,
    #[serde(default = "defaults::raw_exclude")]
    pub raw_exclude: PatternSet,
}

/// A list of cgroup path globs, compiled once at load time.
#[derive(Clone)]
pub struct PatternSet {
    pub patterns: Vec<String>,
    set: globset::GlobSet,
}

impl PatternSet {
    pub fn new(patterns: Vec<String>) -> Result<PatternSet, String> {
        let mut builder = globset::GlobSetBuilder::new();
        for p in &patterns {
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("bad pattern {p:?}: {}", e.kind()))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
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
    toml::from_str::<Config>(text).map_err(|err| {
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
    })
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
    collectors: CollectorsConfig = collectors;
    discovery: DiscoveryConfig = discovery;
    listen: SocketAddr = server.listen;
    gzip: bool = server.gzip;
    min_collect_interval_ms: u64 = server.min_collect_interval_ms;
    cgroup_root: PathBuf = paths.cgroup_root;
    proc_root: PathBuf = paths.proc_root;
    sys_root: PathBuf = paths.sys_root;
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
    max_depth: usize = discovery.max_depth;
    raw_include: PatternSet = discovery.raw_include;
    raw_exclude: PatternSet = discovery.raw_exclude;
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
}
