//! The shipped Grafana dashboards (`dashboards/*.json`) against a real Prometheus scraping a
//! real podstat with the shipped scrape job (`daemonset/prometheus-scrape-config.yaml`, its
//! Kubernetes discovery replaced by the agent's address): every panel query and every variable
//! query, with the variables filled in, returns data, except the ones listed in `NO_DATA_HERE`
//! with the reason this machine cannot give them data. The same Prometheus evaluates the
//! kubernetes-mixin's container recording rules (kube-prometheus' rendering) on podstat's
//! series: each records the test's pod.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value as Yaml;

use crate::e2e_prometheus::{pod_list, query};
use crate::fake_kubelet::{Behavior, FakeKubelet, TestCert};
use crate::support::{
    hierarchies, is_root, make_cgroups, move_into, skip_unless, unique, wait_for, which,
    ChildGuard, NetnsGuard,
};

/// Panels whose queries return nothing on this machine, and why. Anything else must have data,
/// but for the block-IO panels where the kernel accounts no IO to the container (checked by
/// the test in the container's own blkio/io files).
const NO_DATA_HERE: &[(&str, &str)] = &[
    (
        "CPU pressure (waiting) by pod",
        "PSI files exist only in cgroup v2 directories; the test's cgroups are v1 (hybrid host)",
    ),
    (
        "Memory pressure (stalled) by pod",
        "PSI files exist only in cgroup v2 directories; the test's cgroups are v1 (hybrid host)",
    ),
];

/// The families of a container's block IO (the blkio/io controller).
const BLOCK_IO_FAMILIES: &[&str] = &[
    "container_fs_reads_bytes_total",
    "container_fs_writes_bytes_total",
    "container_fs_reads_total",
    "container_fs_writes_total",
];

fn dashboards_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

#[test]
fn the_dashboards_are_what_their_generator_writes() {
    if skip_unless(which("python3").is_some(), "python3") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let status = Command::new("python3")
        .arg(dashboards_dir().join("generate.py"))
        .arg(tmp.path())
        .status()
        .expect("generate.py");
    assert!(status.success());
    for name in ["podstat-node.json", "podstat-pod.json", "podstat-self.json"] {
        let written = std::fs::read_to_string(tmp.path().join(name)).expect("generated");
        let shipped = std::fs::read_to_string(dashboards_dir().join(name)).expect("shipped");
        assert!(
            written == shipped,
            "dashboards/{name} differs from generate.py's: run python3 dashboards/generate.py"
        );
    }
}

/// Every (dashboard, panel title, query) of the shipped dashboards, variable queries included
/// (as the series query inside `label_values`).
fn queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for name in ["podstat-node.json", "podstat-pod.json", "podstat-self.json"] {
        let text = std::fs::read_to_string(dashboards_dir().join(name)).expect("dashboard");
        let d: serde_json::Value = serde_json::from_str(&text).expect("json");
        for v in d["templating"]["list"].as_array().expect("templating") {
            if let Some(q) = v["query"]["query"].as_str() {
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|r| r.rsplit_once(','))
                    .map_or(q, |(series, _)| series);
                let var = v["name"].as_str().unwrap_or("?");
                out.push((name.into(), format!("variable {var}"), inner.to_owned()));
            }
        }
        for p in d["panels"].as_array().expect("panels") {
            let title = p["title"].as_str().expect("title").to_owned();
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr").to_owned();
                out.push((name.into(), title.clone(), expr));
            }
        }
    }
    out
}

