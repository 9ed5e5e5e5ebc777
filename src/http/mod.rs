//! HTTP layer: the routes (one per resource, combined with `.or()`), their shared state,
//! and the per-IP request budget. Handlers call services only; they never touch the store.

pub mod dto;
pub mod filters;
pub mod handlers;
pub mod reject;
pub mod server;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderValue;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use crate::config::Settings;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::service::{Admin, LoginInput, NewUserInput, PasswordChange, Sessions};
use dto::{EmptyBody, RefreshBody};
use filters::{authenticated, client, json_body, refresh_cookie, same_origin_or_allowed};
use handlers::{auth, meta, passwords, sessions};

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
    ("GET", "/api/auth/profile"),
    ("GET", "/api/auth/sessions"),
    ("DELETE", "/api/auth/sessions/{id}"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.yaml"),
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
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    cookie_name: Arc<str>,
}

impl HttpState {
    pub fn new(
        sessions: Sessions,
        admin: Admin,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let rl = &settings.rate_limit;
        let limiter = rl.enabled.then(|| {
            let max = NonZeroU32::new(rl.max_requests).unwrap_or(NonZeroU32::MIN);
            let period = rl.window / max.get();
            let quota = Quota::with_period(period.max(std::time::Duration::from_nanos(1)))
                .expect("non-zero period")
                .allow_burst(max);
            Arc::new(RateLimiter::keyed(quota))
        });
        HttpState(Arc::new(Shared {
            cookie_name: Arc::from(settings.cookie.name.as_str()),
            sessions,
            admin,
            settings,
            metrics,
            limiter,
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

    fn cookie(&self, value: &str, max_age: u64) -> String {
        format!(
            "{}={}; Path=/api/auth; Max-Age={}; HttpOnly;{} SameSite=Strict",
            self.cookie_name,
            value,
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

    /// Spends one request of `ip`'s budget on `/api/auth/*`; `RateLimited` when none is left.
    pub fn spend_request_budget(&self, ip: IpAddr) -> Result<(), AppError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&ip).map_err(|not_until| {
            self.metrics
                .rate_limited
                .with_label_values(&["requests"])
                .inc();
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            AppError::RateLimited {
                retry_after_secs: wait.as_secs() + 1,
            }
        })
    }

    /// Forgets idle per-IP budgets (called by the background cleanup).
    pub fn prune_limiter(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Every route, with the single `recover` turning rejections into the contract's JSON.
pub fn routes(state: HttpState) -> BoxedFilter<(Response,)> {
    let limit = state.settings.server.body_limit;
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
        .and_then(auth::refresh);
    let logout = warp::path!("api" / "auth" / "logout")
        .and(warp::post())
        .and(csrf)
        .and(with_state.clone())
        .and(client())
        .and(cookie)
        .and(json_body::<RefreshBody>(limit, true))
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
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and_then(meta::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .and_then(meta::readyz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
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
        .unify();
    let ops = jwks
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify();
    api.or(ops).unify().recover(reject::recover).unify().boxed()
}
