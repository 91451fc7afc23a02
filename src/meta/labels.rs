//! Pod labels and annotations as extra series labels, named the way kube-state-metrics names
//! them, so PromQL written against `kube_pod_labels` reads the same: `label_<key>` and
//! `annotation_<key>`, every character outside `[a-zA-Z0-9_]` replaced by `_`, camelCase
//! turned into snake_case, and names that collide after that renamed `…_conflict1`,
//! `…_conflict2` in sorted key order (all of them, so none silently wins).

use std::collections::BTreeMap;

use crate::config::KeyPatterns;

/// `app.kubernetes.io/name` → `app_kubernetes_io_name`; `camelCase` → `camel_case`.
pub fn sanitize_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev: Option<char> = None;
    for c in key.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        };
        if c.is_ascii_uppercase()
            && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
        prev = Some(c);
    }
    out
}

/// Label names for `keys` (sorted) with `prefix`, conflicts renamed.
pub fn label_names(prefix: &str, keys: &[&str]) -> Vec<String> {
    let base: Vec<String> = keys
        .iter()
        .map(|k| format!("{prefix}{}", sanitize_key(k)))
        .collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &base {
        *seen.entry(b.as_str()).or_default() += 1;
    }
    let mut nth: BTreeMap<&str, usize> = BTreeMap::new();
    base.iter()
        .map(|b| {
            if seen.get(b.as_str()).copied().unwrap_or(0) > 1 {
                let n = nth.entry(b.as_str()).or_default();
                *n += 1;
                format!("{b}_conflict{n}")
            } else {
                b.clone()
            }
        })
        .collect()
}

/// The extra labels of one pod: allow-listed labels, then annotations, each in sorted key
/// order, at most `max` in all.
pub fn pod_extra_labels(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    label_allow: &KeyPatterns,
    annotation_allow: &KeyPatterns,
    max: usize,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (prefix, map, allow) in [
        ("label_", labels, label_allow),
        ("annotation_", annotations, annotation_allow),
    ] {
        if allow.is_empty() {
            continue;
        }
        let picked: Vec<(&String, &String)> =
            map.iter().filter(|(k, _)| allow.is_match(k)).collect();
        let keys: Vec<&str> = picked.iter().map(|(k, _)| k.as_str()).collect();
        for (name, (_, value)) in label_names(prefix, &keys).into_iter().zip(picked) {
            if out.len() >= max {
                return out;
            }
            out.push((name, value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kube_state_metrics() {
        assert_eq!(
            sanitize_key("app.kubernetes.io/name"),
            "app_kubernetes_io_name"
        );
        assert_eq!(sanitize_key("camelCase"), "camel_case");
        assert_eq!(sanitize_key("0app"), "0app");
        assert_eq!(sanitize_key("team-A"), "team_a");
        assert_eq!(
            label_names("label_", &["app.name", "app/name", "app_name2"]),
            vec![
                "label_app_name_conflict1",
                "label_app_name_conflict2",
                "label_app_name2"
            ]
        );
    }

    #[test]
    fn allowlist_and_cap() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("team", "a"), ("tier", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let ann: BTreeMap<String, String> = [("owner.io/mail", "x@y")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let allow = KeyPatterns::new(vec!["app".into(), "t*".into()]).expect("patterns");
        let ann_allow = KeyPatterns::new(vec!["owner.io/*".into()]).expect("patterns");
        let none = KeyPatterns::new(vec![]).expect("empty");
        let got = pod_extra_labels(&labels, &ann, &allow, &ann_allow, 10);
        assert_eq!(
            got,
            vec![
                ("label_app".to_owned(), "web".to_owned()),
                ("label_team".to_owned(), "a".to_owned()),
                ("label_tier".to_owned(), "x".to_owned()),
                ("annotation_owner_io_mail".to_owned(), "x@y".to_owned()),
            ]
        );
        assert_eq!(
            pod_extra_labels(&labels, &ann, &allow, &ann_allow, 2).len(),
            2
        );
        assert!(pod_extra_labels(&labels, &ann, &none, &none, 10).is_empty());
    }
}
