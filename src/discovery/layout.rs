//! What a cgroup path means to the kubelet: root, QoS level, pod, container, or a plain
//! ("raw") cgroup. Pure string work over the path relative to the hierarchy root; the pod UID
//! and container ID come from the path alone, so no runtime socket is needed.

/// The container runtime, as far as the leaf name tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// A bare 64-hex leaf (cgroupfs driver): containerd or Docker, the path cannot say which.
    Unknown,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupKind {
    /// The hierarchy root `/`.
    Root,
    /// `kubepods`, or a QoS level below it (`besteffort`, `burstable`).
    Qos,
    /// A pod cgroup; `uid` is the pod UID with dashes (or the 32-hex static-pod hash).
    Pod { uid: String },
    /// A container (or sandbox) leaf of a pod.
    Container {
        pod_uid: String,
        id: String,
        runtime: Runtime,
    },
    /// A cgroup outside kubepods (systemd service, plain Docker container, ...).
    Raw,
    /// Not a workload: `*.mount` units, CRI-O conmon, children of a container cgroup.
    Skip,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod UID as it appears in a path: `8-4-4-4-12` hex with `sep`, or a 32-hex config hash.
fn pod_uid(s: &str, sep: u8) -> Option<String> {
    if is_hex(s, 32) {
        return Some(s.to_owned());
    }
    let groups: Vec<&str> = s.split(sep as char).collect();
    let shape = [8, 4, 4, 4, 12];
    if groups.len() == 5 && groups.iter().zip(shape).all(|(g, n)| is_hex(g, n)) {
        return Some(groups.join("-"));
    }
    None
}

/// `[<prefix>-]kubepods[-<qos>]-pod<UID_>.slice` (systemd driver). The prefix is a non-default
/// cgroup root, e.g. kind's `kubelet-`.
fn systemd_pod(component: &str) -> Option<String> {
    let stem = component.strip_suffix(".slice")?;
    let at = stem.rfind("-pod")?;
    let (head, uid) = (&stem[..at], &stem[at + 4..]);
    let qos_ok = ["kubepods", "kubepods-besteffort", "kubepods-burstable"]
        .iter()
        .any(|q| head == *q || head.ends_with(&format!("-{q}")));
    if !qos_ok {
        return None;
    }
    pod_uid(uid, b'_')
}

fn is_systemd_qos(component: &str) -> bool {
    let Some(stem) = component.strip_suffix(".slice") else {
        return false;
    };
    ["kubepods", "kubepods-besteffort", "kubepods-burstable"]
        .iter()
        .any(|q| stem == *q || stem.ends_with(&format!("-{q}")))
}

/// Container leaf names: `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`,
/// bare `<id>` (cgroupfs) and `crio-<id>` (CRI-O sandbox without a scope).
fn container_leaf(component: &str) -> Option<(String, Runtime)> {
    if component.starts_with("crio-conmon-") {
        return None;
    }
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    let (id, runtime) = if let Some(id) = stem.strip_prefix("cri-containerd-") {
        (id, Runtime::Containerd)
    } else if let Some(id) = stem.strip_prefix("crio-") {
        (id, Runtime::CriO)
    } else if let Some(id) = stem.strip_prefix("docker-") {
        (id, Runtime::Docker)
    } else {
        (stem, Runtime::Unknown)
    };
    is_hex(id, 64).then(|| (id.to_owned(), runtime))
}

/// The ID of a container a runtime started off Kubernetes: Docker's `/docker/<id>` (cgroupfs
/// driver) and `docker-<id>.scope`, Podman's `libpod-<id>` and `libpod-<id>.scope`. Their
/// own processes hold their network namespace, as a pod's sandbox does. Podman's
/// `libpod-conmon-<id>.scope` (the monitor, in the host's namespace) is not one.
pub fn standalone_container_id(path: &str) -> Option<&str> {
    let leaf = path.rsplit('/').next()?;
    let stem = leaf.strip_suffix(".scope").unwrap_or(leaf);
    let id = stem
        .strip_prefix("docker-")
        .or_else(|| stem.strip_prefix("libpod-"))
        .unwrap_or(stem);
    is_hex(id, 64).then_some(id)
}

/// Misconfigured containerd (systemd-style parent, cgroupfs runc) and user-namespaced pods
/// leave `kubepods-<qos>-pod<UID_>.slice:cri-containerd:<id>` as one literal directory name.
fn literal_slice_leaf(component: &str) -> Option<CgroupKind> {
    let mut parts = component.split(':');
    let (slice, prefix, id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_hex(id, 64) {
        return None;
    }
    let runtime = match prefix {
        "cri-containerd" => Runtime::Containerd,
        "crio" => Runtime::CriO,
        "docker" => Runtime::Docker,
        _ => return None,
    };
    Some(CgroupKind::Container {
        pod_uid: systemd_pod(slice)?,
        id: id.to_owned(),
        runtime,
    })
}

/// Classifies a cgroup path relative to the hierarchy root (`/` or `/a/b`). The pod component
/// is searched anywhere in the path, so kubepods nested under a kind or minikube node
/// container are found too.
pub fn classify(path: &str) -> CgroupKind {
    if path == "/" || path.is_empty() {
        return CgroupKind::Root;
    }
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let Some(last) = components.last() else {
        return CgroupKind::Root;
    };
    if last.ends_with(".mount") {
        return CgroupKind::Skip;
    }
    if let Some(kind) = literal_slice_leaf(last) {
        return kind;
    }
    for (i, component) in components.iter().enumerate() {
        let cgroupfs_parent_ok = match i {
            0 => false,
            _ => {
                components[i - 1] == "kubepods"
                    || (i >= 2
                        && components[i - 2] == "kubepods"
                        && matches!(components[i - 1], "besteffort" | "burstable"))
            }
        };
        let uid = systemd_pod(component).or_else(|| {
            component
                .strip_prefix("pod")
                .filter(|_| cgroupfs_parent_ok)
                .and_then(|u| pod_uid(u, b'-'))
        });
        let Some(uid) = uid else { continue };
        let rest = &components[i + 1..];
        return match rest {
            [] => CgroupKind::Pod { uid },
            [leaf] => match container_leaf(leaf) {
                Some((id, runtime)) => CgroupKind::Container {
                    pod_uid: uid,
                    id,
                    runtime,
                },
                None => CgroupKind::Skip,
            },
            // Below a container: crun's `container`/`exec` children. Stats are read at the
            // container level (hierarchical), so these would double count.
            _ => CgroupKind::Skip,
        };
    }
    let qos = match components.as_slice() {
        [.., "kubepods"] => true,
        [.., "kubepods", "besteffort" | "burstable"] => true,
        [.., last] => is_systemd_qos(last),
        [] => false,
    };
    if qos {
        CgroupKind::Qos
    } else {
        CgroupKind::Raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1d3d308a7d48a27814a68bf33a44acf4441c9c02463ca0bc1cdfdc8c0b4a8496";

    fn container(uid: &str, runtime: Runtime) -> CgroupKind {
        CgroupKind::Container {
            pod_uid: uid.into(),
            id: ID.into(),
            runtime,
        }
    }

    #[test]
    fn systemd_driver_layouts() {
        let uid = "7a96c459-d529-44ae-9f99-90d3798d6426";
        let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a96c459_d529_44ae_9f99_90d3798d6426.slice";
        assert_eq!(classify(pod), CgroupKind::Pod { uid: uid.into() });
        assert_eq!(
            classify(&format!("{pod}/cri-containerd-{ID}.scope")),
            container(uid, Runtime::Containerd)
        );
        assert_eq!(
            classify(&format!("{pod}/crio-{ID}.scope")),
            container(uid, Runtime::CriO)
        );
        assert_eq!(
            classify(&format!("{pod}/crio-{ID}")),
            container(uid, Runtime::CriO)
        );
        assert_eq!(
            classify(&format!("{pod}/docker-{ID}.scope")),
            container(uid, Runtime::Docker)
        );
        assert_eq!(
            classify(&format!("{pod}/crio-conmon-{ID}.scope")),
            CgroupKind::Skip
        );
        assert_eq!(
            classify(&format!("{pod}/crio-{ID}.scope/container")),
            CgroupKind::Skip
        );
        // Guaranteed pods have no QoS level.
        assert_eq!(
            classify("/kubepods.slice/kubepods-pod7a96c459_d529_44ae_9f99_90d3798d6426.slice"),
            CgroupKind::Pod { uid: uid.into() }
        );
        assert_eq!(classify("/kubepods.slice"), CgroupKind::Qos);
        assert_eq!(
            classify("/kubepods.slice/kubepods-besteffort.slice"),
            CgroupKind::Qos
        );
    }

    #[test]
    fn kind_prefix_and_nesting() {
        let path = format!(
            "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod0a8863810b43d4d891fab0af80e28e4c.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            classify(&path),
            container("0a8863810b43d4d891fab0af80e28e4c", Runtime::Containerd)
        );
        assert_eq!(
            classify("/kubelet.slice/kubelet-kubepods.slice"),
            CgroupKind::Qos
        );
    }

    #[test]
    fn cgroupfs_driver_layouts() {
        let uid = "2c9f8a79-5391-454b-88cb-86190881cb96";
        assert_eq!(
            classify(&format!("/kubepods/burstable/pod{uid}")),
            CgroupKind::Pod { uid: uid.into() }
        );
        assert_eq!(
            classify(&format!("/kubepods/pod{uid}/{ID}")),
            container(uid, Runtime::Unknown)
        );
        assert_eq!(
            classify(&format!("/kubepods/besteffort/pod{uid}/crio-{ID}")),
            container(uid, Runtime::CriO)
        );
        assert_eq!(classify("/kubepods/besteffort"), CgroupKind::Qos);
        assert_eq!(classify("/kubepods"), CgroupKind::Qos);
        // A `pod<uid>` that is not under kubepods is just a cgroup.
        assert_eq!(classify(&format!("/other/pod{uid}")), CgroupKind::Raw);
    }

    #[test]
    fn literal_slice_names() {
        let path = format!("/system.slice/kubepods-besteffort-pod7a96c459_d529_44ae_9f99_90d3798d6426.slice:cri-containerd:{ID}");
        assert_eq!(
            classify(&path),
            container("7a96c459-d529-44ae-9f99-90d3798d6426", Runtime::Containerd)
        );
    }

    #[test]
    fn raw_and_skipped() {
        assert_eq!(classify("/"), CgroupKind::Root);
        assert_eq!(classify("/system.slice/kubelet.service"), CgroupKind::Raw);
        assert_eq!(standalone_container_id(&format!("/docker/{ID}")), Some(ID));
        assert_eq!(
            standalone_container_id(&format!("/system.slice/docker-{ID}.scope")),
            Some(ID)
        );
        assert_eq!(
            standalone_container_id(&format!("/libpod_parent/libpod-{ID}")),
            Some(ID)
        );
        assert_eq!(
            standalone_container_id(&format!("/machine.slice/libpod-{ID}.scope")),
            Some(ID)
        );
        assert_eq!(
            standalone_container_id(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        assert_eq!(standalone_container_id("/system.slice/sshd.service"), None);
        assert_eq!(classify(&format!("/docker/{ID}")), CgroupKind::Raw);
        assert_eq!(
            classify(&format!("/system.slice/run-containerd-io.containerd.runtime.v1.linux-k8s.io-{ID}-rootfs.mount")),
            CgroupKind::Skip
        );
    }
}
