//! CLI: the command-line interface (clap derive). Each subcommand lives in its own file and
//! calls the same services as the HTTP API.

mod audit;
mod backup;
mod check_config;
mod cleanup_tokens;
mod completions;
mod create_user;
mod doctor;
mod healthcheck;
mod import_users;
mod keys;
mod mail;
mod migrate;
mod migrate_data;
mod revoke_sessions;
mod serve;
mod users;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::StartError;
use crate::config::{self, LogFormat, Settings, Sources};
use crate::domain::terminal::Shown;
use crate::error::AppError;
use crate::store;

/// How every command finds its configuration, shown under `authd --help` and `serve --help`.
const CONFIG_HELP: &str = "\
Configuration, later wins: built-in defaults, config/default.toml and config/$AUTHD_ENV.toml in \
the working directory, --config PATH, then AUTHD_<SECTION>__<KEY> variables (a .env file in the \
working directory is read first), e.g. AUTHD_SERVER__BIND=127.0.0.1:9000, \
AUTHD_DATABASE__URL=postgres://... `authd check-config` prints the effective values.";

/// authd: a self-hosted authentication server (JWT access tokens, rotating refresh tokens).
#[derive(Debug, Parser)]
#[command(
    name = "authd",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = CONFIG_HELP
)]
pub struct Cli {
    /// Configuration file (TOML), layered over config/default.toml
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "AUTHD_CONFIG",
        hide_env_values = true
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (applies pending migrations first when database.auto_migrate is true)
    #[command(after_help = SERVE_HELP)]
    Serve,
    /// Apply pending database migrations (embedded in the binary)
    Migrate(migrate::Args),
    /// Copy a SQLite installation into a fresh PostgreSQL database (every table, one transaction)
    MigrateData(migrate_data::Args),
    /// Write a consistent copy of the database to a SQLite file while servers run
    Backup(backup::BackupArgs),
    /// Restore a backup into the configured (empty) database, or --verify it
    Restore(backup::RestoreArgs),
    /// Create a user (prompts on a terminal; --password-stdin for scripts)
    CreateUser(create_user::Args),
    /// Import users with their bcrypt hashes from a JSON Lines file (all or nothing)
    ImportUsers(import_users::Args),
    /// Revoke refresh sessions of one user or of everyone
    RevokeSessions(revoke_sessions::Args),
    /// Delete what expired or was revoked more than cleanup.retention ago: refresh tokens,
    /// sessions, login-failure counters, one-time tokens, finished mails, revoked-session feed
    /// rows (and audit events older than audit.retention when it is set)
    CleanupTokens(cleanup_tokens::Args),
    /// Read the audit trail (logins, refreshes, revocations, ...)
    Audit(audit::Args),
    /// Manage the signing keys kept in the database (list, rotate, revoke)
    Keys(keys::Args),
    /// Manage accounts: list, show, disable, enable, delete, set-role, set-password, unlock
    Users(users::Args),
    /// Outgoing mail: send a test message, see and retry the outbox
    Mail(mail::Args),
    /// Validate the configuration and print the effective values (secrets redacted)
    CheckConfig,
    /// Check the installation (configuration, database, permissions, keys, audit chain, disk,
    /// clock, proxies, Redis, mail) without changing anything, and say what to fix
    Doctor(doctor::Args),
    /// Exit 0 when the server's /healthz answers 200, else 1 (for container health checks)
    Healthcheck(healthcheck::Args),
    /// Print shell completions
    Completions(completions::Args),
    /// Write man pages into a directory
    #[command(hide = true)]
    ManPages(completions::ManArgs),
}

/// `serve --help`: where the address comes from, and how it stops.
const SERVE_HELP: &str = "\
Listens on server.bind (default 127.0.0.1:8080; set it with AUTHD_SERVER__BIND=IP:PORT or in the \
[server] section of a configuration file) and logs `authd listening on http://ADDR` when ready. \
SIGTERM or SIGINT: stops accepting, lets in-flight requests finish (server.shutdown_grace), \
closes the database, exits 0. Every other key: AUTHD_<SECTION>__<KEY>; see `authd --help` and \
`authd check-config`.";

/// A command's failure: one line for stderr. Shown escaped (`domain::terminal`): a message
/// may echo what an operator typed, a config file or the database holds, or a client sent.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Shown(&self.0).fmt(f)
    }
}

impl From<StartError> for CliError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::App(e) => e.into(),
            other => CliError(other.to_string()),
        }
    }
}

impl From<AppError> for CliError {
    fn from(e: AppError) -> Self {
        CliError(match e {
            e @ AppError::Validation(_) => e.public_message(),
            AppError::Unavailable(cause) => format!("database unavailable: {cause}"),
            AppError::Internal(cause) => cause,
            e @ AppError::Conflict(_) => e.to_string(),
            other => other.to_string(),
        })
    }
}

impl From<config::ConfigError> for CliError {
    fn from(e: config::ConfigError) -> Self {
        CliError(e.to_string())
    }
}

/// Why `run` failed: the one error line, and the lines that may follow it (a TOML syntax
/// error's offending line and caret). Each line is shown escaped on its own.
#[derive(Debug)]
pub struct Failure {
    pub error: CliError,
    pub detail: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)?;
        for line in &self.detail {
            write!(f, "\n{}", Shown(line))?;
        }
        Ok(())
    }
}

