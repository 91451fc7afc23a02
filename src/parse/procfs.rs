//! Host-level procfs files read on cold paths: `/proc/self/mountinfo`, `/proc/meminfo`,
//! `/proc/cpuinfo`. Line parsing of mountinfo and meminfo is delegated to `procfs-core`
//! (well-kept, and these files are read at start-up or once per scrape, not per container).

use std::path::PathBuf;

use procfs_core::FromBufRead;

use super::ParseError;

/// One cgroup filesystem mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// The cgroup this mount shows at its mount point (mountinfo's root field): `/` for a
    /// whole hierarchy, a cgroup path for a container's view, `/..`-prefixed from inside a
    /// cgroup namespace that does not contain it.
    pub root: PathBuf,
    /// `None` for cgroup2; for v1 the controllers in the super options (`cpu`, `cpuacct`, ...)
    /// or the `name=` of a named hierarchy (`name=systemd`).
    pub controllers: Option<Vec<String>>,
}

const V1_CONTROLLERS: [&str; 13] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
];

pub fn cgroup_mounts(mountinfo: &[u8]) -> Result<Vec<CgroupMount>, ParseError> {
    let infos = procfs_core::process::MountInfos::from_buf_read(mountinfo).map_err(|_| {
        ParseError::BadLine {
            line: 0,
            reason: "mountinfo line not understood",
        }
    })?;
    let mut out = Vec::new();
    for info in infos.iter() {
        match info.fs_type.as_str() {
            "cgroup2" => out.push(CgroupMount {
                mount_point: info.mount_point.clone(),
                root: PathBuf::from(&info.root),
                controllers: None,
            }),
            "cgroup" => {
                let mut controllers: Vec<String> = info
                    .super_options
                    .iter()
                    .filter_map(|(k, v)| match (k.as_str(), v) {
                        ("name", Some(name)) => Some(format!("name={name}")),
                        (k, None) if V1_CONTROLLERS.contains(&k) => Some(k.to_owned()),
                        _ => None,
                    })
                    .collect();
                controllers.sort();
                out.push(CgroupMount {
                    mount_point: info.mount_point.clone(),
                    root: PathBuf::from(&info.root),
                    controllers: Some(controllers),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A filesystem whose usage cAdvisor reports on the root row, with its `device` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// The block device (`/dev/vda1`); a tmpfs by its mount point; an overlay as
    /// `overlay_<major>-<minor>`, as cAdvisor names them.
    pub device: String,
    pub mount_point: PathBuf,
    pub major: u32,
    pub minor: u32,
}

/// Filesystem types cAdvisor reports usage for (its v0.49 list).
fn reported_fs_type(fs_type: &str) -> bool {
    matches!(
        fs_type,
        "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "zfs" | "overlay" | "tmpfs"
    ) || fs_type.starts_with("nfs")
}

/// The filesystems of a mountinfo that cAdvisor reports, each once: a device mounted in several
/// places (bind mounts) counts at its first mount point; every tmpfs and overlay is its own.
pub fn filesystems(mountinfo: &[u8]) -> Result<Vec<Filesystem>, ParseError> {
    let infos = procfs_core::process::MountInfos::from_buf_read(mountinfo).map_err(|_| {
        ParseError::BadLine {
            line: 0,
            reason: "mountinfo line not understood",
        }
    })?;
    let mut out: Vec<Filesystem> = Vec::new();
    for info in infos.iter().filter(|i| reported_fs_type(&i.fs_type)) {
        let Some((major, minor)) = info
            .majmin
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        else {
            continue;
        };
        let device = match info.fs_type.as_str() {
            "tmpfs" => info.mount_point.to_string_lossy().into_owned(),
            "overlay" => format!("overlay_{major}-{minor}"),
            _ => info.mount_source.clone().unwrap_or_default(),
        };
        if device.is_empty() || out.iter().any(|f| f.device == device) {
            continue;
        }
        out.push(Filesystem {
            device,
            mount_point: info.mount_point.clone(),
            major,
            minor,
        });
    }
    Ok(out)
}

/// The writable layer of a container: the `upperdir` of the overlay mounted on `/` in the
/// mount table of one of its processes (`/proc/<pid>/mountinfo`, whose paths are relative to
/// that process's root). The last mount on `/` is the one the process sees. None when its root
/// is not an overlay (containerd's own snapshotters are, but the kubelet's cAdvisor reports no
/// layer for them; the caller decides by runtime).
pub fn root_overlay_upperdir(mountinfo: &[u8]) -> Result<Option<PathBuf>, ParseError> {
    let infos = procfs_core::process::MountInfos::from_buf_read(mountinfo).map_err(|_| {
        ParseError::BadLine {
            line: 0,
            reason: "mountinfo line not understood",
        }
    })?;
    let root = infos
        .iter()
        .rev()
        .find(|i| i.mount_point.as_os_str() == "/");
    Ok(root
        .filter(|i| i.fs_type == "overlay")
        .and_then(|i| i.super_options.get("upperdir").cloned().flatten())
        .map(PathBuf::from))
}

/// `/proc/diskstats`, one entry per device line.
pub fn diskstats(bytes: &[u8]) -> Result<Vec<procfs_core::DiskStat>, ParseError> {
    procfs_core::DiskStats::from_buf_read(bytes)
        .map(|d| d.0)
        .map_err(|_| ParseError::BadLine {
            line: 0,
            reason: "diskstats line not understood",
        })
}

/// `MemTotal` and `SwapTotal` in bytes.
///
/// Hand-written rather than procfs-core's `Meminfo`, which the fuzzer (fuzz/, target `procfs`)
/// made panic within seconds: it multiplies a `kB` value by 1024 unchecked (overflow) and
/// slices lines at byte offsets inside multi-byte characters. Two lines of one file do not need
/// a general parser.
pub fn meminfo_totals(bytes: &[u8]) -> Result<(u64, u64), ParseError> {
    let mut mem_total = None;
    let mut swap_total = None;
    for (index, line) in super::lines(bytes).enumerate() {
        let slot = if let Some(rest) = line.strip_prefix(b"MemTotal:") {
            (&mut mem_total, rest)
        } else if let Some(rest) = line.strip_prefix(b"SwapTotal:") {
            (&mut swap_total, rest)
        } else {
            continue;
        };
        let bad = |reason| ParseError::BadLine {
            line: index + 1,
            reason,
        };
        let rest = super::trim(slot.1);
        let (number, unit) = match rest.iter().position(|&b| b == b' ') {
            Some(space) => (&rest[..space], super::trim(&rest[space..])),
            None => (rest, &b""[..]),
        };
        let value = super::parse_u64(number)?;
        let bytes = match unit {
            b"kB" => value
                .checked_mul(1024)
                .ok_or(bad("meminfo: value too large"))?,
            b"" => value,
            _ => return Err(bad("meminfo: unit is not kB")),
        };
        *slot.0 = Some(bytes);
    }
    match (mem_total, swap_total) {
        (Some(mem), swap) => Ok((mem, swap.unwrap_or(0))),
        (None, _) => Err(ParseError::BadLine {
            line: 0,
            reason: "meminfo: no MemTotal line",
        }),
    }
}

/// What `/proc/cpuinfo` says of the CPUs: logical CPUs (`processor` lines), physical cores
/// (distinct `physical id` + `core id` pairs) and sockets (distinct `physical id`s), as cAdvisor
/// counts them. Where the file has no topology lines (arm64, some VMs), every logical CPU is a
/// core and there is one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    pub logical: u64,
    pub cores: u64,
    pub sockets: u64,
}

pub fn cpu_topology(bytes: &[u8]) -> Result<CpuTopology, ParseError> {
    let mut logical = 0;
    let mut packages: Vec<u64> = Vec::new();
    let mut cores: Vec<(u64, u64)> = Vec::new();
    let (mut package, mut core) = (None, None);
    let mut flush = |package: &mut Option<u64>, core: &mut Option<u64>| {
        if let (Some(p), Some(c)) = (package.take(), core.take()) {
            if !packages.contains(&p) {
                packages.push(p);
            }
            if !cores.contains(&(p, c)) {
                cores.push((p, c));
            }
        }
    };
    for line in bytes.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            // A blank line ends one processor's block.
            flush(&mut package, &mut core);
            continue;
        };
        let key = super::trim(&line[..colon]);
        let value = || super::parse_u64(super::trim(&line[colon + 1..])).ok();
        match key {
            b"processor" => {
                flush(&mut package, &mut core);
                logical += 1;
            }
            b"physical id" => package = value(),
            b"core id" => core = value(),
            _ => {}
        }
    }
    flush(&mut package, &mut core);
    if logical == 0 {
        return Err(ParseError::Empty);
    }
    if cores.is_empty() {
        return Ok(CpuTopology {
            logical,
            cores: logical,
            sockets: 1,
        });
    }
    Ok(CpuTopology {
        logical,
        cores: cores.len() as u64,
        sockets: packages.len() as u64,
    })
}

/// The soft `Max open files` of `/proc/<pid>/limits`; `unlimited` is -1, as cAdvisor writes it.
pub fn limits_max_open_files(bytes: &[u8]) -> Result<f64, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::BadLine {
        line: 0,
        reason: "limits is not UTF-8",
    })?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .ok_or(ParseError::Empty)?;
    match line.split_whitespace().next() {
        Some("unlimited") => Ok(-1.0),
        Some(soft) => soft
            .parse::<u64>()
            .map(|v| v as f64)
            .map_err(|_| ParseError::BadLine {
                line: 0,
                reason: "Max open files: soft limit not a number",
            }),
        None => Err(ParseError::Empty),
    }
}

