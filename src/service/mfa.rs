//! Service layer: second factors (CONTRACT 11.1, 11.2, 11.4): the login's `MFA_REQUIRED`
//! step and `POST /api/auth/mfa/verify`, TOTP enrolment, confirmation and removal, recovery
//! codes, and the admin's reset. mfaTokens and pending enrolments are one-time tokens
//! (`domain::one_time`, purposes `Mfa` and `TotpEnrollment`). Every second-factor answer at
//! verify takes a slot of the login limits before it is checked (`service::limits`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::audit::{log_event, Event, Record};
use super::sessions::{login_record, AuthOutcome, Principal, Sessions};
use crate::crypto::keys::Sealer;
use crate::crypto::{one_time, totp};
use crate::domain::mfa::{EnableOutcome, MfaOpening, MfaProof, MfaState, TotpEnrollment};
use crate::domain::one_time::{NewOneTimeToken, Purpose};
use crate::domain::time::{duration_ms, now_ms};
use crate::domain::{AuthMethod, ClientInfo, Refusal, SessionOpening, UserCredentials};
use crate::error::{AppError, AppResult, FieldError};

/// The sealing context of TOTP secrets (the AEAD's associated data is the user id and this).
const SEAL_USE: &str = "totp";

/// `POST /api/auth/mfa/verify` as sent: the mfaToken and one answer.
#[derive(Debug, Clone, Default)]
pub struct MfaVerifyInput {
    pub mfa_token: String,
    /// A TOTP code.
    pub code: Option<String>,
    /// A recovery code.
    pub recovery_code: Option<String>,
    /// A passkey ceremony (CONTRACT 11.3) and its `AuthenticationResponseJSON`.
    pub ceremony_id: Option<String>,
    pub credential: Option<serde_json::Value>,
}

/// A successful verify: the login answer, and for a recovery code how many are left.
#[derive(Debug, Clone)]
pub struct MfaVerified {
    pub outcome: AuthOutcome,
    pub recovery_codes_remaining: Option<u32>,
}

/// A pending TOTP enrolment as answered to the user (nothing is active yet).
#[derive(Debug, Clone)]
pub struct TotpEnrollmentOffer {
    /// The secret in base32 (160 bits).
    pub secret: String,
    pub otpauth_uri: String,
    /// Seconds the enrolment waits for its confirming code.
    pub expires_in: u64,
}

/// A confirmed TOTP enrolment: the recovery codes (shown once) and the sessions revoked.
#[derive(Debug, Clone)]
pub struct TotpConfirmed {
    pub recovery_codes: Vec<String>,
    pub revoked_sessions: usize,
}

/// `currentPassword` and a code (TOTP or recovery code): disable, regenerate.
#[derive(Debug, Clone, Default)]
pub struct PasswordAndCode {
    pub current_password: String,
    pub code: String,
}

