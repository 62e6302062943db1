//! The access rule of the daemons' HTTP address: which addresses need a token, how token files
//! are read, which requests carry the token, and the bounds on connections.

use std::io::Write;
use std::net::SocketAddr;

use axum::Router;

use super::{percent_decode, Access, HttpError, HttpServer, Limits};

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

/// Connections past the limit wait until one closes, and a connection that sends nothing is
/// closed after the idle time: idle connections cannot hold the address forever.
#[tokio::test]
async fn connections_are_bounded_and_idle_ones_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let idle = std::time::Duration::from_secs(3);
    let server = HttpServer::bind(addr("127.0.0.1:0"), Access::open())
        .expect("bind")
        .with_limits(Limits { connections: 2, idle });
    let address = server.local_addr().expect("address");
    let router = Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
    tokio::spawn(server.serve(router, Router::new(), std::future::pending()));

    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(address).await.expect("connect"));
    }
    let mut asking = tokio::net::TcpStream::connect(address).await.expect("the kernel queues it");
    asking.write_all(b"GET /ping HTTP/1.1\r\nhost: dispy\r\nconnection: close\r\n\r\n").await.expect("send");
    let mut answer = Vec::new();
    let early = tokio::time::timeout(idle / 6, asking.read_to_end(&mut answer)).await;
    assert!(early.is_err(), "a third connection was served while two were open: {answer:?}");

    // The silent ones are closed after the idle time, and the waiting request is served.
    tokio::time::timeout(idle * 10, asking.read_to_end(&mut answer)).await.expect("served once the idle ones closed").expect("read");
    assert!(String::from_utf8_lossy(&answer).ends_with("pong"), "{}", String::from_utf8_lossy(&answer));
    for mut connection in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(idle * 10, connection.read(&mut byte)).await.expect("closed by the server");
        assert!(matches!(read, Ok(0) | Err(_)), "an idle connection stayed open");
    }
}
