//! `/proc/<pid>/net/dev`: per-interface counters of the network namespace that PID lives in.

use super::{parse_u64, ParseError};

/// The eight counters cAdvisor exports, in `/proc/net/dev` column order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Interfaces that cAdvisor never reports for a container: loopback, the host ends of veth
/// pairs, and the bridges Docker and nerdctl create.
pub fn is_ignored_interface(name: &[u8]) -> bool {
    const IGNORED: [&[u8]; 4] = [b"lo", b"veth", b"docker", b"nerdctl"];
    IGNORED
        .iter()
        .any(|p| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p))
}

/// Visits every interface line. The two header lines are skipped by shape (they have no `:`
/// before a number), so files without headers (some test data) parse too. The interface name
/// is split at the colon because long names run into the first counter (`veth1234:1000 ...`).
pub fn net_dev(
    bytes: &[u8],
    mut visit: impl FnMut(&[u8], InterfaceStats),
) -> Result<(), ParseError> {
    for (index, line) in super::lines(bytes).enumerate() {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = super::trim(&line[..colon]);
        if name.contains(&b'|') || name.is_empty() {
            continue; // header line
        }
        let mut values = [0u64; 16];
        let mut n = 0;
        for field in line[colon + 1..]
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty())
        {
            if n == values.len() {
                n += 1;
                break;
            }
            values[n] = parse_u64(field).map_err(|_| ParseError::BadLine {
                line: index + 1,
                reason: "counter is not an unsigned integer",
            })?;
            n += 1;
        }
        if n != 16 {
            return Err(ParseError::BadLine {
                line: index + 1,
                reason: "expected 16 counters",
            });
        }
        visit(
            name,
            InterfaceStats {
                rx_bytes: values[0],
                rx_packets: values[1],
                rx_errors: values[2],
                rx_dropped: values[3],
                tx_bytes: values[8],
                tx_packets: values[9],
                tx_errors: values[10],
                tx_dropped: values[11],
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_prefixes() {
        assert!(is_ignored_interface(b"lo"));
        assert!(is_ignored_interface(b"vethf345468"));
        assert!(is_ignored_interface(b"Docker0"));
        assert!(!is_ignored_interface(b"eth0"));
        assert!(!is_ignored_interface(b"cali123"));
    }

    #[test]
    fn short_line_is_an_error() {
        assert!(net_dev(b"eth0: 1 2 3\n", |_, _| {}).is_err());
    }
}
