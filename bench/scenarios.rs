//! The scenarios: what each one starts, seeds and measures, and the checks it reports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use authd::crypto::refresh;
use authd::domain::time::{duration_ms, now_ms};
use authd::domain::{AuditEvent, RotateOutcome, Rotation};
use authd::store::StoreOptions;
use serde_json::json;

use crate::child::{Memory, Server, TempDir};
use crate::fixture::{server_env, Fixture, Seeded, PASSWORD};
use crate::load::{self, Get, Login, MfaLogin, Mixed, Plan, Refresh, Stats, TotpAccount, Window};
use crate::report::{Check, Outcome, Unit};
use crate::Scenario;

/// Sizes and durations of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub smoke: bool,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// The server's `password.bcrypt_cost`, and the cost of every seeded hash.
    pub bcrypt_cost: u32,
    /// Verifications timed for the bcrypt bound (the median counts).
    pub bcrypt_samples: usize,
    pub login_connections: usize,
    pub profile_connections: usize,
    pub refresh_connections: usize,
    /// Connections of each of the two loads in `isolation`.
    pub isolation_connections: usize,
    /// Users seeded for login, profile, refresh and isolation.
    pub base_users: usize,
    /// Users in the database at each scale step; the middle one is the memory checkpoint.
    pub scale_users: [usize; 3],
    /// Connections of the soak (each one session's mixed load).
    pub soak_connections: usize,
    /// Length of the soak's measured load.
    #[serde(serialize_with = "secs")]
    pub soak_duration: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Config {
    pub fn full() -> Self {
        Config {
            smoke: false,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            bcrypt_cost: 12,
            bcrypt_samples: 10,
            login_connections: 8,
            profile_connections: 64,
            refresh_connections: 64,
            isolation_connections: 16,
            base_users: 10_000,
            scale_users: [10_000, 100_000, 1_000_000],
            soak_connections: 16,
            soak_duration: Duration::from_secs(600),
        }
    }

    pub fn smoke() -> Self {
        Config {
            smoke: true,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
            bcrypt_cost: 10,
            bcrypt_samples: 3,
            login_connections: 4,
            profile_connections: 4,
            refresh_connections: 4,
            isolation_connections: 4,
            base_users: 100,
            scale_users: [1_000, 2_000, 3_000],
            soak_connections: 4,
            soak_duration: Duration::from_millis(1500),
        }
    }
}

/// A server's CPU time and context switches per answered request over a run's window (10 ms
/// CPU ticks, so meaningful over thousands of requests).
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct PerRequest {
    cpu_us: f64,
    context_switches: f64,
}

/// One scale step's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct Step {
    users: usize,
    seed_seconds: f64,
    refresh: Stats,
    profile: Stats,
    /// The server's memory after both runs.
    memory: Memory,
}

/// Runs scenarios; keeps what they share (the bcrypt hashes, the scale step's memory).
pub struct Bench {
    pub config: Config,
    runtime: tokio::runtime::Runtime,
    hashes: HashMap<u32, String>,
    /// Users and server memory after the middle scale step, once `scale` ran.
    scale_memory: Option<(usize, Memory)>,
    /// `--database`: the PostgreSQL server each fixture makes its scratch database on
    /// (`None`: SQLite).
    database: Option<String>,
}

impl Bench {
    pub fn new(config: Config, runtime: tokio::runtime::Runtime, database: Option<String>) -> Self {
        Bench {
            config,
            runtime,
            hashes: HashMap::new(),
            scale_memory: None,
            database,
        }
    }

    /// A fixture on this run's backend.
    fn fixture(&self, tag: &str) -> anyhow::Result<Fixture> {
        Fixture::new(tag, self.config.bcrypt_cost, self.database.as_deref())
    }

    pub fn run(&mut self, scenario: Scenario) -> anyhow::Result<Outcome> {
        let result = match scenario {
            Scenario::Login => self.login(),
            Scenario::Profile => self.profile(),
            Scenario::Refresh => self.refresh(),
            Scenario::Isolation => self.isolation(),
            Scenario::Scale => self.scale(),
            Scenario::Memory => self.memory(),
            Scenario::Enumeration => self.enumeration(),
            Scenario::Mfa => self.mfa(),
            Scenario::Soak => self.soak(),
        };
        result.with_context(|| format!("scenario {}", scenario.name()))
    }

    /// The seeded users' bcrypt hash at the configured cost, computed once.
    fn password_hash(&mut self) -> anyhow::Result<String> {
        let cost = self.config.bcrypt_cost;
        if let Some(h) = self.hashes.get(&cost) {
            return Ok(h.clone());
        }
        let h =
            authd::crypto::bcrypt::hash(PASSWORD.as_bytes(), cost).map_err(anyhow::Error::msg)?;
        self.hashes.insert(cost, h.clone());
        Ok(h)
    }

    fn window(&self) -> Window {
        Window::after_warmup(self.config.warmup, self.config.duration)
    }

