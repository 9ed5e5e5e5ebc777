//! HTTP layer: the per-IP request budget on `/api/auth/*` (`rate_limit.max_requests` per
//! `rate_limit.window`), counted in this process or shared between instances through Redis.
//!
//! Both backends run the same GCRA (generic cell rate algorithm): a budget of `max_requests`
//! requests that refills by one every `window / max_requests`. The local one is governor's
//! keyed limiter; the Redis one is a Lua script that runs atomically in one round trip and
//! reads the time from the Redis server (`TIME`), so instances with skewed clocks agree.
//! While Redis is unreachable every request is counted locally instead, and a circuit
//! breaker keeps a dead Redis out of the request path for `BREAKER_OPEN`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use prometheus::IntCounter;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::config::{redact_url, RateLimitSettings};

/// How long one call to Redis may take before the request is counted locally instead.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(100);

/// How long Redis is left alone after a failed call; then one request probes it again.
pub const BREAKER_OPEN: Duration = Duration::from_secs(5);

/// Prefix of every Redis key: `authd:rl:<ip>` holds one client's GCRA state.
pub const KEY_PREFIX: &str = "authd:rl:";

/// The GCRA step in Redis. KEYS[1]: the client's key. ARGV[1]: the emission interval `t`
/// (microseconds per request), ARGV[2]: the burst tolerance `tau = t * (max_requests - 1)`
/// (governor's parameters for the same quota, so both allow the same requests).
/// The key holds the theoretical arrival time (TAT, microseconds since the epoch of the
/// Redis clock) and expires when the TAT passes, i.e. when the budget is full again.
/// Answers `{1, 0}` (allowed) or `{0, wait}` (refused; `wait` microseconds until the next
/// request fits). Numbers stay below 2^53, exact in Lua's doubles.
const GCRA_LUA: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local earliest = tat - tau
if now < earliest then
  return {0, earliest - now}
end
local new_tat = tat + t
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, 0}
";

/// A refused request: how long until the client's next request fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub retry_after: Duration,
}

/// The per-IP request budget. `spend` takes the client's rate-limit key as an address
/// (the caller decides what one client is, e.g. an IPv6 network masked to its prefix).
pub enum RequestBudget {
    /// `rate_limit.enabled = false`: nothing is counted.
    Off,
    /// Counted in this process.
    Local(LocalBudget),
    /// Shared through Redis, with a per-process fallback.
    Redis(Box<RedisBudget>),
}

impl RequestBudget {
    /// The budget `settings` describe. With `redis_url` set, the Redis connection is made on
    /// first use (`probe` at start, or the first request).
    pub fn new(settings: &RateLimitSettings, backend_errors: IntCounter) -> Self {
        if !settings.enabled {
            return RequestBudget::Off;
        }
        let local = LocalBudget::new(settings);
        let Some(url) = &settings.redis_url else {
            return RequestBudget::Local(local);
        };
        match RedisBudget::new(url, settings, local.clone(), backend_errors) {
            Ok(redis) => {
                tracing::info!(
                    redis = %redact_url(url),
                    "the per-IP request budget is shared through Redis"
                );
                RequestBudget::Redis(Box::new(redis))
            }
            Err(e) => {
                // Unreachable in practice: config validation parsed the URL already.
                tracing::warn!(
                    redis = %redact_url(url),
                    error = %e,
                    "rate_limit.redis_url unusable; counting the request budget per process"
                );
                RequestBudget::Local(local)
            }
        }
    }

    /// Spends one request of `key`'s budget; `Denied` when none is left. Never fails
    /// because of Redis: a Redis problem means this request is counted locally.
    pub async fn spend(&self, key: IpAddr) -> Result<(), Denied> {
        match self {
            RequestBudget::Off => Ok(()),
            RequestBudget::Local(local) => local.spend(key),
            RequestBudget::Redis(redis) => redis.spend(key).await,
        }
    }

