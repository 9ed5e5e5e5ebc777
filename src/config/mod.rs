//! Configuration: layered raw sources -> one validation pass -> typed `Settings`.
//!
//! Layers, later wins: built-in defaults (`config/default.toml`, embedded), `config/default.toml`
//! in the working directory, `config/<AUTHD_ENV>.toml`, the `--config` file, then `AUTHD_*`
//! environment variables (a `.env` file is read into the environment first).
//!
//! This file only layers the sources and gathers the sections: each section (`[server]`,
//! `[database]`, ...) is its own file holding its keys, its validated settings type, how it
//! is read and checked, and how it is rendered back. A new section is a new file, listed in
//! `SECTIONS`, `Settings`, `Settings::read` and `Settings::to_redacted_toml`.

use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat};

mod audit;
mod cleanup;
mod cookie;
mod database;
mod email;
mod jwt;
mod log;
mod metrics;
mod mfa;
mod pages;
mod password;
mod password_reset;
mod rate_limit;
mod reader;
mod redact;
mod registration;
mod render;
mod revocation_feed;
mod secret;
mod secret_strength;
mod server;
mod webauthn;

pub use audit::AuditSettings;
pub use cleanup::CleanupSettings;
pub use cookie::CookieSettings;
pub use database::DatabaseSettings;
pub use email::{EmailSettings, MailTransport, SmtpTls, TOKEN_PLACEHOLDER};
pub use jwt::{JwtAlgorithm, JwtSettings};
pub use log::{LogFormat, LogSettings};
pub use metrics::MetricsSettings;
pub use mfa::MfaSettings;
pub use pages::PagesSettings;
pub use password::PasswordSettings;
pub use password_reset::{PasswordResetSettings, TTL_RANGE as RESET_TTL_RANGE};
pub use rate_limit::RateLimitSettings;
pub use redact::redact_url;
pub use registration::RegistrationSettings;
pub use revocation_feed::RevocationFeedSettings;
pub use secret::{check_secret_strength, Secret, SECRET_MIN_BITS};
pub use server::{ConnectionLimits, ServerSettings};
pub use webauthn::WebauthnSettings;

use reader::Reader;

/// The built-in defaults: the commented file shipped in the repository.
pub const DEFAULTS_TOML: &str = include_str!("../../config/default.toml");

/// Every known key, by section. Anything else in a file is an error.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("server", server::KEYS),
    ("database", database::KEYS),
    ("jwt", jwt::KEYS),
    ("password", password::KEYS),
    ("cookie", cookie::KEYS),
    ("rate_limit", rate_limit::KEYS),
    ("cleanup", cleanup::KEYS),
    ("log", log::KEYS),
    ("registration", registration::KEYS),
    ("metrics", metrics::KEYS),
    ("email", email::KEYS),
    ("password_reset", password_reset::KEYS),
    ("pages", pages::KEYS),
    ("revocation_feed", revocation_feed::KEYS),
    ("audit", audit::KEYS),
    ("mfa", mfa::KEYS),
    ("webauthn", webauthn::KEYS),
];

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&[&str]] = &[server::LIST_KEYS, webauthn::LIST_KEYS];

/// Secret keys that can also be given as a file: `AUTHD_<SECTION>__<KEY>_FILE=/path` holds the
/// value (one trailing newline stripped), the systemd credentials and container secrets
/// convention. A new secret key is added here and nowhere else. For the URLs the file holds
/// the whole URL.
const FILE_KEYS: &[&[&str]] = &[
    jwt::FILE_KEYS,
    database::FILE_KEYS,
    rate_limit::FILE_KEYS,
    email::FILE_KEYS,
    mfa::FILE_KEYS,
];

/// The suffix of the environment variable naming a file that holds a `FILE_KEYS` value.
const FILE_SUFFIX: &str = "_FILE";

/// Environment variables with the `AUTHD_` prefix that are not configuration keys.
const NON_KEY_VARS: &[&str] = &["AUTHD_ENV", "AUTHD_CONFIG"];

