//! An HTTPS file server on loopback for object-input tests: the files of one directory at
//! `https://127.0.0.1:PORT/NAME`, answering `HEAD` and `GET` with one byte range (206 and
//! `Content-Range`, as object stores do) or 404, one request per connection. Its certificate,
//! for the IP address 127.0.0.1, is signed by a CA made here whose PEM file
//! ([`HttpsFileServer::ca_file`]) is what a node's `object_store_ca_file` (and a submitter's
//! `SSL_CERT_FILE`) must name to trust it. Blocking rustls on std threads: no async runtime.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A running server, stopped on drop.
#[derive(Debug)]
pub struct HttpsFileServer {
    port: u16,
    ca_file: PathBuf,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl HttpsFileServer {
    /// Serves the files in `root`, with the CA's certificate written to `dir/https-ca.pem`.
    ///
    /// # Panics
    /// If the certificates cannot be made or no port can be bound.
    pub fn start(root: &Path, dir: &Path) -> HttpsFileServer {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let ca_file = dir.join("https-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write the CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server parameters");
        let cert = params.signed_by(&key, &issuer).expect("a server certificate");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)
            .expect("a server configuration");
        let tls = Arc::new(tls);

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
        let port = listener.local_addr().expect("an address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (root, stopping, counted) = (root.to_owned(), Arc::clone(&stop), Arc::clone(&requests));
        let accept = std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let (tls, root, counted) = (Arc::clone(&tls), root.clone(), Arc::clone(&counted));
                // Detached: each ends with its connection (a read timeout bounds a silent peer).
                std::thread::spawn(move || {
                    if serve(tls, tcp, &root).is_ok() {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        HttpsFileServer { port, ca_file, stop, requests, accept: Some(accept) }
    }

    /// The URL of the file `name`.
    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    /// The allowlist entry (`object_store_buckets`) covering every URL of this server.
    pub fn prefix(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Requests answered so far, so a test can tell the server was really asked.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsFileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Answers one request on `tcp`.
fn serve(tls: Arc<ServerConfig>, tcp: TcpStream, root: &Path) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let connection = ServerConnection::new(tls).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(connection, tcp);
    let head = read_head(&mut stream)?;
    let mut lines = head.lines();
    let mut request = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (request.next().unwrap_or_default(), request.next().unwrap_or_default());
    let range = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("range"))
        .map(|(_, value)| value.trim().to_owned());
    let name = target.trim_start_matches('/');
    let file = (!name.contains('/') && !name.contains("..")).then(|| std::fs::read(root.join(name)).ok()).flatten();
    let (status, headers, body) = match file {
        None => ("404 Not Found", String::new(), Vec::new()),
        Some(bytes) => match range.as_deref().and_then(|range| byte_range(range, bytes.len() as u64)) {
            Some((first, last)) => (
                "206 Partial Content",
                format!("Content-Range: bytes {first}-{last}/{}\r\n", bytes.len()),
                bytes[first as usize..=last as usize].to_vec(),
            ),
            None => ("200 OK", String::new(), bytes),
        },
    };
    let mut answer = format!(
        "HTTP/1.1 {status}\r\n{headers}Accept-Ranges: bytes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        answer.extend_from_slice(&body);
    }
    stream.write_all(&answer)?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// The request line and headers, up to the blank line.
fn read_head(stream: &mut impl Read) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 || head.len() > 64 << 10 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no complete request"));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The inclusive bounds of `bytes=FIRST-LAST` or `bytes=FIRST-` within `len` bytes.
fn byte_range(range: &str, len: u64) -> Option<(u64, u64)> {
    let (first, last) = range.strip_prefix("bytes=")?.split_once('-')?;
    let first: u64 = first.parse().ok()?;
    let last = if last.is_empty() { len.checked_sub(1)? } else { last.parse::<u64>().ok()?.min(len.checked_sub(1)?) };
    (first <= last).then_some((first, last))
}
