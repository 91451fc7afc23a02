//! Label values and their rendering, shared by the join (which renders each cgroup's labels
//! once per pod-list generation) and the encoder (which escapes every other label).

/// The six label values every container series carries (kubelet `/metrics/cadvisor` shape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub container: String,
    pub id: String,
    pub image: String,
    pub name: String,
    pub namespace: String,
    pub pod: String,
}

/// Appends a label value with the three escapes the text format requires.
pub fn escape_label_value(out: &mut Vec<u8>, value: &str) {
    escape(out, value.as_bytes(), |b| {
        Some(match b {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            b'\n' => b"\\n",
            _ => return None,
        })
    });
}

/// Appends `value` with each byte that `escaped` maps replaced, copying the runs between
/// them whole: values almost never need an escape, and a push per byte was most of the cost
/// of a family header.
pub(crate) fn escape(
    out: &mut Vec<u8>,
    value: &[u8],
    escaped: impl Fn(u8) -> Option<&'static [u8; 2]>,
) {
    let mut rest = value;
    while let Some(i) = rest.iter().position(|&b| escaped(b).is_some()) {
        out.extend_from_slice(&rest[..i]);
        if let Some(e) = escaped(rest[i]) {
            out.extend_from_slice(e);
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// Renders `container="…",id="…",image="…",name="…",namespace="…",pod="…"` (sorted, as the
/// kubelet's endpoint writes them) with no extra labels and no length limit.
pub fn render_label_prefix(labels: &Labels) -> String {
    render_labels(labels, &[], usize::MAX).0
}

/// Renders the six labels, then `extra` (pod labels, already valid names), cutting values
/// longer than `max_len` bytes (at a character boundary). `id` and `name` are never cut: they
/// are what keeps two cgroups' series apart, and a cut could make them collide. Returns the
/// string and how many values were cut.
pub fn render_labels(labels: &Labels, extra: &[(String, String)], max_len: usize) -> (String, u32) {
    let mut out = Vec::with_capacity(64 + labels.id.len() + labels.name.len());
    let mut truncated = 0;
    let base = [
        ("container", &labels.container),
        ("id", &labels.id),
        ("image", &labels.image),
        ("name", &labels.name),
        ("namespace", &labels.namespace),
        ("pod", &labels.pod),
    ];
    let all = base
        .into_iter()
        .map(|(k, v)| (k, v.as_str()))
        .chain(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (i, (k, v)) in all.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        let v = if v.len() > max_len && k != "id" && k != "name" {
            truncated += 1;
            let mut end = max_len;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            &v[..end]
        } else {
            v
        };
        escape_label_value(&mut out, v);
        out.push(b'"');
    }
    // Only valid UTF-8 went in (str values cut at char boundaries, ASCII escapes).
    (String::from_utf8(out).unwrap_or_default(), truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_at_a_char_boundary() {
        let labels = Labels {
            id: "/a-long-path".into(),
            pod: "ééé".into(),
            ..Labels::default()
        };
        let extra = [("label_app".to_owned(), "x".repeat(10))];
        let (s, n) = render_labels(&labels, &extra, 5);
        assert_eq!(n, 2);
        assert!(s.contains("id=\"/a-long-path\""), "id is never cut: {s}");
        assert!(s.ends_with("pod=\"éé\",label_app=\"xxxxx\""), "{s}");
    }
}
