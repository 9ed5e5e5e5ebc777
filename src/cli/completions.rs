//! CLI: `authd completions <shell>` and the hidden `authd man-pages <dir>`: shell completions
//! (clap_complete) and man pages (clap_mangen) generated from the CLI definition itself.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::{Cli, CliError};
use crate::domain::terminal::Shown;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to generate completions for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write authd.1 and authd-<command>.1 into
    pub dir: PathBuf,
}

pub fn completions(args: Args) -> Result<(), CliError> {
    use std::io::Write;
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "authd", &mut buf);
    let mut out = std::io::stdout().lock();
    match out.write_all(&buf).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError(format!("cannot write completions: {e}")))
        }
        _ => Ok(()),
    }
}

/// Writes one page per command and nested command (`authd.1`, `authd-users.1`,
/// `authd-users-list.1`, ...), so that every `authd-...(1)` a page names exists. Built first, as
/// `clap_mangen::generate_to` does, so that each page carries its full name, its usage
/// (`authd users list`) and the version; without the `help` subcommands, which have no page.
pub fn man_pages(args: ManArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| CliError(format!("cannot create {}: {e}", args.dir.display())))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    write_pages(&args.dir, cmd)
}

fn write_pages(dir: &Path, cmd: clap::Command) -> Result<(), CliError> {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("authd {}", env!("CARGO_PKG_VERSION")))
        .manual("authd manual");
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)
        .map_err(|e| CliError(format!("cannot render {}: {e}", path.display())))?;
    std::fs::write(&path, buf)
        .map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))?;
    println!("{}", Shown(&path.display().to_string()));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(dir, sub.clone())?;
    }
    Ok(())
}
