//! Framed QUIC streams: the only place that moves frames between quinn and the codec in
//! [`wire::frame`]. A [`Connection`] is the control stream of one peer; [`FramedSend`] and
//! [`FramedRecv`] are its halves and also serve the unidirectional bulk streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

use wire::frame::{self, FrameError};

/// UDP buffer size asked of the kernel. The default (~208 KiB) overflows when thousands of nodes
/// report at once and the dropped datagrams cost retransmissions; the kernel caps the request
/// at `net.core.rmem_max`/`wmem_max`, which operators of large clusters raise.
const SOCKET_BUFFER: usize = 8 << 20;

/// How long a node or client waits without hearing from the dispatcher before it calls the
/// connection dead and dials again (the node's `dispatcher_timeout`): a dispatcher killed or cut
/// off is noticed this fast.
pub const DEFAULT_DISPATCHER_TIMEOUT: Duration = Duration::from_secs(2);

/// The idle timeout the dispatcher offers, and that of [`crate::tls::client_config`]. QUIC uses
/// the smaller of the two peers' timeouts, so nodes and `dispy-submit` choose how fast they
/// notice a dead dispatcher (`tls::client_config_with_timeout` with
/// [`DEFAULT_DISPATCHER_TIMEOUT`]; both reconnect by themselves); the dispatcher notices silent
/// nodes by their heartbeats (`node_timeout`), not by this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Flow-control windows sized for multi-megabyte chunks on fast links.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;

/// The QUIC transport settings of every dispy endpoint, with `idle_timeout`: a connection that
/// hears nothing from its peer for that long is closed. Keep-alives go out four times per idle
/// timeout (at most once a second), so an idle but healthy connection never times out, even
/// after a lost packet or two. Timeouts are clamped to 100 ms .. 1 h.
pub fn transport_config(idle_timeout: Duration) -> Arc<quinn::TransportConfig> {
    let idle_timeout = idle_timeout.clamp(Duration::from_millis(100), Duration::from_secs(3600));
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some((idle_timeout / 4).min(Duration::from_secs(1))));
    // Clamped above to an hour, well inside QUIC's varint range.
    t.max_idle_timeout(Some(idle_timeout.try_into().expect("idle timeout fits a varint")));
    // dispy opens one control stream per connection and a handful of unidirectional ones; low
    // limits keep one flooding peer from making us track thousands of streams.
    t.max_concurrent_bidi_streams(4u32.into());
    t.max_concurrent_uni_streams(32u32.into());
    t.stream_receive_window(STREAM_WINDOW.into());
    t.receive_window(CONNECTION_WINDOW.into());
    t.send_window(u64::from(CONNECTION_WINDOW));
    // Probe for datagrams up to the largest UDP payload the peer announces: quinn's default
    // `EndpointConfig::max_udp_payload_size`, 1472, which dispy keeps. Larger ones were measured
    // and not kept (bench/RESULTS.md, issue 22 part 2): 16 or 64 KiB fail outright, since quinn
    // hands the kernel 10 datagrams per segmentation-offload send and the kernel refuses more
    // than 64 KiB with EMSGSIZE, which quinn drops silently as a failed probe; 6,550 bytes (10 fit)
    // worked but gained nothing on loopback, where GSO/GRO already batch the 1,452-byte ones,
    // and dropped more datagrams.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(u16::MAX);
    t.mtu_discovery_config(Some(mtu));
    Arc::new(t)
}

/// A QUIC endpoint on `bind` with enlarged socket buffers: a server when `server` is given
/// (which can also dial), otherwise a client.
///
/// # Errors
/// When the socket cannot be bound or registered with the runtime.
pub fn endpoint(bind: SocketAddr, server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(bind), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: a smaller buffer still works, it only drops more under bursts.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&bind.into())?;
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket.into(), runtime)
}

/// A stream-level failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The frame was too large or malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading from the stream failed (connection lost, stream reset).
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing to the stream failed (connection lost, stream stopped).
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Opening or accepting a stream failed because the connection is gone.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer ended the stream in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The peer ended the stream where a frame was required.
    #[error("stream ended before the expected message")]
    Ended,
    /// The peer sent a message that is valid but not allowed here.
    #[error("unexpected message: {0}")]
    Unexpected(String),
}

impl StreamError {
    /// Whether the error only says the connection went away (closed by either side, timed out),
    /// as opposed to a peer sending something wrong.
    pub fn is_connection_lost(&self) -> bool {
        self.connection_error().is_some()
    }

    /// Whether the peer stopped the stream this error came from writing to (it wants no more).
    pub fn is_stopped(&self) -> bool {
        matches!(self, StreamError::Write(quinn::WriteError::Stopped(_)))
    }

