#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! The `ponte` binary as an operator meets it (issue 12): configuration from flags,
//! environment and file, `ponte config`, `--help`, the logs, and the errors a new user hit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ponte");

/// `ponte ARGS` with a clean `PONTE_*` environment plus `env`, to completion.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PONTE_")) {
        cmd.env_remove(k);
    }
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ponte {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A running gateway whose start line was read; killed when dropped.
struct Running {
    child: Child,
    /// The start line.
    line: String,
    /// The rest of stderr, read by a thread.
    rest: std::sync::mpsc::Receiver<String>,
    /// What came before the start line.
    before: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// The address after `key=` in the start line.
    fn addr(&self, key: &str) -> SocketAddr {
        let at = self
            .line
            .find(&format!(" {key}="))
            .unwrap_or_else(|| panic!("no {key} in {}", self.line));
        let rest = &self.line[at + key.len() + 2..];
        rest.split([' ', '/']).next().unwrap().parse().unwrap()
    }

    /// Wait for a log line containing `needle`.
    fn log_line(&self, needle: &str) -> String {
        if let Some(l) = self.before.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self
            .rest
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no log line with {needle:?}");
    }
}

/// Start `ponte ARGS` (plus free ports, memory store unless told) and wait for its start line.
fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PONTE_")) {
        cmd.env_remove(k);
    }
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut before = Vec::new();
    let line = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("ponte listening") => break l,
            Some(Ok(l)) => before.push(l),
            _ => panic!("ponte {args:?} exited before listening"),
        }
    };
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        line,
        rest: rx,
        before,
    }
}

const FREE: [&str; 7] = ["--memory", "-p", "0", "-a", "0", "-m", "0"];

/// Every port 0 on 127.0.0.1, then `more` (a store of the test's own).
fn on_any_port<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["-p", "0", "-a", "0", "-m", "0", "--host", "127.0.0.1"];
    v.extend_from_slice(more);
    v
}

fn with_free<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = FREE.to_vec();
    v.extend_from_slice(more);
    v
}

// ---------------------------------------------------------------------------------------
// Configuration: flags > environment > file > defaults

