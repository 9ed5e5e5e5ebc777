//! Service layer: passkeys (CONTRACT 11.3) with `webauthn-rs`'s passkey API: user
//! verification required in every ceremony, no attestation.
//!
//! Ceremonies are one-time tokens (`domain::one_time`, STYLE 20): the `ceremonyId` is the
//! token, the library's ceremony state its payload. The verify that reads a ceremony uses it up
//! (an atomic delete), success or not, so a ceremony begun at one instance completes at
//! another sharing the database, and a replayed answer finds nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::Value;
use uuid::Uuid;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Webauthn,
    WebauthnBuilder,
};

use super::audit::{log_event, Event, Record};
use super::sessions::Sessions;
use super::{AuthOutcome, Principal};
use crate::crypto::one_time;
use crate::domain::one_time::{Consumed, NewOneTimeToken, Purpose};
use crate::domain::passkeys::{PasskeyInsert, StoredPasskey};
use crate::domain::time::{duration_ms, now_ms};
use crate::domain::{AuthMethod, ClientInfo, Refusal, SessionOpening};
use crate::error::{AppError, AppResult, FieldError};

/// Longest passkey name kept, in characters.
pub const NAME_MAX_CHARS: usize = 100;

/// `POST /api/auth/passkeys/register/options` and the other ceremony starts: the ceremony's
/// id and the WebAuthn options (`PublicKeyCredentialCreationOptionsJSON` or
/// `PublicKeyCredentialRequestOptionsJSON`, binary fields base64url).
#[derive(Debug, Clone)]
pub struct PasskeyCeremony {
    pub ceremony_id: String,
    pub public_key: Value,
}

/// `POST /api/auth/passkeys/register/verify`'s body.
#[derive(Debug, Clone)]
pub struct PasskeyRegistrationInput {
    pub ceremony_id: String,
    /// The browser's `RegistrationResponseJSON` (`PublicKeyCredential.toJSON()`).
    pub credential: Value,
    pub name: Option<String>,
}

/// `POST /api/auth/passkeys/login/verify`'s body.
#[derive(Debug, Clone)]
pub struct PasskeyLogin {
    pub ceremony_id: String,
    /// The browser's `AuthenticationResponseJSON`.
    pub credential: Value,
    pub device_info: Option<String>,
}

/// What a ceremony's payload holds: the library's state, and for a second-factor ceremony
/// the hash of the `mfaToken` it belongs to.
#[derive(serde::Serialize, serde::Deserialize)]
struct CeremonyPayload<S> {
    state: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mfa: Option<String>,
}

/// Why an assertion was refused (logged and audited; the client only hears 401).
type Refused = &'static str;

impl Sessions {
    /// The relying party as configured; `NotFound` while `[webauthn]` is not configured (every
    /// passkey route then answers 404).
    fn relying_party(&self) -> AppResult<Webauthn> {
        let cfg = &self.core.settings.webauthn;
        if !cfg.enabled() {
            return Err(AppError::NotFound);
        }
        let origins: Vec<Url> = cfg
            .origins
            .iter()
            .map(|o| Url::parse(o))
            .collect::<Result<_, _>>()
            .map_err(|e| AppError::Internal(format!("webauthn.origins: {e}")))?;
        let first = origins
            .first()
            .ok_or_else(|| AppError::Internal("webauthn.origins is empty".into()))?;
        let mut builder = WebauthnBuilder::new(&cfg.rp_id, first)
            .map_err(|e| AppError::Internal(format!("webauthn: {e}")))?
            .rp_name(&cfg.rp_name)
            .timeout(cfg.challenge_ttl);
        for origin in &origins[1..] {
            builder = builder.append_allowed_origin(origin);
        }
        builder
            .build()
            .map_err(|e| AppError::Internal(format!("webauthn: {e}")))
    }

    /// The relying party for the two passwordless `login` routes (404 also when
    /// `webauthn.passwordless` is false).
    fn passwordless_party(&self) -> AppResult<Webauthn> {
        let rp = self.relying_party()?;
        if !self.core.settings.webauthn.passwordless {
            return Err(AppError::NotFound);
        }
        Ok(rp)
    }

