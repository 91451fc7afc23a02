//! Decodes a kubelet `/pods` (or API-server) `PodList` into what the join needs: per pod its
//! UID, name, namespace, labels and annotations, and per container ID its name and image.
//!
//! Only the fields podstat reads are declared, every one optional: API objects grow fields
//! and send `null` for empty maps, and none of that may fail the decode. `items` entries that
//! are `null` or `{}` (seen in real kubelet output) are skipped.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
struct WirePod {
    metadata: Option<WireMeta>,
    spec: Option<WireSpec>,
    status: Option<WireStatus>,
}

#[derive(Debug, Deserialize, Default)]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    containers: Option<Vec<WireSpecContainer>>,
    init_containers: Option<Vec<WireSpecContainer>>,
    ephemeral_containers: Option<Vec<WireSpecContainer>>,
    host_network: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
struct WireSpecContainer {
    name: Option<String>,
    image: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    container_statuses: Option<Vec<WireContainerStatus>>,
    init_container_statuses: Option<Vec<WireContainerStatus>>,
    ephemeral_container_statuses: Option<Vec<WireContainerStatus>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireContainerStatus {
    name: Option<String>,
    #[serde(rename = "containerID")]
    container_id: Option<String>,
    image: Option<String>,
    #[serde(rename = "imageID")]
    image_id: Option<String>,
    last_state: Option<WireState>,
}

#[derive(Debug, Deserialize, Default)]
struct WireState {
    terminated: Option<WireTerminated>,
}

#[derive(Debug, Deserialize, Default)]
struct WireTerminated {
    #[serde(rename = "containerID")]
    container_id: Option<String>,
}

/// One container instance of a pod, by runtime container ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container ID without the `containerd://` style scheme.
    pub id: String,
    pub name: String,
    pub image: String,
}

/// What podstat keeps of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub host_network: bool,
    pub containers: Vec<ContainerInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum PodListError {
    #[error("not a PodList: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a PodList: kind is {0:?}")]
    Kind(String),
    #[error(
        "more than {max} pods in the list ([kubernetes] max_pods); the last good view stays in use"
    )]
    TooManyPods { max: usize },
}

/// `containerd://<id>` → `<id>`; IDs without a scheme are kept as they are.
pub fn strip_runtime_scheme(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// The `image` label of a container as the kubelet's cAdvisor shows it, from its status.
///
/// cAdvisor takes the image from the runtime's record of the container, which holds the
/// reference the kubelet created it with; the pod status shows that reference differently per
/// runtime (checked against the real 1.18 Docker, 1.27 and 1.35 containerd dumps in
/// `tests/fixtures/kubelet`):
/// - Docker (`docker://` IDs): the kubelet creates containers from the pulled repo digest, which
///   `imageID` carries after `docker-pullable://` (or the local `sha256:` ID after `docker://`);
///   the status `image` is the tag the user asked for. A container that never started has no
///   `imageID`, and cAdvisor no image.
/// - containerd, CRI-O: the status `image` is the reference, except that containerd reports the
///   bare `sha256:` image ID for a reference that carried a digest; `imageID` then holds that
///   reference.
///
/// Without a status image (not created yet) the spec's image stands in.
pub fn cadvisor_image(
    container_id: Option<&str>,
    status_image: Option<&str>,
    image_id: Option<&str>,
    spec_image: impl FnOnce() -> Option<String>,
) -> String {
    let status_image = status_image.filter(|s| !s.is_empty());
    let image_id = image_id.filter(|s| !s.is_empty());
    if container_id.is_some_and(|id| id.starts_with("docker://")) {
        return image_id.map(strip_runtime_scheme).unwrap_or("").to_owned();
    }
    match (status_image, image_id) {
        (Some(image), Some(id)) if is_bare_image_id(image) => strip_runtime_scheme(id).to_owned(),
        (Some(image), _) => image.to_owned(),
        (None, _) => spec_image().unwrap_or_default(),
    }
}

/// `sha256:<64 hex>`: an image ID, not a reference a user would recognise.
fn is_bare_image_id(image: &str) -> bool {
    image
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Adds one container status's instances to `out`: its current and previous
/// (`lastState.terminated`) IDs without the runtime scheme, skipping empty and already-listed
/// ones, both under the status's name and `image` (the previous instance's cgroup can linger
/// after a restart). Shared by the kubelet and API-server sources.
pub fn push_instances(
    out: &mut Vec<ContainerInfo>,
    name: &str,
    image: String,
    ids: [Option<&str>; 2],
) {
    for id in ids.into_iter().flatten().map(strip_runtime_scheme) {
        if !id.is_empty() && !out.iter().any(|c| c.id == id) {
            out.push(ContainerInfo {
                id: id.to_owned(),
                name: name.to_owned(),
                image: image.clone(),
            });
        }
    }
}

/// Decodes a PodList body.
/// What the decoder keeps of a list: at most `max_pods` pods, and of each pod's labels and
/// annotations only the keys the join can use.
pub struct Keep<'a> {
    pub max_pods: usize,
    pub label: &'a dyn Fn(&str) -> bool,
    pub annotation: &'a dyn Fn(&str) -> bool,
}

impl Keep<'_> {
    /// Every pod, every key (tests, the parity checks).
    pub const ALL: Keep<'static> = Keep {
        max_pods: usize::MAX,
        label: &|_| true,
        annotation: &|_| true,
    };
}

