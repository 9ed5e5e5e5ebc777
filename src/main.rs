//! authd's entry point: parse the command line, run the command, map the outcome to an exit
//! code (0 success, 1 runtime error with one line on stderr, or a TOML syntax error's line
//! and caret under it, 2 usage error from clap).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match authd::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // A value that is not UTF-8 (an email, a user, a kid) is a bad value, not bad usage:
        // it could name nothing authd stores, so it is a runtime error like any other.
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidUtf8 => {
            eprintln!("error: an argument is not valid UTF-8");
            return ExitCode::from(1);
        }
        Err(e) => e.exit(),
    };
    match authd::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
