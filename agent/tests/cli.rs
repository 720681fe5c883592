//! The real `shoal` binary's command line.

mod common;

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

/// A file of the test's own, removed (with its directory, once empty)
/// when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            // Fails while another test's file is still there; the last goes.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn scratch(name: &str, text: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("shoal-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    Scratch(path)
}

#[test]
fn version_names_the_protocol() {
    let out = shoal(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("shoal ")
            && text.contains("protocol 2")
            && text.contains(&format!("{}-", std::env::consts::ARCH)),
        "{text}"
    );
}

#[test]
fn check_accepts_the_shipped_example() {
    // Written for a Pi: the file alone (its state directory and programs
    // are this machine's business only when it runs here).
    let out = shoal(&[
        "check",
        "--file-only",
        "--config",
        example().to_str().expect("utf-8 path"),
    ]);
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
fn rules_exits_like_the_other_client_commands() {
    for command in ["status", "peers", "rules"] {
        // No agent there: 3, with one sentence on stderr.
        let out = shoal(&[command, "--api", "127.0.0.1:1"]);
        assert_eq!(out.status.code(), Some(3), "shoal {command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is `shoal run` running there?"), "{stderr}");
        // Bad usage: 2.
        let out = shoal(&[command, "extra", "--api", "127.0.0.1:1"]);
        assert_eq!(out.status.code(), Some(2), "shoal {command} extra");
        let out = shoal(&[command, "--colour"]);
        assert_eq!(out.status.code(), Some(2), "shoal {command} --colour");
    }
}

/// The commands the global usage lists, each with the flags its line names.
fn listed_commands() -> Vec<(String, Vec<String>)> {
    let out = shoal(&["--help"]);
    assert!(out.status.success());
    let usage = String::from_utf8_lossy(&out.stdout).into_owned();
    let listing = usage
        .split("commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a command list");
    let mut commands = Vec::new();
    for line in listing.lines() {
        let Some(entry) = line.strip_prefix("  ").filter(|e| !e.starts_with(' ')) else {
            continue;
        };
        let name = entry.split_whitespace().next().unwrap_or("");
        if name.starts_with('-') {
            continue; // --version
        }
        let flags = entry
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|word| word.starts_with("--"))
            .map(str::to_owned)
            .collect();
        commands.push((name.to_owned(), flags));
    }
    commands
}

#[test]
fn every_command_answers_help_with_its_own_usage_and_exit_0() {
    let commands = listed_commands();
    assert!(commands.len() >= 13, "{commands:?}");
    for (command, flags) in &commands {
        for help in ["--help", "-h"] {
            let out = shoal(&[command, help]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "shoal {command} {help}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.starts_with(&format!("usage: shoal {command}")),
                "shoal {command} {help}:\n{stdout}"
            );
            assert!(
                !stdout.contains("commands:"),
                "not the global usage: {stdout}"
            );
            for flag in flags {
                assert!(
                    stdout.contains(flag.as_str()),
                    "shoal {command} {help} names no {flag}:\n{stdout}"
                );
            }
        }
    }
    // After arguments too, and for the subcommand and through `help`.
    for args in [
        &["key", "rotate", "--help"][..],
        &["exec", "n", "e", "-h"],
        &["help", "status"],
    ] {
        let out = shoal(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: shoal "));
    }
}

/// A stand-in agent on 127.0.0.`host`: answers every request with 200 and
/// a body each client command accepts; yields each request's head.
fn fake_agent(host: u8) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, host], 0)))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (heads, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let reply = if head.starts_with("GET /api/events") {
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_owned()
            } else {
                let body = r#"{"mesh":"online","active":1,"total":1,"self":"fake","nodes":[],"token":"T","node":"n","executor":"e","outcome":"exited","exit_code":0,"output":"","confirmed":[],"left_out":[],"unconfirmed":[]}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = stream.write_all(reply.as_bytes());
            if heads.send(head).is_err() {
                return;
            }
        }
    });
    (addr, seen)
}

