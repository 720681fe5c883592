//! Files the agent owns (identity, state lists, mesh key, API token): read
//! bounded and never through a symbolic link, written through a temporary
//! file with an unpredictable name created exclusively, so a link planted
//! in the state directory can neither redirect a write nor stand in for a
//! file.

use rustix::fs::OFlags;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Opens `path` for reading without following a final symbolic link, and
/// only if it is a regular file. Errors name the problem (the caller adds
/// the path); `NotFound` stays `NotFound`.
pub fn open_own(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|error| {
            if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                refused("is a symbolic link; the agent does not follow links in its own files")
            } else {
                error
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(refused("is not a regular file"));
    }
    Ok(file)
}

/// Reads `path` (see [`open_own`]) as text of at most
/// [`shoal_config::MAX_FILE_BYTES`].
pub fn read_own(path: &Path) -> io::Result<String> {
    shoal_config::read_bounded(open_own(path)?)
}

/// The first line of a secret file named by configuration `setting`
/// (`mqtt.password_file`, `password_file` ...), or why it cannot be read.
pub fn read_first_line(path: &Path, setting: &str) -> Result<String, String> {
    let text =
        read_own(path).map_err(|e| format!("cannot read {setting} {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// Like [`read_own`], and the file must belong to the user the agent runs
/// as: a secret written by someone else is not this node's.
pub fn read_owned_secret(path: &Path) -> io::Result<String> {
    let file = open_own(path)?;
    let owner = file.metadata()?.uid();
    let me = rustix::process::geteuid().as_raw();
    if owner != me {
        return Err(refused(&format!(
            "belongs to uid {owner}, but the agent runs as uid {me} (chown it, or run the agent as its owner)"
        )));
    }
    shoal_config::read_bounded(file)
}

/// Writes `bytes` (mode 0600, synced) to a new temporary file beside
/// `path`, then renames it over `path` (`replace`) or links it there,
/// refusing an existing file. `path` itself must not be a symbolic link.
/// The directory is synced so the new entry survives a power cut.
pub fn write_own(path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(refused(
            "is a symbolic link; the agent does not write through links (remove it)",
        ));
    }
    let temporary = temporary_beside(path)?;
    let written = (|| {
        // `create_new` is O_CREAT|O_EXCL: it never follows a link, and the
        // name is unpredictable, so nothing can be planted there first.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if replace {
            fs::rename(&temporary, path)?;
        } else {
            fs::hard_link(&temporary, path)?;
        }
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    let _ = fs::remove_file(&temporary);
    written
}

/// Whether the agent can create files in directory `dir`: creates a
/// temporary file there exclusively (as [`write_own`] does) and removes it
/// again. Nothing else is touched; a crash in between leaves a name that
/// [`remove_stale_temporaries`] clears.
pub fn probe_writable(dir: &Path) -> io::Result<()> {
    let temporary = temporary_beside(&dir.join("write-test"))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(&temporary)?;
    fs::remove_file(&temporary)
}

/// `.NAME.<16 random hex>.tmp` in `path`'s directory.
fn temporary_beside(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| refused("names no file"))?
        .to_string_lossy();
    let mut random = [0u8; 8];
    File::open("/dev/urandom")?.read_exact(&mut random)?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(path.with_file_name(format!(".{name}.{suffix}.tmp")))
}

/// Removes temporary files left in `dir` by a write a crash cut short.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn refused(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_link_is_neither_read_nor_written_through() {
        let dir = scratch("link");
        let target = dir.join("target");
        fs::write(&target, "precious\n").expect("target");
        let link = dir.join("identity");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        let error = read_own(&link).expect_err("a link is not read");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        let error = write_own(&link, b"new", true).expect_err("a link is not replaced");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(fs::read_to_string(&target).expect("target"), "precious\n");
        assert!(fs::symlink_metadata(&link).expect("link").is_symlink());
        fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn writes_go_through_fresh_private_files_and_leave_none_behind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("write");
        let path = dir.join("peers");
        write_own(&path, b"one", true).expect("written");
        write_own(&path, b"two", true).expect("replaced");
        assert_eq!(fs::read_to_string(&path).expect("read"), "two");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let error = write_own(&path, b"three", false).expect_err("not replaced");
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("peers")]);
        fs::write(dir.join(".peers.0123456789abcdef.tmp"), "cut short").expect("stale");
        remove_stale_temporaries(&dir);
        assert_eq!(fs::read_dir(&dir).expect("list").count(), 1);
        fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn a_writable_directory_is_probed_without_leaving_anything() {
        let dir = scratch("probe");
        probe_writable(&dir).expect("writable");
        assert_eq!(fs::read_dir(&dir).expect("list").count(), 0);
        let error = probe_writable(&dir.join("missing")).expect_err("no directory");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn a_directory_or_a_huge_file_is_refused() {
        let dir = scratch("kinds");
        let error = read_own(&dir).expect_err("a directory");
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let error = read_own(Path::new("/dev/zero")).expect_err("a device");
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let big = dir.join("big");
        let file = File::create(&big).expect("big");
        file.set_len(shoal_config::MAX_FILE_BYTES + 1)
            .expect("sparse");
        let error = read_own(&big).expect_err("too big");
        assert!(error.to_string().contains("larger than"), "{error}");
        fs::remove_dir_all(&dir).expect("clean");
    }
}
