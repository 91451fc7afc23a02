//! Pod metadata from a real HTTPS kubelet (tests/all/fake_kubelet.rs): the join against the
//! kubelet's own labels for the same capture, the label shape of real `/metrics/cadvisor`
//! dumps, every failure mode of the fetch, and the refresh loop (recovery, token rotation,
//! early fetch for an unknown container).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use podstat::agent::Agent;
use podstat::config::Config;
use podstat::meta::kubelet::{refresh_once, FetchError, KubeletClient};

use crate::fake_kubelet::{Behavior, FakeKubelet, TestCert};
use crate::golden::{compare_with_golden, copy_pinned, normalise};
use crate::support::{fixtures, http_get, rss_kib, sample_value, wait_for};

const TOKEN: &str = "t0k3n-for-tests";
const V2_TREE: &str = "cgroup-v2/kubepods-systemd-containerd";

fn pods_json() -> Vec<u8> {
    std::fs::read(fixtures().join("kubelet/capture-6.18_pods.json")).expect("pods fixture")
}

/// A copy of the v2 fixture node plus a token file and the kubelet's CA.
struct Node {
    _tmp: tempfile::TempDir,
    cgroup: PathBuf,
    token: PathBuf,
    ca: PathBuf,
}

fn node(cert: &TestCert) -> Node {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cgroup = tmp.path().join("cgroup");
    copy_pinned(&fixtures().join(V2_TREE), &cgroup);
    let token = tmp.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let ca = cert.write_ca(tmp.path());
    Node {
        _tmp: tmp,
        cgroup,
        token,
        ca,
    }
}

fn config(node: &Node, url: &str, extra: &str) -> Config {
    podstat::config::parse(&config_text(node, url, extra), "test").expect("config")
}

/// The config of [`config`], as the text of a config file.
fn config_text(node: &Node, url: &str, extra: &str) -> String {
    format!(
        "[paths]\ncgroup_root = {:?}\nproc_root = {:?}\nsys_root = {:?}\n\
         machine_id_file = {:?}\nos_release_file = {:?}\n\
         [server]\nmin_collect_interval_ms = 0\n\
         [reader]\nmax_open_files = 64\n\
         [kubernetes]\nsource = \"kubelet\"\nkubelet_url = {url:?}\ntoken_file = {:?}\nca_file = {:?}\n\
         connect_timeout = \"1s\"\nrequest_timeout = \"2s\"\n{extra}",
        node.cgroup,
        fixtures().join("proc-node"),
        fixtures().join("sys-node"),
        fixtures().join("etc-node/machine-id"),
        fixtures().join("etc-node/os-release"),
        node.token,
        node.ca,
    )
    // Later keys of the same table would be duplicates; tests put overrides in `extra` only
    // for keys not set above, or in tables of their own.
}

/// The cgroup directory of a pod the kubelet lists (postgres-ksx-0), and one of its
/// containers', to copy as a new container of that pod.
fn known_pod_and_container(node: &Node) -> (PathBuf, PathBuf) {
    let pod_dir = node
        .cgroup
        .join("kubepods.slice/kubepods-pod5cec4eb5_edd9_4831_9ca3_5cfb04fc6d82.slice");
    let container = std::fs::read_dir(&pod_dir)
        .expect("pod dir")
        .filter_map(Result::ok)
        .find(|e| e.path().is_dir())
        .expect("a container")
        .path();
    (pod_dir, container)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One fetch into the agent's store, as the loop does it.
fn fetch(agent: &Agent, config: &Config) -> Result<usize, FetchError> {
    runtime().block_on(async {
        let mut client = KubeletClient::new(&config.kubernetes)?;
        refresh_once(
            &mut client,
            agent.meta(),
            &config.labels,
            config.limits.max_pod_labels,
        )
        .await
    })
}

fn scrape(agent: &Agent) -> String {
    String::from_utf8(agent.scrape().to_vec()).expect("utf8")
}

/// The label sets of `family`'s series in `body` (label values as written: these fixtures and
/// podstat's output have no escaped quotes in them).
fn series_labels<'a>(
    body: &'a str,
    family: &'a str,
) -> impl Iterator<Item = BTreeMap<String, String>> + 'a {
    let prefix = format!("{family}{{");
    body.lines().filter_map(move |line| {
        let rest = line.strip_prefix(&prefix)?;
        let text = &rest[..rest.rfind('}')?];
        Some(
            text.split("\",")
                .filter_map(|pair| pair.split_once("=\""))
                .map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned()))
                .collect(),
        )
    })
}

/// Label sets of every `container_start_time_seconds` series (one per reported cgroup),
/// keyed by `id`.
fn rows(body: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    series_labels(body, "container_start_time_seconds")
        .map(|l| (l["id"].clone(), l))
        .collect()
}

/// A test kubelet serving the capture's pods, a copy of its node, and an agent configured
/// against them (with `extra` appended to `[kubernetes]`) that has fetched once.
fn joined_node(extra: &str) -> (FakeKubelet, Node, Config, Agent) {
    let cert = TestCert::generate();
    let kubelet = FakeKubelet::start(&cert, Behavior::ok(pods_json(), TOKEN));
    let node = node(&cert);
    let config = config(&node, &kubelet.url(), extra);
    let agent = Agent::new(&config).expect("agent");
    fetch(&agent, &config).expect("fetch");
    (kubelet, node, config, agent)
}

