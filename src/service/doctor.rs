//! Service layer: `authd doctor` (CONTRACT 12.3): each check of an installation, reading
//! only, with what to do about what it finds. A `fail` is something authd cannot run right
//! with; a `warn` something an operator should look at. No check prints a secret: URLs are
//! shown redacted, keys by their kid at most.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Core;
use crate::config::{redact_url, Settings};
use crate::domain::audit_chain::Verdict;
use crate::domain::time::now_ms;
use crate::error::AppError;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check: its name, outcome, and what it found (for a warn or fail, with the fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
        }
    }
}

/// Free space below this share of the filesystem is a warning.
pub const MIN_FREE_SHARE: f64 = 0.10;

/// A clock further than this from the database server's is a warning.
pub const MAX_CLOCK_SKEW_MS: i64 = 2_000;

/// How long Redis may take to answer PING.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// The configuration check: ok with how many remarks `check-config` would print.
pub fn configuration_ok(settings: &Settings) -> Check {
    match settings.warnings.len() {
        0 => Check::ok("configuration", "valid"),
        n => Check::ok(
            "configuration",
            format!("valid, with {n} remark(s): `authd check-config` prints them"),
        ),
    }
}

/// The configuration check when the configuration is refused: every other check needs it.
pub fn configuration_failed(why: &str) -> Check {
    Check::fail(
        "configuration",
        format!(
            "{why}; fix the named key (`authd check-config` shows the effective values) and run \
             doctor again"
        ),
    )
}

/// The database could not be opened: what it said and where to look.
pub fn database_unreachable(settings: &Settings, why: &str) -> Check {
    Check::fail(
        "database",
        format!(
            "{} does not answer ({why}); check database.url, that the database exists (`authd \
             migrate` creates a SQLite one) and that its server runs",
            redact_url(&settings.database.url)
        ),
    )
}

/// Every check that needs the store, in order, on an opened one.
pub async fn store_checks(core: &Arc<Core>) -> Vec<Check> {
    let mut checks = Vec::new();
    let url = redact_url(&core.settings.database.url);
    let schema_ok = match core.db(|s| s.migration_status()).await {
        Err(e) => {
            checks.push(database_unreachable(&core.settings, &e.to_string()));
            return checks;
        }
        Ok(rows) => {
            let problems: Vec<String> = rows
                .iter()
                .filter_map(|m| {
                    m.problem
                        .as_ref()
                        .map(|p| format!("V{}__{}: {p}", m.version, m.name))
                })
                .collect();
            let pending: Vec<String> = rows
                .iter()
                .filter(|m| m.applied_on.is_none() && m.problem.is_none())
                .map(|m| format!("V{}__{}", m.version, m.name))
                .collect();
            if !problems.is_empty() {
                checks.push(Check::fail(
                    "database",
                    format!(
                        "{url} answers, but its schema is not this authd's ({}); restore the \
                         migration files or run the authd that wrote this database",
                        problems.join("; ")
                    ),
                ));
                false
            } else if !pending.is_empty() {
                checks.push(Check::fail(
                    "database",
                    format!(
                        "{url} answers, but {} migration(s) are pending ({}); run `authd migrate` \
                         (serve applies them itself when database.auto_migrate is true)",
                        pending.len(),
                        pending.join(", ")
                    ),
                ));
                false
            } else {
                checks.push(Check::ok(
                    "database",
                    format!("{url} answers; all {} migrations applied", rows.len()),
                ));
                true
            }
        }
    };
    let diagnosis = match core.db(|s| s.diagnose()).await {
        Ok(d) => d,
        Err(e) => {
            checks.push(Check::fail(
                "integrity",
                format!("cannot be checked ({e}); look at the database's own logs"),
            ));
            return checks;
        }
    };
    checks.push(match &diagnosis.integrity {
        None => Check::ok("integrity", "checked by the database server (PostgreSQL)"),
        Some(lines) if lines.len() == 1 && lines[0] == "ok" => {
            Check::ok("integrity", "PRAGMA integrity_check: ok")
        }
        Some(lines) => Check::fail(
            "integrity",
            format!(
                "PRAGMA integrity_check found: {}; stop authd, keep a copy of the file, and \
                 restore the latest backup (or salvage with `sqlite3 authd.db .recover`)",
                lines.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ),
        ),
    });
    checks.push(permissions(&diagnosis.files, diagnosis.dir.as_deref()));
    if schema_ok {
        checks.push(signing_keys(core).await);
        checks.push(audit_chain(core).await);
    }
    checks.push(disk_space(
        diagnosis.dir.as_deref().unwrap_or(Path::new(".")),
    ));
    checks.push(match diagnosis.server_time {
        None => Check::ok("clock", "no database server to compare with (SQLite)"),
        Some(server) => clock(now_ms() - server),
    });
    checks
}

