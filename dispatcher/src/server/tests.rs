//! Hostile input against a live in-process dispatcher: random and mutated frames from clients
//! and nodes, for a bounded time. Every connection must get an answer or be closed, the
//! dispatcher must never panic, and it must keep serving well-behaved clients afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::pki::{CertificateAuthority, Identity};
use wire::proto::{
    ClientEvent, ClientRequest, Hello, HelloReply, NodeInfo, NodeToDispatcher, Role, PROTOCOL_VERSION,
};

use super::Dispatcher;
use crate::config::DispatcherConfig;

/// A small xorshift generator: the test needs cheap, reproducible noise, not a crate.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() as usize) % (max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn mutate(&mut self, mut data: Vec<u8>) -> Vec<u8> {
        for _ in 0..1 + self.next() % 4 {
            if data.is_empty() {
                break;
            }
            let at = (self.next() as usize) % data.len();
            data[at] ^= 1 << (self.next() % 8);
        }
        data
    }
}

fn endpoint(identity: &Identity) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    endpoint.set_default_client_config(common::tls::client_config(identity).expect("client config"));
    endpoint
}

fn framed(msg: &impl serde::Serialize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    wire::frame::encode(msg, &mut buf).expect("encodes");
    buf.to_vec()
}

fn hello(role: Role) -> Vec<u8> {
    framed(&Hello { protocol_version: PROTOCOL_VERSION, role, software: "fuzz".into() })
}

/// What one hostile connection sends on its control stream.
fn hostile_payload(noise: &mut Noise, role: Role) -> Vec<u8> {
    let valid_next = match role {
        Role::Node => framed(&NodeToDispatcher::Register(Box::new(NodeInfo {
            name: "x".into(),
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            slots: 1,
            cores: 1,
            memory_total: 1 << 30,
            memory_available: 1 << 30,
            version: "0".into(),
            cached_payloads: Vec::new(),
            confinement: wire::proto::Confinement::Landlock,
            claims: Vec::new(),
            object_store_buckets: Vec::new(),
            shared_input_roots: Vec::new(),
            host_id: String::new(),
        }))),
        _ => framed(&ClientRequest::ListNodes),
    };
    match noise.next() % 5 {
        0 => noise.bytes(512),
        1 => [hello(role), noise.bytes(512)].concat(),
        2 => [hello(role), (u32::MAX - (noise.next() % 1000) as u32).to_be_bytes().to_vec(), noise.bytes(64)].concat(),
        3 => [hello(role), noise.mutate(valid_next)].concat(),
        _ => noise.mutate(hello(role)),
    }
}

