//! The `ponte` binary: parse flags, set up logging, run until SIGINT/SIGTERM; SIGHUP
//! reloads the files (TLS certificates, password, ACL, PSK and JWT key files).
//! `ponte passwd FILE USER` manages a password file instead.

use std::process::ExitCode;

use clap::Parser;
use ponte::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(ponte::cli::Command::Passwd(args)) = &cli.command {
        return match args.run() {
            Ok(msg) => {
                eprintln!("ponte passwd: {msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ponte passwd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let layered = match cli.layered(std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ponte: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(ponte::cli::Command::Config) = &cli.command {
        print!(
            "{}",
            ponte::config::print::to_commented_toml(&layered.config)
        );
        return ExitCode::SUCCESS;
    }
    init_logging(&cli);
    for var in &layered.ignored_env {
        tracing::warn!(
            variable = %var,
            "ignored: starts with PONTE_ but names no configuration key (see `ponte config`)"
        );
    }
    let config = layered.config;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ponte: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Register for the signals before anything listens: a SIGTERM that arrives as soon as
        // the ports are open must stop the gateway gracefully, not kill it (nor a SIGHUP).
        let stop = Stop::register().map_err(|e| {
            (
                ExitCode::FAILURE,
                format!("cannot install signal handlers: {e}"),
            )
        })?;
        ponte::run_with_reload(config, |reloader| stop.wait(reloader))
            .await
            .map_err(|e| {
                // Unusable TLS files are a configuration error, like a bad config file.
                let code = match e {
                    ponte::Error::Tls(_) | ponte::Error::Auth(_) | ponte::Error::Config(_) => {
                        ExitCode::from(2)
                    }
                    ponte::Error::Cluster(
                        ponte::backbone::nats::ClusterError::Config(_)
                        | ponte::backbone::nats::ClusterError::File { .. },
                    ) => ExitCode::from(2),
                    _ => ExitCode::FAILURE,
                };
                (code, e.to_string())
            })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("ponte: {e}");
            code
        }
    }
}

/// Logs to standard error: readable lines (colours only on a terminal, and not with
/// `NO_COLOR`) or JSON objects (`--log-format json`); `RUST_LOG` wins over `-v`.
fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_filter()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        ponte::cli::LogFormat::Json => builder.json().init(),
        ponte::cli::LogFormat::Human => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init()
        }
    }
}

/// SIGINT and SIGTERM (stop) and SIGHUP (reload), registered up front.
struct Stop {
    /// SIGINT (Ctrl-C).
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    /// SIGTERM (service managers, `kill`).
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    /// SIGHUP: re-read the TLS files (and whatever else registers a reload hook).
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Stop {
    /// Install the handlers now.
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Stop {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Stop {})
        }
    }

    /// Completes on the first SIGINT or SIGTERM; every SIGHUP before it reloads. A failed
    /// reload is logged by the reloader and the gateway keeps its old files.
    async fn wait(mut self, reloader: ponte::reload::Reloader) {
        #[cfg(unix)]
        {
            loop {
                tokio::select! {
                    _ = self.interrupt.recv() => break,
                    _ = self.terminate.recv() => break,
                    _ = self.hangup.recv() => {
                        tracing::info!("SIGHUP: reloading");
                        let _ = reloader.reload();
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reloader;
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}
