//! Tests for shared-input chunks: the references describe the same bytes that reading the input
//! gives, and rules other than `bytes` are refused.

use super::TempDir;
use crate::split::SplitRule;

#[test]
fn shared_chunks_describe_the_same_bytes_as_chunks() {
    let dir = TempDir::new();
    let a = dir.file("a.bin", &pseudo_bytes(10));
    let empty = dir.file("empty.bin", b"");
    let b = dir.file("b.bin", &pseudo_bytes(7));
    let inputs = [a, empty, b];
    let rule = SplitRule::Bytes(4);
    let chunks = rule.shared_chunks(&inputs).expect("shared chunks");
    assert_eq!(chunks.total_hint(), Some(5));
    let refs: Vec<wire::chunk::ChunkRef> =
        chunks.map(|chunk| wire::chunk::ChunkRef::decode(&chunk.expect("describes")).expect("decodes")).collect();
    // The third chunk spans the end of a.bin and the start of b.bin.
    let spans: Vec<Vec<(u64, u64)>> =
        refs.iter().map(|chunk| chunk.segments.iter().map(|s| (s.offset, s.len)).collect()).collect();
    assert_eq!(spans, [vec![(0, 4)], vec![(4, 4)], vec![(8, 2), (0, 2)], vec![(2, 4)], vec![(6, 1)]]);
    let root = node::shared_input::resolve_roots(&[dir.path().to_owned()]);
    let read: Vec<Vec<u8>> = refs.iter().map(|chunk| node::shared_input::read(chunk, &root, 1 << 20).expect("reads")).collect();
    let direct: Vec<Vec<u8>> = rule.chunks(&inputs).expect("chunks").map(|chunk| chunk.expect("reads")).collect();
    assert_eq!(read, direct);

    let refused = SplitRule::Lines(3).shared_chunks(&inputs).expect_err("lines cannot be shared");
    assert!(refused.to_string().starts_with("shared input needs a bytes split rule"), "{refused}");
}

fn pseudo_bytes(len: u8) -> Vec<u8> {
    (0..len).map(|i| i.wrapping_mul(37) ^ 0x5a).collect()
}
