//! `ceiling`: the HTTP ceiling ponte is measured against — a bare axum server on the same
//! runtime, framework and build profile as ponte's HTTP front-end, doing nothing per
//! request: `GET` answers `hello`, `PUT`/`POST` read the whole body and answer its length.
//!
//! What ponte's HTTP costs beyond that (routing on the raw path, authentication, ACL,
//! conditional headers, the retained store and its writer thread, the response headers) is
//! the difference between the two under the same load tool (`scripts/bench-compare` runs
//! wrk against both, alternately). It serves until killed.
//!
//! ```text
//! ponte-loadgen ceiling --listen 127.0.0.1:23100 &
//! wrk -t2 -c50 -d8s http://127.0.0.1:23100/resources/wrk/get
//! ```

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::http::Method;
use axum::routing::any;
use axum::serve::ListenerExt;
use axum::Router;

/// Parameters of the ceiling server.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub(crate) struct CeilingArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:3100")]
    pub listen: SocketAddr,
}

/// One handler for every path: `hello` for reads, the body's length for writes.
async fn answer(method: Method, body: Bytes) -> String {
    match method {
        Method::PUT | Method::POST => body.len().to_string(),
        _ => "hello".to_string(),
    }
}

/// Serve until the process is killed.
pub(crate) async fn serve(args: &CeilingArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "ponte-loadgen ceiling: bare axum on http://{}",
        listener.local_addr()?
    );
    let app = Router::new().fallback(any(answer));
    // As ponte does for every accepted connection: answers are not held back by Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.context("serving")?;
    Ok(())
}
