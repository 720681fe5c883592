//! Invariants checked by reading the source, so they cannot quietly decay.

use std::fs;
use std::path::{Path, PathBuf};

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
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_core_never_touches_io_clocks_threads_or_async() {
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
fn no_test_is_ignored_or_expects_a_panic() {
    let root = workspace_root();
    let mut files = Vec::new();
    for crate_dir in ["agent", "hal", "config", "tests"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    let attributes = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    for file in files {
        let text = fs::read_to_string(&file).expect("readable source");
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
fn config_and_hal_stay_leaves() {
    let root = workspace_root();
    for leaf in ["config", "hal"] {
        let manifest = fs::read_to_string(root.join(leaf).join("Cargo.toml")).expect("manifest");
        for sibling in [
            "shoal ",
            "shoal.",
            "shoal-config",
            "shoal-hal",
            "shoal-tests",
        ] {
            let own = format!("shoal-{leaf}");
            if sibling == own {
                continue;
            }
            let depends = manifest
                .lines()
                .skip_while(|l| !l.starts_with("[dependencies]"))
                .any(|l| l.starts_with(sibling));
            assert!(!depends, "{leaf} must not depend on {sibling}");
        }
    }
}
