//! Observability: the Prometheus registry and every metric authd exports. One per app
//! (no globals), shared by the HTTP layer and the services.
//!
//! No label ever takes an unbounded value from a request: every label value is one of a fixed
//! set (`method_label`, the route table's templates or `unmatched`, a three-digit status, or
//! a constant outcome/limit name), so a client cannot grow `/metrics` or the process's memory
//! by inventing methods or paths.

use http::Method;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The `method` label of a request: RFC 9110's methods (section 9: GET, HEAD, POST, PUT,
/// DELETE, CONNECT, OPTIONS, TRACE) and PATCH (RFC 5789) as themselves, anything else `other`.
/// Also the `method` field of the request log line, for the same reason: a method is any
/// token up to hyper's head limit (tens of kilobytes), chosen by the client.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Every metric authd exports, registered in one registry (rendered at `/metrics`).
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub logins: IntCounterVec,
    /// `authd_mfa_verifications_total{method,outcome}`: second-factor answers at
    /// `POST /api/auth/mfa/verify` (`method`: totp, recovery_code, webauthn; `outcome`:
    /// success, invalid, token_invalid, token_expired, rate_limited, locked).
    pub mfa_verifications: IntCounterVec,
    pub registrations: IntCounterVec,
    pub refreshes: IntCounterVec,
    pub reuse_detected: IntCounter,
    pub rate_limited: IntCounterVec,
    pub active_sessions: IntGauge,
    /// `authd_rate_limit_backend_errors_total`: calls to the shared rate-limit backend
    /// (Redis) that failed or timed out (not the requests counted per process meanwhile: the
    /// circuit breaker skips Redis for 5 s after a failure).
    pub rate_limit_backend_errors: IntCounter,
    /// `authd_connections_refused_total`: connections closed at once because their client
    /// already held `server.max_connections_per_ip`.
    pub connections_refused: IntCounter,
    /// `authd_accept_errors_total`: failed attempts to accept a connection (most often: no
    /// file descriptor left); the accept loop retries every 100 ms.
    pub accept_errors: IntCounter,
    /// `authd_database_connection_errors_total`: attempts to open a database connection that
    /// failed (the store reports them through `store::ConnectionEvents`).
    pub database_connection_errors: IntCounter,
    /// `authd_audit_write_failures_total`: audit events the database did not store (each is
    /// logged whole at error level instead; see `Core::audit`).
    pub audit_write_failures: IntCounter,
    /// `authd_bcrypt_in_use{pool}`: bcrypt permits held now. `pool` is `shared` (hashing, and
    /// verifying hashes at or below `password.bcrypt_cost`; one permit per core) or `costly`
    /// (verifying hashes above it, e.g. imported ones; one permit).
    pub bcrypt_in_use: IntGaugeVec,
    /// `authd_bcrypt_waiting{pool}`: bcrypt operations queued for a permit of `pool`.
    pub bcrypt_waiting: IntGaugeVec,
    /// `authd_bcrypt_operations_total{pool}`: bcrypt operations run under a permit of `pool`.
    pub bcrypt_operations: IntCounterVec,
    /// `authd_mail_outbox{status}`: mails in the outbox by status (`queued`, `sending`,
    /// `sent`, `failed`), refreshed by the mail worker every few seconds.
    pub mail_outbox: IntGaugeVec,
    /// `authd_mail_deliveries_total{outcome}`: attempts at handing a mail over, by outcome
    /// (`sent`, `retry`: a 4xx or a connection failure, `failed`: a 5xx, attempts used up, the
    /// link expired or the user gone).
    pub mail_deliveries: IntCounterVec,
    /// `authd_session_reads_total{path}`: how authenticated requests read their session.
    pub session_reads: SessionReads,
}

