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

/// Encodes `msg` with `bulk` left out, reassembles the parts as a receiver sees them, and checks
/// that they are byte for byte [`encode`]'s frame and that `bulk` went by reference when `left_out`.
#[track_caller]
fn check_around<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T, bulk: &Bytes, left_out: bool) {
    let mut whole = BytesMut::new();
    encode(msg, &mut whole).expect("encodes");
    // Something queued before the frame stays as it was.
    let mut parts = BytesMut::from(&b"queued"[..]);
    let at = encode_around(msg, bulk, &mut parts).expect("encodes");
    assert_eq!(at.is_some(), left_out, "left out: {at:?}");
    let tail = parts.split_off(at.unwrap_or(parts.len()));
    assert_eq!(&parts.split_to(6)[..], b"queued");
    let mut wire = parts;
    if at.is_some() {
        wire.extend_from_slice(bulk);
    }
    wire.extend_from_slice(&tail);
    assert_eq!(wire, whole, "the parts make the same frame");
    let decoded: T = decode(&mut wire, usize::MAX).expect("decodes").expect("complete");
    assert_eq!(&decoded, msg);
}

#[test]
fn assignment_frames_leave_their_input_out() {
    use crate::proto::{Assignment, DispatcherToNode, JobId};
    let assign = |input: &Bytes, combine| {
        let attempt = AttemptId(11);
        DispatcherToNode::Assign(Assignment { job: JobId(3), chunk: 9, attempt, input: input.clone(), combine })
    };
    // Sizes on both sides of MessagePack's bin8/bin16/bin32 length forms, and a field after the input.
    for len in [1usize, 255, 256, 65_535, 65_536, 1 << 20] {
        let input = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        check_around(&assign(&input, false), &input, true);
        check_around(&assign(&input, true), &input, true);
    }
    // An empty input is nothing to leave out.
    check_around(&assign(&Bytes::new(), false), &Bytes::new(), false);
}

#[test]
fn bytes_the_message_does_not_hold_are_never_left_out() {
    use crate::proto::{Assignment, DispatcherToNode, JobId};
    let input = Bytes::from_static(b"the chunk's input");
    // Equal contents at another address: copied, not mistaken for the message's field.
    let lookalike = Bytes::copy_from_slice(&input);
    let assignment = Assignment { job: JobId(1), chunk: 0, attempt: AttemptId(2), input, combine: false };
    let msg = DispatcherToNode::Assign(assignment);
    check_around(&msg, &lookalike, false);
    // A slice of the field is not the field either.
    let DispatcherToNode::Assign(assignment) = &msg else { unreachable!("built above") };
    check_around(&msg, &assignment.input.slice(1..), false);
}

proptest! {
    #[test]
    fn around_round_trip(input in proptest::collection::vec(any::<u8>(), 1..2048), chunk in any::<u64>()) {
        let input = Bytes::from(input);
        let job = crate::proto::JobId(chunk / 3);
        let combine = chunk % 2 == 0;
        let msg = crate::proto::Assignment { job, chunk, attempt: AttemptId(chunk), input: input.clone(), combine };
        check_around(&msg, &input, true);
    }


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
