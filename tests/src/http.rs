//! A minimal HTTP/1.1 client for the daemons' `/metrics` and status page: one `GET` per
//! connection, answered with its status code and body.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An answer to [`http_get`].
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The headers, as sent.
    pub headers: String,
    /// The body.
    pub body: String,
}

/// `GET path` from `addr` (`host:port`), with extra header lines such as
/// `Authorization: Bearer TOKEN`.
///
/// # Errors
/// If the address cannot be reached or the answer is not HTTP.
pub fn http_get(addr: &str, path: &str, headers: &[&str]) -> std::io::Result<HttpReply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP answer: {answer:?}"));
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(bad)?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.to_owned() };
    Ok(HttpReply { status, headers: head.to_owned(), body })
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// If no socket can be bound.
pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP socket on 127.0.0.1");
    listener.local_addr().expect("a bound socket has an address").port()
}

/// The body of a chunked transfer.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
