//! Command line. Flags override the matching keys of the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, LogLevel};

#[derive(Debug, Parser)]
#[command(
    name = "podstat",
    version,
    about = "Per-node container metrics from cgroups and procfs, served in cAdvisor-compatible Prometheus format."
)]
pub struct Cli {
    /// TOML config file (see `--print-default-config`).
    #[arg(long, value_name = "FILE", env = "PODSTAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate a config file and exit (0 valid, 2 invalid).
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// Print the documented default config and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Listen address, e.g. 0.0.0.0:9780 (server.listen).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Where the cgroup hierarchies are mounted (paths.cgroup_root).
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// procfs of the host PID namespace (paths.proc_root).
    #[arg(long, value_name = "DIR")]
    pub proc_root: Option<PathBuf>,
    /// sysfs, for block device names (paths.sys_root).
    #[arg(long, value_name = "DIR")]
    pub sys_root: Option<PathBuf>,
    /// Web config file, Prometheus exporter-toolkit format: TLS and basic auth for the
    /// listener (server.web_config_file).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Log format (log.format).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level (log.level).
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collect once and print the exposition to stdout.
    Once,
    /// Series per metric family and the labels with the most values: of a one-shot
    /// collection with this config, or of a running agent's /metrics (--url).
    Cardinality {
        /// A running podstat's metrics URL, e.g. http://127.0.0.1:9780/metrics.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Rows per section (0: all).
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Print the metric table (Markdown) that docs/metrics.md is generated from.
    #[command(hide = true)]
    MetricsTable,
}

impl Cli {
    pub fn apply(&self, config: &mut Config) {
        if let Some(v) = self.listen {
            config.server.listen = v;
        }
        if let Some(v) = &self.cgroup_root {
            config.paths.cgroup_root = v.clone();
        }
        if let Some(v) = &self.proc_root {
            config.paths.proc_root = v.clone();
        }
        if let Some(v) = &self.sys_root {
            config.paths.sys_root = v.clone();
        }
        if let Some(v) = &self.web_config_file {
            config.server.web_config_file = v.clone();
        }
        if let Some(v) = self.log_format {
            config.log.format = v;
        }
        if let Some(v) = self.log_level {
            config.log.level = v;
        }
    }
}
