//! Tests of the join-token format, node names, certificate requests and the CA-pinning
//! verifier, without a network.

use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls_pki_types::pem::PemObject;

use super::*;
use crate::pki::CertificateAuthority;
use wire::proto::Role;

#[track_caller]
fn check_token(text: &str, expect: Result<(), &str>) {
    match (text.parse::<JoinToken>(), expect) {
        (Ok(token), Ok(())) => assert_eq!(token.to_string(), text.trim().to_ascii_lowercase()),
        (Err(e), Err(message)) => assert!(e.to_string().contains(message), "{e}"),
        (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn tokens_round_trip_and_bad_ones_are_explained() {
    let token = JoinToken {
        secret: TokenSecret::generate().expect("random"),
        ca_fingerprint: Fingerprint::of(b"some CA"),
    };
    let text = token.to_string();
    assert!(text.starts_with("dispy1."));
    assert_eq!(text.len(), 6 + 1 + 32 + 1 + 64);
    assert_eq!(text.parse::<JoinToken>().expect("parses"), token);
    check_token(&text, Ok(()));
    check_token(&format!("  {}\n", text.to_ascii_uppercase().replace("DISPY1", "dispy1")), Ok(()));

    let secret = "00112233445566778899aabbccddeeff";
    let fingerprint = "ab".repeat(32);
    check_token("", Err("not a dispy join token"));
    check_token("hello", Err("not a dispy join token"));
    check_token(&format!("dispy1.{secret}"), Err("not a dispy join token"));
    check_token(&format!("dispy1.{secret}.{fingerprint}.x"), Err("not a dispy join token"));
    check_token(&format!("k8s1.{secret}.{fingerprint}"), Err("not a dispy join token"));
    check_token(&format!("dispy2.{secret}.{fingerprint}"), Err("unsupported join token version \"dispy2\""));
    check_token(&format!("dispy1.{}.{fingerprint}", &secret[2..]), Err("secret must be 32 hex digits, found \"30 characters\""));
    check_token(&format!("dispy1.+f{}.{fingerprint}", &secret[2..]), Err("secret must be 32 hex digits"));
    check_token(&format!("dispy1.{secret}.{}", &fingerprint[1..]), Err("CA fingerprint must be 64 hex digits"));
    check_token(&format!("dispy1.{secret}.{}zz", &fingerprint[2..]), Err("CA fingerprint must be 64 hex digits"));
    check_token(&format!("dispy1.{secret}.{fingerprint}"), Ok(()));
}

#[test]
fn secrets_are_random_hidden_and_stored_by_hash() {
    let a = TokenSecret::generate().expect("random");
    let b = TokenSecret::generate().expect("random");
    assert_ne!(a, b);
    assert_eq!(format!("{a:?}"), "TokenSecret(..)");
    assert_eq!(a.id().len(), 64);
    assert_ne!(a.id(), hex(&a.0), "the id is a hash, not the secret");
    assert_eq!(TokenSecret::from_slice(&a.0), Some(a));
    assert_eq!(TokenSecret::from_slice(&[1, 2, 3]), None);
    // SHA-256 of the empty string, so the fingerprint is the standard one `openssl` prints.
    assert_eq!(Fingerprint::of(b"").to_string(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

#[test]
fn times_are_printed_in_utc() {
    let at = |seconds| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
    assert_eq!(format_utc(at(0)), "1970-01-01 00:00:00 UTC");
    assert_eq!(format_utc(at(951_782_400)), "2000-02-29 00:00:00 UTC");
    assert_eq!(format_utc(at(1_700_000_000)), "2023-11-14 22:13:20 UTC");
    assert_eq!(format_utc(at(4_102_444_799)), "2099-12-31 23:59:59 UTC");
}

#[test]
fn node_names() {
    for good in ["a", "node-1", "gpu_7.rack2", &"x".repeat(63)] {
        check_node_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for (bad, reason) in [
        ("", "empty"),
        (&"x".repeat(64) as &str, "longer than 63"),
        ("-a", "start with a letter"),
        (".a", "start with a letter"),
        ("a b", "only letters"),
        ("a\nb", "only letters"),
        ("nöde", "only letters"),
    ] {
        let error = check_node_name(bad).expect_err(bad).to_string();
        assert!(error.contains(reason), "{bad:?}: {error}");
    }
}

#[test]
fn a_node_key_comes_with_a_request_for_it() {
    let key = NodeKey::generate("node-a").expect("key");
    assert!(key.key_pem.contains("PRIVATE KEY"));
    let csr = rcgen::CertificateSigningRequestParams::from_der(&key.csr_der.clone().into()).expect("valid request");
    let cn = csr.params.distinguished_name.get(&DnType::CommonName);
    assert_eq!(cn, Some(&rcgen::DnValue::Utf8String("node-a".into())));
}

#[test]
fn renewal_is_due_with_a_third_of_the_lifetime_left() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let validity = Validity { not_before: start, not_after: start + Duration::from_secs(300) };
    assert_eq!(validity.renew_at(), start + Duration::from_secs(200));

    let ca = CertificateAuthority::generate("t").expect("ca");
    let issued = ca.issue(Role::Node, "n", Duration::from_secs(3 * 3600)).expect("issue");
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("pem");
    let validity = Validity::of(&der).expect("validity");
    // `pki` backdates certificates by an hour: 4 h of lifetime, renew with 80 min left.
    let lifetime = validity.not_after.duration_since(validity.not_before).expect("ordered");
    assert_eq!(lifetime, Duration::from_secs(4 * 3600));
    assert_eq!(validity.not_after.duration_since(validity.renew_at()).expect("ordered"), Duration::from_secs(4800));
    assert!(Validity::of(b"junk").is_err());
}

/// A CA and the dispatcher certificate it issued, as the dispatcher sends them.
struct Cluster {
    ca: CertificateDer<'static>,
    dispatcher: CertificateDer<'static>,
    node: CertificateDer<'static>,
}

fn cluster(name: &str) -> Cluster {
    let ca = CertificateAuthority::generate(name).expect("ca");
    let dispatcher = ca.issue_identity(Role::Dispatcher, "dispatcher").expect("dispatcher");
    let node = ca.issue_identity(Role::Node, "n").expect("node");
    Cluster { ca: dispatcher.ca, dispatcher: dispatcher.cert, node: node.cert }
}

fn verify(verifier: &PinnedCaVerifier, leaf: &CertificateDer<'_>, chain: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(crate::pki::DISPATCHER_SERVER_NAME).expect("a DNS name");
    verifier.verify_server_cert(leaf, chain, &name, &[], UnixTime::now()).map(|_| ())
}

#[test]
fn the_pinned_ca_is_accepted_and_any_other_refused() {
    let ours = cluster("ours");
    let theirs = cluster("theirs");
    let verifier = PinnedCaVerifier::new(Fingerprint::of(&ours.ca));

    verify(&verifier, &ours.dispatcher, std::slice::from_ref(&ours.ca)).expect("our dispatcher is accepted");
    assert!(!verifier.saw_other_ca());

    // A node certificate of our CA does not name dispatcher.dispy.
    let error = verify(&verifier, &ours.node, std::slice::from_ref(&ours.ca)).expect_err("not a dispatcher");
    assert!(!verifier.saw_other_ca(), "{error}");

    // Another cluster's dispatcher, sending its own CA.
    verify(&verifier, &theirs.dispatcher, std::slice::from_ref(&theirs.ca)).expect_err("other CA");
    assert!(verifier.saw_other_ca());

    // Another cluster's dispatcher sending our CA certificate (public) after its own leaf.
    let verifier = PinnedCaVerifier::new(Fingerprint::of(&ours.ca));
    verify(&verifier, &theirs.dispatcher, std::slice::from_ref(&ours.ca)).expect_err("leaf not signed by the pinned CA");

    // No chain at all.
    verify(&verifier, &ours.dispatcher, &[]).expect_err("no CA sent");
    assert!(verifier.saw_other_ca());
}

#[test]
fn the_enrolment_client_config_builds() {
    let token = JoinToken { secret: TokenSecret([7; SECRET_LEN]), ca_fingerprint: Fingerprint([1; FINGERPRINT_LEN]) };
    let (_, verifier) = enrolment_client_config(&token).expect("config");
    assert!(!verifier.saw_other_ca());
}

#[test]
fn a_signed_request_gets_our_name_role_and_lifetime_and_nothing_it_asked_for() {
    let dir = std::env::temp_dir().join(format!("dispy-enroll-sign-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = CertificateAuthority::generate("t").expect("ca");
    ca.save(&dir).expect("save");
    let presented = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("pem");
    let signer = CaSigner::load(&dir, &presented).expect("load");
    assert_eq!(signer.fingerprint(), Fingerprint::of(&presented));

    // A hostile request: another name, the client role, the dispatcher's server name, a CA.
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![crate::pki::DISPATCHER_SERVER_NAME.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "evil");
    params.distinguished_name.push(DnType::OrganizationalUnitName, "client");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&key).expect("csr");
    let request = CertRequest::parse(csr.der()).expect("a valid request");

    let now = SystemTime::now();
    let issued = signer.sign_node(&request, "good", Duration::from_secs(3600), now).expect("signed");
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("pem");
    assert_eq!(crate::tls::identity_of(&der).expect("dispy cert"), crate::tls::PeerIdentity { name: "good".into(), role: Role::Node });
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("x509");
    assert!(!parsed.is_ca());
    let sans = parsed.subject_alternative_name().expect("ext").expect("san").value.general_names.clone();
    assert_eq!(format!("{sans:?}"), r#"[DNSName("good.node.dispy")]"#);
    let eku = parsed.extended_key_usage().expect("ext").expect("eku").value.clone();
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(parsed.public_key().subject_public_key.data.as_ref(), key.public_key_raw(), "the request's key, nothing else");
    let validity = Validity::of(&der).expect("validity");
    assert_eq!(validity.not_after, issued.valid_until - Duration::from_nanos(u64::from(now.duration_since(UNIX_EPOCH).expect("now").subsec_nanos())));

    // The node's key chains to the CA: a node certificate the cluster accepts.
    let identity = crate::pki::Identity { ca: presented.clone(), cert: der, key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()) };
    crate::tls::client_config(&identity).expect("certificate and key match");

    assert!(matches!(CertRequest::parse(b"\x30\x03junk"), Err(SignError::MalformedCsr(_))));
    let other = CertificateAuthority::generate("other").expect("ca");
    let other = CertificateDer::from_pem_slice(other.cert_pem().as_bytes()).expect("pem");
    let error = CaSigner::load(&dir, &other).expect_err("not the presented CA");
    assert!(error.to_string().contains("not the CA in the dispatcher's tls_dir"), "{error}");
    let error = CaSigner::load(&dir.join("missing"), &presented).expect_err("no CA");
    assert!(error.to_string().contains("cannot read ca.pem"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}