impl From<CliError> for Failure {
    fn from(error: CliError) -> Self {
        Failure {
            error,
            detail: Vec::new(),
        }
    }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure {
            detail: e.details().into_iter().map(String::from).collect(),
            error: e.into(),
        }
    }
}

/// The blocking pool's size: 16 threads per core. Its work is short (SQLite statements;
/// bcrypt is bounded separately, to one verification per core), so a pool smaller than the
/// number of requests in flight keeps its threads busy taking the next task instead of
/// each request waking a sleeping thread: tokio's default of 512 threads cost a quarter of
/// the server's CPU in context switches under load (docs/PERFORMANCE.md).
fn blocking_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    16 * cores
}

/// Loads the configuration, sets up logging, and runs the command.
pub fn run(cli: Cli) -> Result<(), Failure> {
    // Commands that need no configuration.
    let cli = match cli.command {
        Command::Completions(args) => return Ok(completions::completions(args)?),
        Command::ManPages(args) => return Ok(completions::man_pages(args)?),
        // Its first check is the configuration: it loads it itself and reports a bad one.
        Command::Doctor(args) => return doctor::run(cli.config, args),
        command => Cli { command, ..cli },
    };
    let (sources, source_warnings) = Sources::from_process(cli.config.clone())?;
    let mut settings = config::load(&sources)?;
    // The store judges its own URL (configuration knows no backend), before any command
    // (`check-config` included) touches anything: a bad one is refused like any bad key.
    store::check_url(&settings.database.url)
        .map_err(|why| config::ConfigError(vec![format!("database.url: {why}")]))?;
    settings.warnings.splice(0..0, source_warnings);
    let settings = Arc::new(settings);
    let serving = matches!(cli.command, Command::Serve);
    let _log_guard = init_logging(&settings, serving);
    // Configuration remarks are for the server's log (and `check-config`); one-shot commands
    // keep stderr for their one error line.
    if serving {
        for w in &settings.warnings {
            tracing::warn!("{w}");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads())
        .build()
        .map_err(|e| CliError(format!("cannot start the async runtime: {e}")))?;
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve::run(settings).await,
            Command::Migrate(args) => migrate::run(settings, args).await,
            Command::MigrateData(args) => migrate_data::run(settings, args).await,
            Command::Backup(args) => backup::backup(settings, args).await,
            Command::Restore(args) => backup::restore(settings, args).await,
            Command::CreateUser(args) => create_user::run(settings, args).await,
            Command::ImportUsers(args) => import_users::run(settings, args).await,
            Command::RevokeSessions(args) => revoke_sessions::run(settings, args).await,
            Command::CleanupTokens(args) => cleanup_tokens::run(settings, args).await,
            Command::Audit(args) => audit::run(settings, args).await,
            Command::Keys(args) => keys::run(settings, args).await,
            Command::Users(args) => users::run(settings, args).await,
            Command::Mail(args) => mail::run(settings, args).await,
            Command::CheckConfig => check_config::run(settings).await,
            Command::Healthcheck(args) => healthcheck::run(settings, args).await,
            Command::Completions(_) | Command::ManPages(_) | Command::Doctor(_) => {
                unreachable!("handled above")
            }
        }
    });
    Ok(outcome?)
}

/// Log lines queued for the writer thread before new ones are dropped (see `init_logging`).
const LOG_QUEUE_LINES: usize = 8_192;

/// Logs go to stdout for `serve` (at `log.level`) and to stderr for the other commands
/// (errors only, so their stdout stays scriptable and stderr holds their one error line). Writes never block a request: a full
/// pipe drops log lines rather than stalling the server.
fn init_logging(settings: &Settings, serving: bool) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    // The queue between the logging call and the writer thread is a crossbeam array channel
    // whose every slot (32 bytes) is written when it is created: tracing-appender's default
    // of 128,000 lines made 4.1 MB of the idle server's resident memory. 8,192 lines (262 KB)
    // still absorb a burst far longer than a stalled reader of stdout takes to catch up; past
    // them lines are dropped, as before (lossy).
    let builder = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true);
    let (writer, guard) = if serving {
        builder.finish(std::io::stdout())
    } else {
        builder.finish(std::io::stderr())
    };
    let level = if serving {
        settings.log.level.as_str()
    } else {
        "error"
    };
    // Dependencies stay at info or quieter unless named explicitly: their trace output could
    // carry raw headers.
    // refinery logs each migration itself; authd logs one line per migration it applied.
    let filter = format!(
        "{level},hyper=info,hyper_util=info,warp=info,h2=info,r2d2=info,refinery_core=warn"
    );
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let _ = match settings.log.format {
        LogFormat::Json => builder
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder
            .with_writer(move || TerminalSafe(writer.clone()))
            .compact()
            .try_init(),
    };
    guard
}

/// The pretty log's writer: each event arrives as one write ending in a newline, and every
/// character before that newline that a terminal must not receive (a CR or LF that would
/// forge another line, ESC, a C1 control, a bidi override: `domain::terminal`) is written
/// escaped. tracing's own escaping covers only some of them, and only in the message.
struct TerminalSafe<W>(W);

impl<W: std::io::Write> std::io::Write for TerminalSafe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (line, end) = match text.strip_suffix('\n') {
            Some(line) => (line, "\n"),
            None => (&*text, ""),
        };
        let safe = crate::domain::terminal::escape_unsafe(line);
        self.0.write_all(format!("{safe}{end}").as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Whether standard input is an interactive terminal.
fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}
