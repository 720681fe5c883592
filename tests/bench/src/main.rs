//! `shoal-bench`: shoal against Serf on this machine; see `tests/bench/run` for
//! the one command that builds everything and regenerates BENCHMARKS.md.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use shoal_bench::agent::System;
use shoal_bench::cluster::Setup;
use shoal_bench::{lab, Options};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

const USAGE: &str = "usage: shoal-bench [--nodes 5,20,50] [--netns-nodes 5|none] [--reps 3]
                   [--idle SECONDS] [--false-window SECONDS] [--loss 0.1]
                   [--flood FRAMES]
                   [--systems shoal,serf] [--shoal PATH] [--serf PATH]
                   [--out FILE] [--include FILE]... [--quick]

Runs shoal and Serf side by side and prints (or writes to FILE) a Markdown
report. Needs: serf (apt-get install serf), curl; for namespaces also root,
iproute2 and iptables. It installs nothing. --quick is the CI smoke run:
5 agents, 1 repetition, short windows.

--flood (100000 by default, 0 for none) broadcasts that many frames to
shoal's beacon port on loopback once a mesh is settled: random bytes,
random bytes behind shoal's header, and forged beacons of an open mesh
from 1000 made-up nodes, in two halves 5 s apart. Every agent must keep
running. It reports each agent's largest growth of resident memory, split
into anonymous memory (heap, stacks) and mapped file pages (the program's
code, mapped again as the flood runs paths an idle agent does not), and
the growth over the second half alone (a table filling up to its bound
grows in the first half only).

--nodes 250 (one broadcast domain of 250 agents on loopback) needs about
1.3 GiB of memory for shoal (5 MiB per agent) and about 4 GiB more for
Serf, and 250 processes each way; on 2 cores shoal's idle mesh takes about
a quarter of the machine. `--nodes 250 --systems shoal` runs shoal alone.";

fn list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>, String> {
    if text == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|t| t.trim().parse().map_err(|_| format!("not a number: {t}")))
        .collect()
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

struct Args {
    options: Options,
    out: Option<PathBuf>,
    include: Vec<PathBuf>,
    command_line: String,
}

