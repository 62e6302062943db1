//! The access rule of the daemons' HTTP address: which addresses need a token, how token files
//! are read, and which requests carry the token.

use std::io::Write;
use std::net::SocketAddr;

use super::{percent_decode, Access, HttpError};

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a test address")
}

fn token_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(contents.as_bytes()).expect("write the token");
    file
}

#[test]
fn loopback_is_open_and_elsewhere_needs_a_token() {
    assert!(!Access::new(addr("127.0.0.1:9000"), None).expect("loopback").requires_token());
    assert!(!Access::new(addr("[::1]:9000"), None).expect("loopback v6").requires_token());
    for exposed in ["0.0.0.0:0", "10.1.2.3:9000", "[::]:9000"] {
        let refused = Access::new(addr(exposed), None);
        assert!(matches!(refused, Err(HttpError::Exposed { .. })), "{exposed}: {refused:?}");
    }
    let file = token_file("s3cret\n");
    assert!(Access::new(addr("0.0.0.0:0"), Some(file.path())).expect("with a token").requires_token());
    // A token set for a loopback address is required there too.
    assert!(Access::new(addr("127.0.0.1:0"), Some(file.path())).expect("loopback with a token").requires_token());
}

#[test]
fn unusable_token_files_are_refused() {
    let empty = token_file(" \n");
    assert!(matches!(Access::new(addr("0.0.0.0:0"), Some(empty.path())), Err(HttpError::EmptyToken { .. })));
    let missing = std::path::Path::new("/nonexistent/dispy-token");
    assert!(matches!(Access::new(addr("0.0.0.0:0"), Some(missing)), Err(HttpError::TokenFile { .. })));
}

#[track_caller]
fn check(authorization: Option<&str>, query: Option<&str>, expect: bool) {
    let file = token_file("tok en/+1\n");
    let access = Access::new(addr("0.0.0.0:0"), Some(file.path())).expect("with a token");
    assert_eq!(access.allows(authorization, query), expect, "{authorization:?} {query:?}");
}

#[test]
fn requests_carry_the_token_in_a_header_or_the_query() {
    check(Some("Bearer tok en/+1"), None, true);
    check(Some("Bearer tok en/+2"), None, false);
    check(Some("Bearer tok"), None, false);
    check(Some("Basic tok en/+1"), None, false);
    check(None, None, false);
    check(None, Some("token=tok%20en%2F%2B1"), true);
    check(None, Some("a=1&token=tok+en%2F%2B1"), true);
    check(None, Some("token=wrong"), false);
    check(None, Some("tokens=tok%20en%2F%2B1"), false);
    assert!(Access::open().allows(None, None));
}

#[test]
fn percent_decoding_keeps_malformed_escapes() {
    assert_eq!(percent_decode("a%2Fb"), "a/b");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
}