#[test]
fn labels_match_the_kubelets_own_view_of_the_same_node() {
    // The capture's kubelet showed the sandbox as container="POD" with the pause image.
    let (kubelet, _node, _config, agent) =
        joined_node("sandbox_container = \"POD\"\nsandbox_image = \"registry.k8s.io/pause:3.9\"\n");
    assert_eq!(agent.meta().health().pods, 3);
    assert_eq!(kubelet.authorized.load(Ordering::SeqCst), 1);
    let body = scrape(&agent);
    let rows = rows(&body);
    let oracle = std::fs::read_to_string(fixtures().join("kubelet/capture-6.18_labels.tsv"))
        .expect("labels.tsv");
    let mut checked = 0;
    for line in oracle.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        let id = format!("/{}", f[0]);
        let row = rows
            .get(&id)
            .unwrap_or_else(|| panic!("no series for {id}"));
        for (i, key) in ["container", "image", "name", "namespace", "pod"]
            .iter()
            .enumerate()
        {
            assert_eq!(row[*key], f[i + 1], "{key} of {id}");
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} rows in the oracle");
    // Cgroups outside pods keep empty Kubernetes labels.
    assert_eq!(rows["/"]["pod"], "");
    assert_eq!(rows["/kubepods.slice"]["namespace"], "");

    // The same output byte for byte (promtool checks this file in
    // golden::golden_files_pass_promtool).
    compare_with_golden(&normalise(&body), "v2_kubelet_labels.prom");
}

/// The kubelet's cAdvisor reports a pod's network on its sandbox container's row. podstat does
/// too, also where the sandbox's process is not called `pause` (another pause image, a VM
/// runtime): the sandbox is then the container cgroup of the pod that the pod list leaves out.
#[test]
fn network_goes_on_the_sandbox_row_even_when_its_process_is_not_pause() {
    let cert = TestCert::generate();
    let kubelet = FakeKubelet::start(&cert, Behavior::ok(pods_json(), TOKEN));
    let node = node(&cert);
    let mut config = config(&node, &kubelet.url(), "sandbox_container = \"POD\"\n");
    let proc_copy = tempfile::tempdir().expect("tempdir");
    copy_pinned(&fixtures().join("proc-node"), proc_copy.path());
    let mut renamed = 0;
    for entry in std::fs::read_dir(proc_copy.path()).expect("proc copy") {
        let comm = entry.expect("entry").path().join("comm");
        if std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "pause") {
            std::fs::write(&comm, "sandbox-init\n").expect("rename");
            renamed += 1;
        }
    }
    assert_eq!(renamed, 3, "the fixture's three sandboxes");
    config.paths.proc_root = proc_copy.path().to_path_buf();
    let agent = Agent::new(&config).expect("agent");
    fetch(&agent, &config).expect("fetch");
    let body = scrape(&agent);
    let mut pods_with_network = BTreeSet::new();
    for l in series_labels(&body, "container_network_receive_bytes_total") {
        if l["id"] == "/" {
            continue;
        }
        assert_eq!(l["container"], "POD", "network on a non-sandbox row: {l:?}");
        assert!(l["id"].ends_with(".scope"), "{l:?}");
        assert_eq!(
            l["name"],
            l["id"]
                .rsplit('-')
                .next()
                .unwrap_or("")
                .trim_end_matches(".scope")
        );
        pods_with_network.insert(l["pod"].clone());
    }
    assert_eq!(pods_with_network.len(), 3, "{pods_with_network:?}");
}

/// Label names per family and the kinds of rows (which of container/image/pod are set).
fn shape(body: &str, family: &str) -> (BTreeSet<String>, BTreeSet<(bool, bool, bool)>) {
    let mut names = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for l in series_labels(body, family) {
        names.extend(l.keys().cloned());
        let set = |k: &str| l.get(k).is_some_and(|v| !v.is_empty());
        kinds.insert((set("container"), set("image"), set("pod")));
    }
    (names, kinds)
}

#[test]
fn label_names_and_row_kinds_match_a_real_cadvisor_endpoint() {
    let real = real_cadvisor_dump();
    // containerd's convention (the dump is containerd): sandbox container "" with its image.
    let (_kubelet, _node, _config, agent) =
        joined_node("sandbox_image = \"registry.k8s.io/pause:3.10\"\n");
    let ours = scrape(&agent);
    for family in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_spec_memory_limit_bytes",
    ] {
        let (real_names, real_kinds) = shape(&real, family);
        let (our_names, our_kinds) = shape(&ours, family);
        assert!(!real_names.is_empty(), "{family} not in the real dump");
        assert_eq!(our_names, real_names, "label names of {family}");
        assert_eq!(our_kinds, real_kinds, "row kinds of {family}");
    }
}

