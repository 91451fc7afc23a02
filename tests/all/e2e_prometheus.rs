//! The HTTP endpoints, and a real Prometheus (Debian package `prometheus`) scraping podstat on
//! loopback while a real cgroup burns CPU.

use std::process::Command;
use std::time::Duration;

use crate::fake_kubelet::{Behavior, FakeKubelet, TestCert};
use crate::support::{
    free_port, gunzip, http_get, start_podstat, unique, wait_for, CgroupGuard, ChildGuard,
};

#[test]
fn endpoints_health_gzip_and_content_type() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--listen".to_string(), addr.clone()];
    args.extend(crate::support::fixture_node_args());
    let _podstat = start_podstat(&args.iter().map(String::as_str).collect::<Vec<_>>(), &addr);
    let ready = wait_for(Duration::from_secs(10), || {
        http_get(&addr, "/readyz", "")
            .ok()
            .filter(|(s, _, _)| s.contains(" 200 "))
    });
    let (_, headers, body) = ready.expect("/readyz never turned 200");
    assert!(headers
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let json: serde_json::Value = serde_json::from_slice(&body).expect("readyz json");
    assert_eq!(json["components"]["cgroup_reader"]["status"], "ok");
    assert_eq!(json["components"]["cgroup_reader"]["cgroup_mode"], "v2");
    for path in ["/healthz", "/-/healthy", "/-/ready"] {
        let (status, _, _) = http_get(&addr, path, "").expect(path);
        assert!(status.contains(" 200 "), "{path}: {status}");
    }
    assert_eq!(json["components"]["metadata"]["status"], "disabled");
    let (status, _, report) = http_get(&addr, "/cardinality?top=2", "").expect("cardinality");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        String::from_utf8_lossy(&report).starts_with("# podstat cardinality report: "),
        "{}",
        String::from_utf8_lossy(&report)
    );
    let (status, _, _) = http_get(&addr, "/nope", "").expect("404");
    assert!(status.contains(" 404 "));

    let (status, headers, plain) = http_get(&addr, "/metrics", "").expect("metrics");
    assert!(status.contains(" 200 "));
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{headers}"
    );
    assert!(!headers.to_ascii_lowercase().contains("content-encoding"));
    let (_, headers, gz) =
        http_get(&addr, "/metrics", "Accept-Encoding: gzip\r\n").expect("gzip metrics");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "{headers}"
    );
    let unzipped = String::from_utf8(gunzip(&gz)).expect("utf8");
    assert!(unzipped.contains("# TYPE container_memory_working_set_bytes gauge"));
    let plain = String::from_utf8(plain).expect("utf8");
    // Each family's HELP/TYPE appears once and its samples are contiguous.
    let mut seen = std::collections::HashSet::new();
    let mut current = String::new();
    for line in plain.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().expect("name").to_owned();
            assert!(seen.insert(name.clone()), "family {name} twice");
            current = name;
        } else if !line.starts_with('#') {
            assert!(
                line.starts_with(&current),
                "sample outside its family: {line}"
            );
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn query(prom: &str, q: &str) -> Option<Vec<serde_json::Value>> {
    let (_, _, body) = http_get(prom, &format!("/api/v1/query?query={}", urlencode(q)), "").ok()?;
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    json["data"]["result"].as_array().cloned()
}

/// The PodList a kubelet would serve for the test's pods: (uid, pod name, app label,
/// container name, container ID).
pub fn pod_list(pods: &[(&str, &str, &str, &str, &str)]) -> Vec<u8> {
    let items: Vec<serde_json::Value> = pods
        .iter()
        .map(|(uid, name, app, container, id)| {
            serde_json::json!({
                "metadata": {"name": name, "namespace": "e2e", "uid": uid, "labels": {"app": app, "pod-template-hash": "abc"}},
                "spec": {"containers": [{"name": container, "image": format!("example.com/{app}:1")}]},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": container, "containerID": format!("containerd://{id}"), "image": format!("example.com/{app}:1")}
                ]}
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"kind": "PodList", "apiVersion": "v1", "items": items}))
        .expect("json")
}

