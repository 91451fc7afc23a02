//! Collections and gzip bodies of this host's cgroups in a loop, for instruction counts that
//! do not drift with the machine's speed: `benches/instructions.sh` runs it under callgrind,
//! counting only the loop (`scrape_loop::measured`), after three scrapes that open the kept
//! descriptors and size the gzip table. `cargo bench --bench scrape_loop -- [SCRAPES]` alone
//! only runs the loop.

#[inline(never)]
fn measured(agent: &podstat::agent::Agent, scrapes: usize, gzip: bool) -> usize {
    let mut bytes = 0;
    for _ in 0..scrapes {
        let body = agent.scrape();
        if gzip {
            bytes += body.gzipped().len();
        }
    }
    bytes
}

fn main() {
    let scrapes: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let gzip = std::env::var_os("NO_GZIP").is_none();
    let _ = podstat::reader::raise_nofile_limit();
    // Every scrape collects anew.
    let config = podstat::config::parse("[server]\nmin_collect_interval_ms = 0\n", "scrape_loop")
        .expect("a valid built-in config");
    let agent = match podstat::agent::Agent::new(&config) {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("scrape_loop: {e}");
            return;
        }
    };
    for _ in 0..3 {
        let _ = agent.scrape().gzipped();
    }
    println!("{} gzip bytes", measured(&agent, scrapes, gzip));
}
