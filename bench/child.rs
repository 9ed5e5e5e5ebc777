//! Child processes: authd (this binary re-executed as `__authd <authd args>`) and the bare warp
//! server (`__bare`), both on 127.0.0.1:0; their start-up, readiness, memory and shutdown.
//! Children are killed when their handle drops (also while unwinding from a panic), and exit
//! by themselves when the bench process dies (they watch their stdin pipe for EOF).

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

/// Set in a child's environment: exit when stdin reaches EOF (the bench process is gone).
const WATCH_STDIN: &str = "BENCH_CHILD_WATCH_STDIN";
/// How long a child may take to print its address and answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the child modes; `None` when `argv` asks for the bench itself.
pub fn child_main(argv: &[String]) -> Option<ExitCode> {
    let mode = argv.get(1)?.as_str();
    if !matches!(mode, "__authd" | "__bare") {
        return None;
    }
    if std::env::var_os(WATCH_STDIN).is_some() {
        std::env::remove_var(WATCH_STDIN);
        exit_on_stdin_eof();
    }
    Some(match mode {
        "__authd" => {
            let rest = argv[2..].iter().cloned();
            let cli = authd::cli::Cli::parse_from(std::iter::once("authd".to_string()).chain(rest));
            match authd::cli::run(cli) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        _ => match run_bare() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bare: error: {e:#}");
                ExitCode::from(1)
            }
        },
    })
}

/// The parent keeps our stdin open while it lives; EOF means it is gone.
fn exit_on_stdin_eof() {
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
}

/// A bare warp route answering `{"ok":true}` on every path, served by the same hyper
/// connection setup as authd (HTTP/1, keep-alive, TCP_NODELAY) without authd's middleware.
fn run_bare() -> anyhow::Result<()> {
    use warp::Filter;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("bare listening on http://{}", listener.local_addr()?);
        let route = warp::any().map(|| warp::reply::json(&serde_json::json!({ "ok": true })));
        let service = warp::service(route);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let handler = hyper::service::service_fn(move |req| {
                let mut service = service;
                async move {
                    let resp = tower_service::Service::call(&mut service, req).await;
                    Ok::<_, Infallible>(match resp {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    })
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                    .await;
            });
        }
    })
}

/// A temporary directory (mode 0700), removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let path = base.join(format!(
                "authd-bench-{tag}-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!("cannot create a temporary directory in {}", base.display())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running child server.
pub struct Server {
    child: std::process::Child,
    pub addr: SocketAddr,
    /// From spawn to the first successful `GET /healthz`.
    pub ready: Duration,
    stopped: bool,
}

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Memory {
    /// VmHWM: the peak resident set so far.
    pub peak_rss_bytes: u64,
    /// VmRSS: the resident set now.
    pub rss_bytes: u64,
}

/// What a process spent so far (`Server::cost`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Cost {
    pub cpu_s: f64,
    pub context_switches: u64,
}

impl Server {
    /// Starts authd (`serve`) in `dir` with exactly `env` as its `AUTHD_*` environment.
    pub fn authd(dir: &Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        Self::spawn(&["__authd", "serve"], dir, env)
    }

    /// Starts the bare warp server.
    pub fn bare(dir: &Path) -> anyhow::Result<Self> {
        Self::spawn(&["__bare"], dir, &[])
    }

    fn spawn(args: &[&str], dir: &Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env(WATCH_STDIN, "1");
        // Only our settings: no AUTHD_* from the caller's environment, no .env, no config/.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AUTHD_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let started = Instant::now();
        let mut child = cmd.spawn().context("spawning a child server")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready: Duration::ZERO,
            stopped: false,
        };
        let (tx, rx) = mpsc::channel();
        // Reads the address, then keeps draining stdout until the child exits.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let deadline = started + START_TIMEOUT;
        server.addr = loop {
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(addr) => break addr,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "the child server exited before listening ({})",
                        server.status()
                    )
                }
            }
            if Instant::now() > deadline {
                bail!("the child server did not listen within {START_TIMEOUT:?}");
            }
        };
        while !healthz_ok(server.addr) {
            if Instant::now() > deadline {
                bail!("the child server did not answer /healthz within {START_TIMEOUT:?}");
            }
            if server.child.try_wait()?.is_some() {
                bail!("the child server exited ({})", server.status());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        server.ready = started.elapsed();
        Ok(server)
    }

    fn status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => "still running".into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmHWM and VmRSS from `/proc/<pid>/status`.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{path} has no {name}"))?;
            let kb: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("parsing {line:?}"))?;
            Ok(kb * 1024)
        };
        Ok(Memory {
            peak_rss_bytes: field("VmHWM:")?,
            rss_bytes: field("VmRSS:")?,
        })
    }

    /// The CPU time (user + system, from `/proc/<pid>/stat`, in USER_HZ ticks of 10 ms) and
    /// the context switches (voluntary and not, summed over `/proc/<pid>/task/*/status`) the
    /// process has spent so far. Threads that already exited are not in the sum.
    pub fn cost(&self) -> anyhow::Result<Cost> {
        let pid = self.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command's closing parenthesis; utime and stime are the 14th and
        // 15th of the whole line.
        let rest = stat.rsplit_once(')').context("malformed stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
            + fields.get(12).context("no stime")?.parse::<u64>()?;
        let mut switches = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
                continue; // the thread exited meanwhile
            };
            switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(Cost {
            cpu_s: ticks as f64 / 100.0,
            context_switches: switches,
        })
    }

    /// SIGTERM (authd then finishes in-flight requests and closes the database cleanly),
    /// waiting a few seconds before SIGKILL.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let termed = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in a "... listening on http://127.0.0.1:PORT ..." line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on http://")?;
    rest.split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
}

/// One `GET /healthz` on a fresh connection; true on a 200.
pub fn healthz_ok(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(&head == b"HTTP/1.1 200")
    };
    attempt().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_the_listening_line() {
        let line = "2025-01-01T00:00:00Z  INFO authd::cli::serve: authd listening on \
                    http://127.0.0.1:41234 addr=127.0.0.1:41234";
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(listening_addr("nothing here"), None);
    }
}
