//! Configuration: layered raw sources -> one validation pass -> typed `Settings`.
//!
//! Layers, later wins: built-in defaults (`config/default.toml`, embedded), `config/default.toml`
//! in the working directory, `config/<AUTHD_ENV>.toml`, the `--config` file, then `AUTHD_*`
//! environment variables (a `.env` file is read into the environment first).

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, File, FileFormat};
use ipnet::IpNet;

mod secret_strength;

/// The built-in defaults: the commented file shipped in the repository.
pub const DEFAULTS_TOML: &str = include_str!("../config/default.toml");

/// Every known key, by section. Anything else in a file is an error.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "bind",
            "body_limit",
            "shutdown_grace",
            "cors_origins",
            "trusted_proxies",
            "hsts",
        ],
    ),
    (
        "database",
        &["url", "pool_size", "auto_migrate", "busy_timeout"],
    ),
    (
        "jwt",
        &[
            "issuer",
            "audience",
            "algorithm",
            "access_ttl",
            "refresh_ttl",
            "refresh_reuse_grace",
            "leeway",
            "access_secret",
            "refresh_secret",
            "access_secret_previous",
            "refresh_secret_previous",
            "key_encryption_secret",
            "key_dir",
        ],
    ),
    ("password", &["bcrypt_cost", "min_length"]),
    ("cookie", &["name", "secure"]),
    (
        "rate_limit",
        &[
            "enabled",
            "window",
            "max_requests",
            "max_failed_logins",
            "lockout_threshold",
            "lockout_duration",
            "redis_url",
            "ipv6_prefix",
        ],
    ),
    ("cleanup", &["interval", "retention"]),
    ("log", &["format", "level"]),
];

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["server.cors_origins", "server.trusted_proxies"];

/// Environment variables with the `AUTHD_` prefix that are not configuration keys.
const NON_KEY_VARS: &[&str] = &["AUTHD_ENV", "AUTHD_CONFIG"];

/// A secret value whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    EdDsa,
    Hs256,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::EdDsa => "EdDSA",
            JwtAlgorithm::Hs256 => "HS256",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `server.bind` (`AUTHD_SERVER__BIND`), default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// `server.body_limit` in bytes, default 16384.
    pub body_limit: u64,
    /// `server.shutdown_grace`, default 30s: how long in-flight requests may take after SIGTERM.
    pub shutdown_grace: Duration,
    /// `server.cors_origins`: exact origins allowed for CORS (and for CSRF checks).
    pub cors_origins: Vec<String>,
    /// `server.trusted_proxies`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `server.hsts`: send `Strict-Transport-Security`.
    pub hsts: bool,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `database.url`, default `sqlite://data/authd.db`.
    pub url: String,
    /// `database.pool_size`, default 8.
    pub pool_size: u32,
    /// `database.auto_migrate`, default true.
    pub auto_migrate: bool,
    /// `database.busy_timeout`, default 5s: how long a write waits for a lock before 503.
    pub busy_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    pub algorithm: JwtAlgorithm,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub leeway: Duration,
    pub access_secret: Option<Secret>,
    pub refresh_secret: Option<Secret>,
    /// `jwt.access_secret_previous` (`AUTHD_JWT__ACCESS_SECRET_PREVIOUS`), default empty:
    /// the access secret before the last change; verifies access tokens, never signs.
    pub access_secret_previous: Option<Secret>,
    /// `jwt.refresh_secret_previous` (`AUTHD_JWT__REFRESH_SECRET_PREVIOUS`), default empty:
    /// the refresh secret before the last change; verifies refresh tokens, never signs.
    pub refresh_secret_previous: Option<Secret>,
    /// `jwt.key_encryption_secret` (`AUTHD_JWT__KEY_ENCRYPTION_SECRET`), default empty:
    /// encrypts the private parts of the signing keys kept in the database (docs/SECURITY.md).
    pub key_encryption_secret: Option<Secret>,
    pub key_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PasswordSettings {
    pub bcrypt_cost: u32,
    pub min_length: usize,
}

