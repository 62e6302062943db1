//! Tests of enrolment: the token store and revocation lists on disk, the checks of
//! [`Enrollment::enroll`] and [`Enrollment::renew`] (which only ever make node certificates),
//! renewal and revocation over a real mutual-TLS connection, and a whole join against a real
//! [`Dispatcher`] on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::enroll::{Fingerprint, JoinToken, NodeKey, TokenSecret, Validity};
use common::net::Connection;
use common::pki::{CertificateAuthority, Identity};
use wire::proto::{EnrollRequest, Hello, HelloReply, RenewRequest, Role, PROTOCOL_VERSION};
use common::tls::PeerIdentity;
use node::enroll::{JoinError, JoinOptions};

use super::*;
use crate::server::Dispatcher;

/// A CA on disk (`pki init` layout) and a dispatcher configuration using it for enrolment.
struct Fixture {
    scratch: tempfile::TempDir,
    ca: CertificateAuthority,
    config: DispatcherConfig,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let scratch = tempfile::Builder::new().prefix(&format!("dispy-enroll-test-{name}-")).tempdir().expect("a scratch directory");
        let ca = CertificateAuthority::generate("test").expect("ca");
        let pki = scratch.path().join("pki");
        ca.save(&pki).expect("save the CA");
        let identity = ca.issue_identity(Role::Dispatcher, "dispatcher").expect("dispatcher identity");
        let mut config = DispatcherConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), identity, scratch.path().join("state"));
        config.ca_dir = Some(pki);
        Self { scratch, ca, config }
    }

    fn state(&self) -> &Path {
        &self.config.state_dir
    }

    fn token(&self, name: Option<&str>, ttl: Duration) -> JoinToken {
        let secret = TokenSecret::generate().expect("secret");
        TokenStore::open(self.state()).expect("store").create(&secret, ttl, name, SystemTime::now()).expect("create");
        JoinToken { secret, ca_fingerprint: Fingerprint::of(&self.config.identity.ca) }
    }

    fn node_identity(&self, name: &str, validity: Duration) -> Identity {
        let issued = self.ca.issue(Role::Node, name, validity).expect("issue");
        Identity::from_pem(self.ca.cert_pem(), &issued.cert_pem, &issued.key_pem, Path::new("<test>")).expect("identity")
    }
}

fn request(token: &JoinToken, name: &str) -> EnrollRequest {
    EnrollRequest {
        token_secret: token.secret.0.to_vec(),
        csr_der: NodeKey::generate(name).expect("key").csr_der,
        name: name.to_owned(),
    }
}

#[track_caller]
fn check_refused(result: Result<Issued, EnrollError>, expect: &str) {
    match result {
        Ok(issued) => panic!("issued {issued:?}, expected a refusal saying {expect:?}"),
        Err(e) => assert!(e.for_peer().contains(expect), "{:?} does not contain {expect:?}", e.for_peer()),
    }
}

#[test]
fn a_token_is_redeemed_once_and_expires() {
    let fx = Fixture::new("store");
    let store = TokenStore::open(fx.state()).expect("store");
    let now = SystemTime::now();
    let secret = TokenSecret::generate().expect("secret");
    let record = store.create(&secret, Duration::from_secs(3600), Some("n1"), now).expect("create");
    assert_eq!(record.id, secret.id());

    // Only a hash of the secret is on disk.
    let file = fx.state().join("enroll/tokens").join(secret.id());
    let text = std::fs::read_to_string(&file).expect("token file");
    assert!(!text.contains(&common::enroll::hex(&secret.0)) && !file.to_string_lossy().contains(&common::enroll::hex(&secret.0)));
    assert!(text.contains("name = n1"), "{text}");

    let found = store.lookup(&secret, now).expect("outstanding");
    assert_eq!((found.name.as_deref(), found.expires), (Some("n1"), record.expires));
    assert_eq!(store.list().expect("list"), vec![found]);
    store.claim(&secret).expect("first claim");
    assert!(matches!(store.claim(&secret), Err(TokenProblem::Used)));
    assert!(matches!(store.lookup(&secret, now), Err(TokenProblem::Used)));
    assert!(store.list().expect("list").is_empty());

    let unknown = TokenSecret::generate().expect("secret");
    assert!(matches!(store.lookup(&unknown, now), Err(TokenProblem::Unknown)));

    let short = TokenSecret::generate().expect("secret");
    store.create(&short, Duration::from_secs(60), None, now).expect("create");
    store.lookup(&short, now + Duration::from_secs(59)).expect("still valid");
    let expired = store.lookup(&short, now + Duration::from_secs(60)).expect_err("expired");
    assert!(expired.to_string().contains("expired at"), "{expired}");

    // Deleting needs a prefix of 8 digits at least; purging forgets what expired a week ago.
    assert_eq!(store.delete(&short.id()[..4]).expect("delete"), 0);
    let keep = TokenSecret::generate().expect("secret");
    store.create(&keep, Duration::from_secs(3600), None, now).expect("create");
    assert_eq!(store.delete(&keep.id()[..8]).expect("delete"), 1);
    assert!(matches!(store.lookup(&keep, now), Err(TokenProblem::Unknown)));
    store.purge(now + Duration::from_secs(8 * 24 * 3600));
    assert!(matches!(store.lookup(&short, now), Err(TokenProblem::Unknown)), "expired token forgotten");
    assert!(matches!(store.lookup(&secret, now), Err(TokenProblem::Unknown)), "used token forgotten");

    // A damaged file is reported, not taken as valid.
    std::fs::write(fx.state().join("enroll/tokens").join(keep.id()), "expires_unix = soon\n").expect("write");
    assert!(matches!(store.lookup(&keep, now), Err(TokenProblem::Store(_))));
}