#[test]
fn precedence_is_flags_then_environment_then_file_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ponte.toml");
    std::fs::write(
        &file,
        "[http]\nport = 1111\nsse_queue = 7\n[mqtt]\nport = 2222\nmax_inflight = 9\n[coap]\nport = 3333\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = run(
        &["-c", f, "-p", "4444", "config"],
        &[
            ("PONTE_HTTP_PORT", "5555"),
            ("PONTE_MQTT_PORT", "6666"),
            ("PONTE_MQTT_MAX_INFLIGHT", "64"),
            ("PONTE_HOST", "127.0.0.1"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let c = ponte::config::Config::from_toml(&stdout(&out)).unwrap();
    assert_eq!(c.http.port, 4444, "the flag wins over the environment");
    assert_eq!(c.mqtt.port, 6666, "the environment wins over the file");
    assert_eq!(c.mqtt.max_inflight, 64);
    assert_eq!(c.http.sse_queue, 7, "the file wins over the defaults");
    assert_eq!(c.coap.port, 3333);
    assert_eq!(c.mqtt.max_queued, 10_000, "defaults fill the rest");
    assert_eq!(c.host.to_string(), "127.0.0.1");
}

#[test]
fn a_bad_environment_variable_is_named_and_exits_2() {
    for (var, value) in [
        ("PONTE_HTTP_PORT", "eighty"),
        ("PONTE_MQTT_OVERFLOW", "sometimes"),
        ("PONTE_MQTT_MAX_INFLIGT", "3"),
    ] {
        let out = run(&FREE, &[(var, value)]);
        assert_eq!(out.status.code(), Some(2), "{var}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(e.contains(var) && e.lines().count() == 1, "{var}: {e}");
    }
}

#[test]
fn environment_configures_a_running_gateway() {
    let g = start(
        &["--memory"],
        &[
            ("PONTE_HTTP_PORT", "0"),
            ("PONTE_COAP_PORT", "0"),
            ("PONTE_MQTT_PORT", "0"),
            ("PONTE_HOST", "127.0.0.1"),
            ("PONTE_BIN", "ignored"),
            ("NO_COLOR", "1"),
        ],
    );
    let http = g.addr("http");
    assert_eq!(http.ip().to_string(), "127.0.0.1");
    assert_ne!(http.port(), 3000);
    let w = g.log_line("PONTE_BIN");
    assert!(
        w.contains("WARN") && w.contains("names no configuration key"),
        "{w}"
    );
}

#[test]
fn ponte_config_prints_every_key_commented_and_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["--mqtt-port", "1999", "--memory", "config"],
        &[("PONTE_HTTP_CORS_ORIGINS", "*")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let c = ponte::config::Config::from_toml(&text).unwrap();
    assert_eq!(c.mqtt.port, 1999);
    assert_eq!(c.http.cors_origins, ["*"]);
    assert!(c.store.memory);
    for section in [
        "[http]", "[coap]", "[mqtt]", "[store]", "[auth]", "[limits]", "[tls]",
    ] {
        assert!(text.contains(&format!("\n{section}\n")), "{section}");
    }
    // Every key line is preceded by a comment, and unset keys are commented out.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let is_key = !l.starts_with('#') && l.contains(" = ");
        if is_key {
            assert!(lines[i - 1].starts_with('#'), "{l} has no comment above it");
        }
    }
    assert!(
        text.contains("\n# tls_port = <integer>  # PONTE_HTTP_TLS_PORT\n"),
        "http.tls_port is unset"
    );
    // Written to a file, it starts the gateway as the same configuration.
    let file = dir.path().join("ponte.toml");
    std::fs::write(&file, &text).unwrap();
    let again = run(&["-c", file.to_str().unwrap(), "config"], &[]);
    assert_eq!(
        stdout(&again),
        text,
        "ponte config of its own output is the same"
    );
}

#[test]
fn ponte_config_keeps_bridges_and_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.toml");
    std::fs::write(
        &file,
        "[store]\nmemory = true\n\n\
         [[bridge]]\nname = \"cloud\"\nurl = \"mqtts://broker.example:8883\"\nprotocol = 5\n\
         [[bridge.topic]]\npattern = \"sensors/#\"\ndirection = \"out\"\nqos = 1\nremote_prefix = \"edge-1/\"\n\n\
         [[webhook]]\nname = \"audit\"\nurl = \"https://hooks.example/ponte\"\nfilter = \"kitchen/#\"\n\
         events = [\"put\", \"publish\"]\n",
    )
    .unwrap();
    let out = run(&["-c", file.to_str().unwrap(), "config"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for table in ["[[bridge]]", "[[bridge.topic]]", "[[webhook]]"] {
        assert!(text.contains(table), "{table} in\n{text}");
    }
    let printed = ponte::config::Config::from_toml(&text).unwrap();
    let original =
        ponte::config::Config::from_toml(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(printed.bridge, original.bridge);
    assert_eq!(printed.webhook, original.webhook);
    // And printing the printed file gives the same text again.
    let again_file = dir.path().join("out.toml");
    std::fs::write(&again_file, &text).unwrap();
    let again = run(&["-c", again_file.to_str().unwrap(), "config"], &[]);
    assert_eq!(stdout(&again), text);
}

// ---------------------------------------------------------------------------------------
// --help, logs

#[test]
fn help_shows_defaults_the_environment_rust_log_and_examples() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let h = stdout(&out);
    for needle in [
        "default 3000",
        "default 5683",
        "default 1883",
        "default ./ponte-data",
        "default 8883",
        "RUST_LOG",
        "PONTE_<SECTION>_<KEY>",
        "Examples:",
        "--log-format",
        "ponte config",
    ] {
        assert!(h.contains(needle), "--help lacks {needle:?}:\n{h}");
    }
}

#[test]
fn logs_are_plain_on_a_pipe_json_on_request_and_on_stderr() {
    let g = start(&with_free(&["--host", "127.0.0.1"]), &[]);
    assert!(
        !g.line.contains('\u{1b}'),
        "no ANSI escapes on a pipe: {:?}",
        g.line
    );
    assert!(g.line.contains("INFO") && g.line.contains("ponte listening"));
    for needle in [
        "values_loaded=0",
        "anonymous=on",
        "users=none",
        "acl_rules=none",
        "mqtts=off (no certificate)",
        "coaps=off (no PSK file)",
    ] {
        assert!(
            g.line.contains(needle),
            "start line lacks {needle}: {}",
            g.line
        );
    }
    drop(g);
    let g = start(
        &with_free(&["--host", "127.0.0.1", "--log-format", "json"]),
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&g.line).expect("one JSON object per line");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["message"], "ponte listening");
    assert_eq!(v["fields"]["anonymous"], "on");
}

#[test]
fn verbose_is_debug_for_ponte_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    let g = start(&on_any_port(&["-v", "-d", db]), &[]);
    let seen = g.before.join("\n");
    drop(g);
    assert!(
        seen.lines()
            .all(|l| !l.contains("DEBUG sled") && !l.contains("TRACE sled")),
        "sled's debug lines are not shown with -v:\n{seen}"
    );
    let filter = {
        use clap::Parser;
        ponte::cli::Cli::parse_from(["ponte", "-v"]).log_filter()
    };
    assert_eq!(filter, "info,ponte=debug,ponte_mqtt=debug,ponte_coap=debug");
}

#[test]
fn refused_logins_are_logged_at_info_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let out = run(
        &[
            "passwd",
            "--password",
            "right-one",
            passwd.to_str().unwrap(),
            "alice",
        ],
        &[],
    );
    assert!(out.status.success());
    let g = start(
        &with_free(&[
            "--host",
            "127.0.0.1",
            "--password-file",
            passwd.to_str().unwrap(),
        ]),
        &[("NO_COLOR", "1")],
    );
    // MQTT 3.1.1 CONNECT with a wrong password.
    let mqtt = g.addr("mqtt");
    let mut s = std::net::TcpStream::connect(mqtt).unwrap();
    let mut body = Vec::new();
    let put = |b: &mut Vec<u8>, x: &[u8]| {
        b.extend_from_slice(&(x.len() as u16).to_be_bytes());
        b.extend_from_slice(x);
    };
    put(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0xC2, 0, 30]);
    put(&mut body, b"sensor-7");
    put(&mut body, b"alice");
    put(&mut body, b"wrong-secret");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    let line = g.log_line("login refused");
    assert!(line.contains("INFO"), "{line}");
    for needle in ["protocol=mqtt", "sensor-7", "alice", &mqtt.ip().to_string()] {
        assert!(line.contains(needle), "{needle} missing: {line}");
    }
    assert!(
        !line.contains("wrong-secret"),
        "the password is never logged: {line}"
    );
    // HTTP Basic with a wrong password.
    let http = g.addr("http");
    let mut s = std::net::TcpStream::connect(http).unwrap();
    // alice:bad-pass
    s.write_all(b"GET /resources/x HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6YmFkLXBhc3M=\r\nConnection: close\r\n\r\n")
        .unwrap();
    let line = g.log_line("protocol=http");
    assert!(
        line.contains("INFO") && line.contains("login refused") && line.contains("alice"),
        "{line}"
    );
    assert!(!line.contains("bad-pass"), "{line}");
}