/// The validated configuration. Everything the program does flows from one of these.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub jwt: JwtSettings,
    pub password: PasswordSettings,
    pub cookie: CookieSettings,
    pub rate_limit: RateLimitSettings,
    pub cleanup: CleanupSettings,
    pub log: LogSettings,
    pub registration: RegistrationSettings,
    pub metrics: MetricsSettings,
    pub email: EmailSettings,
    pub password_reset: PasswordResetSettings,
    pub pages: PagesSettings,
    pub revocation_feed: RevocationFeedSettings,
    pub audit: AuditSettings,
    pub mfa: MfaSettings,
    pub webauthn: WebauthnSettings,
    /// Non-fatal remarks found while loading (unknown `AUTHD_*` variables, insecure choices).
    pub warnings: Vec<String>,
}

impl Settings {
    /// Reads and checks every section, in order, then gathers them.
    fn read(r: &mut Reader, mut warnings: Vec<String>) -> Settings {
        let server = ServerSettings::read(r);
        let database = DatabaseSettings::read(r);
        let jwt = JwtSettings::read(r);
        let password = PasswordSettings::read(r);
        let cookie = CookieSettings::read(r, &mut warnings);
        let rate_limit = RateLimitSettings::read(r);
        let cleanup = CleanupSettings::read(r);
        let log = LogSettings::read(r);
        let registration = RegistrationSettings::read(r);
        let metrics = MetricsSettings::read(r);
        let email = EmailSettings::read(r);
        let password_reset = PasswordResetSettings::read(r);
        let pages = PagesSettings::read(r);
        let revocation_feed = RevocationFeedSettings::read(r);
        let audit = AuditSettings::read(r);
        let mfa = MfaSettings::read(r, &mut warnings);
        let webauthn = WebauthnSettings::read(r);
        if email.transport == MailTransport::Smtp
            && !email.smtp_username.is_empty()
            && email.smtp_password.is_none()
        {
            warnings.push(
                "email.smtp_username is set and email.smtp_password is empty: authd logs in to \
                 the relay (AUTH) with an empty password; set AUTHD_EMAIL__SMTP_PASSWORD (or \
                 ..._FILE), or leave smtp_username empty for a relay that needs no login"
                    .into(),
            );
        }
        // authd has no TLS listener: reached directly on a non-loopback address, browsers
        // talk plain HTTP to it and never send the Secure refresh cookie back.
        if cookie.secure && !server.bind.ip().is_loopback() && server.trusted_proxies.is_empty() {
            warnings.push(format!(
                "server.bind {} is plain HTTP on a non-loopback address and server.trusted_proxies \
                 is empty: browsers will not send the Secure refresh cookie (cookie.secure) over \
                 plain HTTP, so every refresh will be 401 TOKEN_MISSING; put authd behind an \
                 HTTPS proxy listed in server.trusted_proxies",
                server.bind
            ));
        }
        Settings {
            server,
            database,
            jwt,
            password,
            cookie,
            rate_limit,
            cleanup,
            log,
            registration,
            metrics,
            email,
            password_reset,
            pages,
            revocation_feed,
            audit,
            mfa,
            webauthn,
            warnings,
        }
    }

    /// The effective configuration as TOML, every key present, secrets shown as `"***"`.
    pub fn to_redacted_toml(&self) -> String {
        [
            self.server.to_toml(),
            self.database.to_toml(),
            self.jwt.to_toml(),
            self.password.to_toml(),
            self.cookie.to_toml(),
            self.rate_limit.to_toml(),
            self.cleanup.to_toml(),
            self.log.to_toml(),
            self.registration.to_toml(),
            self.metrics.to_toml(),
            self.email.to_toml(),
            self.password_reset.to_toml(),
            self.pages.to_toml(),
            self.revocation_feed.to_toml(),
            self.audit.to_toml(),
            self.mfa.to_toml(),
            self.webauthn.to_toml(),
        ]
        .join("\n")
    }
}