#[test]
fn the_revocation_list_is_kept_on_disk_and_reread_when_it_changes() {
    let fx = Fixture::new("revoked");
    let list = RevocationList::new(fx.state(), Revocable::Node);
    assert!(!list.contains("n1"), "no file: nothing revoked");
    assert!(list.revoke("n1").expect("revoke"));
    assert!(!list.revoke("n1").expect("revoke again"), "already revoked");
    assert!(list.revoke("n2").expect("revoke"));
    assert!(list.contains("n1") && list.contains("n2") && !list.contains("n3"));

    // Another process (the CLI) changes the file; this list notices.
    let other = RevocationList::new(fx.state(), Revocable::Node);
    assert!(other.unrevoke("n1").expect("unrevoke"));
    assert!(!other.unrevoke("n1").expect("unrevoke again"));
    assert!(!list.contains("n1") && list.contains("n2"));

    let path = fx.state().join("enroll/revoked");
    let text = std::fs::read_to_string(&path).expect("file");
    assert!(text.starts_with('#') && text.ends_with("n2\n"), "{text:?}");
    std::fs::write(&path, "# hand edited\n\n  n3  \n").expect("edit");
    assert!(list.contains("n3") && !list.contains("n2"));
    assert_eq!(list.names().expect("names").into_iter().collect::<Vec<_>>(), vec!["n3".to_owned()]);
}

#[test]
fn each_role_has_its_own_revocation_list() {
    let fx = Fixture::new("revoked-roles");
    let enrollment = Enrollment::new(&fx.config);
    let peer = |role| PeerIdentity { name: "alice".into(), role };
    RevocationList::new(fx.state(), Revocable::Client).revoke("alice").expect("revoke");
    assert!(enrollment.is_revoked(Role::Client, "alice"));
    assert!(!enrollment.is_revoked(Role::Node, "alice") && !enrollment.is_revoked(Role::Operator, "alice"));
    let reason = enrollment.revocation(&peer(Role::Client)).expect("revoked");
    assert!(reason.contains("client \"alice\" is revoked"), "{reason}");
    assert_eq!(enrollment.revocation(&peer(Role::Dispatcher)), None, "dispatchers have no list");

    RevocationList::new(fx.state(), Revocable::Operator).revoke("alice").expect("revoke");
    assert!(enrollment.is_revoked(Role::Operator, "alice") && !enrollment.is_revoked(Role::Node, "alice"));
    assert!(fx.state().join("enroll/revoked-admins").exists() && !fx.state().join("enroll/revoked").exists());
}

