//! HTTP layer: request bodies (strict JSON objects: no duplicate keys, no unknown fields,
//! every field checked for type) and the JSON shapes of responses.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::domain::time::rfc3339;
use crate::domain::{validate, Role, Session};
use crate::error::{AppError, FieldError};
use crate::service::{
    EmailChangeInput, IssuedTokens, LoginInput, MfaVerifyInput, NewUserInput, PasskeyLogin,
    PasskeyRegistrationInput, PasswordAndCode, PasswordChange,
};

/// A JSON object whose keys are unique.
pub struct JsonObject(Map<String, Value>);

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonObject, A::Error> {
                let mut out = Map::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key '{k}'")));
                    }
                    out.insert(k, v);
                }
                Ok(JsonObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl JsonObject {
    /// Parses a body; anything but one JSON object with unique keys is `MalformedJson`.
    pub fn parse(bytes: &[u8]) -> Result<Self, AppError> {
        serde_json::from_slice(bytes).map_err(|_| AppError::MalformedJson)
    }

    pub fn empty() -> Self {
        JsonObject(Map::new())
    }

    /// Reads the documented fields; an unknown field or a wrong type is a `FieldError`.
    fn fields<const N: usize>(&self, allowed: [&str; N]) -> Fields<'_> {
        let mut errors = Vec::new();
        for key in self.0.keys() {
            if !allowed.contains(&key.as_str()) {
                errors.push(FieldError::new(key.clone(), "unknown field"));
            }
        }
        Fields {
            obj: &self.0,
            errors,
        }
    }
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields<'_> {
    fn optional(&mut self, key: &str) -> Option<String> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.errors.push(FieldError::new(key, "must be a string"));
                None
            }
        }
    }

    fn required(&mut self, key: &str) -> String {
        match self.obj.get(key) {
            None | Some(Value::Null) => {
                self.errors.push(FieldError::new(key, "is required"));
                String::new()
            }
            Some(_) => self.optional(key).unwrap_or_default(),
        }
    }

    /// A required JSON object (a WebAuthn credential), as sent.
    fn object(&mut self, key: &str) -> Value {
        match self.obj.get(key) {
            Some(v @ Value::Object(_)) => v.clone(),
            None | Some(Value::Null) => {
                self.errors.push(FieldError::new(key, "is required"));
                Value::Null
            }
            Some(_) => {
                self.errors.push(FieldError::new(key, "must be an object"));
                Value::Null
            }
        }
    }

    /// A string, or an object (kept as compact JSON), at most `max` bytes.
    fn string_or_object(&mut self, key: &str, max: usize) -> Option<String> {
        let text = match self.obj.get(key) {
            None | Some(Value::Null) => return None,
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => {
                self.errors
                    .push(FieldError::new(key, "must be a string or an object"));
                return None;
            }
        };
        if text.len() > max {
            self.errors
                .push(FieldError::new(key, format!("must be at most {max} bytes")));
            return None;
        }
        Some(text.chars().filter(|c| !c.is_control()).collect())
    }

    fn finish<T>(self, value: T) -> Result<T, AppError> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(AppError::Validation(self.errors))
        }
    }
}

/// A request body type built from a strict JSON object.
pub trait FromJson: Sized {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError>;
}

impl FromJson for NewUserInput {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["email", "password", "name"]);
        let value = NewUserInput {
            email: f.required("email"),
            password: f.required("password"),
            name: f.optional("name"),
            role: Role::User,
        };
        f.finish(value)
    }
}

impl FromJson for LoginInput {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["email", "password", "deviceInfo"]);
        let value = LoginInput {
            email: f.required("email"),
            password: f.required("password"),
            device_info: f.string_or_object("deviceInfo", validate::DEVICE_INFO_MAX_BYTES),
        };
        f.finish(value)
    }
}

impl FromJson for PasswordChange {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["currentPassword", "newPassword"]);
        let value = PasswordChange {
            current_password: f.required("currentPassword"),
            new_password: f.required("newPassword"),
        };
        f.finish(value)
    }
}