fn parse_args() -> Result<Args, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let pid = std::process::id();
    let mut options = Options {
        systems: vec![System::Shoal, System::Serf],
        nodes: vec![5, 20, 50],
        netns_nodes: vec![5],
        reps: 3,
        idle: Duration::from_secs(30),
        false_window: Duration::from_secs(300),
        loss: 0.1,
        flood: 100_000,
        setup: Setup {
            shoal: exe.with_file_name("shoal"),
            serf: "serf".into(),
            // 12 ports per run, spread by PID over 50000-59999.
            port: 50_000 + (pid % 800) as u16 * 12,
            octet: 3,
            prefix: format!("sb{}", pid % 100_000),
            dir: std::env::temp_dir().join(format!("shoal-bench-{pid}")),
        },
    };
    let mut out = None;
    let mut include = Vec::new();
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut args = raw.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--nodes" => options.nodes = list(&value()?)?,
            "--netns-nodes" => options.netns_nodes = list(&value()?)?,
            "--reps" => options.reps = value()?.parse().map_err(|_| "--reps: a number")?,
            "--idle" => {
                options.idle =
                    Duration::from_secs_f64(value()?.parse().map_err(|_| "--idle: seconds")?)
            }
            "--false-window" => {
                options.false_window = Duration::from_secs_f64(
                    value()?.parse().map_err(|_| "--false-window: seconds")?,
                )
            }
            "--flood" => options.flood = value()?.parse().map_err(|_| "--flood: frames")?,
            "--loss" => options.loss = value()?.parse().map_err(|_| "--loss: a share, 0 to 1")?,
            "--systems" => {
                options.systems = value()?
                    .split(',')
                    .map(|s| match s {
                        "shoal" => Ok(System::Shoal),
                        "serf" => Ok(System::Serf),
                        other => Err(format!("unknown system {other}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--shoal" => options.setup.shoal = PathBuf::from(value()?),
            "--serf" => options.setup.serf = value()?,
            "--out" => out = Some(PathBuf::from(value()?)),
            "--include" => include.push(PathBuf::from(value()?)),
            "--quick" => {
                options.nodes = vec![5];
                options.netns_nodes = vec![5];
                options.reps = 1;
                options.idle = Duration::from_secs(3);
                options.false_window = Duration::from_secs(10);
                options.flood = 10_000;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if !(0.0..1.0).contains(&options.loss) || options.reps == 0 {
        return Err("--loss must be in [0, 1) and --reps at least 1".into());
    }
    if options
        .nodes
        .iter()
        .chain(&options.netns_nodes)
        .any(|&n| !(2..=250).contains(&n))
    {
        return Err("mesh sizes must be 2 to 250".into());
    }
    let command_line = std::iter::once("shoal-bench".to_owned())
        .chain(raw)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Args {
        options,
        out,
        include,
        command_line,
    })
}

/// Everything missing, with how to get it; namespaces are dropped (with
/// a message) rather than failing the run.
fn check_needs(options: &mut Options) -> Result<(), String> {
    let mut missing = Vec::new();
    if !options.setup.shoal.exists() {
        missing.push(format!(
            "the shoal binary at {} (cargo build --release -p shoal, or --shoal PATH)",
            options.setup.shoal.display()
        ));
    }
    if options.systems.contains(&System::Serf)
        && command_output(&options.setup.serf, &["version"]).is_none()
    {
        missing.push("serf (apt-get install serf, or --systems shoal)".into());
    }
    if command_output("curl", &["--version"]).is_none() {
        missing.push("curl (apt-get install curl)".into());
    }
    if !missing.is_empty() {
        return Err(format!("missing: {}", missing.join("; ")));
    }
    if !options.netns_nodes.is_empty() {
        if let Some(reason) = lab::unavailable() {
            eprintln!("[bench] SKIPPED the namespace and loss scenarios: {reason}");
            options.netns_nodes.clear();
        }
    }
    Ok(())
}

fn header(args: &Args) -> String {
    let options = &args.options;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = command_output("nproc", &[]).unwrap_or_else(|| "?".into());
    let memory = command_output("free", &["-g"])
        .and_then(|s| {
            s.lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into());
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let kernel = command_output("uname", &["-r"]).unwrap_or_default();
    let serf = command_output(&options.setup.serf, &["version"])
        .map(|v| v.lines().next().unwrap_or("").to_owned())
        .unwrap_or_else(|| "not run".into());
    let shoal = command_output(&options.setup.shoal.display().to_string(), &["--version"])
        .unwrap_or_default();
    format!(
        "- date: {date}\n- machine: {nproc} CPUs ({cpu}), {memory} GiB RAM, Linux {kernel}\n\
         - command: `tests/bench/run` (this run: `{}`)\n- {shoal}, release build (size-tuned profile), default timings: beacon every 1 s, \
         SUSPECT after 2 s silent, UNREACHABLE after 3 s unless a neighbor vouches; `mesh.open = true`, no key (Serf runs unencrypted too)\n\
         - {serf} (Debian package `serf`), `-profile=lan` (the default): memberlist's DefaultLANConfig, probe every 1 s, \
         probe timeout 500 ms, suspicion multiplier 4 (max 6×), 3 indirect checks, gossip to 3 nodes every 200 ms, \
         push/pull every 30 s; `serf event -coalesce=false`\n\
         - {} repetitions; idle window {:.0} s; loss {:.0}% of packets dropped on arrival at each namespace's eth0 (iptables `statistic`)\n\n\
         Method: the systems alternate within each repetition (shoal, then Serf, same N and network), so a noisy \
         moment of the machine hits both. Times are when the bench reads each agent's log line (\"discovered node\", \
         \"-> UNREACHABLE\", \"point ...\" for shoal; \"EventMemberJoin\", \"EventMemberFailed\", \"Received event\" \
         for Serf), with one clock for both. Serf agents join the first one (`-join`, no mDNS), which is started first; \
         convergence counts from its start. Propagation counts from the start of the client process on one agent \
         (`curl` to shoal's API, `serf event`) until the last other agent logs the value; the Serf event handler row is \
         the handler's own timestamp. Failure detection is `kill -9` of the last agent until the first and the last \
         survivor declare it failed; rejoin is its restart until every other agent sees it alive. RSS is VmRSS, CPU is \
         every thread's schedstat time over the idle window, bytes are what each namespace's bridge port received \
         (namespaces only: on loopback there is no per-agent counter for Serf). False failures count every agent's \
         failure verdicts while nothing fails.\n",
        args.command_line,
        options.reps,
        options.idle.as_secs_f64(),
        options.loss * 100.0
    )
}

fn main() -> ExitCode {
    let mut args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = check_needs(&mut args.options) {
        eprintln!("shoal-bench: {error}");
        return ExitCode::from(2);
    }
    // Release builds abort on panic, so no destructor would clean up: the
    // hook kills the agents and deletes the namespaces first.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        shoal_bench::agent::kill_all();
        lab::delete_all();
        default_hook(info);
    }));
    let _ = std::fs::create_dir_all(&args.options.setup.dir);
    let results = shoal_bench::run(&args.options);
    let _ = std::fs::remove_dir_all(&args.options.setup.dir);
    let mut report = String::new();
    report.push_str("# shoal against Serf\n\n");
    report.push_str(&header(&args));
    report.push_str("\n## Mesh scenarios\n\n");
    report.push_str(&results.markdown());
    for path in &args.include {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                report.push('\n');
                report.push_str(&text);
            }
            Err(error) => eprintln!("[bench] cannot include {}: {error}", path.display()),
        }
    }
    match &args.out {
        Some(path) => {
            if let Err(error) = std::fs::write(path, &report) {
                eprintln!("shoal-bench: {}: {error}", path.display());
                return ExitCode::from(1);
            }
            eprintln!("[bench] wrote {}", path.display());
        }
        None => println!("{report}"),
    }
    if results.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
