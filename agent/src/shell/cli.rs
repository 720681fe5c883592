//! The command line: parses arguments, runs a command, returns the exit code.
//!
//! Exit codes (INTERFACE.md): 0 ok, 1 runtime failure, 2 bad usage or bad
//! config, 3 agent not reachable. Errors go to stderr as one clear sentence.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

/// Where `shoal run` and `shoal check` look without `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/shoal/shoal.toml";

const USAGE: &str = "usage: shoal <command> [options]

commands:
  run [--config PATH]     run the agent (default /etc/shoal/shoal.toml; without
                          a file: embedded defaults, loopback only, simulated sensors)
  demo [--nodes N]        a local mesh of N (default 3) agents on 127.0.0.x with
                          simulated sensors; Ctrl-C stops it and removes everything
  check [--config PATH]   validate a configuration (default /etc/shoal/shoal.toml)
  --version               version, target and protocol

Logging: RUST_LOG=debug|info|warn (default info).
The commands status, get, watch, peers and exec arrive with the API.";

/// Runs the command line `args` (without the program name).
pub fn run(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!("{}", crate::version_line());
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("check") => match config_flag(&args[1..]) {
            Ok(path) => check(path),
            Err(message) => usage_error(&message),
        },
        Some("demo") => match demo_flags(&args[1..]) {
            Ok((nodes, port)) => crate::shell::demo::run(nodes, port),
            Err(message) => usage_error(&message),
        },
        Some("run") => match config_flag(&args[1..]) {
            Ok(path) => run_agent(path),
            Err(message) => usage_error(&message),
        },
        Some(other) => usage_error(&format!("unknown command {other:?}")),
        None => usage_error("no command given"),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("shoal: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

/// Parses `[--nodes N] [--port P]` (`--port`: the demo's beacon port).
fn demo_flags(args: &[String]) -> Result<(usize, u16), String> {
    let mut nodes = 3;
    let mut port = crate::shell::demo::DEMO_PORT;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = rest.next();
        match (arg.as_str(), value) {
            ("--nodes" | "-n", Some(v)) => {
                nodes = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=crate::shell::demo::MAX_DEMO_NODES).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "--nodes must be 1 to {}",
                            crate::shell::demo::MAX_DEMO_NODES
                        )
                    })?;
            }
            ("--port", Some(v)) => {
                port = v
                    .parse()
                    .ok()
                    .filter(|p| (1024..65535).contains(p))
                    .ok_or("--port must be 1024 to 65534")?;
            }
            (flag, _) => {
                return Err(format!(
                    "unexpected argument {flag:?} (demo takes --nodes N)"
                ))
            }
        }
    }
    Ok((nodes, port))
}

/// Parses `[--config PATH]`.
fn config_flag(args: &[String]) -> Result<Option<PathBuf>, String> {
    let mut path = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--config" | "-c" => match rest.next() {
                Some(value) => path = Some(PathBuf::from(value)),
                None => return Err("--config needs a path".to_owned()),
            },
            other => match other.strip_prefix("--config=") {
                Some(value) => path = Some(PathBuf::from(value)),
                None => return Err(format!("unexpected argument {other:?}")),
            },
        }
    }
    Ok(path)
}

/// `shoal run`: 0 after a graceful stop, 1 on a runtime failure, 2 on a bad
/// configuration.
fn run_agent(path: Option<PathBuf>) -> ExitCode {
    init_logging();
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let config = if !explicit && !path.exists() {
        let mut config = shoal_config::embedded();
        log::info!(
            "{} not found: using the embedded defaults (loopback only, simulated sensors)",
            path.display()
        );
        if std::fs::create_dir_all(&config.state.dir).is_err() {
            if let Some(home) = std::env::var_os("HOME") {
                config.state.dir = PathBuf::from(home).join(".local/state/shoal");
                log::info!(
                    "{} is not writable: keeping state in {}",
                    shoal_config::defaults::STATE_DIR,
                    config.state.dir.display()
                );
            }
        }
        config
    } else {
        match shoal_config::load(&path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("{error}");
                eprintln!(
                    "shoal: not started: fix the configuration (shoal check --config {})",
                    path.display()
                );
                return ExitCode::from(2);
            }
        }
    };
    match crate::shell::run::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoal: {error}");
            ExitCode::from(1)
        }
    }
}

/// `RUST_LOG` (default `info`); no timestamps under journald, which adds its own.
fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format_timestamp(None);
    } else {
        builder.format_timestamp_millis();
    }
    let _ = builder.try_init();
}

/// `shoal check`: 0 if valid, 2 with one `file:line:col: message` per problem.
fn check(path: Option<PathBuf>) -> ExitCode {
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if !explicit && !path.exists() {
        let config = shoal_config::embedded();
        println!(
            "{}: not found; shoal run would use the embedded defaults (loopback only, {} simulated sensors), which are valid",
            path.display(),
            config.sensors.len()
        );
        return ExitCode::SUCCESS;
    }
    match shoal_config::load(&path) {
        Ok(config) => {
            println!(
                "{}: ok ({}, {}, {}, {}, {})",
                path.display(),
                count(config.sensors.len(), "sensor"),
                count(config.actuators.len(), "actuator"),
                count(config.executors.len(), "executor"),
                count(config.rules.len(), "rule"),
                count(config.computes.len(), "computed point")
            );
            ExitCode::SUCCESS
        }
        Err(shoal_config::LoadError::Invalid(problems)) => {
            eprintln!("{problems}");
            eprintln!(
                "shoal: {} in {}",
                count(problems.problems.len(), "problem"),
                path.display()
            );
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("shoal: {error}");
            ExitCode::from(2)
        }
    }
}

/// "1 sensor", "3 sensors".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