#[test]
fn fetch_failures_are_counted_and_the_last_good_view_is_served() {
    let (kubelet, _node, config, agent) = joined_node("max_response_bytes = 1000000\n");
    let good = rows(&scrape(&agent));
    let pod_id = "/kubepods.slice/kubepods-pod5cec4eb5_edd9_4831_9ca3_5cfb04fc6d82.slice";
    assert_eq!(good[pod_id]["pod"], "postgres-ksx-0");

    let truncated = pods_json()[..2000].to_vec();
    let huge = {
        let mut v = pods_json();
        v.resize(1_500_000, b' ');
        v
    };
    type Change = Box<dyn Fn(&mut Behavior)>;
    let cases: Vec<(&str, Change)> = vec![
        ("http", Box::new(|b| b.status = 500)),
        ("http", Box::new(|b| b.token = "someone-else".into())),
        ("decode", Box::new(move |b| b.body = truncated.clone())),
        (
            "decode",
            Box::new(|b| b.body = b"<html>oops</html>".to_vec()),
        ),
        ("too_large", Box::new(move |b| b.body = huge.clone())),
        ("timeout", Box::new(|b| b.delay = Duration::from_secs(4))),
    ];
    for (i, (kind, change)) in cases.into_iter().enumerate() {
        kubelet.set(|b| {
            *b = Behavior::ok(pods_json(), TOKEN);
            change(b);
        });
        let err = fetch(&agent, &config).expect_err(kind);
        assert_eq!(err.kind(), kind, "case {i}: {err}");
        let body = scrape(&agent);
        assert_eq!(
            rows(&body),
            good,
            "case {i}: labels changed during an outage"
        );
        assert_eq!(
            sample_value(&body, "podstat_metadata_up", &[]),
            Some(0.0),
            "case {i}"
        );
        assert!(
            sample_value(
                &body,
                "podstat_metadata_errors_total",
                &[&format!("kind=\"{kind}\"")]
            )
            .is_some_and(|n| n >= 1.0),
            "case {i}: error not counted"
        );
        assert_eq!(
            sample_value(&body, "container_scrape_error", &[]),
            Some(0.0)
        );
    }
    let h = agent.meta().health();
    assert_eq!(h.errors.values().sum::<u64>(), 6);
    assert!(h.last_error.is_some());
    // Recovers.
    kubelet.set(|b| *b = Behavior::ok(pods_json(), TOKEN));
    fetch(&agent, &config).expect("recovered");
    let body = scrape(&agent);
    assert_eq!(sample_value(&body, "podstat_metadata_up", &[]), Some(1.0));
    assert_eq!(sample_value(&body, "podstat_metadata_pods", &[]), Some(3.0));
}

#[test]
fn kubelet_down_at_start_then_up() {
    let cert = TestCert::generate();
    let node = node(&cert);
    // A port nobody listens on (bound once, released).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let config = config(&node, &format!("https://{addr}/pods"), "");
    let agent = Agent::new(&config).expect("agent");
    let err = fetch(&agent, &config).expect_err("nobody listening");
    assert_eq!(err.kind(), "connect", "{err}");
    let body = scrape(&agent);
    assert!(
        body.contains("container_cpu_usage_seconds_total"),
        "scrape works without metadata"
    );
    assert!(!body.contains("namespace=\"frontend\""));
    let _kubelet = FakeKubelet::start_on(&cert, Behavior::ok(pods_json(), TOKEN), addr);
    fetch(&agent, &config).expect("kubelet up");
    assert!(scrape(&agent).contains("namespace=\"frontend\""));
}

