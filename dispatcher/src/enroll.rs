//! Node enrolment with one-time join tokens, and node revocation.
//!
//! (Being written: see the enrolment work item. Until then every enrolment attempt is refused
//! and no node is revoked.)

use crate::config::DispatcherConfig;

/// Enrolment state shared by the connection tasks: the CA that signs enrolled nodes, the
/// outstanding join tokens and the revoked node names.
#[derive(Debug, Clone)]
pub struct Enrollment {}

impl Enrollment {
    /// Loads tokens, CA and revocations from the dispatcher's state directory.
    pub fn new(_config: &DispatcherConfig) -> Self {
        Self {}
    }

    /// Whether the node named `name` has been revoked.
    pub fn is_revoked(&self, _name: &str) -> bool {
        false
    }
}

/// Serves a connection that presented no certificate: it may only enrol.
pub async fn serve_enrollment(conn: &quinn::Connection, _enrollment: &Enrollment) {
    conn.close(1u32.into(), b"a client certificate is required");
}