#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: String,
    pub secure: bool,
}

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub window: Duration,
    pub max_requests: u32,
    pub max_failed_logins: u32,
    pub lockout_threshold: u32,
    pub lockout_duration: Duration,
    /// `rate_limit.redis_url` (`AUTHD_RATE_LIMIT__REDIS_URL`), default empty (`None`): each
    /// process counts the per-IP request budget itself. `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`
    /// shares that budget between instances through Redis (see `http::budget`). May hold a
    /// password: shown only through `redact_url`.
    pub redis_url: Option<String>,
    /// `rate_limit.ipv6_prefix` (`AUTHD_RATE_LIMIT__IPV6_PREFIX`), default 64, 1 to 128: IPv6
    /// clients are counted per network of this prefix length by every per-IP limit (128:
    /// each address on its own). See `domain::ip::rate_key`.
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone)]
pub struct CleanupSettings {
    pub interval: Duration,
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

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
    /// Non-fatal remarks found while loading (unknown `AUTHD_*` variables, insecure choices).
    pub warnings: Vec<String>,
}

impl Settings {
    /// The effective configuration as TOML, every key present, secrets shown as `"***"`.
    pub fn to_redacted_toml(&self) -> String {
        fn q(s: &str) -> String {
            serde_json::to_string(s).unwrap_or_default()
        }
        fn d(d: Duration) -> String {
            q(&humantime::format_duration(d).to_string())
        }
        fn list(items: &[String]) -> String {
            format!(
                "[{}]",
                items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        }
        fn secret(s: &Option<Secret>) -> String {
            q(if s.is_some() { "***" } else { "" })
        }
        let (sv, db, jwt, pw, ck, rl, cl, lg) = (
            &self.server,
            &self.database,
            &self.jwt,
            &self.password,
            &self.cookie,
            &self.rate_limit,
            &self.cleanup,
            &self.log,
        );
        let proxies: Vec<String> = sv.trusted_proxies.iter().map(|n| n.to_string()).collect();
        let format = match lg.format {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        };
        format!(
            "[server]\nbind = {}\nbody_limit = {}\nshutdown_grace = {}\ncors_origins = {}\ntrusted_proxies = {}\nhsts = {}\n\n\
             [database]\nurl = {}\npool_size = {}\nauto_migrate = {}\nbusy_timeout = {}\n\n\
             [jwt]\nissuer = {}\naudience = {}\nalgorithm = {}\naccess_ttl = {}\nrefresh_ttl = {}\n\
             refresh_reuse_grace = {}\nleeway = {}\naccess_secret = {}\nrefresh_secret = {}\n\
             access_secret_previous = {}\nrefresh_secret_previous = {}\nkey_encryption_secret = {}\nkey_dir = {}\n\n\
             [password]\nbcrypt_cost = {}\nmin_length = {}\n\n\
             [cookie]\nname = {}\nsecure = {}\n\n\
             [rate_limit]\nenabled = {}\nwindow = {}\nmax_requests = {}\nmax_failed_logins = {}\n\
             lockout_threshold = {}\nlockout_duration = {}\nredis_url = {}\nipv6_prefix = {}\n\n\
             [cleanup]\ninterval = {}\nretention = {}\n\n\
             [log]\nformat = {}\nlevel = {}\n",
            q(&sv.bind.to_string()),
            sv.body_limit,
            d(sv.shutdown_grace),
            list(&sv.cors_origins),
            list(&proxies),
            sv.hsts,
            q(&redact_url(&db.url)),
            db.pool_size,
            db.auto_migrate,
            d(db.busy_timeout),
            q(&jwt.issuer),
            q(&jwt.audience),
            q(jwt.algorithm.as_str()),
            d(jwt.access_ttl),
            d(jwt.refresh_ttl),
            d(jwt.refresh_reuse_grace),
            d(jwt.leeway),
            secret(&jwt.access_secret),
            secret(&jwt.refresh_secret),
            secret(&jwt.access_secret_previous),
            secret(&jwt.refresh_secret_previous),
            secret(&jwt.key_encryption_secret),
            q(&jwt.key_dir.display().to_string()),
            pw.bcrypt_cost,
            pw.min_length,
            q(&ck.name),
            ck.secure,
            rl.enabled,
            d(rl.window),
            rl.max_requests,
            rl.max_failed_logins,
            rl.lockout_threshold,
            d(rl.lockout_duration),
            q(&rl.redis_url.as_deref().map(redact_url).unwrap_or_default()),
            rl.ipv6_prefix,
            d(cl.interval),
            d(cl.retention),
            q(format),
            q(&lg.level),
        )
    }
}

/// Hides a password in a database or Redis URL (`scheme://user:pass@host` ->
/// `scheme://user:***@host`, and a `password=` query parameter), for `check-config`, logs and
/// error messages. The user info ends at the last `@` before the query (or, when no `@`
/// comes before a `?`, at the last `@` of all), so a password holding an unencoded `@`, `/`
/// or `?` is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let before_query = rest.split('?').next().unwrap_or(rest);
    let at = if before_query.contains('@') {
        before_query.rfind('@')
    } else {
        rest.rfind('@')
    };
    let rest = match at.map(|i| rest.split_at(i)) {
        Some((creds, host)) if creds.contains(':') => {
            let user = creds.split(':').next().unwrap_or("");
            format!("{user}:***{host}")
        }
        _ => rest.to_string(),
    };
    let redacted = match rest.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{redacted}")
}

