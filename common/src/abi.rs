//! Names and constants of the dispy payload ABI v1, shared by the node's executors and by the
//! submit-time checks, so both sides agree on what a valid payload exports.

/// The ABI version a payload's `dispy_abi_version` must return.
pub const ABI_VERSION: u32 = 1;

/// Required export: the guest's linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// Required export: `dispy_alloc(len: i32) -> i32`, memory for the host to copy input into.
pub const EXPORT_ALLOC: &str = "dispy_alloc";
/// Required export: `dispy_run(in_ptr, in_len, args_ptr, args_len: i32) -> i32`.
pub const EXPORT_RUN: &str = "dispy_run";
/// Optional export: `dispy_abi_version() -> i32`, must return [`ABI_VERSION`] when present.
pub const EXPORT_ABI_VERSION: &str = "dispy_abi_version";
/// Optional export: `dispy_setup(args_ptr, args_len: i32) -> i32`, once per worker.
pub const EXPORT_SETUP: &str = "dispy_setup";
/// Module of the host functions a guest may import.
pub const IMPORT_MODULE: &str = "dispy";
/// Host function `dispy.emit(ptr: i32, len: i32)`: append bytes to the chunk's output.
pub const IMPORT_EMIT: &str = "emit";
