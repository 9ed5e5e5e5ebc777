//! HTTP layer: the routes (one per resource, combined with `.or()`), their shared state,
//! and the per-IP request budget. Handlers call services only; they never touch the store.

pub mod budget;
pub mod connections;
pub mod dto;
pub mod filters;
pub mod handlers;
pub mod metrics_listener;
pub mod reject;
pub mod server;

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use crate::config::Settings;
use crate::domain::ip::rate_key;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::service::{
    Accounts, Admin, EmailChangeInput, LoginInput, MfaVerifyInput, NewUserInput, PasskeyLogin,
    PasskeyRegistrationInput, PasswordAndCode, PasswordChange, RevocationFeed, Sessions,
};
use budget::RequestBudget;
use dto::{
    CodeBody, CurrentPasswordBody, EmailBody, EmptyBody, MfaTokenBody, RefreshBody,
    ResetConfirmBody, ResetLinkBody, RoleBody, TokenBody,
};
use filters::{
    acting_admin, authenticated, client, json_body, plain_http, refresh_cookie,
    same_origin_or_allowed, BodyLimits,
};
use handlers::{
    admin, auth, email_change, meta, mfa, pages, passkeys, passwords, revocation_feed,
    self_service, sessions,
};

/// Every route authd serves, as (method, path template). `routes()` implements exactly these;
/// metrics label requests by template, and a test holds this list, the live server and
/// `docs/openapi.yaml` to each other.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/refresh"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/auth/logout-all"),
    ("POST", "/api/auth/password"),
    ("POST", "/api/auth/email"),
    ("POST", "/api/auth/email/confirm"),
    ("POST", "/api/auth/email/cancel"),
    ("POST", "/api/auth/password-reset/request"),
    ("POST", "/api/auth/password-reset/confirm"),
    ("POST", "/api/auth/verify-email"),
    ("POST", "/api/auth/verify-email/resend"),
    ("POST", "/api/auth/mfa/verify"),
    ("GET", "/api/auth/mfa"),
    ("POST", "/api/auth/mfa/totp/enroll"),
    ("POST", "/api/auth/mfa/totp/confirm"),
    ("POST", "/api/auth/mfa/totp/disable"),
    ("POST", "/api/auth/mfa/recovery-codes"),
    ("GET", "/api/auth/profile"),
    ("GET", "/api/auth/sessions"),
    ("POST", "/api/auth/passkeys/register/options"),
    ("POST", "/api/auth/passkeys/register/verify"),
    ("GET", "/api/auth/passkeys"),
    ("DELETE", "/api/auth/passkeys/{id}"),
    ("POST", "/api/auth/passkeys/login/options"),
    ("POST", "/api/auth/passkeys/login/verify"),
    ("POST", "/api/auth/mfa/webauthn/options"),
    ("DELETE", "/api/auth/sessions/{id}"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/revoked-sessions"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.yaml"),
    ("GET", "/reset-password"),
    ("GET", "/verify-email"),
    ("GET", "/confirm-email-change"),
    ("GET", "/_authd/pages.js"),
    ("GET", "/_authd/pages.css"),
    ("GET", "/api/admin/users"),
    ("GET", "/api/admin/users/{id}"),
    ("DELETE", "/api/admin/users/{id}"),
    ("POST", "/api/admin/users/{id}/disable"),
    ("POST", "/api/admin/users/{id}/enable"),
    ("POST", "/api/admin/users/{id}/unlock"),
    ("POST", "/api/admin/users/{id}/role"),
    ("POST", "/api/admin/users/{id}/email"),
    ("POST", "/api/admin/users/{id}/mfa/reset"),
    ("POST", "/api/admin/users/{id}/reset-link"),
    ("POST", "/api/admin/users/{id}/verify-email"),
    ("GET", "/api/admin/users/{id}/sessions"),
    ("DELETE", "/api/admin/users/{id}/sessions"),
];

/// The OpenAPI description of this API, served at `/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

/// Everything the handlers and filters need; one shared allocation, so a clone per request
/// is a single reference-count increment.
#[derive(Clone)]
pub struct HttpState(Arc<Shared>);

pub struct Shared {
    pub sessions: Sessions,
    pub admin: Admin,
    pub accounts: Accounts,
    /// The revoked-session feed (`/.well-known/revoked-sessions`).
    pub feed: RevocationFeed,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// The per-IP request budget on `/api/auth/*` (per process, or shared through Redis),
    /// keyed by `domain::ip::rate_key`.
    pub budget: RequestBudget,
    cookie_name: Arc<str>,
}

