//! Tests of the real `ponte` binary run as a child process: durability across `kill -9`,
//! graceful SIGTERM, start-up errors, `--version`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{within, Client, WAIT};
use rumqttc::{AsyncClient, Event, Packet, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_ponte");

/// A running `ponte` child; killed (SIGKILL) when dropped.
struct Ponte {
    child: Child,
    /// stdout lines, read by a thread so the pipe never fills.
    lines: mpsc::Receiver<String>,
    http: SocketAddr,
    mqtt: SocketAddr,
}

impl Drop for Ponte {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command() -> Command {
    let mut c = Command::new(BIN);
    c.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// Remove ANSI escape sequences, in case colours are on anyway.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the final byte of the CSI sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address logged as `key=ADDR` on a `ponte listening` line.
fn field(line: &str, key: &str) -> SocketAddr {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("bad {key} address in {line:?}: {e}"))
}

/// Start `ponte --host 127.0.0.1 -p 0 -a 0 -m 0 -d db` and wait for its `ponte listening`
/// line, which gives the ports it picked.
fn spawn(db: &Path) -> Ponte {
    let mut child = command()
        .args(["--host", "127.0.0.1", "-p", "0", "-a", "0", "-m", "0", "-d"])
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ponte");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(strip_ansi(&line)).is_err() {
                // Nobody listens any more; keep draining so the child never blocks.
                continue;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("ponte listening") => break line,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("no `ponte listening` line within 10 s: {e}");
            }
        }
    };
    Ponte {
        http: field(&listening, "http"),
        mqtt: field(&listening, "mqtt"),
        child,
        lines,
    }
}

/// Wait for the child to exit, bounded; kills it and panics on timeout.
fn wait_exit(child: &mut Child, d: Duration) -> ExitStatus {
    let deadline = Instant::now() + d;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("ponte did not exit within {d:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run the binary to completion with `args`, bounded.
fn run(args: &[&str]) -> Output {
    let mut child = command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ponte");
    wait_exit(&mut child, Duration::from_secs(10));
    child.wait_with_output().expect("output")
}

#[tokio::test]
async fn retained_qos1_publish_acknowledged_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");

    let mut ponte = spawn(&db);
    let (client, mut eventloop) = AsyncClient::new(common::options(ponte.mqtt, "durable-pub"), 16);
    client
        .publish("durable/t", QoS::AtLeastOnce, true, b"survives".to_vec())
        .await
        .unwrap();
    within(WAIT, "PUBACK", async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("connection error before PUBACK: {e:?}"),
            }
        }
    })
    .await;
    // PUBACK means durable: SIGKILL right now, no chance to flush.
    ponte.child.kill().unwrap();
    let status = wait_exit(&mut ponte.child, Duration::from_secs(5));
    assert!(!status.success(), "killed, not exited: {status:?}");
    drop(eventloop);
    drop(ponte);

    let ponte = spawn(&db);
    // Over MQTT: the retained value is sent on subscribe.
    let (mut sub, _) = Client::connect(ponte.mqtt, "durable-sub").await;
    sub.subscribe("durable/t", QoS::AtLeastOnce).await;
    let p = sub.publish_rx().await;
    assert_eq!(p.payload, Bytes::from_static(b"survives"));
    assert!(p.retain);

    // Over HTTP, the same value at /resources/durable/t.
    let url = format!("http://{}/resources/durable/t", ponte.http);
    let resp = within(WAIT, "HTTP GET", reqwest::get(&url))
        .await
        .expect("HTTP GET answered");
    assert_eq!(resp.status(), 200, "GET {url}");
    let body = within(WAIT, "HTTP body", resp.bytes()).await.unwrap();
    assert_eq!(&body[..], b"survives");
}

#[test]
fn sigterm_stops_gracefully_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut ponte = spawn(&dir.path().join("db"));
    let term = Command::new("kill")
        .args(["-TERM", &ponte.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    let status = wait_exit(&mut ponte.child, Duration::from_secs(10));
    assert!(status.success(), "SIGTERM → exit 0, got {status:?}");
    // It went through the orderly shutdown path.
    // The reader thread sees EOF once the child is gone; collect what it still had.
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(line) = ponte
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l.contains("ponte stopped")),
        "no `ponte stopped` log line: {rest:?}"
    );
}

#[test]
fn port_in_use_exits_non_zero_naming_the_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = run(&[
        "--host",
        "127.0.0.1",
        "--memory",
        "-p",
        "0",
        "-a",
        "0",
        "-m",
        &port.to_string(),
    ]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    assert!(
        lines[0].contains(&format!("cannot listen for MQTT on 127.0.0.1:{port}")),
        "{stderr:?}"
    );
    drop(taken);
}

#[test]
fn unknown_config_key_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ponte.toml");
    std::fs::write(&file, "[mqtt]\nport = 0\nmax_packet_sise = 10\n").unwrap();
    let out = run(&["-c", file.to_str().unwrap(), "--memory"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_packet_sise"),
        "the key is named: {stderr:?}"
    );
    assert!(
        stderr.contains("ponte.toml"),
        "the file is named: {stderr:?}"
    );
}

#[test]
fn version_flag_prints_the_version() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("ponte {}", env!("CARGO_PKG_VERSION"))
    );
}
