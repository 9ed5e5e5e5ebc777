//! Crypto layer: the JOSE header of an access token (RFC 7515 §4), judged before any key is
//! used. authd understands no JWS extension and takes keys only from its own key set, so a
//! header is refused when it
//! - is not base64url of one JSON object, or names a parameter twice (RFC 7515 §4, §5.2);
//! - names an algorithm other than the configured one (`alg`, RFC 7515 §4.1.1);
//! - carries `crit` in any form, even `[]` or naming an absent parameter (RFC 7515 §4.1.11:
//!   a recipient that does not understand every listed extension must refuse the JWS);
//! - names or embeds a key or certificate: `jku`, `jwk`, `x5u`, `x5c`, `x5t`, `x5t#S256`
//!   (RFC 7515 §4.1.2 to §4.1.8). authd never issues them and never fetches or uses them;
//! - carries a JWE parameter (`enc`, `zip`, RFC 7516 §4.1.2, §4.1.3): it is not a JWS;
//! - names a key id (`kid`, RFC 7515 §4.1.4) that is not one of authd's own, compared as an
//!   opaque string (never a path, URL or query).
//!
//! Other parameters that are not critical are ignored, as RFC 7515 §4 requires; `typ` is
//! judged with the claims (src/crypto/jwt.rs).

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Header parameters that name or embed a key or a certificate (RFC 7515 §4.1.2 to §4.1.8).
pub const KEY_PARAMETERS: [&str; 6] = ["jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256"];

/// Header parameters that only a JWE carries (RFC 7516 §4.1.2, §4.1.3).
const JWE_PARAMETERS: [&str; 2] = ["enc", "zip"];