impl FromJson for MfaVerifyInput {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields([
            "mfaToken",
            "code",
            "recoveryCode",
            "ceremonyId",
            "credential",
        ]);
        let credential = match f.obj.get("credential") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => {
                f.errors
                    .push(FieldError::new("credential", "must be an object"));
                None
            }
        };
        let value = MfaVerifyInput {
            mfa_token: f.required("mfaToken"),
            code: f.optional("code"),
            recovery_code: f.optional("recoveryCode"),
            ceremony_id: f.optional("ceremonyId"),
            credential,
        };
        f.finish(value)
    }
}

impl FromJson for PasswordAndCode {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["currentPassword", "code"]);
        let value = PasswordAndCode {
            current_password: f.required("currentPassword"),
            code: f.required("code"),
        };
        f.finish(value)
    }
}

/// `{"currentPassword"}` (a TOTP enrolment's or a passkey registration's start).
#[derive(Debug, Default)]
pub struct CurrentPasswordBody {
    pub current_password: String,
}

impl FromJson for CurrentPasswordBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["currentPassword"]);
        let value = CurrentPasswordBody {
            current_password: f.required("currentPassword"),
        };
        f.finish(value)
    }
}

/// `{"code"}` (TOTP confirmation).
#[derive(Debug, Default)]
pub struct CodeBody {
    pub code: String,
}

impl FromJson for CodeBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["code"]);
        let value = CodeBody {
            code: f.required("code"),
        };
        f.finish(value)
    }
}

/// `{"mfaToken"}`: a second-factor passkey ceremony's start.
#[derive(Debug)]
pub struct MfaTokenBody {
    pub mfa_token: String,
}

impl FromJson for MfaTokenBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["mfaToken"]);
        let value = MfaTokenBody {
            mfa_token: f.required("mfaToken"),
        };
        f.finish(value)
    }
}

impl FromJson for PasskeyRegistrationInput {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["ceremonyId", "credential", "name"]);
        let value = PasskeyRegistrationInput {
            ceremony_id: f.required("ceremonyId"),
            credential: f.object("credential"),
            name: f.optional("name"),
        };
        f.finish(value)
    }
}

impl FromJson for PasskeyLogin {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["ceremonyId", "credential", "deviceInfo"]);
        let value = PasskeyLogin {
            ceremony_id: f.required("ceremonyId"),
            credential: f.object("credential"),
            device_info: f.string_or_object("deviceInfo", validate::DEVICE_INFO_MAX_BYTES),
        };
        f.finish(value)
    }
}

/// `{"refreshToken"?}` for refresh and logout (the body wins over the cookie).
#[derive(Debug, Default)]
pub struct RefreshBody {
    pub refresh_token: Option<String>,
}

impl FromJson for RefreshBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["refreshToken"]);
        let value = RefreshBody {
            refresh_token: f.optional("refreshToken"),
        };
        f.finish(value)
    }
}

/// A body that must be empty or `{}` (logout-all).
#[derive(Debug, Default)]
pub struct EmptyBody;

impl FromJson for EmptyBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        obj.fields([]).finish(EmptyBody)
    }
}

/// A session as an admin sees it: as in `/api/auth/sessions`, without `current`.
pub fn admin_session_json(s: &Session) -> Value {
    let mut v = session_json(s, false);
    if let Some(o) = v.as_object_mut() {
        o.remove("current");
    }
    v
}

/// `{"role"}`: the new role of a user (`POST /api/admin/users/{id}/role`).
#[derive(Debug)]
pub struct RoleBody {
    pub role: Role,
}

impl FromJson for RoleBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["role"]);
        let before = f.errors.len();
        let raw = f.required("role");
        let role = match raw.parse::<Role>() {
            Ok(r) => r,
            Err(_) => {
                // Not already reported as missing or not a string.
                if f.errors.len() == before {
                    f.errors
                        .push(FieldError::new("role", "must be \"user\" or \"admin\""));
                }
                Role::User
            }
        };
        f.finish(RoleBody { role })
    }
}

