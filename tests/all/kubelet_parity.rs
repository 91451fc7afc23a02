//! podstat against the kubelet's own `/metrics/cadvisor`, on real pairs of a node's `GET /pods`
//! and the same node's `/metrics/cadvisor` (k8s 1.18 Docker, 1.27 kind containerd, 1.35
//! containerd; `tests/fixtures/kubelet`, sources in its SOURCES.md).

use std::collections::BTreeMap;
use std::io::Read;

use podstat::discovery::layout::classify;
use podstat::discovery::CgroupKind;
use podstat::meta::podlist::parse_pod_list;
use podstat::meta::MetaIndex;

use crate::support::fixtures;

const PAIRS: &[(&str, &str)] = &[
    (
        "podlist_k8s-1.18_minikube_docker_systemd-driver.json",
        "metrics-cadvisor_k8s-1.18_minikube_docker_systemd-driver.txt.gz",
    ),
    (
        "podlist_k8s-1.27_kind_containerd_systemd-driver_init-containers.json",
        "metrics-cadvisor_k8s-1.27_kind_containerd_systemd-driver.txt.gz",
    ),
    (
        "podlist_k8s-1.35_minikube_containerd_cgroupfs-driver.json",
        "metrics-cadvisor_k8s-1.35_minikube_containerd_cgroupfs-driver.txt.gz",
    ),
];

pub fn dump(name: &str) -> String {
    let gz = std::fs::read(fixtures().join("kubelet").join(name)).expect("dump");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .expect("gunzip");
    text
}