#[test]
fn enrolment_checks_everything_before_spending_the_token() {
    let fx = Fixture::new("checks");
    let enrollment = Enrollment::new(&fx.config);
    let now = SystemTime::now();

    // A token without a name: the node's requested name is used.
    let token = fx.token(None, Duration::from_secs(3600));
    let issued = enrollment.enroll(&request(&token, "asked-for"), now).expect("issued");
    assert_eq!(issued.name, "asked-for");
    assert_eq!(issued.valid_until, now + common::config::DEFAULT_ENROLLED_CERT_VALIDITY);
    check_refused(enrollment.enroll(&request(&token, "asked-for"), now), "already used");

    // A token with a name: that name wins.
    let token = fx.token(Some("assigned"), Duration::from_secs(3600));
    let mut bad_csr = request(&token, "other");
    bad_csr.csr_der.truncate(10);
    check_refused(enrollment.enroll(&bad_csr, now), "malformed certificate signing request");
    RevocationList::new(fx.state(), Revocable::Node).revoke("assigned").expect("revoke");
    check_refused(enrollment.enroll(&request(&token, "other"), now), "node \"assigned\" is revoked");
    RevocationList::new(fx.state(), Revocable::Node).unrevoke("assigned").expect("unrevoke");
    // Neither refusal spent the token.
    assert_eq!(enrollment.enroll(&request(&token, "other"), now).expect("issued").name, "assigned");

    let token = fx.token(None, Duration::from_secs(3600));
    check_refused(enrollment.enroll(&request(&token, "bad name"), now), "invalid node name");
    check_refused(enrollment.enroll(&EnrollRequest { token_secret: vec![1, 2], ..request(&token, "n") }, now), "malformed join token");
    check_refused(enrollment.enroll(&request(&fx.token(None, Duration::from_secs(1)), "n"), now + Duration::from_secs(2)), "expired");
    let stranger = JoinToken { secret: TokenSecret::generate().expect("secret"), ..token };
    check_refused(enrollment.enroll(&request(&stranger, "n"), now), "unknown join token");

    // Without a CA directory there is no enrolment, and the reason says how to turn it on.
    let mut config = fx.config.clone();
    config.ca_dir = None;
    check_refused(Enrollment::new(&config).enroll(&request(&token, "n"), now), "enrolment is disabled on this dispatcher: no ca_dir");
    // A CA directory with another CA is refused too (and the daemon's config check says so).
    let mut config = fx.config.clone();
    config.identity = CertificateAuthority::generate("other").expect("ca").issue_identity(Role::Dispatcher, "d").expect("id");
    check_refused(Enrollment::new(&config).enroll(&request(&token, "n"), now), "cannot use its CA");
}

#[test]
fn renewal_keeps_the_name_and_refuses_revoked_nodes_and_clients() {
    let fx = Fixture::new("renew-checks");
    let enrollment = Enrollment::new(&fx.config);
    let now = SystemTime::now();
    let node = PeerIdentity { name: "n1".into(), role: Role::Node };
    let csr = || RenewRequest { csr_der: NodeKey::generate("whatever").expect("key").csr_der };
    let issued = enrollment.renew(&node, &csr(), now).expect("renewed");
    assert_eq!(issued.name, "n1");
    check_refused(enrollment.renew(&PeerIdentity { name: "c".into(), role: Role::Client }, &csr(), now), "only nodes");
    check_refused(enrollment.renew(&node, &RenewRequest { csr_der: vec![0x30, 0] }, now), "malformed");
    RevocationList::new(fx.state(), Revocable::Node).revoke("n1").expect("revoke");
    check_refused(enrollment.renew(&node, &csr(), now), "revoked");
}

#[test]
fn enrolment_and_renewal_only_ever_issue_node_certificates() {
    let fx = Fixture::new("only-nodes");
    let enrollment = Enrollment::new(&fx.config);
    let now = SystemTime::now();
    let issued_role = |issued: Issued| {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("a certificate");
        common::tls::identity_of(&der).expect("a dispy certificate").role
    };

    // The request's subject and extensions are ignored: a CSR asking to be an operator gets `node`.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["admin.operator.dispy".to_owned()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "admin");
    params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, Role::Operator.as_str());
    let csr_der = params.serialize_request(&key).expect("csr").der().to_vec();
    let token = fx.token(None, Duration::from_secs(3600));
    let request = EnrollRequest { token_secret: token.secret.0.to_vec(), csr_der: csr_der.clone(), name: "admin".into() };
    assert_eq!(issued_role(enrollment.enroll(&request, now).expect("issued")), Role::Node);

    // Renewal goes only to nodes, and yields a node certificate.
    let node = PeerIdentity { name: "n1".into(), role: Role::Node };
    assert_eq!(issued_role(enrollment.renew(&node, &RenewRequest { csr_der: csr_der.clone() }, now).expect("renewed")), Role::Node);
    for role in [Role::Client, Role::Operator] {
        let peer = PeerIdentity { name: "admin".into(), role };
        check_refused(enrollment.renew(&peer, &RenewRequest { csr_der: csr_der.clone() }, now), "only nodes");
    }
}

/// Dials `addr` with `identity`, says hello as `role`; returns the name the dispatcher saw, or
/// why it refused.
async fn hello(addr: SocketAddr, identity: &Identity, role: Role) -> Result<String, String> {
    hello_with(addr, common::tls::client_config(identity).expect("client config"), role).await
}

