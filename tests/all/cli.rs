//! The command line as an operator meets it: config checking, default config, `once`.

use std::process::Command;
use std::time::Duration;

use crate::support::fixtures;

fn podstat(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_podstat"))
        .args(args)
        .output()
        .expect("run podstat")
}

#[test]
fn print_default_config_is_the_shipped_file_and_valid() {
    let out = podstat(&["--print-default-config"]);
    assert!(out.status.success());
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/podstat.toml"))
            .expect("file");
    assert_eq!(String::from_utf8_lossy(&out.stdout), shipped);
    let check = podstat(&[
        "--check-config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/podstat.toml"),
    ]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn bad_config_exits_2_with_file_line_column() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\ngzip = true\nlisten = 9780\n").expect("write");
    let out = podstat(&["--check-config", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:10:", path.display())), "{err}");

    std::fs::write(&path, "[collectors]\ncpu = true\ngpu = true\n").expect("write");
    let out = podstat(&["--config", path.to_str().expect("utf8"), "once"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":3:1:") && err.contains("unknown field `gpu`"),
        "{err}"
    );

    // A typo in a family name would silently drop nothing: rejected, by --check-config too.
    std::fs::write(
        &path,
        "[filters]\ndrop_metrics = [\"container_cpu_usage\"]\n",
    )
    .expect("write");
    for args in [
        vec!["--check-config", path.to_str().expect("utf8")],
        vec!["--config", path.to_str().expect("utf8"), "once"],
    ] {
        let out = podstat(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("unknown metric family \"container_cpu_usage\""),
            "{err}"
        );
    }
    // A kubelet source with no address to reach it: rejected at start and by --check-config,
    // which checks the environment the agent would start in; with NODE_NAME set, both accept.
    std::fs::write(&path, "[kubernetes]\nsource = \"kubelet\"\n").expect("write");
    for args in [
        vec!["--check-config", path.to_str().expect("utf8")],
        vec!["--config", path.to_str().expect("utf8"), "once"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_podstat"))
            .args(&args)
            .env_remove("HOST_IP")
            .env_remove("NODE_NAME")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("HOST_IP or NODE_NAME"));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_podstat"))
        .args(["--check-config", path.to_str().expect("utf8")])
        .env_remove("HOST_IP")
        .env("NODE_NAME", "node-1")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Values the types accept but the agent cannot work with, with where they are set.
    for (text, at) in [
        ("[kubernetes]\nrefresh_interval = \"0s\"\n", ":2:1:"),
        (
            "[server]\nmin_collect_interval_ms = 18446744073709551615\n",
            ":2:1:",
        ),
    ] {
        std::fs::write(&path, text).expect("write");
        let out = podstat(&["--check-config", path.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(at), "{text}: {err}");
    }
}

#[test]
fn unknown_flag_exits_2() {
    assert_eq!(podstat(&["--no-such-flag"]).status.code(), Some(2));
}

#[test]
fn once_prints_an_exposition_for_a_fixture_tree() {
    let out = podstat(&[
        "--cgroup-root",
        fixtures()
            .join("cgroup-v2/kubepods-systemd-containerd")
            .to_str()
            .expect("utf8"),
        "--proc-root",
        fixtures().join("proc-node").to_str().expect("utf8"),
        "--log-level",
        "error",
        "once",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("# TYPE container_cpu_usage_seconds_total counter"));
    assert!(body.contains("podstat_build_info{version=\""));
    assert!(body.contains("cgroup_mode=\"v2\""));
}

#[test]
fn docs_metric_table_is_generated_from_code() {
    let out = podstat(&["metrics-table"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let start = readme
        .find("<!-- metrics-table:start -->\n")
        .expect("start marker")
        + "<!-- metrics-table:start -->\n".len();
    let end = readme
        .find("<!-- metrics-table:end -->")
        .expect("end marker");
    assert_eq!(
        &readme[start..end],
        table,
        "docs/metrics.md is stale: run `podstat metrics-table`"
    );
}

#[test]
fn cardinality_report_of_a_one_shot_collection() {
    let root = fixtures().join("cgroup-v2/kubepods-systemd-containerd");
    let proc_root = fixtures().join("proc-node");
    let sys_root = fixtures().join("sys-node");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--cgroup-root".into(),
            root.display().to_string(),
            "--proc-root".into(),
            proc_root.display().to_string(),
            "--sys-root".into(),
            sys_root.display().to_string(),
            "--log-level".into(),
            "warn".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        podstat(&refs)
    };
    let out = run(args(&["cardinality", "--top", "3"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // The report's total equals the samples `once` prints.
    let once = run(args(&["once"]));
    let samples = String::from_utf8_lossy(&once.stdout)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert!(
        text.starts_with(&format!(
            "# podstat cardinality report: {samples} series in "
        )),
        "{text}"
    );
    assert!(text.contains("container_memory_failures_total"), "{text}");
    let family_rows = text
        .split("# labels by distinct values")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(family_rows, 3, "--top 3: {text}");
    // An unreachable agent is an error, not an empty report.
    let out = podstat(&["cardinality", "--url", "http://127.0.0.1:1/metrics"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn sighup_reloads_the_filters_listener_and_web_config_and_keeps_the_running_config_when_the_new_one_is_bad(
) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("podstat.toml");
    let addr = format!("127.0.0.1:{}", crate::support::free_port());
    let server = |listen: &str, extra: &str| {
        format!("[server]\nlisten = \"{listen}\"\nmin_collect_interval_ms = 0\n{extra}")
    };
    std::fs::write(&config, server(&addr, "")).expect("write");
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    args.extend(crate::support::fixture_node_args());
    let (mut podstat, log) = crate::support::start_podstat_logged(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &addr,
    );
    let metrics = |addr: &str| {
        crate::support::http_get(addr, "/metrics", "")
            .map(|(status, _, body)| (status, String::from_utf8_lossy(&body).into_owned()))
    };
    let has_cpu = |addr: &str| {
        metrics(addr).is_ok_and(|(_, b)| b.contains("\ncontainer_cpu_usage_seconds_total{"))
    };
    let hangup = |pid: u32| {
        kill(
            Pid::from_raw(i32::try_from(pid).expect("pid")),
            Signal::SIGHUP,
        )
        .expect("kill -HUP");
    };
    assert!(has_cpu(&addr));
    // A filter added: in force after SIGHUP, with the --cgroup-root flag still applied.
    let drop_cpu = "[filters]\ndrop_metrics = [\"container_cpu_usage_seconds_total\"]\n";
    std::fs::write(&config, server(&addr, drop_cpu)).expect("write");
    hangup(podstat.pid());
    let dropped =
        crate::support::wait_for(Duration::from_secs(5), || (!has_cpu(&addr)).then_some(()));
    assert!(dropped.is_some(), "the reloaded filter is not in force");
    // A broken file: logged, and the running config (with its filter) stays.
    std::fs::write(&config, "[filters]\ndrop_metrics = 42\n").expect("write");
    let refused = log.count("config not reloaded");
    hangup(podstat.pid());
    assert!(
        log.wait_for_more("config not reloaded", refused, Duration::from_secs(5)),
        "podstat did not say that it refused the broken config"
    );
    assert!(
        podstat.0.try_wait().expect("wait").is_none(),
        "podstat exited on SIGHUP"
    );
    assert!(metrics(&addr).is_ok_and(|(s, _)| s.contains(" 200 ")));
    assert!(!has_cpu(&addr), "a bad config replaced the running one");
    // A new address and a web config with basic auth: both in force, no restart.
    let web = dir.path().join("web.yml");
    let hash = bcrypt::hash("pw", 4).expect("bcrypt");
    std::fs::write(&web, format!("basic_auth_users:\n  prom: {hash}\n")).expect("write");
    let moved = format!("127.0.0.1:{}", crate::support::free_port());
    std::fs::write(
        &config,
        server(&moved, &format!("web_config_file = {web:?}\n{drop_cpu}")),
    )
    .expect("write");
    hangup(podstat.pid());
    let answered = crate::support::wait_for(Duration::from_secs(5), || metrics(&moved).ok());
    let (status, _) = answered.expect("the new address does not answer");
    assert!(
        status.contains(" 401 "),
        "basic auth not in force: {status}"
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the old address still accepts"
    );
    let (status, _, _) = crate::support::http_get(&moved, "/readyz", "").expect("readyz");
    assert!(status.contains(" 200 "), "{status}");
}