    /// One load run against `server`, and the server's CPU time and context switches per
    /// answer inside the window (`None` when `/proc` could not be read).
    fn load_costed(
        &self,
        server: &Server,
        plans: Vec<Box<dyn Plan>>,
    ) -> (Stats, Option<PerRequest>) {
        let window = self.window();
        let (stats, (start, end)) = self.runtime.block_on(async {
            let sample = async {
                tokio::time::sleep_until(window.start).await;
                let start = server.cost().ok();
                tokio::time::sleep_until(window.end).await;
                (start, server.cost().ok())
            };
            tokio::join!(load::run(server.addr, plans, window), sample)
        });
        let per = start.zip(end).map(|(a, b)| {
            let n = stats.requests.max(1) as f64;
            PerRequest {
                cpu_us: (b.cpu_s - a.cpu_s) * 1e6 / n,
                context_switches: (b.context_switches - a.context_switches) as f64 / n,
            }
        });
        (stats, per)
    }

    /// One load run against `addr`.
    fn load(&self, addr: SocketAddr, plans: Vec<Box<dyn Plan>>) -> Stats {
        let window = self.window();
        self.runtime.block_on(load::run(addr, plans, window))
    }

    fn login(&mut self) -> anyhow::Result<Outcome> {
        let c = self.config.clone();
        let hash = self.password_hash()?;
        let mut fx = self.fixture("login")?;
        let users = fx.seed(c.base_users, c.login_connections, &hash)?;
        // Timed before the server starts, on a quiet machine.
        let verify_s = median_verify(&hash, c.bcrypt_samples)?;
        let cores = cores();
        let bound = cores as f64 / verify_s;
        let server = fx.start()?;
        let stats = self.load(server.addr, login_plans(&users));
        server.stop();
        let ratio = stats.throughput_rps / bound;
        let detail = format!(
            "{:.2} logins/s, bound {:.2}/s ({cores} cores / {:.0} ms per verify at cost {}); \
             p50 {:.0} ms, p99 {:.0} ms; C={}",
            stats.throughput_rps,
            bound,
            verify_s * 1e3,
            c.bcrypt_cost,
            stats.p50_ms,
            stats.p99_ms,
            c.login_connections
        );
        Ok(Outcome {
            json: json!({
                "throughput_rps": stats.throughput_rps,
                "bcrypt_cost": c.bcrypt_cost,
                "cores": cores,
                "bcrypt_verify_ms": verify_s * 1e3,
                "bound_rps": bound,
                "ratio_to_bound": ratio,
                "run": stats,
            }),
            checks: vec![Check::at_least(
                "login throughput / bcrypt bound",
                ratio * 100.0,
                Unit::Percent,
                90.0,
                detail,
            )],
            errors: stats.errors,
        })
    }

    fn profile(&mut self) -> anyhow::Result<Outcome> {
        let c = self.config.clone();
        let hash = self.password_hash()?;
        let mut fx = self.fixture("profile")?;
        let sessions = fx.seed(c.base_users, c.profile_connections, &hash)?;
        let server = fx.start()?;
        let (authd, authd_cost) = self.load_costed(&server, profile_plans(&fx, &sessions));
        server.stop();
        let parts = profile_parts(&fx, &sessions)?;

        let dir = TempDir::new("bare")?;
        let bare_server = Server::bare(dir.path())?;
        let plans = (0..c.profile_connections)
            .map(|_| {
                Box::new(Get {
                    path: "/ok",
                    bearer: None,
                }) as Box<dyn Plan>
            })
            .collect();
        let (bare, bare_cost) = self.load_costed(&bare_server, plans);
        bare_server.stop();

        let ratio = authd.throughput_rps / bare.throughput_rps;
        Ok(Outcome {
            json: json!({
                "throughput_rps": authd.throughput_rps,
                "bare_throughput_rps": bare.throughput_rps,
                "ratio_to_bare": ratio,
                "in_process_parts": parts,
                "server_per_request": authd_cost,
                "bare_per_request": bare_cost,
                "run": authd,
                "bare": bare,
            }),
            checks: vec![
                Check::at_least(
                    "profile throughput / bare warp",
                    ratio * 100.0,
                    Unit::Percent,
                    40.0,
                    format!(
                        "{:.0} req/s vs bare {:.0} req/s; C={}; server per request: {}, bare {}; \
                         in-process: token check {:.0} us, session read {:.0} us, user read {:.0} us",
                        authd.throughput_rps,
                        bare.throughput_rps,
                        c.profile_connections,
                        per_request(authd_cost),
                        per_request(bare_cost),
                        parts.verify_access_token_us,
                        parts.store_session_us,
                        parts.store_user_by_id_us
                    ),
                ),
                Check::below(
                    "profile p99",
                    authd.p99_ms,
                    Unit::Ms,
                    5.0,
                    latencies(&authd),
                ),
            ],
            errors: authd.errors + bare.errors,
        })
    }

