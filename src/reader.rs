//! The one place that reads files on the scrape path. It reuses one buffer and one path buffer
//! for every read, and sorts failures into "the file is not there", "the cgroup or process is
//! gone" and real I/O errors, because the collectors treat those three very differently.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// ENOENT: the file does not exist (controller off, old kernel) or its cgroup was removed.
    #[error("{0}: no such file")]
    Missing(PathBuf),
    /// ENODEV/ESRCH: the cgroup or process went away between open and read.
    #[error("{0}: gone while reading")]
    Vanished(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ReadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Missing(p) | ReadError::Vanished(p) | ReadError::Io { path: p, .. } => p,
        }
    }
}

/// Reads whole small files into a reused buffer.
pub struct Reader {
    buf: Vec<u8>,
    path: PathBuf,
    /// Files opened since the last [`Reader::take_opens`], for self-metrics.
    opens: u64,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            buf: Vec::with_capacity(16 * 1024),
            path: PathBuf::with_capacity(512),
            opens: 0,
        }
    }
}

fn classify(path: &Path, e: std::io::Error) -> ReadError {
    const ENODEV: i32 = 19;
    const ESRCH: i32 = 3;
    match (e.kind(), e.raw_os_error()) {
        (ErrorKind::NotFound, _) => ReadError::Missing(path.to_path_buf()),
        (_, Some(ENODEV | ESRCH)) => ReadError::Vanished(path.to_path_buf()),
        _ => ReadError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

impl Reader {
    /// Reads `dir/name`. The returned slice lives until the next read.
    pub fn read(&mut self, dir: &Path, name: &str) -> Result<&[u8], ReadError> {
        self.path.as_mut_os_string().clear();
        self.path.push(dir);
        self.path.push(name);
        self.buf.clear();
        self.opens += 1;
        let mut file = File::open(&self.path).map_err(|e| classify(&self.path, e))?;
        file.read_to_end(&mut self.buf)
            .map_err(|e| classify(&self.path, e))?;
        Ok(&self.buf)
    }

    /// The path of the last read, for error messages.
    pub fn last_path(&self) -> &Path {
        &self.path
    }

    pub fn take_opens(&mut self) -> u64 {
        std::mem::take(&mut self.opens)
    }
}