/// Why a JOSE header was refused. Every variant answers 401 `TOKEN_INVALID`; the variant is
/// for tests and diagnostics, never for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not base64url (no padding) of a JSON object.
    #[error("the header is not base64url-encoded JSON object")]
    Malformed,
    /// A parameter name appears twice (RFC 7515 §5.2 step 4).
    #[error("the header names {0} twice")]
    Duplicate(String),
    /// `alg` is missing, not a string, or not the configured algorithm.
    #[error("the header's alg is not the configured algorithm")]
    Algorithm,
    /// `crit` is present: authd understands no extension (RFC 7515 §4.1.11).
    #[error("the header lists critical extensions")]
    Critical,
    /// A parameter that names or embeds a key or certificate.
    #[error("the header names or embeds a key ({0})")]
    KeyReference(&'static str),
    /// A JWE parameter in a JWS.
    #[error("the header carries the JWE parameter {0}")]
    Jwe(&'static str),
    /// `kid` is not a string naming one of authd's keys.
    #[error("the header's kid is not one of authd's keys")]
    UnknownKid,
}

/// Judges the encoded JOSE header of a compact JWS (the text before its first `.`).
///
/// `algorithm` is the one configured algorithm; `is_own_kid` says whether a key id names one
/// of authd's own keys. A header without `kid` passes that rule (the caller's own key set
/// decides). Pure: no key is read, nothing is fetched.
///
/// # Errors
/// The first rule the header breaks, in the order of the module documentation.
pub fn check(
    encoded: &str,
    algorithm: Algorithm,
    is_own_kid: impl Fn(&str) -> bool,
) -> Result<(), HeaderError> {
    let json = B64.decode(encoded).map_err(|_| HeaderError::Malformed)?;
    let Members(members) = serde_json::from_slice(&json).map_err(|_| HeaderError::Malformed)?;
    let mut seen = HashSet::with_capacity(members.len());
    for (name, _) in &members {
        if !seen.insert(name.as_str()) {
            return Err(HeaderError::Duplicate(name.clone()));
        }
    }
    let get = |name: &str| members.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let alg = get("alg")
        .and_then(|v| serde_json::from_value::<Algorithm>(v.clone()).ok())
        .ok_or(HeaderError::Algorithm)?;
    if alg != algorithm {
        return Err(HeaderError::Algorithm);
    }
    if get("crit").is_some() {
        return Err(HeaderError::Critical);
    }
    if let Some(name) = KEY_PARAMETERS.into_iter().find(|p| get(p).is_some()) {
        return Err(HeaderError::KeyReference(name));
    }
    if let Some(name) = JWE_PARAMETERS.into_iter().find(|p| get(p).is_some()) {
        return Err(HeaderError::Jwe(name));
    }
    match get("kid") {
        None => Ok(()),
        Some(Value::String(kid)) if is_own_kid(kid) => Ok(()),
        Some(_) => Err(HeaderError::UnknownKid),
    }
}

/// A JSON object's members in document order, duplicates kept (a `Map` would keep only one).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KID: &str = "our-key";

    fn judge(json: &str) -> Result<(), HeaderError> {
        check(&B64.encode(json), Algorithm::EdDSA, |kid| kid == KID)
    }

    #[test]
    fn authds_own_headers_pass() {
        assert_eq!(
            judge(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"our-key"}"#),
            Ok(())
        );
        assert_eq!(judge(r#"{"alg":"EdDSA"}"#), Ok(()));
        assert_eq!(judge(r#" { "typ" : "JWT" , "alg" : "EdDSA" } "#), Ok(()));
        // A parameter that is not critical is ignored (RFC 7515 §4).
        assert_eq!(
            judge(r#"{"alg":"EdDSA","x-authd-policy":"require-mfa"}"#),
            Ok(())
        );
        let hs = B64.encode(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#);
        assert_eq!(check(&hs, Algorithm::HS256, |k| k == "k1"), Ok(()));
    }

    #[test]
    fn crit_in_any_form_is_refused() {
        for json in [
            r#"{"alg":"EdDSA","crit":["x-authd-policy"],"x-authd-policy":"require-mfa"}"#,
            r#"{"alg":"EdDSA","crit":[]}"#,
            r#"{"alg":"EdDSA","crit":["x-absent"]}"#,
            r#"{"alg":"EdDSA","crit":["exp"]}"#,
            r#"{"alg":"EdDSA","crit":["alg"]}"#,
            r#"{"alg":"EdDSA","crit":"x-authd-policy"}"#,
            r#"{"alg":"EdDSA","crit":null}"#,
            r#"{"alg":"EdDSA","crit":{}}"#,
            r#"{"alg":"EdDSA","b64":false,"crit":["b64"]}"#,
            r#"{"alg":"EdDSA","kid":"our-key","\u0063rit":["x"],"x":1}"#,
        ] {
            assert_eq!(judge(json), Err(HeaderError::Critical), "{json}");
        }
    }

    #[test]
    fn keys_named_or_embedded_by_the_header_are_refused() {
        let jwk =
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        for (json, name) in [
            (format!(r#"{{"alg":"EdDSA","jwk":{jwk}}}"#), "jwk"),
            (
                format!(r#"{{"alg":"EdDSA","kid":"our-key","jwk":{jwk}}}"#),
                "jwk",
            ),
            (
                r#"{"alg":"EdDSA","jku":"https://evil.invalid/jwks.json"}"#.into(),
                "jku",
            ),
            (
                r#"{"alg":"EdDSA","x5u":"https://evil.invalid/c.pem"}"#.into(),
                "x5u",
            ),
            (r#"{"alg":"EdDSA","x5c":["MIIB"]}"#.into(), "x5c"),
            (r#"{"alg":"EdDSA","x5t":"abc"}"#.into(), "x5t"),
            (r#"{"alg":"EdDSA","x5t#S256":"abc"}"#.into(), "x5t#S256"),
            (r#"{"alg":"EdDSA","jku":null}"#.into(), "jku"),
        ] {
            assert_eq!(judge(&json), Err(HeaderError::KeyReference(name)), "{json}");
        }
        assert_eq!(
            judge(r#"{"alg":"EdDSA","enc":"A128GCM"}"#),
            Err(HeaderError::Jwe("enc"))
        );
        assert_eq!(
            judge(r#"{"alg":"EdDSA","zip":"DEF"}"#),
            Err(HeaderError::Jwe("zip"))
        );
    }

    #[test]
    fn only_our_key_ids_pass() {
        for kid in [
            r#""attacker""#,
            r#""""#,
            r#""our-key ""#,
            r#""OUR-KEY""#,
            r#""../../etc/passwd""#,
            r#""/dev/null""#,
            r#""' OR '1'='1""#,
            r#""https://evil.invalid/k""#,
            "null",
            "1",
            r#"["our-key"]"#,
        ] {
            let json = format!(r#"{{"alg":"EdDSA","kid":{kid}}}"#);
            assert_eq!(judge(&json), Err(HeaderError::UnknownKid), "{json}");
        }
    }

    #[test]
    fn algorithm_is_pinned() {
        for json in [
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"none"}"#,
            r#"{"alg":"eddsa"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":["EdDSA"]}"#,
            r#"{"alg":null}"#,
        ] {
            assert_eq!(judge(json), Err(HeaderError::Algorithm), "{json}");
        }
    }

    #[test]
    fn malformed_or_ambiguous_headers_are_refused() {
        for encoded in [
            String::new(),
            "!!!".into(),
            B64.encode("[]"),
            B64.encode("\"alg\""),
            B64.encode(r#"{"alg":"EdDSA""#),
            B64.encode(r#"{"alg":"EdDSA"} {}"#),
            format!("{}=", B64.encode(r#"{"alg":"EdDSA","a":1}"#)),
        ] {
            assert_eq!(
                check(&encoded, Algorithm::EdDSA, |_| true),
                Err(HeaderError::Malformed),
                "{encoded}"
            );
        }
        assert_eq!(
            judge(r#"{"alg":"none","alg":"EdDSA"}"#),
            Err(HeaderError::Duplicate("alg".into()))
        );
        assert_eq!(
            judge(r#"{"alg":"EdDSA","kid":"attacker","kid":"our-key"}"#),
            Err(HeaderError::Duplicate("kid".into()))
        );
        assert_eq!(
            judge(r#"{"alg":"EdDSA","kid":"our-key","\u006bid":"x"}"#),
            Err(HeaderError::Duplicate("kid".into()))
        );
    }
}
