//! Block device names for the `device` label: `major:minor` → `/dev/<name>` from
//! `/sys/block/*/dev`. Loaded lazily and reloaded (at most once a minute) when an unknown
//! device shows up, so hot-plugged disks get their names without a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RELOAD_AFTER: Duration = Duration::from_secs(60);

pub struct DeviceNames {
    sys_root: PathBuf,
    names: HashMap<(u32, u32), Arc<str>>,
    loaded_at: Option<Instant>,
    unknown: Arc<str>,
}

impl DeviceNames {
    pub fn new(sys_root: PathBuf) -> DeviceNames {
        DeviceNames {
            sys_root,
            names: HashMap::new(),
            loaded_at: None,
            unknown: Arc::from(""),
        }
    }

    /// The `device` label for a device number; empty when sysfs does not know it (cAdvisor
    /// does the same).
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
        Arc::clone(&self.unknown)
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
