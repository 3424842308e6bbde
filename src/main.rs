//! The `ponte` binary: parse flags, set up logging, run until SIGINT/SIGTERM.

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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_filter()));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let config = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ponte: {e}");
            return ExitCode::from(2);
        }
    };
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
        // the ports are open must stop the gateway gracefully, not kill it.
        let mut stop =
            Stop::register().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let reload = stop.hangups();
        ponte::run_with_reload(config, stop.wait(), reload)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ponte: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT and SIGTERM (stop) and SIGHUP (reload), registered up front.
struct Stop {
    /// SIGHUP: re-read the auth files; taken by [`Stop::hangups`].
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    /// SIGINT (Ctrl-C).
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    /// SIGTERM (service managers, `kill`).
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    /// Install the handlers now.
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Stop {
                hangup: Some(signal(SignalKind::hangup())?),
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Stop {})
        }
    }

    /// Every SIGHUP as a stream item.
    fn hangups(&mut self) -> impl futures_util::Stream<Item = ()> {
        #[cfg(unix)]
        {
            let hangup = self.hangup.take();
            futures_util::stream::unfold(hangup, |h| async move {
                let mut h = h?;
                h.recv().await?;
                tracing::info!("SIGHUP: reloading");
                Some(((), Some(h)))
            })
        }
        #[cfg(not(unix))]
        {
            futures_util::stream::pending()
        }
    }

    /// Completes on the first of SIGINT and SIGTERM.
    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}