    /// Stores a ceremony's state as a one-time token of `purpose` living
    /// `webauthn.challenge_ttl`; returns its id.
    async fn begin_ceremony<S: serde::Serialize>(
        &self,
        purpose: Purpose,
        user_id: Option<Uuid>,
        state: S,
        mfa: Option<String>,
    ) -> AppResult<String> {
        let payload = serde_json::to_string(&CeremonyPayload { state, mfa })
            .map_err(|e| AppError::Internal(format!("ceremony state: {e}")))?;
        let (token, hash) = one_time::new_token();
        let now = now_ms();
        let new = NewOneTimeToken {
            token_hash: hash,
            purpose,
            user_id,
            address: None,
            payload: Some(payload),
            created_at: now,
            expires_at: now + duration_ms(self.core.settings.webauthn.challenge_ttl),
        };
        self.core
            .db(move |s| s.issue_one_time_token(&new, false))
            .await?;
        Ok(token)
    }

    /// Uses the ceremony `ceremony_id` of `purpose` up. `Err(TokenInvalid)` when unknown or
    /// used, `Err(TokenExpired)` when expired (the caller turns these into 400 or 401).
    async fn finish_ceremony<S: serde::de::DeserializeOwned>(
        &self,
        purpose: Purpose,
        ceremony_id: &str,
    ) -> AppResult<(Option<Uuid>, CeremonyPayload<S>)> {
        if !one_time::well_formed(ceremony_id) {
            return Err(AppError::TokenInvalid);
        }
        let hash = one_time::hash(ceremony_id);
        let consumed = self
            .core
            .db(move |s| s.consume_one_time_token(purpose, &hash, now_ms()))
            .await?;
        let token = match consumed {
            Consumed::Used(t) => t,
            Consumed::Expired => return Err(AppError::TokenExpired),
            Consumed::Unknown => return Err(AppError::TokenInvalid),
        };
        let payload = token
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .ok_or_else(|| AppError::Internal("a ceremony without its state".into()))?;
        Ok((token.user_id, payload))
    }

    /// `POST /api/auth/passkeys/register/options`: after the current password, a registration
    /// ceremony for the signed-in user (user handle: the account's id; the account's passkeys
    /// excluded; a discoverable credential with user verification required; no attestation).
    ///
    /// Errors: `NotFound` (not configured), `Validation` (no password), `InvalidCredentials`
    /// (wrong password, counted), `RateLimited`/`AccountLocked`.
    pub async fn passkey_register_options(
        &self,
        who: Principal,
        current_password: String,
        client: &ClientInfo,
    ) -> AppResult<PasskeyCeremony> {
        let rp = self.relying_party()?;
        self.check_current_password(&who, &current_password, client, Event::PasskeyRegister)
            .await?;
        let user_id = who.user_id;
        let existing = self.core.db(move |s| s.passkeys(user_id)).await?;
        let exclude = existing
            .iter()
            .filter_map(|p| B64.decode(&p.credential_id).ok().map(Into::into))
            .collect::<Vec<_>>();
        let display = who
            .user
            .name
            .clone()
            .unwrap_or_else(|| who.user.email.clone());
        let (ccr, state) = rp
            .start_passkey_registration(user_id, &who.user.email, &display, Some(exclude))
            .map_err(|e| AppError::Internal(format!("webauthn: {e}")))?;
        let mut public_key = serde_json::to_value(&ccr.public_key)
            .map_err(|e| AppError::Internal(format!("webauthn options: {e}")))?;
        creation_options_json(&mut public_key);
        let ceremony_id = self
            .begin_ceremony::<PasskeyRegistration>(
                Purpose::PasskeyRegistration,
                Some(user_id),
                state,
                None,
            )
            .await?;
        Ok(PasskeyCeremony {
            ceremony_id,
            public_key,
        })
    }

