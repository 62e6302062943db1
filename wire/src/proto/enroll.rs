//! Enrolment messages: a node redeeming a join token for its certificate, and renewing it.

use serde::{Deserialize, Serialize};

/// Node to dispatcher, on the control stream of a connection made without a client certificate,
/// right after a [`Hello`] (role [`Role::Node`]) was answered with `Welcome`: redeem a one-time
/// join token for a node certificate. Answered with [`EnrollReply`]; the dispatcher closes the
/// connection after that. (See `common::enroll` for the token format.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The token's secret bytes (never its fingerprint part, which only the node needs).
    #[serde(with = "serde_bytes")]
    pub token_secret: Vec<u8>,
    /// A PKCS#10 certificate signing request (DER) for a key the node made itself. Only its
    /// public key is used; the dispatcher sets every certificate field.
    #[serde(with = "serde_bytes")]
    pub csr_der: Vec<u8>,
    /// The name the node asks for; a token made for a name overrides it.
    pub name: String,
}

/// The dispatcher's answer to [`EnrollRequest`] and [`RenewRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EnrollReply {
    /// The certificate for the node's key.
    Issued {
        /// The node certificate, PEM.
        cert_pem: String,
        /// The cluster CA certificate, PEM, for the node's `ca.pem`.
        ca_pem: String,
        /// When the certificate expires, seconds since the Unix epoch.
        valid_until_unix: u64,
    },
    /// Nothing was issued; the dispatcher closes the connection (enrolment) or the stream
    /// (renewal) after this.
    Refused {
        /// Human-readable reason, shown to the operator as is.
        reason: String,
    },
}

/// Node to dispatcher, as the only message of a bidirectional stream the node opens on its
/// normal (mutual TLS) connection after registering: a new certificate for the same name, for a
/// new key. Answered with [`EnrollReply`] on the same stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// A PKCS#10 certificate signing request (DER) for the node's new key; only its public key
    /// is used.
    #[serde(with = "serde_bytes")]
    pub csr_der: Vec<u8>,
}
