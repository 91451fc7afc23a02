//! CPU files: v2 `cpu.stat`/`cpu.max`/`cpu.weight`, v1 `cpu.stat`/`cpuacct.stat`.

use super::{for_each_flat_keyed, parse_u64, trim, ParseError};

/// `cpu.stat`. v1 has only the CFS keys (`throttled_time` in ns); v2 adds usage in µs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuStat {
    pub usage_usec: Option<u64>,
    pub user_usec: Option<u64>,
    pub system_usec: Option<u64>,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    /// Normalised to nanoseconds whichever version wrote it.
    pub throttled_ns: Option<u64>,
    pub nr_bursts: Option<u64>,
    pub burst_usec: Option<u64>,
}

pub fn cpu_stat(bytes: &[u8]) -> Result<CpuStat, ParseError> {
    let mut s = CpuStat::default();
    for_each_flat_keyed(bytes, |k, v| match k {
        b"usage_usec" => s.usage_usec = Some(v),
        b"user_usec" => s.user_usec = Some(v),
        b"system_usec" => s.system_usec = Some(v),
        b"nr_periods" => s.nr_periods = Some(v),
        b"nr_throttled" => s.nr_throttled = Some(v),
        b"throttled_usec" => s.throttled_ns = Some(v.saturating_mul(1000)),
        b"throttled_time" => s.throttled_ns = Some(v),
        b"nr_bursts" => s.nr_bursts = Some(v),
        b"burst_usec" => s.burst_usec = Some(v),
        _ => {}
    })?;
    Ok(s)
}

/// v1 `cpuacct.stat`: `user` and `system` in USER_HZ ticks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuacctStat {
    pub user_ticks: u64,
    pub system_ticks: u64,
}

pub fn cpuacct_stat(bytes: &[u8]) -> Result<CpuacctStat, ParseError> {
    let mut s = CpuacctStat::default();
    let (mut user, mut system) = (false, false);
    for_each_flat_keyed(bytes, |k, v| match k {
        b"user" => {
            s.user_ticks = v;
            user = true;
        }
        b"system" => {
            s.system_ticks = v;
            system = true;
        }
        _ => {}
    })?;
    if user && system {
        Ok(s)
    } else {
        Err(ParseError::BadLine {
            line: 0,
            reason: "missing `user` or `system`",
        })
    }
}

/// v2 `cpu.max`: `<quota|max> <period>`. Quota `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    pub quota_usec: Option<u64>,
    pub period_usec: u64,
}

pub fn cpu_max(bytes: &[u8]) -> Result<CpuMax, ParseError> {
    let mut fields = trim(bytes)
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty());
    let quota = fields.next().ok_or(ParseError::Empty)?;
    let period = fields.next().ok_or(ParseError::BadLine {
        line: 1,
        reason: "expected `<quota> <period>`",
    })?;
    let quota_usec = if quota == b"max" {
        None
    } else {
        Some(parse_u64(quota)?)
    };
    Ok(CpuMax {
        quota_usec,
        period_usec: parse_u64(period)?,
    })
}

/// cAdvisor reports v2 `cpu.weight` converted back to v1 shares, so dashboards that divide
/// shares by 1024 keep working: `2 + ((weight - 1) * 262142) / 9999`.
pub fn weight_to_shares(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    2 + (weight.saturating_sub(1).saturating_mul(262_142)) / 9999
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_and_v1_throttling_agree_on_units() {
        let v2 = cpu_stat(b"usage_usec 10\nnr_periods 3\nnr_throttled 1\nthrottled_usec 5\n")
            .expect("v2");
        let v1 = cpu_stat(b"nr_periods 3\nnr_throttled 1\nthrottled_time 5000\n").expect("v1");
        assert_eq!(v2.throttled_ns, Some(5000));
        assert_eq!(v1.throttled_ns, Some(5000));
        assert_eq!(v1.usage_usec, None);
    }

    #[test]
    fn cpu_max_forms() {
        assert_eq!(
            cpu_max(b"max 100000\n"),
            Ok(CpuMax {
                quota_usec: None,
                period_usec: 100000
            })
        );
        assert_eq!(
            cpu_max(b"50000 100000\n").map(|m| m.quota_usec),
            Ok(Some(50000))
        );
        assert!(cpu_max(b"max\n").is_err());
    }

    #[test]
    fn weight_conversion_matches_cadvisor() {
        // weight 100 is the v2 default and corresponds to the v1 default of 1024 shares.
        assert_eq!(weight_to_shares(100), 2597);
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10000), 262144);
    }
}
