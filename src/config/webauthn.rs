//! Configuration section `[webauthn]`: passkeys (CONTRACT 11.3).

use std::time::Duration;

use super::reader::Reader;
use super::render::{d, list, q};

/// The keys of `[webauthn]`.
pub(super) const KEYS: &[&str] = &[
    "rp_id",
    "origins",
    "rp_name",
    "challenge_ttl",
    "max_passkeys",
    "passwordless",
];

/// Keys whose environment value is a comma-separated list.
pub(super) const LIST_KEYS: &[&str] = &["webauthn.origins"];

#[derive(Debug, Clone)]
pub struct WebauthnSettings {
    /// `webauthn.rp_id` (`AUTHD_WEBAUTHN__RP_ID`), default empty: the relying party id, a
    /// registrable domain such as `example.com` (WebAuthn Level 3, section 5.1.2). Empty:
    /// passkeys are off and every passkey route answers 404 `NOT_FOUND`.
    pub rp_id: String,
    /// `webauthn.origins` (`AUTHD_WEBAUTHN__ORIGINS`, comma-separated), default empty: the
    /// exact origins (`scheme://host[:port]`) whose pages may run ceremonies, each on `rp_id`
    /// or a subdomain of it. Needed when `rp_id` is set.
    pub origins: Vec<String>,
    /// `webauthn.rp_name` (`AUTHD_WEBAUTHN__RP_NAME`), default `authd`: the name
    /// authenticators show.
    pub rp_name: String,
    /// `webauthn.challenge_ttl` (`AUTHD_WEBAUTHN__CHALLENGE_TTL`), default `5m`, 1s to 1h: how
    /// long a ceremony may take.
    pub challenge_ttl: Duration,
    /// `webauthn.max_passkeys` (`AUTHD_WEBAUTHN__MAX_PASSKEYS`), default `10`, 1 to 100:
    /// passkeys per account.
    pub max_passkeys: u64,
    /// `webauthn.passwordless` (`AUTHD_WEBAUTHN__PASSWORDLESS`), default `true`: passkeys
    /// also log in on their own (the two `login` routes; 404 when `false`).
    pub passwordless: bool,
}

impl WebauthnSettings {
    /// Whether passkeys are configured (`rp_id` set).
    pub fn enabled(&self) -> bool {
        !self.rp_id.is_empty()
    }

    pub(super) fn read(r: &mut Reader) -> Self {
        let rp_id = r.string("webauthn.rp_id").trim().to_ascii_lowercase();
        let origins = r.list("webauthn.origins");
        if !rp_id.is_empty() {
            if rp_id.contains(['/', ':', ' ']) || rp_id.starts_with('.') || rp_id.ends_with('.') {
                r.fail::<()>(
                    "webauthn.rp_id",
                    format!("'{rp_id}' is not a domain such as example.com"),
                );
            }
            if origins.is_empty() {
                r.fail::<()>(
                    "webauthn.origins",
                    "is empty: list the exact origins of the pages that use passkeys (e.g. https://app.example.com)",
                );
            }
        } else if !origins.is_empty() {
            r.fail::<()>("webauthn.rp_id", "is empty while webauthn.origins is set");
        }
        for origin in &origins {
            if let Err(why) = check_origin(origin, &rp_id) {
                r.fail::<()>("webauthn.origins", format!("'{origin}': {why}"));
            }
        }
        let rp_name = r.string("webauthn.rp_name");
        if rp_name.trim().is_empty() {
            r.fail::<()>("webauthn.rp_name", "must not be empty");
        }
        let challenge_ttl = r.duration("webauthn.challenge_ttl", false);
        if !challenge_ttl.is_zero()
            && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&challenge_ttl)
        {
            r.fail::<()>(
                "webauthn.challenge_ttl",
                format!(
                    "{} is out of range 1s..=1h",
                    humantime::format_duration(challenge_ttl)
                ),
            );
        }
        WebauthnSettings {
            rp_id,
            origins,
            rp_name,
            challenge_ttl,
            max_passkeys: r.uint("webauthn.max_passkeys", 1, 100),
            passwordless: r.boolean("webauthn.passwordless"),
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[webauthn]\nrp_id = {}\norigins = {}\nrp_name = {}\nchallenge_ttl = {}\nmax_passkeys = {}\npasswordless = {}\n",
            q(&self.rp_id),
            list(&self.origins),
            q(&self.rp_name),
            d(self.challenge_ttl),
            self.max_passkeys,
            self.passwordless
        )
    }
}

/// An origin is `scheme://host[:port]` (no path, query or fragment) whose host is `rp_id` or
/// a subdomain of it (WebAuthn Level 3, section 13.4.9).
fn check_origin(origin: &str, rp_id: &str) -> Result<(), String> {
    let url = url::Url::parse(origin).map_err(|e| format!("not an origin ({e})"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must be an http or https origin".into());
    }
    if url.origin().ascii_serialization() != origin.trim_end_matches('/') {
        return Err("must be an exact origin such as https://app.example.com (no path)".into());
    }
    let host = url.host_str().unwrap_or_default();
    if rp_id.is_empty() {
        return Ok(());
    }
    if host == rp_id || host.ends_with(&format!(".{rp_id}")) {
        Ok(())
    } else {
        Err(format!(
            "host '{host}' is neither webauthn.rp_id '{rp_id}' nor a subdomain of it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_origin;

    #[test]
    fn origins_must_sit_on_the_rp_id() {
        assert!(check_origin("https://example.com", "example.com").is_ok());
        assert!(check_origin("https://app.example.com", "example.com").is_ok());
        assert!(check_origin("http://localhost:8080", "localhost").is_ok());
        assert!(check_origin("https://evil-example.com", "example.com").is_err());
        assert!(check_origin("https://example.com.evil.org", "example.com").is_err());
        assert!(check_origin("https://app.example.com/login", "example.com").is_err());
        assert!(check_origin("ftp://example.com", "example.com").is_err());
    }
}