/// `authd_session_reads_total{path}`, one counter per path, resolved once (the read is on
/// every authenticated request): `worker` (SQLite, on the runtime's worker thread without
/// waiting), `async` (PostgreSQL, on a connection the runtime drives), `pool` (the blocking
/// pool: PostgreSQL with fewer than 4 connections, or when the first two could not answer).
pub struct SessionReads {
    pub worker: IntCounter,
    pub r#async: IntCounter,
    pub pool: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "authd_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            // route: a template of the route table or `unmatched`; method: `method_label`;
            // status: the three-digit code.
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "authd_http_request_duration_seconds",
                "HTTP request latency by route, method and status",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let logins = IntCounterVec::new(
            Opts::new("authd_logins_total", "Login attempts by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let mfa_verifications = IntCounterVec::new(
            Opts::new(
                "authd_mfa_verifications_total",
                "Second-factor verifications by method and outcome",
            ),
            &["method", "outcome"],
        )
        .expect("valid metric");
        let registrations = IntCounterVec::new(
            Opts::new("authd_registrations_total", "Registrations by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let refreshes = IntCounterVec::new(
            Opts::new(
                "authd_refreshes_total",
                "Refresh-token rotations by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let reuse_detected = IntCounter::new(
            "authd_refresh_reuse_detected_total",
            "Refresh tokens presented again after rotation (session revoked)",
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "authd_rate_limited_total",
                "Requests refused by a limit, by limit",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let active_sessions = IntGauge::new(
            "authd_active_sessions",
            "Live (unrevoked, unexpired) refresh sessions",
        )
        .expect("valid metric");
        let rate_limit_backend_errors = IntCounter::new(
            "authd_rate_limit_backend_errors_total",
            "Calls to the shared rate-limit backend (Redis) that failed or timed out; while it \
             is down, requests are counted per process and Redis is tried again every 5 s",
        )
        .expect("valid metric");
        let connections_refused = IntCounter::new(
            "authd_connections_refused_total",
            "Connections closed at once because their client already held \
             server.max_connections_per_ip",
        )
        .expect("valid metric");
        let accept_errors = IntCounter::new(
            "authd_accept_errors_total",
            "Failed attempts to accept a connection (most often: no file descriptor left)",
        )
        .expect("valid metric");
        let database_connection_errors = IntCounter::new(
            "authd_database_connection_errors_total",
            "Attempts to open a database connection that failed",
        )
        .expect("valid metric");
        let audit_write_failures = IntCounter::new(
            "authd_audit_write_failures_total",
            "Audit events the database did not store (each one is logged whole, at error \
             level, under the target authd::audit)",
        )
        .expect("valid metric");
        let bcrypt_in_use = IntGaugeVec::new(
            Opts::new(
                "authd_bcrypt_in_use",
                "bcrypt permits held now, by pool (shared: one per core; costly: one, for \
                 hashes above password.bcrypt_cost)",
            ),
            &["pool"],
        )
        .expect("valid metric");
        let bcrypt_waiting = IntGaugeVec::new(
            Opts::new(
                "authd_bcrypt_waiting",
                "bcrypt operations waiting for a permit, by pool",
            ),
            &["pool"],
        )
        .expect("valid metric");
        let bcrypt_operations = IntCounterVec::new(
            Opts::new(
                "authd_bcrypt_operations_total",
                "bcrypt hashes and verifications run, by pool",
            ),
            &["pool"],
        )
        .expect("valid metric");
        for pool in ["shared", "costly"] {
            bcrypt_in_use.with_label_values(&[pool]);
            bcrypt_waiting.with_label_values(&[pool]);
            bcrypt_operations.with_label_values(&[pool]);
        }
        let mail_outbox = IntGaugeVec::new(
            Opts::new(
                "authd_mail_outbox",
                "Mails in the outbox by status (queued, sending, sent, failed)",
            ),
            &["status"],
        )
        .expect("valid metric");
        let mail_deliveries = IntCounterVec::new(
            Opts::new(
                "authd_mail_deliveries_total",
                "Attempts at handing a mail over, by outcome (sent, retry, failed)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let session_reads_by_path = IntCounterVec::new(
            Opts::new(
                "authd_session_reads_total",
                "Session reads of authenticated requests, by path (worker: on the runtime's \
                 thread without waiting, SQLite; async: on a connection the runtime drives, \
                 PostgreSQL; pool: on the blocking pool)",
            ),
            &["path"],
        )
        .expect("valid metric");
        let session_reads = SessionReads {
            worker: session_reads_by_path.with_label_values(&["worker"]),
            r#async: session_reads_by_path.with_label_values(&["async"]),
            pool: session_reads_by_path.with_label_values(&["pool"]),
        };
        for status in ["queued", "sending", "sent", "failed"] {
            mail_outbox.with_label_values(&[status]);
        }
        for outcome in ["sent", "retry", "failed"] {
            mail_deliveries.with_label_values(&[outcome]);
        }
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(logins.clone()),
            Box::new(mfa_verifications.clone()),
            Box::new(registrations.clone()),
            Box::new(refreshes.clone()),
            Box::new(reuse_detected.clone()),
            Box::new(rate_limited.clone()),
            Box::new(active_sessions.clone()),
            Box::new(rate_limit_backend_errors.clone()),
            Box::new(connections_refused.clone()),
            Box::new(accept_errors.clone()),
            Box::new(database_connection_errors.clone()),
            Box::new(audit_write_failures.clone()),
            Box::new(bcrypt_in_use.clone()),
            Box::new(bcrypt_waiting.clone()),
            Box::new(bcrypt_operations.clone()),
            Box::new(mail_outbox.clone()),
            Box::new(mail_deliveries.clone()),
            Box::new(session_reads_by_path),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            http_requests,
            http_duration,
            logins,
            mfa_verifications,
            registrations,
            refreshes,
            reuse_detected,
            rate_limited,
            active_sessions,
            rate_limit_backend_errors,
            connections_refused,
            accept_errors,
            database_connection_errors,
            audit_write_failures,
            bcrypt_in_use,
            bcrypt_waiting,
            bcrypt_operations,
            mail_outbox,
            mail_deliveries,
            session_reads,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_closed_set() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            assert_eq!(method_label(&Method::from_bytes(m.as_bytes()).unwrap()), m);
        }
        for m in ["XM00000", "get", "PROPFIND", &"X".repeat(60_000)] {
            assert_eq!(
                method_label(&Method::from_bytes(m.as_bytes()).unwrap()),
                "other"
            );
        }
    }
}
