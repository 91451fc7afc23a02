//! A hand-written Prometheus text format 0.0.4 encoder.
//!
//! Why not the `prometheus` crate for container series: building its `MetricFamily` model
//! costs ~14.6 allocations and ~800 B per series (and `gather()` sorts), while this writer goes
//! straight from the snapshot into one reused `Vec<u8>` with no allocation per series. The
//! standard labels of each cgroup are rendered once, when the cgroup is discovered, and reused
//! by every scrape. `cargo bench --bench encode` prints the time and allocations per scrape.
//!
//! Samples carry no timestamps on purpose: the values are read at scrape time, and without
//! explicit timestamps Prometheus writes staleness markers, so a deleted container's series end
//! at once instead of lingering for the 5-minute lookback (cAdvisor's timestamps cause that).

use crate::labels::{escape, escape_label_value};
use hinted_deflate::LineHint;

/// Counter or gauge, as written on the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// Appends a HELP text with its two escapes.
fn escape_help(out: &mut Vec<u8>, value: &str) {
    escape(out, value.as_bytes(), |b| {
        Some(match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            _ => return None,
        })
    });
}

/// Appends a sample value the way Prometheus parses it: integers exactly, other finite values
/// in shortest round-trip form, and the special values by name.
pub fn write_value(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v.abs() < 9.007_199_254_740_992e15 && (v as i64) as f64 == v {
        // An integer (most values: bytes, counts); tested by converting there and back, not
        // with `fract()`, which is a libm call on the x86-64 baseline.
        let mut b = itoa::Buffer::new();
        out.extend_from_slice(b.format(v as i64).as_bytes());
    } else {
        let mut b = ryu::Buffer::new();
        out.extend_from_slice(b.format_finite(v).as_bytes());
    }
}

/// Writes the exposition into a reused buffer.
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
    /// Where each container series line's parts are, for the gzip writer; `None`: not kept.
    pub hints: Option<Vec<LineHint>>,
}

impl Encoder {
    pub fn header(&mut self, name: &str, help: &str, kind: MetricType) {
        let b = &mut self.buf;
        b.extend_from_slice(b"# HELP ");
        b.extend_from_slice(name.as_bytes());
        b.push(b' ');
        escape_help(b, help);
        b.extend_from_slice(b"\n# TYPE ");
        b.extend_from_slice(name.as_bytes());
        b.push(b' ');
        b.extend_from_slice(kind.as_str().as_bytes());
        b.push(b'\n');
    }

    pub fn new(buf: Vec<u8>) -> Self {
        Encoder { buf, hints: None }
    }

    /// [`Encoder::sample`] for a container's series; when hints are kept, records where the
    /// line's parts are (`container` identifies the prefix).
    pub fn container_sample(
        &mut self,
        container: usize,
        name: &str,
        prefix: &str,
        extra: &[(&str, &str)],
        value: f64,
    ) {
        let start = self.buf.len();
        let value_start = self.sample(name, prefix, extra, value);
        self.hint(container, start, name, prefix, value_start);
    }

    /// [`Encoder::container_sample`] with the extra labels already rendered and escaped
    /// (`a="x",b="y"`).
    pub fn container_sample_rendered(
        &mut self,
        container: usize,
        name: &str,
        prefix: &str,
        extra: &str,
        value: f64,
    ) {
        let start = self.buf.len();
        let b = &mut self.buf;
        b.reserve(name.len() + prefix.len() + extra.len() + 32);
        b.extend_from_slice(name.as_bytes());
        b.push(b'{');
        b.extend_from_slice(prefix.as_bytes());
        if !prefix.is_empty() && !extra.is_empty() {
            b.push(b',');
        }
        b.extend_from_slice(extra.as_bytes());
        b.extend_from_slice(b"} ");
        let value_start = b.len();
        write_value(b, value);
        b.push(b'\n');
        self.hint(container, start, name, prefix, value_start);
    }

    fn hint(
        &mut self,
        container: usize,
        start: usize,
        name: &str,
        prefix: &str,
        value_start: usize,
    ) {
        if let Some(hints) = &mut self.hints {
            let prefix_start = start + name.len() + 1;
            hints.push(LineHint {
                start: start as u32,
                prefix_start: prefix_start as u32,
                prefix_end: (prefix_start + prefix.len()) as u32,
                value_start: value_start as u32,
                container: container as u32,
            });
        }
    }

    /// One sample: `name{<prefix>,<extra labels>} value`. `prefix` is pre-rendered and already
    /// escaped; extra label values are escaped here. Returns where the value starts.
    pub fn sample(
        &mut self,
        name: &str,
        prefix: &str,
        extra: &[(&str, &str)],
        value: f64,
    ) -> usize {
        let b = &mut self.buf;
        // Once for the line, so the appends below never grow the buffer one by one.
        b.reserve(name.len() + prefix.len() + 64);
        b.extend_from_slice(name.as_bytes());
        if !prefix.is_empty() || !extra.is_empty() {
            b.push(b'{');
            b.extend_from_slice(prefix.as_bytes());
            for (i, (k, v)) in extra.iter().enumerate() {
                if i > 0 || !prefix.is_empty() {
                    b.push(b',');
                }
                b.extend_from_slice(k.as_bytes());
                b.extend_from_slice(b"=\"");
                escape_label_value(b, v);
                b.push(b'"');
            }
            b.push(b'}');
        }
        b.push(b' ');
        let value_start = b.len();
        write_value(b, value);
        b.push(b'\n');
        value_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let mut out = Vec::new();
        for v in [
            0.0,
            12.0,
            0.25,
            f64::NAN,
            f64::INFINITY,
            -3.0,
            1e300,
            -0.0,
            1e15 + 0.5,
        ] {
            write_value(&mut out, v);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "0 12 0.25 NaN +Inf -3 1e300 0 1000000000000000.5 "
        );
    }

    #[test]
    fn escaping() {
        let mut e = Encoder::default();
        e.sample("m", "a=\"1\"", &[("interface", "x\"\\\ny")], 1.0);
        assert_eq!(
            String::from_utf8_lossy(&e.buf),
            "m{a=\"1\",interface=\"x\\\"\\\\\\ny\"} 1\n"
        );
    }
}