    fn refresh(&mut self) -> anyhow::Result<Outcome> {
        let c = self.config.clone();
        let hash = self.password_hash()?;
        let mut fx = self.fixture("refresh")?;
        let chains = fx.seed(c.base_users, c.refresh_connections, &hash)?;
        if fx.pg.is_some() {
            // PostgreSQL: the reference is pgbench's simple-update on the same server, which
            // bench/postgres.sh runs and compares.
            let server = fx.start()?;
            let http = self.load(server.addr, refresh_plans(&chains));
            server.stop();
            return Ok(Outcome {
                json: json!({ "throughput_rps": http.throughput_rps, "run": http }),
                checks: vec![Check::at_least(
                    "refresh rotations/s over HTTP",
                    http.throughput_rps,
                    Unit::PerSec,
                    10_000.0,
                    format!("{}; C={}", latencies(&http), c.refresh_connections),
                )],
                errors: http.errors,
            });
        }
        let raw_db = fx.dir.path().join("raw.db");
        fx.copy_db(&raw_db)?;
        let server = fx.start()?;
        let (http, http_cost) = self.load_costed(&server, refresh_plans(&chains));
        server.stop();
        let raw = raw_rotations(&fx, &raw_db, &chains, c.warmup, c.duration)?;
        let ratio = http.throughput_rps / raw.rate;
        Ok(Outcome {
            json: json!({
                "throughput_rps": http.throughput_rps,
                "raw_rotations_per_s": raw.rate,
                "raw_rotations": raw.rotations,
                "raw_seconds": raw.seconds,
                "ratio_to_raw": ratio,
                "server_per_request": http_cost,
                "run": http,
            }),
            checks: vec![
                Check::at_least(
                    "refresh rotations/s over HTTP",
                    http.throughput_rps,
                    Unit::PerSec,
                    10_000.0,
                    format!(
                        "{}; C={}; server per request: {}",
                        latencies(&http),
                        c.refresh_connections,
                        per_request(http_cost)
                    ),
                ),
                Check::at_least(
                    "refresh HTTP / raw SQLite rotation",
                    ratio * 100.0,
                    Unit::Percent,
                    80.0,
                    format!(
                        "raw Store::rotate_refresh_token: {:.0}/s on one thread",
                        raw.rate
                    ),
                ),
            ],
            errors: http.errors,
        })
    }

    fn isolation(&mut self) -> anyhow::Result<Outcome> {
        let c = self.config.clone();
        let n = c.isolation_connections;
        let hash = self.password_hash()?;
        let mut fx = self.fixture("isolation")?;
        let seeded = fx.seed(c.base_users, 2 * n, &hash)?;
        let (readers, loggers) = seeded.split_at(n);
        let server = fx.start()?;
        let unloaded = self.load(server.addr, profile_plans(&fx, readers));
        let window = self.window();
        let (loaded, logins) = self.runtime.block_on(async {
            tokio::join!(
                load::run(server.addr, profile_plans(&fx, readers), window),
                load::run(server.addr, login_plans(loggers), window),
            )
        });
        server.stop();
        let ratio = loaded.throughput_rps / unloaded.throughput_rps;
        Ok(Outcome {
            json: json!({
                "throughput_rps": loaded.throughput_rps,
                "unloaded_throughput_rps": unloaded.throughput_rps,
                "ratio_to_unloaded": ratio,
                "profile_loaded": loaded,
                "profile_unloaded": unloaded,
                "login_flood": logins,
            }),
            checks: vec![
                Check::below(
                    "profile p99 during a login flood",
                    loaded.p99_ms,
                    Unit::Ms,
                    20.0,
                    format!(
                        "unloaded p99 {:.2} ms; {:.1} logins/s alongside; C={n}+{n}",
                        unloaded.p99_ms, logins.throughput_rps
                    ),
                ),
                Check::at_least(
                    "profile throughput loaded / unloaded",
                    ratio * 100.0,
                    Unit::Percent,
                    30.0,
                    format!(
                        "{:.0} req/s vs {:.0} req/s unloaded",
                        loaded.throughput_rps, unloaded.throughput_rps
                    ),
                ),
            ],
            errors: unloaded.errors + loaded.errors + logins.errors,
        })
    }