/// The state letter of `/proc/<tid>/stat` (the field after the command, which may itself hold
/// spaces and parentheses: the last `)` ends it).
pub fn stat_state(bytes: &[u8]) -> Result<u8, ParseError> {
    let (_, after) = stat_split(bytes).ok_or(ParseError::BadLine {
        line: 1,
        reason: "stat: no `(command)`",
    })?;
    after
        .get(1)
        .copied()
        .filter(u8::is_ascii_alphabetic)
        .ok_or(ParseError::BadLine {
            line: 1,
            reason: "stat: no state after the command",
        })
}

/// A `/proc/<pid>/stat` line split around its command: the command runs from the first `(` to
/// the last `)` (a command may itself hold both), and the fields follow the last `)`.
fn stat_split(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let open = bytes.iter().position(|&b| b == b'(')?;
    let close = bytes.iter().rposition(|&b| b == b')')?;
    Some((bytes.get(open + 1..close)?, bytes.get(close + 1..)?))
}

/// The command and the parent PID of `/proc/<pid>/stat`: the command runs from the first `(`
/// to the last `)` (it may itself hold both), the parent is the second field after it.
pub fn stat_comm_ppid(bytes: &[u8]) -> Option<(&[u8], u32)> {
    let (comm, after) = stat_split(bytes)?;
    let ppid = after
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(1)?;
    let ppid = std::str::from_utf8(ppid).ok()?.parse().ok()?;
    Some((comm, ppid))
}

