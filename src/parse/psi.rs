//! Pressure stall information: `cpu.pressure`, `memory.pressure`, `io.pressure`.

use super::{parse_u64, ParseError};

/// Cumulative stall time in microseconds. `full` is absent for CPU on older kernels.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    pub some_total_usec: Option<u64>,
    pub full_total_usec: Option<u64>,
}

pub fn pressure(bytes: &[u8]) -> Result<Pressure, ParseError> {
    let mut p = Pressure::default();
    for (index, line) in super::lines(bytes).enumerate() {
        let mut fields = line
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty());
        let Some(kind) = fields.next() else { continue };
        let total = fields
            .find_map(|f| f.strip_prefix(b"total="))
            .ok_or(ParseError::BadLine {
                line: index + 1,
                reason: "no `total=` field",
            })?;
        let total = parse_u64(total)?;
        match kind {
            b"some" => p.some_total_usec = Some(total),
            b"full" => p.full_total_usec = Some(total),
            _ => {
                return Err(ParseError::BadLine {
                    line: index + 1,
                    reason: "expected `some` or `full`",
                })
            }
        }
    }
    if p.some_total_usec.is_none() && p.full_total_usec.is_none() {
        return Err(ParseError::Empty);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full() {
        let p = pressure(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=45\n")
            .expect("parse");
        assert_eq!(p.some_total_usec, Some(123));
        assert_eq!(p.full_total_usec, Some(45));
        assert!(pressure(b"").is_err());
    }
}