// ---------------------------------------------------------------------------------------
// Rough edges a new user hit

#[test]
fn a_database_in_use_says_another_ponte_is_using_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data");
    let d = db.to_str().unwrap();
    let _first = start(&on_any_port(&["-d", d]), &[]);
    let out = run(&on_any_port(&["-d", d]), &[]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains(&format!("another ponte is using {d}")), "{e}");
    assert!(
        !e.contains("WouldBlock") && !e.contains("Os {"),
        "no debug dump: {e}"
    );
}

#[test]
fn memory_and_db_together_are_refused() {
    let out = run(&["--memory", "--db", "x"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--db"), "{}", stderr(&out));
    let out = run(&["--db", "x", "config"], &[("PONTE_STORE_MEMORY", "true")]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("PONTE_STORE_MEMORY") && e.contains("--db"),
        "{e}"
    );
}

#[test]
fn tls_ports_without_a_certificate_exit_2_with_one_line() {
    for (flag, says) in [
        ("--mqtts-port", "--mqtts-port"),
        ("--https-port", "--https-port"),
    ] {
        let out = run(&with_free(&[flag, "0"]), &[]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let e = stderr(&out);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(says) && e.contains("--cert"), "{e}");
    }
    let out = run(&with_free(&["--cert", "server.pem"]), &[]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("--cert") && e.contains("--key"),
        "flags, not config keys: {e}"
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.path().join("a.pem");
    let key = dir.path().join("b.key");
    std::fs::write(&cert, a.cert.pem()).unwrap();
    std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
    let out = run(
        &with_free(&[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("the key does not belong to the certificate"),
        "{e}"
    );
    assert!(!e.contains("KeyMismatch"), "{e}");
}

#[test]
fn password_and_acl_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("users.passwd");
    let acl = dir.path().join("rules.acl");
    std::fs::write(&passwd, "alice\n").unwrap();
    std::fs::write(&acl, "frobnicate all/#\n").unwrap();
    let out = run(
        &with_free(&["--password-file", passwd.to_str().unwrap()]),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains(passwd.to_str().unwrap()) && e.contains("line 1"),
        "{e}"
    );
    let out = run(&with_free(&["--acl-file", acl.to_str().unwrap()]), &[]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains(acl.to_str().unwrap()) && e.contains("line 1"),
        "{e}"
    );
}

#[test]
fn passwd_reads_the_password_from_a_pipe_and_says_how_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    let mut child = Command::new(BIN)
        .args(["passwd", f, "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-a-pipe\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$argon2id$"), "{text}");
    // The stored hash is of the piped password: a gateway accepts it.
    let g = start(
        &with_free(&["--host", "127.0.0.1", "--password-file", f]),
        &[],
    );
    let http = g.addr("http");
    let mut s = std::net::TcpStream::connect(http).unwrap();
    // alice:from-a-pipe
    s.write_all(b"GET /resources/x HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6ZnJvbS1hLXBpcGU=\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 404"),
        "authenticated, nothing stored: {answer}"
    );
    // Nothing on stdin and no terminal: the error says what to do.
    let out = run(&["passwd", f, "bob"], &[]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("--password") && e.contains("standard input"),
        "{e}"
    );
}

#[test]
fn host_takes_names_and_several_addresses() {
    let g = start(&with_free(&["--host", "localhost"]), &[]);
    let http = g.addr("http");
    assert!(http.ip().is_loopback(), "{http}");
    std::net::TcpStream::connect(http).unwrap();
    drop(g);
    // Two addresses: the same port on both (IPv6 loopback when this machine has one).
    let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let hosts = if v6 {
        "127.0.0.1,::1"
    } else {
        "127.0.0.1,127.0.0.2"
    };
    let g = start(&with_free(&["--host", hosts]), &[]);
    let http = g.addr("http");
    let second: std::net::IpAddr = if v6 {
        "::1".parse().unwrap()
    } else {
        "127.0.0.2".parse().unwrap()
    };
    std::net::TcpStream::connect(http).unwrap();
    std::net::TcpStream::connect(SocketAddr::new(second, http.port()))
        .expect("HTTP also listens on the second address");
    let mqtt = g.addr("mqtt");
    std::net::TcpStream::connect(SocketAddr::new(second, mqtt.port()))
        .expect("MQTT also listens on the second address");
    let out = run(&["--host", "no-such-host.invalid", "config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no-such-host.invalid"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_systemd_unit_runs_ponte_and_reloads_with_sighup() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/ponte.service"
    ))
    .unwrap();
    for line in [
        "Type=exec",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=ponte",
        "RestartPreventExitStatus=2",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "examples/ponte.service lacks {line}"
        );
    }
    // Its ExecStart is a command line this ponte accepts.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ponte.toml");
    std::fs::write(&conf, "").unwrap();
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == "/etc/ponte/ponte.toml" {
                conf.to_str().unwrap()
            } else {
                a
            }
        })
        .collect();
    let mut with_config = args.clone();
    with_config.push("config");
    let out = run(&with_config, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_walkthrough_asks_whether_ponte_is_running() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "curl is missing in CI");
        eprintln!("SKIP: curl not installed");
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/walkthrough.sh"
        ))
        .env("WALK_HTTP", format!("http://{closed}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is ponte running?"),
        "{}",
        stderr(&out)
    );
}
