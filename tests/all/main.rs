//! The one integration-test binary (one link step instead of one per file).
//!
//! Tests that need root, a network namespace or a Prometheus binary skip with a loud message
//! when those are missing, except under CI (`CI=true`), where a skip is a failure.

mod cli;
mod dashboards;
mod deploy;
mod e2e_prometheus;
#[cfg(feature = "apiserver")]
mod fake_apiserver;
mod fake_kubelet;
mod golden;
mod image;
mod kubelet_parity;
mod listener;
mod metadata;
mod parse_fixtures;
mod parse_props;
mod parse_reference;
mod real_cgroup;
mod real_scale;
mod runtime;
mod settled;
mod support;
mod vm_v2;
