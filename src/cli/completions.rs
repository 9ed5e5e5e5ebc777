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

pub fn man_pages(args: ManArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| CliError(format!("cannot create {}: {e}", args.dir.display())))?;
    let cmd = Cli::command();
    write_page(&args.dir, "authd", cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("authd-{}", sub.get_name());
        let page = sub.clone().name(name.clone());
        write_page(&args.dir, &name, page)?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, cmd: clap::Command) -> Result<(), CliError> {
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut buf)
        .map_err(|e| CliError(format!("cannot render {name}: {e}")))?;
    std::fs::write(&path, buf)
        .map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))?;
    println!("{}", Shown(&path.display().to_string()));
    Ok(())
}