    /// `POST /api/auth/passkeys/register/verify`: checks the browser's answer against the
    /// ceremony (used up either way) and stores the passkey. Its first second factor revokes
    /// every other session of the account.
    ///
    /// Errors: `NotFound` (not configured), `OneTimeTokenInvalid`/`OneTimeTokenExpired`
    /// (400: unknown, used, another user's or expired ceremony), `Validation` (a credential
    /// the ceremony does not accept, an id already registered by anyone, or
    /// `webauthn.max_passkeys` reached).
    pub async fn passkey_register_verify(
        &self,
        who: Principal,
        input: PasskeyRegistrationInput,
        client: &ClientInfo,
    ) -> AppResult<StoredPasskey> {
        let rp = self.relying_party()?;
        let name = match input.name.as_deref().map(str::trim) {
            Some(n) if n.chars().count() > NAME_MAX_CHARS => {
                return Err(AppError::validation(
                    "name",
                    &format!("must be at most {NAME_MAX_CHARS} characters"),
                ))
            }
            Some(n) if n.chars().any(char::is_control) => {
                return Err(AppError::validation(
                    "name",
                    "must not contain control characters",
                ))
            }
            Some("") | None => None,
            Some(n) => Some(n.to_owned()),
        };
        let (owner, payload) = self
            .finish_ceremony::<PasskeyRegistration>(
                Purpose::PasskeyRegistration,
                &input.ceremony_id,
            )
            .await
            .map_err(|e| match e {
                AppError::TokenInvalid => AppError::OneTimeTokenInvalid,
                AppError::TokenExpired => AppError::OneTimeTokenExpired,
                e => e,
            })?;
        if owner != Some(who.user_id) {
            return Err(AppError::OneTimeTokenInvalid);
        }
        let refused = |why: String| AppError::Validation(vec![FieldError::new("credential", why)]);
        let credential: RegisterPublicKeyCredential = serde_json::from_value(input.credential)
            .map_err(|_| refused("is not a RegistrationResponseJSON".into()))?;
        let passkey = rp
            .finish_passkey_registration(&credential, &payload.state)
            .map_err(|e| {
                tracing::info!(error = %e, user_id = %who.user_id, "passkey registration refused");
                refused("was not accepted by this registration ceremony".into())
            })?;
        let now = now_ms();
        let stored = StoredPasskey {
            id: Uuid::new_v4(),
            user_id: who.user_id,
            credential_id: B64.encode(passkey.cred_id().as_ref()),
            name,
            credential: serde_json::to_string(&passkey)
                .map_err(|e| AppError::Internal(format!("passkey: {e}")))?,
            sign_count: 0,
            created_at: now,
            last_used_at: None,
        };
        let max = self.core.settings.webauthn.max_passkeys;
        let (row, keep) = (stored.clone(), who.session_id);
        let outcome = self
            .core
            .db(move |s| s.insert_passkey(&row, max, Some(keep), now))
            .await?;
        match outcome {
            PasskeyInsert::Inserted { revoked } => {
                let reason = format!("{revoked} other session(s) revoked");
                self.core
                    .audit(Record {
                        event: Event::PasskeyRegister,
                        user_id: Some(who.user_id),
                        email: None,
                        client,
                        success: true,
                        reason: Some(&reason),
                    })
                    .await;
                Ok(stored)
            }
            PasskeyInsert::Duplicate => {
                self.audit_passkey(
                    Event::PasskeyRegister,
                    Some(who.user_id),
                    client,
                    Some("duplicate_credential"),
                )
                .await;
                Err(refused("is already registered".into()))
            }
            PasskeyInsert::TooMany => Err(refused(format!(
                "cannot be added: an account has at most {max} passkeys (webauthn.max_passkeys)"
            ))),
        }
    }

    /// `GET /api/auth/passkeys`: the signed-in user's passkeys, oldest first.
    pub async fn passkeys(&self, who: Principal) -> AppResult<Vec<StoredPasskey>> {
        self.relying_party()?;
        let user_id = who.user_id;
        self.core.db(move |s| s.passkeys(user_id)).await
    }