impl HttpState {
    pub fn new(
        sessions: Sessions,
        admin: Admin,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Self {
        // Inside the runtime: a Redis budget creates its (lazy) connection here.
        let budget = RequestBudget::new(
            &settings.rate_limit,
            metrics.rate_limit_backend_errors.clone(),
        );
        HttpState(Arc::new(Shared {
            cookie_name: Arc::from(settings.cookie.name.as_str()),
            accounts: Accounts::new(admin.core().clone()),
            feed: RevocationFeed::new(admin.core().clone()),
            sessions,
            admin,
            settings,
            metrics,
            budget,
        }))
    }
}

impl std::ops::Deref for HttpState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.settings
            .server
            .cors_origins
            .iter()
            .any(|o| o == origin)
    }

    /// The refresh cookie's `Path`: `/api/auth`, or `/` for a `__Host-` name, which browsers
    /// store only with `Path=/`, `Secure` and no `Domain` (RFC 6265bis section 4.1.3.2; the
    /// prefix is matched without regard to case) and silently drop otherwise.
    fn cookie_path(&self) -> &'static str {
        let host_prefix = self
            .cookie_name
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("__Host-"));
        if host_prefix {
            "/"
        } else {
            "/api/auth"
        }
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        format!(
            "{}={}; Path={}; Max-Age={}; HttpOnly;{} SameSite=Strict",
            self.cookie_name,
            value,
            self.cookie_path(),
            max_age,
            if self.settings.cookie.secure {
                " Secure;"
            } else {
                ""
            }
        )
    }

    /// `Set-Cookie` for a new refresh token.
    pub fn refresh_cookie(&self, token: &str) -> String {
        self.cookie(token, self.settings.jwt.refresh_ttl.as_secs())
    }

    /// `Set-Cookie` that deletes the refresh cookie.
    pub fn clear_cookie(&self) -> String {
        self.cookie("", 0)
    }

    /// Spends one request of `ip`'s budget on `/api/auth/*`; `RateLimited` with the seconds
    /// until the next request fits when none is left. The budget is keyed by
    /// `domain::ip::rate_key` (an IPv6 client's whole `/rate_limit.ipv6_prefix` network shares
    /// one). Never fails because of Redis (see `budget`).
    pub async fn spend_request_budget(&self, ip: IpAddr) -> Result<(), AppError> {
        let key = rate_key(ip, self.settings.rate_limit.ipv6_prefix);
        self.budget.spend(key).await.map_err(|denied| {
            self.metrics
                .rate_limited
                .with_label_values(&["requests"])
                .inc();
            AppError::RateLimited {
                retry_after_secs: denied.retry_after.as_secs() + 1,
            }
        })
    }

    /// Forgets idle per-IP budgets (called by the background cleanup).
    pub fn prune_limiter(&self) {
        self.budget.prune();
    }
}

