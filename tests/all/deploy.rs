//! The shipped deployment files (`daemonset/`): Kubernetes' own schemas for the core objects
//! (kubernetes-validate, strict), a structural check of the Prometheus Operator objects against
//! what the kubernetes-mixin needs, podstat's config parser on the ConfigMap, the DaemonSet's
//! mounts against that config, promtool on the rules, their unit tests and the plain scrape
//! config, and the PrometheusRule against the rule file it is generated from.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

use crate::support::{skip_unless, which};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("daemonset")
}

/// Every document of a manifest file.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn one(file: &str, kind: &str) -> Value {
    documents(file)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{file}: no {kind}"))
}

fn str_at<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v:?}"))
}

fn seq<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what}: not a list: {v:?}"))
}

/// Files whose objects go to the cluster through `kubectl apply -k`.
const CORE: &[&str] = &[
    "namespace.yaml",
    "rbac.yaml",
    "configmap.yaml",
    "daemonset.yaml",
    "service.yaml",
];

#[test]
fn core_manifests_pass_kubernetes_schemas() {
    if skip_unless(
        which("kubernetes-validate").is_some(),
        "kubernetes-validate (pip install kubernetes-validate)",
    ) {
        return;
    }
    // The oldest minor still in support where these fields exist, and the newest it knows.
    for version in ["1.30.0", "1.33.0"] {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--no-warn", "-k", version])
            .args(CORE.iter().map(|f| dir().join(f)))
            .output()
            .expect("kubernetes-validate");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{version}:\n{text}");
        // Every object was checked, none skipped for want of a schema.
        let passed = text.matches(" passed for resource ").count();
        assert_eq!(passed, 7, "{version}:\n{text}");
    }
}

#[test]
fn kustomization_lists_every_object_file_once() {
    let k = &documents("kustomization.yaml")[0];
    let listed: Vec<&str> = seq(&k["resources"], "resources")
        .iter()
        .map(|r| str_at(r, "resource"))
        .collect();
    let mut expected: Vec<&str> = CORE.to_vec();
    expected.extend(["servicemonitor.yaml", "prometheusrule.yaml"]);
    assert_eq!(listed, expected);
    for f in &listed {
        assert!(dir().join(f).is_file(), "{f}");
    }
    assert_eq!(k["namespace"], "podstat");
}

#[test]
fn the_configmap_is_a_config_podstat_accepts_and_the_daemonset_mounts_its_paths() {
    let cm = one("configmap.yaml", "ConfigMap");
    let toml = str_at(&cm["data"]["podstat.toml"], "podstat.toml");
    let config =
        podstat::config::parse(toml, "daemonset/configmap.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{:?}", config.kubernetes.source),
        "Kubelet",
        "pod metadata from the kubelet"
    );

    let ds = one("daemonset.yaml", "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let container = &seq(&pod["containers"], "containers")[0];
    let mounts: Vec<(&str, bool)> = seq(&container["volumeMounts"], "volumeMounts")
        .iter()
        .map(|m| {
            (
                str_at(&m["mountPath"], "mountPath"),
                m["readOnly"].as_bool() == Some(true),
            )
        })
        .collect();
    for path in [
        &config.paths.cgroup_root,
        &config.paths.proc_root,
        &config.paths.sys_root,
        &config.paths.rootfs,
        &config.paths.machine_id_file,
        &config.paths.os_release_file,
    ] {
        let path = path.to_str().expect("utf-8 path");
        assert!(
            mounts.contains(&(path, true)),
            "{path} is not a read-only mount: {mounts:?}"
        );
    }
    // The config file itself, where the args point.
    let args: Vec<&str> = seq(&container["args"], "args")
        .iter()
        .map(|a| str_at(a, "arg"))
        .collect();
    let config_path = Path::new(args[1]);
    assert_eq!(args[0], "--config");
    assert!(mounts.contains(&(
        config_path.parent().and_then(Path::to_str).expect("dir"),
        true
    )));

    // The port podstat listens on is the one probed and scraped.
    let port = &seq(&container["ports"], "ports")[0];
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(u64::from(config.server.listen.port()))
    );
    assert_eq!(port["name"], "metrics");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");

    // What the issue asks of a node agent's pod.
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(
        seq(&sc["capabilities"]["drop"], "drop"),
        &[Value::from("ALL")]
    );
    // Only the two tests/all/image.rs shows necessary (and runs the image with).
    assert_eq!(
        seq(&sc["capabilities"]["add"], "add"),
        &[Value::from("DAC_READ_SEARCH"), Value::from("SYS_PTRACE")]
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        seq(&pod["tolerations"], "tolerations")[0]["operator"],
        "Exists"
    );
    for env in ["NODE_NAME", "HOST_IP"] {
        assert!(
            seq(&container["env"], "env")
                .iter()
                .any(|e| e["name"] == env),
            "{env}"
        );
    }
    // The pod template carries the labels the Service and the monitors select.
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (file, kind) in [
        ("service.yaml", "Service"),
        ("servicemonitor.yaml", "ServiceMonitor"),
        ("podmonitor.yaml", "PodMonitor"),
    ] {
        let obj = one(file, kind);
        let selector = if kind == "Service" {
            &obj["spec"]["selector"]
        } else {
            &obj["spec"]["selector"]["matchLabels"]
        };
        for (k, v) in selector.as_mapping().expect("selector") {
            assert_eq!(&labels[k], v, "{file}: selector {k:?}");
        }
    }
}

