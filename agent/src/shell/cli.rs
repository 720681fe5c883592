//! The command line: parses arguments, runs a command, returns the exit code.
//!
//! Exit codes (README.md): 0 ok, 1 runtime failure, 2 bad usage or bad
//! config, 3 agent not reachable, 4 (`status` only) mesh degraded. Errors
//! go to stderr as one clear sentence.
#![allow(clippy::print_stdout)]

use shoal_core::wire;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where `shoal run` and `shoal check` look without `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/shoal/shoal.toml";

const USAGE: &str = "usage: shoal <command> [options]

commands:
  run [--config PATH]     run the agent (default /etc/shoal/shoal.toml; without
                          a file: embedded defaults, loopback only, simulated sensors)
  demo [--nodes N]        a local mesh of N (default 3) agents on 127.0.0.x with
                          simulated sensors; Ctrl-C stops it and removes everything
  check [--config PATH] [--file-only]
                          validate a configuration (default /etc/shoal/shoal.toml)
                          and what run needs of this machine (state directory, key,
                          token, executor programs); --file-only: the file alone
  init [--config PATH]    create this mesh's key (mode 0600) where run reads it
                          (mesh.key_file, or mesh.key in the state directory);
                          never overwrites one; run creates it too if missing
  get [GLOB] [--api ADDR] [--json]
                          current points, e.g. shoal get '*/temperature'
  watch [GLOB] [--api ADDR]
                          point and node changes as they happen; Ctrl-C stops
  status [--api ADDR] [--json]
                          the mesh as the agent sees it: each node's state and route
  peers [--healthy] [--api ADDR] [--json]
                          direct peers with health figures
  rules [--api ADDR] [--json]
                          every rule's state, condition and since when; why an
                          unknown one is (an input matching nothing, a stale one)
  token [--expire DUR] [--addr HOST:PORT] [--api ADDR] [--token TOKEN] [--config PATH]
                          a one-time join token for a new node (default expiry 15m);
                          --addr: the member address it names (default this node's)
  key rotate [--exclude NODE]... [--api ADDR] [--token TOKEN]
                          a new mesh key for every reachable member; those left out
                          (excluded, offline) must join again with a token
  join TOKEN [--config PATH]
                          enroll this node: get the mesh key from the member the token
                          names (over the mesh port), write it (0600), switch the agent
  exec NODE EXECUTOR [--api ADDR] [--token TOKEN] [--config PATH] [--json]
                          run an executor on any node of the mesh, routed through it;
                          the API token comes from --token, $SHOAL_TOKEN, or the
                          api.token_file of the configuration
  probe [--bus N]         scan I2C bus N (default 1) and name the known sensors,
                          with a [[sensor]] block to paste for each
  --version               version, target and protocol

Commands that talk to an agent find it at --api ADDR, else at api.listen of
--config PATH (default /etc/shoal/shoal.toml), with the API token of its
api.token_file. `shoal COMMAND --help` shows a command's options.

Exit codes: 0 ok, 1 failure, 2 bad usage or configuration, 3 agent not reachable,
4 (status) mesh degraded.
Logging: RUST_LOG=debug|info|warn (default info).";

/// How a client command finds the agent, for every command's help.
const CLIENT_OPTIONS: &str =
    "  --api ADDR         the agent's API address (default: api.listen of the
                     configuration, else 127.0.0.1:8080)
  -c, --config PATH  the configuration giving api.listen and api.token_file
                     (default /etc/shoal/shoal.toml, when it exists)";

/// What `shoal COMMAND --help` prints, by command: its usage and options.
const COMMAND_HELP: &[(&str, &str)] = &[
    (
        "run",
        "usage: shoal run [--config PATH]

Runs the agent until SIGTERM or Ctrl-C; SIGHUP reloads the configuration.

options:
  -c, --config PATH  the configuration (default /etc/shoal/shoal.toml; without
                     that file: embedded defaults, loopback only, simulated sensors)",
    ),
    (
        "demo",
        "usage: shoal demo [--nodes N] [--port PORT]

A local mesh of real agents on 127.0.0.11 upwards with simulated sensors and
a dashboard; Ctrl-C stops it and removes everything.

options:
  -n, --nodes N  how many agents (default 3)
  --port PORT    the demo's beacon port (the sync port and API follow it)",
    ),
    (
        "check",
        "usage: shoal check [--config PATH] [--file-only]

Validates a configuration: exit 0 if valid, else 2 with every problem as
file:line:col: message. For a valid file, also what shoal run needs of this
machine before it starts, checked without creating or changing anything:
the state directory (writable, or creatable), the mesh key and the API
token file (valid, or creatable where run creates them), the node name, and
every command executor's program (exists, executable; a bare name on
$PATH); exit 2 with the very message run would stop with. Sockets are not
opened.

options:
  -c, --config PATH  the file (default /etc/shoal/shoal.toml)
  --file-only        the file alone (a configuration for another machine)",
    ),
    (
        "init",
        "usage: shoal init [--config PATH]

Creates this mesh's key (mode 0600) where run reads it (mesh.key_file, or
mesh.key in the state directory); never overwrites one.

options:
  -c, --config PATH  the configuration (default /etc/shoal/shoal.toml)",
    ),
    (
        "get",
        "usage: shoal get [GLOB] [--api ADDR] [--config PATH] [--json]
       shoal get NODE/NAME --history [--since DUR] [--step DUR] [--json]

Current points, e.g. shoal get '*/temperature' (default '*/*').
With --history, one point's min/avg/max per step from the history its
node keeps (asked of that node through the mesh when it is another one),
e.g. shoal get garage/temperature --history --since 7d --step 6h.

options:
CLIENT_OPTIONS
  --json             the answer as JSON
  --history          the point's history instead of its value
  --since DUR        how far back (default 24h; 1m..366d)
  --step DUR         one line per step (default 1h; at least 1m)",
    ),
    (
        "watch",
        "usage: shoal watch [GLOB] [--api ADDR] [--config PATH] [--json]

Point and node changes as they happen, one line each; Ctrl-C stops.

options:
CLIENT_OPTIONS
  --json             one JSON object per event",
    ),
    (
        "status",
        "usage: shoal status [--api ADDR] [--config PATH] [--json]

The mesh as the agent sees it: every node's state and route. Exit 0 when
the mesh is online, 4 when it is degraded (a node that is not HEALTHY; one
that LEFT, a deliberate stop, does not count).

options:
CLIENT_OPTIONS
  --json             the answer as JSON",
    ),
    (
        "peers",
        "usage: shoal peers [--healthy] [--api ADDR] [--config PATH] [--json]

Direct peers with health figures.

options:
  --healthy          only HEALTHY peers
CLIENT_OPTIONS
  --json             the answer as JSON",
    ),
    (
        "rules",
        "usage: shoal rules [--api ADDR] [--config PATH] [--json]

Every rule of the agent: its state (active, pending, inactive, unknown), its
condition (true, false, unknown) and since when, its last action; for an
unknown rule, why: each input without a value (a pattern that matches no
point, with the nearest existing name; a stale point; a node not live).

options:
CLIENT_OPTIONS
  --json             the answer as JSON (GET /api/rules)",
    ),
    (
        "token",
        "usage: shoal token [--expire DUR] [--addr HOST:PORT] [--api ADDR] [--token TOKEN] [--config PATH]

Asks the agent for a one-time join token for a new node and prints it alone.

options:
  --expire DUR       how long it stays valid (default 15m)
  --addr HOST:PORT   the member address it names (default this node's)
CLIENT_OPTIONS
  --token TOKEN      the API token (else $SHOAL_TOKEN, else api.token_file)",
    ),
    (
        "key",
        "usage: shoal key rotate [--exclude NODE]... [--api ADDR] [--token TOKEN] [--config PATH]

Gives every reachable member a new mesh key; those left out (excluded,
offline) must join again with a token.

options:
  --exclude NODE     leave NODE out (repeatable)
CLIENT_OPTIONS
  --token TOKEN      the API token (else $SHOAL_TOKEN, else api.token_file)",
    ),
    (
        "join",
        "usage: shoal join TOKEN [--config PATH]

Enrolls this node: gets the mesh key from the member the token names (over
the mesh port), writes it (0600) and switches the running agent to it.

options:
  -c, --config PATH  the configuration (default /etc/shoal/shoal.toml)",
    ),
    (
        "exec",
        "usage: shoal exec NODE EXECUTOR [--api ADDR] [--token TOKEN] [--config PATH] [--json]

Runs an executor on any node of the mesh, routed through it; exit 1 unless
it ran and exited 0.

options:
CLIENT_OPTIONS
  --token TOKEN      the API token (else $SHOAL_TOKEN, else api.token_file)
  --json             the answer as JSON",
    ),
    (
        "probe",
        "usage: shoal probe [--bus N]

Scans an I2C bus and names the known sensors, with a [[sensor]] block to
paste for each.

options:
  --bus N  the I2C bus (default 1)",
    ),
];

/// `shoal COMMAND --help`: the command's usage and options.
fn command_help(command: &str) -> Option<String> {
    COMMAND_HELP
        .iter()
        .find(|(name, _)| *name == command)
        .map(|(_, text)| text.replace("CLIENT_OPTIONS", CLIENT_OPTIONS))
}

/// Runs the command line `args` (without the program name).
pub fn run(args: &[String]) -> ExitCode {
    let rest = args.get(1..).unwrap_or(&[]);
    if rest.iter().any(|arg| arg == "--help" || arg == "-h") {
        if let Some(help) = args.first().and_then(|command| command_help(command)) {
            println!("{help}");
            return ExitCode::SUCCESS;
        }
    }
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!("{}", crate::version_line());
            ExitCode::SUCCESS
        }
        Some("help") if !rest.is_empty() => match command_help(&rest[0]) {
            Some(help) => {
                println!("{help}");
                ExitCode::SUCCESS
            }
            None => usage_error(&format!("unknown command {:?}", rest[0])),
        },
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("check") => {
            let file_only = args[1..].iter().any(|arg| arg == "--file-only");
            let rest: Vec<String> = args[1..]
                .iter()
                .filter(|arg| *arg != "--file-only")
                .cloned()
                .collect();
            match config_flag(&rest) {
                Ok(path) => check(path, file_only),
                Err(message) => usage_error(&message),
            }
        }
        Some("demo") => match demo_flags(&args[1..]) {
            Ok((nodes, port)) => crate::shell::demo::run(nodes, port),
            Err(message) => usage_error(&message),
        },
        Some("run") => match config_flag(&args[1..]) {
            Ok(path) => run_agent(path),
            Err(message) => usage_error(&message),
        },
        Some("init") => match config_flag(&args[1..]) {
            Ok(path) => init(path),
            Err(message) => usage_error(&message),
        },
        Some("probe") => match probe_flags(&args[1..]) {
            Ok(bus) => probe(bus),
            Err(message) => usage_error(&message),
        },
        Some("watch") => match client_flags(&args[1..]) {
            Ok(flags) => watch(&flags),
            Err(message) => usage_error(&message),
        },
        Some("token") => match client_flags(&args[1..]) {
            Ok(flags) => token(&flags),
            Err(message) => usage_error(&message),
        },
        Some("key") => match (
            args.get(1).map(String::as_str),
            client_flags(args.get(2..).unwrap_or(&[])),
        ) {
            (Some("rotate"), Ok(flags)) => key_rotate(&flags),
            (Some("rotate"), Err(message)) => usage_error(&message),
            _ => usage_error("key takes: rotate [--exclude NODE]..."),
        },
        Some("join") => match client_flags(&args[1..]) {
            Ok(flags) => join(&flags),
            Err(message) => usage_error(&message),
        },
        Some(command @ ("status" | "peers" | "rules" | "exec" | "get")) => {
            match client_flags(&args[1..]) {
                Ok(flags) => client_command(command, &flags),
                Err(message) => usage_error(&message),
            }
        }
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
    // The file SIGHUP re-reads: the one given, or the default one if it
    // exists (else the embedded defaults, and nothing to re-read).
    let file = path
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|default| default.exists()));
    let config = match configuration(path, "not started") {
        Ok(config) => config,
        Err(code) => return code,
    };
    match crate::shell::agent::run(config, file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoal: {error}");
            ExitCode::from(1)
        }
    }
}

/// `shoal init`: creates this mesh's key where `shoal run` will read it;
/// never overwrites one. 0 with the path on stdout, 1 if a key exists or
/// cannot be written, 2 on a bad configuration or an open mesh.
fn init(path: Option<PathBuf>) -> ExitCode {
    let config = match configuration(path, "no key created") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(key) = config.key_path() else {
        eprintln!("shoal: mesh.open = true: an open mesh has no key (remove it to use one)");
        return ExitCode::from(2);
    };
    if key.exists() {
        eprintln!(
            "shoal: a mesh key exists at {} already; shoal init never overwrites one",
            key.display()
        );
        return ExitCode::from(1);
    }
    if let Some(dir) = key.parent() {
        let _ = crate::shell::state::create_private_dir(dir);
    }
    match crate::shell::state::create_key(&key) {
        Ok(()) => {
            println!("{}", key.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("shoal: {error}");
            ExitCode::from(1)
        }
    }
}

/// The configuration at `path`, or the embedded defaults when no path was
/// given and the default file does not exist (with the state directory
/// moved to `~/.local/state/shoal` when the system one is not writable).
/// A bad file is printed with `what` happened, and exit code 2.
fn configuration(path: Option<PathBuf>, what: &str) -> Result<shoal_config::Config, ExitCode> {
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if !explicit && !path.exists() {
        log::info!(
            "{} not found: using the embedded defaults (loopback only, simulated sensors)",
            path.display()
        );
        let config = embedded_configuration();
        if config.state.dir != std::path::Path::new(shoal_config::defaults::STATE_DIR) {
            log::info!(
                "{} is not writable: keeping state in {}",
                shoal_config::defaults::STATE_DIR,
                config.state.dir.display()
            );
        }
        return Ok(config);
    }
    shoal_config::load(&path).map_err(|error| {
        eprintln!("{error}");
        eprintln!(
            "shoal: {what}: fix the configuration (shoal check --config {})",
            path.display()
        );
        ExitCode::from(2)
    })
}

/// The embedded defaults, with the state directory (and the API token in
/// it) moved to `~/.local/state/shoal` when the system one cannot be used;
/// decided without creating either (`shoal check` creates nothing, and
/// `shoal run` creates its state directory as it starts).
fn embedded_configuration() -> shoal_config::Config {
    let mut config = shoal_config::embedded();
    if crate::shell::state::check_dir(&config.state.dir).is_err() {
        if let Some(home) = std::env::var_os("HOME") {
            config.state.dir = PathBuf::from(home).join(".local/state/shoal");
            config.api.token_file = config.state.dir.join("api.token");
        }
    }
    config
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

/// `shoal check`: 0 if `shoal run` would start with the configuration, 2
/// with one `file:line:col: message` per problem of the file, or, for a
/// valid file, with what would stop `run` on this machine (the very
/// messages `run` prints: [`crate::shell::preflight`]). `file_only`: the
/// file alone, for a configuration meant for another machine.
fn check(path: Option<PathBuf>, file_only: bool) -> ExitCode {
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if !explicit && !path.exists() {
        let config = embedded_configuration();
        if !file_only {
            if let Err(code) = machine_problems(&config, "the embedded defaults are") {
                return code;
            }
        }
        println!(
            "{}: not found; shoal run would use the embedded defaults (loopback only, {} simulated sensors), which are valid",
            path.display(),
            config.sensors.len()
        );
        return ExitCode::SUCCESS;
    }
    match shoal_config::load(&path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!(
                    "{}:{}:{}: warning: {}",
                    path.display(),
                    warning.line,
                    warning.col,
                    warning.message
                );
            }
            if !file_only {
                if let Err(code) = machine_problems(&config, &format!("{} is", path.display())) {
                    return code;
                }
            }
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

/// What would stop `shoal run` with `config` here, each as `shoal:
/// MESSAGE`, exactly as run prints it, then a line that `valid` ("FILE
/// is") is valid but would not start; `Err(2)` if anything would stop it.
fn machine_problems(config: &shoal_config::Config, valid: &str) -> Result<(), ExitCode> {
    let problems = crate::shell::preflight::problems(config);
    if problems.is_empty() {
        return Ok(());
    }
    for problem in &problems {
        eprintln!("shoal: {problem}");
    }
    eprintln!(
        "shoal: {valid} valid, but shoal run would not start on this machine as uid {} ({}; --file-only checks the file alone)",
        rustix::process::geteuid().as_raw(),
        count(problems.len(), "problem")
    );
    Err(ExitCode::from(2))
}