    fn scale(&mut self) -> anyhow::Result<Outcome> {
        let c = self.config.clone();
        let hash = self.password_hash()?;
        let mut fx = self.fixture("scale")?;
        let mut steps = Vec::new();
        for &users in &c.scale_users {
            eprintln!("authd-bench:   scale step: {users} users");
            steps.push(self.scale_step(&mut fx, users, &hash)?);
        }
        self.scale_memory = Some((steps[1].users, steps[1].memory));
        let (first, last) = (&steps[0], &steps[2]);
        let refresh_ratio = last.refresh.throughput_rps / first.refresh.throughput_rps;
        let profile_ratio = last.profile.throughput_rps / first.profile.throughput_rps;
        let each = |f: fn(&Step) -> f64| {
            steps
                .iter()
                .map(|s| format!("{}: {:.0}/s", count(s.users), f(s)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let errors = steps
            .iter()
            .map(|s| s.refresh.errors + s.profile.errors)
            .sum();
        let name = |what: &str| format!("{what} {} / {}", count(last.users), count(first.users));
        Ok(Outcome {
            json: json!({
                "throughput_rps": last.refresh.throughput_rps,
                "refresh_ratio_largest_to_smallest": refresh_ratio,
                "profile_ratio_largest_to_smallest": profile_ratio,
                "steps": steps,
            }),
            checks: vec![
                Check::at_least(
                    &name("refresh throughput"),
                    refresh_ratio * 100.0,
                    Unit::Percent,
                    80.0,
                    each(|s| s.refresh.throughput_rps),
                ),
                Check::at_least(
                    &name("profile throughput"),
                    profile_ratio * 100.0,
                    Unit::Percent,
                    80.0,
                    each(|s| s.profile.throughput_rps),
                ),
            ],
            errors,
        })
    }

    /// Grows the fixture to `users`, serves it, and runs refresh then profile on users
    /// seeded in this step (each with its own session).
    fn scale_step(&self, fx: &mut Fixture, users: usize, hash: &str) -> anyhow::Result<Step> {
        let c = &self.config;
        ensure!(users > fx.users, "scale sizes must grow");
        let started = Instant::now();
        let kept = fx.seed(
            users - fx.users,
            c.refresh_connections + c.profile_connections,
            hash,
        )?;
        let seed_seconds = started.elapsed().as_secs_f64();
        eprintln!("authd-bench:   grew the database to {users} users in {seed_seconds:.1} s");
        let (chains, readers) = kept.split_at(c.refresh_connections);
        let server = fx.start()?;
        let refresh = self.load(server.addr, refresh_plans(chains));
        let profile = self.load(server.addr, profile_plans(fx, readers));
        let memory = server.memory()?;
        server.stop();
        Ok(Step {
            users,
            seed_seconds,
            refresh,
            profile,
            memory,
        })
    }

    fn memory(&mut self) -> anyhow::Result<Outcome> {
        let c = self.config.clone();
        anyhow::ensure!(
            self.database.is_none(),
            "the memory scenario runs on SQLite only (start-up creates its own database)"
        );
        // A first start on an empty directory: database, migrations and keys are created.
        let dir = TempDir::new("memory")?;
        let env = server_env(dir.path(), c.bcrypt_cost);
        let server = Server::authd(dir.path(), &env)?;
        let idle = server.memory()?;
        let first_ready = server.ready;
        server.stop();
        let server = Server::authd(dir.path(), &env)?;
        let restart_ready = server.ready;
        server.stop();
        let (users, loaded) = match self.scale_memory {
            Some(m) => m,
            None => {
                let hash = self.password_hash()?;
                let mut fx = self.fixture("memory-scale")?;
                let step = self.scale_step(&mut fx, c.scale_users[1], &hash)?;
                (step.users, step.memory)
            }
        };
        let mb = |b: u64| b as f64 / 1e6;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok(Outcome {
            json: json!({
                "idle": idle,
                "after_scale_step": { "users": users, "memory": loaded },
                "start_to_ready_ms": ms(first_ready),
                "restart_to_ready_ms": ms(restart_ready),
            }),
            checks: vec![
                Check::below(
                    "peak RSS idle after start",
                    mb(idle.peak_rss_bytes),
                    Unit::Mb,
                    20.0,
                    format!("current RSS {:.1} MB", mb(idle.rss_bytes)),
                ),
                Check::below(
                    &format!("peak RSS after {} sessions", count(users)),
                    mb(loaded.peak_rss_bytes),
                    Unit::Mb,
                    64.0,
                    format!(
                        "current RSS {:.1} MB, after the scale step's refresh and profile runs",
                        mb(loaded.rss_bytes)
                    ),
                ),
                Check::below(
                    "start to ready (first start)",
                    ms(first_ready),
                    Unit::Ms,
                    200.0,
                    "spawn to first 200 from /healthz; creates the database and keys".into(),
                ),
                Check::below(
                    "start to ready (restart)",
                    ms(restart_ready),
                    Unit::Ms,
                    200.0,
                    "spawn to first 200 from /healthz on the existing database".into(),
                ),
            ],
            errors: 0,
        })
    }
}

impl Bench {
    /// Unknown email vs wrong password, alternating on one connection at the default cost:
    /// both medians, and whether the answers are byte-identical apart from the request id.
    /// A mixed load (75 % profile, 20 % refresh, 5 % login, `load::Mixed`) at half the
    /// maximum measured just before on the same server, for `soak_duration`, cut into ten
    /// slices (minutes at the default 600 s): failed requests, the last slice's p99 against
    /// the first's, resident memory after the first slice (the warm-up) against the end, and
    /// the database's growth per write.
    fn soak(&mut self) -> anyhow::Result<Outcome> {
        const SLICES: usize = 10;
        let c = self.config.clone();
        let n = c.soak_connections;
        let hash = self.password_hash()?;
        let mut fx = self.fixture("soak")?;
        let seeded = fx.seed(c.base_users, 2 * n, &hash)?;
        let (probe, soakers) = seeded.split_at(n);
        let server = fx.start()?;
        let mixed = |sessions: &[Seeded], counts: &load::MixCounts| -> Vec<Box<dyn Plan>> {
            sessions
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Box::new(Mixed::new(
                        i * 7,
                        fx.access_token(s),
                        s.refresh_token.clone(),
                        &s.email,
                        PASSWORD,
                        counts.clone(),
                    )) as Box<dyn Plan>
                })
                .collect()
        };
        // The maximum: the same mix in a closed loop.
        let max_counts = load::MixCounts::default();
        let max = self.load(server.addr, mixed(probe, &max_counts));
        let target_rps = max.throughput_rps / 2.0;
        ensure!(target_rps > 0.0, "the mixed load got no answer");
        let pace = Duration::from_secs_f64(n as f64 / target_rps);
        let db_bytes = || -> Option<u64> {
            match &fx.pg {
                Some(pg) => pg.size_bytes(),
                None => Some(
                    ["authd.db", "authd.db-wal"]
                        .iter()
                        .filter_map(|f| std::fs::metadata(fx.dir.path().join(f)).ok())
                        .map(|m| m.len())
                        .sum(),
                ),
            }
        };
        let db_before = db_bytes();
        let counts = load::MixCounts::default();
        let window = Window::after_warmup(c.warmup, c.soak_duration);
        let slice = c.soak_duration / SLICES as u32;
        let plans = mixed(soakers, &counts);
        // Resident memory at the end of each slice, sampled while the load runs.
        let ((run, slices), memory) = self.runtime.block_on(async {
            let sample = async {
                let mut samples = Vec::with_capacity(SLICES);
                for i in 1..=SLICES as u32 {
                    tokio::time::sleep_until(window.start + slice * i).await;
                    samples.push(server.memory().ok());
                }
                samples
            };
            tokio::join!(
                load::run_paced(server.addr, plans, window, Some(pace), SLICES),
                sample
            )
        });
        let db_after = db_bytes();
        let end_memory = server.memory()?;
        server.stop();
        let done = |i: usize| counts[i].load(std::sync::atomic::Ordering::Relaxed);
        let (profiles, refreshes, logins) = (done(0), done(1), done(2));
        let (first, last) = (&slices[0], &slices[SLICES - 1]);
        let p99_ratio = last.p99_ms / first.p99_ms;
        let rss = |m: &Option<Memory>| m.map_or(f64::NAN, |m| m.rss_bytes as f64);
        let (warm_rss, final_rss) = (rss(&memory[0]), rss(&memory[SLICES - 1]));
        let rss_growth = (final_rss / warm_rss - 1.0) * 100.0;
        let growth = db_before.zip(db_after).map(|(b, a)| a as f64 - b as f64);
        let writes = refreshes + logins;
        let growth_text = match growth {
            Some(g) => format!(
                "database {:+.1} MB over {} logins and {} rotations ({:.0} bytes per write: \
                 each login adds a session, its first refresh token and an audit row, each \
                 rotation a refresh token and an audit row)",
                g / 1e6,
                logins,
                refreshes,
                g / writes.max(1) as f64
            ),
            None => "database size not measured".to_string(),
        };
        let slice_min = slice.as_secs_f64() / 60.0;
        Ok(Outcome {
            json: json!({
                "throughput_rps": run.throughput_rps,
                "max_mixed_rps": max.throughput_rps,
                "target_rps": target_rps,
                "connections": n,
                "answered": { "profile": profiles, "refresh": refreshes, "login": logins },
                "slice_s": slice.as_secs_f64(),
                "run": run,
                "max_run": max,
                "slices": slices,
                "rss_bytes_per_slice": memory.iter().map(|m| m.map(|m| m.rss_bytes)).collect::<Vec<_>>(),
                "end_memory": end_memory,
                "database_bytes": { "before": db_before, "after": db_after },
            }),
            checks: vec![
                Check::below(
                    "soak failed requests",
                    (run.errors + max.errors) as f64,
                    Unit::Count,
                    1.0,
                    format!(
                        "{:.0} req/s for {:.0} s (half of the mixed maximum {:.0} req/s; \
                         C={n}): {profiles} profile, {refreshes} refresh, {logins} login",
                        run.throughput_rps,
                        c.soak_duration.as_secs_f64(),
                        max.throughput_rps
                    ),
                ),
                Check::below(
                    "soak p99 last slice / first",
                    p99_ratio * 100.0,
                    Unit::Percent,
                    150.0,
                    format!(
                        "first {:.2} ms, last {:.2} ms (slices of {slice_min:.1} min)",
                        first.p99_ms, last.p99_ms
                    ),
                ),
                Check::below(
                    "soak RSS growth after warm-up",
                    rss_growth,
                    Unit::Percent,
                    10.0,
                    format!(
                        "{:.1} MB after the first slice, {:.1} MB at the end, peak {:.1} MB; \
                         {growth_text}",
                        warm_rss / 1e6,
                        final_rss / 1e6,
                        end_memory.peak_rss_bytes as f64 / 1e6
                    ),
                ),
            ],
            errors: run.errors + max.errors,
        })
    }

    fn enumeration(&mut self) -> anyhow::Result<Outcome> {
        let c = self.config.clone();
        let per_kind = if c.smoke { 5 } else { 60 };
        let hash = self.password_hash()?;
        let mut fx = self.fixture("enumeration")?;
        let users = fx.seed(per_kind, 1, &hash)?;
        let server = fx.start()?;
        let host = server.addr.to_string();
        let mut requests = Vec::new();
        // Two warm-up logins (the dummy hash is computed in the background at start).
        for i in 0..2 {
            requests.push(load::login_request(
                &host,
                &format!("warmup{i}@bench.invalid"),
                "x",
            ));
        }
        for i in 0..per_kind {
            let user = &users[i % users.len()];
            requests.push(load::login_request(&host, &user.email, "Wrong-password-1"));
            requests.push(load::login_request(
                &host,
                &format!("nobody{i}@bench.invalid"),
                "Wrong-password-1",
            ));
        }
        let answers = self
            .runtime
            .block_on(load::sequential(server.addr, requests))?;
        server.stop();
        let answers = &answers[2..];
        let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
        let mut bodies = std::collections::BTreeSet::new();
        let mut statuses = std::collections::BTreeSet::new();
        for (i, (status, body, took)) in answers.iter().enumerate() {
            statuses.insert(status.as_u16());
            bodies.insert(body.clone());
            let ms = took.as_secs_f64() * 1e3;
            if i % 2 == 0 {
                wrong.push(ms);
            } else {
                unknown.push(ms);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let (wrong_ms, unknown_ms) = (median(&mut wrong), median(&mut unknown));
        let gap = (unknown_ms - wrong_ms).abs() / wrong_ms * 100.0;
        let identical = bodies.len() == 1 && statuses.len() == 1;
        let (reset_json, reset_check, reset_identical) =
            self.reset_gap(&mut fx, &users, per_kind)?;
        let detail = format!(
            "medians over {per_kind} logins each at cost {}: wrong password {wrong_ms:.1} ms, \
             unknown email {unknown_ms:.1} ms; statuses {statuses:?}; identical bodies: {identical}",
            c.bcrypt_cost
        );
        Ok(Outcome {
            json: json!({
                "logins_per_kind": per_kind,
                "bcrypt_cost": c.bcrypt_cost,
                "wrong_password_median_ms": wrong_ms,
                "unknown_email_median_ms": unknown_ms,
                "gap_percent": gap,
                "statuses": statuses,
                "identical_bodies": identical,
                "reset_request": reset_json,
            }),
            checks: vec![
                Check::below(
                    "unknown email vs wrong password, median gap",
                    gap,
                    Unit::Percent,
                    10.0,
                    detail,
                ),
                reset_check,
            ],
            errors: u64::from(!identical) + u64::from(!reset_identical),
        })
    }

    /// A password+TOTP login (CONTRACT 11.1: the password answered 401 `MFA_REQUIRED`, then
    /// `mfa/verify` with a fresh code) against a password login, on one server, at the same
    /// bcrypt cost and concurrency: the rate, the latencies and the cost ratio (the time one
    /// password+TOTP login takes per connection over a password login's).
    fn mfa(&mut self) -> anyhow::Result<Outcome> {
        let c = self.config.clone();
        let n = c.login_connections;
        // Accounts per connection: a code is good once per 30-second step, so each
        // connection cycles through accounts of its own, each at most once (twice with the
        // next step's code) per step. 64 cover ~4 logins/s per connection.
        let per_connection = if c.smoke { 8 } else { 64 };
        let hash = self.password_hash()?;
        let mut fx = self.fixture("mfa")?;
        let seeded = fx.seed(c.base_users, n + n * per_connection, &hash)?;
        let (plain, with_totp) = seeded.split_at(n);
        let secrets = fx.enable_totp(with_totp)?;
        let mut accounts: Vec<TotpAccount> = with_totp
            .iter()
            .zip(secrets)
            .map(|(u, secret)| TotpAccount::new(u.email.clone(), secret))
            .collect();
        let server = fx.start()?;
        let password = self.load(server.addr, login_plans(plain));
        let plans = (0..n)
            .map(|_| {
                let mine = accounts.split_off(accounts.len() - per_connection);
                Box::new(MfaLogin::new(mine, PASSWORD)) as Box<dyn Plan>
            })
            .collect();
        let mfa = self.load(server.addr, plans);
        server.stop();
        let ratio = password.throughput_rps / mfa.throughput_rps;
        let detail = format!(
            "password+TOTP {:.2} logins/s (p50 {:.0} ms, p99 {:.0} ms) vs password {:.2} \
             logins/s (p50 {:.0} ms, p99 {:.0} ms); cost {}, C={n}, TOTP codes, \
             {per_connection} accounts per connection",
            mfa.throughput_rps,
            mfa.p50_ms,
            mfa.p99_ms,
            password.throughput_rps,
            password.p50_ms,
            password.p99_ms,
            c.bcrypt_cost,
        );
        Ok(Outcome {
            json: json!({
                "throughput_rps": mfa.throughput_rps,
                "password_throughput_rps": password.throughput_rps,
                "cost_ratio": ratio,
                "bcrypt_cost": c.bcrypt_cost,
                "second_factor": "totp",
                "accounts_per_connection": per_connection,
                "run": mfa,
                "password_run": password,
            }),
            checks: vec![Check::below(
                "password+TOTP login cost / password login",
                ratio * 100.0,
                Unit::Percent,
                125.0,
                detail,
            )],
            errors: mfa.errors + password.errors,
        })
    }

    /// The password-reset request (CONTRACT 10.2) asked, in turn, for a live account's
    /// address (its mail queued), an unknown address, and the live address again (its mail
    /// dropped by the per-address throttle), on a server with the `file` transport: the
    /// medians of the three, the largest gap to the first, and whether every answer was the
    /// same.
    fn reset_gap(
        &self,
        fx: &mut Fixture,
        users: &[Seeded],
        per_kind: usize,
    ) -> anyhow::Result<(serde_json::Value, Check, bool)> {
        let mail_dir = fx.dir.path().join("mail").display().to_string();
        for (k, v) in [
            ("AUTHD_EMAIL__TRANSPORT", "file".to_string()),
            ("AUTHD_EMAIL__FILE_DIR", mail_dir),
            ("AUTHD_EMAIL__LINK_BASE", "http://127.0.0.1".to_string()),
            (
                "AUTHD_EMAIL__FROM",
                "bench <bench@bench.invalid>".to_string(),
            ),
        ] {
            fx.env.push((k.to_string(), v));
        }
        let server = fx.start()?;
        let host = server.addr.to_string();
        let mut requests = vec![load::reset_request(&host, "warmup@bench.invalid")];
        for i in 0..per_kind {
            let known = &users[i % users.len()].email;
            requests.push(load::reset_request(&host, known));
            requests.push(load::reset_request(
                &host,
                &format!("nobody{i}@bench.invalid"),
            ));
            requests.push(load::reset_request(&host, known));
        }
        let answers = self
            .runtime
            .block_on(load::sequential(server.addr, requests))?;
        server.stop();
        let mut groups: [Vec<f64>; 3] = Default::default();
        let mut answers_seen = std::collections::BTreeSet::new();
        for (i, (status, body, took)) in answers[1..].iter().enumerate() {
            answers_seen.insert((status.as_u16(), body.clone()));
            groups[i % 3].push(took.as_secs_f64() * 1e3);
        }
        let [known, unknown, throttled] = groups.map(|mut v| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        });
        let gap = (unknown - known).abs().max((throttled - known).abs()) / known * 100.0;
        let identical = answers_seen.len() == 1;
        let detail = format!(
            "medians over {per_kind} reset requests each: known address {known:.2} ms, unknown \
             {unknown:.2} ms, throttled {throttled:.2} ms; identical answers: {identical}"
        );
        let json = json!({
            "requests_per_kind": per_kind,
            "known_median_ms": known,
            "unknown_median_ms": unknown,
            "throttled_median_ms": throttled,
            "gap_percent": gap,
            "identical_answers": identical,
        });
        let check = Check::below(
            "reset request: unknown or throttled vs known address, median gap",
            gap,
            Unit::Percent,
            3.0,
            detail,
        );
        Ok((json, check, identical))
    }
}

fn login_plans(users: &[Seeded]) -> Vec<Box<dyn Plan>> {
    users
        .iter()
        .map(|u| Box::new(Login::new(&u.email, PASSWORD)) as Box<dyn Plan>)
        .collect()
}

/// One connection per session, each with an access token of its own session.
fn profile_plans(fx: &Fixture, sessions: &[Seeded]) -> Vec<Box<dyn Plan>> {
    sessions
        .iter()
        .map(|s| {
            Box::new(Get {
                path: "/api/auth/profile",
                bearer: Some(fx.access_token(s)),
            }) as Box<dyn Plan>
        })
        .collect()
}

/// One connection per session, each rotating its own chain.
fn refresh_plans(chains: &[Seeded]) -> Vec<Box<dyn Plan>> {
    chains
        .iter()
        .map(|s| Box::new(Refresh::new(s.refresh_token.clone())) as Box<dyn Plan>)
        .collect()
}

/// Mean single-thread cost of the profile route's parts, measured in the bench process.
#[derive(Debug, serde::Serialize)]
struct Parts {
    verify_access_token_us: f64,
    store_session_us: f64,
    store_user_by_id_us: f64,
}

/// Times the work behind one `GET /api/auth/profile` (token verification, then the session
/// and user reads) in this process, on the fixture's database while no server runs: where
/// a request's time goes, apart from HTTP, middleware and the hops to the blocking pool.
fn profile_parts(fx: &Fixture, sessions: &[Seeded]) -> anyhow::Result<Parts> {
    // Each part runs this many times, or for this long, whichever comes first.
    const ITERATIONS: usize = 2_000;
    const BUDGET: Duration = Duration::from_millis(300);
    ensure!(!sessions.is_empty(), "no sessions");
    let tokens: Vec<String> = sessions.iter().map(|s| fx.access_token(s)).collect();
    let store = authd::store::open(
        &fx.settings.database.url,
        &StoreOptions {
            pool_size: fx.settings.database.pool_size,
            busy_timeout: Duration::from_secs(5),
            health: authd::store::health::DbHealth::uncounted(),
        },
    )?;
    let mean_us = |f: &mut dyn FnMut(usize) -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut done = 0;
        while done < ITERATIONS && (done == 0 || started.elapsed() < BUDGET) {
            f(done % sessions.len())?;
            done += 1;
        }
        Ok(started.elapsed().as_secs_f64() * 1e6 / done as f64)
    };
    let verify = mean_us(&mut |i| {
        ensure!(
            fx.access_token_valid(&tokens[i]),
            "a minted token does not verify"
        );
        Ok(())
    })?;
    let session = mean_us(&mut |i| {
        store
            .session(sessions[i].session_id)?
            .context("no session")?;
        Ok(())
    })?;
    let user = mean_us(&mut |i| {
        store.user_by_id(sessions[i].user_id)?.context("no user")?;
        Ok(())
    })?;
    store.close();
    Ok(Parts {
        verify_access_token_us: verify,
        store_session_us: session,
        store_user_by_id_us: user,
    })
}

fn per_request(p: Option<PerRequest>) -> String {
    p.map_or("-".into(), |p| {
        format!(
            "{:.0} us CPU, {:.2} context switches",
            p.cpu_us, p.context_switches
        )
    })
}

fn latencies(s: &Stats) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
        s.p50_ms, s.p99_ms, s.p999_ms
    )
}

