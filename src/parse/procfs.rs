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

/// `MemTotal` and `SwapTotal` in bytes.
pub fn meminfo_totals(bytes: &[u8]) -> Result<(u64, u64), ParseError> {
    let info = procfs_core::Meminfo::from_buf_read(bytes).map_err(|_| ParseError::BadLine {
        line: 0,
        reason: "meminfo not understood",
    })?;
    Ok((info.mem_total, info.swap_total))
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