/// Every route, with the single `recover` turning rejections into the contract's JSON.
pub fn routes(state: HttpState) -> BoxedFilter<(Response,)> {
    let limit = BodyLimits::of(&state.settings.server);
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let auth = authenticated(state.clone());
    let cookie = refresh_cookie(state.cookie_name.clone());
    let csrf = same_origin_or_allowed(state.clone());

    let register = warp::path!("api" / "auth" / "register")
        .and(warp::post())
        .and(with_state.clone())
        .and(client())
        .and(json_body::<NewUserInput>(limit, false))
        .and_then(auth::register);
    let login = warp::path!("api" / "auth" / "login")
        .and(warp::post())
        .and(with_state.clone())
        .and(client())
        .and(json_body::<LoginInput>(limit, false))
        .and_then(auth::login);
    let refresh = warp::path!("api" / "auth" / "refresh")
        .and(warp::post())
        .and(csrf.clone())
        .and(with_state.clone())
        .and(client())
        .and(cookie.clone())
        .and(json_body::<RefreshBody>(limit, true))
        .and(plain_http())
        .and_then(auth::refresh);
    let logout = warp::path!("api" / "auth" / "logout")
        .and(warp::post())
        .and(csrf)
        .and(with_state.clone())
        .and(client())
        .and(cookie)
        .and(json_body::<RefreshBody>(limit, true))
        .and(plain_http())
        .and_then(auth::logout);
    let logout_all = warp::path!("api" / "auth" / "logout-all")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(client())
        .and(json_body::<EmptyBody>(limit, true))
        .and_then(auth::logout_all);
    let change_password = warp::path!("api" / "auth" / "password")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(client())
        .and(json_body::<PasswordChange>(limit, false))
        .and_then(passwords::change);
    let mfa_verify = warp::path!("api" / "auth" / "mfa" / "verify")
        .and(warp::post())
        .and(with_state.clone())
        .and(client())
        .and(json_body::<MfaVerifyInput>(limit, false))
        .and_then(mfa::verify);
    let mfa_state = warp::path!("api" / "auth" / "mfa")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth.clone())
        .and_then(mfa::state);
    let mfa_enroll = warp::path!("api" / "auth" / "mfa" / "totp" / "enroll")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(client())
        .and(json_body::<CurrentPasswordBody>(limit, false))
        .and_then(mfa::enroll);
    let mfa_confirm = warp::path!("api" / "auth" / "mfa" / "totp" / "confirm")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(client())
        .and(json_body::<CodeBody>(limit, false))
        .and_then(mfa::confirm);
    let mfa_disable = warp::path!("api" / "auth" / "mfa" / "totp" / "disable")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(client())
        .and(json_body::<PasswordAndCode>(limit, false))
        .and_then(mfa::disable);
    let mfa_codes = warp::path!("api" / "auth" / "mfa" / "recovery-codes")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(client())
        .and(json_body::<PasswordAndCode>(limit, false))
        .and_then(mfa::regenerate);
    let mfa_routes = mfa_verify
        .or(mfa_state)
        .unify()
        .or(mfa_enroll)
        .unify()
        .or(mfa_confirm)
        .unify()
        .or(mfa_disable)
        .unify()
        .or(mfa_codes)
        .unify();
    let profile = warp::path!("api" / "auth" / "profile")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth.clone())
        .and_then(sessions::profile);
    let list_sessions = warp::path!("api" / "auth" / "sessions")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth.clone())
        .and_then(sessions::list);
    let delete_session = warp::path!("api" / "auth" / "sessions" / String)
        .and(warp::delete())
        .and(with_state.clone())
        .and(auth)
        .and(client())
        .and_then(sessions::delete);

    let jwks = warp::path!(".well-known" / "jwks.json")
        .and(warp::get())
        .and(with_state.clone())
        .and_then(meta::jwks);
    let revoked_sessions = warp::path!(".well-known" / "revoked-sessions")
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and_then(revocation_feed::feed);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and_then(meta::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .and_then(meta::readyz);
    // With `metrics.bind` set, `/metrics` lives only on that listener (`metrics_listener`).
    let metrics_here = state.settings.metrics.bind.is_none();
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(warp::any().and_then(move || async move {
            if metrics_here {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        }))
        .untuple_one()
        .and(with_state)
        .and_then(meta::metrics);
    let openapi = warp::path!("openapi.yaml").and(warp::get()).map(|| {
        let mut resp = warp::reply::Reply::into_response(OPENAPI_YAML);
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        );
        resp
    });

    // The hottest routes first: `or` tries each in turn.
    let api = profile
        .or(refresh)
        .unify()
        .or(login)
        .unify()
        .or(register)
        .unify()
        .or(logout)
        .unify()
        .or(logout_all)
        .unify()
        .or(list_sessions)
        .unify()
        .or(delete_session)
        .unify()
        .or(change_password)
        .unify()
        .or(mfa_routes)
        .unify();
    let ops = jwks
        .or(revoked_sessions)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify();
    // The rest behind one box: the hot routes above stay unboxed, and their (large) filter
    // type is nested in only one more `or`. Each level of `or` around it is proved again by
    // the compiler, which made every new route group cost minutes of build time.
    let rest = ops
        .or(admin_routes(state.clone()))
        .unify()
        .or(passkey_routes(state.clone()))
        .unify()
        .or(email_change_routes(state.clone()))
        .unify()
        .or(self_service_routes(state.clone()))
        .unify()
        .or(admin_mail_routes(state.clone()))
        .unify()
        .or(page_routes(&state))
        .unify()
        .boxed();
    api.or(rest)
        .unify()
        .recover(reject::recover)
        .unify()
        .boxed()
}