#[test]
fn certificate_checks_and_the_insecure_opt_in() {
    let cert = TestCert::generate();
    let other = TestCert::generate();
    let kubelet = FakeKubelet::start(&cert, Behavior::ok(pods_json(), TOKEN));
    let node = node(&other); // trusts a different CA
    let config_strict = config(&node, &kubelet.url(), "");
    let agent = Agent::new(&config_strict).expect("agent");
    let err = fetch(&agent, &config_strict).expect_err("untrusted certificate");
    // The handshake's failure, not "cannot connect" (which was counted before).
    assert_eq!(err.kind(), "tls", "{err}");
    assert!(err.to_string().contains("check ca_file"), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    assert_eq!(kubelet.requests.load(Ordering::SeqCst), 0);
    let config_insecure = config(&node, &kubelet.url(), "insecure_skip_verify = true\n");
    fetch(&agent, &config_insecure).expect("insecure accepted");
}

/// Runs the refresh loop on its own thread until the returned guard is dropped.
struct Loop {
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Runs a metadata source loop on its own runtime until the returned guard is dropped.
fn run_in_background(source: impl std::future::Future<Output = ()> + Send + 'static) -> Loop {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.spawn(source);
    Loop { rt: Some(rt) }
}

fn start_loop(agent: &Agent, config: &Config) -> Loop {
    run_in_background(podstat::meta::kubelet::run(
        Arc::clone(agent.meta()),
        config.kubernetes.clone(),
        config.labels.clone(),
        config.limits.max_pod_labels,
    ))
}

#[test]
fn rotated_token_is_read_again() {
    let cert = TestCert::generate();
    let kubelet = FakeKubelet::start(&cert, Behavior::ok(pods_json(), TOKEN));
    let node = node(&cert);
    let config = config(&node, &kubelet.url(), "refresh_interval = \"200ms\"\n");
    let agent = Agent::new(&config).expect("agent");
    let _loop = start_loop(&agent, &config);
    wait_for(Duration::from_secs(5), || {
        (kubelet.authorized.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .expect("polls with the first token");
    // Rotate: the kubelet now wants the new token, and the file has it.
    kubelet.set(|b| b.token = "rotated-token".into());
    std::fs::write(&node.token, "rotated-token\n").expect("rotate");
    let before = kubelet.authorized.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(8), || {
        (kubelet.authorized.load(Ordering::SeqCst) > before).then_some(())
    })
    .expect("the rotated token was never used");
    assert!(agent
        .meta()
        .health()
        .errors
        .get("http")
        .is_some_and(|n| *n >= 1));
}

#[test]
fn a_container_listed_late_is_refetched_with_backoff_until_labelled() {
    let cert = TestCert::generate();
    let kubelet = FakeKubelet::start(&cert, Behavior::ok(pods_json(), TOKEN));
    let node = node(&cert);
    // A new container cgroup in a known pod, not yet in the pod list.
    let new_id = "ab".repeat(32);
    let (pod_dir, sibling) = known_pod_and_container(&node);
    copy_pinned(
        &sibling,
        &pod_dir.join(format!("cri-containerd-{new_id}.scope")),
    );
    let config = config(
        &node,
        &kubelet.url(),
        "refresh_interval = \"1h\"\nmin_refresh_interval = \"200ms\"\n",
    );
    let agent = Agent::new(&config).expect("agent");
    let _loop = start_loop(&agent, &config);
    wait_for(Duration::from_secs(5), || {
        (agent.meta().health().pods == 3).then_some(())
    })
    .expect("first fetch");
    let id_label = format!("cri-containerd-{new_id}.scope\"");
    let labelled = |body: &str| {
        body.lines()
            .any(|l| l.contains(&id_label) && l.contains("container=\"late-sidecar\""))
    };
    // Scrapes every 50 ms for 2 s while the kubelet does not list the container yet: the
    // early fetches it asks for (at once, then after 0.2, 0.6, 1.4 s) find nothing.
    let first = scrape(&agent);
    let row = first
        .lines()
        .find(|l| l.starts_with("container_start_time_seconds{") && l.contains(&id_label))
        .expect("new container reported")
        .to_owned();
    assert!(
        row.contains("pod=\"postgres-ksx-0\""),
        "pod known from the path: {row}"
    );
    assert!(row.contains("container=\"\""), "{row}");
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(!labelled(&scrape(&agent)));
        std::thread::sleep(Duration::from_millis(50));
    }
    let asked_unlisted = kubelet.authorized.load(Ordering::SeqCst);
    // The kubelet now lists the container (as it does a few seconds after it started).
    let mut list: serde_json::Value = serde_json::from_slice(&pods_json()).expect("json");
    for pod in list["items"].as_array_mut().expect("items") {
        if pod["metadata"]["uid"] == "5cec4eb5-edd9-4831-9ca3-5cfb04fc6d82" {
            pod["status"]["containerStatuses"]
                .as_array_mut()
                .expect("statuses")
                .push(serde_json::json!({
                    "name": "late-sidecar",
                    "containerID": format!("containerd://{new_id}"),
                    "image": "example.com/sidecar:1",
                }));
        }
    }
    kubelet.set(|b| b.body = serde_json::to_vec(&list).expect("json"));
    let listed_at = Instant::now();
    // The next early fetch of the backoff (due at 3.0 s) labels it; with one early fetch per
    // cgroup it stayed unlabelled for the whole refresh_interval (1 h here).
    let named = wait_for(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(50));
        labelled(&scrape(&agent)).then_some(listed_at.elapsed())
    });
    let took = named.expect("the container was never labelled");
    eprintln!("labelled {took:?} after the kubelet listed it; {asked_unlisted} fetches before");
    // Bounded: at most a handful of early fetches over those seconds, not one per scrape
    // (about 100 scrapes ran), for this cgroup and the never-listed sandboxes together.
    let total = kubelet.authorized.load(Ordering::SeqCst);
    assert!(
        (3..=12).contains(&total),
        "{total} fetches in {:?}",
        listed_at.elapsed() + Duration::from_secs(2)
    );
    // Once labelled it asks no more; the sandboxes' gaps keep doubling: over the next second
    // at most one more fetch.
    let after = kubelet.authorized.load(Ordering::SeqCst);
    for _ in 0..20 {
        scrape(&agent);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        kubelet.authorized.load(Ordering::SeqCst) <= after + 1,
        "scrapes kept asking"
    );
}

#[test]
fn allowlisted_pod_labels_filters_and_the_series_budget() {
    let cert = TestCert::generate();
    let kubelet = FakeKubelet::start(&cert, Behavior::ok(pods_json(), TOKEN));
    let node = node(&cert);
    let policy = "\n[labels]\npod_labels = [\"app\", \"app.kubernetes.io/*\"]\n\
                  [filters]\nnamespaces_exclude = [\"checkout\"]\n\
                  drop_metrics = [\"container_memory_failures_total\", \"machine_swap_bytes\"]\n";
    let unlimited = config(
        &node,
        &kubelet.url(),
        &format!("{policy}[limits]\nmax_series = 0\n"),
    );
    let agent = Agent::new(&unlimited).expect("agent");
    fetch(&agent, &unlimited).expect("fetch");
    let body = scrape(&agent);
    let all_rows = rows(&body);
    let api = all_rows
        .values()
        .find(|r| r["container"] == "api" && r["pod"] == "api-kkg-f46wdxrcbd-92zpx")
        .expect("api container");
    assert_eq!(api["label_app"], "api-kkg");
    assert!(api.contains_key("label_app_kubernetes_io_name"), "{api:?}");
    assert!(!api.contains_key("label_team"), "not allow-listed");
    assert!(
        !body.contains("namespace=\"checkout\""),
        "excluded namespace reported"
    );
    assert!(sample_value(&body, "podstat_cgroups_filtered", &[]).is_some_and(|n| n >= 4.0));
    assert!(!body.contains("container_memory_failures_total"));
    assert!(!body.contains("machine_swap_bytes"));
    let total = sample_value(&body, "podstat_series", &[]).expect("series");
    let container_lines = body
        .lines()
        .filter(|l| l.starts_with("container_") && !l.starts_with("container_scrape_error"))
        .count();
    assert_eq!(
        total as usize, container_lines,
        "podstat_series counts what is written"
    );

    // A budget one series short: whole cgroups go, newest first; root and QoS rows stay
    // (they are dropped last).
    let tight = config(
        &node,
        &kubelet.url(),
        &format!(
            "{policy}[limits]\nmax_series = {}\nmax_label_value_length = 12\n",
            total as usize - 1
        ),
    );
    let agent = Agent::new(&tight).expect("agent");
    fetch(&agent, &tight).expect("fetch");
    let first = scrape(&agent);
    let second = scrape(&agent);
    let kept = |b: &str| rows(b).keys().cloned().collect::<BTreeSet<String>>();
    assert_eq!(
        kept(&first),
        kept(&second),
        "the budget drops the same cgroups every time"
    );
    assert!(sample_value(&first, "podstat_series", &[]).is_some_and(|n| n < total));
    assert!(sample_value(&second, "podstat_series_dropped_total", &[]).is_some_and(|n| n >= 2.0));
    assert!(sample_value(&first, "podstat_cgroups_dropped", &[]).is_some_and(|n| n >= 1.0));
    for must in [
        "/",
        "/kubepods.slice",
        "/kubepods.slice/kubepods-burstable.slice",
    ] {
        assert!(kept(&first).contains(must), "{must} dropped");
    }
    // Long values were cut and counted.
    assert!(
        sample_value(&first, "podstat_label_values_truncated_total", &[]).is_some_and(|n| n > 0.0)
    );
    for r in rows(&first).values() {
        for (k, v) in r {
            if k != "id" && k != "name" {
                assert!(v.len() <= 12, "{k}={v}");
            }
        }
    }
}

/// The real kubelet `/metrics/cadvisor` of the k8s 1.35 capture.
fn real_cadvisor_dump() -> String {
    use std::io::Read;
    let mut real = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(
            fixtures().join(
                "kubelet/metrics-cadvisor_k8s-1.35_minikube_containerd_cgroupfs-driver.txt.gz",
            ),
        )
        .expect("real dump"),
    )
    .read_to_string(&mut real)
    .expect("gunzip");
    real
}

