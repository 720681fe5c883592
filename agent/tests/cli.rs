//! The real `shoal` binary's command line.

use std::path::PathBuf;
use std::process::{Command, Output};

fn shoal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .expect("the shoal binary runs")
}

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/shoal.example.toml")
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn version_names_the_protocol() {
    let out = shoal(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("shoal ") && text.contains("protocol 1"),
        "{text}"
    );
}

#[test]
fn check_accepts_the_shipped_example() {
    let out = shoal(&["check", "--config", example().to_str().expect("utf-8 path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok (2 sensors"));
}

#[test]
fn check_lists_every_problem_with_its_location_and_exits_2() {
    let path = scratch(
        "bad.toml",
        "[mesh]\nport = 0\nwat = 1\n\n[[rule]]\nname = \"r\"\nwhen = \"x > 1\"\ndo = \"nothing\"\n",
    );
    let out = shoal(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = path.display().to_string();
    assert!(
        stderr.contains(&format!("{shown}:2:8: mesh.port must be a port")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{shown}:3:1: unknown key `mesh.wat`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{shown}:8:6: rule \"r\" names executor \"nothing\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{shown}:7:9: rule.when: unknown word \"x\"")),
        "{stderr}"
    );
    assert!(stderr.contains("4 problems in"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

#[test]
fn check_of_a_missing_file_is_one_sentence_and_exit_2() {
    let out = shoal(&["check", "--config", "/nonexistent/shoal.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("shoal: cannot read /nonexistent/shoal.toml"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}

#[test]
fn binary_garbage_is_a_syntax_error_not_a_crash() {
    let path = scratch("garbage.toml", "\u{0}\u{1}\u{2}[[[\n");
    let out = shoal(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOML syntax"));
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(shoal(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(shoal(&[]).status.code(), Some(2));
    assert_eq!(shoal(&["check", "--config"]).status.code(), Some(2));
    assert_eq!(shoal(&["check", "--colour"]).status.code(), Some(2));
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED the unit check: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/shoal.service"
    ))
    .expect("systemd/shoal.service");
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    // Verify it against the binary just built (the unit names /usr/bin/shoal).
    let dir = std::env::temp_dir().join(format!("shoal-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("shoal.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/shoal", env!("CARGO_BIN_EXE_shoal")),
    )
    .expect("written");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("runs");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let report = String::from_utf8_lossy(&security.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for shoal.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("an exposure level");
    eprintln!("systemd-analyze security: exposure {level}");
    assert!(level < 2.5, "exposure {level}\n{report}");
}