/// As [`hello`], with any client configuration (one without a certificate, say).
async fn hello_with(addr: SocketAddr, config: quinn::ClientConfig, role: Role) -> Result<String, String> {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
    endpoint.set_default_client_config(config);
    let conn = endpoint.connect(addr, common::tls::dispatcher_server_name()).expect("connect").await.map_err(|e| e.to_string())?;
    let talk = async {
        let mut control = Connection::open(&conn, 1 << 20).await?;
        control.write_frame(&Hello { protocol_version: PROTOCOL_VERSION, role, software: "test".into() }).await?;
        control.recv.expect_frame::<HelloReply>().await
    };
    // A refusal by closing the connection is explained by the close reason.
    let reply = talk.await.map_err(|e| conn.close_reason().map_or_else(|| e.to_string(), |reason| reason.to_string()));
    conn.close(0u32.into(), b"done");
    match reply? {
        HelloReply::Welcome { peer_name, .. } => Ok(peer_name),
        HelloReply::Refused { reason } => Err(reason),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_real_dispatcher_connects_and_is_refused_once_revoked() {
    let fx = Fixture::new("e2e");
    let dispatcher = Dispatcher::bind(fx.config.clone()).expect("bind");
    let addr = dispatcher.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dispatcher.run(async {
        let _ = stopped.await;
    }));

    let tls_dir = fx.scratch.path().join("node-tls");
    let token = fx.token(Some("worker-1"), Duration::from_secs(600));
    let options = JoinOptions {
        address: addr.to_string(),
        token: token.clone(),
        name: "my-hostname".into(),
        tls_dir: Some(tls_dir.clone()),
        replace: false,
    };
    let enrolled = node::enroll::join(&options).await.expect("join");
    assert_eq!(enrolled.name, "worker-1", "the token's name wins");
    let validity = Validity::of(&enrolled.identity.cert).expect("validity");
    assert!(validity.not_after <= SystemTime::now() + common::config::DEFAULT_ENROLLED_CERT_VALIDITY);

    // The written identity is what the daemon loads, and it connects as a node.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tls_dir.join("key.pem")).expect("key.pem").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let identity = Identity::load(&tls_dir).expect("identity directory");
    assert_eq!(hello(addr, &identity, Role::Node).await, Ok("worker-1".to_owned()));

    // The token works once, and an existing identity is not overwritten by accident.
    let again = node::enroll::join(&options).await.expect_err("existing identity");
    assert!(matches!(again, JoinError::Exists(_)), "{again}");
    let again = node::enroll::join(&JoinOptions { replace: true, ..options.clone() }).await.expect_err("used token");
    assert!(again.to_string().contains("already used"), "{again}");

    // A token from another cluster: the node refuses the dispatcher before sending anything.
    let foreign = JoinToken { ca_fingerprint: Fingerprint::of(b"another CA"), ..fx.token(None, Duration::from_secs(600)) };
    let mismatch = node::enroll::join(&JoinOptions { token: foreign, tls_dir: None, ..options.clone() }).await.expect_err("pinned");
    assert!(mismatch.to_string().contains("the dispatcher's CA does not match the token"), "{mismatch}");

    // Without a certificate, only a node may even ask: a client or operator hello is refused.
    for role in [Role::Client, Role::Operator] {
        let (config, _) = common::enroll::enrolment_client_config(&token).expect("enrolment config");
        let refused = hello_with(addr, config, role).await.expect_err("no certificate");
        assert!(refused.contains("only nodes can enrol with a join token"), "{refused}");
    }

    // Revoked: refused at the connection, and a new token for the name does not help.
    RevocationList::new(fx.state(), Revocable::Node).revoke("worker-1").expect("revoke");
    let refused = hello(addr, &identity, Role::Node).await.expect_err("revoked");
    assert!(refused.contains("revoked"), "{refused}");
    let rejoin = JoinOptions { token: fx.token(Some("worker-1"), Duration::from_secs(600)), replace: true, ..options.clone() };
    let rejoin = node::enroll::join(&rejoin).await.expect_err("revoked");
    assert!(rejoin.to_string().contains("revoked"), "{rejoin}");

    let _ = stop.send(());
    server.await.expect("dispatcher task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_without_a_ca_dir_refuses_to_enrol() {
    let fx = Fixture::new("disabled");
    let mut config = fx.config.clone();
    config.ca_dir = None;
    let dispatcher = Dispatcher::bind(config).expect("bind");
    let addr = dispatcher.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dispatcher.run(async {
        let _ = stopped.await;
    }));
    let options = JoinOptions {
        address: addr.to_string(),
        token: fx.token(None, Duration::from_secs(600)),
        name: "n".into(),
        tls_dir: None,
        replace: false,
    };
    let refused = node::enroll::join(&options).await.expect_err("disabled");
    assert!(refused.to_string().contains("enrolment is disabled on this dispatcher"), "{refused}");
    let _ = stop.send(());
    server.await.expect("dispatcher task");
}

/// Serves one mutual-TLS connection with [`watch_peer`], as the dispatcher's sessions do.
async fn renewal_server(fx: &Fixture) -> (SocketAddr, tokio::task::JoinHandle<Result<(), StreamError>>) {
    let enrollment = Enrollment::new(&fx.config);
    let server = common::tls::server_config(&fx.config.identity).expect("server config");
    let endpoint = quinn::Endpoint::server(server, SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
    let addr = endpoint.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let conn = endpoint.accept().await.expect("incoming").await.expect("handshake");
        let peer = common::tls::peer_identity(&conn).expect("peer");
        watch_peer(&conn, &peer, &enrollment).await
    });
    (addr, task)
}