fn real_pod_list(name: &str) -> Vec<podstat::meta::podlist::PodInfo> {
    let bytes = std::fs::read(fixtures().join("kubelet").join(name)).expect("fixture");
    podstat::meta::podlist::parse_pod_list(&bytes).expect(name)
}

#[test]
fn real_pod_lists_decode() {
    // (file, pods, container instances: current IDs plus previous instances' IDs)
    for (file, pods, instances) in [
        (
            "podlist_k8s-1.18_minikube_docker_systemd-driver.json",
            16,
            16,
        ),
        (
            "podlist_k8s-1.27_kind_containerd_systemd-driver_init-containers.json",
            30,
            36,
        ),
        (
            "podlist_k8s-1.35_minikube_containerd_cgroupfs-driver.json",
            24,
            25,
        ),
        ("podlist_null-and-empty-items.json", 1, 1),
        ("podlist_empty.json", 0, 0),
    ] {
        let list = real_pod_list(file);
        assert_eq!(list.len(), pods, "{file}");
        let n: usize = list.iter().map(|p| p.containers.len()).sum();
        assert_eq!(n, instances, "{file}");
        for p in &list {
            for c in &p.containers {
                assert_eq!(c.id.len(), 64, "{file}: {} has a bad ID {:?}", p.name, c.id);
                assert!(!c.name.is_empty() && !c.image.is_empty(), "{file}: {c:?}");
            }
        }
    }
    // The init container of the kind capture is joined by its ID like any other.
    let kind =
        real_pod_list("podlist_k8s-1.27_kind_containerd_systemd-driver_init-containers.json");
    assert!(kind.iter().any(|p| p.containers.len() >= 2));
}

