//! authd's entry point: parse the command line, run the command, map the outcome to an exit
//! code (0 success, 1 runtime error with one line on stderr, or a TOML syntax error's line
//! and caret under it, 2 usage error from clap).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = authd::cli::Cli::parse();
    match authd::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
