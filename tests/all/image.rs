//! podstat's image (Containerfile, built by daemonset/build-image.sh) run by a real container
//! runtime as the DaemonSet runs it: the host's cgroups, /proc and /sys mounted read-only
//! under /host, the host's PID namespace, a read-only root, uid 0 with only
//! CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE. It must find a container the
//! same runtime started and report its numbers as the kernel has them. The image is
//! `$PODSTAT_IMAGE` (default `podstat:latest`); .ci/run builds it first.

use std::process::Command;
use std::time::Duration;

use crate::support::{free_port, http_get, is_root, sample_value, skip_unless, wait_for, which};

/// A container this test started, removed (by its ID) on drop.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.0])
            .output();
    }
}

/// Runtime options every container of the test needs on a machine like CI's: the test runs
/// without CAP_SYS_RESOURCE, so limits must not be raised (podman's default is to raise
/// NOFILE and NPROC), and crun refuses a hybrid cgroup host whose v2 hierarchy has
/// controllers, where runc works.
pub fn runtime_args() -> Vec<String> {
    let mut args: Vec<String> = [
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ]
    .map(String::from)
    .to_vec();
    if which("runc").is_some() {
        args.extend(["--runtime".into(), "runc".into()]);
    }
    args
}

/// Runs podman with `args`, fails the test with its error output if it fails, and returns its
/// standard output.
pub fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("run podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run(args: &[&str]) -> Container {
    let runtime = runtime_args();
    let mut all = vec!["run", "--detach"];
    all.extend(runtime.iter().map(String::as_str));
    all.extend_from_slice(args);
    Container(podman(&all).trim().to_owned())
}

fn cpuacct_seconds(id: &str) -> Option<f64> {
    let ns: f64 = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/cpuacct/libpod_parent/libpod-{id}/cpuacct.usage"
    ))
    .or_else(|_| {
        let stat =
            std::fs::read_to_string(format!("/sys/fs/cgroup/libpod_parent/libpod-{id}/cpu.stat"))?;
        let usec = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .unwrap_or("0")
            .to_owned();
        Ok::<String, std::io::Error>(format!("{usec}000"))
    })
    .ok()?
    .trim()
    .parse()
    .ok()?;
    Some(ns / 1e9)
}

#[test]
fn the_image_reports_a_container_its_runtime_started() {
    let _heavy = crate::support::exclusive();
    let image = std::env::var("PODSTAT_IMAGE").unwrap_or_else(|_| "podstat:latest".into());
    let have_image = which("podman").is_some()
        && Command::new("podman")
            .args(["image", "exists", &image])
            .status()
            .is_ok_and(|s| s.success());
    if skip_unless(is_root(), "root (runs containers)")
        || skip_unless(
            have_image,
            "podman and the image (daemonset/build-image.sh; PODSTAT_IMAGE)",
        )
    {
        return;
    }
    // The workload: podstat's own image serving on its private loopback, under a memory limit.
    let workload = run(&[
        "--network",
        "none",
        "--memory",
        "64m",
        &image,
        "--listen",
        "127.0.0.1:9999",
    ]);
    // podstat as daemonset/daemonset.yaml runs it.
    let addr = format!("127.0.0.1:{}", free_port());
    let podstat = run(&[
        "--network",
        "host",
        // As the DaemonSet's hostPID: cgroup.procs shows only the reader's namespace's PIDs.
        "--pid",
        "host",
        "--read-only",
        "--user",
        "0",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "SYS_PTRACE",
        "--cap-add",
        "DAC_READ_SEARCH",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        "/sys/fs/cgroup:/host/sys/fs/cgroup:ro",
        "--volume",
        "/proc:/host/proc:ro",
        "--volume",
        "/sys:/host/sys:ro",
        &image,
        "--cgroup-root",
        "/host/sys/fs/cgroup",
        "--proc-root",
        "/host/proc",
        "--sys-root",
        "/host/sys",
        "--listen",
        &addr,
    ]);
    let logs = || {
        Command::new("podman")
            .args(["logs", &podstat.0])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    };
    if wait_for(Duration::from_secs(20), || {
        http_get(&addr, "/readyz", "").ok()
    })
    .is_none()
    {
        panic!("podstat's container does not answer; its log:\n{}", logs());
    }
    let id_label = format!("id=\"/libpod_parent/libpod-{}\"", workload.0);
    let before = cpuacct_seconds(&workload.0).expect("the workload's cpuacct.usage");
    let body = wait_for(Duration::from_secs(10), || {
        let (_, _, body) = http_get(&addr, "/metrics", "").ok()?;
        let body = String::from_utf8_lossy(&body).into_owned();
        body.contains(&id_label).then_some(body)
    })
    .unwrap_or_else(|| panic!("no series of {id_label}; podstat's log:\n{}", logs()));
    let after = cpuacct_seconds(&workload.0).expect("cpuacct.usage");
    let value = |family: &str| sample_value(&body, family, &[&id_label]);
    assert_eq!(
        value("container_spec_memory_limit_bytes"),
        Some(64.0 * 1024.0 * 1024.0)
    );
    assert_eq!(value("container_processes"), Some(1.0));
    let cpu = value("container_cpu_usage_seconds_total").expect("cpu");
    assert!(
        before <= cpu && cpu <= after,
        "{before} <= {cpu} <= {after}"
    );
    assert!(value("container_memory_rss").is_some_and(|v| v > 0.0));
    // Its descriptors, through the host's /proc: the server's listener among them.
    let sockets = value("container_sockets");
    assert!(sockets.is_some_and(|v| v >= 1.0), "{sockets:?}");
    crate::support::assert_no_duplicate_series(&body);
    drop(podstat);
    drop(workload);
}
