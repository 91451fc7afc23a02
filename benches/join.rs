//! The pod-metadata join: memory held by the index for 1000 pods, decode and index-build
//! time of a 1000-pod PodList, and the per-scrape cost of resolving 1000 containers' labels,
//! both fresh (after the pod list changed) and cached (the steady state).
//! `cargo bench --bench join`.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};

use podstat::discovery::{CgroupKind, Runtime, Target};
use podstat::labels::Labels;
use podstat::meta::join::{first_unlisted_by_pod, resolve, resolve_cached, JoinPolicy, Resolved};
use podstat::meta::podlist::parse_pod_list;
use podstat::meta::MetaIndex;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PODS: usize = 1000;
const CONTAINERS_PER_POD: usize = 3;

fn uid(p: usize) -> String {
    format!("{p:08x}-d529-44ae-9f99-90d3798d6426")
}

fn cid(p: usize, c: usize) -> String {
    format!("{:064x}", p * 16 + c)
}

/// A PodList shaped like a real one: labels, the kubelet's annotations, a
/// last-applied-configuration annotation, container statuses with a previous instance.
fn pod_list() -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..PODS)
        .map(|p| {
            let statuses: Vec<serde_json::Value> = (0..CONTAINERS_PER_POD)
                .map(|c| serde_json::json!({
                    "name": format!("c{c}"), "containerID": format!("containerd://{}", cid(p, c)),
                    "image": format!("registry.example.com/team/app-{c}:1.2.{p}"), "imageID": format!("sha256:{:064x}", p),
                    "ready": true, "restartCount": 1, "started": true,
                    "state": {"running": {"startedAt": "2026-11-22T10:00:00Z"}},
                    "lastState": {"terminated": {"containerID": format!("containerd://{:064x}", 1_000_000 + p * 16 + c), "exitCode": 1}}
                }))
                .collect();
            serde_json::json!({
                "metadata": {
                    "name": format!("app-7d4b9c-{p:05x}"), "namespace": format!("team-{}", p % 20), "uid": uid(p),
                    "labels": {"app": format!("app-{}", p % 50), "app.kubernetes.io/name": "app", "pod-template-hash": "7d4b9c", "team": "t", "tier": "web"},
                    "annotations": {"kubernetes.io/config.seen": "2026-11-22T10:00:00Z", "kubernetes.io/config.source": "api",
                                    "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(1500)},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-7d4b9c", "uid": uid(p + 1), "controller": true}]
                },
                "spec": {"nodeName": "node-1", "containers": (0..CONTAINERS_PER_POD).map(|c| serde_json::json!({"name": format!("c{c}"), "image": "x"})).collect::<Vec<_>>()},
                "status": {"phase": "Running", "qosClass": "Burstable", "podIP": "10.0.0.1", "containerStatuses": statuses}
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"kind": "PodList", "apiVersion": "v1", "items": items}))
        .expect("json")
}

fn targets() -> Vec<Arc<Target>> {
    (0..PODS * CONTAINERS_PER_POD / 3)
        .flat_map(|p| (0..3).map(move |c| (p, c)))
        .map(|(p, c)| {
            let id = cid(p, c);
            let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope", uid(p).replace('-', "_"));
            Arc::new(Target {
                labels: Labels { id: path.clone(), name: id.clone(), ..Labels::default() },
                path,
                kind: CgroupKind::Container { pod_uid: uid(p), id, runtime: Runtime::Containerd },
                inode: 0,
                dirs: Default::default(),
                created: Default::default(),
                files: Default::default(),
            })
        })
        .take(1000)
        .collect()
}

fn join(c: &mut Criterion) {
    let body = pod_list();
    let config = podstat::config::parse("[labels]\npod_labels = [\"app\", \"team\"]\n", "bench")
        .expect("config");
    let policy = JoinPolicy::new(&config.kubernetes, config.limits.max_label_value_length);

    let live0 = LIVE.load(Ordering::Relaxed);
    let pods = parse_pod_list(&body).expect("decode");
    let decoded = LIVE.load(Ordering::Relaxed) - live0;
    let index = MetaIndex::build(&pods, &config.labels, config.limits.max_pod_labels);
    drop(pods);
    let held = LIVE.load(Ordering::Relaxed) - live0;
    println!(
        "metadata: PodList of {PODS} pods = {} KiB of JSON; decoded pods {} KiB (transient); index held {} KiB ({} pods)",
        body.len() / 1024,
        decoded / 1024,
        held / 1024,
        index.pod_count()
    );
    let targets = targets();
    // Each target's label cache, as the engine keeps it for every cgroup.
    let caches: Vec<std::sync::Mutex<Option<Arc<Resolved>>>> =
        targets.iter().map(|_| Default::default()).collect();
    let a0 = ALLOCS.load(Ordering::Relaxed);
    for (t, cache) in targets.iter().zip(&caches) {
        let _ = resolve_cached(t, cache, &index, &policy, false);
    }
    let a1 = ALLOCS.load(Ordering::Relaxed);
    for (t, cache) in targets.iter().zip(&caches) {
        let _ = resolve_cached(t, cache, &index, &policy, false);
    }
    let a2 = ALLOCS.load(Ordering::Relaxed);
    println!(
        "join of {} containers: {} allocations when fresh, {} when cached",
        targets.len(),
        a1 - a0,
        a2 - a1
    );

    c.bench_function("decode_and_index_1000_pods", |b| {
        b.iter(|| {
            let pods = parse_pod_list(&body).expect("decode");
            MetaIndex::build(&pods, &config.labels, config.limits.max_pod_labels)
        })
    });
    c.bench_function("resolve_1000_containers_fresh", |b| {
        b.iter(|| {
            for t in &targets {
                std::hint::black_box(resolve(t, &index, &policy, false));
            }
        })
    });
    // Every scrape, before the join: which unlisted cgroup of each pod is its sandbox (one
    // index lookup per container cgroup; these are all listed, so none is).
    c.bench_function("first_unlisted_by_pod_1000_containers", |b| {
        b.iter(|| std::hint::black_box(first_unlisted_by_pod(&targets, &index).len()))
    });
    c.bench_function("resolve_1000_containers_cached", |b| {
        b.iter(|| {
            for (t, cache) in targets.iter().zip(&caches) {
                std::hint::black_box(resolve_cached(t, cache, &index, &policy, false));
            }
        })
    });
}

criterion_group!(benches, join);
criterion_main!(benches);