    /// Checks that Redis answers and loads the script (at start, so a wrong URL shows in the
    /// log at once); a failure is handled like a failed request: warning, counter, breaker.
    pub async fn probe(&self) {
        if let RequestBudget::Redis(redis) = self {
            redis.probe().await;
        }
    }

    /// Forgets idle per-process budgets (called by the background cleanup). Redis keys
    /// expire by themselves.
    pub fn prune(&self) {
        match self {
            RequestBudget::Off => {}
            RequestBudget::Local(local) => local.prune(),
            RequestBudget::Redis(redis) => redis.fallback.prune(),
        }
    }
}

/// governor's keyed GCRA limiter: burst `max_requests`, one more every
/// `window / max_requests`.
#[derive(Clone)]
pub struct LocalBudget(Arc<DefaultKeyedRateLimiter<IpAddr>>);

impl LocalBudget {
    fn new(settings: &RateLimitSettings) -> Self {
        let max = NonZeroU32::new(settings.max_requests).unwrap_or(NonZeroU32::MIN);
        let period = settings.window / max.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("non-zero period")
            .allow_burst(max);
        LocalBudget(Arc::new(RateLimiter::keyed(quota)))
    }

    fn spend(&self, key: IpAddr) -> Result<(), Denied> {
        self.0.check_key(&key).map_err(|not_until| Denied {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }

    fn prune(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }
}

/// The budget in Redis (`GCRA_LUA`), one round trip per request, with the local budget as
/// the fallback while Redis is unreachable.
pub struct RedisBudget {
    client: redis::Client,
    /// The multiplexed connection every request shares, once made; dropped after a failure
    /// so that the next attempt connects afresh.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Held while connecting, so that concurrent requests wait for one connection attempt
    /// instead of each opening their own.
    connecting: tokio::sync::Mutex<()>,
    script: redis::Script,
    /// Emission interval `t` and burst tolerance `tau`, in microseconds.
    t_us: u64,
    tau_us: u64,
    fallback: LocalBudget,
    breaker: Breaker,
    backend_errors: IntCounter,
    /// The URL without its password, for logs.
    redacted_url: String,
}

impl RedisBudget {
    fn new(
        url: &str,
        settings: &RateLimitSettings,
        fallback: LocalBudget,
        backend_errors: IntCounter,
    ) -> redis::RedisResult<Self> {
        let max = u64::from(settings.max_requests.max(1));
        let t_us = (settings.window.as_micros() / u128::from(max)).max(1) as u64;
        Ok(RedisBudget {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            script: redis::Script::new(GCRA_LUA),
            t_us,
            tau_us: t_us.saturating_mul(max - 1),
            fallback,
            breaker: Breaker::new(),
            backend_errors,
            redacted_url: redact_url(url),
        })
    }

    /// The shared connection, connecting first when there is none.
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.conn.lock().clone() {
            return Ok(conn);
        }
        let _one_attempt = self.connecting.lock().await;
        if let Some(conn) = self.conn.lock().clone() {
            return Ok(conn);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.conn.lock() = Some(conn.clone());
        Ok(conn)
    }

    /// The GCRA step for `key`: `(allowed, wait in microseconds)`.
    async fn run_script(&self, key: IpAddr) -> redis::RedisResult<(i64, i64)> {
        let mut conn = self.connection().await?;
        let mut call = self.script.key(format!("{KEY_PREFIX}{key}"));
        call.arg(self.t_us).arg(self.tau_us);
        // EVALSHA, and EVAL + retry once when Redis does not know the script yet (a restart).
        call.invoke_async(&mut conn).await
    }

    async fn spend(&self, key: IpAddr) -> Result<(), Denied> {
        if !self.breaker.allows_call() {
            return self.fallback.spend(key);
        }
        match tokio::time::timeout(CALL_TIMEOUT, self.run_script(key)).await {
            Ok(Ok((allowed, wait_us))) => {
                self.succeeded();
                if allowed == 1 {
                    Ok(())
                } else {
                    Err(Denied {
                        retry_after: Duration::from_micros(wait_us.max(0) as u64),
                    })
                }
            }
            Ok(Err(e)) => {
                self.failed(&e);
                self.fallback.spend(key)
            }
            Err(_) => {
                self.failed(&format_args!("no answer within {CALL_TIMEOUT:?}"));
                self.fallback.spend(key)
            }
        }
    }

    /// Connects and loads the script, so the first request costs one round trip.
    async fn probe(&self) {
        let load = async {
            let mut conn = self.connection().await?;
            self.script.load_async(&mut conn).await
        };
        match tokio::time::timeout(CALL_TIMEOUT, load).await {
            Ok(Ok(_)) => self.succeeded(),
            Ok(Err(e)) => self.failed(&e),
            Err(_) => self.failed(&format_args!("no answer within {CALL_TIMEOUT:?}")),
        }
    }

    fn succeeded(&self) {
        if self.breaker.close() {
            tracing::info!(
                redis = %self.redacted_url,
                "Redis answers again; the per-IP request budget is shared again"
            );
        }
    }

    /// Counts the error, opens the breaker and warns once per opening (not per request).
    fn failed(&self, error: &dyn std::fmt::Display) {
        self.backend_errors.inc();
        *self.conn.lock() = None;
        if self.breaker.open() {
            tracing::warn!(
                redis = %self.redacted_url,
                error = %error,
                retry_in = ?BREAKER_OPEN,
                "Redis unreachable; counting the per-IP request budget per process"
            );
        }
    }
}

/// A circuit breaker: closed (Redis is called), or open until a deadline (Redis is skipped);
/// after the deadline one request at a time probes Redis and closes or reopens it.
struct Breaker {
    base: Instant,
    /// Milliseconds since `base` until which the breaker is open; 0 when closed.
    open_until: AtomicU64,
}

impl Breaker {
    fn new() -> Self {
        Breaker {
            base: Instant::now(),
            open_until: AtomicU64::new(0),
        }
    }

    /// Never 0 (which means closed).
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn allows_call(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        // The compare-exchange lets one request probe Redis when the deadline passes;
        // concurrent requests see the new deadline and count locally until it answers.
        self.open_until
            .compare_exchange(
                until,
                now + BREAKER_OPEN.as_millis() as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Opens (or keeps open) the breaker; true when it was closed, i.e. a new outage.
    fn open(&self) -> bool {
        let until = self.now_ms() + BREAKER_OPEN.as_millis() as u64;
        self.open_until.swap(until, Ordering::AcqRel) == 0
    }

    /// Closes the breaker; true when it was open, i.e. an outage ended.
    fn close(&self) -> bool {
        self.open_until.swap(0, Ordering::AcqRel) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_skips_redis_while_open_and_lets_one_probe_through() {
        let b = Breaker::new();
        assert!(b.allows_call());
        assert!(b.open(), "first failure opens it");
        assert!(!b.open(), "a second failure is the same outage");
        assert!(!b.allows_call());
        // Pretend the deadline passed: exactly one caller gets to probe.
        b.open_until.store(1, Ordering::Release);
        assert!(b.allows_call());
        assert!(!b.allows_call());
        assert!(b.close(), "a successful probe ends the outage");
        assert!(!b.close());
        assert!(b.allows_call());
    }

    #[test]
    fn local_budget_allows_the_burst_then_refuses_with_a_wait() {
        let settings = crate::config::load(&crate::config::Sources {
            base_dir: "/nonexistent".into(),
            env_vars: vec![
                ("AUTHD_RATE_LIMIT__WINDOW".into(), "60s".into()),
                ("AUTHD_RATE_LIMIT__MAX_REQUESTS".into(), "3".into()),
            ],
            ..Default::default()
        })
        .unwrap()
        .rate_limit;
        let b = LocalBudget::new(&settings);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(b.spend(ip).is_ok());
        }
        let denied = b.spend(ip).unwrap_err();
        assert!(
            denied.retry_after > Duration::ZERO && denied.retry_after <= Duration::from_secs(20)
        );
        assert!(b.spend("192.0.2.2".parse().unwrap()).is_ok());
    }
}