/// The database file, its neighbours and its directory are not readable by others.
fn permissions(files: &[std::path::PathBuf], dir: Option<&Path>) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let Some(dir) = dir else {
        return Check::ok(
            "permissions",
            "the data lives in the database server (PostgreSQL)",
        );
    };
    let mut open = Vec::new();
    for path in files.iter().map(|p| p.as_path()).chain([dir]) {
        match std::fs::metadata(path) {
            Ok(m) if m.permissions().mode() & 0o004 != 0 => open.push(format!(
                "{} is readable by others (mode {:o})",
                path.display(),
                m.permissions().mode() & 0o777
            )),
            Ok(_) => {}
            Err(e) => open.push(format!("{} cannot be inspected ({e})", path.display())),
        }
    }
    if open.is_empty() {
        Check::ok(
            "permissions",
            format!(
                "{} and its directory are readable by their owner only",
                files
                    .first()
                    .map_or_else(|| dir.display().to_string(), |f| f.display().to_string())
            ),
        )
    } else {
        Check::fail(
            "permissions",
            format!(
                "{}; it holds password hashes and signing keys: `chmod 600` the files and \
                 `chmod 700` the directory (as the user authd runs as)",
                open.join("; ")
            ),
        )
    }
}

/// An active signing key for access tokens and one for refresh tokens.
async fn signing_keys(core: &Arc<Core>) -> Check {
    let jwt = core.settings.jwt.clone();
    match core
        .db(move |s| Ok(super::keys::load_keys(s, &jwt).map(|(generation, _)| generation)))
        .await
    {
        Ok(Ok(generation)) => Check::ok(
            "signing-keys",
            format!(
                "an active key for access and for refresh tokens (key set generation {generation})"
            ),
        ),
        Ok(Err(e)) | Err(e) => Check::fail("signing-keys", keys_problem(&e)),
    }
}

fn keys_problem(e: &AppError) -> String {
    let why = match e {
        AppError::Internal(why) | AppError::Unavailable(why) => why.clone(),
        other => other.to_string(),
    };
    if why.contains("authd serve") {
        why
    } else {
        format!(
            "{why}; start `authd serve` once (it creates missing keys) or run `authd keys rotate`"
        )
    }
}

/// `audit verify`, as the doctor sees it.
async fn audit_chain(core: &Arc<Core>) -> Check {
    match core.db(|s| s.verify_audit_chain(None)).await {
        Ok(report) => match report.verdict {
            Verdict::Ok {
                sealed,
                head_seq,
                head_hash,
                ..
            } => Check::ok(
                "audit-chain",
                format!(
                    "{sealed} events sealed, head {head_seq}:{head_hash}; {} await sealing",
                    report.unsealed
                ),
            ),
            Verdict::Broken { seq, why } => Check::fail(
                "audit-chain",
                format!(
                    "broken at seq {seq}: {why}; the trail was changed outside authd: keep a copy \
                     of the database as evidence, compare with the heads kept off this machine \
                     (`authd audit verify --anchor SEQ:HASH`) and find out who had access"
                ),
            ),
        },
        Err(e) => Check::fail(
            "audit-chain",
            format!("cannot be read ({e}); run `authd audit verify` for details"),
        ),
    }
}

/// Free space on the filesystem holding `dir`.
fn disk_space(dir: &Path) -> Check {
    match rustix::fs::statvfs(dir) {
        Ok(v) if v.f_blocks > 0 => {
            let share = v.f_bavail as f64 / v.f_blocks as f64;
            let free_mb = v.f_bavail.saturating_mul(v.f_frsize) / (1024 * 1024);
            let detail = format!(
                "{:.0} % free ({free_mb} MiB) on the filesystem of {}",
                share * 100.0,
                dir.display()
            );
            if share < MIN_FREE_SHARE {
                Check::warn(
                    "disk-space",
                    format!(
                        "only {detail}; free some space or grow the volume before the database \
                         runs out of room (writes then fail with 503)"
                    ),
                )
            } else {
                Check::ok("disk-space", detail)
            }
        }
        Ok(_) => Check::ok("disk-space", format!("{} reports no size", dir.display())),
        Err(e) => Check::warn(
            "disk-space",
            format!(
                "cannot read the free space of {} ({e}); check it with `df -h`",
                dir.display()
            ),
        ),
    }
}

/// This machine's clock against the database server's (`ahead_ms`: ours minus theirs).
fn clock(ahead_ms: i64) -> Check {
    let secs = ahead_ms as f64 / 1000.0;
    if ahead_ms.abs() > MAX_CLOCK_SKEW_MS {
        Check::warn(
            "clock",
            format!(
                "this machine's clock is {:.1} s {} PostgreSQL's: token lifetimes and lockouts \
                 disagree between instances; turn on time synchronisation (e.g. `timedatectl \
                 set-ntp true`) on both",
                secs.abs(),
                if ahead_ms > 0 { "ahead of" } else { "behind" }
            ),
        )
    } else {
        Check::ok(
            "clock",
            format!("within {:.1} s of PostgreSQL's", secs.abs()),
        )
    }
}