/// "1 sensor", "3 sensors".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Options of the commands that talk to an agent.
#[derive(Debug, Default)]
struct ClientFlags {
    api: Option<String>,
    json: bool,
    healthy: bool,
    token: Option<String>,
    config: Option<PathBuf>,
    expire: Option<String>,
    addr: Option<String>,
    exclude: Vec<String>,
    /// `get --history`, with `--since` and `--step`.
    history: bool,
    since: Option<String>,
    step: Option<String>,
    positional: Vec<String>,
}

fn client_flags(args: &[String]) -> Result<ClientFlags, String> {
    let mut flags = ClientFlags::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |name: &str| {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--api" => flags.api = Some(value("--api")?),
            "--token" => flags.token = Some(value("--token")?),
            "--config" | "-c" => flags.config = Some(PathBuf::from(value("--config")?)),
            "--json" => flags.json = true,
            "--expire" => flags.expire = Some(value("--expire")?),
            "--addr" => flags.addr = Some(value("--addr")?),
            "--exclude" => flags.exclude.push(value("--exclude")?),
            "--healthy" => flags.healthy = true,
            "--history" => flags.history = true,
            "--since" => flags.since = Some(value("--since")?),
            "--step" => flags.step = Some(value("--step")?),
            flag if flag.starts_with('-') => return Err(format!("unexpected option {flag:?}")),
            _ => flags.positional.push(arg.clone()),
        }
    }
    Ok(flags)
}