    /// Why the connection went away, when that is what this error says.
    pub fn connection_error(&self) -> Option<&quinn::ConnectionError> {
        match self {
            StreamError::Connection(e)
            | StreamError::Read(quinn::ReadError::ConnectionLost(e))
            | StreamError::Write(quinn::WriteError::ConnectionLost(e)) => Some(e),
            _ => None,
        }
    }
}

/// The receiving half of a framed stream.
#[derive(Debug)]
pub struct FramedRecv {
    stream: quinn::RecvStream,
    buffer: BytesMut,
    max_frame: usize,
}

impl FramedRecv {
    /// Wraps `stream`; frames longer than `max_frame` are refused before they are buffered.
    pub fn new(stream: quinn::RecvStream, max_frame: usize) -> Self {
        Self { stream, buffer: BytesMut::with_capacity(8 * 1024), max_frame }
    }

    /// Changes the frame limit, e.g. after the header of a bulk stream.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Reads one raw frame; `Ok(None)` at a clean end of stream.
    ///
    /// # Errors
    /// [`StreamError`] for oversize frames, a truncated stream or a transport failure.
    pub async fn read_raw(&mut self) -> Result<Option<Bytes>, StreamError> {
        loop {
            if let Some(body) = frame::decode_raw(&mut self.buffer, self.max_frame)? {
                return Ok(Some(body));
            }
            match self.stream.read_chunk(usize::MAX, true).await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk.bytes),
                None if self.buffer.is_empty() => return Ok(None),
                None => return Err(StreamError::Truncated),
            }
        }
    }

    /// Reads and decodes one message frame; `Ok(None)` at a clean end of stream.
    ///
    /// # Errors
    /// As [`FramedRecv::read_raw`], plus [`FrameError::Malformed`] for an undecodable body.
    pub async fn read_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, StreamError> {
        match self.read_raw().await? {
            Some(body) => Ok(Some(rmp_serde::from_slice(&body).map_err(FrameError::from)?)),
            None => Ok(None),
        }
    }

    /// Reads a message that must be there.
    ///
    /// # Errors
    /// [`StreamError::Ended`] at end of stream, otherwise as [`FramedRecv::read_frame`].
    pub async fn expect_frame<T: DeserializeOwned>(&mut self) -> Result<T, StreamError> {
        self.read_frame().await?.ok_or(StreamError::Ended)
    }

    /// Reads the rest of the stream as raw bytes (after any buffered data), up to `limit` bytes.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] past `limit`, or a transport failure.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Bytes, StreamError> {
        let mut out = std::mem::take(&mut self.buffer);
        while let Some(chunk) = self.stream.read_chunk(usize::MAX, true).await? {
            if out.len() + chunk.bytes.len() > limit {
                return Err(FrameError::TooLarge { len: out.len() + chunk.bytes.len(), max: limit }.into());
            }
            out.extend_from_slice(&chunk.bytes);
        }
        Ok(out.freeze())
    }

    /// Tells the peer to stop sending on this stream.
    pub fn stop(&mut self, code: u32) {
        // Stopping an already finished stream is not an error worth reporting.
        let _ = self.stream.stop(code.into());
    }
}

/// Bulk bytes shorter than this are copied into the frame buffer after all: every piece queued
/// by reference is one more segment for quinn to track and one more buffer split here, which
/// for a job of tiny chunks costs more than copying them.
const COPY_BULK_BELOW: usize = 16 << 10;

/// The sending half of a framed stream. Frames are buffered until [`FramedSend::flush`] so a
/// burst of small messages leaves in few QUIC writes; bulk bytes queued by
/// [`FramedSend::queue_frame_around`] wait by reference beside them, never copied.
#[derive(Debug)]
pub struct FramedSend {
    stream: quinn::SendStream,
    buffer: BytesMut,
    /// What is queued before `buffer`, in order: earlier buffered bytes and bulk bytes between.
    chunks: Vec<Bytes>,
    /// The length of `chunks`.
    chunked: usize,
}

impl FramedSend {
    /// Wraps `stream`.
    pub fn new(stream: quinn::SendStream) -> Self {
        Self { stream, buffer: BytesMut::with_capacity(8 * 1024), chunks: Vec::new(), chunked: 0 }
    }

    /// Queues one message frame.
    ///
    /// # Errors
    /// [`FrameError::Encode`] if the message cannot be serialized.
    pub fn queue_frame<T: Serialize>(&mut self, msg: &T) -> Result<(), StreamError> {
        Ok(frame::encode(msg, &mut self.buffer)?)
    }

