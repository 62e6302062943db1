//! A `.so` payload written with the dispy SDK: the FNV-1a 64-bit hash of each chunk, emitted as
//! 8 little-endian bytes. Its output is byte-identical to `examples/checksum.wat` and
//! `examples/c/checksum.c`; it also logs each chunk's length (`dispy-submit logs JOB`).
//!
//! ```text
//! cargo build --release -p dispy-sdk --example checksum
//! dispy-submit run --payload target/release/examples/libchecksum.so --input big.bin \
//!     --split bytes:4MiB --output hashes.bin
//! ```

use dispy_sdk::Emitter;

/// FNV-1a 64: start from the offset basis; for each byte, xor it in, then multiply by the prime.
fn checksum(input: &[u8], _args: &[u8], out: &mut Emitter) -> Result<(), i32> {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    out.emit(&hash.to_le_bytes());
    dispy_sdk::log(format!("hashed {} bytes", input.len()));
    Ok(())
}

dispy_sdk::export_payload!(checksum);
