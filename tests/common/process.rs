//! Child processes: third-party clients run under a time limit ([`Cmd`], [`Proc`]), checks
//! that they are installed ([`have`], [`have_python`]), and the real `ponte` binary
//! ([`Ponte`], [`run_ponte`]).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Whether `bin` is on PATH; when not: panic in CI (it must be installed there), otherwise
/// print SKIP and return false.
pub fn have(bin: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    skip_unless(found, bin)
}

/// Whether `python3 -c check` succeeds (a module is importable, at the right version);
/// `what` names it in the SKIP line or the CI failure, as for [`have`].
pub fn have_python(check: &str, what: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    skip_unless(ok, &format!("python3 with {what}"))
}

fn skip_unless(found: bool, what: &str) -> bool {
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{what} is not installed, and CI must have it");
        }
        println!("SKIP: {what} not installed");
    }
    found
}

/// A command line to run as a child process, killed when it overruns its limit.
#[derive(Clone)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    limit: Duration,
}

impl Cmd {
    /// `program` with no arguments yet and a 10 s limit.
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            limit: Duration::from_secs(10),
        }
    }

    /// Add the whitespace-separated words of `line` as arguments.
    pub fn words(mut self, line: &str) -> Cmd {
        self.args.extend(line.split_whitespace().map(String::from));
        self
    }

    /// Add one argument as it is (spaces included).
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Add each of `args` as it is.
    pub fn args<A: AsRef<OsStr>>(self, args: impl IntoIterator<Item = A>) -> Cmd {
        args.into_iter().fold(self, Cmd::arg)
    }

    /// Kill the child, and fail the test, after `limit`.
    pub fn limit(mut self, limit: Duration) -> Cmd {
        self.limit = limit;
        self
    }

    /// Start it; its output is collected on reader threads.
    pub fn spawn(self) -> Proc {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program));
        let reader = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = r.read_to_end(&mut s);
                String::from_utf8_lossy(&s).into_owned()
            })
        };
        let out = reader(Box::new(child.stdout.take().unwrap()));
        let err = reader(Box::new(child.stderr.take().unwrap()));
        Proc {
            child,
            what: format!("{} {}", self.program, self.args.join(" ")),
            limit: self.limit,
            out,
            err,
        }
    }

    /// Run it to completion.
    pub async fn run(self) -> Output {
        self.spawn().finish().await
    }
}

/// A running child with its output collected on reader threads.
pub struct Proc {
    child: Child,
    what: String,
    limit: Duration,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

/// What a finished child printed.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Proc {
    /// Wait for the child to exit (killing it and failing after its limit), off the async
    /// runtime.
    pub async fn finish(self) -> Output {
        tokio::task::spawn_blocking(move || {
            let Proc {
                mut child,
                what,
                limit,
                out,
                err,
            } = self;
            let status = exit_within(&mut child, limit);
            let o = Output {
                code: status.and_then(|s| s.code()),
                stdout: out.join().unwrap(),
                stderr: err.join().unwrap(),
            };
            if status.is_none() {
                panic!(
                    "`{what}` did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                    o.stdout, o.stderr
                );
            }
            o
        })
        .await
        .unwrap()
    }
}

/// Wait up to `d` for `child` to exit; kill it and return `None` when it does not.
fn exit_within(child: &mut Child, d: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + d;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `signal` (`-TERM`, `-KILL`, `-HUP`) to process `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

// ---------------------------------------------------------------------------------------
// The real binary

/// The `ponte` binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_ponte");

/// Every listener on 127.0.0.1, each on a port the system picks.
pub const ANY_PORT: [&str; 8] = ["--host", "127.0.0.1", "-p", "0", "-a", "0", "-m", "0"];

fn ponte_command() -> Command {
    let mut c = Command::new(BIN);
    c.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// Wait for `child` to exit, bounded; kills it and panics on timeout.
pub fn wait_exit(child: &mut Child, d: Duration) -> ExitStatus {
    exit_within(child, d).unwrap_or_else(|| panic!("ponte did not exit within {d:?}"))
}

/// Run the binary to completion with `args`, bounded by `limit`.
pub fn run_ponte<A: AsRef<OsStr>>(args: &[A], limit: Duration) -> std::process::Output {
    let mut child = ponte_command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ponte");
    wait_exit(&mut child, limit);
    child.wait_with_output().expect("output")
}

/// A running `ponte` child; killed (SIGKILL) when dropped.
pub struct Ponte {
    pub child: Child,
    /// Log lines (stderr, where ponte logs), read by a thread so the pipe never fills.
    pub lines: mpsc::Receiver<String>,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    /// CoAP (UDP) address, for writes that must reach offline MQTT sessions too.
    pub coap: SocketAddr,
    /// MQTT over TLS, when configured.
    pub mqtts: Option<SocketAddr>,
}

impl Drop for Ponte {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address logged as `key=ADDR` on a `ponte listening` line (`None` when not an
/// address, e.g. `off`).
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    let prefix = format!("{key}=");
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    v.parse().ok()
}

impl Ponte {
    /// Start `ponte --host 127.0.0.1 -p 0 -a 0 -m 0 -d db` and wait for its `ponte listening`
    /// line, which gives the ports it picked.
    pub fn spawn(db: &std::path::Path) -> Ponte {
        Ponte::start(&["-d".as_ref(), db.as_os_str()])
    }

    /// `ponte --host 127.0.0.1 -p 0 -a 0 -m 0` with `args` (a store, `-c config.toml`, ...).
    pub fn start(args: &[&OsStr]) -> Ponte {
        Ponte::start_within(args, Duration::from_secs(10))
    }

    /// [`Ponte::start`], waiting up to `d` for the `ponte listening` line (a cluster node
    /// waits for NATS first).
    pub fn start_within(args: &[&OsStr], d: Duration) -> Ponte {
        let mut child = ponte_command()
            .args(ANY_PORT)
            .args(args)
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ponte");
        // Logs go to stderr (issue 12), without colour when it is not a terminal.
        let logs = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Nobody may listen any more; keep draining so the child never blocks.
            for line in BufReader::new(logs).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + d;
        let listening = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("ponte listening") => break line,
                Ok(_) => {}
                Err(e) => {
                    let _ = child.kill();
                    panic!("no `ponte listening` line within {d:?}: {e}");
                }
            }
        };
        let addr = |key| field(&listening, key).unwrap_or_else(|| panic!("{key} address"));
        Ponte {
            http: addr("http"),
            mqtt: addr("mqtt"),
            coap: addr("coap"),
            mqtts: field(&listening, "mqtts"),
            child,
            lines,
        }
    }

    /// Send `sig` (`-TERM`, `-KILL`, `-HUP`) to the child.
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Send `sig` and wait (10 s at most) for the child to exit.
    pub fn stop(mut self, sig: &str) -> ExitStatus {
        self.signal(sig);
        wait_exit(&mut self.child, Duration::from_secs(10))
    }
}
