//! An S3-compatible server on loopback for object-input tests: moto's server mode
//! (`moto_server`, from `pip install 'moto[server]'`), found through `DISPY_TEST_MOTO` (which
//! `.ci/run` sets after installing it in a venv) or on `PATH`. Buckets and objects are made with
//! plain HTTP requests (moto accepts unsigned ones), so the test process's environment stays
//! untouched; the AWS variables go to the cluster's processes only ([`S3Server::env`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running moto server, killed on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    /// Starts moto on a free loopback port and waits until it answers; `None` (after printing
    /// `SKIPPED`, or failing under `DISPY_TEST_STRICT=1`) when `moto_server` is not installed.
    ///
    /// # Panics
    /// When moto is installed but does not start.
    pub fn start(test: &str) -> Option<S3Server> {
        let server = S3Server::start_if_installed();
        if server.is_none() {
            crate::skip(test, "moto_server is not installed (pip install 'moto[server]'; or set DISPY_TEST_MOTO)");
        }
        server
    }

    /// Like [`S3Server::start`] without the `SKIPPED` line: `None` when moto is not installed
    /// (the benchmark then leaves its object-store row out and says so).
    ///
    /// # Panics
    /// When moto is installed but does not start.
    pub fn start_if_installed() -> Option<S3Server> {
        let program = moto()?;
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let server = S3Server { child, port };
        let up = crate::poll_until(Duration::from_secs(30), || server.request("GET", "/", b"").is_ok());
        assert!(up, "moto_server did not answer on port {port}");
        Some(server)
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The AWS variables a process needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Creates a bucket.
    ///
    /// # Panics
    /// When the server refuses.
    pub fn create_bucket(&self, bucket: &str) {
        let status = self.request("PUT", &format!("/{bucket}"), b"").expect("create bucket");
        assert_eq!(status, 200, "creating bucket {bucket}");
    }

    /// Writes an object.
    ///
    /// # Panics
    /// When the server refuses.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let status = self.request("PUT", &format!("/{bucket}/{key}"), bytes).expect("put object");
        assert_eq!(status, 200, "writing s3://{bucket}/{key}");
    }

    /// Kills the server (a store lost mid-job).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One HTTP/1.1 request; the response's status.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.80}")))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `DISPY_TEST_MOTO`, else `moto_server` on `PATH`.
fn moto() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DISPY_TEST_MOTO").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join("moto_server")).find(|p| p.is_file())
}