/// Every problem found in the configuration, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0.join("; "))
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
        optional.push(sources.base_dir.join(format!("config/{env}.toml")));
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
            Err(e) => errors.push(format!("{label}: {e}")),
        }
    }
    for (var, value) in &sources.env_vars {
        if NON_KEY_VARS.contains(&var.as_str()) {
            continue;
        }
        match env_key(var) {
            Some(key) if LIST_KEYS.contains(&key.as_str()) => {
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
                "ignoring unknown environment variable {var} (expected AUTHD_<SECTION>__<KEY>)"
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
    let settings = r.settings(warnings);
    errors.extend(r.errors);
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError(errors))
    }
}

fn read_file(path: &Path, files: &mut Vec<(String, String)>, errors: &mut Vec<String>) {
    match std::fs::read_to_string(path) {
        Ok(text) => files.push((path.display().to_string(), text)),
        Err(e) => errors.push(format!("cannot read config file {}: {e}", path.display())),
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
    for (section, value) in table {
        if !KNOWN_KEYS.iter().any(|(s, _)| *s == section) {
            errors.push(format!("{label}: unknown section [{section}]"));
            continue;
        }
        match value.into_table() {
            Ok(keys) => {
                for key in keys.keys() {
                    if !is_known(&section, key) {
                        errors.push(format!("{label}: unknown key {section}.{key}"));
                    }
                }
            }
            Err(_) => errors.push(format!("{label}: {section} must be a table")),
        }
    }
}

/// Reads each key once, recording one error per bad key.
struct Reader<'a> {
    cfg: &'a Config,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn fail<T: Default>(&mut self, key: &str, why: impl fmt::Display) -> T {
        self.errors.push(format!("{key}: {why}"));
        T::default()
    }

    fn string(&mut self, key: &str) -> String {
        match self.cfg.get_string(key) {
            Ok(s) => s,
            Err(e) => self.fail(key, format!("not a string ({e})")),
        }
    }

    fn boolean(&mut self, key: &str) -> bool {
        let raw = self.string(key);
        match raw.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => self.fail(key, format!("expected true or false, got '{raw}'")),
        }
    }

    fn uint(&mut self, key: &str, min: u64, max: u64) -> u64 {
        let raw = self.string(key);
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(n) => self.fail(key, format!("{n} is out of range {min}..={max}")),
            Err(_) => self.fail(key, format!("expected a whole number, got '{raw}'")),
        }
    }

    fn duration(&mut self, key: &str, allow_zero: bool) -> Duration {
        let raw = self.string(key);
        let parsed = match raw.trim() {
            "0" => Ok(Duration::ZERO),
            s if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() => s
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|e| e.to_string()),
            s => humantime::parse_duration(s).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(d) if d.is_zero() && !allow_zero => self.fail(key, "must be greater than zero"),
            Ok(d) => d,
            Err(e) => self.fail(
                key,
                format!("invalid duration '{raw}' ({e}); use e.g. 30s, 15m, 7d"),
            ),
        }
    }

    fn list(&mut self, key: &str) -> Vec<String> {
        match self.cfg.get_array(key) {
            Ok(values) => values
                .into_iter()
                .filter_map(|v| match v.into_string() {
                    Ok(s) => Some(s),
                    Err(e) => self.fail(key, format!("entries must be strings ({e})")),
                })
                .collect(),
            Err(_) => self.fail(key, "expected a list of strings"),
        }
    }

    fn secret(&mut self, key: &str) -> Option<Secret> {
        let raw = self.string(key);
        if raw.is_empty() {
            return None;
        }
        if let Err(why) = check_secret_strength(&raw) {
            return self.fail(key, why);
        }
        Some(Secret(raw))
    }

    /// An optional Redis URL: empty is `None`; anything else must be a `redis://` URL that the
    /// Redis client accepts. The message never repeats a password.
    fn redis_url(&mut self, key: &str) -> Option<String> {
        let raw = self.string(key);
        let url = raw.trim();
        if url.is_empty() {
            return None;
        }
        if let Err(why) = check_redis_url(url) {
            return self.fail(key, why);
        }
        Some(url.to_string())
    }

    fn settings(&mut self, mut warnings: Vec<String>) -> Settings {
        let bind_raw = self.string("server.bind");
        let bind = bind_raw.parse::<SocketAddr>().unwrap_or_else(|_| {
            self.fail::<()>(
                "server.bind",
                format!("expected IP:PORT such as 127.0.0.1:8080, got '{bind_raw}'"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let cors_origins = self.list("server.cors_origins");
        for origin in &cors_origins {
            if let Err(why) = check_origin(origin) {
                self.fail::<()>("server.cors_origins", format!("'{origin}': {why}"));
            }
        }
        let trusted_proxies = self
            .list("server.trusted_proxies")
            .into_iter()
            .filter_map(|s| match parse_net(&s) {
                Some(net) => Some(net),
                None => self.fail(
                    "server.trusted_proxies",
                    format!("'{s}' is not an IP address or CIDR range"),
                ),
            })
            .collect();
        let server = ServerSettings {
            bind,
            body_limit: self.uint("server.body_limit", 64, 64 * 1024 * 1024),
            shutdown_grace: self.duration("server.shutdown_grace", true),
            cors_origins,
            trusted_proxies,
            hsts: self.boolean("server.hsts"),
        };

        let url = self.string("database.url");
        if let Err(why) = check_database_url(&url) {
            self.fail::<()>("database.url", why);
        }
        let database = DatabaseSettings {
            url,
            pool_size: self.uint("database.pool_size", 1, 256) as u32,
            auto_migrate: self.boolean("database.auto_migrate"),
            busy_timeout: self.duration("database.busy_timeout", true),
        };

        let algorithm_raw = self.string("jwt.algorithm");
        let algorithm = match algorithm_raw.to_ascii_uppercase().as_str() {
            "EDDSA" => JwtAlgorithm::EdDsa,
            "HS256" => JwtAlgorithm::Hs256,
            _ => {
                self.fail::<()>(
                    "jwt.algorithm",
                    format!("expected EdDSA or HS256, got '{algorithm_raw}'"),
                );
                JwtAlgorithm::EdDsa
            }
        };
        let access_secret = self.secret("jwt.access_secret");
        let refresh_secret = self.secret("jwt.refresh_secret");
        if let (Some(a), Some(r)) = (&access_secret, &refresh_secret) {
            if a == r {
                self.fail::<()>(
                    "jwt.refresh_secret",
                    "must differ from jwt.access_secret (refresh tokens use a separate key)",
                );
            }
        }
        let access_secret_previous = self.secret("jwt.access_secret_previous");
        let refresh_secret_previous = self.secret("jwt.refresh_secret_previous");
        let key_encryption_secret = self.secret("jwt.key_encryption_secret");
        for (key, value, current, current_key) in [
            (
                "jwt.access_secret_previous",
                &access_secret_previous,
                &access_secret,
                "jwt.access_secret",
            ),
            (
                "jwt.refresh_secret_previous",
                &refresh_secret_previous,
                &refresh_secret,
                "jwt.refresh_secret",
            ),
        ] {
            if value.is_some() && value == current {
                self.fail::<()>(key, format!("must differ from {current_key}"));
            }
        }
        if let Some(k) = &key_encryption_secret {
            if [&access_secret, &refresh_secret]
                .iter()
                .any(|s| s.as_ref() == Some(k))
            {
                self.fail::<()>(
                    "jwt.key_encryption_secret",
                    "must differ from jwt.access_secret and jwt.refresh_secret",
                );
            }
        }
        let issuer = self.string("jwt.issuer");
        let audience = self.string("jwt.audience");
        for (key, value) in [("jwt.issuer", &issuer), ("jwt.audience", &audience)] {
            if value.trim().is_empty() {
                self.fail::<()>(key, "must not be empty");
            }
        }
        let key_dir = PathBuf::from(self.string("jwt.key_dir"));
        let jwt = JwtSettings {
            issuer,
            audience,
            algorithm,
            access_ttl: self.duration("jwt.access_ttl", false),
            refresh_ttl: self.duration("jwt.refresh_ttl", false),
            refresh_reuse_grace: self.duration("jwt.refresh_reuse_grace", true),
            leeway: self.duration("jwt.leeway", true),
            access_secret,
            refresh_secret,
            access_secret_previous,
            refresh_secret_previous,
            key_encryption_secret,
            key_dir,
        };

        let password = PasswordSettings {
            bcrypt_cost: self.uint("password.bcrypt_cost", 10, 31) as u32,
            min_length: self.uint("password.min_length", 1, 72) as usize,
        };

        let cookie_name = self.string("cookie.name");
        if cookie_name.is_empty()
            || !cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
        {
            self.fail::<()>(
                "cookie.name",
                format!("'{cookie_name}' is not a valid cookie name"),
            );
        }
        let cookie = CookieSettings {
            name: cookie_name,
            secure: self.boolean("cookie.secure"),
        };
        // Browsers drop a `__Secure-` or `__Host-` cookie set without `Secure` (RFC 6265bis
        // section 4.1.3; the prefixes match without regard to case).
        let prefixed = ["__Secure-", "__Host-"].iter().any(|p| {
            cookie
                .name
                .get(..p.len())
                .is_some_and(|n| n.eq_ignore_ascii_case(p))
        });
        if prefixed && !cookie.secure {
            self.fail::<()>(
                "cookie.secure",
                format!(
                    "is false, but browsers drop a '{}' cookie that is not Secure",
                    cookie.name
                ),
            );
        }
        if !cookie.secure {
            warnings.push(
                "cookie.secure is false: the refresh cookie will also be sent over plain HTTP"
                    .into(),
            );
        }

        let rate_limit = RateLimitSettings {
            enabled: self.boolean("rate_limit.enabled"),
            window: self.duration("rate_limit.window", false),
            max_requests: self.uint("rate_limit.max_requests", 1, u32::MAX as u64) as u32,
            max_failed_logins: self.uint("rate_limit.max_failed_logins", 1, u32::MAX as u64) as u32,
            lockout_threshold: self.uint("rate_limit.lockout_threshold", 1, u32::MAX as u64) as u32,
            lockout_duration: self.duration("rate_limit.lockout_duration", false),
            redis_url: self.redis_url("rate_limit.redis_url"),
            ipv6_prefix: self.uint("rate_limit.ipv6_prefix", 1, 128) as u8,
        };
        let cleanup = CleanupSettings {
            interval: self.duration("cleanup.interval", false),
            retention: self.duration("cleanup.retention", true),
        };

        let format_raw = self.string("log.format");
        let format = match format_raw.to_ascii_lowercase().as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            _ => {
                self.fail::<()>(
                    "log.format",
                    format!("expected pretty or json, got '{format_raw}'"),
                );
                LogFormat::Pretty
            }
        };
        let level = self.string("log.level");
        if tracing_subscriber::EnvFilter::builder()
            .parse(&level)
            .is_err()
        {
            self.fail::<()>(
                "log.level",
                format!("'{level}' is not a valid level or filter"),
            );
        }

        Settings {
            server,
            database,
            jwt,
            password,
            cookie,
            rate_limit,
            cleanup,
            log: LogSettings { format, level },
            warnings,
        }
    }
}

/// Words that mark a secret copied from an example rather than generated.
const PLACEHOLDER_MARKERS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "changethis",
    "placeholder",
    "replace-me",
    "replaceme",
    "example",
    "your-secret",
    "your_secret",
    "yoursecret",
    "secret-key",
    "secretkey",
    "insecure",
    "default",
];

/// How a configured secret is judged, and how to make a good one.
const GENERATE: &str = "generate one, e.g. `openssl rand -base64 48`";

/// The strength zxcvbn must rate a configured secret at, in bits.
pub const SECRET_MIN_BITS: f64 = 128.0;

/// The one check of every configured secret (`jwt.access_secret`, `jwt.refresh_secret` and
/// every other secret key): at least 32 bytes with at least 8 distinct bytes, no placeholder
/// word, not a published example secret (documentation defaults, tutorial values; any case,
/// separators or suffix), and rated at least 128 bits by zxcvbn. `openssl rand -base64 48` or
/// `openssl rand -hex 32` pass.
///
/// # Errors
/// Why the secret is refused, one line that never contains the secret; callers prefix the key.
pub fn check_secret_strength(secret: &str) -> Result<(), String> {
    if secret.len() < 32 {
        return Err(format!(
            "too short ({} bytes; at least 32 required)",
            secret.len()
        ));
    }
    let distinct: BTreeSet<u8> = secret.bytes().collect();
    if distinct.len() < 8 {
        return Err(format!(
            "too weak ({} distinct bytes; at least 8 required)",
            distinct.len()
        ));
    }
    if secret_strength::is_published(secret) {
        return Err(format!(
            "is a published example secret (documentation or tutorial value); {GENERATE}"
        ));
    }
    let lower = secret.to_ascii_lowercase();
    if let Some(marker) = PLACEHOLDER_MARKERS.iter().find(|m| lower.contains(*m)) {
        return Err(format!(
            "looks like a placeholder (contains '{marker}'); {GENERATE}"
        ));
    }
    let bits = secret_strength::estimated_bits(secret);
    if bits < SECRET_MIN_BITS {
        return Err(format!(
            "too guessable (zxcvbn rates it {bits:.0} bits; at least 128 required); {GENERATE}"
        ));
    }
    Ok(())
}

fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Err("wildcards are not allowed; list exact origins");
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.is_empty()
        || rest.contains('/')
        || rest.contains('*')
        || rest.contains(char::is_whitespace)
    {
        return Err("must be scheme://host[:port] with no path");
    }
    Ok(())
}

