//! Codec tests: round-trips, partial input, oversize and malformed frames.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::proto::{
    AttemptId, ChunkFailure, ChunkReport, FailureKind, Hello, Role, PROTOCOL_VERSION,
};

#[track_caller]
fn check_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
    let mut buf = BytesMut::new();
    encode(&msg, &mut buf).expect("encodes");
    let whole = buf.clone();
    // Every strict prefix is incomplete, never an error.
    for cut in 0..whole.len() {
        let mut partial = BytesMut::from(&whole[..cut]);
        assert!(decode::<T>(&mut partial, usize::MAX).expect("prefix is not an error").is_none());
        assert_eq!(partial.len(), cut, "an incomplete frame must not be consumed");
    }
    let decoded: T = decode(&mut buf, usize::MAX).expect("decodes").expect("complete");
    assert_eq!(decoded, msg);
    assert!(buf.is_empty());
}

#[test]
fn messages_round_trip() {
    check_round_trip(Hello {
        protocol_version: PROTOCOL_VERSION,
        role: Role::Node,
        software: "dispy-node 0.0.0".into(),
    });
    check_round_trip(ChunkReport { attempt: AttemptId(7), outcome: Ok(Bytes::from_static(b"out")), run_nanos: 1_234_567, log: Bytes::new(), combined_with: Some(AttemptId(9)) });
    check_round_trip(ChunkReport {
        attempt: AttemptId(8),
        outcome: Err(ChunkFailure { kind: FailureKind::PayloadError(-3), message: "x".into() }),
        run_nanos: 0,
        log: Bytes::from_static(b"line one\n[dispy: log truncated, 3 bytes dropped]\n"),
        combined_with: None,
    });
}

#[test]
fn oversize_frame_is_refused_before_allocating() {
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    let capacity_before = buf.capacity();
    let err = decode_raw(&mut buf, 1024).expect_err("too large");
    assert!(matches!(err, FrameError::TooLarge { len, max: 1024 } if len == u32::MAX as usize));
    assert_eq!(err.to_string(), "frame of 4294967295 bytes exceeds the limit of 1024 bytes");
    assert_eq!(buf.capacity(), capacity_before, "no room was reserved for the announced body");
}

#[test]
fn malformed_body_is_an_error_and_consumed() {
    let mut buf = BytesMut::new();
    encode_raw(&[0xc1, 0xff, 0x00], &mut buf).expect("encodes");
    encode(&Role::Client, &mut buf).expect("encodes");
    assert!(matches!(decode::<Hello>(&mut buf, 1024), Err(FrameError::Malformed(_))));
    assert_eq!(decode::<Role>(&mut buf, 1024).expect("next frame decodes"), Some(Role::Client));
}

#[test]
fn raw_frames_back_to_back() {
    let mut buf = BytesMut::new();
    for body in [&b""[..], b"a", b"hello world"] {
        encode_raw(body, &mut buf).expect("encodes");
    }
    let mut out = Vec::new();
    while let Some(frame) = decode_raw(&mut buf, 64).expect("valid") {
        out.push(frame);
    }
    assert_eq!(out, vec![Bytes::new(), Bytes::from_static(b"a"), Bytes::from_static(b"hello world")]);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = decode::<crate::proto::ClientRequest>(&mut buf, 128) {}
    }

    #[test]
    fn raw_round_trip(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let mut buf = BytesMut::new();
        for b in &bodies {
            encode_raw(b, &mut buf).expect("encodes");
        }
        for b in &bodies {
            let frame = decode_raw(&mut buf, 64).expect("valid").expect("complete");
            prop_assert_eq!(&frame[..], &b[..]);
        }
        prop_assert!(buf.is_empty());
    }
}
