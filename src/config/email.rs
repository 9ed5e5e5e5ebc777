//! Configuration section `[email]`: outgoing mail (CONTRACT 10.1: transport, relay, retries),
//! the per-address throttle (10.2), email verification (10.4) and email change (10.5).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::reader::Reader;
use super::render::{d, q, secret};
use super::secret::Secret;

/// The keys of `[email]`.
pub(super) const KEYS: &[&str] = &[
    "transport",
    "from",
    "reply_to",
    "link_base",
    "smtp_host",
    "smtp_port",
    "smtp_tls",
    "smtp_username",
    "smtp_password",
    "smtp_ca_file",
    "smtp_timeout",
    "file_dir",
    "max_attempts",
    "retry_max_backoff",
    "send_cooldown",
    "max_mails_per_day",
    "require_verification",
    "unverified_ttl",
    "verification_ttl",
    "verification_link_path",
    "change_confirm_old",
    "change_link_path",
];

/// Secret keys of `[email]` that can be given as a file (`..._FILE`).
pub(super) const FILE_KEYS: &[&str] = &["email.smtp_password"];

/// How mail leaves authd (`email.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MailTransport {
    /// No mail: the routes that only send mail answer 404 `NOT_FOUND`.
    #[default]
    None,
    /// An SMTP relay (`email.smtp_*`).
    Smtp,
    /// One RFC 5322 file per message in `email.file_dir` (trying authd out, tests).
    File,
}

impl MailTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            MailTransport::None => "none",
            MailTransport::Smtp => "smtp",
            MailTransport::File => "file",
        }
    }
}

/// How the SMTP connection is protected (`email.smtp_tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// STARTTLS, required (never opportunistic); port 587.
    #[default]
    Starttls,
    /// Implicit TLS; port 465.
    Tls,
    /// Plain text: only to a relay on a loopback address.
    None,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `email.transport` (`AUTHD_EMAIL__TRANSPORT`), default `none`: `none`, `smtp` or `file`.
    pub transport: MailTransport,
    /// `email.from` (`AUTHD_EMAIL__FROM`), default empty: `addr` or `Name <addr>`; required
    /// unless the transport is `none`.
    pub from: String,
    /// `email.reply_to` (`AUTHD_EMAIL__REPLY_TO`), default empty (no `Reply-To`).
    pub reply_to: String,
    /// `email.link_base` (`AUTHD_EMAIL__LINK_BASE`), default empty: the origin every link in
    /// a mail starts with (`https://app.example.com`; `http://` only for a loopback host),
    /// never a request header. Required unless the transport is `none`. Stored without a
    /// trailing `/`.
    pub link_base: String,
    /// `email.smtp_host` (`AUTHD_EMAIL__SMTP_HOST`), default empty: the relay; required with
    /// `transport = "smtp"`.
    pub smtp_host: String,
    /// `email.smtp_port` (`AUTHD_EMAIL__SMTP_PORT`), default `587`.
    pub smtp_port: u16,
    /// `email.smtp_tls` (`AUTHD_EMAIL__SMTP_TLS`), default `starttls`.
    pub smtp_tls: SmtpTls,
    /// `email.smtp_username` (`AUTHD_EMAIL__SMTP_USERNAME`), default empty: no AUTH.
    pub smtp_username: String,
    /// `email.smtp_password` (`AUTHD_EMAIL__SMTP_PASSWORD`, or `..._FILE`), default empty;
    /// shown as `***`.
    pub smtp_password: Option<Secret>,
    /// `email.smtp_ca_file` (`AUTHD_EMAIL__SMTP_CA_FILE`), default empty: a PEM file of CA
    /// certificates trusted for the relay in addition to the public roots (a relay with a
    /// company CA). Read and parsed at load; refused with `smtp_tls = "none"`.
    pub smtp_ca_file: PathBuf,
    /// The certificates (DER) of `smtp_ca_file`; empty without one.
    pub smtp_ca_certs: Vec<Vec<u8>>,
    /// `email.smtp_timeout` (`AUTHD_EMAIL__SMTP_TIMEOUT`), default `10s`: connect and each
    /// SMTP command.
    pub smtp_timeout: Duration,
    /// `email.file_dir` (`AUTHD_EMAIL__FILE_DIR`), default `data/mail`.
    pub file_dir: PathBuf,
    /// `email.max_attempts` (`AUTHD_EMAIL__MAX_ATTEMPTS`), default `8`: every attempt counts,
    /// the first included.
    pub max_attempts: u32,
    /// `email.retry_max_backoff` (`AUTHD_EMAIL__RETRY_MAX_BACKOFF`), default `1h`: the longest
    /// gap between two attempts (gaps start about 30 s and double).
    pub retry_max_backoff: Duration,
    /// `email.send_cooldown` (`AUTHD_EMAIL__SEND_COOLDOWN`), default `60s`; `0s` turns it off:
    /// a second mail to one address within it is dropped silently.
    pub send_cooldown: Duration,
    /// `email.max_mails_per_day` (`AUTHD_EMAIL__MAX_MAILS_PER_DAY`), default `5`: mails to one
    /// address in 24 hours, beyond which they are dropped silently.
    pub max_mails_per_day: u32,
    /// `email.require_verification` (`AUTHD_EMAIL__REQUIRE_VERIFICATION`), default `false`.
    pub require_verification: bool,
    /// `email.unverified_ttl` (`AUTHD_EMAIL__UNVERIFIED_TTL`), default `7d`: cleanup deletes
    /// accounts still unverified after this long.
    pub unverified_ttl: Duration,
    /// `email.verification_ttl` (`AUTHD_EMAIL__VERIFICATION_TTL`), default `24h`.
    pub verification_ttl: Duration,
    /// `email.verification_link_path` (`AUTHD_EMAIL__VERIFICATION_LINK_PATH`), default
    /// `/verify-email#token={token}`; must contain `{token}`.
    pub verification_link_path: String,
    /// `email.change_confirm_old` (`AUTHD_EMAIL__CHANGE_CONFIRM_OLD`), default `true`: an
    /// email change also needs the current address's confirmation.
    pub change_confirm_old: bool,
    /// `email.change_link_path` (`AUTHD_EMAIL__CHANGE_LINK_PATH`), default
    /// `/confirm-email-change#token={token}`; must contain `{token}`.
    pub change_link_path: String,
}

