//! What this node tells the mesh about its machine ([`Meta`], in beacons):
//! the shoal version, the board model (`/proc/device-tree/model`) and the
//! operating system (`PRETTY_NAME` of `/etc/os-release`). Read once at
//! start, each file bounded; a missing or unreadable one leaves its fact
//! empty, never stops the agent.

use shoal_core::wire::Meta;
use std::io::Read;
use std::path::Path;

/// Most bytes read of either file (a model is one line, os-release a few).
const MAX_READ: u64 = 16 * 1024;

/// The facts about the machine whose filesystem starts at `root` (`/` on a
/// node; a directory of fake files in tests), cut to what the wire carries.
pub fn meta(root: &Path) -> Meta {
    Meta {
        version: fit(env!("CARGO_PKG_VERSION")),
        model: model(root).map(|m| fit(&m)).unwrap_or_default(),
        os: os_name(root).map(|o| fit(&o)).unwrap_or_default(),
        key: None,
    }
}

/// The board model: the device tree's `model`, which ends with a NUL.
fn model(root: &Path) -> Option<String> {
    let bytes = read_start(&root.join("proc/device-tree/model"))?;
    // Only the first string of the property, if there were several.
    let first = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
    let model = std::str::from_utf8(first).ok()?.trim();
    let printable = !model.is_empty() && !model.chars().any(char::is_control);
    printable.then(|| model.to_owned())
}

/// `PRETTY_NAME` of os-release (`/etc/os-release`, else
/// `/usr/lib/os-release`, as os-release(5) says).
fn os_name(root: &Path) -> Option<String> {
    let bytes = read_start(&root.join("etc/os-release"))
        .or_else(|| read_start(&root.join("usr/lib/os-release")))?;
    let text = String::from_utf8_lossy(&bytes);
    let value = text
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("PRETTY_NAME="))?;
    let name = unquote(value.trim());
    (!name.is_empty()).then_some(name)
}

/// A shell-style value: quotes removed, backslash escapes resolved.
fn unquote(value: &str) -> String {
    let inner = match value.as_bytes() {
        [b'"', .., b'"'] | [b'\'', .., b'\''] if value.len() >= 2 => &value[1..value.len() - 1],
        _ => value,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}

/// The first [`MAX_READ`] bytes of `path`, or `None` if it cannot be read.
fn read_start(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// `text` cut to the capacity `N`, at a character boundary.
fn fit<const N: usize>(text: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for c in text.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(name: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("shoal-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("proc/device-tree")).expect("dir");
        std::fs::create_dir_all(root.join("etc")).expect("dir");
        root
    }

    #[test]
    fn a_pi_names_its_model_version_and_os() {
        let root = fake_root("pi");
        std::fs::write(
            root.join("proc/device-tree/model"),
            b"Raspberry Pi 4 Model B Rev 1.4\0",
        )
        .expect("model");
        std::fs::write(
            root.join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n",
        )
        .expect("os-release");
        let facts = meta(&root);
        assert_eq!(facts.version.as_str(), env!("CARGO_PKG_VERSION"));
        assert_eq!(facts.model.as_str(), "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(facts.os.as_str(), "Debian GNU/Linux 12 (bookworm)");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn missing_files_leave_the_facts_empty_and_the_version_stays() {
        let root = fake_root("bare");
        let facts = meta(&root);
        assert_eq!(facts.version.as_str(), env!("CARGO_PKG_VERSION"));
        assert!(facts.model.is_empty() && facts.os.is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn odd_files_are_cut_unquoted_or_ignored() {
        let root = fake_root("odd");
        // Longer than the wire carries, with a second string after the NUL.
        let long = format!("{}\0second\0", "M".repeat(200));
        std::fs::write(root.join("proc/device-tree/model"), long).expect("model");
        // No os-release in /etc: the one in /usr/lib, single-quoted, escaped.
        std::fs::create_dir_all(root.join("usr/lib")).expect("dir");
        std::fs::write(
            root.join("usr/lib/os-release"),
            "ID=x\nPRETTY_NAME='Pi\\'s OS'\n",
        )
        .expect("os-release");
        let facts = meta(&root);
        assert_eq!(facts.model.as_str(), "M".repeat(48));
        assert_eq!(facts.os.as_str(), "Pi's OS");
        // Binary garbage and an empty value: no facts, no panic.
        std::fs::write(root.join("proc/device-tree/model"), b"\xff\xfe\0").expect("model");
        std::fs::write(root.join("etc/os-release"), "PRETTY_NAME=\"\"\n").expect("os");
        let facts = meta(&root);
        assert!(facts.model.is_empty() && facts.os.is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }
}
