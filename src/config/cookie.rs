//! Configuration section `[cookie]`: the refresh cookie.

use super::reader::Reader;
use super::render::q;

/// The keys of `[cookie]`.
pub(super) const KEYS: &[&str] = &["name", "secure"];

#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: String,
    pub secure: bool,
}

impl CookieSettings {
    pub(super) fn read(r: &mut Reader, warnings: &mut Vec<String>) -> Self {
        let cookie_name = r.string("cookie.name");
        if cookie_name.is_empty()
            || !cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
        {
            r.fail::<()>(
                "cookie.name",
                format!("'{cookie_name}' is not a valid cookie name"),
            );
        }
        let cookie = CookieSettings {
            name: cookie_name,
            secure: r.boolean("cookie.secure"),
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
            r.fail::<()>(
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
        cookie
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[cookie]\nname = {}\nsecure = {}\n",
            q(&self.name),
            self.secure
        )
    }
}