/// The labels of a sample line (values unescaped enough for these dumps: no quotes inside).
pub fn labels_of(line: &str) -> BTreeMap<String, String> {
    let Some(open) = line.find('{') else {
        return BTreeMap::new();
    };
    let close = line.rfind('}').expect("closing brace");
    let mut out = BTreeMap::new();
    let mut rest = &line[open + 1..close];
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim_start_matches(',').to_owned();
        let after = &rest[eq + 2..];
        let end = after.find('"').expect("closing quote");
        out.insert(name, after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

/// Every container row the pod list knows gets the kubelet's `container`, `image`, `pod` and
/// `namespace` values. The one exception is checked, not assumed: Docker containers created
/// from an image that was on the node before it was pulled (minikube preloads its system
/// images) show Docker's local `sha256:` ID, which the pod list carries nowhere.
#[test]
fn container_labels_equal_the_kubelets_for_every_listed_container() {
    let config = podstat::config::parse("", "test").expect("config");
    let mut report = Vec::new();
    for (podlist, metrics) in PAIRS {
        let json = std::fs::read(fixtures().join("kubelet").join(podlist)).expect("podlist");
        let json_text = String::from_utf8_lossy(&json).into_owned();
        let pods = parse_pod_list(&json).expect("decode");
        let index = MetaIndex::build(&pods, &config.labels, 16);
        let (mut compared, mut unlisted_image_ids) = (0, 0);
        let mut differ = Vec::new();
        for line in dump(metrics).lines() {
            if !line.starts_with("container_memory_usage_bytes{") {
                continue;
            }
            let real = labels_of(line);
            let CgroupKind::Container { id, .. } = classify(&real["id"]) else {
                continue;
            };
            let Some(ours) = index.container(&id) else {
                continue;
            };
            compared += 1;
            let image_id = real["image"].strip_prefix("sha256:");
            if ours.image != real["image"] && image_id.is_some_and(|hex| !json_text.contains(hex)) {
                unlisted_image_ids += 1;
                continue;
            }
            let got = [
                ("container", ours.name.as_str()),
                ("image", ours.image.as_str()),
                ("pod", ours.pod.name.as_str()),
                ("namespace", ours.pod.namespace.as_str()),
            ];
            for (label, value) in got {
                if real[label] != value {
                    differ.push(format!(
                        "{podlist} {id}: {label} {:?} (kubelet) vs {value:?}",
                        real[label]
                    ));
                }
            }
        }
        assert!(compared > 5, "{podlist}: only {compared} containers joined");
        report.push(format!(
            "{podlist}: {compared} containers, {unlisted_image_ids} with an image ID the list lacks"
        ));
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }
    eprintln!("{}", report.join("\n"));
}

/// The rows outside kubepods that each real kubelet shows are the ones podstat reports by
/// default on a Kubernetes node (`raw_include = "auto"` with a metadata source), and a plain
/// host's slices are not among them.
#[test]
fn default_raw_rows_on_a_node_are_the_kubelets() {
    let node =
        podstat::config::parse("[kubernetes]\nsource = \"kubelet\"\n", "test").expect("config");
    let rows = &node.discovery.raw_include;
    let mut raw_seen = 0;
    for (_, metrics) in PAIRS {
        for line in dump(metrics).lines() {
            if !line.starts_with("container_memory_usage_bytes{") {
                continue;
            }
            let id = labels_of(line)["id"].clone();
            if classify(&id) == CgroupKind::Raw {
                raw_seen += 1;
                assert!(rows.is_match(&id), "{metrics}: the kubelet shows {id}");
            }
        }
    }
    assert_eq!(
        raw_seen, 4,
        "kubelet.service three times, docker.service once"
    );
    for host_only in [
        "/system.slice",
        "/user.slice",
        "/init.scope",
        "/system.slice/ssh.service",
    ] {
        assert!(!rows.is_match(host_only), "{host_only}");
    }
}

/// Families the kubelet's endpoint has and podstat does not write, with why: only what no
/// kernel interface gives.
const NOT_WRITTEN: &[(&str, &str)] = &[
    (
        "machine_nvm_avg_power_budget_watts",
        "Intel Optane persistent memory, read through Intel's libipmctl (not the kernel); the kubelet's builds have no libipmctl and write 0",
    ),
    ("machine_nvm_capacity", "as machine_nvm_avg_power_budget_watts"),
];

/// Every family of every real dump is one podstat writes, with the kubelet's type and label
/// names (a family's series in a dump may lack some of podstat's rows, never a label).
#[test]
fn every_family_of_the_kubelets_endpoint_is_written_with_its_labels() {
    use podstat::exposition::names::{CONTAINER_FAMILIES, MACHINE_FAMILIES, VERSION_INFO};
    use std::collections::BTreeSet;
    const STANDARD: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];
    let mut families = 0;
    for (_, metrics) in PAIRS {
        let text = dump(metrics);
        let mut types: BTreeMap<&str, &str> = BTreeMap::new();
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                types.insert(name, kind);
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = &line[..line.find(['{', ' ']).expect("sample")];
                labels
                    .entry(name.to_owned())
                    .or_default()
                    .extend(labels_of(line).into_keys());
            }
        }
        for (name, kind) in types {
            families += 1;
            if NOT_WRITTEN.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let seen = labels.get(name).cloned().unwrap_or_default();
            if let Some(f) = CONTAINER_FAMILIES.iter().find(|f| f.name == name) {
                assert_eq!(f.kind.as_str(), kind, "{metrics}: type of {name}");
                let ours: BTreeSet<String> = STANDARD
                    .iter()
                    .map(|s| (*s).to_owned())
                    .chain(
                        f.labels
                            .split(", ")
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    )
                    .collect();
                if !seen.is_empty() {
                    assert_eq!(ours, seen, "{metrics}: label names of {name}");
                }
            } else if let Some(f) = MACHINE_FAMILIES.iter().find(|f| f.name == name) {
                assert_eq!(f.kind.as_str(), kind, "{metrics}: type of {name}");
                for label in &seen {
                    assert!(
                        ["boot_id", "machine_id", "system_uuid"].contains(&label.as_str()),
                        "{metrics}: {name} has {label}"
                    );
                }
            } else if name == VERSION_INFO.name {
                let want: BTreeSet<String> = [
                    "cadvisorRevision",
                    "cadvisorVersion",
                    "dockerVersion",
                    "kernelVersion",
                    "osVersion",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                assert_eq!(seen, want, "{metrics}: labels of {name}");
            } else if name != "container_scrape_error" {
                panic!("{metrics}: the kubelet writes {name} ({kind}); podstat does not");
            }
        }
    }
    assert!(families > 150, "{families} families read from the dumps");
}