    /// `DELETE /api/auth/passkeys/{id}`. Errors: `NotFound` when the user has no passkey `id`
    /// (or passkeys are not configured).
    pub async fn delete_passkey(
        &self,
        who: Principal,
        id: &str,
        client: &ClientInfo,
    ) -> AppResult<()> {
        self.relying_party()?;
        let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound)?;
        let user_id = who.user_id;
        if !self.core.db(move |s| s.delete_passkey(user_id, id)).await? {
            return Err(AppError::NotFound);
        }
        self.audit_passkey(Event::PasskeyDelete, Some(user_id), client, None)
            .await;
        Ok(())
    }

    /// `POST /api/auth/passkeys/login/options`: a discoverable-credential ceremony (empty
    /// `allowCredentials`, user verification required): it names no account.
    pub async fn passkey_login_options(&self) -> AppResult<PasskeyCeremony> {
        let rp = self.passwordless_party()?;
        let (rcr, state) = rp
            .start_discoverable_authentication()
            .map_err(|e| AppError::Internal(format!("webauthn: {e}")))?;
        let public_key = request_options_json(&rcr.public_key)?;
        let ceremony_id = self
            .begin_ceremony::<DiscoverableAuthentication>(
                Purpose::PasskeyAuthentication,
                None,
                state,
                None,
            )
            .await?;
        Ok(PasskeyCeremony {
            ceremony_id,
            public_key,
        })
    }

    /// `POST /api/auth/passkeys/login/verify`: a passwordless login. The check takes a slot of
    /// the client IP's failed-login budget first (429 past it); the credential is looked up
    /// by its id and the assertion's user handle must be its owner's. A wrong assertion
    /// (replayed, without user verification, wrong origin or RP id, bad signature, another
    /// account's handle) is 401 `INVALID_CREDENTIALS`, counted; an unknown, used or expired
    /// ceremony 401 `TOKEN_INVALID`/`TOKEN_EXPIRED`; a disabled account 403. A signature
    /// counter that went backwards is allowed and audited `passkey_counter_regression`.
    pub async fn passkey_login(
        &self,
        input: PasskeyLogin,
        client: &ClientInfo,
    ) -> AppResult<AuthOutcome> {
        let rp = self.passwordless_party()?;
        let attempt = self.limits.reserve_ip(client).await?;
        let (_, payload) = self
            .finish_ceremony::<DiscoverableAuthentication>(
                Purpose::PasskeyAuthentication,
                &input.ceremony_id,
            )
            .await?;
        if payload.mfa.is_some() {
            // A second-factor ceremony is not a login ceremony.
            return Err(AppError::TokenInvalid);
        }
        let checked = self
            .check_assertion(&rp, input.credential, None, |rp, cred, key| {
                rp.finish_discoverable_authentication(
                    cred,
                    payload.state,
                    &[DiscoverableKey::from(key)],
                )
            })
            .await;
        let passkey = match checked {
            Ok(p) => p,
            Err(Ok((user_id, why))) => {
                attempt.failed().await;
                self.core
                    .metrics
                    .logins
                    .with_label_values(&["invalid_credentials"])
                    .inc();
                self.audit_passkey(Event::PasskeyLogin, user_id, client, Some(why))
                    .await;
                return Err(AppError::InvalidCredentials);
            }
            Err(Err(e)) => return Err(e),
        };
        attempt.succeeded().await;
        self.open_passkey_session(passkey.user_id, input.device_info, client)
            .await
    }

    /// Opens a session for the owner of a passkey just checked. The session opens only if the
    /// account, in the session's own transaction, still exists and is enabled
    /// (`store::opening`); the audit row `passkey_login` is stored in that transaction.
    async fn open_passkey_session(
        &self,
        user_id: Uuid,
        device_info: Option<String>,
        client: &ClientInfo,
    ) -> AppResult<AuthOutcome> {
        // Twice at most: a password change between the read and the opening changes the hash
        // `open_session` compares (the passkey, not the password, is the credential here).
        for _ in 0..2 {
            let Some(user) = self.core.db(move |s| s.user_by_id(user_id)).await? else {
                break;
            };
            let email = user.email.clone();
            let Some(creds) = self.core.db(move |s| s.user_by_email(&email)).await? else {
                break;
            };
            // An address that must be verified first (CONTRACT 10.4) holds for a passkey as
            // for a password: a passkey made before `email.require_verification` was turned
            // on opens no session for an unverified account.
            let verify = self.core.settings.email.require_verification;
            if verify && !creds.user.email_verified && !creds.user.disabled {
                self.core
                    .metrics
                    .logins
                    .with_label_values(&["email_not_verified"])
                    .inc();
                self.audit_passkey(
                    Event::PasskeyLogin,
                    Some(user_id),
                    client,
                    Some("email_not_verified"),
                )
                .await;
                return Err(AppError::EmailNotVerified);
            }
            let (new, refresh_token) = self.new_session(
                user_id,
                client,
                device_info.clone(),
                vec![AuthMethod::Webauthn],
            );
            let (session_id, now) = (new.session.id, new.session.created_at);
            let audit_client = client.clone();
            let opening = self
                .core
                .db(move |s| {
                    s.open_session(
                        &new,
                        &creds.password_hash,
                        Box::new(move |o| match o {
                            SessionOpening::Refused {
                                why: Refusal::CredentialChanged,
                                ..
                            } => None,
                            o => Some(passkey_login_record(o, &audit_client).to_event()),
                        }),
                    )
                })
                .await?;
            match opening {
                SessionOpening::Opened(user) => {
                    log_event(
                        &passkey_login_record(&SessionOpening::Opened(user.clone()), client)
                            .to_event(),
                    );
                    self.core
                        .metrics
                        .logins
                        .with_label_values(&["success"])
                        .inc();
                    let tokens =
                        self.tokens(user.id, session_id, user.role.as_str(), refresh_token, now);
                    return Ok(AuthOutcome { user, tokens });
                }
                SessionOpening::Refused {
                    why: Refusal::Disabled,
                    ..
                } => {
                    self.core
                        .metrics
                        .logins
                        .with_label_values(&["disabled"])
                        .inc();
                    return Err(AppError::AccountDisabled);
                }
                SessionOpening::Refused {
                    why: Refusal::CredentialChanged,
                    ..
                } => continue,
                SessionOpening::Refused { .. } => break,
            }
        }
        self.audit_passkey(Event::PasskeyLogin, Some(user_id), client, Some("gone"))
            .await;
        Err(AppError::InvalidCredentials)
    }

    /// Checks an assertion (`AuthenticationResponseJSON`) whose ceremony was just used up:
    /// finds the passkey by credential id, requires the user handle (when `owner` is `None`:
    /// present) to be the passkey's owner, lets `finish` verify it, requires user
    /// verification, and records the use (counter, time). `Err(Ok((user, why)))` for a
    /// refused assertion, `Err(Err(_))` for a failure of authd's own.
    async fn check_assertion<F>(
        &self,
        rp: &Webauthn,
        credential: Value,
        owner: Option<Uuid>,
        finish: F,
    ) -> Result<StoredPasskey, Result<(Option<Uuid>, Refused), AppError>>
    where
        F: FnOnce(
            &Webauthn,
            &PublicKeyCredential,
            &Passkey,
        ) -> Result<
            webauthn_rs::prelude::AuthenticationResult,
            webauthn_rs::prelude::WebauthnError,
        >,
    {
        let cred: PublicKeyCredential =
            serde_json::from_value(credential).map_err(|_| Ok((owner, "malformed")))?;
        let credential_id = B64.encode(cred.raw_id.as_ref());
        let found = {
            let id = credential_id.clone();
            self.core
                .db(move |s| s.passkey_by_credential_id(&id))
                .await
                .map_err(Err)?
        };
        let Some(stored) = found else {
            return Err(Ok((owner, "unknown_credential")));
        };
        if owner.is_some_and(|o| o != stored.user_id) {
            return Err(Ok((owner, "not_this_accounts_credential")));
        }
        let handle = cred
            .response
            .user_handle
            .as_ref()
            .map(|h| h.as_ref().to_vec());
        match (&handle, owner) {
            (Some(h), _) if h.as_slice() == stored.user_id.as_bytes() => {}
            // As a second factor the account is known: a missing handle is allowed (an
            // authenticator need not return it when allowCredentials named the credential).
            (None, Some(_)) => {}
            _ => return Err(Ok((Some(stored.user_id), "wrong_user_handle"))),
        }
        let passkey = verification_key(&stored.credential).map_err(Err)?;
        let result = finish(rp, &cred, &passkey).map_err(|e| {
            tracing::info!(error = %e, user_id = %stored.user_id, "passkey assertion refused");
            Ok((Some(stored.user_id), "assertion_refused"))
        })?;
        if !result.user_verified() {
            return Err(Ok((Some(stored.user_id), "no_user_verification")));
        }
        let (new, old) = (result.counter(), stored.sign_count);
        let regressed = (new > 0 || old > 0) && new <= old;
        let mut updated = passkey;
        updated.update_credential(&result);
        let text = serde_json::to_string(&updated)
            .map_err(|e| Err(AppError::Internal(format!("passkey: {e}"))))?;
        let (id, now) = (stored.id, now_ms());
        self.core
            .db(move |s| s.record_passkey_use(id, &text, new, now))
            .await
            .map_err(Err)?;
        if regressed {
            let reason = format!("counter {new} after {old}");
            tracing::warn!(user_id = %stored.user_id, passkey = %stored.id, %reason, "passkey signature counter went backwards");
            let client = ClientInfo::default();
            self.core
                .audit(Record {
                    event: Event::PasskeyCounterRegression,
                    user_id: Some(stored.user_id),
                    email: None,
                    client: &client,
                    success: true,
                    reason: Some(&reason),
                })
                .await;
        }
        Ok(stored)
    }

    /// `POST /api/auth/mfa/webauthn/options`: a ceremony naming the passkeys of the account
    /// whose `mfaToken` (CONTRACT 11.1) is `mfa_token`; the token is read, not used.
    ///
    /// Errors: `NotFound` (not configured), `TokenInvalid`/`TokenExpired` (401: unknown, used
    /// or expired `mfaToken`), `Validation` when the account has no passkey.
    pub async fn mfa_webauthn_options(&self, mfa_token: &str) -> AppResult<PasskeyCeremony> {
        let rp = self.relying_party()?;
        if !one_time::well_formed(mfa_token) {
            return Err(AppError::TokenInvalid);
        }
        let hash = one_time::hash(mfa_token);
        let found = {
            let hash = hash.clone();
            self.core
                .db(move |s| s.one_time_token(Purpose::Mfa, &hash))
                .await?
        };
        let token = found.ok_or(AppError::TokenInvalid)?;
        if token.expired(now_ms()) {
            return Err(AppError::TokenExpired);
        }
        let user_id = token.user_id.ok_or(AppError::TokenInvalid)?;
        let stored = self.core.db(move |s| s.passkeys(user_id)).await?;
        let keys = stored
            .iter()
            .map(|p| verification_key(&p.credential))
            .collect::<AppResult<Vec<_>>>()?;
        if keys.is_empty() {
            return Err(AppError::validation(
                "mfaToken",
                "the account has no passkey",
            ));
        }
        let (rcr, state) = rp
            .start_passkey_authentication(&keys)
            .map_err(|e| AppError::Internal(format!("webauthn: {e}")))?;
        let public_key = request_options_json(&rcr.public_key)?;
        let ceremony_id = self
            .begin_ceremony::<PasskeyAuthentication>(
                Purpose::PasskeyAuthentication,
                Some(user_id),
                state,
                Some(hash),
            )
            .await?;
        Ok(PasskeyCeremony {
            ceremony_id,
            public_key,
        })
    }

    /// The passkey step of `POST /api/auth/mfa/verify` (CONTRACT 11.1): checks `credential`
    /// (`AuthenticationResponseJSON`) against the ceremony `ceremony_id`, which must have been
    /// begun by `mfa_webauthn_options` for the `mfaToken` whose hash is `mfa_token_hash` and
    /// the account `user_id`. The ceremony is used up either way. The caller reserves the
    /// login-limit slots before and settles them after (this checks, it does not count).
    ///
    /// Errors: `NotFound` (not configured); `InvalidCredentials` for an unknown, used,
    /// foreign or expired ceremony and for a refused assertion (replayed, no user
    /// verification, wrong origin or RP id, bad signature, another account's credential or
    /// handle): the caller answers these `MFA_INVALID`, a wrong answer like a wrong code
    /// (CONTRACT 11.1), so a replayed `ceremonyId` is one of the mfaToken's attempts.
    pub async fn verify_second_factor(
        &self,
        user_id: Uuid,
        mfa_token_hash: &str,
        ceremony_id: &str,
        credential: Value,
        client: &ClientInfo,
    ) -> AppResult<()> {
        let refused = |why: &str| {
            tracing::info!(%user_id, reason = why, ip = client.ip.as_deref().unwrap_or(""), "passkey second factor refused");
            AppError::InvalidCredentials
        };
        // A passkey answer while WebAuthn is off is a wrong answer like any other (11.1).
        let rp = match self.relying_party() {
            Ok(rp) => rp,
            Err(AppError::NotFound) => return Err(refused("webauthn_not_configured")),
            Err(e) => return Err(e),
        };
        let finished = self
            .finish_ceremony::<PasskeyAuthentication>(Purpose::PasskeyAuthentication, ceremony_id)
            .await;
        let (owner, payload) = match finished {
            Ok(found) => found,
            Err(AppError::TokenInvalid) => return Err(refused("unknown_or_used_ceremony")),
            Err(AppError::TokenExpired) => return Err(refused("expired_ceremony")),
            Err(e) => return Err(e),
        };
        if owner != Some(user_id) || payload.mfa.as_deref() != Some(mfa_token_hash) {
            return Err(refused("foreign_ceremony"));
        }
        let state = payload.state;
        let checked = self
            .check_assertion(&rp, credential, Some(user_id), |rp, cred, _key| {
                rp.finish_passkey_authentication(cred, &state)
            })
            .await;
        match checked {
            Ok(_) => Ok(()),
            Err(Ok((_, why))) => Err(refused(why)),
            Err(Err(e)) => Err(e),
        }
    }

    async fn audit_passkey(
        &self,
        event: Event,
        user_id: Option<Uuid>,
        client: &ClientInfo,
        failure: Option<&str>,
    ) {
        self.core
            .audit(Record {
                event,
                user_id,
                email: None,
                client,
                success: failure.is_none(),
                reason: failure,
            })
            .await;
    }
}

