//! Hadoop's line alignment for `lines:auto` object chunks, sans-IO: a chunk's approximate byte
//! range becomes whole lines by reading one byte before it and, when its last line runs on, a
//! little past its end ([`LineAlign`](wire::chunk::LineAlign) states the rule). Reads go through
//! a closure, so the unit tests run over a slice and the node over ranged GETs.

/// How far past a range's end the node reads at a time to find its last line's end.
pub(crate) const LOOKAHEAD: u64 = 64 * 1024;

/// Why an aligned read failed: the read itself, or a chunk longer than the node accepts.
#[derive(Debug)]
pub(crate) enum AlignError<E> {
    /// A ranged read failed.
    Read(E),
    /// The chunk's whole lines exceed `max` bytes (a line longer than the memory limit).
    TooLarge(u64),
}

/// The bytes of `[offset, offset + len)` of an object of `object_len` bytes, moved to whole
/// lines: from just after the first newline at or after `offset - 1` (from 0 when `offset` is 0)
/// to just after the first newline at or after `offset + len - 1` (to the object's end when
/// there is none). `read(at, n)` returns `n` bytes from `at`; it is never asked past the end.
pub(crate) fn read_aligned<E>(
    offset: u64,
    len: u64,
    object_len: u64,
    max: u64,
    mut read: impl FnMut(u64, u64) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, AlignError<E>> {
    let end = offset.saturating_add(len).min(object_len);
    if offset >= end {
        return Ok(Vec::new());
    }
    let body_start = offset.saturating_sub(1);
    let body = read(body_start, end - body_start).map_err(AlignError::Read)?;
    let start = if offset == 0 {
        0
    } else {
        match body.iter().position(|&byte| byte == b'\n') {
            Some(index) => index + 1,
            // The line holding byte `offset - 1` runs past `end`: it belongs to an earlier
            // range, and no line starts in this one.
            None => return Ok(Vec::new()),
        }
    };
    let mut chunk = body;
    chunk.drain(..start);
    if chunk.is_empty() {
        // The first newline at or after `offset - 1` is byte `end - 1`: the chunk starts at
        // `end`, where it also ends.
        return Ok(chunk);
    }
    let mut at = end;
    while at < object_len && chunk.last() != Some(&b'\n') {
        let n = LOOKAHEAD.min(object_len - at);
        let more = read(at, n).map_err(AlignError::Read)?;
        match more.iter().position(|&byte| byte == b'\n') {
            Some(index) => chunk.extend_from_slice(&more[..=index]),
            None => chunk.extend_from_slice(&more),
        }
        at += n;
        if chunk.len() as u64 > max {
            return Err(AlignError::TooLarge(max));
        }
        if more.is_empty() {
            break;
        }
    }
    if chunk.len() as u64 > max {
        return Err(AlignError::TooLarge(max));
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Aligned reads of every `size`-byte range of `data`, in order.
    fn chunks(data: &[u8], size: u64) -> Vec<Vec<u8>> {
        let len = data.len() as u64;
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < len {
            let read = |at: u64, n: u64| -> Result<Vec<u8>, ()> {
                assert!(at + n <= len, "read past the end: {at}+{n} of {len}");
                Ok(data[at as usize..(at + n) as usize].to_vec())
            };
            out.push(read_aligned(offset, size, len, u64::MAX, read).expect("reads"));
            offset += size;
        }
        out
    }

    #[track_caller]
    fn check(data: &str, size: u64, expect: &[&str]) {
        let got = chunks(data.as_bytes(), size);
        let got: Vec<String> = got.into_iter().map(|c| String::from_utf8(c).expect("utf-8")).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn ranges_become_whole_lines() {
        check("aa\nbb\ncc\n", 3, &["aa\n", "bb\n", "cc\n"]);
        check("aa\nbb\ncc\n", 4, &["aa\nbb\n", "cc\n", ""]);
        check("aa\nbb\ncc", 2, &["aa\n", "bb\n", "", "cc"]);
        check("a very long line\nx\n", 4, &["a very long line\n", "", "", "", "x\n"]);
        check("\n\n\n", 1, &["\n", "\n", "\n"]);
        check("no newline at all", 5, &["no newline at all", "", "", ""]);
    }

    #[test]
    fn a_line_longer_than_the_limit_fails() {
        let data = vec![b'x'; 300_000];
        let read = |at: u64, n: u64| -> Result<Vec<u8>, ()> { Ok(data[at as usize..(at + n) as usize].to_vec()) };
        assert!(matches!(read_aligned(0, 10, 300_000, 100_000, read), Err(AlignError::TooLarge(100_000))));
    }

    proptest! {
        #[test]
        fn every_line_exactly_once(
            data in proptest::collection::vec(prop_oneof![4 => Just(b'x'), 1 => Just(b'\n')], 0..400),
            size in 1u64..50,
        ) {
            let chunks = chunks(&data, size);
            prop_assert_eq!(chunks.concat(), data.clone());
            let mut at = 0;
            for chunk in &chunks {
                if !chunk.is_empty() {
                    prop_assert!(at == 0 || data[at - 1] == b'\n', "chunk at {} starts mid-line", at);
                    let last = at + chunk.len() == data.len();
                    prop_assert!(last || chunk.last() == Some(&b'\n'), "chunk at {} ends mid-line", at);
                }
                at += chunk.len();
            }
        }
    }
}