/// The placeholder every `*_link_path` must hold.
pub const TOKEN_PLACEHOLDER: &str = "{token}";

/// Reads a `*_link_path` key: a path starting with `/` that holds `{token}`.
pub(super) fn link_path(r: &mut Reader, key: &str) -> String {
    let raw = r.string(key);
    if !raw.starts_with('/') {
        return r.fail(
            key,
            format!("must be a path starting with '/', got '{raw}'"),
        );
    }
    if !raw.contains(TOKEN_PLACEHOLDER) {
        return r.fail(
            key,
            format!("must contain {TOKEN_PLACEHOLDER}, got '{raw}'"),
        );
    }
    raw
}

/// Whether `host` (a name or an address, IPv6 possibly in brackets) is the loopback.
fn loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of an origin's `host[:port]` part, if that is all it holds (no path, query,
/// fragment or user info; a port of digits).
fn origin_host(rest: &str) -> Option<&str> {
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = if let Some(after) = rest.strip_prefix('[') {
        let (inside, tail) = after.split_once(']')?;
        (inside, tail.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (!host.is_empty() && port_ok).then_some(host)
}

/// Whether rustls takes `der` as a trust anchor (the check lettre makes when it builds the
/// transport), so a certificate it would refuse is a configuration error, not a failed start.
fn trust_anchor(der: &[u8]) -> Result<(), lettre::transport::smtp::Error> {
    use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
    TlsParameters::builder("localhost".into())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_der(der.to_vec())?)
        .build()
        .map(drop)
}

/// Checks `addr` or `Name <addr>`: one `@` with text on both sides, no spaces or line breaks in
/// the address, nothing that could end a header.
pub(super) fn check_mailbox(raw: &str) -> Result<(), String> {
    if raw.contains(['\r', '\n']) {
        return Err("must be one line".into());
    }
    let addr = match (raw.find('<'), raw.rfind('>')) {
        (Some(open), Some(close)) if open < close && close == raw.len() - 1 => {
            &raw[open + 1..close]
        }
        (None, None) => raw.trim(),
        _ => return Err(format!("expected addr or Name <addr>, got '{raw}'")),
    };
    match addr.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !addr.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!("expected addr or Name <addr>, got '{raw}'")),
    }
}

