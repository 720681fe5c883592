//! The `shoal` binary: hands the command line to [`shoal::shell::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    shoal::shell::cli::run(&args)
}