/// The value of the first series a query returns.
fn scalar(prom: &str, q: &str) -> Option<f64> {
    query(prom, q)?.first()?["value"][1].as_str()?.parse().ok()
}

/// Starts a podstat with `config` on a free loopback port; returns it and its address.
pub fn start_configured_podstat(config: &std::path::Path) -> (ChildGuard, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = start_podstat(
        &[
            "--config",
            config.to_str().expect("utf8"),
            "--listen",
            &addr,
            "--log-level",
            "warn",
        ],
        &addr,
    );
    (child, addr)
}

#[test]
fn real_prometheus_scrapes_podstat() {
    let Some(prometheus) = crate::support::prometheus_as_root() else {
        return;
    };
    // Two pods in kubelet-shaped cgroups: one container burning CPU, one sleeping.
    let top = unique("podstat-e2e-");
    // Container IDs of this run only: the kubelet's pods are joined to cgroups by container ID,
    // and the agents read the whole host, where tests running beside this one make cgroups
    // with IDs of their own (a fixed ID shared with real_cgroup.rs gave its container this
    // test's pod labels, and a second `burner` series, in 2 of 2 release-mode runs).
    let busy_id = format!("{:056x}{:08x}", std::process::id(), 0xb);
    let idle_id = format!("{:056x}{:08x}", std::process::id(), 0xe);
    let (busy_id, idle_id) = (busy_id.as_str(), idle_id.as_str());
    let busy_uid = "1a2b3c4d-0000-4000-8000-000000000001";
    let idle_uid = "1a2b3c4d-0000-4000-8000-000000000002";
    let busy_rel = format!("{top}/kubepods/besteffort/pod{busy_uid}/{busy_id}");
    let idle_rel = format!("{top}/kubepods/besteffort/pod{idle_uid}/{idle_id}");
    let hierarchies: Vec<std::path::PathBuf> = ["cpu", "cpuacct", "memory", "pids"]
        .iter()
        .map(|c| std::path::Path::new("/sys/fs/cgroup").join(c))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    let unified_only = hierarchies.is_empty();
    let hierarchies = if unified_only {
        vec![std::path::PathBuf::from("/sys/fs/cgroup")]
    } else {
        hierarchies
    };
    let mut cgroups = CgroupGuard { dirs: Vec::new() };
    for h in &hierarchies {
        for rel in [&busy_rel, &idle_rel] {
            let mut dir = h.clone();
            for part in rel.split('/') {
                dir.push(part);
                if !dir.exists() {
                    std::fs::create_dir(&dir)
                        .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                    cgroups.dirs.push(dir.clone());
                }
            }
        }
    }
    let busy = ChildGuard(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("busy"),
    );
    let idle = ChildGuard(Command::new("sleep").arg("300").spawn().expect("idle"));
    for h in &hierarchies {
        std::fs::write(
            h.join(&busy_rel).join("cgroup.procs"),
            busy.pid().to_string(),
        )
        .expect("move busy");
        std::fs::write(
            h.join(&idle_rel).join("cgroup.procs"),
            idle.pid().to_string(),
        )
        .expect("move idle");
    }

    // The node's kubelet, serving these two pods over HTTPS.
    let cert = TestCert::generate();
    let token = "e2e-token";
    let kubelet = FakeKubelet::start(
        &cert,
        Behavior::ok(
            pod_list(&[
                (busy_uid, "busy-pod", "e2e-busy", "burner", busy_id),
                (idle_uid, "idle-pod", "e2e-idle", "sleeper", idle_id),
            ]),
            token,
        ),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let ca = cert.write_ca(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).expect("token");
    let podstat_config = |max_series: usize| {
        let path = dir.path().join(format!("podstat-{max_series}.toml"));
        std::fs::write(
            &path,
            format!(
                "[kubernetes]\nsource = \"kubelet\"\nkubelet_url = {:?}\ntoken_file = {:?}\nca_file = {:?}\n\
                 [labels]\npod_labels = [\"app\"]\n[limits]\nmax_series = {max_series}\n",
                kubelet.url(),
                token_file,
                ca
            ),
        )
        .expect("podstat config");
        path
    };
    let (_podstat, podstat_addr) = start_configured_podstat(&podstat_config(0));
    // A second agent with a tiny series budget: its scrapes must still succeed.
    let (_tight, tight_addr) = start_configured_podstat(&podstat_config(40));

    let (_prom, prom_addr) = crate::support::start_prometheus(
        &prometheus,
        &format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: podstat\n    static_configs:\n      - targets: ['{podstat_addr}']\n  - job_name: podstat-tight\n    static_configs:\n      - targets: ['{tight_addr}']\n"),
        dir.path(),
    );

    for job in ["podstat", "podstat-tight"] {
        let up = wait_for(Duration::from_secs(60), || {
            query(&prom_addr, &format!("up{{job=\"{job}\"}}"))
                .filter(|r| r.first().is_some_and(|s| s["value"][1] == "1"))
        });
        assert!(up.is_some(), "Prometheus never saw the {job} target up");
    }

    let selector = format!(
        "container_cpu_usage_seconds_total{{job=\"podstat\",id=~\".*{busy_id}\",cpu=\"total\"}}"
    );
    // Wait for at least five samples in the window, so the rate is not taken over two.
    let enough = wait_for(Duration::from_secs(60), || {
        let n = scalar(&prom_addr, &format!("count_over_time({selector}[10s])"))?;
        (n >= 5.0).then_some(())
    });
    assert!(
        enough.is_some(),
        "Prometheus never stored 5 samples of the busy container"
    );
    let rate = wait_for(Duration::from_secs(5), || {
        scalar(&prom_addr, &format!("rate({selector}[10s])"))
    })
    .expect("no rate for the busy container");
    // One busy loop: about one CPU, less when other tests share this 2-core machine.
    assert!((0.2..=1.3).contains(&rate), "implausible CPU rate {rate}");

    // The kubernetes-mixin shape: one series per running pod of the node, by pod name.
    let per_pod = query(
        &prom_addr,
        "sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{job=\"podstat\",image!=\"\"}[1m]))",
    )
    .expect("per-pod query");
    let mut pods: Vec<(String, String)> = per_pod
        .iter()
        .map(|s| {
            (
                s["metric"]["namespace"].as_str().unwrap_or("").to_owned(),
                s["metric"]["pod"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    pods.sort();
    assert_eq!(
        pods,
        vec![
            ("e2e".to_owned(), "busy-pod".to_owned()),
            ("e2e".to_owned(), "idle-pod".to_owned())
        ],
        "{per_pod:?}"
    );
    // An allow-listed pod label is queryable.
    let labelled = query(
        &prom_addr,
        "container_memory_working_set_bytes{job=\"podstat\",label_app=\"e2e-busy\",container=\"burner\"}",
    )
    .expect("label query");
    assert_eq!(labelled.len(), 1, "{labelled:?}");

    // Every scrape succeeded and nothing was rejected.
    let n = scalar(&prom_addr, "scrape_samples_scraped{job=\"podstat\"}")
        .expect("scrape_samples_scraped");
    assert!(n > 50.0, "only {n} samples scraped");
    // The tight agent: still up, fewer container series, and its dropped counter moved.
    let dropped = wait_for(Duration::from_secs(10), || {
        scalar(
            &prom_addr,
            "podstat_series_dropped_total{job=\"podstat-tight\"}",
        )
        .filter(|v| *v > 0.0)
    });
    assert!(dropped.is_some(), "the budget never dropped anything");
    let v = scalar(&prom_addr, "podstat_series{job=\"podstat-tight\"}").expect("podstat_series");
    assert!(v <= 40.0, "budget exceeded: {v}");
    drop((busy, idle));
    drop(kubelet);
    drop(cgroups);
}
