//! Object URLs and the node's allowlist; reads against a live S3-compatible server are in the
//! integration tests (`tests/integration/object_input.rs`).

use wire::chunk::{ChunkRef, Segment};

use super::*;

#[track_caller]
fn check_parse(text: &str, expect: Result<ObjectUrl, &str>) {
    match (ObjectUrl::parse(text), expect) {
        (Ok(url), Ok(expect)) => {
            assert_eq!(url, expect);
            assert_eq!(url.to_string(), text, "prints as written");
        }
        (Err(error), Err(reason)) => assert!(error.to_string().contains(reason), "{error}"),
        (got, expect) => panic!("{text}: got {got:?}, expected {expect:?}"),
    }
}

fn s3(bucket: &str, key: &str) -> ObjectUrl {
    ObjectUrl::S3 { bucket: bucket.into(), key: key.into() }
}

#[test]
fn urls_parse() {
    check_parse("s3://logs/2026/day.txt", Ok(s3("logs", "2026/day.txt")));
    check_parse("s3://logs/", Ok(s3("logs", "")));
    check_parse(
        "https://data.example.org:8443/pub/a.txt",
        Ok(ObjectUrl::Http { origin: "https://data.example.org:8443".into(), path: "pub/a.txt".into() }),
    );
    check_parse("s3:///key", Err("no bucket"));
    check_parse("https:///x", Err("no host"));
    check_parse("ftp://h/x", Err("expected s3://BUCKET/KEY"));
    check_parse("https://h/x?sig=1", Err("query strings"));
    assert!(s3("logs", "").is_prefix() && s3("logs", "2026/").is_prefix() && !s3("logs", "a").is_prefix());
}

#[test]
fn the_allowlist_matches_buckets_and_url_prefixes_on_boundaries() {
    let allow = Allowlist::new(vec!["logs".into(), "https://h.org/pub".into(), "https://x.org/".into()]);
    let http = |text: &str| ObjectUrl::parse(text).expect("url");
    assert!(allow.allows(&s3("logs", "a")));
    assert!(!allow.allows(&s3("logs2", "a")));
    assert!(!allow.allows(&s3("log", "a")));
    assert!(allow.allows(&http("https://h.org/pub/a.txt")));
    assert!(!allow.allows(&http("https://h.org/public.txt")));
    assert!(!allow.allows(&http("https://h.org.evil.com/pub/a")));
    assert!(allow.allows(&http("https://x.org/anything")));
    assert!(!allow.allows(&http("http://x.org/anything")), "the scheme counts");
    assert!(!Allowlist::default().allows(&s3("logs", "a")), "empty allows nothing");
    // A bucket entry never allows an https URL that happens to contain it.
    assert!(!Allowlist::new(vec!["h.org".into()]).allows(&http("https://h.org/a")));

    let chunk = |path: &str| ChunkRef { segments: vec![Segment { path: path.into(), offset: 0, len: 1, fingerprint: None }], align: None };
    assert!(allow.check(&chunk("s3://logs/a")).is_ok());
    let refused = allow.check(&chunk("s3://secret/a")).expect_err("not allowed").to_string();
    assert_eq!(refused, "object input s3://secret/a: secret is not in this node's object_store_buckets");
}

#[test]
fn a_chunk_over_the_limit_is_refused_before_any_request() {
    let stores = ObjectStores::new(None).expect("runtime");
    let chunk = ChunkRef { segments: vec![Segment { path: "s3://logs/a".into(), offset: 0, len: 10, fingerprint: None }], align: None };
    let allow = Allowlist::new(vec!["logs".into()]);
    let error = stores.read_chunk(&chunk, &allow, 5).expect_err("too large");
    assert_eq!(error.to_string(), "object-input chunk of 10 bytes exceeds the 5-byte limit");
}

#[test]
fn a_ca_file_must_hold_pem_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = common::pki::CertificateAuthority::generate("test").expect("a CA");
    let (good, empty, missing) = (dir.path().join("ca.pem"), dir.path().join("empty.pem"), dir.path().join("none.pem"));
    std::fs::write(&good, format!("{}{}", ca.cert_pem(), ca.cert_pem())).expect("write");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    assert_eq!(read_certificates(&good).map(|roots| roots.len()), Ok(2));
    assert!(read_certificates(&empty).expect_err("no certificate").ends_with("holds no PEM certificate"));
    assert!(read_certificates(&missing).expect_err("no file").starts_with("cannot read"));
}
