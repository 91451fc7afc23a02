//! podstat: a per-node agent that reads container stats from cgroupfs and procfs and serves
//! them in cAdvisor-compatible Prometheus format.
//!
//! Data flow (one module per step):
//! `discovery` (walk the cgroup tree, classify kubelet layouts) → `reader` + `parse` (read and
//! parse files, pure parsers) → `collect` (one collector per metric group, an explicit
//! registry) → `snapshot` (the result of one collection) → `exposition::encode` + `exposition::names`
//! (text format from the single metric table) → `http::server` (HTTP), with `agent` sharing
//! one collection between concurrent scrapes.

pub mod agent;
pub mod cli;
pub mod collect;
pub mod config;
pub mod discovery;
pub mod exposition;
pub mod http;
pub mod labels;
pub mod logging;
pub mod malloc_tuning;
pub mod memlimit;
pub mod meta;
pub mod parse;
pub mod policy;
pub mod reader;
pub mod snapshot;
