//! Compresses an exposition-shaped body (N containers with random 64-hex IDs, 40 families of
//! one line per container, as podstat's encoder writes it, in 64 KiB chunks) with the hinted
//! writer and with flate2 (zlib-rs) at level 1, and prints time and size per body.
//! `cargo bench -p hinted-deflate` (N = 100 and 1000).

use std::io::Write;
use std::time::{Duration, Instant};

use hinted_deflate::{GzipCarry, HintedGzip, LineHint};

/// xorshift64*: reproducible random IDs without a dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn body(containers: usize, families: usize) -> Vec<(Vec<u8>, Vec<LineHint>)> {
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    let prefixes: Vec<String> = (0..containers)
        .map(|c| {
            let id: String = (0..4).map(|_| format!("{:016x}", next(&mut seed))).collect();
            format!(
                "container=\"app-{}\",id=\"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{:08x}_{:04x}.slice/cri-containerd-{id}.scope\",image=\"registry.example/app:{}\",name=\"{id}\",namespace=\"ns-{}\",pod=\"pod-{}\"",
                c % 7,
                next(&mut seed) as u32,
                c,
                c % 5,
                c % 13,
                c / 3
            )
        })
        .collect();
    let mut chunks = vec![(Vec::new(), Vec::new())];
    for f in 0..families {
        let name = format!("container_family_{f:02}_total");
        let (buf, _) = chunks.last_mut().expect("a chunk");
        buf.extend_from_slice(
            format!("# HELP {name} A family.\n# TYPE {name} counter\n").as_bytes(),
        );
        for (c, prefix) in prefixes.iter().enumerate() {
            let (buf, hints) = chunks.last_mut().expect("a chunk");
            let start = buf.len() as u32;
            buf.extend_from_slice(name.as_bytes());
            buf.push(b'{');
            let prefix_start = buf.len() as u32;
            buf.extend_from_slice(prefix.as_bytes());
            let prefix_end = buf.len() as u32;
            buf.extend_from_slice(b"} ");
            let value_start = buf.len() as u32;
            buf.extend_from_slice(format!("{}\n", next(&mut seed) % 100_000_000).as_bytes());
            hints.push(LineHint {
                start,
                prefix_start,
                prefix_end,
                value_start,
                container: c as u32,
            });
            if buf.len() >= 64 * 1024 {
                chunks.push((Vec::new(), Vec::new()));
            }
        }
    }
    chunks
}

/// The best of `runs` timings of `f`.
fn best(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut out = (Duration::MAX, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let size = std::hint::black_box(f());
        out = (out.0.min(t.elapsed()), size);
    }
    out
}

fn main() {
    // `cargo test --all-targets` runs this too (unoptimised, without `--bench`): once, small.
    let measuring = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if measuring { &[100, 1000] } else { &[100] };
    for &containers in sizes {
        let chunks = body(containers, 40);
        let plain: usize = chunks.iter().map(|(c, _)| c.len()).sum();
        let runs = match (measuring, containers > 500) {
            (false, _) => 1,
            (true, true) => 10,
            (true, false) => 30,
        };
        let mut carry = Some(GzipCarry::default());
        let (hinted, hinted_size) = best(runs, || {
            let mut gz = HintedGzip::resume(carry.take().unwrap_or_default());
            for (c, h) in &chunks {
                gz.push(c, h);
            }
            let (out, next) = gz.finish_carry();
            carry = Some(next);
            out.len()
        });
        let (stock, stock_size) = best(runs, || {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for (c, _) in &chunks {
                gz.write_all(c).expect("in memory");
            }
            gz.finish().map_or(0, |v| v.len())
        });
        println!(
            "{containers} containers, {} KiB: hinted {:.2} ms -> {} KiB; flate2 (zlib-rs) level 1 {:.2} ms -> {} KiB",
            plain / 1024,
            hinted.as_secs_f64() * 1e3,
            hinted_size / 1024,
            stock.as_secs_f64() * 1e3,
            stock_size / 1024
        );
    }
}