/// The fields of a ServiceMonitor endpoint / PodMonitor podMetricsEndpoint this repository
/// uses, all of them in the Operator's CRD (monitoring.coreos.com/v1): a misspelt key is
/// silently ignored by a lenient apply, so any other key fails here.
const ENDPOINT_FIELDS: &[&str] = &[
    "port",
    "path",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "honorTimestamps",
    "relabelings",
];
const MONITOR_SPEC_FIELDS: &[&str] = &[
    "selector",
    "namespaceSelector",
    "sampleLimit",
    "labelLimit",
    "labelValueLengthLimit",
    "endpoints",
    "podMetricsEndpoints",
];

#[test]
fn the_monitors_give_podstats_series_the_kubelets_job_path_and_node() {
    for (file, kind, list) in [
        ("servicemonitor.yaml", "ServiceMonitor", "endpoints"),
        ("podmonitor.yaml", "PodMonitor", "podMetricsEndpoints"),
    ] {
        let m = one(file, kind);
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1", "{file}");
        for key in m["spec"].as_mapping().expect("spec").keys() {
            assert!(
                MONITOR_SPEC_FIELDS.contains(&str_at(key, "key")),
                "{file}: spec.{key:?}"
            );
        }
        let endpoints = seq(&m["spec"][list], list);
        assert_eq!(endpoints.len(), 1, "{file}");
        let e = &endpoints[0];
        for key in e.as_mapping().expect("endpoint").keys() {
            assert!(
                ENDPOINT_FIELDS.contains(&str_at(key, "key")),
                "{file}: endpoint.{key:?}"
            );
        }
        assert_eq!(
            e["honorLabels"], true,
            "{file}: podstat's pod/namespace/container must win"
        );
        assert_eq!(e["port"], "metrics");
        assert_eq!(e["path"], "/metrics");
        let relabel = |target: &str| {
            seq(&e["relabelings"], "relabelings")
                .iter()
                .find(|r| r["targetLabel"] == target)
                .unwrap_or_else(|| panic!("{file}: no relabeling to {target}"))
                .clone()
        };
        assert_eq!(relabel("job")["replacement"], "kubelet");
        assert_eq!(relabel("metrics_path")["replacement"], "/metrics/cadvisor");
        assert_eq!(
            seq(&relabel("node")["sourceLabels"], "sourceLabels"),
            &[Value::from("__meta_kubernetes_pod_node_name")]
        );
        // Above podstat's own series budget, so Prometheus never rejects a whole scrape.
        let config = podstat::config::default_config().expect("default config");
        assert!(m["spec"]["sampleLimit"].as_u64() > Some(config.limits.max_series as u64));
    }
}

fn promtool(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    if skip_unless(
        which("promtool").is_some(),
        "promtool (Debian package prometheus)",
    ) {
        return;
    }
    let rules = dir().join("rules");
    let out = promtool(&["check", "rules", "podstat.rules.yaml"], &rules);
    assert!(out.contains("SUCCESS: 10 rules found"), "{out}");
    promtool(&["test", "rules", "podstat.rules.test.yaml"], &rules);
}

#[test]
fn the_prometheusrule_carries_the_rule_files_groups() {
    let rule = one("prometheusrule.yaml", "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let file = &documents("rules/podstat.rules.yaml")[0];
    assert_eq!(
        rule["spec"]["groups"], file["groups"],
        "regenerate prometheusrule.yaml (its header says how)"
    );
}

#[test]
fn the_plain_scrape_config_is_one_prometheus_accepts() {
    if skip_unless(
        which("promtool").is_some(),
        "promtool (Debian package prometheus)",
    ) {
        return;
    }
    // promtool checks the rest of the job: relabelings, limits, names.
    let job = shipped_job_with_static_target("127.0.0.1:9780");
    let mut config = serde_yaml::Mapping::new();
    config.insert("scrape_configs".into(), Value::Sequence(vec![job.clone()]));
    let config = serde_yaml::to_string(&config).expect("config text");
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("prometheus.yml"), config).expect("write");
    promtool(&["check", "config", "prometheus.yml"], tmp.path());
    // The same job name and relabelings as the monitors.
    assert_eq!(job["job_name"], "kubelet");
    assert_eq!(job["honor_labels"], true);
}

/// The shipped plain scrape job (`prometheus-scrape-config.yaml`) with its Kubernetes pod
/// discovery, checked here, replaced by a static target. Debian's Prometheus is built without
/// Kubernetes service discovery, so its promtool rejects the key and its server cannot run it.
pub fn shipped_job_with_static_target(target: &str) -> Value {
    let jobs = std::fs::read_to_string(dir().join("prometheus-scrape-config.yaml"))
        .expect("scrape config");
    let mut job: Value = serde_yaml::from_str::<Value>(&jobs).expect("yaml")[0].clone();
    let sd = seq(&job["kubernetes_sd_configs"], "kubernetes_sd_configs").clone();
    assert_eq!(sd.len(), 1);
    assert_eq!(sd[0]["role"], "pod");
    assert_eq!(
        seq(&sd[0]["namespaces"]["names"], "names"),
        &[Value::from("podstat")]
    );
    let map = job.as_mapping_mut().expect("job");
    map.remove("kubernetes_sd_configs");
    map.insert(
        "static_configs".into(),
        serde_yaml::from_str(&format!("[{{targets: ['{target}']}}]")).expect("static"),
    );
    job
}
