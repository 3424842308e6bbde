//! The front door: `/resources`, `/resources/` and everything under it go straight to
//! [`resources::handle`]; every other path goes through axum's router.
//!
//! Why not the router for the hot path: axum serves a fallback as a wildcard route of a
//! router of its own, so a request under `/resources/` is matched twice (a miss in the
//! routes, a hit in the fallback's), gets its path percent-decoded into URL parameters no
//! handler reads, and goes through a cloned boxed service, a boxed handler future and two
//! response mappings (BENCHMARKS.md, "HTTP GET overhead"). Here it is one string comparison
//! and one boxed future.
//!
//! The router is still the only way when layers sit inside it (the CORS layer of
//! `http.cors_origins`): then [`Front`] sends everything through it, as before. What axum's
//! top-level route does to every answer is done here too ([`finish`]): `Content-Length` from
//! an exact body size, and no body for HEAD.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody as _};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::Router;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method};
use tower::Service;

use super::{resources, AppState};
use crate::tls::HttpService;

/// The router, and the state to serve `/resources` with directly (`None`: everything goes
/// through the router).
#[derive(Debug, Clone)]
pub struct Front {
    /// Every path but `/resources…` (all of them when `resources` is `None`).
    router: Router,
    /// The state [`resources::handle`] runs with, when the router adds nothing to it.
    resources: Option<AppState>,
    /// The client's address, set on the clone that serves one request
    /// ([`HttpService::connect_info`]): handed to [`resources::handle`] as it is, and to the
    /// router's handlers as the `ConnectInfo` extension. On the direct way a request then
    /// carries no extension at all: no map allocated, no boxed value hashed in and dropped.
    peer: Option<SocketAddr>,
}

impl Front {
    /// Serve `/resources…` from `resources` directly, everything else from `router`.
    pub(super) fn new(router: Router, resources: Option<AppState>) -> Self {
        Front {
            router,
            resources,
            peer: None,
        }
    }
}

impl HttpService for super::App {
    fn connect_info(&mut self, _request: &mut Request, peer: SocketAddr) {
        self.inner_mut().peer = Some(peer);
    }
}

/// Whether `path` is the resource tree: `/resources`, `/resources/` or below.
pub(super) fn is_resources(path: &str) -> bool {
    path.strip_prefix("/resources")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both ways are always ready (axum's router is).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> FrontFuture {
        match &self.resources {
            Some(state) if is_resources(request.uri().path()) => {
                let method = request.method().clone();
                let handler = resources::handle(State(state.clone()), self.peer, request);
                FrontFuture {
                    way: Way::Resources {
                        inner: Box::pin(handler),
                        method,
                    },
                }
            }
            _ => {
                if let Some(peer) = self.peer {
                    request.extensions_mut().insert(ConnectInfo(peer));
                }
                FrontFuture {
                    way: Way::Router {
                        inner: self.router.call(request),
                    },
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer, from the resource handler or from the router.
    pub struct FrontFuture {
        #[pin]
        way: Way,
    }
}

pin_project_lite::pin_project! {
    /// Which way the request went.
    #[project = WayProj]
    enum Way {
        // `/resources…`, served directly: the handler's future, and the method for
        // [`finish`].
        Resources {
            inner: Pin<Box<dyn Future<Output = Response> + Send>>,
            method: Method,
        },
        // Everything else.
        Router {
            #[pin]
            inner: RouteFuture<Infallible>,
        },
    }
}

impl Future for FrontFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().way.project() {
            WayProj::Resources { inner, method } => match inner.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(response) => Poll::Ready(Ok(finish(method, response))),
            },
            WayProj::Router { inner } => inner.poll(cx),
        }
    }
}

/// What axum's router does to an answer of a top-level route: `Content-Length` from the
/// body's exact size when the handler set none, then, for HEAD, the body dropped (RFC 9110
/// §9.3.2: the same headers as GET, no content). The resource handler never answers CONNECT
/// with a 2xx, so axum's special case for that does not arise.
fn finish(method: &Method, mut response: Response) -> Response {
    if !response.headers().contains_key(CONTENT_LENGTH) {
        if let Some(size) = response.body().size_hint().exact() {
            let value = if size == 0 {
                HeaderValue::from_static("0")
            } else {
                HeaderValue::from(size)
            };
            response.headers_mut().insert(CONTENT_LENGTH, value);
        }
    }
    if *method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_resources;

    #[test]
    fn the_resource_tree_is_the_prefix_and_below() {
        for p in ["/resources", "/resources/", "/resources/a", "/resources//x"] {
            assert!(is_resources(p), "{p}");
        }
        for p in [
            "/",
            "/resourcesx",
            "/resource",
            "/metrics",
            "/x/resources/a",
        ] {
            assert!(!is_resources(p), "{p}");
        }
    }
}