async fn dial(addr: SocketAddr, identity: &Identity) -> quinn::Connection {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
    endpoint.set_default_client_config(common::tls::client_config(identity).expect("client config"));
    endpoint.connect(addr, common::tls::dispatcher_server_name()).expect("connect").await.expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_node_renews_and_is_dropped_once_revoked() {
    let fx = Fixture::new("renew");
    let (addr, server) = renewal_server(&fx).await;
    // 30 min left of 90 (pki backdates by an hour): renewal is due now.
    let identity = fx.node_identity("n1", Duration::from_secs(30 * 60));
    let conn = dial(addr, &identity).await;
    let tls_dir = fx.scratch.path().join("n1");
    std::fs::create_dir_all(&tls_dir).expect("dir");

    let renewed = node::enroll::renew(&conn, &identity, Some(&tls_dir)).await.expect("renewed");
    assert_eq!(renewed.name, "n1");
    assert_ne!(renewed.identity.cert, identity.cert);
    assert_eq!(renewed.identity.ca, identity.ca);
    assert!(tls_dir.join("cert.pem").exists() && tls_dir.join("key.pem").exists() && !tls_dir.join("ca.pem").exists());
    common::tls::client_config(&renewed.identity).expect("the new certificate matches the new key");

    // keep_renewed renews what is due and publishes the new identity.
    let (updates, mut watch) = tokio::sync::watch::channel(identity.clone());
    tokio::select! {
        r = node::enroll::keep_renewed(&conn, &updates, None) => panic!("keep_renewed ended: {r:?}"),
        changed = watch.changed() => changed.expect("published"),
    }
    let fresh = watch.borrow().clone();
    let validity = Validity::of(&fresh.cert).expect("validity");
    assert!(validity.renew_at() > SystemTime::now() + Duration::from_secs(24 * 3600), "a week-long certificate");

    // Revoked while connected: renewal is refused and the dispatcher side closes the connection.
    RevocationList::new(fx.state(), Revocable::Node).revoke("n1").expect("revoke");
    match node::enroll::renew(&conn, &identity, None).await {
        Err(JoinError::Refused(reason)) => assert!(reason.contains("revoked"), "{reason}"),
        Err(JoinError::Stream(e)) => assert!(e.is_connection_lost(), "{e}"),
        other => panic!("renewed a revoked node: {other:?}"),
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.expect("closed by the dispatcher");
    assert!(closed.to_string().contains("revoked"), "{closed}");
    let ended = server.await.expect("server task").expect_err("ends with the connection");
    assert!(ended.is_connection_lost(), "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_operator_is_dropped_once_revoked() {
    let fx = Fixture::new("drop-operator");
    let (addr, server) = renewal_server(&fx).await;
    let identity = fx.ca.issue_identity(Role::Operator, "root").expect("operator identity");
    let conn = dial(addr, &identity).await;
    // Another role's list does not touch it.
    RevocationList::new(fx.state(), Revocable::Client).revoke("root").expect("revoke");
    RevocationList::new(fx.state(), Revocable::Operator).revoke("root").expect("revoke");
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.expect("closed by the dispatcher");
    assert!(closed.to_string().contains("operator \"root\" is revoked"), "{closed}");
    let ended = server.await.expect("server task").expect_err("ends with the connection");
    assert!(ended.is_connection_lost(), "{ended}");
}
