//! A `.so` payload written with the dispy SDK that reduces: the number of words (runs of
//! non-whitespace bytes) in the input, as a little-endian u64, with `--results reduce`.
//!
//! Each chunk's result is 10 bytes: its word count (u64 LE), then whether it starts and ends
//! inside a word (one byte each), so that `dispy_combine` can tell when a word spans the cut
//! between two adjacent ranges and count it once. The combined result has the same layout; a
//! job's output is that of the whole input (its first 8 bytes are the word count).
//!
//! ```text
//! cargo build --release -p dispy-sdk --example wordcount
//! dispy-submit run --payload target/release/examples/libwordcount.so --input big.txt \
//!     --split bytes:4MiB --results reduce --output words.bin
//! ```

use dispy_sdk::Emitter;

/// A range's summary: words, and whether its first and last bytes are inside a word. An empty
/// range is neither.
#[derive(Clone, Copy)]
struct Words {
    count: u64,
    starts_in_word: bool,
    ends_in_word: bool,
}

impl Words {
    fn emit(self, out: &mut Emitter) {
        out.emit(&self.count.to_le_bytes());
        out.emit(&[u8::from(self.starts_in_word), u8::from(self.ends_in_word)]);
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let (count, flags) = bytes.split_first_chunk::<8>()?;
        let [start, end] = flags.try_into().ok()?;
        Some(Self { count: u64::from_le_bytes(*count), starts_in_word: start == 1, ends_in_word: end == 1 })
    }
}

fn count(input: &[u8], _args: &[u8], out: &mut Emitter) -> Result<(), i32> {
    let word = |b: &u8| !b.is_ascii_whitespace();
    let starts = input.iter().enumerate().filter(|&(i, b)| word(b) && (i == 0 || !word(&input[i - 1]))).count();
    Words {
        count: starts as u64,
        starts_in_word: input.first().is_some_and(word),
        ends_in_word: input.last().is_some_and(word),
    }
    .emit(out);
    Ok(())
}

/// Adds the counts, less one when a word runs across the cut.
fn combine(a: &[u8], b: &[u8], out: &mut Emitter) -> Result<(), i32> {
    let (Some(a), Some(b)) = (Words::parse(a), Words::parse(b)) else { return Err(1) };
    let spanning = u64::from(a.ends_in_word && b.starts_in_word);
    Words { count: a.count + b.count - spanning, starts_in_word: a.starts_in_word, ends_in_word: b.ends_in_word }
        .emit(out);
    Ok(())
}

dispy_sdk::export_payload!(count, combine = combine);