#[test]
fn client_commands_take_the_api_address_and_token_file_from_config() {
    let (addr, seen) = fake_agent(211);
    let token_file = scratch("client-api.token", "secret-from-the-file\n");
    let config = scratch(
        "client.toml",
        &format!(
            "[api]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    );
    let config = config.to_str().expect("utf-8 path");
    for (args, path, needs_token) in [
        (&["status"][..], "GET /api/status", false),
        (&["peers"], "GET /api/peers", false),
        (&["rules"], "GET /api/rules", false),
        (&["get", "*/x"], "GET /api/points", false),
        (&["watch"], "GET /api/events", false),
        (&["exec", "n", "e"], "POST /api/exec/n/e", true),
        (&["token"], "POST /api/token", true),
        (&["key", "rotate"], "POST /api/key/rotate", true),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .args(["--config", config])
            .env_remove("SHOAL_TOKEN")
            .output()
            .expect("the shoal binary runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "shoal {args:?} --config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let head = seen
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the request reached the configured address");
        assert!(head.starts_with(path), "shoal {args:?}: {head}");
        if needs_token {
            assert!(
                head.contains("Authorization: Bearer secret-from-the-file\r\n"),
                "shoal {args:?} sent no token from api.token_file: {head}"
            );
        }
    }
    // --api still wins over the configuration.
    let out = shoal(&["status", "--config", config, "--api", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(3));
    // A --config that cannot be read is a configuration error.
    let out = shoal(&["status", "--config", "/nonexistent/shoal.toml"]);
    assert_eq!(out.status.code(), Some(2));
    // An agent listening on every address is reached on loopback.
    let (addr, seen) = fake_agent(1);
    let any = scratch(
        "client-any.toml",
        &format!("[api]\nlisten = \"0.0.0.0:{}\"\n", addr.port()),
    );
    let out = shoal(&["status", "--config", any.to_str().expect("utf-8 path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seen.recv_timeout(std::time::Duration::from_secs(5)).is_ok());
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        common::unavailable(
            "the_systemd_unit_verifies_and_is_hardened",
            "systemd-analyze is not installed",
        );
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/shoal.service"
    ))
    .expect("systemd/shoal.service");
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    // `systemctl reload shoal` sends SIGHUP (a configuration reload).
    assert!(unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
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

fn repo(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

#[test]
fn the_packaged_default_configuration_is_valid() {
    let out = shoal(&[
        "check",
        "--config",
        repo("systemd/shoal.toml").to_str().expect("utf-8"),
        "--file-only",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_deb_has_the_files_and_maintainer_scripts() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        common::unavailable(
            "the_deb_has_the_files_and_maintainer_scripts",
            "dpkg-deb is not installed",
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("shoal-deb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    // Stripped, as a release build is: packing debug info takes a minute.
    let binary = dir.join("shoal");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&binary)
        .arg(env!("CARGO_BIN_EXE_shoal"))
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(env!("CARGO_BIN_EXE_shoal"), &binary).expect("binary copied");
    }
    let built = Command::new(repo("cross/deb"))
        .arg("--binary")
        .arg(&binary)
        .args(["--arch", "amd64", "--out"])
        .arg(&dir)
        .output()
        .expect("cross/deb runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    let info = Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .output()
        .expect("info");
    let info = String::from_utf8_lossy(&info.stdout);
    for line in [
        "Package: shoal",
        "Architecture: amd64",
        "conffiles",
        "postinst",
    ] {
        assert!(info.contains(line), "no {line:?} in\n{info}");
    }
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .expect("contents");
    let contents = String::from_utf8_lossy(&contents.stdout);
    for file in [
        "./usr/bin/shoal",
        "./lib/systemd/system/shoal.service",
        "./etc/shoal/shoal.toml",
    ] {
        assert!(contents.contains(file), "no {file} in\n{contents}");
    }
    // Never installed on this machine (a test must not change the host:
    // `dpkg -i` ran the maintainer scripts here and left groups behind).
    // netns.rs unpacks the package into a throwaway root and runs it there;
    // the scripts' own effects (groups, enable, purge) await a chroot of a
    // minimal Debian tree.
    let scripts = dir.join("control");
    let status = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&scripts)
        .status();
    assert!(status.is_ok_and(|s| s.success()), "dpkg-deb -e");
    let postinst = std::fs::read_to_string(scripts.join("postinst")).expect("postinst");
    assert!(
        postinst.contains("groupadd --system \"$group\""),
        "{postinst}"
    );
    let conffiles = std::fs::read_to_string(scripts.join("conffiles")).expect("conffiles");
    assert_eq!(
        conffiles.trim(),
        "/etc/shoal/shoal.toml",
        "the configuration stays on remove"
    );
    let postrm = std::fs::read_to_string(scripts.join("postrm")).expect("postrm");
    assert!(postrm.contains("\"$1\" = purge"), "{postrm}");
    // The packaged unit is the repository's, reload included.
    let tree = dir.join("tree");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .status();
    assert!(status.is_ok_and(|s| s.success()), "dpkg-deb -x");
    let packaged =
        std::fs::read_to_string(tree.join("lib/systemd/system/shoal.service")).expect("unit");
    assert_eq!(
        packaged,
        std::fs::read_to_string(repo("systemd/shoal.service")).expect("unit")
    );
    assert!(packaged.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn init_creates_a_private_key_once_and_never_overwrites_it() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    let config = scratch(
        "init.toml",
        &format!("[state]\ndir = \"{}\"\n", state.display()),
    );
    let config = config.to_str().expect("utf-8 path");
    let out = shoal(&["init", "--config", config]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = state.join("mesh.key");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        key.display().to_string()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    let hex = std::fs::read_to_string(&key).expect("key");
    assert_eq!(hex.trim().len(), 64);
    assert!(hex.trim().chars().all(|c| c.is_ascii_hexdigit()));
    // Never overwritten.
    let again = shoal(&["init", "--config", config]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
    assert_eq!(std::fs::read_to_string(&key).expect("key"), hex);
    // An open mesh has no key to create.
    let open = scratch("open.toml", "[mesh]\nopen = true\n");
    let out = shoal(&["init", "--config", open.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mesh.open = true"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `shoal run --config CONFIG`.
fn shoal_run(config: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command.args(["run", "--config"]).arg(config);
    command
}

/// Runs `command`, stopped after five seconds if it has not exited by
/// itself: `(exit code if it exited, stderr)`.
fn run_briefly(mut command: Command) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the shoal binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr);
    (code, stderr)
}

/// A config for an open mesh on 127.0.0.`host` with its state in `state`.
fn state_config(name: &str, host: u8, state: &std::path::Path) -> Scratch {
    loopback_config(name, host, "open = true\n", "", state, "")
}

/// A config on 127.0.0.`host` (loopback only, ports of its own) with
/// `mesh` and `api` added to their sections, its state in `state`, and
/// `rest` at the end.
fn loopback_config(
    name: &str,
    host: u8,
    mesh: &str,
    api: &str,
    state: &std::path::Path,
    rest: &str,
) -> Scratch {
    scratch(
        name,
        &format!(
            "[mesh]\n{mesh}bind = \"127.0.0.{host}\"\nbroadcast = [\"127.255.255.255\"]\nport = 47{host:03}\nsync_port = 48{host:03}\nnews_port = 46{host:03}\n[api]\nlisten = \"127.0.0.{host}:49{host:03}\"\n{api}[state]\ndir = \"{}\"\n{rest}",
            state.display()
        ),
    )
}

#[test]
fn a_planted_link_in_the_state_directory_is_never_written_through() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    // The old temporary name, planted as a link: it used to be opened
    // with O_TRUNC, following the link, and then renamed to `identity`.
    std::os::unix::fs::symlink(&victim, state.join(".identity.tmp")).expect("plant");
    let config = state_config("link.toml", 201, &state);
    let (code, stderr) = run_briefly(shoal_run(&config));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
    let identity = std::fs::symlink_metadata(state.join("identity")).expect("identity");
    assert!(
        identity.is_file(),
        "identity is a file of its own: {stderr}"
    );
    assert_eq!(code, None, "the agent ran: {stderr}");
    // `identity` itself a link: refused, named, and nothing is touched.
    std::fs::remove_file(state.join("identity")).expect("remove");
    std::os::unix::fs::symlink(&victim, state.join("identity")).expect("plant");
    let (code, stderr) = run_briefly(shoal_run(&config));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/identity", state.display()))
            && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
    assert!(std::fs::symlink_metadata(state.join("identity"))
        .expect("link")
        .is_symlink());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_identity_the_service_cannot_read_stops_it_instead_of_being_replaced() {
    // The attack needs a user the file is unreadable to: root reads
    // anything, so the agent runs as `nobody` (root is needed to switch).
    if !rustix::process::geteuid().is_root()
        || Command::new("setpriv").arg("--version").output().is_err()
    {
        common::unavailable(
            "an_identity_the_service_cannot_read_stops_it_instead_of_being_replaced",
            "needs root and setpriv to run the agent as another user",
        );
        return;
    }
    use std::os::unix::fs::{chown, PermissionsExt};
    let dir = std::env::temp_dir().join(format!("shoal-cli-eacces-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    for path in [&dir, &state] {
        chown(path, Some(65534), Some(65534)).expect("chown");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = state_config("eacces.toml", 202, &state);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(
        config.parent().expect("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let identity = state.join("identity");
    let valid = "shoal-state 2\nnode_key=1111111111111111111111111111111111111111111111111111111111111111\nincarnation=7\nend\n";
    let run_as_nobody = || {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_shoal"))
            .args(["run", "--config"])
            .arg(config.as_os_str());
        run_briefly(command)
    };
    // Unreadable to the service (root's, 0600).
    std::fs::write(&identity, valid).expect("identity");
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, stderr) = run_as_nobody();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&identity.display().to_string()) && stderr.contains("ermission denied"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&identity).expect("kept"), valid);
    // Readable, but someone else's: not this node's secret.
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, stderr) = run_as_nobody();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("belongs to uid 0"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&identity).expect("kept"), valid);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch directory of its own for test `name`, empty.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `shoal check` of `config` exits 2 with `shoal: MESSAGE` (a line that
/// contains `message`), and `shoal run` refuses to start with that same
/// line and exit 1: check passes only what run starts.
fn check_and_run_refuse(config: &std::path::Path, message: &str) {
    let out = shoal(&["check", "--config", config.to_str().expect("utf-8 path")]);
    let checked = String::from_utf8_lossy(&out.stderr);
    let line = checked
        .lines()
        .find(|line| line.starts_with("shoal: ") && line.contains(message))
        .unwrap_or_else(|| panic!("check said nothing of {message:?}: {checked}"));
    assert_eq!(out.status.code(), Some(2), "check: {checked}");
    let (code, ran) = run_briefly(shoal_run(config));
    assert_eq!(code, Some(1), "run refuses to start: {ran}");
    assert!(
        ran.lines().any(|l| l == line),
        "run says what check said ({line:?}): {ran}"
    );
}

#[test]
fn check_refuses_a_malformed_mesh_key_as_run_does() {
    let dir = scratch_dir("bad-key");
    let key = dir.join("mesh.key");
    std::fs::write(&key, "abcd\n").expect("key");
    let mesh = format!("key_file = \"{}\"\n", key.display());
    let config = loopback_config("bad-key.toml", 203, &mesh, "", &dir.join("state"), "");
    check_and_run_refuse(
        &config,
        &format!(
            "mesh key {}: expected 64 hex digits, found 4",
            key.display()
        ),
    );
    assert_eq!(std::fs::read_to_string(&key).expect("kept"), "abcd\n");
    assert!(
        !dir.join("state").exists(),
        "no identity made for a start refused"
    );
    // Missing is fine where run creates it, not in a directory that is not there.
    let key = dir.join("no-such-dir/mesh.key");
    let mesh = format!("key_file = \"{}\"\n", key.display());
    let config = loopback_config("no-key-dir.toml", 203, &mesh, "", &dir.join("state"), "");
    check_and_run_refuse(
        &config,
        &format!("cannot write {}: No such file or directory", key.display()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_refuses_a_mesh_key_that_is_a_symbolic_link_as_run_does() {
    let dir = scratch_dir("link-key");
    let target = dir.join("elsewhere.key");
    std::fs::write(&target, format!("{}\n", "ab".repeat(32))).expect("key");
    let key = dir.join("mesh.key");
    std::os::unix::fs::symlink(&target, &key).expect("link");
    let mesh = format!("key_file = \"{}\"\n", key.display());
    let config = loopback_config("link-key.toml", 204, &mesh, "", &dir.join("state"), "");
    check_and_run_refuse(
        &config,
        &format!("mesh key {}: is a symbolic link", key.display()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_refuses_a_state_directory_that_cannot_be_made_as_run_does() {
    // Root may write anywhere: a regular file on the path stops even root.
    let dir = scratch_dir("state-under-file");
    std::fs::write(dir.join("file"), "not a directory\n").expect("file");
    let state = dir.join("file/state");
    let config = state_config("state-under-file.toml", 205, &state);
    check_and_run_refuse(
        &config,
        &format!("cannot create state directory {}", state.display()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_refuses_an_executor_whose_program_is_missing_as_run_does() {
    let dir = scratch_dir("no-program");
    let missing = dir.join("no-such-program");
    let rest = format!(
        "[[executor]]\nname = \"gone\"\naction = {{ command = [\"{}\", \"-x\"] }}\n[[executor]]\nname = \"found\"\naction = {{ command = [\"sh\", \"-c\", \"true\"] }}\n",
        missing.display()
    );
    let config = loopback_config(
        "no-program.toml",
        206,
        "open = true\n",
        "",
        &dir.join("state"),
        &rest,
    );
    check_and_run_refuse(
        &config,
        &format!(
            "executor \"gone\": cannot start {}: no such program",
            missing.display()
        ),
    );
    // A file that is not executable is refused too.
    std::fs::write(&missing, "#!/bin/sh\n").expect("program");
    check_and_run_refuse(
        &config,
        &format!(
            "executor \"gone\": cannot start {}: not executable",
            missing.display()
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_refuses_a_bad_api_token_file_as_run_does() {
    let dir = scratch_dir("bad-token");
    let token = dir.join("api.token");
    std::fs::write(&token, "two words\n").expect("token");
    let api = format!("token_file = \"{}\"\n", token.display());
    let config = loopback_config(
        "bad-token.toml",
        207,
        "open = true\n",
        &api,
        &dir.join("state"),
        "",
    );
    check_and_run_refuse(
        &config,
        &format!(
            "API token file {} is empty or holds whitespace",
            token.display()
        ),
    );
    // A link in its place is not followed.
    std::fs::remove_file(&token).expect("remove");
    std::os::unix::fs::symlink(dir.join("elsewhere"), &token).expect("link");
    check_and_run_refuse(
        &config,
        &format!("cannot read {}: is a symbolic link", token.display()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_creates_nothing_that_run_would_create() {
    let dir = scratch_dir("check-creates-nothing");
    let state = dir.join("new/state");
    let config = loopback_config("creates-nothing.toml", 208, "", "", &state, "");
    let out = shoal(&["check", "--config", config.to_str().expect("utf-8 path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "no state directory, key or identity: {left:?}"
    );
    // --file-only: the file alone, whatever this machine lacks.
    let missing = loopback_config(
        "file-only.toml",
        208,
        "",
        "",
        &dir.join("file/state"),
        "[[executor]]\nname = \"gone\"\naction = { command = [\"/nonexistent/program\"] }\n",
    );
    std::fs::write(dir.join("file"), "a file, not a directory\n").expect("file");
    let config = missing.to_str().expect("utf-8 path");
    let out = shoal(&["check", "--config", config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "shoal: {config} is valid, but shoal run would not start on this machine as uid"
        )) && stderr.contains("(2 problems;"),
        "{stderr}"
    );
    let out = shoal(&["check", "--config", config, "--file-only"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_refuses_an_mqtt_password_file_it_cannot_read_as_run_does() {
    let dir = scratch_dir("mqtt-password");
    let password = dir.join("no-such.password");
    let rest = format!(
        "[mqtt]\nbroker = \"mqtt://127.0.0.1:9\"\nusername = \"shoal\"\npassword_file = \"{}\"\n",
        password.display()
    );
    let config = loopback_config(
        "mqtt-password.toml",
        209,
        "open = true\n",
        "",
        &dir.join("state"),
        &rest,
    );
    check_and_run_refuse(
        &config,
        &format!(
            "cannot read mqtt.password_file {}: No such file or directory",
            password.display()
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_refuses_a_command_sensor_without_its_program_and_an_unreadable_http_password() {
    let dir = scratch_dir("sensor-sources");
    let missing = dir.join("no-such-probe");
    let password = dir.join("no-such.password");
    let cases = [
        (
            format!(
                "[[sensor]]\nname = \"ups\"\ndriver = \"command\"\ncommand = [\"{}\"]\n",
                missing.display()
            ),
            format!(
                "sensor \"ups\": cannot start {}: no such program",
                missing.display()
            ),
        ),
        (
            format!(
                "[[sensor]]\nname = \"plug\"\ndriver = \"http\"\nurl = \"http://127.0.0.1:9/\"\nusername = \"admin\"\npassword_file = \"{}\"\n",
                password.display()
            ),
            format!(
                "sensor \"plug\": cannot read password_file {}: No such file or directory",
                password.display()
            ),
        ),
    ];
    for (rest, expected) in cases {
        let config = loopback_config(
            "sensor-sources.toml",
            212,
            "open = true\n",
            "",
            &dir.join("state"),
            &rest,
        );
        check_and_run_refuse(&config, &expected);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
