//! The cardinality report: series per metric family and the labels with the most distinct
//! values, computed from an exposition body. It is what an operator reads to decide which
//! families to drop, which namespaces to filter and where to set `max_series`.
//!
//! Served at `/cardinality` and printed by `podstat cardinality` (from a one-shot collection
//! or from a running agent's `/metrics`). It works on the text, so it reports exactly what a
//! scraper gets, self-metrics included.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

#[derive(Debug, Default)]
pub struct Report {
    pub series: usize,
    /// Family → series.
    pub families: BTreeMap<String, usize>,
    /// Label name → distinct values.
    pub label_values: BTreeMap<String, usize>,
    /// Label name → series that carry it (non-empty).
    pub label_series: BTreeMap<String, usize>,
}

/// Splits `name{labels}` into its name and (label, value) pairs, unescaping values.
fn parse_series(line: &str) -> Option<(&str, Vec<(&str, String)>)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    if line.as_bytes()[name_end] == b'{' {
        let mut rest = &line[name_end + 1..];
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(r) = rest.strip_prefix('}') {
                let _ = r;
                break;
            }
            let eq = rest.find("=\"")?;
            let key = &rest[..eq];
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, other)) => value.push(other),
                        None => return None,
                    },
                    '"' => {
                        end = Some(eq + 2 + i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            rest = &rest[end?..];
            labels.push((key, value));
        }
    }
    Some((name, labels))
}

/// Builds the report from exposition text. Lines that are not samples are skipped.
pub fn report(body: &str) -> Report {
    let mut r = Report::default();
    let mut values: HashMap<String, HashSet<String>> = HashMap::new();
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels)) = parse_series(line) else {
            continue;
        };
        r.series += 1;
        *r.families.entry(name.to_owned()).or_default() += 1;
        for (k, v) in labels {
            if v.is_empty() {
                continue;
            }
            *r.label_series.entry(k.to_owned()).or_default() += 1;
            values.entry(k.to_owned()).or_default().insert(v);
        }
    }
    r.label_values = values.into_iter().map(|(k, v)| (k, v.len())).collect();
    r
}

impl Report {
    /// The human-readable table, `top` rows per section (0: all).
    pub fn render(&self, top: usize) -> String {
        let top = if top == 0 { usize::MAX } else { top };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# podstat cardinality report: {} series in {} families",
            self.series,
            self.families.len()
        );
        let _ = writeln!(
            out,
            "\n# series per family (largest first)\n{:>8}  family",
            "series"
        );
        let mut fams: Vec<(&String, &usize)> = self.families.iter().collect();
        fams.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, n) in fams.into_iter().take(top) {
            let _ = writeln!(out, "{n:>8}  {name}");
        }
        let _ = writeln!(
            out,
            "\n# labels by distinct values (most first)\n{:>8}  {:>8}  label",
            "values", "series"
        );
        let mut labels: Vec<(&String, &usize)> = self.label_values.iter().collect();
        labels.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, n) in labels.into_iter().take(top) {
            let series = self.label_series.get(name).copied().unwrap_or(0);
            let _ = writeln!(out, "{n:>8}  {series:>8}  {name}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_families_and_distinct_values() {
        let body = "# HELP a x\n# TYPE a gauge\na{id=\"/x\",pod=\"p\\\"1\"} 1\na{id=\"/y\",pod=\"p\\\"1\"} 2\nb 3\nb{cpu=\"total\",id=\"\"} 4\n";
        let r = report(body);
        assert_eq!(r.series, 4);
        assert_eq!(r.families.get("a"), Some(&2));
        assert_eq!(r.families.get("b"), Some(&2));
        assert_eq!(r.label_values.get("id"), Some(&2));
        assert_eq!(r.label_values.get("pod"), Some(&1));
        assert_eq!(r.label_series.get("pod"), Some(&2));
        let text = r.render(10);
        assert!(text.starts_with("# podstat cardinality report: 4 series in 2 families"));
        assert!(text.contains("       2  a\n"));
    }

    #[test]
    fn garbage_lines_do_not_panic() {
        for line in [
            "{",
            "a{",
            "a{b=\"",
            "a{b=\"\\",
            "a{b}",
            "a{=\"x\"} 1",
            "\u{ff}{x=\"y\"} 1",
        ] {
            let _ = report(line);
        }
    }
}