/// The join against a real node: every row of the kubelet's own `/metrics/cadvisor` for the
/// 1.35 capture, looked up by the IDs in its `id` label, must get the same container, pod and
/// namespace from podstat's index of the same node's `/pods`.
#[test]
fn join_agrees_with_the_real_kubelet_for_every_row() {
    let list = real_pod_list("podlist_k8s-1.35_minikube_containerd_cgroupfs-driver.json");
    let config = podstat::config::default_config().expect("config");
    let index = podstat::meta::MetaIndex::build(&list, &config.labels, 16);
    let real = real_cadvisor_dump();
    let (mut containers, mut pods) = (0, 0);
    for l in series_labels(&real, "container_start_time_seconds") {
        let id = l["id"].as_str();
        let last = id.rsplit('/').next().unwrap_or("");
        if !l["container"].is_empty() {
            let c = index
                .container(last)
                .unwrap_or_else(|| panic!("{id}: container not in the pod list"));
            assert_eq!(c.name, l["container"], "{id}");
            assert_eq!(c.pod.name, l["pod"], "{id}");
            assert_eq!(c.pod.namespace, l["namespace"], "{id}");
            containers += 1;
        } else if !l["pod"].is_empty() && l["image"].is_empty() {
            let uid = last.strip_prefix("pod").expect("pod cgroup");
            let p = index
                .pod(uid)
                .unwrap_or_else(|| panic!("{id}: pod not in the pod list"));
            assert_eq!(p.name, l["pod"], "{id}");
            assert_eq!(p.namespace, l["namespace"], "{id}");
            pods += 1;
        }
    }
    assert!(
        containers >= 10 && pods >= 10,
        "{containers} containers, {pods} pods checked"
    );
}

/// The API-server source against a real HTTP server speaking list + watch: one LIST, changes
/// by WATCH, a dropped watch resumed from its resourceVersion without a LIST, a `410 Gone`
/// answered with one re-LIST.
#[cfg(feature = "apiserver")]
#[test]
fn apiserver_watch_lists_once_resumes_and_relists_on_gone() {
    use crate::fake_apiserver::FakeApiServer;
    let list: serde_json::Value = serde_json::from_slice(&pods_json()).expect("json");
    let mut pods = list["items"].as_array().expect("items").clone();
    for p in &mut pods {
        p["metadata"]["resourceVersion"] = "100".into();
    }
    let postgres = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "postgres-ksx-0")
        .cloned()
        .expect("postgres pod");
    let server = FakeApiServer::start(pods);
    let cert = TestCert::generate();
    let node = node(&cert);
    // As a projected service-account token is written: no trailing newline, so kube reads
    // (and re-reads) the file itself.
    std::fs::write(&node.token, TOKEN).expect("token");
    let toml = format!(
        "[paths]\ncgroup_root = {:?}\nproc_root = {:?}\nsys_root = {:?}\n[server]\nmin_collect_interval_ms = 0\n\
         [kubernetes]\nsource = \"apiserver\"\napiserver_url = {:?}\nnode_name = \"node1\"\ntoken_file = {:?}\n",
        node.cgroup,
        fixtures().join("proc-node"),
        fixtures().join("sys-node"),
        server.url(),
        node.token,
    );
    let config = podstat::config::parse(&toml, "test").expect("config");
    let agent = Agent::new(&config).expect("agent");
    let source = run_in_background(podstat::meta::apiserver::run(
        Arc::clone(agent.meta()),
        config.kubernetes.clone(),
        config.labels.clone(),
        config.limits.max_pod_labels,
    ));
    let state =
        |f: &dyn Fn(&crate::fake_apiserver::State) -> bool| f(&server.state.lock().expect("state"));
    if wait_for(Duration::from_secs(10), || {
        (agent.meta().health().pods == 3).then_some(())
    })
    .is_none()
    {
        let s = server.state.lock().expect("state");
        panic!(
            "no first list: {:?}; server saw {} lists, {} watches",
            agent.meta().health().last_error,
            s.lists,
            s.watches
        );
    }
    assert!(scrape(&agent).contains("namespace=\"checkout\",pod=\"postgres-ksx-0\""));
    assert!(state(
        &|s| s.lists == 1 && s.tokens.iter().all(|t| t == &format!("Bearer {TOKEN}"))
    ));
    wait_for(Duration::from_secs(5), || {
        state(&|s| s.watches == 1).then_some(())
    })
    .expect("watch opened");

    // A change arrives by watch, not by listing again.
    server.event("DELETED", postgres.clone());
    wait_for(Duration::from_secs(5), || {
        (agent.meta().health().pods == 2).then_some(())
    })
    .expect("deletion applied");
    assert!(!scrape(&agent).contains("pod=\"postgres-ksx-0\""));
    assert!(state(&|s| s.lists == 1));

    // The watch drops: resumed from the last resourceVersion, no LIST.
    server.drop_watches();
    wait_for(Duration::from_secs(10), || {
        state(&|s| s.watches == 2).then_some(())
    })
    .expect("watch resumed");
    assert!(
        state(&|s| s.lists == 1 && s.watch_from[1] == "101"),
        "resumed from 101"
    );
    server.event("ADDED", postgres);
    wait_for(Duration::from_secs(5), || {
        (agent.meta().health().pods == 3).then_some(())
    })
    .expect("re-added over the resumed watch");

    // 410 Gone: exactly one re-list, and the view stays right.
    server.state.lock().expect("state").gone = true;
    server.drop_watches();
    wait_for(Duration::from_secs(15), || {
        state(&|s| s.lists == 2).then_some(())
    })
    .expect("re-list after 410");
    // That no second re-list follows can only be seen by waiting: half a second is several
    // of the source's retry gaps at this test's settings.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.meta().health().pods, 3);
    assert!(
        state(&|s| s.lists == 2),
        "listed more than once after the 410"
    );
    assert!(scrape(&agent).contains("pod=\"postgres-ksx-0\""));
    drop(source);
}