/// Every problem found in the configuration, each naming its key, in a stable order: files
/// in layer order (each file's unknown keys sorted), then `AUTHD_*` variables sorted by name,
/// then the sections' keys in their documented order.
///
/// An entry's first line is its summary; further lines (a TOML syntax error's offending line
/// and caret) are its detail, shown by `details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl ConfigError {
    /// The detail lines of every entry, in order (empty when no entry has any).
    pub fn details(&self) -> Vec<&str> {
        self.0.iter().flat_map(|e| e.lines().skip(1)).collect()
    }
}

impl fmt::Display for ConfigError {
    /// One line: every entry's summary, joined by `; `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summaries: Vec<&str> = self
            .0
            .iter()
            .map(|e| e.lines().next().unwrap_or(""))
            .collect();
        write!(f, "invalid configuration: {}", summaries.join("; "))
    }
}

impl std::error::Error for ConfigError {}

/// Where configuration comes from. `Sources::from_process` reads the real environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directory holding `config/default.toml` and `config/<env>.toml` (usually the cwd).
    pub base_dir: PathBuf,
    /// The value of `AUTHD_ENV`.
    pub env_name: Option<String>,
    /// The `--config` file.
    pub config_file: Option<PathBuf>,
    /// `AUTHD_*` environment variables.
    pub env_vars: Vec<(String, String)>,
}

impl Sources {
    /// Reads `.env` from the working directory (only there: never a parent's) into the
    /// environment, then the environment. Variables already set win over the file.
    ///
    /// A `.env` that cannot even be looked for, because the working directory itself is not
    /// searchable (a service user started from `/root`), is skipped with a warning: the
    /// configuration may well be elsewhere (`--config`, `AUTHD_*`). A `.env` that exists but
    /// cannot be read or parsed is an error. Returns the sources and the warnings for
    /// `Settings::warnings`.
    pub fn from_process(config_file: Option<PathBuf>) -> Result<(Self, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        match dotenvy::from_path(".env") {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => match unsearchable_dir(Path::new(".env")) {
                Some(why) => warnings.push(format!(
                    "not reading .env: cannot look into the working directory ({why})"
                )),
                None => return Err(ConfigError(vec![format!(".env: {e}")])),
            },
        }
        let env_vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("AUTHD_"))
            .collect();
        let sources = Sources {
            base_dir: PathBuf::from("."),
            env_name: std::env::var("AUTHD_ENV").ok().filter(|s| !s.is_empty()),
            config_file,
            env_vars,
        };
        Ok((sources, warnings))
    }
}

/// `Some(reason)` when `path` cannot be looked up at all because a directory on the way is
/// not searchable (`EACCES` from `stat`): whether the file exists is then unknown. `None` when
/// the lookup itself works (the file exists, or does not).
fn unsearchable_dir(path: &Path) -> Option<String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(e.to_string()),
        _ => None,
    }
}