/// `PRETTY_NAME` of an os-release file (quotes removed), as cAdvisor's `osVersion`.
pub fn os_release_pretty_name(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let value = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(
        value
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_comm_ppid_takes_the_last_parenthesis() {
        let kthreadd = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2 0 0\n";
        assert_eq!(stat_comm_ppid(kthreadd), Some((&b"kthreadd"[..], 0)));
        let odd = b"4242 (a) b (c) R 17 4242 4242 0 -1 4194304\n";
        assert_eq!(stat_comm_ppid(odd), Some((&b"a) b (c"[..], 17)));
        assert_eq!(stat_comm_ppid(b"7 (sh) S"), None);
        assert_eq!(stat_comm_ppid(b"7 sh S 1"), None);
        assert_eq!(stat_comm_ppid(b"7 (sh) S x 1"), None);
    }

    #[test]
    fn meminfo_totals_reject_what_they_cannot_hold() {
        let ok = b"MemTotal:       24683656 kB\nMemFree:         2303444 kB\nSwapTotal:       1048572 kB\n";
        assert_eq!(
            meminfo_totals(ok).expect("meminfo"),
            (24_683_656 * 1024, 1_048_572 * 1024)
        );
        assert_eq!(
            meminfo_totals(b"MemTotal: 1024 kB\n").expect("no swap line"),
            (1024 * 1024, 0)
        );
        // Found by the fuzzer in procfs-core's parser: a kB value that overflows in bytes,
        // and a multi-byte character where a field is sliced.
        assert!(meminfo_totals(b"MemTotal: 23034444444444444452 kB\n").is_err());
        assert!(meminfo_totals(b"MemTotal: 18014398509481984 kB\n").is_err());
        assert!(meminfo_totals("MemTotal: 1 k\u{00a3}\nP\u{00a3}: 3\n".as_bytes()).is_err());
        assert!(meminfo_totals(b"MemFree: 1 kB\n").is_err());
    }

    #[test]
    fn cpuinfo_counts_processors_cores_and_sockets() {
        let block = |cpu: u32, package: u32, core: u32| {
            format!("processor\t: {cpu}\nmodel name\t: x\nphysical id\t: {package}\ncore id\t\t: {core}\n\n")
        };
        // Two sockets, two cores each, two threads per core.
        let text: String = (0..8)
            .map(|cpu| block(cpu, cpu / 4, (cpu / 2) % 2))
            .collect();
        assert_eq!(
            cpu_topology(text.as_bytes()),
            Ok(CpuTopology {
                logical: 8,
                cores: 4,
                sockets: 2
            })
        );
        // No topology lines (arm64): a core per CPU, one socket.
        let text = b"processor\t: 0\nBogoMIPS\t: 50\n\nprocessor\t: 1\nprocessors: 9\n";
        assert_eq!(
            cpu_topology(text),
            Ok(CpuTopology {
                logical: 2,
                cores: 2,
                sockets: 1
            })
        );
        assert!(cpu_topology(b"").is_err());
    }

    #[test]
    fn filesystems_are_named_as_cadvisor_names_them_and_listed_once() {
        let mountinfo = b"\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4k\n\
24 23 0:25 / /dev/shm rw shared:3 - tmpfs tmpfs rw\n\
25 22 0:26 / /run rw shared:4 - tmpfs tmpfs rw,size=1g\n\
26 22 254:1 /var/lib/kubelet /var/lib/kubelet rw shared:1 - ext4 /dev/vda1 rw\n\
27 22 0:100 / /run/containerd/x/rootfs rw - overlay overlay rw,lowerdir=a,upperdir=b\n\
28 22 0:27 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let fs = filesystems(mountinfo).expect("parse");
        let devices: Vec<&str> = fs.iter().map(|f| f.device.as_str()).collect();
        assert_eq!(devices, ["/dev/vda1", "/dev/shm", "/run", "overlay_0-100"]);
        assert_eq!((fs[0].major, fs[0].minor), (254, 1));
        assert_eq!(fs[0].mount_point, PathBuf::from("/"));
    }

    #[test]
    fn a_containers_writable_layer_is_the_upperdir_of_its_root_overlay() {
        // A Docker container's mount table as its own process sees it (real shape, trimmed).
        let docker = b"\
1795 1521 0:223 / / rw,relatime master:520 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/AB:/var/lib/docker/overlay2/l/CD,upperdir=/var/lib/docker/overlay2/3f9e/diff,workdir=/var/lib/docker/overlay2/3f9e/work\n\
1796 1795 0:226 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n\
1797 1795 0:227 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755\n\
1805 1795 254:1 /var/lib/docker/containers/3f9e/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n";
        assert_eq!(
            root_overlay_upperdir(docker).expect("parse"),
            Some(PathBuf::from("/var/lib/docker/overlay2/3f9e/diff"))
        );
        // Root not an overlay (a host process), and a later mount on / hiding an overlay.
        let host = b"22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n";
        assert_eq!(root_overlay_upperdir(host).expect("parse"), None);
        let hidden = b"\
30 1 0:50 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n\
31 30 254:1 / / rw - ext4 /dev/vda1 rw\n";
        assert_eq!(root_overlay_upperdir(hidden).expect("parse"), None);
    }

    #[test]
    fn diskstats_lines_are_read() {
        let text = b" 254       0 vda 5027 1187 1391530 2862 25766 27150 5249712 69823 0 57864 73345 0 0 0 0 2193 661\n 254       1 vda1 4900 1187 1385010 2800 25700 27150 5249700 69800 0 57800 72600 0 0 0 0 0 0\n";
        let disks = diskstats(text).expect("parse");
        assert_eq!(disks.len(), 2);
        assert_eq!(
            (disks[1].major, disks[1].minor, disks[1].sectors_read),
            (254, 1, 1385010)
        );
        assert_eq!(disks[1].weighted_time_in_progress, 72600);
    }

    #[test]
    fn the_state_follows_the_last_parenthesis() {
        assert_eq!(stat_state(b"42 (sleep) S 1 42 42 0 -1"), Ok(b'S'));
        assert_eq!(stat_state(b"43 (a) b) (c) R 1 43"), Ok(b'R'));
        assert!(stat_state(b"44 (x)").is_err());
        assert!(stat_state(b"garbage").is_err());
    }

    #[test]
    fn max_open_files_is_the_soft_limit() {
        let limits =
            b"Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1048576              1048576              files     \n\
Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(limits_max_open_files(limits), Ok(1048576.0));
        let unlimited =
            b"Max open files            unlimited            unlimited            files\n";
        assert_eq!(limits_max_open_files(unlimited), Ok(-1.0));
        assert!(limits_max_open_files(b"Max cpu time 1 1 s\n").is_err());
    }

    #[test]
    fn os_release_pretty_name_is_unquoted() {
        let text = b"NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            os_release_pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_release_pretty_name(b"ID=x\n"), None);
    }

    #[test]
    fn meminfo_is_bytes() {
        // A real /proc/meminfo (kernel 6.18, this project's dev VM): MemTotal 24621540 kB.
        let text = include_bytes!("../../tests/fixtures/proc-node/meminfo");
        let (mem, swap) = meminfo_totals(text).expect("meminfo");
        let kb = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.lines().find(|l| l.starts_with("MemTotal:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("MemTotal line");
        assert_eq!(mem, kb * 1024);
        assert_eq!(swap, 0);
        assert!(meminfo_totals(b"MemTotal: x kB\n").is_err());
    }
}