/// A cgroup that `exclude_cgroups` leaves out never asks for a pod-list fetch, however many of
/// them appear (each used to ask once, at most every min_refresh_interval); a new container
/// that is reported still asks.
#[test]
fn excluded_cgroups_never_ask_for_metadata() {
    let cert = TestCert::generate();
    let kubelet = FakeKubelet::start(&cert, Behavior::ok(pods_json(), TOKEN));
    let node = node(&cert);
    let (pod_dir, sibling) = known_pod_and_container(&node);
    let config = config(
        &node,
        &kubelet.url(),
        "refresh_interval = \"1h\"\nmin_refresh_interval = \"100ms\"\n\
         [filters]\nexclude_cgroups = [\"**/cri-containerd-cd*.scope\"]\n",
    );
    let agent = Agent::new(&config).expect("agent");
    let _loop = start_loop(&agent, &config);
    wait_for(Duration::from_secs(5), || {
        (agent.meta().health().pods == 3).then_some(())
    })
    .expect("first fetch");
    // What the existing cgroups ask for is asked and done: the sandboxes (never listed) ask at
    // doubling gaps from 0.1 s: at 0, 0.1, 0.3, 0.7, 1.5, 3.1 s, and next at 6.3 s, after
    // this test's window.
    let first = std::time::Instant::now();
    while first.elapsed() < Duration::from_millis(3300) {
        scrape(&agent);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let settled = kubelet.authorized.load(Ordering::SeqCst);
    // Three excluded containers appear, one by one, each seen by several scrapes.
    for i in 0..3 {
        let id = format!("cd{i:02x}{}", "cd".repeat(30));
        copy_pinned(
            &sibling,
            &pod_dir.join(format!("cri-containerd-{id}.scope")),
        );
        for _ in 0..3 {
            let body = scrape(&agent);
            assert!(!body.contains(&id), "an excluded cgroup is reported");
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    assert_eq!(
        kubelet.authorized.load(Ordering::SeqCst),
        settled,
        "excluded cgroups asked for the pod list"
    );
    // The control: a reported unknown container does ask.
    let id = "ef".repeat(32);
    copy_pinned(
        &sibling,
        &pod_dir.join(format!("cri-containerd-{id}.scope")),
    );
    scrape(&agent);
    let asked = wait_for(Duration::from_secs(5), || {
        (kubelet.authorized.load(Ordering::SeqCst) > settled).then_some(())
    });
    assert!(asked.is_some(), "a new reported container did not ask");
}

/// A kubelet that is not there at all is a `connect` error, not a `tls` one (the handshake
/// failure is, in `certificate_checks_and_the_insecure_opt_in`).
#[test]
fn a_kubelet_that_is_not_listening_is_a_connect_error() {
    let node = node(&TestCert::generate());
    let closed = format!("https://127.0.0.1:{}/pods", crate::support::free_port());
    let config = config(&node, &closed, "");
    let agent = Agent::new(&config).expect("agent");
    let err = fetch(&agent, &config).expect_err("nothing listens");
    assert_eq!(err.kind(), "connect", "{err}");
}

#[test]
fn kubelet_client_setup_is_retried_until_the_ca_file_appears() {
    let cert = TestCert::generate();
    let kubelet = FakeKubelet::start(&cert, Behavior::ok(pods_json(), TOKEN));
    let node = node(&cert);
    let config = config(&node, &kubelet.url(), "");
    // The CA file is not there yet at start (a Secret mounted a moment later).
    let ca = std::fs::read(&node.ca).expect("ca");
    std::fs::remove_file(&node.ca).expect("remove ca");
    let agent = Agent::new(&config).expect("agent");
    let _loop = start_loop(&agent, &config);
    let failed = wait_for(Duration::from_secs(5), || {
        let h = agent.meta().health();
        h.last_error.is_some().then_some(h)
    });
    let h = failed.expect("no error reported while the CA file is missing");
    assert!(h.last_success.is_none(), "{h:?}");
    std::fs::write(&node.ca, ca).expect("restore ca");
    let listed = wait_for(Duration::from_secs(8), || {
        (agent.meta().health().pods == 3).then_some(())
    });
    assert!(listed.is_some(), "the client was never set up again");
}

#[test]
fn a_restart_never_serves_series_without_pod_labels() {
    let cert = TestCert::generate();
    // The kubelet answers its first list only after 1.5 s.
    let mut slow = Behavior::ok(pods_json(), TOKEN);
    slow.delay = Duration::from_millis(1500);
    let kubelet = FakeKubelet::start(&cert, slow);
    let node = node(&cert);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("podstat.toml");
    std::fs::write(&file, config_text(&node, &kubelet.url(), "")).expect("write");
    let (_podstat, addr) = crate::e2e_prometheus::start_configured_podstat(&file);
    let (status, _, _) = http_get(&addr, "/readyz", "").expect("readyz");
    assert!(
        status.contains(" 503 "),
        "ready before the pod list: {status}"
    );
    // The first scrape waits for the list instead of serving label-less series.
    let (status, _, body) = http_get(&addr, "/metrics", "").expect("metrics");
    assert!(status.contains(" 200 "), "{status}");
    let body = String::from_utf8_lossy(&body);
    let row = body
        .lines()
        .find(|l| {
            l.starts_with("container_cpu_usage_seconds_total{")
                && l.contains("kubepods-pod5cec4eb5")
        })
        .expect("a container of the listed pod");
    assert!(row.contains("pod=\"postgres-ksx-0\""), "{row}");
    let (status, _, _) = http_get(&addr, "/readyz", "").expect("readyz");
    assert!(status.contains(" 200 "), "{status}");

    // With no kubelet at all, the wait is bounded: served, without labels, after it.
    let closed = format!("https://127.0.0.1:{}", crate::support::free_port());
    std::fs::write(
        &file,
        config_text(&node, &closed, "wait_for_first_list = \"1s\"\n"),
    )
    .expect("write");
    let started = std::time::Instant::now();
    let (_podstat, addr) = crate::e2e_prometheus::start_configured_podstat(&file);
    let (status, _, _) = http_get(&addr, "/metrics", "").expect("metrics");
    assert!(status.contains(" 200 "), "{status}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let (status, _, _) = http_get(&addr, "/readyz", "").expect("readyz");
    assert!(status.contains(" 200 "), "{status}");
}

/// A PodList of `n` pods shaped like a busy real node's: labels, long annotations (a
/// last-applied-configuration), two containers each. About 600 bytes a pod.
fn big_pod_list(n: usize) -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "metadata": {
                    "name": format!("web-{i}"), "namespace": format!("team-{}", i % 40),
                    "uid": format!("00000000-0000-4000-8000-{i:012x}"),
                    "labels": {"app": "web", "pod-template-hash": format!("{i:08x}"), "tier": "frontend", "release": "stable"},
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(200), "checksum/config": format!("{i:064x}")}
                },
                "spec": {"containers": [{"name": "app", "image": "example.com/web:1"}, {"name": "proxy", "image": "example.com/proxy:1"}]},
                "status": {"containerStatuses": [
                    {"name": "app", "containerID": format!("containerd://{i:060x}aaaa"), "image": "example.com/web:1", "imageID": "example.com/web@sha256:aa"},
                    {"name": "proxy", "containerID": format!("containerd://{i:060x}bbbb"), "image": "example.com/proxy:1", "imageID": "example.com/proxy@sha256:bb"}
                ]}
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"kind": "PodList", "apiVersion": "v1", "items": items}))
        .expect("json")
}