/// An IP address or CIDR range; an IPv4-mapped one is its IPv4 form (contract section 9).
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .map(crate::domain::ip::canonical_net)
}

fn check_database_url(url: &str) -> Result<(), String> {
    match url.split_once(':') {
        Some(("sqlite", rest)) if !rest.trim_start_matches("//").is_empty() => Ok(()),
        Some(("sqlite", _)) => Err("sqlite URL has no path (e.g. sqlite://data/authd.db)".into()),
        Some(("postgres" | "postgresql", _)) => crate::store::postgres::check_url(url),
        Some((scheme, _)) => Err(format!(
            "unsupported database scheme '{scheme}' (this build supports sqlite:// and postgres://)"
        )),
        None => Err(format!(
            "'{url}' is not a URL such as sqlite://data/authd.db"
        )),
    }
}

fn check_redis_url(url: &str) -> Result<(), String> {
    const FORM: &str = "redis://[:PASSWORD@]HOST[:PORT][/DB]";
    if !url.starts_with("redis://") {
        return Err(format!(
            "'{}' is not a Redis URL such as {FORM} (only redis:// is supported)",
            redact_url(url)
        ));
    }
    match redis::IntoConnectionInfo::into_connection_info(url) {
        Ok(info) if info.redis_settings().db() >= 0 => Ok(()),
        Ok(_) => Err(format!(
            "'{}': the database number must not be negative",
            redact_url(url)
        )),
        Err(e) => Err(format!(
            "'{}' is not a Redis URL such as {FORM} ({})",
            redact_url(url),
            e
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        load(&Sources {
            base_dir: PathBuf::from("/nonexistent"),
            env_vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = with_env(&[]).unwrap();
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.server.body_limit, 16384);
        assert_eq!(s.server.shutdown_grace, Duration::from_secs(30));
        assert!(s.server.cors_origins.is_empty() && s.server.trusted_proxies.is_empty());
        assert!(!s.server.hsts);
        assert_eq!(s.database.url, "sqlite://data/authd.db");
        assert_eq!(s.database.pool_size, 8);
        assert!(s.database.auto_migrate);
        assert_eq!(
            (s.jwt.issuer.as_str(), s.jwt.audience.as_str()),
            ("authd", "authd")
        );
        assert_eq!(s.jwt.algorithm, JwtAlgorithm::EdDsa);
        assert_eq!(s.jwt.access_ttl, Duration::from_secs(900));
        assert_eq!(s.jwt.refresh_ttl, Duration::from_secs(7 * 86400));
        assert_eq!(s.jwt.refresh_reuse_grace, Duration::ZERO);
        assert_eq!(s.jwt.leeway, Duration::from_secs(30));
        assert!(s.jwt.access_secret.is_none() && s.jwt.refresh_secret.is_none());
        assert_eq!(s.jwt.key_dir, PathBuf::from("data/keys"));
        assert_eq!((s.password.bcrypt_cost, s.password.min_length), (12, 8));
        assert_eq!(s.cookie.name, "authd_refresh");
        assert!(s.cookie.secure);
        let rl = &s.rate_limit;
        assert!(rl.enabled);
        assert_eq!(rl.window, Duration::from_secs(900));
        assert_eq!(
            (rl.max_requests, rl.max_failed_logins, rl.lockout_threshold),
            (300, 5, 10)
        );
        assert_eq!(rl.lockout_duration, Duration::from_secs(900));
        assert_eq!(s.cleanup.interval, Duration::from_secs(3600));
        assert_eq!(s.cleanup.retention, Duration::from_secs(7 * 86400));
        assert_eq!(s.log.format, LogFormat::Pretty);
        assert_eq!(s.log.level, "info");
    }

    #[test]
    fn env_overrides_and_lists() {
        let s = with_env(&[
            ("AUTHD_SERVER__BIND", "127.0.0.1:9000"),
            ("AUTHD_RATE_LIMIT__ENABLED", "false"),
            (
                "AUTHD_SERVER__CORS_ORIGINS",
                "https://a.example.org, https://b.example.org",
            ),
            ("AUTHD_SERVER__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1"),
            ("AUTHD_JWT__ACCESS_TTL", "2m"),
        ])
        .unwrap();
        assert_eq!(s.server.bind.port(), 9000);
        assert!(!s.rate_limit.enabled);
        assert_eq!(s.server.cors_origins.len(), 2);
        assert_eq!(s.server.trusted_proxies.len(), 2);
        assert_eq!(s.jwt.access_ttl, Duration::from_secs(120));
    }

    #[test]
    fn every_bad_key_is_named() {
        let err = with_env(&[
            ("AUTHD_SERVER__BIND", "nope"),
            ("AUTHD_PASSWORD__BCRYPT_COST", "9"),
            ("AUTHD_JWT__LEEWAY", "soon"),
            ("AUTHD_JWT__ACCESS_SECRET", "short"),
            (
                "AUTHD_JWT__REFRESH_SECRET",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
        ])
        .unwrap_err();
        let text = err.to_string();
        for key in [
            "server.bind",
            "password.bcrypt_cost",
            "jwt.leeway",
            "jwt.access_secret",
            "jwt.refresh_secret",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn secrets() {
        assert!(check_secret_strength(
            "grYplcLiO/Sd6Fo4gDN1gHcN/e7LyOQYQU1f1a3WcrcamumlvZFFwUJhZYhJSTJk"
        )
        .is_ok());
        let refused = |s: &str| check_secret_strength(s).unwrap_err();
        assert!(refused("0123456789abcdef").contains("too short"));
        assert!(refused("abababababababababababababababababab").contains("distinct"));
        assert!(refused("change-me-change-me-change-me-0123456789").contains("placeholder"));
        let supabase = "your-super-secret-jwt-token-with-at-least-32-characters-long";
        assert!(refused(supabase).contains("published"));
        assert!(!refused(supabase).contains(supabase));
        assert!(refused("0123456789abcdef0123456789abcdef").contains("zxcvbn"));
        assert_eq!(format!("{:?}", Secret("x".into())), "***");
    }

    #[test]
    fn redacted_rendering_reparses_and_hides_secrets() {
        let s = with_env(&[
            (
                "AUTHD_JWT__ACCESS_SECRET",
                "cGYZTGv65xfW+ddjR+p6gKdFgjrxY8DNuNd/z95VMgEmYQLqB0hDDtw8seFMRKh+",
            ),
            ("AUTHD_SERVER__CORS_ORIGINS", "https://a.example.org"),
        ])
        .unwrap();
        let text = s.to_redacted_toml();
        assert!(!text.contains("cGYZTGv65xfW"), "{text}");
        assert!(text.contains("access_secret = \"***\""));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("effective.toml");
        std::fs::write(&file, text.replace("\"***\"", "\"\"")).unwrap();
        let again = load(&Sources {
            base_dir: dir.path().to_path_buf(),
            config_file: Some(file),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(again.server.cors_origins, s.server.cors_origins);
        assert_eq!(again.jwt.refresh_ttl, s.jwt.refresh_ttl);
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn redact_url_hides_the_whole_password_whatever_it_holds() {
        for (url, shown) in [
            ("postgres://u:p@ss@h:5432/db", "postgres://u:***@h:5432/db"),
            (
                "postgres://u:p/w@h/db?sslmode=disable",
                "postgres://u:***@h/db?sslmode=disable",
            ),
            ("redis://:s3cret@r:6379/0", "redis://:***@r:6379/0"),
            (
                "postgres://u@h/db?application_name=a@b",
                "postgres://u@h/db?application_name=a@b",
            ),
            (
                "sqlite:///var/lib/authd/authd.db",
                "sqlite:///var/lib/authd/authd.db",
            ),
            ("postgres://u:p?ss@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?password=s3cret&sslmode=disable",
                "postgres://u@h/db?password=***&sslmode=disable",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn redis_url_is_validated_and_redacted() {
        assert_eq!(with_env(&[]).unwrap().rate_limit.redis_url, None);
        let s = with_env(&[(
            "AUTHD_RATE_LIMIT__REDIS_URL",
            "redis://:Hunter2-pw@cache.internal:6380/2",
        )])
        .unwrap();
        assert_eq!(
            s.rate_limit.redis_url.as_deref(),
            Some("redis://:Hunter2-pw@cache.internal:6380/2")
        );
        let text = s.to_redacted_toml();
        assert!(!text.contains("Hunter2"), "{text}");
        assert!(text.contains("redis_url = \"redis://:***@cache.internal:6380/2\""));
        for bad in [
            "cache.internal:6379",
            "http://cache.internal",
            "redis://:Hunter2-pw@cache.internal/notanumber",
            "rediss://cache.internal",
        ] {
            let err = with_env(&[("AUTHD_RATE_LIMIT__REDIS_URL", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("rate_limit.redis_url"), "{bad}: {err}");
            assert!(!err.contains("Hunter2"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_env_vars_warn() {
        let s = with_env(&[("AUTHD_SERVER__BND", "x")]).unwrap();
        assert!(s.warnings.iter().any(|w| w.contains("AUTHD_SERVER__BND")));
    }
}