/// 10000 -> "10k", 1000000 -> "1M".
fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The median time of one `bcrypt` verification of the seeded hash, in seconds (the same
/// call the server makes).
fn median_verify(hash: &str, samples: usize) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let t = Instant::now();
        let ok = authd::crypto::bcrypt::verify(PASSWORD.as_bytes(), hash);
        times.push(t.elapsed().as_secs_f64());
        ensure!(ok, "the seeded hash does not verify");
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

struct Raw {
    rotations: u64,
    seconds: f64,
    rate: f64,
}

/// `Store::rotate_refresh_token` in a loop on one thread, on a copy of the seeded database,
/// round-robin over the chains: a warm-up, then `duration` measured.
fn raw_rotations(
    fx: &Fixture,
    db: &Path,
    chains: &[Seeded],
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Raw> {
    ensure!(!chains.is_empty(), "no chains to rotate");
    let store = authd::store::open(
        &format!("sqlite://{}", db.display()),
        &StoreOptions {
            pool_size: 8,
            busy_timeout: Duration::from_secs(5),
            health: authd::store::health::DbHealth::uncounted(),
        },
    )?;
    let ttl = duration_ms(fx.settings.jwt.refresh_ttl);
    let mut tokens: Vec<String> = chains.iter().map(|s| s.refresh_token.clone()).collect();
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut rotations = 0u64;
    for i in 0..u64::MAX {
        if Instant::now() >= end {
            break;
        }
        let slot = (i % tokens.len() as u64) as usize;
        let session = chains[slot].session_id;
        let (next, replacement_hash) = fx.refresh.issue(session);
        let now = now_ms();
        // The same transaction the server runs: the rotation and its audit row.
        let outcome = store.rotate_refresh_token(
            Rotation {
                presented_session: session,
                presented_hash: refresh::hash(&tokens[slot]),
                replacement_hash,
                now,
                expires_at: now + ttl,
                reuse_grace: 0,
            },
            Box::new(move |_| AuditEvent {
                at: now,
                event: "refresh".into(),
                user_id: None,
                email: None,
                ip: Some("127.0.0.1".into()),
                user_agent: Some("authd-bench".into()),
                outcome: "success".into(),
                reason: None,
                actor: None,
            }),
        )?;
        ensure!(
            matches!(outcome, RotateOutcome::Rotated { .. }),
            "raw rotation answered {outcome:?}"
        );
        tokens[slot] = next;
        let done = Instant::now();
        if done >= start && done <= end {
            rotations += 1;
        }
    }
    store.close();
    let seconds = duration.as_secs_f64();
    Ok(Raw {
        rotations,
        seconds,
        rate: rotations as f64 / seconds,
    })
}
