//! One AFL++ harness for every fuzz target; `FUZZ_TARGET` picks it (see fuzz/README.md):
//! - `cgroup`:  every parser of cgroup files (cpu, memory, blkio/io, pressure, pids, procs);
//! - `procfs`:  every parser of procfs and sysfs files (mountinfo, diskstats, meminfo, cpuinfo,
//!   limits, stat, os-release, net/dev);
//! - `podlist`: the kubelet PodList decoder and the join index built from it;
//! - `config`:  the TOML config loader with every check `--check-config` makes of the text,
//!   and the web config (YAML) parser;
//! - `http`:    the HTTP request path: raw bytes into podstat's listener code (limits, access
//!   checks, routing, /metrics over fixture cgroups), response read back;
//! - `deflate`: differential: bytes with line hints derived from them (right, wrong and
//!   stale), through crates/hinted-deflate in chunks and across a carried state, decoded by
//!   flate2: the output must be the input.
//!
//! A crash is any panic: every target must accept any input and at most return an error.

use std::sync::{Arc, OnceLock};

use podstat::parse;

fn cgroup(data: &[u8]) {
    let _ = parse::cpu::cpu_stat(data);
    let _ = parse::cpu::cpuacct_stat(data);
    let _ = parse::cpu::cpu_max(data);
    let _ = parse::memory::memory_stat_v1(data, true);
    let _ = parse::memory::memory_stat_v1(data, false);
    let _ = parse::memory::memory_stat_v2(data);
    let _ = parse::memory::memory_events(data);
    let _ = parse::memory::oom_control_kills(data);
    let mut out = Vec::new();
    let _ = parse::blkio::io_stat(data, &mut out);
    for kind in [parse::blkio::BlkioKind::Bytes, parse::blkio::BlkioKind::Ops] {
        out.clear();
        let _ = parse::blkio::blkio_v1(data, kind, &mut out);
    }
    let _ = parse::psi::pressure(data);
    let _ = parse::cgroup_procs(data);
    let _ = parse::pids(data).count();
    let _ = parse::max_or_u64(data);
    let _ = parse::single_u64(data);
    let _ = parse::single_i64(data);
}

fn procfs(data: &[u8]) {
    let _ = parse::procfs::cgroup_mounts(data);
    let _ = parse::procfs::filesystems(data);
    let _ = parse::procfs::root_overlay_upperdir(data);
    let _ = parse::procfs::diskstats(data);
    let _ = parse::procfs::meminfo_totals(data);
    let _ = parse::procfs::cpu_topology(data);
    let _ = parse::procfs::limits_max_open_files(data);
    let _ = parse::procfs::stat_state(data);
    let _ = parse::procfs::os_release_pretty_name(data);
    let mut interfaces = 0usize;
    let _ = parse::netdev::net_dev(data, |_, _| interfaces += 1);
}

fn podlist(data: &[u8]) {
    static LABELS: OnceLock<podstat::config::LabelsConfig> = OnceLock::new();
    let labels = LABELS.get_or_init(|| {
        let mut c = podstat::config::default_config().expect("default config").labels;
        c.pod_labels = podstat::config::KeyPatterns::new(vec!["*".into()]).expect("patterns");
        c
    });
    if let Ok(pods) = podstat::meta::podlist::parse_pod_list(data) {
        let _ = podstat::meta::MetaIndex::build(&pods, labels, 10);
    }
}

fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = podstat::config::parse(text, "fuzz") {
            let _ = podstat::policy::Policy::new(&c);
        }
        // The same text as a web config (YAML): its files do not exist, so TLS stops there.
        let _ = podstat::http::webconfig::parse(text, std::path::Path::new("/nonexistent"));
    }
}

struct Http {
    runtime: tokio::runtime::Runtime,
    server: Arc<podstat::http::server::Server>,
}

