//! The HTTP endpoints, and a real Prometheus (Debian package `prometheus`) scraping podstat on
//! loopback while a real cgroup burns CPU.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    fixtures, free_port, http_get, is_root, skip_unless, start_podstat, unique, wait_for, which,
    CgroupGuard, ChildGuard,
};

#[test]
fn endpoints_health_gzip_and_content_type() {
    let addr = format!("127.0.0.1:{}", free_port());
    let root = fixtures().join("cgroup-v2/kubepods-systemd-containerd");
    let proc_root = fixtures().join("proc-node");
    let _podstat = start_podstat(
        &[
            "--listen",
            &addr,
            "--cgroup-root",
            root.to_str().expect("utf8"),
            "--proc-root",
            proc_root.to_str().expect("utf8"),
            "--log-level",
            "warn",
        ],
        &addr,
    );
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
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut unzipped)
        .expect("valid gzip");
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

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(prom: &str, q: &str) -> Option<Vec<serde_json::Value>> {
    let (_, _, body) = http_get(prom, &format!("/api/v1/query?query={}", urlencode(q)), "").ok()?;
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    json["data"]["result"].as_array().cloned()
}

#[test]
fn real_prometheus_scrapes_podstat() {
    let Some(prometheus) = which("prometheus") else {
        assert!(!skip_unless(
            false,
            "prometheus binary (Debian package prometheus)"
        ));
        return;
    };
    if skip_unless(is_root(), "root (creates a cgroup with a CPU burner)") {
        return;
    }
    // A busy container in a kubelet-shaped cgroup.
    let top = unique("podstat-e2e-");
    let busy_id = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
    let rel =
        format!("{top}/kubepods/besteffort/pod1a2b3c4d-0000-4000-8000-000000000001/{busy_id}");
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
        let mut dir = h.clone();
        for part in rel.split('/') {
            dir.push(part);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            cgroups.dirs.push(dir.clone());
        }
    }
    let busy = ChildGuard(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("busy"),
    );
    for h in &hierarchies {
        std::fs::write(h.join(&rel).join("cgroup.procs"), busy.pid().to_string())
            .expect("move busy");
    }

    let podstat_addr = format!("127.0.0.1:{}", free_port());
    let _podstat = start_podstat(
        &["--listen", &podstat_addr, "--log-level", "warn"],
        &podstat_addr,
    );

    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: podstat\n    static_configs:\n      - targets: ['{podstat_addr}']\n"),
    )
    .expect("write prometheus.yml");
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let _prom = ChildGuard(
        Command::new(prometheus)
            .args([
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                &format!("--web.listen-address={prom_addr}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    let up = wait_for(Duration::from_secs(60), || {
        query(&prom_addr, "up{job=\"podstat\"}")
            .filter(|r| r.first().is_some_and(|s| s["value"][1] == "1"))
    });
    assert!(up.is_some(), "Prometheus never saw the podstat target up");

    let selector =
        format!("container_cpu_usage_seconds_total{{id=~\".*{busy_id}\",cpu=\"total\"}}");
    // Wait for at least five samples in the window, so the rate is not taken over two.
    let enough = wait_for(Duration::from_secs(60), || {
        let r = query(&prom_addr, &format!("count_over_time({selector}[10s])"))?;
        let n: f64 = r.first()?["value"][1].as_str()?.parse().ok()?;
        (n >= 5.0).then_some(())
    });
    assert!(
        enough.is_some(),
        "Prometheus never stored 5 samples of the busy container"
    );
    let rate = wait_for(Duration::from_secs(5), || {
        let r = query(&prom_addr, &format!("rate({selector}[10s])"))?;
        let v: f64 = r.first()?["value"][1].as_str()?.parse().ok()?;
        Some(v)
    })
    .expect("no rate for the busy container");
    // One busy loop: about one CPU, less when other tests share this 2-core machine.
    assert!((0.2..=1.3).contains(&rate), "implausible CPU rate {rate}");

    // Every scrape succeeded and nothing was rejected.
    let samples = query(&prom_addr, "scrape_samples_scraped{job=\"podstat\"}")
        .expect("scrape_samples_scraped");
    let n: f64 = samples
        .first()
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
        .expect("samples");
    assert!(n > 50.0, "only {n} samples scraped");
    drop(busy);
    drop(cgroups);
}
