//! Test data and how outputs are judged: [`serial_output`] computes the serial reference in this
//! process ([`serial_reduce`] that of `--results reduce`), [`check_same_bytes`] compares an output with it, and [`dir_entries`] and
//! [`pseudo_random_bytes`] list and make inputs.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use client::split::SplitRule;
use node::exec::wasm::{run_serial, WasmEngine};

/// The serial reference: `payload` run in this process over the chunks `split` cuts from
/// `inputs`, outputs concatenated in order (`node::exec::wasm::run_serial`).
///
/// # Panics
/// If the rule, the inputs, the payload or a chunk fails.
pub fn serial_output(payload: &Path, args: &[u8], split: &str, inputs: &[PathBuf]) -> Vec<u8> {
    let run = || -> anyhow::Result<Vec<u8>> {
        let rule: SplitRule = split.parse()?;
        let chunks = rule.chunks(inputs)?.collect::<Result<Vec<_>, _>>()?;
        let bytes = std::fs::read(payload).with_context(|| format!("failed to read {}", payload.display()))?;
        let engine = WasmEngine::new()?;
        Ok(run_serial(&engine, &bytes, args, chunks)?)
    };
    run().unwrap_or_else(|e| panic!("serial run of {} failed: {e:#}", payload.display()))
}

/// The serial reference of `--results reduce` for a WebAssembly `payload` (a native one needs the
/// node's binary to run its worker processes): the payload run in this process over the chunks
/// `split` cuts from `inputs`, the results folded left to right with its `dispy_combine`
/// (`node::exec::Executor::reduce_serial`).
///
/// # Panics
/// If the rule, the inputs, the payload, a chunk or a combine fails.
pub fn serial_reduce(payload: &Path, args: &[u8], split: &str, inputs: &[PathBuf]) -> Vec<u8> {
    let run = || -> anyhow::Result<Vec<u8>> {
        let rule: SplitRule = split.parse()?;
        let chunks = rule.chunks(inputs)?.collect::<Result<Vec<_>, _>>()?;
        let bytes = std::fs::read(payload).with_context(|| format!("failed to read {}", payload.display()))?;
        let kind = wire::abi::detect_kind(&bytes).map_err(anyhow::Error::msg)?;
        let executor = node::exec::Executor::new()?;
        let loaded = executor.load(&kind, &bytes, payload)?;
        Ok(executor.reduce_serial(&loaded, args, chunks)?)
    };
    run().unwrap_or_else(|e| panic!("serial reduce of {} failed: {e:#}", payload.display()))
}

/// Asserts two outputs are equal, reporting sizes and the first difference instead of dumping
/// bytes.
///
/// # Panics
/// If they differ.
#[track_caller]
pub fn check_same_bytes(got: &[u8], want: &[u8], context: &dyn fmt::Display) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    panic!(
        "output differs from the serial run: {} bytes vs {} expected, first difference at byte {first}\n{context}",
        got.len(),
        want.len()
    );
}

/// The names in `dir`, sorted.
///
/// # Panics
/// If `dir` cannot be listed.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut names: Vec<String> =
        entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// `len` deterministic pseudo-random bytes (xorshift64*), different for each `seed`.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}
