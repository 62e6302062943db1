//! The transport floor under W2: a QUIC echo between two processes with dispy's TLS, transport
//! settings and framing, and no dispy logic. `bench echo-server --tls-dir DIR` (a hidden
//! subcommand; the bench starts it as a child process) accepts connections and sends every frame
//! of a client's stream back on a stream of its own; [`Echo::round_trips`] times frames sent one
//! after another's echo. A dispy chunk round trip crosses two such round trips (client to
//! dispatcher, dispatcher to node), so twice this figure is what no scheduling work could beat.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use wire::frame::DEFAULT_MAX_MESSAGE;
use common::net::{FramedRecv, FramedSend};
use common::pki::Identity;

/// Serves echoes until killed; prints `listening PORT` on stdout first.
///
/// # Errors
/// When the identity cannot be loaded or the socket bound.
pub(crate) async fn serve(tls_dir: &Path) -> anyhow::Result<()> {
    let identity = Identity::load(tls_dir)?;
    let server = common::tls::server_config(&identity)?;
    let endpoint = common::net::endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), Some(server))?;
    println!("listening {}", endpoint.local_addr()?.port());
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let echo = async {
                let conn = incoming.await?;
                let mut recv = FramedRecv::new(conn.accept_uni().await?, DEFAULT_MAX_MESSAGE);
                let mut send = FramedSend::new(conn.open_uni().await?);
                while let Some(frame) = recv.read_raw().await? {
                    send.queue_raw(&frame)?;
                    send.flush().await?;
                }
                Ok::<_, anyhow::Error>(())
            };
            // A client that goes away ends its echo; nothing to report.
            let _ = echo.await;
        });
    }
    Ok(())
}

/// An echo server child process; killed on drop.
pub(crate) struct Echo {
    child: Child,
    address: SocketAddr,
}

impl Echo {
    /// Starts `bench echo-server` with the dispatcher's identity in `tls_dir`.
    ///
    /// # Errors
    /// When the process cannot start or does not say where it listens.
    pub(crate) fn spawn(tls_dir: &Path) -> anyhow::Result<Echo> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("echo-server")
            .arg("--tls-dir")
            .arg(tls_dir)
            .stdout(Stdio::piped())
            .spawn()
            .context("failed to start the echo server")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("no stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        let port: u16 = line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).with_context(|| {
            format!("the echo server said {line:?}, not where it listens")
        })?;
        Ok(Echo { child, address: SocketAddr::from(([127, 0, 0, 1], port)) })
    }

    /// Connects with `identity` and returns `count` round trips of `frame`, in µs, after as many
    /// untimed ones.
    ///
    /// # Errors
    /// On any transport failure or a wrong echo.
    pub(crate) async fn round_trips(&self, identity: &Identity, frame: &[u8], count: usize) -> anyhow::Result<Vec<f64>> {
        let mut endpoint = common::net::endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), None)?;
        endpoint.set_default_client_config(common::tls::client_config(identity)?);
        let conn = endpoint.connect(self.address, common::tls::dispatcher_server_name())?.await?;
        let mut send = FramedSend::new(conn.open_uni().await?);
        send.queue_raw(frame)?;
        send.flush().await?;
        let mut recv = FramedRecv::new(conn.accept_uni().await?, DEFAULT_MAX_MESSAGE);
        // The frame that opened the streams comes back first, untimed.
        let mut echoed = recv.read_raw().await?;
        let mut trips = Vec::with_capacity(count);
        for n in 0..2 * count {
            if echoed.as_deref() != Some(frame) {
                bail!("the echo differs from the frame sent");
            }
            let started = Instant::now();
            send.queue_raw(frame)?;
            send.flush().await?;
            echoed = recv.read_raw().await?;
            if n >= count {
                trips.push(crate::workloads::micros(started.elapsed()));
            }
        }
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok(trips)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