impl FromJson for EmailChangeInput {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["newEmail", "currentPassword"]);
        let value = EmailChangeInput {
            new_email: f.required("newEmail"),
            current_password: f.required("currentPassword"),
        };
        f.finish(value)
    }
}

/// `{"token"}`: a one-time token from a mailed link (an email change's confirmation).
#[derive(Debug, Default)]
pub struct TokenBody {
    pub token: String,
}

impl FromJson for TokenBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["token"]);
        let value = TokenBody {
            token: f.required("token"),
        };
        f.finish(value)
    }
}

/// `{"email"}`: an admin sets an account's address.
#[derive(Debug, Default)]
pub struct EmailBody {
    pub email: String,
}

impl FromJson for EmailBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["email"]);
        let value = EmailBody {
            email: f.required("email"),
        };
        f.finish(value)
    }
}

pub fn tokens_json(t: &IssuedTokens) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("accessToken".into(), t.access_token.clone().into());
    m.insert("refreshToken".into(), t.refresh_token.clone().into());
    m.insert("tokenType".into(), "Bearer".into());
    m.insert("expiresIn".into(), t.expires_in.into());
    m
}

pub fn session_json(s: &Session, current: bool) -> Value {
    json!({
        "id": s.id.to_string(),
        "createdAt": rfc3339(s.created_at),
        "lastUsedAt": rfc3339(s.last_used_at),
        "expiresAt": rfc3339(s.expires_at),
        "userAgent": s.user_agent,
        "ip": s.ip,
        "deviceInfo": device_info_json(s.device_info.as_deref()),
        "authMethods": s.auth_methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "current": current,
    })
}

/// A session's `deviceInfo` as the login sent it: an object sent as an object (it is stored
/// as its JSON text), a string as a string, nothing as null.
fn device_info_json(stored: Option<&str>) -> Value {
    match stored {
        None => Value::Null,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::String(text.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_objects() {
        assert!(JsonObject::parse(br#"{"a":1}"#).is_ok());
        for bad in [
            &b"[]"[..],
            b"1",
            b"null",
            b"\"x\"",
            b"{",
            b"",
            b"{\"a\":1,\"a\":2}",
            b"\xff\xfe",
        ] {
            assert!(matches!(
                JsonObject::parse(bad),
                Err(AppError::MalformedJson)
            ));
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            JsonObject::parse(deep.as_bytes()),
            Err(AppError::MalformedJson)
        ));
    }

    #[test]
    fn unknown_fields_and_types_are_named() {
        let obj = JsonObject::parse(br#"{"email":1,"password":null,"role":"admin"}"#).unwrap();
        let Err(AppError::Validation(errs)) = NewUserInput::from_json(&obj) else {
            panic!("expected validation error")
        };
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"role") && fields.contains(&"email") && fields.contains(&"password")
        );
    }
}

/// `POST /api/auth/password-reset/confirm`: `{"token", "newPassword"}`.
#[derive(Debug, Default)]
pub struct ResetConfirmBody {
    pub token: String,
    pub new_password: String,
}

impl FromJson for ResetConfirmBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["token", "newPassword"]);
        let value = ResetConfirmBody {
            token: f.required("token"),
            new_password: f.required("newPassword"),
        };
        f.finish(value)
    }
}

/// `POST /api/admin/users/{id}/reset-link`: `{}` or `{"ttl"}` (`30m`, `2h`; 5m to 24h).
#[derive(Debug, Default)]
pub struct ResetLinkBody {
    pub ttl: Option<String>,
}

impl FromJson for ResetLinkBody {
    fn from_json(obj: &JsonObject) -> Result<Self, AppError> {
        let mut f = obj.fields(["ttl"]);
        let value = ResetLinkBody {
            ttl: f.optional("ttl"),
        };
        f.finish(value)
    }
}
