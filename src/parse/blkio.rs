//! Block IO: v1 `blkio.throttle.io_service{_bytes,d}[_recursive]` and v2 `io.stat`.

use super::{parse_u64, ParseError};

/// Per-device totals in cAdvisor's terms (bytes and operations, read and write).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u32,
    pub minor: u32,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
    /// v1 only: the other rows of `io_service_bytes` (`Discard` since Linux 4.19), which
    /// cAdvisor reports in `container_blkio_device_usage_total`.
    pub sync_bytes: Option<u64>,
    pub async_bytes: Option<u64>,
    pub discard_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
}

/// Which v1 file is being merged: they share one format but count different things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkioKind {
    Bytes,
    Ops,
}

/// Index of the device's entry in `out`, added if new. Linear search: a container touches a
/// handful of devices, so a map would cost more than it saves.
fn device_slot(out: &mut Vec<DeviceIo>, major: u32, minor: u32) -> usize {
    match out
        .iter()
        .position(|d| d.major == major && d.minor == minor)
    {
        Some(i) => i,
        None => {
            out.push(DeviceIo {
                major,
                minor,
                ..DeviceIo::default()
            });
            out.len() - 1
        }
    }
}

fn major_minor(token: &[u8]) -> Option<(u32, u32)> {
    let colon = token.iter().position(|&b| b == b':')?;
    let major = parse_u64(&token[..colon]).ok()?;
    let minor = parse_u64(&token[colon + 1..]).ok()?;
    Some((u32::try_from(major).ok()?, u32::try_from(minor).ok()?))
}

/// Merges a v1 blkio file (`8:0 Read 4096` lines, a closing `Total N`) into `out`.
/// Operations are kept as cAdvisor keeps them: `Read` and `Write` of both files, and the other
/// byte rows for `container_blkio_device_usage_total`.
pub fn blkio_v1(bytes: &[u8], kind: BlkioKind, out: &mut Vec<DeviceIo>) -> Result<(), ParseError> {
    for (index, line) in super::lines(bytes).enumerate() {
        let mut fields = line
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty());
        let Some(first) = fields.next() else { continue };
        if first == b"Total" {
            continue;
        }
        let bad = ParseError::BadLine {
            line: index + 1,
            reason: "expected `MAJ:MIN Op value`",
        };
        let (major, minor) = major_minor(first).ok_or(bad.clone())?;
        let op = fields.next().ok_or(bad.clone())?;
        let value = fields.next().and_then(|v| parse_u64(v).ok()).ok_or(bad)?;
        let i = device_slot(out, major, minor);
        let Some(slot) = out.get_mut(i) else { continue };
        match (kind, op) {
            (BlkioKind::Bytes, b"Read") => slot.read_bytes = value,
            (BlkioKind::Bytes, b"Write") => slot.write_bytes = value,
            (BlkioKind::Bytes, b"Sync") => slot.sync_bytes = Some(value),
            (BlkioKind::Bytes, b"Async") => slot.async_bytes = Some(value),
            (BlkioKind::Bytes, b"Discard") => slot.discard_bytes = Some(value),
            (BlkioKind::Bytes, b"Total") => slot.total_bytes = Some(value),
            (BlkioKind::Ops, b"Read") => slot.reads = value,
            (BlkioKind::Ops, b"Write") => slot.writes = value,
            _ => {}
        }
    }
    Ok(())
}

/// Parses v2 `io.stat` into `out`.
///
/// Some kernels print devices without stats as bare `MAJ:MIN` tokens with no newline, so the
/// next device's line can start with several tokens (`7:7 7:6 259:0 rbytes=...`). The stats
/// belong to the last token before the first `key=value`; trailing bare tokens are ignored.
pub fn io_stat(bytes: &[u8], out: &mut Vec<DeviceIo>) -> Result<(), ParseError> {
    for (index, line) in super::lines(bytes).enumerate() {
        let mut device = None;
        let mut slot_index = None;
        for token in line
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty())
        {
            match token.iter().position(|&b| b == b'=') {
                None => {
                    device = Some(major_minor(token).ok_or(ParseError::BadLine {
                        line: index + 1,
                        reason: "expected `MAJ:MIN` or `key=value`",
                    })?);
                    slot_index = None;
                }
                Some(eq) => {
                    let Some((major, minor)) = device else {
                        return Err(ParseError::BadLine {
                            line: index + 1,
                            reason: "`key=value` before any device",
                        });
                    };
                    let i = *slot_index.get_or_insert_with(|| device_slot(out, major, minor));
                    let value = parse_u64(&token[eq + 1..]).map_err(|_| ParseError::BadLine {
                        line: index + 1,
                        reason: "value is not an unsigned integer",
                    })?;
                    if let Some(slot) = out.get_mut(i) {
                        match &token[..eq] {
                            b"rbytes" => slot.read_bytes = value,
                            b"wbytes" => slot.write_bytes = value,
                            b"rios" => slot.reads = value,
                            b"wios" => slot.writes = value,
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_merges_bytes_and_ops() {
        let mut out = Vec::new();
        blkio_v1(
            b"8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 8192\n8:0 Async 4096\n8:0 Total 12288\nTotal 12288\n",
            BlkioKind::Bytes,
            &mut out,
        )
        .expect("bytes");
        blkio_v1(
            b"8:0 Read 1\n8:0 Write 2\nTotal 3\n",
            BlkioKind::Ops,
            &mut out,
        )
        .expect("ops");
        assert_eq!(
            out,
            vec![DeviceIo {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 8192,
                reads: 1,
                writes: 2,
                sync_bytes: Some(8192),
                async_bytes: Some(4096),
                discard_bytes: None,
                total_bytes: Some(12288),
            }]
        );
    }

    #[test]
    fn io_stat_joined_tokens_go_to_last_device() {
        let mut out = Vec::new();
        io_stat(
            b"7:7 7:6 259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n253:0",
            &mut out,
        )
        .expect("parse");
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].major, out[0].minor, out[0].write_bytes),
            (259, 0, 20)
        );
    }

    #[test]
    fn io_stat_rejects_orphan_values() {
        assert!(io_stat(b"rbytes=1\n", &mut Vec::new()).is_err());
    }
}
