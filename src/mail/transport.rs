//! The transports (`email.transport`, CONTRACT 10.1): `smtp` through `lettre` (rustls, never
//! the system's OpenSSL; STARTTLS required, never opportunistic; implicit TLS; plain text only
//! to a loopback relay, which the configuration enforces), `file` (one RFC 5322 file per
//! message) and `none`. Each attempt's result is classified for the retry policy (`Delivery`).

use std::io::Write;
use std::path::{Path, PathBuf};

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use uuid::Uuid;

use crate::blocking::blocking;
use crate::config::{EmailSettings, MailTransport, SmtpTls};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Taken: the relay's answer (`250 ...`) or where the file went.
    Sent(String),
    /// Try again later: a 4xx, a refused or dropped connection, a timeout. `reason` is the
    /// reply code or `connection`; `detail` says more (for `last_error`).
    Retry { reason: String, detail: String },
    /// Never try again: a 5xx (`reason` is the reply code) or a message that cannot be sent.
    Failed { reason: String, detail: String },
}

/// The configured transport, built once per process.
#[derive(Clone)]
pub enum Transport {
    /// `email.transport = "none"`: nothing leaves; the worker does not run.
    None,
    /// `email.transport = "file"`: `<dir>/<id>.eml`.
    File(PathBuf),
    /// `email.transport = "smtp"`: one connection per message (no pool: a worker sends a few
    /// mails a second at most, and a fresh connection never finds one the relay dropped).
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>),
}

impl Transport {
    /// The transport `settings` describe; `Err` names what is wrong (a TLS setup that fails).
    pub fn new(settings: &EmailSettings) -> Result<Transport, String> {
        Ok(match settings.transport {
            MailTransport::None => Transport::None,
            MailTransport::File => Transport::File(settings.file_dir.clone()),
            MailTransport::Smtp => Transport::Smtp(Box::new(smtp(settings)?)),
        })
    }

    /// Whether mail is sent at all.
    pub fn enabled(&self) -> bool {
        !matches!(self, Transport::None)
    }

    /// Hands `message` (whose outbox id is `id`) over once.
    pub async fn send(&self, id: Uuid, message: &Message) -> Delivery {
        match self {
            Transport::None => Delivery::Failed {
                reason: "transport".into(),
                detail: "email.transport is none".into(),
            },
            Transport::File(dir) => {
                let dir = dir.clone();
                let bytes = message.formatted();
                match blocking(move || write_file(&dir, id, &bytes)).await {
                    Ok(Ok(path)) => Delivery::Sent(format!("written to {}", path.display())),
                    Ok(Err(e)) => Delivery::Retry {
                        reason: "file".into(),
                        detail: e.to_string(),
                    },
                    Err(e) => Delivery::Retry {
                        reason: "file".into(),
                        detail: e.to_string(),
                    },
                }
            }
            Transport::Smtp(t) => match t.send(message.clone()).await {
                Ok(r) => Delivery::Sent(format!(
                    "{} {}",
                    r.code(),
                    r.message().collect::<Vec<_>>().join(" ")
                )),
                Err(e) => classify(&e),
            },
        }
    }
}

/// Sorts an SMTP error into the retry policy: a 5xx fails at once, a 4xx is retried, and so is
/// everything that is not an answer from the relay (refused, dropped, timed out, TLS).
fn classify(e: &lettre::transport::smtp::Error) -> Delivery {
    let detail = e.to_string();
    match e.status() {
        Some(code) if e.is_permanent() => Delivery::Failed {
            reason: code.to_string(),
            detail,
        },
        Some(code) => Delivery::Retry {
            reason: code.to_string(),
            detail,
        },
        None => Delivery::Retry {
            reason: "connection".into(),
            detail,
        },
    }
}

/// The SMTP transport of `settings`.
fn smtp(s: &EmailSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    // The public roots, and the CAs of `email.smtp_ca_file` (checked at load) on top.
    let tls_params = || {
        let mut b = TlsParameters::builder(s.smtp_host.clone());
        for der in &s.smtp_ca_certs {
            let cert = Certificate::from_der(der.clone())
                .map_err(|e| format!("email.smtp_ca_file: {e}"))?;
            b = b.add_root_certificate(cert);
        }
        b.build().map_err(|e| format!("email.smtp_tls: {e}"))
    };
    let tls = match s.smtp_tls {
        SmtpTls::Starttls => Tls::Required(tls_params()?),
        SmtpTls::Tls => Tls::Wrapper(tls_params()?),
        SmtpTls::None => Tls::None,
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.smtp_host.clone())
        .port(s.smtp_port)
        .tls(tls)
        .timeout(Some(s.smtp_timeout));
    if !s.smtp_username.is_empty() {
        let password = s
            .smtp_password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        b = b.credentials(Credentials::new(s.smtp_username.clone(), password));
    }
    Ok(b.build())
}

/// Writes `bytes` as `<dir>/<id>.eml` (mode 0600) under a temporary name first, then renames
/// it, so a reader never sees half a message; creates `dir` (0700) when missing.
fn write_file(dir: &Path, id: Uuid, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    let path = dir.join(format!("{id}.eml"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// For `authd doctor`: connects to the relay of `settings` and says hello (EHLO, and STARTTLS
/// or TLS as configured), sending nothing. `Ok` describes the relay; `Err` why it failed.
pub async fn probe(settings: &EmailSettings) -> Result<String, ProbeFailure> {
    match settings.transport {
        MailTransport::None => Ok("email.transport is none: no mail is sent".into()),
        MailTransport::File => Ok(format!(
            "email.transport is file: messages go to {}",
            settings.file_dir.display()
        )),
        MailTransport::Smtp => {
            let t = smtp(settings).map_err(|why| ProbeFailure {
                why,
                permanent: false,
            })?;
            let target = format!("{}:{}", settings.smtp_host, settings.smtp_port);
            match t.test_connection().await {
                Ok(true) => Ok(format!(
                    "relay {target} answered (tls: {})",
                    settings.smtp_tls.as_str()
                )),
                Ok(false) => Err(ProbeFailure {
                    why: format!("relay {target} did not answer"),
                    permanent: false,
                }),
                Err(e) => Err(ProbeFailure {
                    why: format!("relay {target}: {e}"),
                    permanent: e.is_permanent(),
                }),
            }
        }
    }
}

/// Why `probe` found the relay unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    /// One line, naming the relay; never a password.
    pub why: String,
    /// The relay answered with a 5xx (e.g. 535, a refused login): every mail would fail at
    /// once, not wait in the outbox.
    pub permanent: bool,
}