#[test]
fn every_dashboard_query_returns_data_from_podstat() {
    let _heavy = crate::support::exclusive();
    let Some(prometheus) = which("prometheus") else {
        assert!(!skip_unless(
            false,
            "prometheus (Debian package prometheus)"
        ));
        return;
    };
    if skip_unless(is_root(), "root (creates cgroups, processes and a netns)")
        || skip_unless(which("nsenter").is_some(), "util-linux nsenter")
    {
        return;
    }
    // One pod whose container burns CPU under a CPU quota (throttled) and a memory limit and
    // does block IO, in a network namespace of its own.
    let hierarchies = hierarchies();
    let top = unique("podstat-dash-");
    let uid = "da5b0a2d-0000-4000-8000-000000000001";
    let id = format!("{:056x}{:08x}", std::process::id(), 0xda);
    let pod_rel = format!("{top}/kubepods/burstable/pod{uid}");
    let rel = format!("{pod_rel}/{id}");
    // Every level of the path, parents first.
    let rels: Vec<String> = rel
        .match_indices('/')
        .map(|(i, _)| rel[..i].to_owned())
        .chain([rel.clone()])
        .collect();
    let cgroups = make_cgroups(&hierarchies, &rels);
    for h in &hierarchies {
        let c = h.join(&rel);
        if c.join("cpu.cfs_quota_us").exists() {
            std::fs::write(c.join("cpu.cfs_quota_us"), "20000").expect("quota");
        } else if c.join("cpu.max").exists() {
            std::fs::write(c.join("cpu.max"), "20000 100000").expect("cpu.max");
        }
        if c.join("memory.limit_in_bytes").exists() {
            std::fs::write(c.join("memory.limit_in_bytes"), "536870912").expect("limit");
        } else if c.join("memory.max").exists() {
            std::fs::write(c.join("memory.max"), "536870912").expect("memory.max");
        }
    }
    let scratch = tempfile::tempdir().expect("scratch dir");
    let ns = NetnsGuard::new(&unique("psdash"));
    // A veth pair inside the pod's namespace: loopback is not reported, as in cAdvisor.
    crate::support::run(
        "ip",
        &[
            "-n", &ns.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ],
    );
    // Burns CPU, and reads and writes its disk with O_DIRECT (so the IO is the container's,
    // not the page cache's writeback).
    let io_file = scratch.path().join("io");
    let script = format!(
        "while :; do dd if=/dev/zero of={f} bs=64k count=16 oflag=direct 2>/dev/null; \
         dd if={f} of=/dev/null bs=64k iflag=direct 2>/dev/null; \
         i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; done",
        f = io_file.display()
    );
    let busy = ChildGuard(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .args(["--", "sh", "-c", &script])
            .spawn()
            .expect("busy"),
    );
    move_into(&hierarchies, &rel, busy.pid());

    let cert = TestCert::generate();
    let token = "dash-token";
    let kubelet = FakeKubelet::start(
        &cert,
        Behavior::ok(
            pod_list(&[(uid, "busy-pod", "burner", "burner", &id)]),
            token,
        ),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let ca = cert.write_ca(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).expect("token");
    let config = dir.path().join("podstat.toml");
    std::fs::write(
        &config,
        format!(
            "[kubernetes]\nsource = \"kubelet\"\nkubelet_url = {:?}\ntoken_file = {:?}\nca_file = {:?}\n",
            kubelet.url(),
            token_file,
            ca
        ),
    )
    .expect("config");
    let (_podstat, addr) = crate::e2e_prometheus::start_configured_podstat(&config);

    // The shipped job, its discovery replaced by this agent and the node name given.
    let mut job = crate::deploy::shipped_job_with_static_target(&addr);
    let map = job.as_mapping_mut().expect("job");
    map.insert("scrape_interval".into(), "1s".into());
    map.insert("scrape_timeout".into(), "1s".into());
    let relabels = map
        .get_mut("relabel_configs")
        .and_then(Yaml::as_sequence_mut)
        .expect("relabel_configs");
    // The pod-discovery keep rule has nothing to match on a static target; the node comes
    // from the pod's node name, here a fixed one.
    relabels.retain(|r| r["action"] != "keep");
    for r in relabels.iter_mut() {
        if r["target_label"] == "node" {
            let r = r.as_mapping_mut().expect("relabel");
            r.remove("source_labels");
            r.insert("replacement".into(), "dash-node".into());
        }
    }
    // The kubernetes-mixin's container recording rules (kube-prometheus), which join podstat's
    // series with kube-state-metrics' kube_pod_info: that one series comes from a static page.
    let (rules, recorded) = mixin_rules();
    let rule_file = dir.path().join("mixin.rules.yaml");
    std::fs::write(&rule_file, rules).expect("rules");
    let ksm = serve_text(kube_state_metrics_page(uid));
    let ksm_job: Yaml = serde_yaml::from_str(&format!(
        "{{job_name: kube-state-metrics, static_configs: [{{targets: ['{ksm}']}}]}}"
    ))
    .expect("ksm job");
    let mut prom_config = serde_yaml::Mapping::new();
    prom_config.insert(
        "global".into(),
        serde_yaml::from_str("{scrape_interval: 1s, evaluation_interval: 1s}").expect("global"),
    );
    prom_config.insert(
        "rule_files".into(),
        Yaml::Sequence(vec![rule_file.to_str().expect("utf-8").into()]),
    );
    prom_config.insert("scrape_configs".into(), Yaml::Sequence(vec![job, ksm_job]));
    let (_prometheus, prom) = crate::support::start_prometheus(
        &prometheus,
        &serde_yaml::to_string(&prom_config).expect("yaml"),
        dir.path(),
    );
    // Enough samples for rates over 10 s windows, and the pod's labels joined.
    let ready = wait_for(Duration::from_secs(60), || {
        let q = "count_over_time(container_cpu_usage_seconds_total{job=\"kubelet\", \
                 node=\"dash-node\", pod=\"busy-pod\", container=\"burner\"}[15s])";
        let n: f64 = query(&prom, q)?.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()?;
        (n >= 8.0).then_some(())
    });
    assert!(
        ready.is_some(),
        "Prometheus never stored the pod's CPU series"
    );

    // Whether this kernel accounts the container's block IO at all: some VMs' disks bypass
    // the blkio controller (its files stay "Total 0" under O_DIRECT reads and writes), and
    // then no IO series can exist for any container.
    let io_accounted = hierarchies.iter().any(|h| {
        ["blkio.throttle.io_service_bytes_recursive", "io.stat"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(h.join(&rel).join(f)).ok())
            .any(|text| text.lines().any(|l| l.contains(':')))
    });
    let vars = [
        ("$__rate_interval", "10s"),
        ("$cluster", ""),
        ("$namespace", "e2e"),
        ("$pod", "busy-pod"),
        ("$node", "dash-node"),
        ("$workload", "busy"),
        ("$type", "deployment"),
        ("$instance", addr.as_str()),
    ];
    let mut report = Vec::new();
    for (set, queries) in [
        ("podstat's", queries()),
        ("the mixin's", mixin_panel_queries()),
    ] {
        let (mut failures, mut exempt, mut exempt_with_data) = (Vec::new(), 0, Vec::new());
        for (dashboard, title, expr) in &queries {
            let q = vars.iter().fold(expr.clone(), |q, (k, v)| q.replace(k, v));
            let has_data = query(&prom, &q).is_some_and(|r| !r.is_empty());
            // Over the blkio/io controller's families (not the node's diskstats).
            let io_panel = BLOCK_IO_FAMILIES.iter().any(|f| expr.contains(f));
            let listed = NO_DATA_HERE.iter().any(|(t, _)| t == title);
            if listed || (io_panel && !io_accounted) {
                exempt += 1;
                if has_data {
                    exempt_with_data.push(format!("{dashboard} / {title}"));
                }
            } else if !has_data {
                failures.push(format!("{dashboard} / {title}: {q}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} of {set} queries returned no data:\n{}",
            failures.len(),
            queries.len(),
            failures.join("\n\n")
        );
        // The exceptions are real: one that has data here does not belong on the list.
        assert!(exempt_with_data.is_empty(), "{exempt_with_data:?}");
        report.push(format!(
            "{set}: {} queries, {exempt} without data for the reasons given",
            queries.len()
        ));
    }
    eprintln!(
        "{} (IO accounted by this kernel: {io_accounted})",
        report.join("; ")
    );

    // Every k8s.rules recording rule of the mixin records series for the pod's namespace.
    assert!(recorded.len() >= 14, "{recorded:?}");
    for name in &recorded {
        let q = format!("{name}{{namespace=\"e2e\"}}");
        let data = wait_for(Duration::from_secs(20), || {
            query(&prom, &q).filter(|r| !r.is_empty())
        });
        assert!(
            data.is_some(),
            "the mixin's rule {name} recorded nothing for the pod"
        );
    }
    drop(busy);
    drop(cgroups);
}

/// The kubernetes-mixin's `k8s.rules.*` recording rule groups (from the kube-prometheus
/// fixture: podstat's series joined with kube-state-metrics') as a Prometheus rule file, and
/// the names they record.
fn mixin_rules() -> (String, Vec<String>) {
    let path = crate::support::fixtures()
        .join("ecosystem/kube-prometheus_kubernetesControlPlane-prometheusRule.yaml");
    let text = std::fs::read_to_string(&path).expect("mixin rules fixture");
    let doc: Yaml = serde_yaml::from_str(&text).expect("yaml");
    let mut groups = Vec::new();
    let mut recorded: Vec<String> = Vec::new();
    for g in doc["spec"]["groups"].as_sequence().expect("groups") {
        if !g["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("k8s.rules"))
        {
            continue;
        }
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["record"].as_str().expect("a recording rule").to_owned();
            if !recorded.contains(&name) {
                recorded.push(name);
            }
        }
        groups.push(g.clone());
    }
    let mut file = serde_yaml::Mapping::new();
    file.insert("groups".into(), Yaml::Sequence(groups));
    (serde_yaml::to_string(&file).expect("rule file"), recorded)
}

/// What kube-state-metrics would say of the test's pod (a Deployment's, Running, with
/// requests and limits) and node: the series the mixin's rules and panels join with.
fn kube_state_metrics_page(uid: &str) -> String {
    let pod = r#"namespace="e2e",pod="busy-pod""#;
    let mut page = format!(
        r#"kube_pod_info{{{pod},uid="{uid}",node="dash-node",host_network="false",created_by_kind="ReplicaSet",created_by_name="busy-5d8f"}} 1
kube_pod_owner{{{pod},owner_kind="ReplicaSet",owner_name="busy-5d8f",owner_is_controller="true"}} 1
kube_replicaset_owner{{namespace="e2e",replicaset="busy-5d8f",owner_kind="Deployment",owner_name="busy",owner_is_controller="true"}} 1
kube_pod_status_phase{{{pod},phase="Running"}} 1
kube_pod_status_phase{{{pod},phase="Pending"}} 0
kube_node_info{{node="dash-node"}} 1
"#
    );
    for (kind, cpu, memory) in [
        ("requests", "0.1", "104857600"),
        ("limits", "0.2", "536870912"),
    ] {
        for (resource, unit, value) in [("cpu", "core", cpu), ("memory", "byte", memory)] {
            page += &format!(
                "kube_pod_container_resource_{kind}{{{pod},container=\"burner\",node=\"dash-node\",resource=\"{resource}\",unit=\"{unit}\"}} {value}\n"
            );
        }
    }
    for (resource, unit, value) in [
        ("cpu", "core", "2"),
        ("memory", "byte", "8589934592"),
        ("pods", "integer", "110"),
    ] {
        page += &format!(
            "kube_node_status_allocatable{{node=\"dash-node\",resource=\"{resource}\",unit=\"{unit}\"}} {value}\n"
        );
    }
    page
}

/// Every container query of the kubernetes-mixin's dashboards (kube-prometheus' rendering):
/// targets over cAdvisor's families or the rules recorded from them, Windows' left out.
fn mixin_panel_queries() -> Vec<(String, String, String)> {
    let gz = std::fs::read(
        crate::support::fixtures()
            .join("ecosystem/kube-prometheus_grafana-dashboardDefinitions.yaml.gz"),
    )
    .expect("dashboards fixture");
    let text = String::from_utf8(crate::support::gunzip(&gz)).expect("utf-8");
    let doc: Yaml = serde_yaml::from_str(&text).expect("yaml");
    fn walk(panels: &[serde_json::Value], name: &str, out: &mut Vec<(String, String, String)>) {
        for p in panels {
            if let Some(inner) = p["panels"].as_array() {
                walk(inner, name, out);
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or("");
                // Not the kubelet's own endpoint (kubelet_running_containers and the like).
                if (expr.contains("container_") || expr.contains("node_namespace_pod_container"))
                    && !expr.contains("windows_")
                    && !expr.contains(r#"metrics_path="/metrics""#)
                {
                    let title = p["title"].as_str().unwrap_or("").to_owned();
                    out.push((name.to_owned(), title, expr.to_owned()));
                }
            }
        }
    }
    let mut out = Vec::new();
    for cm in doc["items"].as_sequence().expect("items") {
        for (file, json) in cm["data"].as_mapping().into_iter().flatten() {
            let file = file.as_str().expect("file name");
            if file.contains("windows") {
                continue;
            }
            let d: serde_json::Value =
                serde_json::from_str(json.as_str().expect("json")).expect("dashboard json");
            let mut panels: Vec<serde_json::Value> =
                d["panels"].as_array().cloned().unwrap_or_default();
            for row in d["rows"].as_array().into_iter().flatten() {
                panels.extend(row["panels"].as_array().cloned().unwrap_or_default());
            }
            walk(&panels, file, &mut out);
        }
    }
    out
}

/// Serves `body` as a Prometheus text page to every request on a loopback port, for as long
/// as the test process lives; returns the address.
fn serve_text(body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}
