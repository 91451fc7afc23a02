//! The command line as an operator meets it: config checking, default config, `once`.

use std::process::Command;

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
fn readme_metric_table_is_generated_from_code() {
    let out = podstat(&["metrics-table"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
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
        "README metric list is stale: run `podstat metrics-table`"
    );
}
