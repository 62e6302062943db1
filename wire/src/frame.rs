//! Length-prefixed framing: a big-endian `u32` length followed by that many bytes.
//!
//! Message frames carry MessagePack (rmp-serde); raw frames carry chunk bytes as they are. The
//! length is checked against the caller's maximum before anything is allocated, so a peer
//! announcing a huge frame costs us four bytes of buffer, not four gigabytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

/// Bytes taken by the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default maximum size of a control message frame.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced a frame longer than this end accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The frame body is not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
    /// The message could not be serialized (a bug in the sender).
    #[error("failed to encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Appends `msg` as one MessagePack frame to `dst`.
///
/// # Errors
/// [`FrameError::Encode`] if serialization fails, [`FrameError::TooLarge`] if the encoded message
/// does not fit a `u32` length.
pub fn encode<T: Serialize>(msg: &T, dst: &mut BytesMut) -> Result<(), FrameError> {
    encode_around(msg, &[], dst).map(|_| ())
}

/// Appends `msg` as one MessagePack frame to `dst`, leaving out the bytes of `bulk`, a byte field
/// of `msg` (an `Assignment`'s input), so they need not be copied: the frame is then the bytes
/// added to `dst` before the returned index, `bulk` itself, and the bytes added after it; the
/// length prefix counts all three, so the receiver sees exactly what [`encode`] writes.
///
/// Returns `None` when nothing was left out (`bulk` is empty or is not the slice `msg` holds;
/// the frame is then whole in `dst`).
///
/// # Errors
/// As [`encode`].
pub fn encode_around<T: Serialize>(msg: &T, bulk: &[u8], dst: &mut BytesMut) -> Result<Option<usize>, FrameError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut writer = LeaveOut { dst: &mut *dst, bulk, at: None };
    rmp_serde::encode::write(&mut writer, msg)?;
    let at = writer.at;
    let left_out = if at.is_some() { bulk.len() } else { 0 };
    let body_len = dst.len() - start - HEADER_LEN + left_out;
    let len = u32::try_from(body_len)
        .map_err(|_| FrameError::TooLarge { len: body_len, max: u32::MAX as usize })?;
    dst[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(at)
}

/// A writer into a `BytesMut` that notes where `bulk` would go instead of copying it. MessagePack
/// writes a byte field's marker and length, then the field's slice in one `write_all`, which
/// arrives here as that very slice (same address and length).
struct LeaveOut<'a> {
    dst: &'a mut BytesMut,
    bulk: &'a [u8],
    at: Option<usize>,
}

impl std::io::Write for LeaveOut<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.at.is_none() && !buf.is_empty() && std::ptr::eq(buf, self.bulk) {
            self.at = Some(self.dst.len());
        } else {
            self.dst.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends `body` as one raw frame to `dst`.
///
/// # Errors
/// [`FrameError::TooLarge`] if `body` does not fit a `u32` length.
pub fn encode_raw(body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
    let len = u32::try_from(body.len())
        .map_err(|_| FrameError::TooLarge { len: body.len(), max: u32::MAX as usize })?;
    dst.reserve(HEADER_LEN + body.len());
    dst.put_u32(len);
    dst.put_slice(body);
    Ok(())
}

/// Takes one raw frame off the front of `src`.
///
/// Returns `Ok(None)` when `src` does not yet hold a whole frame; in that case `src` is left as it
/// was, with room reserved for the rest of the frame.
///
/// # Errors
/// [`FrameError::TooLarge`] when the announced length exceeds `max`; nothing is allocated.
pub fn decode_raw(src: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(header) = src.get(..HEADER_LEN) else {
        return Ok(None);
    };
    // The slice is exactly HEADER_LEN bytes long, so the conversion cannot fail.
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if src.len() < HEADER_LEN + len {
        src.reserve(HEADER_LEN + len - src.len());
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    Ok(Some(src.split_to(len).freeze()))
}

/// Takes one MessagePack frame off the front of `src` and decodes it as `T`.
///
/// # Errors
/// [`FrameError::TooLarge`] as for [`decode_raw`], [`FrameError::Malformed`] when the body is not
/// a `T`. The frame is consumed either way, so the stream stays in sync.
pub fn decode<T: DeserializeOwned>(src: &mut BytesMut, max: usize) -> Result<Option<T>, FrameError> {
    match decode_raw(src, max)? {
        Some(body) => Ok(Some(rmp_serde::from_slice(&body)?)),
        None => Ok(None),
    }
}

/// Encodes a message without a frame header, for storage (the dispatcher's journal).
///
/// # Errors
/// [`FrameError::Encode`] if serialization fails.
pub fn to_bytes<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    Ok(rmp_serde::to_vec(msg)?)
}

/// Decodes a message stored with [`to_bytes`].
///
/// # Errors
/// [`FrameError::Malformed`] when the bytes are not a `T`.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests;