/// `cookie.secure`, `server.hsts` and `server.trusted_proxies` against each other: authd
/// speaks plain HTTP, so HTTPS (which Secure cookies and HSTS need) comes from a proxy.
pub fn cookie_hsts_proxies(settings: &Settings) -> Check {
    let secure = settings.cookie.secure;
    let hsts = settings.server.hsts;
    let proxied = !settings.server.trusted_proxies.is_empty();
    let public = !settings.server.bind.ip().is_loopback();
    let mut found = Vec::new();
    if secure && public && !proxied {
        found.push(format!(
            "cookie.secure is true but server.bind {} is plain HTTP with no trusted proxy: \
             browsers will not send the refresh cookie back; put authd behind an HTTPS proxy \
             and list it in server.trusted_proxies",
            settings.server.bind
        ));
    }
    if hsts && !proxied {
        found.push(
            "server.hsts is true but no HTTPS proxy is trusted: browsers ignore HSTS over plain \
             HTTP; set it on a deployment behind an HTTPS proxy (listed in \
             server.trusted_proxies)"
                .to_string(),
        );
    }
    if !secure && (hsts || proxied) {
        found.push(
            "cookie.secure is false behind an HTTPS proxy: the refresh cookie could leak over \
             plain HTTP; set cookie.secure = true"
                .to_string(),
        );
    }
    if !secure && public && !proxied {
        found.push(format!(
            "cookie.secure is false on the non-loopback address {}: refresh tokens travel in \
             clear text; serve through an HTTPS proxy and set cookie.secure = true",
            settings.server.bind
        ));
    }
    if found.is_empty() {
        Check::ok(
            "cookie-hsts-proxies",
            format!(
                "cookie.secure = {secure}, server.hsts = {hsts}, {} trusted proxy range(s): \
                 consistent",
                settings.server.trusted_proxies.len()
            ),
        )
    } else {
        Check::warn("cookie-hsts-proxies", found.join("; "))
    }
}

/// Redis answers PING when `rate_limit.redis_url` is set.
pub async fn redis(settings: &Settings) -> Check {
    let Some(url) = settings.rate_limit.redis_url.as_deref() else {
        return Check::ok(
            "redis",
            "not configured (the per-IP request budget is counted per process; failed-login limits are in the database)",
        );
    };
    let shown = redact_url(url);
    let ping = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(REDIS_TIMEOUT, ping).await {
        Ok(Ok(_)) => Check::ok("redis", format!("{shown} answers PING")),
        Ok(Err(e)) => Check::warn(
            "redis",
            format!(
                "{shown} does not answer PING ({}); the per-IP budget falls back to per-process \
                 counting: start Redis or fix rate_limit.redis_url",
                redis_cause(&e)
            ),
        ),
        Err(_) => Check::warn(
            "redis",
            format!(
                "{shown} did not answer PING within {}s; check that Redis runs and is reachable",
                REDIS_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// The mail transport (`email.transport`): for `smtp`, connect and EHLO (and STARTTLS or TLS
/// as configured), sending nothing; a relay that does not answer is a warning (mail waits in
/// the outbox until it does).
pub async fn check_mail(settings: &Settings) -> Check {
    // With a username the probe logs in too: its failure may be the login's.
    let login = if settings.email.smtp_username.is_empty() {
        ""
    } else {
        ", email.smtp_username and email.smtp_password (a relay offers AUTH only when it \
         needs a login, and most only after STARTTLS or TLS; leave smtp_username empty for one \
         that needs none)"
    };
    match crate::mail::transport::probe(&settings.email).await {
        Ok(found) => Check::ok("mail", found),
        // A 5xx (a refused login, a refused sender): every mail fails at once.
        Err(f) if f.permanent => Check::fail(
            "mail",
            format!(
                "{}; the relay refuses authd, so every mail fails at once (none waits in the \
                 outbox): check email.smtp_username and email.smtp_password (the relay's login) \
                 and email.from (a sender the relay accepts)",
                f.why
            ),
        ),
        Err(f) => Check::warn(
            "mail",
            format!(
                "{}; mail waits in the outbox until the relay answers: check email.smtp_host, \
                 email.smtp_port and email.smtp_tls (and email.smtp_ca_file for a relay whose \
                 certificate a private CA signed){login}, and that this host may reach the \
                 relay (`authd mail test --to you@example.com` sends one message)",
                f.why
            ),
        ),
    }
}

/// Why Redis did not answer, without anything of the URL (it may hold a password).
fn redis_cause(e: &redis::RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        format!("{:?}", e.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_warns_past_two_seconds_either_way() {
        assert_eq!(clock(1_900).status, Status::Ok);
        assert_eq!(clock(-1_900).status, Status::Ok);
        let ahead = clock(2_500);
        assert_eq!(ahead.status, Status::Warn);
        assert!(ahead.detail.contains("2.5 s ahead of"), "{ahead:?}");
        let behind = clock(-3_000);
        assert_eq!(behind.status, Status::Warn);
        assert!(behind.detail.contains("behind"), "{behind:?}");
    }

    #[test]
    fn the_disk_check_reads_the_filesystem() {
        let c = disk_space(Path::new("."));
        assert!(c.detail.contains("% free"), "{c:?}");
        assert_eq!(disk_space(Path::new("/no/such/dir")).status, Status::Warn);
    }
}
