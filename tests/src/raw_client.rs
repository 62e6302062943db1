//! [`RawClient`]: a bare QUIC connection to the dispatcher with a valid client identity, for
//! hostile-input tests, and [`block_on`] to drive it from a synchronous test.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use common::pki::Identity;

/// Runs a future to completion on a fresh tokio runtime, for the async parts of a test.
///
/// # Panics
/// If the runtime cannot be created.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("create a tokio runtime")
        .block_on(future)
}

/// A bare QUIC connection to the dispatcher with a valid identity, for sending it bytes that
/// `dispy-submit` never would.
pub struct RawClient {
    endpoint: quinn::Endpoint,
    /// The connection, handshake done, no stream opened yet.
    pub conn: quinn::Connection,
}

impl RawClient {
    /// Loads the identity in `tls_dir` and connects to `address` under the dispatcher's server
    /// name. Call from inside a tokio runtime.
    ///
    /// # Errors
    /// If the identity is unusable or the handshake fails.
    pub async fn connect(address: &str, tls_dir: &Path) -> anyhow::Result<RawClient> {
        let identity = Identity::load(tls_dir).context("failed to load the identity")?;
        let address: SocketAddr = address.parse().context("not a socket address")?;
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        endpoint.set_default_client_config(common::tls::client_config(&identity)?);
        let conn =
            endpoint.connect(address, common::tls::dispatcher_server_name())?.await.context("handshake failed")?;
        Ok(RawClient { endpoint, conn })
    }

    /// Closes the connection and waits for the endpoint to be idle.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"test done");
        self.endpoint.wait_idle().await;
    }
}
