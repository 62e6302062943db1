//! Framed streams over a real QUIC connection on loopback: frames queued around bulk bytes (or
//! with small ones copied) arrive exactly as whole frames would.

use std::net::SocketAddr;

use bytes::Bytes;
use wire::proto::{Assignment, AttemptId, DispatcherToNode, JobId, Role, StreamHeader};

use super::*;
use crate::pki::CertificateAuthority;

/// A dispatcher-like endpoint and a connection to it from a node-like one.
async fn connected() -> (quinn::Connection, quinn::Connection, [quinn::Endpoint; 2]) {
    let ca = CertificateAuthority::generate("test").expect("ca");
    let server_id = ca.issue_identity(Role::Dispatcher, "dispatcher").expect("issue");
    let client_id = ca.issue_identity(Role::Node, "node-1").expect("issue");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let server_config = crate::tls::server_config(&server_id).expect("server config");
    let server = endpoint(loopback, Some(server_config)).expect("server");
    let mut client = endpoint(loopback, None).expect("client");
    client.set_default_client_config(crate::tls::client_config(&client_id).expect("client config"));
    let address = server.local_addr().expect("address");
    let connecting = client.connect(address, crate::tls::dispatcher_server_name()).expect("connect");
    let accept = async { server.accept().await.expect("incoming").await.expect("accepted") };
    let (accepted, dialed) = tokio::join!(accept, connecting);
    (accepted, dialed.expect("dialed"), [server, client])
}

fn assignment(chunk: u64, input: &Bytes) -> DispatcherToNode {
    let attempt = AttemptId(chunk);
    DispatcherToNode::Assign(Assignment { job: JobId(1), chunk, attempt, input: input.clone(), combine: false })
}

#[tokio::test]
async fn frames_around_bulk_bytes_arrive_whole() {
    let (sender, receiver, _endpoints) = connected().await;
    let inputs: Vec<Bytes> = (0..48u64)
        .map(|chunk| {
            // Small inputs, copied into the frame buffer, between bulk ones queued by reference.
            let len = if chunk % 4 == 1 { 16 + chunk as usize } else { (1 << 20) + chunk as usize };
            Bytes::from((0..len).map(|i| (i as u64 ^ chunk) as u8).collect::<Vec<_>>())
        })
        .collect();
    let expected: Vec<DispatcherToNode> =
        inputs.iter().enumerate().map(|(i, input)| assignment(i as u64, input)).collect();
    let send = async {
        let mut work = open_uni(&sender, &StreamHeader::Work).await.expect("open");
        for (i, input) in inputs.iter().enumerate() {
            // Frames of both kinds, interleaved, in one flush and across flushes.
            work.queue_frame_around(&assignment(i as u64, input), input).expect("queue");
            work.queue_frame(&DispatcherToNode::EndJob { job: JobId(i as u64) }).expect("queue");
            if i % 3 == 0 {
                work.flush().await.expect("flush");
            }
        }
        work.finish().await.expect("finish");
    };
    let receive = async {
        let mut work = FramedRecv::new(receiver.accept_uni().await.expect("accept"), 4 << 20);
        assert_eq!(work.expect_frame::<StreamHeader>().await.expect("header"), StreamHeader::Work);
        let mut got = Vec::new();
        while let Some(msg) = work.read_frame::<DispatcherToNode>().await.expect("frame") {
            if !matches!(msg, DispatcherToNode::EndJob { .. }) {
                got.push(msg);
            }
        }
        got
    };
    let ((), got) = tokio::join!(send, receive);
    assert!(got == expected, "the assignments arrived as sent");
}