impl EmailSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let transport = match r.string("email.transport").as_str() {
            "none" => MailTransport::None,
            "smtp" => MailTransport::Smtp,
            "file" => MailTransport::File,
            other => r.fail(
                "email.transport",
                format!("expected none, smtp or file, got '{other}'"),
            ),
        };
        let mailing = transport != MailTransport::None;
        let from = r.string("email.from");
        if mailing && from.is_empty() {
            r.fail::<()>("email.from", "required unless email.transport is none");
        } else if !from.is_empty() {
            if let Err(why) = check_mailbox(&from) {
                r.fail::<()>("email.from", why);
            }
        }
        let reply_to = r.string("email.reply_to");
        if !reply_to.is_empty() {
            if let Err(why) = check_mailbox(&reply_to) {
                r.fail::<()>("email.reply_to", why);
            }
        }
        let link_base = Self::link_base(r, mailing);
        let smtp_host = r.string("email.smtp_host").trim().to_owned();
        if transport == MailTransport::Smtp && smtp_host.is_empty() {
            r.fail::<()>(
                "email.smtp_host",
                "required with email.transport = \"smtp\"",
            );
        }
        let smtp_port = r.uint("email.smtp_port", 1, 65_535) as u16;
        let smtp_tls = match r.string("email.smtp_tls").as_str() {
            "starttls" => SmtpTls::Starttls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            other => r.fail(
                "email.smtp_tls",
                format!("expected starttls, tls or none, got '{other}'"),
            ),
        };
        if smtp_tls == SmtpTls::None && transport == MailTransport::Smtp && !loopback(&smtp_host) {
            r.fail::<()>(
                "email.smtp_tls",
                format!(
                    "none (plain text) is only allowed to a relay on a loopback address, not \
                     '{smtp_host}'; use starttls or tls"
                ),
            );
        }
        let smtp_username = r.string("email.smtp_username");
        let smtp_password = Some(r.string("email.smtp_password"))
            .filter(|s| !s.is_empty())
            .map(Secret);
        let smtp_ca_file = PathBuf::from(r.string("email.smtp_ca_file"));
        let smtp_ca_certs = Self::ca_certs(r, &smtp_ca_file);
        let plain_smtp = smtp_tls == SmtpTls::None && transport == MailTransport::Smtp;
        if plain_smtp && !smtp_ca_file.as_os_str().is_empty() {
            r.fail::<()>(
                "email.smtp_ca_file",
                "has no use with email.smtp_tls = \"none\" (plain text); use starttls or tls, \
                 or remove it",
            );
        }
        let smtp_timeout = r.duration("email.smtp_timeout", false);
        let file_dir = PathBuf::from(r.string("email.file_dir"));
        if transport == MailTransport::File && file_dir.as_os_str().is_empty() {
            r.fail::<()>("email.file_dir", "required with email.transport = \"file\"");
        }
        let max_attempts = r.uint("email.max_attempts", 1, 100) as u32;
        let retry_max_backoff = Self::at_least_a_second(r, "email.retry_max_backoff");
        let send_cooldown = r.duration("email.send_cooldown", true);
        let max_mails_per_day = r.uint("email.max_mails_per_day", 1, 10_000) as u32;
        let require_verification = r.boolean("email.require_verification");
        if require_verification && !mailing {
            r.fail::<()>(
                "email.require_verification",
                "needs a mail transport (email.transport = \"smtp\" or \"file\"): without \
                 one no address could ever be verified",
            );
        }
        let unverified_ttl = Self::at_least_a_second(r, "email.unverified_ttl");
        let verification_ttl = Self::at_least_a_second(r, "email.verification_ttl");
        let verification_link_path = link_path(r, "email.verification_link_path");
        let change_confirm_old = r.boolean("email.change_confirm_old");
        let change_link_path = link_path(r, "email.change_link_path");
        EmailSettings {
            transport,
            from,
            reply_to,
            link_base,
            smtp_host,
            smtp_port,
            smtp_tls,
            smtp_username,
            smtp_password,
            smtp_ca_file,
            smtp_ca_certs,
            smtp_timeout,
            file_dir,
            max_attempts,
            retry_max_backoff,
            send_cooldown,
            max_mails_per_day,
            require_verification,
            unverified_ttl,
            verification_ttl,
            verification_link_path,
            change_confirm_old,
            change_link_path,
        }
    }

    /// The certificates of the PEM file `path` (`email.smtp_ca_file`); none when `path` is
    /// empty. A file that cannot be read, is not PEM or holds no certificate is an error.
    fn ca_certs(r: &mut Reader, path: &Path) -> Vec<Vec<u8>> {
        const KEY: &str = "email.smtp_ca_file";
        if path.as_os_str().is_empty() {
            return Vec::new();
        }
        let shown = path.display();
        let bytes = match super::read_bounded(path) {
            Ok(bytes) => bytes,
            Err(e) => return r.fail(KEY, format!("cannot read {shown}: {e}")),
        };
        match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
            Ok(certs) if certs.is_empty() => r.fail(
                KEY,
                format!("{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            ),
            Ok(certs) => {
                let certs: Vec<Vec<u8>> = certs.into_iter().map(|c| c.to_vec()).collect();
                for (n, der) in certs.iter().enumerate() {
                    if let Err(e) = trust_anchor(der) {
                        return r.fail(
                            KEY,
                            format!("certificate {} of {shown} is not usable: {e}", n + 1),
                        );
                    }
                }
                certs
            }
            Err(e) => r.fail(KEY, format!("{shown} is not valid PEM ({e})")),
        }
    }

    /// A duration of 1s or more (CONTRACT 10.1: durations of sections 10 and 11).
    fn at_least_a_second(r: &mut Reader, key: &str) -> Duration {
        let d = r.duration(key, false);
        if !d.is_zero() && d < Duration::from_secs(1) {
            return r.fail(
                key,
                format!("must be 1s or more, got {}", humantime::format_duration(d)),
            );
        }
        d
    }

    /// `email.link_base`: an origin (scheme, host, optional port; no path, query or
    /// fragment), `https://`, or `http://` for a loopback host only.
    fn link_base(r: &mut Reader, required: bool) -> String {
        const KEY: &str = "email.link_base";
        let raw = r.string(KEY);
        let base = raw.trim().trim_end_matches('/').to_owned();
        if base.is_empty() {
            if required {
                r.fail::<()>(KEY, "required unless email.transport is none");
            }
            return base;
        }
        let (scheme, rest) = base.split_once("://").unwrap_or(("", ""));
        let host = origin_host(rest);
        let Some(host) = host else {
            return r.fail(
                KEY,
                format!(
                    "must be an origin only, such as https://app.example.com (no path, query \
                     or fragment), got '{raw}'"
                ),
            );
        };
        let ok_scheme = match scheme {
            "https" => true,
            "http" => loopback(host),
            _ => false,
        };
        if !ok_scheme {
            return r.fail(
                KEY,
                format!("must be https:// (http:// only for a loopback host), got '{raw}'"),
            );
        }
        base
    }

    /// Whether mail can be sent at all.
    pub fn enabled(&self) -> bool {
        self.transport != MailTransport::None
    }

    /// A mailed link: `link_base` followed by `path` (a `*_link_path`) with `{token}` replaced
    /// by `token`. Never built from a request header (CONTRACT 10.1).
    pub fn link(&self, path: &str, token: &str) -> String {
        format!(
            "{}{}",
            self.link_base,
            path.replace(TOKEN_PLACEHOLDER, token)
        )
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[email]\ntransport = {}\nfrom = {}\nreply_to = {}\nlink_base = {}\nsmtp_host = {}\n\
             smtp_port = {}\nsmtp_tls = {}\nsmtp_username = {}\nsmtp_password = {}\n\
             smtp_ca_file = {}\nsmtp_timeout = {}\nfile_dir = {}\nmax_attempts = {}\n\
             retry_max_backoff = {}\nsend_cooldown = {}\nmax_mails_per_day = {}\n\
             require_verification = {}\nunverified_ttl = {}\nverification_ttl = {}\n\
             verification_link_path = {}\nchange_confirm_old = {}\nchange_link_path = {}\n",
            q(self.transport.as_str()),
            q(&self.from),
            q(&self.reply_to),
            q(&self.link_base),
            q(&self.smtp_host),
            self.smtp_port,
            q(self.smtp_tls.as_str()),
            q(&self.smtp_username),
            secret(&self.smtp_password),
            q(&self.smtp_ca_file.to_string_lossy()),
            d(self.smtp_timeout),
            q(&self.file_dir.to_string_lossy()),
            self.max_attempts,
            d(self.retry_max_backoff),
            d(self.send_cooldown),
            self.max_mails_per_day,
            self.require_verification,
            d(self.unverified_ttl),
            d(self.verification_ttl),
            q(&self.verification_link_path),
            self.change_confirm_old,
            q(&self.change_link_path),
        )
    }
}