fn http(data: &[u8]) {
    static HTTP: OnceLock<Http> = OnceLock::new();
    let h = HTTP.get_or_init(|| {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let text = format!(
            "[paths]\ncgroup_root = {:?}\nproc_root = {:?}\nsys_root = {:?}\n[server]\nmax_connections = 4\nheader_read_timeout = \"1s\"\n",
            fixtures.join("cgroup-v2/kubepods-systemd-containerd"),
            fixtures.join("proc-node"),
            fixtures.join("sys-node"),
        );
        let config = podstat::config::parse(&text, "fuzz").expect("fuzz config");
        let agent = Arc::new(podstat::agent::Agent::new(&config).expect("agent"));
        let connections = podstat::http::connections::Connections::new(
            // Short timeouts: an input that leaves a request unfinished costs the timeout
            // (at 1 s, AFL++ spent most of a run on such inputs at one execution a second).
            podstat::http::connections::Limits {
                max: 4,
                header_timeout: std::time::Duration::from_millis(20),
                idle_timeout: std::time::Duration::from_millis(20),
            },
        );
        let server = Arc::new(podstat::http::server::Server {
            agent,
            gzip: true,
            connections,
            web: podstat::http::webconfig::WebConfigWatch::none(),
            auth: podstat::http::webconfig::BasicAuth::default(),
            delegated: None,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Http { runtime, server }
    });
    h.runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, served) = tokio::io::duplex(1 << 16);
        let server = Arc::clone(&h.server);
        let serving = tokio::spawn(async move {
            podstat::http::server::serve_stream(&server, served).await;
        });
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut response = Vec::new();
        // Bounded: a request the server waits on (an incomplete one) ends at the header timeout.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            client.read_to_end(&mut response),
        )
        .await;
        drop(client);
        let _ = serving.await;
    });
}

/// Line hints for `chunk` as an encoder would give them, bent by the input's own bytes: a line
/// `name{prefix} value` gets the spans of its parts and a container index from its prefix
/// (equal prefixes, one index), and about one line in eight gets a wrong span or index.
fn deflate_hints(chunk: &[u8], containers: &mut std::collections::HashMap<Vec<u8>, u32>) -> Vec<hinted_deflate::LineHint> {
    let mut hints = Vec::new();
    let mut start = 0usize;
    for line in chunk.split_inclusive(|&b| b == b'\n') {
        let end = start + line.len();
        if let (Some(open), Some(close)) = (
            line.iter().position(|&b| b == b'{'),
            line.iter().rposition(|&b| b == b'}'),
        ) {
            if open < close {
                let prefix = &line[open + 1..close];
                let n = containers.len() as u32;
                let container = *containers.entry(prefix.to_vec()).or_insert(n);
                let mut h = hinted_deflate::LineHint {
                    start: start as u32,
                    prefix_start: (start + open + 1) as u32,
                    prefix_end: (start + close) as u32,
                    value_start: (start + (close + 2).min(line.len())) as u32,
                    container,
                };
                let twist = line[0] as usize + line.len();
                match twist % 16 {
                    0 => h.container = (twist % 5) as u32,
                    1 => h.prefix_end = h.prefix_end.saturating_sub(3),
                    2 => h.prefix_start += 1,
                    3 => h.value_start = end as u32 + 7,
                    _ => {}
                }
                hints.push(h);
            }
        }
        start = end;
    }
    hints
}

fn deflate(data: &[u8]) {
    use std::io::Read;
    // The first byte picks the chunk size (the agent's are 64 KiB; small ones cross lines).
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    // A few lines are enough to reach every path (copies, scripts, carried state), and each
    // new prefix costs a script: longer inputs only slow the search down.
    let body = &body[..body.len().min(2048)];
    let chunk_len = 1 + usize::from(size) * 4;
    let mut containers = std::collections::HashMap::new();
    let mut carry = hinted_deflate::GzipCarry::default();
    // Twice: the second body resumes from the first one's state, as consecutive scrapes do,
    // with its second half first (containers moved and changed).
    let half = body.len() / 2;
    let swapped = [&body[half..], &body[..half]].concat();
    for input in [body, swapped.as_slice()] {
        let mut gz = hinted_deflate::HintedGzip::resume(carry);
        for chunk in input.chunks(chunk_len) {
            let hints = deflate_hints(chunk, &mut containers);
            gz.push(chunk, &hints);
        }
        let (out, next) = gz.finish_carry();
        carry = next;
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(out.as_slice())
            .read_to_end(&mut decoded)
            .expect("hinted-deflate wrote a gzip member flate2 cannot read");
        assert!(decoded == input, "hinted-deflate's output decodes to other bytes than its input");
    }
}

fn main() {
    let target = std::env::var("FUZZ_TARGET").unwrap_or_default();
    let run: fn(&[u8]) = match target.as_str() {
        "cgroup" => cgroup,
        "procfs" => procfs,
        "podlist" => podlist,
        "config" => config,
        "http" => http,
        "deflate" => deflate,
        other => {
            eprintln!("FUZZ_TARGET={other:?}: use cgroup, procfs, podlist, config, http or deflate");
            std::process::exit(2);
        }
    };
    afl::fuzz!(|data: &[u8]| run(data));
}