/// A 50,000-pod list (29 MB) and back to 100: podstat's memory comes back within a minute;
/// with the default max_pods the big list is refused while decoding and memory hardly moves.
#[test]
fn memory_comes_back_after_a_huge_pod_list() {
    let _heavy = crate::support::exclusive();
    let cert = TestCert::generate();
    let small = big_pod_list(100);
    let huge = big_pod_list(50_000);
    assert!(huge.len() > 25 << 20, "{} bytes", huge.len());
    let kubelet = FakeKubelet::start(&cert, Behavior::ok(small.clone(), TOKEN));
    let node = node(&cert);
    let dir = tempfile::tempdir().expect("tempdir");
    let pods_now = |addr: &str| {
        let (_, _, body) = http_get(addr, "/metrics", "").expect("metrics");
        sample_value(
            &String::from_utf8_lossy(&body),
            "podstat_metadata_pods",
            &[],
        )
    };
    let settle = |addr: &str, pods: f64| {
        wait_for(Duration::from_secs(60), || {
            (pods_now(addr) == Some(pods)).then_some(())
        })
        .unwrap_or_else(|| panic!("never saw {pods} pods"));
    };

    for (max_pods, accepted) in [(60_000, true), (5_000, false)] {
        kubelet.set(|b| b.body = small.clone());
        let file = dir.path().join("podstat.toml");
        std::fs::write(
            &file,
            config_text(
                &node,
                &kubelet.url(),
                &format!("refresh_interval = \"300ms\"\nmax_response_bytes = 67108864\nmax_pods = {max_pods}\n"),
            ),
        )
        .expect("write");
        let (podstat, addr) = crate::e2e_prometheus::start_configured_podstat(&file);
        settle(&addr, 100.0);
        std::thread::sleep(Duration::from_secs(2));
        let steady = rss_kib(podstat.pid());
        kubelet.set(|b| b.body = huge.clone());
        let mut peak = steady;
        if accepted {
            settle(&addr, 50_000.0);
            peak = peak.max(rss_kib(podstat.pid()));
        } else {
            // Refused: counted as too_large, the 100-pod view stays.
            wait_for(Duration::from_secs(60), || {
                let (_, _, body) = http_get(&addr, "/metrics", "").ok()?;
                let body = String::from_utf8_lossy(&body).into_owned();
                peak = peak.max(rss_kib(podstat.pid()));
                (sample_value(
                    &body,
                    "podstat_metadata_errors_total",
                    &["kind=\"too_large\""],
                ) >= Some(2.0))
                .then_some(())
            })
            .expect("the huge list was not refused");
            assert_eq!(pods_now(&addr), Some(100.0));
        }
        kubelet.set(|b| b.body = small.clone());
        settle(&addr, 100.0);
        let back = wait_for(Duration::from_secs(60), || {
            let rss = rss_kib(podstat.pid());
            (rss < steady * 2).then_some(rss)
        });
        eprintln!(
            "max_pods {max_pods}: RSS steady {steady} KiB, peak {peak} KiB, after {:?} KiB",
            back.unwrap_or_else(|| rss_kib(podstat.pid()))
        );
        assert!(
            back.is_some(),
            "RSS {} KiB a minute after, {steady} KiB before",
            rss_kib(podstat.pid())
        );
    }
}