/// `status`, `peers`, `rules`, `get`, `exec`: exit 3 when no agent
/// answers, 2 on bad usage, 1 when the agent refuses or fails; `status`
/// exits 4 when the mesh is degraded.
fn client_command(command: &str, flags: &ClientFlags) -> ExitCode {
    use crate::shell::client;
    let endpoint = match endpoint(flags) {
        Ok(endpoint) => endpoint,
        Err(code) => return code,
    };
    let (method, path, token, wait) = match client_request(command, flags, &endpoint) {
        Ok(request) => request,
        Err(code) => return code,
    };
    let api = endpoint.api.as_str();
    let reply = match client::request(api, method, &path, token.as_deref(), wait) {
        Ok(reply) => reply,
        Err(error @ client::ClientError::Unreachable { .. }) => {
            eprintln!("shoal: {error} (is `shoal run` running there? see --api)");
            return ExitCode::from(3);
        }
        Err(error @ client::ClientError::BadAddress(_)) => return usage_error(&error.to_string()),
        Err(error) => {
            eprintln!("shoal: {error}");
            return ExitCode::from(1);
        }
    };
    if reply.status == 401 {
        eprintln!(
            "shoal: the agent refused: {} (pass --token, set SHOAL_TOKEN, or run where the token file is readable)",
            reply.error()
        );
        return ExitCode::from(1);
    }
    if reply.status != 200 {
        eprintln!("shoal: {}", reply.error());
        return ExitCode::from(1);
    }
    print_reply(command, flags, &reply)
}

