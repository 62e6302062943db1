//! The dispatcher's validated configuration.

use std::net::SocketAddr;
use std::time::Duration;

use common::pki::Identity;

/// Everything `dispy-dispatcher` needs to run, already validated.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// UDP address of the QUIC endpoint (default `0.0.0.0:7870`).
    pub listen: SocketAddr,
    /// The dispatcher's certificate, key and the cluster CA.
    pub identity: Identity,
    /// A node silent this long is declared lost (default 5 s).
    pub node_timeout: Duration,
    /// Attempts queued per slot beyond the running one, so slots never wait for the network.
    pub pipeline_depth: u32,
    /// Largest control message accepted, bytes.
    pub max_message: usize,
    /// Largest chunk input or result accepted, bytes.
    pub max_chunk: usize,
    /// Largest payload accepted, bytes.
    pub max_payload: usize,
}

/// The dispatcher's default port.
pub const DEFAULT_PORT: u16 = 7870;

impl DispatcherConfig {
    /// A configuration with every default, listening on `listen`.
    pub fn new(listen: SocketAddr, identity: Identity) -> Self {
        Self {
            listen,
            identity,
            node_timeout: Duration::from_secs(5),
            pipeline_depth: 2,
            max_message: common::frame::DEFAULT_MAX_MESSAGE,
            max_chunk: 256 << 20,
            max_payload: 256 << 20,
        }
    }
}