/// Passkeys (`handlers::passkeys`, CONTRACT 11.3) and the passkey ceremony of the MFA step.
/// Always routed: the service answers 404 while `[webauthn]` is not configured.
fn passkey_routes(state: HttpState) -> BoxedFilter<(Response,)> {
    let limit = BodyLimits::of(&state.settings.server);
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let auth = authenticated(state);
    let register_options = warp::path!("api" / "auth" / "passkeys" / "register" / "options")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(client())
        .and(json_body::<CurrentPasswordBody>(limit, false))
        .and_then(passkeys::register_options);
    let register_verify = warp::path!("api" / "auth" / "passkeys" / "register" / "verify")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(client())
        .and(json_body::<PasskeyRegistrationInput>(limit, false))
        .and_then(passkeys::register_verify);
    let list = warp::path!("api" / "auth" / "passkeys")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth.clone())
        .and_then(passkeys::list);
    let delete = warp::path!("api" / "auth" / "passkeys" / String)
        .and(warp::delete())
        .and(with_state.clone())
        .and(auth)
        .and(client())
        .and_then(passkeys::delete);
    let login_options = warp::path!("api" / "auth" / "passkeys" / "login" / "options")
        .and(warp::post())
        .and(with_state.clone())
        .and(json_body::<EmptyBody>(limit, true))
        .and_then(passkeys::login_options);
    let login_verify = warp::path!("api" / "auth" / "passkeys" / "login" / "verify")
        .and(warp::post())
        .and(with_state.clone())
        .and(client())
        .and(json_body::<PasskeyLogin>(limit, false))
        .and_then(passkeys::login_verify);
    let mfa_options = warp::path!("api" / "auth" / "mfa" / "webauthn" / "options")
        .and(warp::post())
        .and(with_state)
        .and(json_body::<MfaTokenBody>(limit, false))
        .and_then(passkeys::mfa_options);
    login_verify
        .or(login_options)
        .unify()
        .or(register_options)
        .unify()
        .or(register_verify)
        .unify()
        .or(list)
        .unify()
        .or(delete)
        .unify()
        .or(mfa_options)
        .unify()
        .boxed()
}

/// Email change (`handlers::email_change`, CONTRACT 10.5). Always routed: the request answers
/// 404 while `email.transport` is `none`.
fn email_change_routes(state: HttpState) -> BoxedFilter<(Response,)> {
    let limit = BodyLimits::of(&state.settings.server);
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let auth = authenticated(state);
    let request = warp::path!("api" / "auth" / "email")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(client())
        .and(json_body::<EmailChangeInput>(limit, false))
        .and_then(email_change::request);
    let confirm = warp::path!("api" / "auth" / "email" / "confirm")
        .and(warp::post())
        .and(with_state.clone())
        .and(client())
        .and(json_body::<TokenBody>(limit, false))
        .and_then(email_change::confirm);
    let cancel = warp::path!("api" / "auth" / "email" / "cancel")
        .and(warp::post())
        .and(with_state)
        .and(auth)
        .and(json_body::<EmptyBody>(limit, true))
        .and_then(email_change::cancel);
    request.or(confirm).unify().or(cancel).unify().boxed()
}

/// Password reset and email verification (`handlers::self_service`, CONTRACT 10.3, 10.4).
/// Always routed: the services answer 404 where the feature is off.
fn self_service_routes(state: HttpState) -> BoxedFilter<(Response,)> {
    let limit = BodyLimits::of(&state.settings.server);
    let with_state = warp::any().map(move || state.clone());
    let request = warp::path!("api" / "auth" / "password-reset" / "request")
        .and(warp::post())
        .and(with_state.clone())
        .and(client())
        .and(json_body::<EmailBody>(limit, false))
        .and_then(self_service::request_reset);
    let confirm = warp::path!("api" / "auth" / "password-reset" / "confirm")
        .and(warp::post())
        .and(with_state.clone())
        .and(client())
        .and(json_body::<ResetConfirmBody>(limit, false))
        .and_then(self_service::confirm_reset);
    let verify = warp::path!("api" / "auth" / "verify-email")
        .and(warp::post())
        .and(with_state.clone())
        .and(client())
        .and(json_body::<TokenBody>(limit, false))
        .and_then(self_service::verify);
    let resend = warp::path!("api" / "auth" / "verify-email" / "resend")
        .and(warp::post())
        .and(with_state)
        .and(client())
        .and(json_body::<EmailBody>(limit, false))
        .and_then(self_service::resend);
    request
        .or(confirm)
        .unify()
        .or(verify)
        .unify()
        .or(resend)
        .unify()
        .boxed()
}