/// The method, path, token and wait of a client command's API request.
type ClientRequest = (&'static str, String, Option<String>, Duration);

/// What a client command asks the API.
fn client_request(
    command: &str,
    flags: &ClientFlags,
    endpoint: &Endpoint,
) -> Result<ClientRequest, ExitCode> {
    Ok(match (command, flags.positional.as_slice()) {
        ("status", []) => (
            "GET",
            "/api/status".to_owned(),
            None,
            Duration::from_secs(10),
        ),
        ("get", [point]) if flags.history => history_request(point, flags)?,
        ("get", _) if flags.history => {
            return Err(usage_error("get --history needs one NODE/NAME"))
        }
        ("get", globs) if globs.len() <= 1 => {
            let glob = globs.first().map_or("*/*", String::as_str);
            (
                "GET",
                format!(
                    "/api/points?glob={}",
                    glob.replace('*', "%2A").replace('?', "%3F")
                ),
                None,
                Duration::from_secs(10),
            )
        }
        ("peers", []) => {
            let query = if flags.healthy { "?healthy=true" } else { "" };
            (
                "GET",
                format!("/api/peers{query}"),
                None,
                Duration::from_secs(10),
            )
        }
        ("rules", []) => (
            "GET",
            "/api/rules".to_owned(),
            None,
            Duration::from_secs(10),
        ),
        ("exec", [node, executor]) => (
            "POST",
            format!("/api/exec/{node}/{executor}"),
            api_token(flags, endpoint),
            crate::shell::api::EXEC_WAIT + Duration::from_secs(5),
        ),
        ("exec", _) => return Err(usage_error("exec needs NODE and EXECUTOR")),
        (_, [extra, ..]) => return Err(usage_error(&format!("unexpected argument {extra:?}"))),
        _ => return Err(usage_error("unknown command")),
    })
}

/// `get NODE/NAME --history`: the request, its range checked here so a
/// typo is a usage error, not a round trip.
fn history_request(point: &str, flags: &ClientFlags) -> Result<ClientRequest, ExitCode> {
    let Some((node, name)) = point.split_once('/').filter(|(n, p)| {
        !n.is_empty() && !p.is_empty() && !point.contains(['*', '?']) && !p.contains('/')
    }) else {
        return Err(usage_error(&format!(
            "get --history needs one NODE/NAME, not {point:?}"
        )));
    };
    let duration = |flag: &str, value: &Option<String>, default: &str| {
        let text = value.clone().unwrap_or_else(|| default.to_owned());
        match shoal_config::parse_duration(&text) {
            Ok(_) => Ok(text),
            Err(why) => Err(usage_error(&format!("{flag} {text:?}: {why}"))),
        }
    };
    let since = duration("--since", &flags.since, "24h")?;
    let step = duration("--step", &flags.step, "1h")?;
    Ok((
        "GET",
        format!("/api/points/{node}/{name}/history?since={since}&step={step}"),
        None,
        Duration::from_secs(60),
    ))
}

/// Prints a client command's answer and says how it ended.
fn print_reply(
    command: &str,
    flags: &ClientFlags,
    reply: &crate::shell::client::Reply,
) -> ExitCode {
    use crate::shell::client;
    if flags.json {
        println!("{}", reply.body);
    } else {
        match command {
            "status" => print!("{}", client::format_status(&reply.body)),
            "peers" => print!("{}", client::format_peers(&reply.body)),
            "rules" => print!("{}", client::format_rules(&reply.body)),
            "get" if flags.history => print!("{}", client::format_history(&reply.body)),
            "get" => print!("{}", client::format_points(&reply.body)),
            _ => {
                let output = reply.body["output"].as_str().unwrap_or("");
                print!("{output}");
                if !output.is_empty() && !output.ends_with('\n') {
                    println!();
                }
            }
        }
    }
    if command == "status" && reply.body["mesh"] == "degraded" {
        return ExitCode::from(4);
    }
    if command == "exec" {
        let outcome = reply.body["outcome"].as_str().unwrap_or("");
        let code = reply.body["exit_code"].as_i64();
        if outcome != "exited" || code != Some(0) {
            eprintln!(
                "shoal: {} on {}: {}",
                reply.body["executor"].as_str().unwrap_or("?"),
                reply.body["node"].as_str().unwrap_or("?"),
                match (outcome, code) {
                    ("exited", Some(code)) => format!("exited with code {code}"),
                    ("timed_out", _) => "timed out and was stopped".to_owned(),
                    _ => "failed".to_owned(),
                }
            );
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// `shoal token`: asks the agent for a join token and prints it alone.
fn token(flags: &ClientFlags) -> ExitCode {
    use crate::shell::client;
    if let [extra, ..] = flags.positional.as_slice() {
        return usage_error(&format!("unexpected argument {extra:?}"));
    }
    let endpoint = match endpoint(flags) {
        Ok(endpoint) => endpoint,
        Err(code) => return code,
    };
    let api = endpoint.api.as_str();
    let mut query = Vec::new();
    if let Some(expire) = &flags.expire {
        query.push(format!("expire={expire}"));
    }
    if let Some(addr) = &flags.addr {
        query.push(format!("addr={addr}"));
    }
    let path = format!("/api/token?{}", query.join("&"));
    let api_token = api_token(flags, &endpoint);
    match client::request(
        api,
        "POST",
        &path,
        api_token.as_deref(),
        Duration::from_secs(10),
    ) {
        Ok(reply) if reply.status == 200 => {
            println!("{}", reply.body["token"].as_str().unwrap_or(""));
            ExitCode::SUCCESS
        }
        Ok(reply) if reply.status == 401 => {
            eprintln!(
                "shoal: the agent refused: {} (pass --token, set SHOAL_TOKEN, or run where the token file is readable)",
                reply.error()
            );
            ExitCode::from(1)
        }
        Ok(reply) if reply.status == 400 => usage_error(&reply.error()),
        Ok(reply) => {
            eprintln!("shoal: {}", reply.error());
            ExitCode::from(1)
        }
        Err(error @ client::ClientError::Unreachable { .. }) => {
            eprintln!("shoal: {error} (is `shoal run` running there? see --api)");
            ExitCode::from(3)
        }
        Err(error @ client::ClientError::BadAddress(_)) => usage_error(&error.to_string()),
        Err(error) => {
            eprintln!("shoal: {error}");
            ExitCode::from(1)
        }
    }
}

/// `shoal key rotate`: a new mesh key for every reachable member; prints who
/// switched and who was left out (they must join again with a token).
fn key_rotate(flags: &ClientFlags) -> ExitCode {
    use crate::shell::client;
    if let [extra, ..] = flags.positional.as_slice() {
        return usage_error(&format!("unexpected argument {extra:?}"));
    }
    let endpoint = match endpoint(flags) {
        Ok(endpoint) => endpoint,
        Err(code) => return code,
    };
    let api = endpoint.api.as_str();
    let path = if flags.exclude.is_empty() {
        "/api/key/rotate".to_owned()
    } else {
        format!("/api/key/rotate?exclude={}", flags.exclude.join(","))
    };
    let api_token = api_token(flags, &endpoint);
    let reply = match client::request(
        api,
        "POST",
        &path,
        api_token.as_deref(),
        Duration::from_secs(30),
    ) {
        Ok(reply) => reply,
        Err(error @ client::ClientError::Unreachable { .. }) => {
            eprintln!("shoal: {error} (is `shoal run` running there? see --api)");
            return ExitCode::from(3);
        }
        Err(error) => {
            eprintln!("shoal: {error}");
            return ExitCode::from(1);
        }
    };
    if reply.status != 200 {
        eprintln!("shoal: {}", reply.error());
        return ExitCode::from(1);
    }
    let list = |key: &str| -> Vec<String> {
        reply.body[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let confirmed = list("confirmed");
    println!(
        "rotated the mesh key (mesh {}): {} members switched{}",
        reply.body["mesh"].as_str().unwrap_or("?"),
        confirmed.len() + 1,
        if confirmed.is_empty() {
            String::new()
        } else {
            format!(": this node, {}", confirmed.join(", "))
        }
    );
    let left_out: Vec<String> = reply.body["left_out"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|v| {
                    format!(
                        "{} ({})",
                        v["node"].as_str().unwrap_or("?"),
                        v["why"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if !left_out.is_empty() {
        println!(
            "left out: {}: each must join again with a token",
            left_out.join(", ")
        );
    }
    let unconfirmed = list("unconfirmed");
    if unconfirmed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "shoal: no confirmation from {}: if they did not get the key, join them again with a token",
            unconfirmed.join(", ")
        );
        ExitCode::from(1)
    }
}

/// `shoal join TOKEN`: gets the mesh key from the member the token names,
/// writes it where `run` reads it, and switches a running agent over.
fn join(flags: &ClientFlags) -> ExitCode {
    use crate::shell::join::{self, Token};
    let [text] = flags.positional.as_slice() else {
        return usage_error("join needs the TOKEN (from shoal token on a member)");
    };
    let token = match Token::parse(text) {
        Ok(token) => token,
        Err(message) => return usage_error(&message),
    };
    let config = match configuration(flags.config.clone(), "not joined") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(key_path) = config.key_path() else {
        eprintln!(
            "shoal: mesh.open = true: an open mesh takes no key (remove it to join a keyed mesh)"
        );
        return ExitCode::from(2);
    };
    // Where the key goes must be writable before the token is spent.
    let key_dir = key_path.parent().unwrap_or(std::path::Path::new("."));
    let _ = crate::shell::state::create_private_dir(key_dir);
    let probe = key_dir.join(format!(".shoal-join-check-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(error) => {
            eprintln!(
                "shoal: cannot write the mesh key into {}: {error} (run as root: sudo shoal join ...)",
                key_dir.display()
            );
            return ExitCode::from(1);
        }
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = config
        .node
        .name
        .clone()
        .and_then(|n| wire::name(&n))
        .or_else(|| wire::name(hostname.trim()))
        .or_else(|| wire::name("unnamed"))
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let key = match join::ask(&token, config.mesh.bind, &name) {
        Ok(key) => shoal_core::wire::MeshKey(key),
        Err(failure) => {
            eprintln!("shoal: {failure}");
            return ExitCode::from(1);
        }
    };
    match join::write_key(&key_path, &key) {
        Ok(true) => println!(
            "joined the mesh through {} in {} ms: its key is in {}",
            token.member,
            started.elapsed().as_millis(),
            key_path.display()
        ),
        Ok(false) => println!(
            "already a member: {} holds this mesh's key",
            key_path.display()
        ),
        Err(error) => {
            eprintln!("shoal: cannot write the mesh key: {error}");
            return ExitCode::from(1);
        }
    }
    // A running agent switches at once and knocks on the member (which may
    // be beyond a gateway); otherwise the key is read at its next start.
    let api = reachable(config.api.listen).to_string();
    let api_token = std::fs::File::open(&config.api.token_file)
        .and_then(shoal_config::read_bounded)
        .ok()
        .map(|t| t.trim().to_owned());
    let knock = std::net::ToSocketAddrs::to_socket_addrs(token.member.as_str())
        .ok()
        .and_then(|mut addrs| addrs.find(std::net::SocketAddr::is_ipv4));
    let path = match knock {
        Some(addr) => format!("/api/mesh/reload?knock={addr}"),
        None => "/api/mesh/reload".to_owned(),
    };
    match crate::shell::client::request(
        &api,
        "POST",
        &path,
        api_token.as_deref(),
        Duration::from_secs(5),
    ) {
        Ok(reply) if reply.status == 200 => println!("the agent at {api} switched to the mesh"),
        Ok(reply) => println!(
            "the agent at {api} did not switch ({}): restart it (systemctl restart shoal)",
            reply.error()
        ),
        Err(_) => {
            println!("no agent answers at {api}: start it (systemctl start shoal) to use the key")
        }
    }
    ExitCode::SUCCESS
}

/// Where a client command finds the agent, and the API token's file.
#[derive(Debug)]
struct Endpoint {
    api: String,
    token_file: PathBuf,
}

/// The agent's API address: `--api`, else `api.listen` of the configuration
/// (`--config`, else /etc/shoal/shoal.toml when it exists; an unspecified
/// address is reached on loopback), else 127.0.0.1:8080; the token file
/// from the same configuration. A `--config` that cannot be loaded is a
/// configuration error (exit 2).
fn endpoint(flags: &ClientFlags) -> Result<Endpoint, ExitCode> {
    let config = match &flags.config {
        Some(path) => match shoal_config::load(path) {
            Ok(config) => Some(config),
            Err(error) => {
                eprintln!("{error}");
                eprintln!(
                    "shoal: cannot take the agent's address from {}: fix it (shoal check --config {}) or pass --api",
                    path.display(),
                    path.display()
                );
                return Err(ExitCode::from(2));
            }
        },
        None => shoal_config::load(std::path::Path::new(DEFAULT_CONFIG)).ok(),
    };
    let api = match (&flags.api, &config) {
        (Some(api), _) => api.clone(),
        (None, Some(config)) => reachable(config.api.listen).to_string(),
        (None, None) => crate::shell::client::DEFAULT_API.to_owned(),
    };
    let token_file = config.map_or_else(
        || PathBuf::from(shoal_config::defaults::API_TOKEN_FILE),
        |config| config.api.token_file,
    );
    Ok(Endpoint { api, token_file })
}

/// Where a client reaches an agent listening on `listen`: the loopback
/// address of its family when it listens on all addresses.
fn reachable(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// The API token: `--token`, `$SHOAL_TOKEN`, or the endpoint's token file.
fn api_token(flags: &ClientFlags, endpoint: &Endpoint) -> Option<String> {
    if let Some(token) = &flags.token {
        return Some(token.clone());
    }
    if let Ok(token) = std::env::var("SHOAL_TOKEN") {
        return Some(token);
    }
    std::fs::File::open(&endpoint.token_file)
        .and_then(shoal_config::read_bounded)
        .ok()
        .map(|text| text.trim().to_owned())
}

fn probe_flags(args: &[String]) -> Result<u8, String> {
    match args {
        [] => Ok(1),
        [flag, value] if flag == "--bus" => value
            .parse()
            .ok()
            .filter(|bus| *bus <= 22)
            .ok_or_else(|| format!("--bus {value:?} must be an I2C bus number, 0 to 22")),
        _ => Err("probe takes [--bus N]".to_owned()),
    }
}

/// `shoal probe`: 0 after a scan, 1 when the bus cannot be used.
fn probe(bus: u8) -> ExitCode {
    #[cfg(target_os = "linux")]
    {
        let mut i2c = match shoal_hal::rpi::RpiI2c::open(bus) {
            Ok(i2c) => i2c,
            Err(error) => {
                eprintln!("shoal: {error}");
                return ExitCode::from(1);
            }
        };
        match shoal_hal::probe::scan(&mut i2c) {
            Ok(found) => {
                print!("{}", probe_report(bus, &found));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("shoal: scanning /dev/i2c-{bus} failed: {error}");
                ExitCode::from(1)
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        eprintln!("shoal: probe needs Linux I2C (/dev/i2c-{bus})");
        ExitCode::from(1)
    }
}

/// What `shoal probe` prints for the devices `found` on `bus`.
pub fn probe_report(bus: u8, found: &[shoal_hal::probe::Found]) -> String {
    if found.is_empty() {
        return format!(
            "I2C bus {bus}: no device answered (check the wiring: SDA to GPIO 2, SCL to GPIO 3, 3.3 V, GND)\n"
        );
    }
    let mut out = format!("I2C bus {bus}: {}\n", count(found.len(), "device"));
    for device in found {
        out.push_str(&format!(
            "  {:#04x}: {} ({})\n",
            device.address,
            device.driver.unwrap_or("unknown"),
            device.evidence
        ));
    }
    let blocks: Vec<String> = found.iter().filter_map(|d| d.sensor_block(bus)).collect();
    if !blocks.is_empty() {
        out.push_str("\nTo use them, add to /etc/shoal/shoal.toml (and rename as you like):\n\n");
        out.push_str(&blocks.join("\n"));
    }
    out
}

/// `shoal watch`: one line per change until Ctrl-C or the agent stops.
fn watch(flags: &ClientFlags) -> ExitCode {
    use crate::shell::client;
    let endpoint = match endpoint(flags) {
        Ok(endpoint) => endpoint,
        Err(code) => return code,
    };
    let api = endpoint.api.as_str();
    if flags.positional.len() > 1 {
        return usage_error("watch takes at most one GLOB");
    }
    let glob = flags.positional.first().map(String::as_str);
    eprintln!("watching {api} (Ctrl-C stops)");
    let result = client::follow_events(api, |event, data| {
        if flags.json {
            println!("{}", serde_json::json!({ "event": event, "data": data }));
        } else if let Some(line) = client::format_event(event, data, glob) {
            println!("{line}");
        }
    });
    match result {
        Ok(()) => {
            eprintln!("shoal: the agent at {api} closed the stream");
            ExitCode::SUCCESS
        }
        Err(error @ client::ClientError::Unreachable { .. }) => {
            eprintln!("shoal: {error} (is `shoal run` running there? see --api)");
            ExitCode::from(3)
        }
        Err(error) => {
            eprintln!("shoal: {error}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_hal::probe::Found;

    #[test]
    fn the_probe_report_lists_devices_and_blocks_that_pass_shoal_check() {
        let found = [
            Found {
                address: 0x76,
                driver: Some("bme280"),
                evidence: "chip id 0x60".to_owned(),
            },
            Found {
                address: 0x48,
                driver: Some("ads1115"),
                evidence: "config register 0x8583".to_owned(),
            },
            Found {
                address: 0x50,
                driver: None,
                evidence: "answers".to_owned(),
            },
        ];
        let report = probe_report(1, &found);
        assert!(
            report.starts_with("I2C bus 1: 3 devices\n  0x76: bme280 (chip id 0x60)\n"),
            "{report}"
        );
        assert!(report.contains("  0x50: unknown (answers)\n"));
        // The blocks, renamed apart, are a valid configuration.
        let toml = report
            .split_once("rename as you like):\n\n")
            .map(|(_, blocks)| blocks)
            .expect("blocks");
        let config = shoal_config::parse(toml, std::path::Path::new("probe.toml"));
        assert!(config.is_ok(), "{toml}\n{:?}", config.err());
        assert!(probe_report(1, &[]).contains("no device answered"));
    }
}
