//! What the server keeps about peers beside their connections: each certificate name's open
//! connections ([`PeerSlot`]), and the certificates' ends (warned about near their end, and filled
//! into the nodes table).

use common::tls::PeerIdentity;
use tracing::warn;
use wire::proto::{ClientEvent, Role};

use super::MAX_CONNECTIONS_PER_PEER;

/// One of a peer's connection slots, given back on drop.
pub(super) struct PeerSlot<'a> {
    peers: &'a std::sync::Mutex<std::collections::HashMap<String, usize>>,
    name: String,
}

impl<'a> PeerSlot<'a> {
    pub(super) fn take(peers: &'a std::sync::Mutex<std::collections::HashMap<String, usize>>, name: &str) -> Option<Self> {
        // Only counter updates happen under this lock; a poisoned map is still consistent.
        let mut map = peers.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(name.to_owned()).or_default();
        if *count >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *count += 1;
        Some(Self { peers, name: name.to_owned() })
    }
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.name);
            }
        }
    }
}

/// Warns about a peer whose certificate is near its end (a self-renewing node's only once its
/// renewal is overdue), and records when a node's ends, for `nodes`.
pub(super) fn note_certificate(conn: &quinn::Connection, peer: &PeerIdentity, enrollment: &crate::enroll::Enrollment) {
    let Some(expiry) = common::tls::peer_certificate(conn).and_then(|cert| common::check::CertExpiry::of(&cert).ok()) else {
        return;
    };
    if peer.role == Role::Node {
        enrollment.note_node_certificate(&peer.name, expiry.not_after);
    }
    if let Some(message) = expiry.warning(std::time::SystemTime::now()) {
        warn!(
            peer = %peer.name,
            role = %peer.role,
            expires = %common::enroll::format_utc(expiry.not_after),
            "peer certificate expires soon: {message}"
        );
    }
}

/// Fills in what the core cannot know about nodes: when their certificates end.
pub(super) fn with_certificates(event: ClientEvent, enrollment: &crate::enroll::Enrollment) -> ClientEvent {
    match event {
        ClientEvent::Nodes(mut nodes) => {
            for node in &mut nodes {
                node.cert_expires_unix = enrollment
                    .node_certificate_expiry(&node.name)
                    .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
            }
            ClientEvent::Nodes(nodes)
        }
        other => other,
    }
}