/// Loads and validates the configuration from its layers.
pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let mut files: Vec<(String, String)> = vec![("built-in defaults".into(), DEFAULTS_TOML.into())];
    let mut optional = vec![sources.base_dir.join("config/default.toml")];
    if let Some(env) = &sources.env_name {
        let path = sources.base_dir.join(format!("config/{env}.toml"));
        // A typo in AUTHD_ENV would otherwise silently run on the defaults.
        if !path.exists() && unsearchable_dir(&path).is_none() {
            warnings.push(format!(
                "AUTHD_ENV={env} but {} does not exist; not reading it",
                path.display()
            ));
        }
        optional.push(path);
    }
    for path in optional {
        // Optional files: absent is fine; one that cannot be looked for (its directory is
        // not searchable) is skipped with a warning, like `.env`; one that exists but cannot
        // be read is an error.
        if path.is_file() {
            read_file(&path, &mut files, &mut errors);
        } else if let Some(why) = unsearchable_dir(&path) {
            warnings.push(format!("not reading {}: {why}", path.display()));
        }
    }
    if let Some(path) = &sources.config_file {
        if path.is_file() {
            read_file(path, &mut files, &mut errors);
        } else if let Some(why) = unsearchable_dir(path) {
            errors.push(format!("cannot read config file {}: {why}", path.display()));
        } else {
            errors.push(format!("config file {} not found", path.display()));
        }
    }

    let mut builder = Config::builder();
    for (label, text) in &files {
        match Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .build()
        {
            Ok(single) => {
                check_unknown_keys(&single, label, &mut errors);
                builder = builder.add_source(File::from_str(text, FileFormat::Toml));
            }
            Err(e) => errors.push(toml_error(label, &e.to_string())),
        }
    }
    // Sorted by name, so errors and warnings come in the same order whatever the
    // environment's. The sort is stable: of two entries with one name (a caller's overrides
    // after the process environment), the later still wins.
    let mut env_vars: Vec<&(String, String)> = sources.env_vars.iter().collect();
    env_vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (var, value) in env_vars {
        if NON_KEY_VARS.contains(&var.as_str()) {
            continue;
        }
        if let Some(key) = file_env_key(var) {
            if let Some(value) = read_secret_file(var, &key, value, sources, &mut errors) {
                builder = builder
                    .set_override(key, value)
                    .expect("override of a known key");
            }
            continue;
        }
        match env_key(var) {
            Some(key) if LIST_KEYS.iter().any(|keys| keys.contains(&key.as_str())) => {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                builder = builder
                    .set_override(key, items)
                    .expect("override of a known key");
            }
            Some(key) => {
                builder = builder
                    .set_override(key, value.as_str())
                    .expect("override of a known key");
            }
            None => warnings.push(format!(
                "ignoring unknown environment variable {var} (expected AUTHD_<SECTION>__<KEY>){}",
                env_suggestion(var)
            )),
        }
    }
    // Files that did not parse were left out; everything else is still checked, so one
    // error line names every bad key at once.
    let cfg = builder.build().map_err(|e| {
        errors.push(e.to_string());
        ConfigError(errors.clone())
    })?;
    let mut r = Reader {
        cfg: &cfg,
        errors: Vec::new(),
    };
    let settings = Settings::read(&mut r, warnings);
    errors.extend(r.errors);
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError(errors))
    }
}

/// The largest file the configuration reads: a config file, a `*_FILE` secret or
/// `email.smtp_ca_file` (1 MiB). A longer one (say `/dev/zero`) is an error, not a process that
/// reads until memory runs out.
pub(crate) const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Reads at most `MAX_CONFIG_FILE_BYTES` of `path`; a longer file is an error.
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// `read_bounded`, as UTF-8 text.
fn read_bounded_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn read_file(path: &Path, files: &mut Vec<(String, String)>, errors: &mut Vec<String>) {
    match read_bounded_text(path) {
        Ok(text) => files.push((path.display().to_string(), text)),
        Err(e) => errors.push(format!("cannot read config file {}: {e}", path.display())),
    }
}

/// `AUTHD_JWT__ACCESS_SECRET_FILE` -> `jwt.access_secret`, if that key is in `FILE_KEYS`.
fn file_env_key(var: &str) -> Option<String> {
    let key = env_key(var.strip_suffix(FILE_SUFFIX)?)?;
    FILE_KEYS
        .iter()
        .any(|keys| keys.contains(&key.as_str()))
        .then_some(key)
}

/// The value of `key` from the file named by `var` (`path`), one trailing newline stripped.
/// Records an error naming the key when the key's own variable is set too, and one naming the
/// file when it cannot be read.
fn read_secret_file(
    var: &str,
    key: &str,
    path: &str,
    sources: &Sources,
    errors: &mut Vec<String>,
) -> Option<String> {
    let plain = var.strip_suffix(FILE_SUFFIX).unwrap_or(var);
    if sources.env_vars.iter().any(|(v, _)| v == plain) {
        errors.push(format!(
            "{key}: both {plain} and {var} are set; give the value one way only"
        ));
        return None;
    }
    match read_bounded_text(Path::new(path)) {
        Ok(text) => {
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            Some(text.to_string())
        }
        Err(e) => {
            errors.push(format!("{var}: cannot read file {path}: {e}"));
            None
        }
    }
}