/// The audit record of a passkey login from what opening its session did.
fn passkey_login_record<'a>(outcome: &SessionOpening, client: &'a ClientInfo) -> Record<'a> {
    let (user_id, reason) = match outcome {
        SessionOpening::Opened(user) => (user.id, None),
        SessionOpening::Refused { user_id, why } => (*user_id, Some(why.as_str())),
    };
    Record {
        event: Event::PasskeyLogin,
        user_id: Some(user_id),
        email: None,
        client,
        success: reason.is_none(),
        reason,
    }
}

/// The stored credential, with its counter set to 0 for the library's check: authd allows a
/// counter that goes backwards (CONTRACT 11.3) and compares counters itself (the column
/// `sign_count`), where the library would refuse the assertion.
fn verification_key(stored: &str) -> AppResult<Passkey> {
    let mut value: Value = serde_json::from_str(stored)
        .map_err(|e| AppError::Internal(format!("stored passkey: {e}")))?;
    if let Some(counter) = value.pointer_mut("/cred/counter") {
        *counter = Value::from(0);
    }
    serde_json::from_value(value).map_err(|e| AppError::Internal(format!("stored passkey: {e}")))
}

/// Makes the library's creation options the `PublicKeyCredentialCreationOptionsJSON` authd
/// promises: a discoverable credential is required (the passwordless login names no
/// account, so the authenticator must keep the credential), user verification required.
fn creation_options_json(options: &mut Value) {
    if let Some(obj) = options.as_object_mut() {
        let selection = obj
            .entry("authenticatorSelection")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(sel) = selection.as_object_mut() {
            sel.insert("residentKey".into(), "required".into());
            sel.insert("requireResidentKey".into(), true.into());
            sel.insert("userVerification".into(), "required".into());
        }
        obj.insert("attestation".into(), "none".into());
    }
}

/// The library's request options as `PublicKeyCredentialRequestOptionsJSON`.
fn request_options_json<T: serde::Serialize>(options: &T) -> AppResult<Value> {
    let mut value = serde_json::to_value(options)
        .map_err(|e| AppError::Internal(format!("webauthn options: {e}")))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("userVerification".into(), "required".into());
        obj.entry("allowCredentials")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    Ok(value)
}