    /// Queues one message frame whose byte field `bulk` (a clone of the `Bytes` in `msg`) goes
    /// to the stream by reference instead of being copied into the buffer
    /// ([`frame::encode_around`]), unless it is small enough to copy ([`COPY_BULK_BELOW`]).
    ///
    /// # Errors
    /// [`FrameError::Encode`] if the message cannot be serialized.
    pub fn queue_frame_around<T: Serialize>(&mut self, msg: &T, bulk: &Bytes) -> Result<(), StreamError> {
        if bulk.len() < COPY_BULK_BELOW {
            return self.queue_frame(msg);
        }
        if let Some(at) = frame::encode_around(msg, bulk, &mut self.buffer)? {
            let tail = self.buffer.split_off(at);
            let head = std::mem::replace(&mut self.buffer, tail);
            self.push_chunk(head.freeze());
            self.push_chunk(bulk.clone());
        }
        Ok(())
    }

    /// Queues one raw frame.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] for a body over 4 GiB.
    pub fn queue_raw(&mut self, body: &[u8]) -> Result<(), StreamError> {
        Ok(frame::encode_raw(body, &mut self.buffer)?)
    }

    /// Bytes queued and not yet flushed.
    pub fn queued(&self) -> usize {
        self.chunked + self.buffer.len()
    }

    fn push_chunk(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.chunked += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// Writes everything queued to the stream.
    ///
    /// # Errors
    /// [`StreamError::Write`] when the stream or connection is gone.
    pub async fn flush(&mut self) -> Result<(), StreamError> {
        if self.chunks.is_empty() {
            if !self.buffer.is_empty() {
                let bytes = self.buffer.split().freeze();
                self.stream.write_chunk(bytes).await?;
            }
            return Ok(());
        }
        let buffered = self.buffer.split().freeze();
        self.push_chunk(buffered);
        let mut chunks = std::mem::take(&mut self.chunks);
        self.chunked = 0;
        self.stream.write_all_chunks(&mut chunks).await?;
        // Keep the vector's allocation for the next frames.
        chunks.clear();
        self.chunks = chunks;
        Ok(())
    }

    /// Queues and flushes one message frame.
    ///
    /// # Errors
    /// As [`FramedSend::queue_frame`] and [`FramedSend::flush`].
    pub async fn write_frame<T: Serialize>(&mut self, msg: &T) -> Result<(), StreamError> {
        self.queue_frame(msg)?;
        self.flush().await
    }

    /// Writes bytes without framing (the body of a payload stream), after anything queued.
    ///
    /// # Errors
    /// [`StreamError::Write`] when the stream or connection is gone.
    pub async fn write_unframed(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.flush().await?;
        self.stream.write_chunk(bytes).await?;
        Ok(())
    }

    /// Flushes and ends the stream.
    ///
    /// # Errors
    /// [`StreamError::Write`] when the stream or connection is gone.
    pub async fn finish(&mut self) -> Result<(), StreamError> {
        self.flush().await?;
        // finish only fails if the stream was already finished or reset; both mean "done".
        let _ = self.stream.finish();
        Ok(())
    }
}

/// The control stream of a connection: one bidirectional stream of message frames.
#[derive(Debug)]
pub struct Connection {
    /// Sending half.
    pub send: FramedSend,
    /// Receiving half.
    pub recv: FramedRecv,
}

impl Connection {
    /// Opens the control stream as the dialer.
    ///
    /// # Errors
    /// [`StreamError::Connection`] if the connection is gone.
    pub async fn open(conn: &quinn::Connection, max_frame: usize) -> Result<Self, StreamError> {
        let (send, recv) = conn.open_bi().await?;
        Ok(Self { send: FramedSend::new(send), recv: FramedRecv::new(recv, max_frame) })
    }

    /// Accepts the control stream as the listener.
    ///
    /// # Errors
    /// [`StreamError::Connection`] if the connection is gone.
    pub async fn accept(conn: &quinn::Connection, max_frame: usize) -> Result<Self, StreamError> {
        let (send, recv) = conn.accept_bi().await?;
        Ok(Self { send: FramedSend::new(send), recv: FramedRecv::new(recv, max_frame) })
    }

    /// Writes one message.
    ///
    /// # Errors
    /// As [`FramedSend::write_frame`].
    pub async fn write_frame<T: Serialize>(&mut self, msg: &T) -> Result<(), StreamError> {
        self.send.write_frame(msg).await
    }

    /// Reads one message; `Ok(None)` at a clean end of stream.
    ///
    /// # Errors
    /// As [`FramedRecv::read_frame`].
    pub async fn read_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, StreamError> {
        self.recv.read_frame().await
    }
}

/// Opens a unidirectional stream and writes its header frame.
///
/// # Errors
/// [`StreamError`] if the connection is gone.
pub async fn open_uni<T: Serialize>(conn: &quinn::Connection, header: &T) -> Result<FramedSend, StreamError> {
    let mut send = FramedSend::new(conn.open_uni().await?);
    send.queue_frame(header)?;
    Ok(send)
}

#[cfg(test)]
mod tests;