/// `AUTHD_RATE_LIMIT__MAX_REQUESTS` -> `rate_limit.max_requests`, if that key exists.
fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix("AUTHD_")?;
    let (section, key) = rest.split_once("__")?;
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    is_known(&section, &key).then(|| format!("{section}.{key}"))
}

fn is_known(section: &str, key: &str) -> bool {
    KNOWN_KEYS
        .iter()
        .any(|(s, keys)| *s == section && keys.contains(&key))
}

fn check_unknown_keys(cfg: &Config, label: &str, errors: &mut Vec<String>) {
    let Ok(table) = cfg
        .clone()
        .try_deserialize::<config::Map<String, config::Value>>()
    else {
        errors.push(format!("{label}: not a table of sections"));
        return;
    };
    // `config::Map` is a hash map: sort, so the errors come in the same order on every run.
    let mut table: Vec<_> = table.into_iter().collect();
    table.sort_by(|a, b| a.0.cmp(&b.0));
    for (section, value) in table {
        let Some((_, known)) = KNOWN_KEYS.iter().find(|(s, _)| *s == section) else {
            let sections = KNOWN_KEYS.iter().map(|(s, _)| s.to_string());
            let hint = did_you_mean(&section, sections, |s| format!("[{s}]"));
            errors.push(format!("{label}: unknown section [{section}]{hint}"));
            continue;
        };
        match value.into_table() {
            Ok(keys) => {
                let mut keys: Vec<&String> = keys.keys().collect();
                keys.sort();
                for key in keys {
                    if !is_known(&section, key) {
                        let names = known.iter().map(|k| k.to_string());
                        let hint = did_you_mean(key, names, |k| format!("{section}.{k}"));
                        errors.push(format!("{label}: unknown key {section}.{key}{hint}"));
                    }
                }
            }
            Err(_) => errors.push(format!("{label}: {section} must be a table")),
        }
    }
}

/// A TOML syntax error as a summary line naming the file, line and column and the parser's
/// reason, followed by the parser's snippet (the offending line with a caret under the
/// column) as detail lines.
fn toml_error(label: &str, raw: &str) -> String {
    let lines: Vec<&str> = raw.lines().filter(|l| !l.trim().is_empty()).collect();
    let [head, snippet @ .., why] = lines.as_slice() else {
        return format!("{label}: {}", raw.trim());
    };
    let mut out = format!("{label}: {}: {}", head.trim(), why.trim());
    for line in snippet {
        out.push_str(&format!("\n  {line}"));
    }
    out
}

/// `" (did you mean `X`?)"` for the nearest of `names` to `given`, when one is close enough to
/// be a typo (at most a third of its letters, and 1 to 3 edits, away); else `""`.
fn did_you_mean(
    given: &str,
    names: impl Iterator<Item = String>,
    show: impl Fn(&str) -> String,
) -> String {
    let given_lower = given.to_ascii_lowercase();
    let best = names
        .map(|n| (edit_distance(&given_lower, &n), n))
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    match best {
        Some((d, name)) if d <= (given.chars().count() / 3).clamp(1, 3) => {
            format!(" (did you mean `{}`?)", show(&name))
        }
        _ => String::new(),
    }
}

/// The suggestion for an unknown `AUTHD_*` variable: the nearest known key's variable.
fn env_suggestion(var: &str) -> String {
    let given = var
        .strip_prefix("AUTHD_")
        .unwrap_or(var)
        .to_ascii_lowercase();
    let names = KNOWN_KEYS
        .iter()
        .flat_map(|(s, keys)| keys.iter().map(move |k| format!("{s}__{k}")));
    did_you_mean(&given, names, |n| {
        format!("AUTHD_{}", n.to_ascii_uppercase())
    })
}

/// Edit distance between `a` and `b`, by characters: insertions, deletions, substitutions
/// and swaps of two neighbours (`bnid` is one edit from `bind`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests;