/// A dispatcher running in this process on a loopback port, with its CA.
struct Live {
    ca: CertificateAuthority,
    address: SocketAddr,
    state: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Live {
    fn start(name: &str) -> Self {
        let state = std::env::temp_dir().join(format!("dispy-{name}-{}", std::process::id()));
        let ca = CertificateAuthority::generate(name).expect("ca");
        let config = DispatcherConfig::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ca.issue_identity(Role::Dispatcher, "dispatcher").expect("identity"),
            state.clone(),
        );
        let dispatcher = Dispatcher::bind(config).expect("bind");
        let address = dispatcher.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(dispatcher.run(async move {
            let _ = stopped.await;
        }));
        Self { ca, address, state, stop: Some(stop), server }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await.expect("dispatcher task ends cleanly");
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Says hello as `claimed` with `identity` and returns the dispatcher's answer, or the
/// connection error when the handshake itself is refused.
async fn greet(live: &Live, identity: &Identity, claimed: Role) -> Result<HelloReply, String> {
    Ok(hello_on_control(live, identity, claimed).await?.1)
}

/// Says hello and returns the control stream (with its connection, which must stay open) and
/// the dispatcher's answer.
async fn hello_on_control(
    live: &Live,
    identity: &Identity,
    claimed: Role,
) -> Result<((quinn::Connection, common::net::Connection), HelloReply), String> {
    let endpoint = endpoint(identity);
    let conn = endpoint
        .connect(live.address, common::tls::dispatcher_server_name())
        .expect("connect")
        .await
        .map_err(|e| e.to_string())?;
    // A refused certificate shows up as the connection closing; its reason is the useful part.
    let explain = |e: common::net::StreamError| e.connection_error().map_or_else(|| e.to_string(), ToString::to_string);
    let mut control = common::net::Connection::open(&conn, 1 << 20).await.map_err(explain)?;
    control
        .write_frame(&Hello { protocol_version: PROTOCOL_VERSION, role: claimed, software: "test".into() })
        .await
        .map_err(explain)?;
    let reply = control.recv.expect_frame::<HelloReply>().await.map_err(explain)?;
    Ok(((conn, control), reply))
}

#[track_caller]
fn check_refused(answer: Result<HelloReply, String>, needle: &str) {
    match answer {
        Ok(HelloReply::Refused { reason }) => assert!(reason.contains(needle), "{reason:?} lacks {needle:?}"),
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_decide_roles_and_bad_ones_are_refused() {
    let live = Live::start("refusals");
    let client = live.ca.issue_identity(Role::Client, "alice").expect("identity");
    let node = live.ca.issue_identity(Role::Node, "n1").expect("identity");
    assert!(matches!(greet(&live, &client, Role::Client).await, Ok(HelloReply::Welcome { .. })));
    // A client certificate cannot register as a node, nor a node certificate act as a client.
    check_refused(greet(&live, &client, Role::Node).await, "this certificate is for a client");
    check_refused(greet(&live, &node, Role::Client).await, "this certificate is for a node");
    // An expired certificate and one from another CA fail the TLS handshake itself.
    let expired = {
        let issued = live.ca.issue(Role::Client, "old", Duration::ZERO).expect("issue");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        Identity::from_pem(live.ca.cert_pem(), &issued.cert_pem, &issued.key_pem, std::path::Path::new("old"))
            .expect("identity")
    };
    let refused = greet(&live, &expired, Role::Client).await.expect_err("expired certificate refused");
    assert!(refused.contains("expired") || refused.contains("certificate") || refused.contains("crypto"), "{refused}");
    let other_ca = CertificateAuthority::generate("elsewhere").expect("ca");
    let mut foreign = other_ca.issue_identity(Role::Client, "mallory").expect("identity");
    // Trust our dispatcher, so only the dispatcher's check of the client certificate can refuse.
    foreign.ca = client.ca.clone();
    let refused = greet(&live, &foreign, Role::Client).await.expect_err("foreign certificate refused");
    assert!(refused.contains("certificate") || refused.contains("crypto") || refused.contains("closed"), "{refused}");
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let live = Live::start("certless");
    let trusted = live.ca.issue_identity(Role::Client, "reference").expect("identity");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.ca.clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![wire::proto::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS config");
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(quic)));
    let conn = endpoint.connect(live.address, common::tls::dispatcher_server_name()).expect("connect").await.expect("handshake");
    let mut control = common::net::Connection::open(&conn, 1 << 20).await.expect("stream");
    control.write_frame(&Hello { protocol_version: PROTOCOL_VERSION, role: Role::Client, software: "t".into() }).await.expect("hello");
    check_refused(control.recv.expect_frame::<HelloReply>().await.map_err(|e| e.to_string()), "needs a certificate");
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_hold_unbounded_connections() {
    let live = Live::start("flood");
    let client = live.ca.issue_identity(Role::Client, "flooder").expect("identity");
    let endpoint = endpoint(&client);
    let mut held = Vec::new();
    for _ in 0..super::MAX_CONNECTIONS_PER_PEER {
        let conn = endpoint.connect(live.address, common::tls::dispatcher_server_name()).expect("connect").await.expect("handshake");
        let mut control = common::net::Connection::open(&conn, 1 << 20).await.expect("stream");
        control.write_frame(&Hello { protocol_version: PROTOCOL_VERSION, role: Role::Client, software: "t".into() }).await.expect("hello");
        assert!(matches!(control.recv.expect_frame::<HelloReply>().await, Ok(HelloReply::Welcome { .. })));
        held.push((conn, control));
    }
    let conn = endpoint.connect(live.address, common::tls::dispatcher_server_name()).expect("connect").await.expect("handshake");
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.expect("the extra connection is closed");
    assert!(closed.to_string().contains("too many connections"), "{closed}");
    // Another peer is unaffected.
    let other = live.ca.issue_identity(Role::Client, "bob").expect("identity");
    assert!(matches!(greet(&live, &other, Role::Client).await, Ok(HelloReply::Welcome { .. })));
    drop(held);
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_never_take_the_dispatcher_down() {
    let live = Live::start("hostile");
    let (ca, address) = (&live.ca, live.address);
    let client_identity = ca.issue_identity(Role::Client, "fuzz-client").expect("identity");
    let node_identity = ca.issue_identity(Role::Node, "fuzz-node").expect("identity");
    let endpoints = [(Role::Client, endpoint(&client_identity)), (Role::Node, endpoint(&node_identity))];

    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut rounds = 0;
    while rounds < 200 && Instant::now() < deadline {
        rounds += 1;
        let (role, endpoint) = &endpoints[rounds % 2];
        let conn = endpoint.connect(address, common::tls::dispatcher_server_name()).expect("connect").await.expect("handshake");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        // The peer may have closed already; that is an acceptable answer.
        let _ = send.write_all(&hostile_payload(&mut noise, *role)).await;
        let _ = send.finish();
        // Either an answer, an error (closed or reset), or silence while it waits for the rest of
        // a frame: none of them may take down the dispatcher.
        let _ = tokio::time::timeout(Duration::from_millis(300), recv.read_to_end(1 << 20)).await;
        conn.close(0u32.into(), b"done");
        assert!(!live.server.is_finished(), "the dispatcher stopped after round {rounds}");
    }
    assert!(rounds >= 20, "only {rounds} rounds ran");

    // Still serving: a well-behaved client gets its answer.
    let ((_conn, mut control), reply) =
        hello_on_control(&live, &client_identity, Role::Client).await.expect("connect after the noise");
    assert!(matches!(reply, HelloReply::Welcome { .. }), "{reply:?}");
    control.write_frame(&ClientRequest::ListNodes).await.expect("ask for the nodes");
    let answer = control.recv.expect_frame::<ClientEvent>().await.expect("the dispatcher still answers");
    assert!(matches!(answer, ClientEvent::Nodes(_)), "{answer:?}");
    live.shutdown().await;
}
