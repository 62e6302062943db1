//! The client's retry policy: the backoff between dials, and which errors are worth a
//! reconnection (the dispatcher went away) and which are final (it refused).

use std::time::Duration;

use common::net::StreamError;

use super::{Backoff, ClientError};

#[test]
fn backoff_doubles_from_100ms_up_to_2s() {
    let mut backoff = Backoff::new();
    let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_millis() as u64).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
}

#[track_caller]
fn check(error: ClientError, transient: bool) {
    assert_eq!(error.is_transient(), transient, "{error}");
}

fn closed(code: u32, reason: &str) -> quinn::ConnectionError {
    quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
        error_code: quinn::VarInt::from_u32(code),
        reason: bytes::Bytes::copy_from_slice(reason.as_bytes()),
    })
}

#[test]
fn a_dispatcher_gone_away_is_retried_and_a_refusal_is_not() {
    let lost = |e: quinn::ConnectionError| ClientError::Stream(StreamError::Connection(e));
    // Killed (silence), restarted (it resets connections it does not know), stopped gracefully.
    check(lost(quinn::ConnectionError::TimedOut), true);
    check(lost(quinn::ConnectionError::Reset), true);
    check(lost(closed(0, "dispatcher shutting down")), true);
    check(ClientError::Unreachable { address: "a:1".into(), reason: "timed out".into() }, true);
    // Revoked, refused, or a broken conversation: final.
    check(lost(closed(4, "certificate revoked")), false);
    check(lost(quinn::ConnectionError::LocallyClosed), false);
    check(ClientError::Refused("no job 7 here".into()), false);
    check(ClientError::Connect { address: "a:1".into(), reason: "TLS handshake failed".into() }, false);
    check(ClientError::Stream(StreamError::Truncated), false);
    check(ClientError::Protocol("unexpected answer".into()), false);
    let timeout = ClientError::ReconnectTimeout { address: "a:1".into(), after: Duration::from_secs(3), last: "timed out".into() };
    check(timeout, false);
}

#[test]
fn giving_up_says_for_how_long_and_how_to_follow_the_job() {
    let timeout = ClientError::ReconnectTimeout { address: "d:7870".into(), after: Duration::from_secs(120), last: "timed out".into() };
    let text = timeout.to_string();
    assert!(text.contains("could not reconnect within 120s") && text.contains("dispy-submit wait JOB"), "{text}");
}
