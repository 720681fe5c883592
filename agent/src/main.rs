//! The `shoal` binary: parses the command line and runs the agent.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", shoal::version_line());
            }
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "shoal: unknown command {other:?}; this build has only --version \
                 (the agent commands arrive with the networking shell)"
            );
            ExitCode::from(2)
        }
        None => {
            eprintln!("usage: shoal --version");
            ExitCode::from(2)
        }
    }
}