/// The fingerprint of a verified password hash carried by an mfaToken: verify opens the
/// session only while the account still has that hash (a password change in between ends
/// the login).
fn hash_fingerprint(hash: &str) -> String {
    Sha256::digest(hash.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pending enrolment's one-time token hash: one per account (a new enrolment supersedes
/// the old), found by the account alone since confirm sends only the code.
fn enrollment_hash(user_id: Uuid) -> String {
    one_time::hash(&format!("totp_enrollment:{user_id}"))
}

impl Sessions {
    fn sealer(&self) -> Option<Sealer> {
        self.core
            .settings
            .mfa
            .secret_key
            .as_ref()
            .map(|k| Sealer::new(k.expose()))
    }

    fn seal(&self, user_id: Uuid, secret: &[u8]) -> (Vec<u8>, bool) {
        match self.sealer() {
            Some(s) => (s.seal(&user_id.to_string(), SEAL_USE, secret), true),
            None => (secret.to_vec(), false),
        }
    }

    fn unseal(&self, user_id: Uuid, stored: &[u8], sealed: bool) -> AppResult<Vec<u8>> {
        if !sealed {
            return Ok(stored.to_vec());
        }
        let sealer = self.sealer().ok_or_else(|| {
            AppError::Internal("a TOTP secret is sealed but mfa.secret_key is empty".into())
        })?;
        sealer
            .open(&user_id.to_string(), SEAL_USE, stored)
            .map_err(|_| {
                AppError::Internal("a TOTP secret does not open with mfa.secret_key".into())
            })
    }

    /// At login, after the right password of an enabled account: when it has a confirmed
    /// second factor, issues an mfaToken and answers `MfaRequired` (audited `login`, reason
    /// `mfa_required`); otherwise `Ok` and the login goes on.
    pub(super) async fn require_second_factor(
        &self,
        creds: &UserCredentials,
        email: &str,
        client: &ClientInfo,
        device_info: Option<&str>,
    ) -> AppResult<()> {
        let user_id = creds.user.id;
        let state = self.core.db(move |s| s.mfa_state(user_id)).await?;
        if !state.required() {
            return Ok(());
        }
        let ttl = self.core.settings.mfa.challenge_ttl;
        let (token, hash) = one_time::new_token();
        let now = now_ms();
        let new = NewOneTimeToken {
            token_hash: hash,
            purpose: Purpose::Mfa,
            user_id: Some(user_id),
            address: Some(email.to_owned()),
            payload: Some(
                json!({"pwd": hash_fingerprint(&creds.password_hash), "deviceInfo": device_info})
                    .to_string(),
            ),
            created_at: now,
            expires_at: now + duration_ms(ttl),
        };
        self.core
            .db(move |s| s.issue_one_time_token(&new, false))
            .await?;
        self.core
            .metrics
            .logins
            .with_label_values(&["mfa_required"])
            .inc();
        self.core
            .audit(Record {
                event: Event::Login,
                user_id: Some(user_id),
                email: Some(email),
                client,
                success: false,
                reason: Some("mfa_required"),
            })
            .await;
        Err(AppError::MfaRequired {
            mfa_token: token,
            methods: state.methods(),
            expires_in: ttl.as_secs().max(1),
        })
    }

    /// `POST /api/auth/mfa/verify`: checks one second-factor answer against the mfaToken's
    /// account, within the login limits (a slot of the client IP's failed-login budget and
    /// of the email's lockout, reserved before the check: 429/423 past them), and opens the
    /// session in the transaction that spends the answer.
    ///
    /// Errors: `TokenInvalid` (unknown, used or dead mfaToken), `TokenExpired`, `MfaInvalid`
    /// (wrong, replayed or malformed answer: counted as a failed login and as one of the
    /// token's `mfa.max_attempts`), `RateLimited`, `AccountLocked`, `AccountDisabled`,
    /// `Validation` (not exactly one kind of answer).
    pub async fn verify_mfa(
        &self,
        input: MfaVerifyInput,
        client: &ClientInfo,
    ) -> AppResult<MfaVerified> {
        let method = match (&input.code, &input.recovery_code, &input.ceremony_id) {
            (Some(_), None, None) => "totp",
            (None, Some(_), None) => "recovery_code",
            (None, None, Some(_)) if input.credential.is_some() => "webauthn",
            _ => {
                return Err(AppError::Validation(vec![FieldError::new(
                    "code",
                    "send exactly one of code, recoveryCode, or ceremonyId with credential",
                )]))
            }
        };
        let result = self.verify_answer(method, &input, client).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(AppError::MfaInvalid) => "invalid",
            Err(AppError::TokenInvalid) => "token_invalid",
            Err(AppError::TokenExpired) => "token_expired",
            Err(AppError::RateLimited { .. }) => "rate_limited",
            Err(AppError::AccountLocked { .. }) => "locked",
            Err(_) => "error",
        };
        self.core
            .metrics
            .mfa_verifications
            .with_label_values(&[method, outcome])
            .inc();
        result
    }

    async fn verify_answer(
        &self,
        method: &'static str,
        input: &MfaVerifyInput,
        client: &ClientInfo,
    ) -> AppResult<MfaVerified> {
        let token_hash = one_time::hash(&input.mfa_token);
        let lookup = token_hash.clone();
        let token = self
            .core
            .db(move |s| s.one_time_token(Purpose::Mfa, &lookup))
            .await?
            .ok_or(AppError::TokenInvalid)?;
        let now = now_ms();
        if token.expired(now) {
            return Err(AppError::TokenExpired);
        }
        let user_id = token.user_id.ok_or(AppError::TokenInvalid)?;
        let email = token.address.clone().unwrap_or_default();
        let payload: serde_json::Value = token
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        // Every answer takes a slot of the login limits before it is checked (CONTRACT 11.1,
        // section 9's concurrency rule): many mfaTokens never multiply guesses.
        let attempt = match self.limits.reserve(&email, client).await {
            Ok(a) => a,
            Err(e) => {
                let reason = match e {
                    AppError::AccountLocked { .. } => "locked",
                    AppError::RateLimited { .. } => "rate_limited",
                    _ => return Err(e),
                };
                self.audit_mfa(Event::MfaVerify, user_id, client, Some(reason))
                    .await;
                return Err(e);
            }
        };
        // ... and one of the mfaToken's own `mfa.max_attempts`, also before the check: answers
        // sent at once on one token get no more checks than that between them.
        let (hash, max) = (token_hash.clone(), self.core.settings.mfa.max_attempts);
        if !self
            .core
            .db(move |s| s.reserve_mfa_attempt(&hash, max))
            .await?
        {
            attempt.succeeded().await;
            return Err(AppError::TokenInvalid);
        }
        let proof = match method {
            "totp" => {
                let code = input.code.as_deref().unwrap_or_default().trim();
                let stored = self.core.db(move |s| s.totp_secret(user_id)).await?;
                match stored {
                    Some(t) => {
                        let secret = self.unseal(user_id, &t.secret, t.sealed)?;
                        totp::matching_step(
                            &secret,
                            code,
                            now.div_euclid(1000) as u64,
                            self.core.settings.mfa.totp_skew,
                        )
                        .map(|step| MfaProof::Totp { step })
                    }
                    None => None,
                }
            }
            "recovery_code" => {
                let code = input.recovery_code.as_deref().unwrap_or_default();
                let normalized = totp::normalize_recovery_code(code);
                (!normalized.is_empty() && normalized.len() <= 64).then(|| MfaProof::RecoveryCode {
                    code_hash: totp::recovery_code_hash(user_id, &normalized),
                })
            }
            _ => {
                let checked = self
                    .verify_second_factor(
                        user_id,
                        &token_hash,
                        input.ceremony_id.as_deref().unwrap_or_default(),
                        input.credential.clone().unwrap_or(serde_json::Value::Null),
                        client,
                    )
                    .await;
                match checked {
                    Ok(()) => Some(MfaProof::Webauthn),
                    Err(AppError::InvalidCredentials) => None,
                    Err(e) => {
                        attempt.succeeded().await;
                        return Err(e);
                    }
                }
            }
        };
        let Some(proof) = proof else {
            attempt.failed().await;
            return self.wrong_answer(&token_hash, user_id, client).await;
        };
        // The password the mfaToken stands for must still be the account's.
        let lookup = email.clone();
        let creds = self
            .core
            .db(move |s| s.user_by_email(&lookup))
            .await?
            .filter(|c| c.user.id == user_id);
        let Some(creds) = creds.filter(|c| {
            payload.get("pwd").and_then(|v| v.as_str())
                == Some(hash_fingerprint(&c.password_hash).as_str())
        }) else {
            let hash = token_hash.clone();
            self.core
                .db(move |s| s.consume_one_time_token(Purpose::Mfa, &hash, now_ms()))
                .await?;
            return Err(AppError::TokenInvalid);
        };
        let second = match proof {
            MfaProof::Totp { .. } => AuthMethod::Otp,
            MfaProof::RecoveryCode { .. } => AuthMethod::RecoveryCode,
            MfaProof::Webauthn => AuthMethod::Webauthn,
        };
        let device_info = match payload.get("deviceInfo") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let (new, refresh_token) =
            self.new_session(user_id, client, device_info, vec![AuthMethod::Pwd, second]);
        let (session_id, opened_at) = (new.session.id, new.session.created_at);
        let (audit_email, audit_client) = (email.clone(), client.clone());
        let (hash, verified) = (token_hash.clone(), creds.password_hash.clone());
        let opened = self
            .core
            .db(move |s| {
                s.open_mfa_session(
                    &hash,
                    &proof,
                    &new,
                    &verified,
                    Box::new(move |o| {
                        Some(login_record(o, &audit_email, &audit_client).to_event())
                    }),
                )
            })
            .await?;
        match opened {
            MfaOpening::TokenUnknown => Err(AppError::TokenInvalid),
            MfaOpening::TokenExpired => Err(AppError::TokenExpired),
            MfaOpening::Spent => {
                attempt.failed().await;
                self.wrong_answer(&token_hash, user_id, client).await
            }
            MfaOpening::Decided {
                opening,
                recovery_codes_left,
            } => {
                attempt.succeeded().await;
                log_event(&login_record(&opening, &email, client).to_event());
                let user = match opening {
                    SessionOpening::Opened(user) => user,
                    SessionOpening::Refused { why, .. } => {
                        return Err(match why {
                            Refusal::Disabled => AppError::AccountDisabled,
                            Refusal::Gone | Refusal::CredentialChanged => AppError::TokenInvalid,
                        })
                    }
                };
                self.audit_mfa(Event::MfaVerify, user_id, client, None)
                    .await;
                self.core
                    .metrics
                    .logins
                    .with_label_values(&["success"])
                    .inc();
                let tokens = self.tokens(
                    user.id,
                    session_id,
                    user.role.as_str(),
                    refresh_token,
                    opened_at,
                );
                Ok(MfaVerified {
                    outcome: AuthOutcome { user, tokens },
                    recovery_codes_remaining: (second == AuthMethod::RecoveryCode)
                        .then_some(recovery_codes_left),
                })
            }
        }
    }

    /// A wrong answer (already counted by its attempt): one of the mfaToken's
    /// `mfa.max_attempts`, audited; `MfaInvalid`.
    async fn wrong_answer<T>(
        &self,
        token_hash: &str,
        user_id: Uuid,
        client: &ClientInfo,
    ) -> AppResult<T> {
        let (hash, max) = (token_hash.to_owned(), self.core.settings.mfa.max_attempts);
        self.core
            .db(move |s| s.mfa_wrong_answer(&hash, max))
            .await?;
        self.audit_mfa(Event::MfaVerify, user_id, client, Some("invalid_code"))
            .await;
        Err(AppError::MfaInvalid)
    }

    async fn audit_mfa(
        &self,
        event: Event,
        user_id: Uuid,
        client: &ClientInfo,
        failure: Option<&str>,
    ) {
        self.core
            .audit(Record {
                event,
                user_id: Some(user_id),
                email: None,
                client,
                success: failure.is_none(),
                reason: failure,
            })
            .await;
    }

    /// `GET /api/auth/mfa`: the principal's second factors.
    pub async fn mfa_state(&self, who: &Principal) -> AppResult<MfaState> {
        let user_id = who.user_id;
        self.core.db(move |s| s.mfa_state(user_id)).await
    }

    /// `POST /api/auth/mfa/totp/enroll`: after the current password, a new secret waiting
    /// for its first code (a `TotpEnrollment` one-time token holding it, sealed under
    /// `mfa.secret_key` when set, superseding an earlier pending one). `NotFound` while
    /// `mfa.enabled` is false; `MfaAlreadyEnabled` while TOTP is on.
    pub async fn enroll_totp(
        &self,
        who: Principal,
        current_password: &str,
        client: &ClientInfo,
    ) -> AppResult<TotpEnrollmentOffer> {
        let settings = &self.core.settings.mfa;
        if !settings.enabled {
            return Err(AppError::NotFound);
        }
        self.check_current_password(&who, current_password, client, Event::MfaEnroll)
            .await?;
        let user_id = who.user_id;
        if self.core.db(move |s| s.mfa_state(user_id)).await?.totp {
            return Err(AppError::MfaAlreadyEnabled);
        }
        let secret = totp::new_secret();
        let (stored, sealed) = self.seal(user_id, &secret);
        let now = now_ms();
        let new = NewOneTimeToken {
            token_hash: enrollment_hash(user_id),
            purpose: Purpose::TotpEnrollment,
            user_id: Some(user_id),
            address: None,
            payload: Some(json!({"secret": B64.encode(&stored), "sealed": sealed}).to_string()),
            created_at: now,
            expires_at: now + duration_ms(settings.challenge_ttl),
        };
        self.core
            .db(move |s| s.issue_one_time_token(&new, true))
            .await?;
        Ok(TotpEnrollmentOffer {
            secret: totp::base32(&secret),
            otpauth_uri: totp::otpauth_uri(&settings.issuer, &who.user.email, &secret),
            expires_in: settings.challenge_ttl.as_secs().max(1),
        })
    }

    /// `POST /api/auth/mfa/totp/confirm`: the first code of the pending enrolment turns TOTP
    /// on (its step is spent: it cannot log in), makes `mfa.recovery_codes` recovery codes,
    /// revokes every other session of the user and marks the presented one `otp`.
    pub async fn confirm_totp(
        &self,
        who: Principal,
        code: &str,
        client: &ClientInfo,
    ) -> AppResult<TotpConfirmed> {
        if !self.core.settings.mfa.enabled {
            return Err(AppError::NotFound);
        }
        let user_id = who.user_id;
        let hash = enrollment_hash(user_id);
        let lookup = hash.clone();
        let pending = self
            .core
            .db(move |s| s.one_time_token(Purpose::TotpEnrollment, &lookup))
            .await?;
        let now = now_ms();
        let Some(pending) = pending.filter(|p| !p.expired(now)) else {
            return Err(AppError::validation(
                "code",
                "no TOTP enrolment is pending (it expired or was never begun): enroll first",
            ));
        };
        let payload: serde_json::Value = pending
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        let stored = payload
            .get("secret")
            .and_then(|v| v.as_str())
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| AppError::Internal("a pending enrolment without its secret".into()))?;
        let sealed = payload
            .get("sealed")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let secret = self.unseal(user_id, &stored, sealed)?;
        let step = totp::matching_step(
            &secret,
            code.trim(),
            now.div_euclid(1000) as u64,
            self.core.settings.mfa.totp_skew,
        )
        .ok_or(AppError::MfaInvalid)?;
        let codes: Vec<String> = (0..self.core.settings.mfa.recovery_codes)
            .map(|_| totp::new_recovery_code())
            .collect();
        let enrollment = TotpEnrollment {
            user_id,
            enrollment_hash: hash,
            secret: stored,
            sealed,
            step,
            recovery_hashes: codes
                .iter()
                .map(|c| totp::recovery_code_hash(user_id, c))
                .collect(),
            session_id: who.session_id,
            now,
        };
        match self.core.db(move |s| s.enable_totp(&enrollment)).await? {
            EnableOutcome::Enabled { revoked_sessions } => {
                self.audit_mfa(Event::MfaEnroll, user_id, client, None)
                    .await;
                Ok(TotpConfirmed {
                    recovery_codes: codes,
                    revoked_sessions,
                })
            }
            EnableOutcome::AlreadyEnabled => Err(AppError::MfaAlreadyEnabled),
            EnableOutcome::NoEnrollment => Err(AppError::validation(
                "code",
                "no TOTP enrolment is pending (it expired or was never begun): enroll first",
            )),
        }
    }

    /// Checks a TOTP or recovery code of the principal outside a login and spends it (a
    /// TOTP step by the same conditional update as at login). `MfaInvalid` when wrong.
    async fn spend_code(&self, user_id: Uuid, code: &str) -> AppResult<()> {
        let stored = self.core.db(move |s| s.totp_secret(user_id)).await?;
        let now = now_ms();
        let mut proof = None;
        if let Some(t) = stored {
            let secret = self.unseal(user_id, &t.secret, t.sealed)?;
            proof = totp::matching_step(
                &secret,
                code.trim(),
                now.div_euclid(1000) as u64,
                self.core.settings.mfa.totp_skew,
            )
            .map(|step| MfaProof::Totp { step });
        }
        let proof = proof.unwrap_or_else(|| MfaProof::RecoveryCode {
            code_hash: totp::recovery_code_hash(user_id, code),
        });
        if self
            .core
            .db(move |s| s.spend_mfa_proof(user_id, &proof))
            .await?
        {
            Ok(())
        } else {
            Err(AppError::MfaInvalid)
        }
    }

    /// `POST /api/auth/mfa/totp/disable`: with the current password and a TOTP or recovery
    /// code, TOTP and the recovery codes are removed.
    pub async fn disable_totp(
        &self,
        who: Principal,
        input: PasswordAndCode,
        client: &ClientInfo,
    ) -> AppResult<()> {
        self.check_current_password(&who, &input.current_password, client, Event::MfaDisable)
            .await?;
        let user_id = who.user_id;
        if let Err(e) = self.spend_code(user_id, &input.code).await {
            self.audit_mfa(Event::MfaDisable, user_id, client, Some("invalid_code"))
                .await;
            return Err(e);
        }
        self.core
            .db(move |s| s.disable_mfa(user_id, false, now_ms()))
            .await?;
        self.audit_mfa(Event::MfaDisable, user_id, client, None)
            .await;
        Ok(())
    }

    /// `POST /api/auth/mfa/recovery-codes`: with the current password and a TOTP or recovery
    /// code, a new set of `mfa.recovery_codes` codes replaces the old one.
    pub async fn regenerate_recovery_codes(
        &self,
        who: Principal,
        input: PasswordAndCode,
        client: &ClientInfo,
    ) -> AppResult<Vec<String>> {
        self.check_current_password(
            &who,
            &input.current_password,
            client,
            Event::MfaRecoveryCodesRegenerate,
        )
        .await?;
        let user_id = who.user_id;
        if let Err(e) = self.spend_code(user_id, &input.code).await {
            self.audit_mfa(
                Event::MfaRecoveryCodesRegenerate,
                user_id,
                client,
                Some("invalid_code"),
            )
            .await;
            return Err(e);
        }
        let codes: Vec<String> = (0..self.core.settings.mfa.recovery_codes)
            .map(|_| totp::new_recovery_code())
            .collect();
        let hashes: Vec<String> = codes
            .iter()
            .map(|c| totp::recovery_code_hash(user_id, c))
            .collect();
        self.core
            .db(move |s| s.replace_recovery_codes(user_id, &hashes, now_ms()))
            .await?;
        self.audit_mfa(Event::MfaRecoveryCodesRegenerate, user_id, client, None)
            .await;
        Ok(codes)
    }
}
