//! The daemons' optional HTTP address (`http_listen` on the dispatcher, `metrics_listen` on a
//! node): one access rule for both, and serving an axum `Router` under it until shutdown.
//!
//! The rule ([`Access::new`]): a loopback address is open to whoever can reach it; any other
//! address needs `http_token_file`, a file holding a bearer token, and every request for data
//! must then carry `Authorization: Bearer TOKEN` (or `?token=TOKEN`, so a browser can open the
//! status page from a link, and the page's script passes it on). Static files that hold no data
//! (the page's HTML, script and style, as public as the source) are served without it, through
//! [`HttpServer::serve`]'s `public` routes. Without a token file a non-loopback address is
//! refused, and the daemon does not start. A token file set for a loopback address is required
//! there too. There is no TLS on this address: put a TLS proxy in front when the token must cross
//! an untrusted network.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use thiserror::Error;

mod limit;
#[cfg(test)]
mod tests;

use limit::LimitedListener;
pub use limit::Limits;

/// Why the HTTP address cannot be served.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HttpError {
    /// A non-loopback address without a token file.
    #[error(
        "{addr} is not a loopback address: set http_token_file to a file holding a bearer token, \
         or listen on 127.0.0.1"
    )]
    Exposed {
        /// The address.
        addr: SocketAddr,
    },
    /// The token file could not be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The token file holds no token.
    #[error("the token file {} is empty", path.display())]
    EmptyToken {
        /// The file.
        path: PathBuf,
    },
    /// The TCP address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Who may use the HTTP address: everyone who reaches it, or holders of the token.
#[derive(Clone)]
pub struct Access {
    /// The bearer token every request must carry; `None` on an open loopback address.
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: configurations are logged.
        f.debug_struct("Access").field("token", &self.token.as_ref().map(|_| "<set>")).finish()
    }
}

impl Access {
    /// The access rule for `addr`, reading the token from `token_file` when one is set.
    ///
    /// # Errors
    /// [`HttpError::Exposed`] for a non-loopback address without a token file, and
    /// [`HttpError::TokenFile`] or [`HttpError::EmptyToken`] for a token file that cannot be used.
    pub fn new(addr: SocketAddr, token_file: Option<&Path>) -> Result<Self, HttpError> {
        let token = match token_file {
            Some(path) => Some(read_token(path)?),
            None if addr.ip().is_loopback() => None,
            None => return Err(HttpError::Exposed { addr }),
        };
        Ok(Self { token })
    }

    /// Access for anyone who reaches the address (tests, and loopback addresses).
    pub fn open() -> Self {
        Self { token: None }
    }

    /// Whether a token is required.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request with this `Authorization` header and query string may pass.
    pub fn allows(&self, authorization: Option<&str>, query: Option<&str>) -> bool {
        let Some(token) = &self.token else { return true };
        let bearer = authorization.and_then(|value| value.strip_prefix("Bearer ")).map(str::trim);
        let queried = query.and_then(query_token);
        bearer.is_some_and(|given| same(given.as_bytes(), token.as_bytes()))
            || queried.is_some_and(|given| same(given.as_bytes(), token.as_bytes()))
    }
}

/// A bound HTTP address, serving once [`HttpServer::serve`] runs.
pub struct HttpServer {
    listener: std::net::TcpListener,
    access: Access,
    limits: Limits,
}

impl HttpServer {
    /// Binds `addr` (TCP), before the runtime serves it, so a daemon that cannot listen fails
    /// at start.
    ///
    /// # Errors
    /// [`HttpError::Bind`] when the address cannot be bound.
    pub fn bind(addr: SocketAddr, access: Access) -> Result<Self, HttpError> {
        let bind = |source| HttpError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        Ok(Self { listener, access, limits: Limits::default() })
    }

    /// Serves under `limits` instead of the default ones.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The address actually bound (useful with port 0).
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `router` behind the access rule, and `public` (static files without data) to
    /// anyone who reaches the address, until `shutdown` completes, within [`Limits`]; errors are
    /// logged.
    pub async fn serve(self, router: Router, public: Router, shutdown: impl Future<Output = ()> + Send + 'static) {
        let router = router.layer(axum::middleware::from_fn_with_state(self.access, check_access)).merge(public);
        let listener = match tokio::net::TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve HTTP");
                return;
            }
        };
        let listener = LimitedListener::new(listener, self.limits);
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "the HTTP server stopped");
        }
    }
}

/// The middleware: answers 401 to a request without the token.
async fn check_access(State(access): State<Access>, request: Request, next: Next) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if access.allows(authorization, request.uri().query()) {
        return next.run(request).await;
    }
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a bearer token is required\n").into_response()
}

/// The token in `path`, surrounding whitespace removed.
fn read_token(path: &Path) -> Result<Arc<str>, HttpError> {
    let text = std::fs::read_to_string(path).map_err(|source| HttpError::TokenFile { path: path.to_owned(), source })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(HttpError::EmptyToken { path: path.to_owned() });
    }
    Ok(token.into())
}

/// The `token` parameter of a query string, percent-decoded.
fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| pair.strip_prefix("token=")).map(percent_decode)
}

/// `%XX` escapes and `+` decoded; a malformed escape is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares in time that depends only on the lengths, so the token cannot be guessed byte by
/// byte from response times.
fn same(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
