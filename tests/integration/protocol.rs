//! Hostile input on the wire, sent by a raw QUIC client with a valid client certificate: a
//! frame announcing more than the maximum length, a frame that is not MessagePack, and a `Hello`
//! with an unknown protocol version. Each must end only that connection with a clear reason while
//! the dispatcher keeps serving, and the oversize frame must not be allocated.

use std::time::Duration;

use wire::frame::DEFAULT_MAX_MESSAGE;
use common::net::Connection;
use wire::proto::{Hello, HelloReply, Role};
use tests::{block_on, proc_status_bytes, Cluster, RawClient};

/// How long the dispatcher gets to close a connection that sent garbage.
const CLOSE_WAIT: Duration = Duration::from_secs(20);

/// Far above a dispatcher's resident memory, far below the 4 GiB frame it was offered.
const RSS_CEILING: u64 = 200 << 20;

/// Opens a control stream, writes `bytes` on it, and returns the reason the dispatcher gave for
/// closing the connection (or what happened instead).
fn send_and_wait_for_close(cluster: &Cluster, bytes: &[u8]) -> Result<String, String> {
    block_on(async {
        let client = RawClient::connect(cluster.address(), cluster.client_dir()).await.map_err(|e| format!("{e:#}"))?;
        let (mut send, mut recv) = client.conn.open_bi().await.map_err(|e| e.to_string())?;
        // A write may fail once the dispatcher has closed the connection; the read below tells.
        let _ = send.write_all(bytes).await;
        let read = async {
            let mut buf = [0u8; 1024];
            loop {
                match recv.read(&mut buf).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("the dispatcher ended the stream but kept the connection".to_owned()),
                    Err(quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(close))) => {
                        return Ok(String::from_utf8_lossy(&close.reason).into_owned());
                    }
                    Err(e) => return Err(format!("unexpected read error: {e}")),
                }
            }
        };
        let result = tokio::time::timeout(CLOSE_WAIT, read)
            .await
            .unwrap_or_else(|_| Err(format!("the dispatcher did not close the connection within {CLOSE_WAIT:?}")));
        client.close().await;
        result
    })
}

/// The dispatcher is alive and still answers `nodes` with its node.
#[track_caller]
fn check_still_serving(cluster: &mut Cluster) {
    cluster.check_all_alive();
    cluster.wait_for_nodes(&["n1"]);
}

#[test]
fn oversize_frame_is_refused_without_allocating() {
    let mut cluster = Cluster::start(1);
    let pid = cluster.dispatcher().pid();
    let mut frame = 0xFFFF_FFF0u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"just a few bytes");
    let reason = send_and_wait_for_close(&cluster, &frame).unwrap_or_else(|e| panic!("{e}"));
    assert!(reason.contains("limit"), "the close reason should name the limit: {reason:?}");

    let rss = proc_status_bytes(pid, "VmRSS").expect("read the dispatcher's VmRSS");
    assert!(rss < RSS_CEILING, "dispatcher resident memory is {rss} bytes after the oversize frame");
    // Even an allocation freed again, or never touched, would have left a peak above 4 GiB.
    let peak = proc_status_bytes(pid, "VmPeak").expect("read the dispatcher's VmPeak");
    assert!(peak < 0xFFFF_FFF0, "dispatcher virtual memory peaked at {peak} bytes: the frame was allocated");
    check_still_serving(&mut cluster);
}

#[test]
fn malformed_message_closes_only_that_connection() {
    let mut cluster = Cluster::start(1);
    // A valid length, then bytes that are not MessagePack (0xc1 is never used by the format).
    let frame = [0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1];
    let reason = send_and_wait_for_close(&cluster, &frame).unwrap_or_else(|e| panic!("{e}"));
    assert!(reason.contains("malformed"), "the close reason should say the message is malformed: {reason:?}");
    check_still_serving(&mut cluster);
}

#[test]
fn wrong_protocol_version_is_refused() {
    let mut cluster = Cluster::start(1);
    let reply = block_on(async {
        let client = RawClient::connect(cluster.address(), cluster.client_dir()).await?;
        let mut control = Connection::open(&client.conn, DEFAULT_MAX_MESSAGE).await?;
        let hello = Hello { protocol_version: 99, role: Role::Client, software: "integration test".into() };
        control.write_frame(&hello).await?;
        let reply: HelloReply = control.recv.expect_frame().await?;
        client.close().await;
        anyhow::Ok(reply)
    });
    match reply {
        Ok(HelloReply::Refused { reason }) => {
            assert!(
                reason.contains("version") && reason.contains("99"),
                "the refusal should name the version: {reason:?}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    check_still_serving(&mut cluster);
}