/// The landing pages of the mailed links and their assets (`handlers::pages`), when
/// `pages.enabled`; otherwise their paths are unknown (404, whatever the method).
fn page_routes(state: &HttpState) -> BoxedFilter<(Response,)> {
    let enabled = state.settings.pages.enabled;
    let assets = Arc::new(pages::assets(state.settings.password.min_length));
    warp::path::full()
        .and_then(move |path: warp::path::FullPath| {
            let assets = assets.clone();
            async move {
                let found = enabled
                    .then(|| assets.iter().find(|a| a.path == path.as_str()).cloned())
                    .flatten();
                found.ok_or_else(warp::reject::not_found)
            }
        })
        .and(warp::get())
        .map(|asset: pages::Asset| pages::serve(&asset))
        .boxed()
}

/// `/api/admin/users...`: account management for access tokens whose user is an admin.
fn admin_routes(state: HttpState) -> BoxedFilter<(Response,)> {
    let limit = BodyLimits::of(&state.settings.server);
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let acting = acting_admin(state);
    let base = warp::path!("api" / "admin" / "users" / ..);

    let list = warp::path!("api" / "admin" / "users")
        .and(warp::get())
        .and(with_state.clone())
        .and(acting.clone())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and_then(admin::list);
    let show = base
        .and(warp::path!(String))
        .and(warp::get())
        .and(with_state.clone())
        .and(acting.clone())
        .and_then(admin::show);
    let delete = base
        .and(warp::path!(String))
        .and(warp::delete())
        .and(with_state.clone())
        .and(acting.clone())
        .and_then(admin::delete);
    let disable = base
        .and(warp::path!(String / "disable"))
        .and(warp::post())
        .and(with_state.clone())
        .and(acting.clone())
        .and(json_body::<EmptyBody>(limit, true))
        .and_then(admin::disable);
    let enable = base
        .and(warp::path!(String / "enable"))
        .and(warp::post())
        .and(with_state.clone())
        .and(acting.clone())
        .and(json_body::<EmptyBody>(limit, true))
        .and_then(admin::enable);
    let unlock = base
        .and(warp::path!(String / "unlock"))
        .and(warp::post())
        .and(with_state.clone())
        .and(acting.clone())
        .and(json_body::<EmptyBody>(limit, true))
        .and_then(admin::unlock);
    let role = base
        .and(warp::path!(String / "role"))
        .and(warp::post())
        .and(with_state.clone())
        .and(acting.clone())
        .and(json_body::<RoleBody>(limit, false))
        .and_then(admin::set_role);
    let set_email = base
        .and(warp::path!(String / "email"))
        .and(warp::post())
        .and(with_state.clone())
        .and(acting.clone())
        .and(json_body::<EmailBody>(limit, false))
        .and_then(admin::set_email);
    let mfa_reset = base
        .and(warp::path!(String / "mfa" / "reset"))
        .and(warp::post())
        .and(with_state.clone())
        .and(acting.clone())
        .and(json_body::<EmptyBody>(limit, true))
        .and_then(admin::mfa_reset);
    let sessions = base
        .and(warp::path!(String / "sessions"))
        .and(warp::get())
        .and(with_state.clone())
        .and(acting.clone())
        .and_then(admin::sessions);
    let revoke = base
        .and(warp::path!(String / "sessions"))
        .and(warp::delete())
        .and(with_state)
        .and(acting)
        .and_then(admin::revoke_sessions);
    list.or(show)
        .unify()
        .or(delete)
        .unify()
        .or(disable)
        .unify()
        .or(enable)
        .unify()
        .or(unlock)
        .unify()
        .or(role)
        .unify()
        .or(set_email)
        .unify()
        .or(mfa_reset)
        .unify()
        .or(sessions)
        .unify()
        .or(revoke)
        .unify()
        .boxed()
}

/// The admin's side of password reset and email verification (`handlers::admin`,
/// CONTRACT 10.3, 10.4): `reset-link` and `verify-email` under `/api/admin/users/{id}`.
fn admin_mail_routes(state: HttpState) -> BoxedFilter<(Response,)> {
    let limit = BodyLimits::of(&state.settings.server);
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let acting = acting_admin(state);
    let base = warp::path!("api" / "admin" / "users" / ..);
    let reset_link = base
        .and(warp::path!(String / "reset-link"))
        .and(warp::post())
        .and(with_state.clone())
        .and(acting.clone())
        .and(json_body::<ResetLinkBody>(limit, true))
        .and_then(admin::reset_link);
    let verify_email = base
        .and(warp::path!(String / "verify-email"))
        .and(warp::post())
        .and(with_state.clone())
        .and(acting.clone())
        .and(json_body::<EmptyBody>(limit, true))
        .and_then(admin::verify_email);
    reset_link.or(verify_email).unify().boxed()
}
