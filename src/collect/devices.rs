//! Block device names for the `device` label: `major:minor` → `/dev/<name>` from
//! `/sys/block/*/dev` (whole disks, as cAdvisor names them), else from the `/sys/dev/block/M:m`
//! link (partitions and anything else sysfs knows), else `M:m` itself. Loaded lazily and
//! reloaded (at most once a minute) when an unknown device shows up, so hot-plugged disks get
//! their names without a restart.
//!
//! Every device gets a name of its own: cAdvisor labels a device it cannot name `""`, so two
//! such devices of one cgroup gave two series with identical labels, and Prometheus dropped
//! one sample as a duplicate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RELOAD_AFTER: Duration = Duration::from_secs(60);

/// A device's labels: its name and its numbers, rendered once.
#[derive(Debug, Clone)]
pub struct DeviceLabels {
    pub name: Arc<str>,
    pub major: Arc<str>,
    pub minor: Arc<str>,
}

pub struct DeviceNames {
    sys_root: PathBuf,
    names: HashMap<(u32, u32), Arc<str>>,
    numbers: HashMap<(u32, u32), (Arc<str>, Arc<str>)>,
    loaded_at: Option<Instant>,
}

impl DeviceNames {
    pub fn new(sys_root: PathBuf) -> DeviceNames {
        DeviceNames {
            sys_root,
            names: HashMap::new(),
            numbers: HashMap::new(),
            loaded_at: None,
        }
    }

    /// The `device`, `major` and `minor` labels of a device.
    pub fn labels(&mut self, major: u32, minor: u32) -> DeviceLabels {
        let name = self.name(major, minor);
        let (major, minor) = self
            .numbers
            .entry((major, minor))
            .or_insert_with(|| (Arc::from(major.to_string()), Arc::from(minor.to_string())))
            .clone();
        DeviceLabels { name, major, minor }
    }

    /// The `device` label for a device number: never empty, and unique per device.
    pub fn name(&mut self, major: u32, minor: u32) -> Arc<str> {
        if let Some(n) = self.names.get(&(major, minor)) {
            return Arc::clone(n);
        }
        let stale = self.loaded_at.is_none_or(|t| t.elapsed() >= RELOAD_AFTER);
        if stale {
            self.reload();
            if let Some(n) = self.names.get(&(major, minor)) {
                return Arc::clone(n);
            }
        }
        // Named (and kept until the next reload) even when sysfs does not know it, so an
        // unknown device costs one readlink a minute, not one per scrape.
        let number = format!("{major}:{minor}");
        let name: Arc<str> = match std::fs::read_link(self.sys_root.join("dev/block").join(&number))
        {
            Ok(link) => match link.file_name().and_then(|n| n.to_str()) {
                Some(n) if !n.is_empty() => Arc::from(format!("/dev/{n}")),
                _ => Arc::from(number),
            },
            Err(_) => Arc::from(number),
        };
        self.names.insert((major, minor), Arc::clone(&name));
        name
    }

    fn reload(&mut self) {
        self.loaded_at = Some(Instant::now());
        self.names.clear();
        let Ok(entries) = std::fs::read_dir(self.sys_root.join("block")) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(dev) = std::fs::read(entry.path().join("dev")) else {
                continue;
            };
            let text = crate::parse::trim(&dev);
            let Some(colon) = text.iter().position(|&b| b == b':') else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (
                crate::parse::parse_u64(&text[..colon]),
                crate::parse::parse_u64(&text[colon + 1..]),
            ) else {
                continue;
            };
            if let (Ok(major), Ok(minor)) = (u32::try_from(major), u32::try_from(minor)) {
                self.names
                    .insert((major, minor), Arc::from(format!("/dev/{name}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_gets_a_name_of_its_own() {
        let sys = tempfile::tempdir().expect("tmp");
        let disk = sys.path().join("block/vda");
        std::fs::create_dir_all(&disk).expect("mkdir");
        std::fs::write(disk.join("dev"), "254:0\n").expect("dev");
        // A partition: only under /sys/dev/block, as a link into the device tree.
        std::fs::create_dir_all(sys.path().join("dev/block")).expect("mkdir");
        std::os::unix::fs::symlink(
            "../../devices/virtual/block/vda/vda1",
            sys.path().join("dev/block/254:1"),
        )
        .expect("link");
        let mut names = DeviceNames::new(sys.path().to_path_buf());
        assert_eq!(&*names.name(254, 0), "/dev/vda");
        assert_eq!(&*names.name(254, 1), "/dev/vda1");
        // Unknown to sysfs: the number, so two such devices never share a label.
        assert_eq!(&*names.name(7, 3), "7:3");
        assert_eq!(&*names.name(7, 4), "7:4");
    }
}
