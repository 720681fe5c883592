//! Invariants checked by reading the source and the manifests, so they
//! cannot quietly decay: the core's dependencies, the direction of the
//! arrows between crates, a `//!` line atop every file, ARCHITECTURE.md
//! naming every file, unsafe code in one file only, no ignored or
//! panic-expecting test, and READMEs that
//! name only files of the repository, install steps that fit the unit and
//! the binary size BENCHMARKS.md measured.

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "corpus" || n == "artifacts")
            {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every Rust source file of the project (not `target/`), repo-relative.
fn all_sources() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["agent", "config", "hal", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut relative: Vec<PathBuf> = files
        .into_iter()
        .map(|f| f.strip_prefix(&root).expect("under the root").to_path_buf())
        .collect();
    relative.sort();
    relative
}

/// `cargo metadata` of the workspace (no registry access needed: the lock
/// file and the local manifests are enough with `--no-deps`).
fn metadata() -> Value {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The dependencies of workspace package `name`, by kind ("normal",
/// "dev", "build").
fn dependencies(metadata: &Value, name: &str) -> Vec<(String, String)> {
    let package = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("package {name} is in the workspace"));
    package["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| {
            let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
            (d["name"].as_str().expect("a name").to_owned(), kind)
        })
        .collect()
}

#[test]
fn the_core_depends_only_on_what_a_state_machine_needs() {
    // A runtime, a socket, a clock or a HAL in the core's dependencies is an
    // architecture change: it goes in ARCHITECTURE.md first, then here.
    let allowed = [
        "shoal-config",
        "postcard",
        "heapless",
        "serde",
        "log",
        "thiserror",
        "chacha20poly1305",
        "ed25519-dalek",
        "curve25519-dalek",
        "sha2",
    ];
    let allowed_dev = ["proptest"];
    let metadata = metadata();
    let deps = dependencies(&metadata, "shoal-core");
    assert!(
        deps.iter().any(|(name, _)| name == "postcard"),
        "the core's dependencies were read: {deps:?}"
    );
    for (name, kind) in deps {
        let ok = match kind.as_str() {
            "dev" => allowed_dev.contains(&name.as_str()),
            _ => allowed.contains(&name.as_str()),
        };
        assert!(ok, "shoal-core must not depend on {name} ({kind})");
    }
}

#[test]
fn config_and_hal_stay_leaves_and_arrows_point_one_way() {
    let metadata = metadata();
    let workspace = |deps: Vec<(String, String)>| -> BTreeSet<String> {
        deps.into_iter()
            .filter(|(name, kind)| name.starts_with("shoal") && kind != "dev")
            .map(|(name, _)| name)
            .collect()
    };
    let expect = |package: &str, allowed: &[&str]| {
        let found = workspace(dependencies(&metadata, package));
        for name in &found {
            assert!(
                allowed.contains(&name.as_str()),
                "{package} must not depend on {name} (allowed: {allowed:?})"
            );
        }
    };
    expect("shoal-config", &[]);
    expect("shoal-hal", &[]);
    expect("shoal-core", &["shoal-config"]);
    expect("shoal", &["shoal-core", "shoal-config", "shoal-hal"]);
    expect("shoal-tests", &["shoal-core", "shoal-config", "shoal-hal"]);
    // The bench builds forged beacons for its flood with the core.
    expect("shoal-bench", &["shoal-core"]);
}

#[test]
fn the_core_never_touches_io_clocks_threads_or_async() {
    // Cargo keeps runtimes and sockets out (the test above); std is always
    // there, so its clocks, files, threads and environment are checked here.
    let forbidden = [
        "smol",
        "async_io",
        "socket2",
        "UdpSocket",
        "TcpStream",
        "Instant::now",
        "SystemTime",
        "thread_rng",
        "std::thread",
        "std::fs",
        "std::env",
        ".await",
        "async fn",
    ];
    let mut files = Vec::new();
    rust_files(&workspace_root().join("agent/core/src"), &mut files);
    assert!(files.len() >= 6, "the core was found: {files:?}");
    for file in files {
        let text = fs::read_to_string(&file).expect("readable source");
        for (number, line) in text.lines().enumerate() {
            for word in forbidden {
                assert!(
                    !line.contains(word),
                    "{}:{}: the sans-io core must not use `{word}`",
                    file.display(),
                    number + 1
                );
            }
        }
    }
}

#[test]
fn every_source_file_opens_with_a_line_saying_what_it_is() {
    let root = workspace_root();
    let files = all_sources();
    assert!(files.len() > 50, "the sources were found: {}", files.len());
    for file in files {
        let text = fs::read_to_string(root.join(&file)).expect("readable source");
        let first = text.lines().next().unwrap_or("");
        assert!(
            first.starts_with("//! ") && first.len() > 10,
            "{}: the first line must be a `//!` sentence saying what the file is",
            file.display()
        );
    }
}

#[test]
fn architecture_md_names_every_source_file() {
    let root = workspace_root();
    let map = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    // Unit tests live in `x/tests.rs` beside `x.rs` (one convention,
    // stated in ARCHITECTURE.md) and the fuzz targets in their folder.
    assert!(map.contains("`x/tests.rs`"), "the convention is stated");
    let mut missing = Vec::new();
    for file in all_sources() {
        let path = file.to_string_lossy().replace('\\', "/");
        if path.ends_with("/tests.rs") && !path.starts_with("tests/") {
            continue;
        }
        if !map.contains(&format!("`{path}`")) {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md must name every source file (as `path`); missing: {missing:?}"
    );
}

#[test]
fn unsafe_code_is_denied_everywhere_but_the_page_release() {
    let root = workspace_root();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        manifest.contains("unsafe_code = \"deny\""),
        "the workspace denies unsafe code"
    );
    let allow = concat!("allow(", "unsafe_code)");
    let allowed: Vec<String> = all_sources()
        .into_iter()
        .filter(|file| {
            fs::read_to_string(root.join(file))
                .expect("readable source")
                .contains(allow)
        })
        .map(|file| file.to_string_lossy().replace('\\', "/"))
        .collect();
    // `madvise` and `dl_iterate_phdr` have no safe wrapper; every other
    // file stays safe Rust.
    assert_eq!(
        allowed,
        ["agent/src/shell/pages.rs"],
        "files allowing unsafe code"
    );
}

#[test]
fn no_test_is_ignored_or_expects_a_panic() {
    let root = workspace_root();
    let attributes = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    for file in all_sources() {
        let text = fs::read_to_string(root.join(&file)).expect("readable source");
        for (number, line) in text.lines().enumerate() {
            for attribute in attributes {
                assert!(
                    !line.trim_start().starts_with(attribute),
                    "{}:{}: assert the error instead of `{attribute}]`",
                    file.display(),
                    number + 1
                );
            }
        }
    }
}

#[test]
fn the_readmes_point_only_at_files_the_repository_holds() {
    let root = workspace_root();
    for readme in ["README.md", "systemd/README.md", "cross/README.md"] {
        let text = fs::read_to_string(root.join(readme)).expect("readable README");
        let beside = root.join(readme).parent().expect("a folder").to_path_buf();
        let words = text.split(|c: char| {
            !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' || c == '/')
        });
        for word in words.filter(|w| w.len() > 3 && w.ends_with(".md")) {
            assert!(
                beside.join(word).is_file() || root.join(word).is_file(),
                "{readme} names {word}, which is not in the repository"
            );
        }
    }
}

#[test]
fn the_install_steps_fit_the_units_dynamic_user() {
    let root = workspace_root();
    let unit = fs::read_to_string(root.join("systemd/shoal.service")).expect("the unit");
    assert!(
        unit.contains("\nDynamicUser=yes\n"),
        "the checks below assume it"
    );
    for readme in ["README.md", "systemd/README.md"] {
        let text = fs::read_to_string(root.join(readme)).expect("readable README");
        // `usermod ... shoal`: there is no such account to change.
        for (at, _) in text.match_indices("usermod ") {
            let command = text[at..].split(['`', '\n']).next().unwrap_or("");
            assert_ne!(
                command.split_whitespace().last(),
                Some("shoal"),
                "{readme}: `{command}`: with DynamicUser=yes there is no shoal user; the unit's SupplementaryGroups give the groups"
            );
        }
    }
}

#[test]
fn the_readme_binary_size_agrees_with_benchmarks_md() {
    let root = workspace_root();
    let benchmarks = fs::read_to_string(root.join("BENCHMARKS.md")).expect("BENCHMARKS.md");
    let marker = "Release binary (x86_64, stripped): ";
    let bytes: f64 = benchmarks
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .expect("BENCHMARKS.md records the release binary's size");
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let before = readme
        .split(" with the HTTP server")
        .next()
        .filter(|before| before.len() < readme.len())
        .expect("the README gives the binary's size");
    let megabytes: f64 = before
        .rsplit(" MB")
        .nth(1)
        .and_then(|number| number.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a size in MB before \"with the HTTP server\"");
    assert!(
        (megabytes - bytes / 1e6).abs() <= 0.1,
        "README says {megabytes} MB, BENCHMARKS.md {bytes} bytes"
    );
}

/// `cargo run --release -- demo` (the README's first command) needs exactly
/// one binary among the workspace's default members: cargo picks among
/// their `bin` targets, so a second one makes it refuse. Checked from the
/// metadata cargo decides with (building a binary only to check this cost
/// CI a rebuild: `cargo test` unifies dev-dependency features).
#[test]
fn cargo_run_has_exactly_one_binary_to_pick_and_it_is_shoal() {
    let metadata = metadata();
    let defaults: BTreeSet<&str> = metadata["workspace_default_members"]
        .as_array()
        .expect("cargo metadata lists the default members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!defaults.is_empty(), "no default members");
    let bins: Vec<String> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| defaults.contains(id)))
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bins, ["shoal"], "the binaries `cargo run` picks among");
}
