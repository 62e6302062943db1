//! Fuzzes the frame decoder with every message type a peer can send: arbitrary bytes must give
//! messages or errors, never a panic or an allocation beyond the frame limit.
//!
//! Run with `cargo +nightly fuzz run frames` from this directory (`cargo install cargo-fuzz`).
#![no_main]

use bytes::BytesMut;
use wire::frame::decode;
use wire::proto::{
    ChunkReport, ClientRequest, DispatcherToNode, Hello, NodeToDispatcher, StreamHeader,
};
use libfuzzer_sys::fuzz_target;

/// The same small limit the tests use, so oversize lengths are exercised too.
const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let mut buf = BytesMut::from(body);
    // Decode frames until the input runs out or is rejected, as a connection would.
    loop {
        let progress = match selector % 6 {
            0 => decode::<Hello>(&mut buf, MAX).map(|m| m.is_some()),
            1 => decode::<ClientRequest>(&mut buf, MAX).map(|m| m.is_some()),
            2 => decode::<NodeToDispatcher>(&mut buf, MAX).map(|m| m.is_some()),
            3 => decode::<DispatcherToNode>(&mut buf, MAX).map(|m| m.is_some()),
            4 => decode::<ChunkReport>(&mut buf, MAX).map(|m| m.is_some()),
            _ => decode::<StreamHeader>(&mut buf, MAX).map(|m| m.is_some()),
        };
        if !matches!(progress, Ok(true)) {
            break;
        }
    }
});