/// Decodes a whole list, keeping everything.
pub fn parse_pod_list(bytes: &[u8]) -> Result<Vec<PodInfo>, PodListError> {
    parse_pod_list_kept(bytes, &Keep::ALL)
}

/// Decodes a list pod by pod: each `items` entry becomes a [`PodInfo`] as soon as it is read,
/// with only the labels and annotations `keep` wants, so the decoded document never exists
/// whole beside the body (a 50,000-pod list of 29 MB took RSS from 17 to 272 MB when it did).
/// Past `keep.max_pods` the decode stops at once with [`PodListError::TooManyPods`].
pub fn parse_pod_list_kept(bytes: &[u8], keep: &Keep<'_>) -> Result<Vec<PodInfo>, PodListError> {
    use serde::de::DeserializeSeed;
    let over = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded = ListSeed { keep, over: &over }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    let (kind, pods) = match decoded {
        Ok(v) => v,
        Err(_) if over.get() => return Err(PodListError::TooManyPods { max: keep.max_pods }),
        Err(e) => return Err(PodListError::Json(e)),
    };
    if let Some(kind) = kind.filter(|k| k != "PodList" && !k.is_empty()) {
        return Err(PodListError::Kind(kind));
    }
    Ok(pods)
}

struct ListSeed<'k, 'a> {
    keep: &'k Keep<'a>,
    over: &'k std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ListSeed<'_, '_> {
    type Value = (Option<String>, Vec<PodInfo>);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ListSeed<'_, '_> {
    type Value = (Option<String>, Vec<PodInfo>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a PodList object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kind = None;
        let mut pods = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "kind" => kind = map.next_value::<Option<String>>()?,
                "items" => {
                    pods = map.next_value_seed(ItemsSeed {
                        keep: self.keep,
                        over: self.over,
                    })?;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok((kind, pods))
    }
}

struct ItemsSeed<'k, 'a> {
    keep: &'k Keep<'a>,
    over: &'k std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ItemsSeed<'_, '_> {
    type Value = Vec<PodInfo>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemsSeed<'_, '_> {
    type Value = Vec<PodInfo>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of pods")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut pods = Vec::new();
        while let Some(item) = seq.next_element::<Option<WirePod>>()? {
            let Some(pod) = item.and_then(|w| pod_info(w, self.keep)) else {
                continue;
            };
            if pods.len() >= self.keep.max_pods {
                self.over.set(true);
                return Err(serde::de::Error::custom("too many pods"));
            }
            pods.push(pod);
        }
        Ok(pods)
    }
}

/// One pod as the join needs it; `None` without a UID.
fn pod_info(pod: WirePod, keep: &Keep<'_>) -> Option<PodInfo> {
    let meta = pod.metadata.unwrap_or_default();
    let uid = meta.uid.filter(|u| !u.is_empty())?;
    let spec = pod.spec.unwrap_or_default();
    let spec_image = |name: &str| -> Option<String> {
        [
            &spec.containers,
            &spec.init_containers,
            &spec.ephemeral_containers,
        ]
        .into_iter()
        .flatten()
        .flatten()
        .find(|c| c.name.as_deref() == Some(name))
        .and_then(|c| c.image.clone())
    };
    let status = pod.status.unwrap_or_default();
    let mut containers = Vec::new();
    for st in [
        status.container_statuses,
        status.init_container_statuses,
        status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    {
        let name = st.name.unwrap_or_default();
        let previous = st
            .last_state
            .and_then(|s| s.terminated)
            .and_then(|t| t.container_id);
        let image = cadvisor_image(
            st.container_id.as_deref(),
            st.image.as_deref(),
            st.image_id.as_deref(),
            || spec_image(&name),
        );
        push_instances(
            &mut containers,
            &name,
            image,
            [st.container_id.as_deref(), previous.as_deref()],
        );
    }
    let mut labels = meta.labels.unwrap_or_default();
    labels.retain(|k, _| (keep.label)(k));
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.retain(|k, _| (keep.annotation)(k));
    Some(PodInfo {
        uid,
        name: meta.name.unwrap_or_default(),
        namespace: meta.namespace.unwrap_or_default(),
        labels,
        annotations,
        host_network: spec.host_network.unwrap_or(false),
        containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_empty_items_are_skipped() {
        let body = br#"{"kind":"PodList","items":[null,{},{"metadata":{"uid":"u1","name":"a","namespace":"n","labels":null},"status":{"containerStatuses":[{"name":"c","containerID":"docker://abc","image":"img:1","lastState":{"terminated":{"containerID":"docker://old"}}}]}}]}"#;
        let pods = parse_pod_list(body).expect("parse");
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].containers.len(), 2);
        assert_eq!(pods[0].containers[0].id, "abc");
        assert_eq!(pods[0].containers[1].id, "old");
        assert_eq!(pods[0].containers[1].name, "c");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_pod_list(b"{\"kind\":\"PodList\",\"items\":[").is_err());
        assert!(parse_pod_list(b"<html>").is_err());
        assert!(parse_pod_list(br#"{"kind":"Status","items":[]}"#).is_err());
        assert!(parse_pod_list(br#"{"items":{}}"#).is_err());
    }
}
