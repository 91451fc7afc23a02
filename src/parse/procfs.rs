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

/// Logical CPUs: the `processor` lines of `/proc/cpuinfo`.
pub fn cpuinfo_processors(bytes: &[u8]) -> Result<u64, ParseError> {
    let count = bytes
        .split(|&b| b == b'\n')
        .filter(|line| {
            line.starts_with(b"processor")
                && line[9..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|&b| b == b':')
        })
        .count() as u64;
    if count == 0 {
        Err(ParseError::Empty)
    } else {
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_counts_processor_lines() {
        let text = b"processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nprocessors: 9\n";
        assert_eq!(cpuinfo_processors(text), Ok(2));
        assert!(cpuinfo_processors(b"").is_err());
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
