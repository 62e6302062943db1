//! [`run_serial`]: one worker running every chunk in order in the calling thread, the reference
//! that distributed output is compared against (by `tests/`, `client/` and `bench/`).

use std::time::Duration;

use super::{CancelFlag, ExecError, Limits, WasmEngine, WasmWorker, MAX_WASM32_MEMORY};

/// Runs every input through one worker, in order, and concatenates the outputs: the serial
/// reference that tests compare distributed output against, and a baseline for benchmarks.
///
/// The worker gets the largest memory a 32-bit module can use and a one-day chunk timeout.
///
/// # Errors
/// The [`ExecError`] of compiling, of the worker's setup ([`ExecError::Worker`]) or of the first
/// failing chunk ([`ExecError::Chunk`]).
pub fn run_serial(
    engine: &WasmEngine,
    payload_bytes: &[u8],
    args: &[u8],
    inputs: impl IntoIterator<Item = Vec<u8>>,
) -> Result<Vec<u8>, ExecError> {
    let payload = engine.compile(payload_bytes)?;
    let limits = Limits {
        memory: MAX_WASM32_MEMORY,
        chunk_timeout: Duration::from_secs(24 * 60 * 60),
    };
    let mut worker = WasmWorker::new(engine, &payload, args, limits, CancelFlag::default())
        .map_err(ExecError::Worker)?;
    let mut output = Vec::new();
    for (index, input) in (0u64..).zip(inputs) {
        let chunk = worker
            .run(&input)
            .map_err(|failure| ExecError::Chunk { index, failure })?;
        output.extend_from_slice(&chunk);
    }
    Ok(output)
}
