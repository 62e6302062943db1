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
/// Optional export: `dispy_combine(a_ptr, a_len, b_ptr, b_len: i32) -> i32`, emitting through
/// `dispy.emit` the combination of two results (`a` of the chunks just before `b`'s). Needed by
/// jobs with `--results reduce`; it must be associative, and dispy never assumes it commutes.
pub const EXPORT_COMBINE: &str = "dispy_combine";
/// Module of the host functions a guest may import.
pub const IMPORT_MODULE: &str = "dispy";
/// Host function `dispy.emit(ptr: i32, len: i32)`: append bytes to the chunk's output.
pub const IMPORT_EMIT: &str = "emit";
/// Optional host function `dispy.log(ptr: i32, len: i32)`: one line of the attempt's log (a
/// newline is added when the bytes lack one; see [`crate::observe`]).
pub const IMPORT_LOG: &str = "log";

/// Native payload symbol: `int32_t dispy_run(input, input_len, args, args_len, emit, ctx)`.
pub const NATIVE_RUN: &str = "dispy_run";
/// Native payload symbol: `uint32_t dispy_abi_version(void)`, must return [`ABI_VERSION`].
pub const NATIVE_ABI_VERSION: &str = "dispy_abi_version";
/// Optional native payload symbol: `int32_t dispy_setup(args, args_len)`.
pub const NATIVE_SETUP: &str = "dispy_setup";

/// Optional native payload symbol: `int32_t dispy_combine(a, a_len, b, b_len, emit, ctx)`.
pub const NATIVE_COMBINE: &str = "dispy_combine";

/// Packs the two results a combine task takes into one input: `a`'s length as a little-endian
/// u64, then `a`, then `b`. [`split_combine_input`] undoes it on the node.
pub fn combine_input(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(8 + a.len() + b.len());
    input.extend_from_slice(&(a.len() as u64).to_le_bytes());
    input.extend_from_slice(a);
    input.extend_from_slice(b);
    input
}

/// Splits a combine task's input into its two results; `None` when it is malformed.
pub fn split_combine_input(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = input.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// Tells a payload's kind from its first bytes: a WebAssembly binary, an ELF shared library (with
/// the platform it was built for), or otherwise WAT text.
///
/// # Errors
/// A one-line reason when the file is an ELF object dispy cannot run (not a shared library, or
/// an unknown machine) or truncated.
pub fn detect_kind(bytes: &[u8]) -> Result<crate::proto::PayloadKind, String> {
    use crate::proto::PayloadKind;
    if bytes.starts_with(b"\0asm") || !bytes.starts_with(b"\x7fELF") {
        return Ok(PayloadKind::Wasm);
    }
    let header = bytes.get(..20).ok_or("truncated ELF header")?;
    let little_endian = match header[5] {
        1 => true,
        2 => false,
        other => return Err(format!("ELF header has an unknown byte order ({other})")),
    };
    let read_u16 = |at: usize| {
        let pair = [header[at], header[at + 1]];
        if little_endian { u16::from_le_bytes(pair) } else { u16::from_be_bytes(pair) }
    };
    const ET_DYN: u16 = 3;
    if read_u16(16) != ET_DYN {
        return Err("ELF file is not a shared library (build it with -shared -fPIC)".into());
    }
    let class = header[4];
    let arch = match (read_u16(18), class) {
        (62, 2) => "x86_64",
        (3, 1) => "x86",
        (183, 2) => "aarch64",
        (40, 1) => "arm",
        (243, 2) => "riscv64",
        (21, 2) => "powerpc64",
        (22, 2) => "s390x",
        (machine, class) => {
            return Err(format!("ELF shared library for an unsupported machine (e_machine {machine}, class {class})"))
        }
    };
    Ok(PayloadKind::Native { os: "linux".into(), arch: arch.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::PayloadKind;

    fn elf(class: u8, data: u8, kind: u16, machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', class, data, 1, 0];
        h.resize(16, 0);
        h.extend_from_slice(&kind.to_le_bytes());
        h.extend_from_slice(&machine.to_le_bytes());
        h.resize(64, 0);
        h
    }

    #[track_caller]
    fn check(bytes: &[u8], expect: Result<PayloadKind, &str>) {
        assert_eq!(detect_kind(bytes), expect.map_err(str::to_owned));
    }

    #[test]
    fn combine_input_round_trips() {
        let input = combine_input(b"left", b"right!");
        assert_eq!(split_combine_input(&input), Some((&b"left"[..], &b"right!"[..])));
        assert_eq!(split_combine_input(&combine_input(b"", b"")), Some((&b""[..], &b""[..])));
        assert_eq!(split_combine_input(&input[..7]), None);
        assert_eq!(split_combine_input(&input[..10]), None);
    }

    #[test]
    fn kinds() {
        check(b"\0asm\x01\0\0\0", Ok(PayloadKind::Wasm));
        check(b"(module)", Ok(PayloadKind::Wasm));
        let native = |arch: &str| Ok(PayloadKind::Native { os: "linux".into(), arch: arch.into() });
        check(&elf(2, 1, 3, 62), native("x86_64"));
        check(&elf(2, 1, 3, 183), native("aarch64"));
        check(&elf(2, 1, 2, 62), Err("ELF file is not a shared library (build it with -shared -fPIC)"));
        check(&elf(2, 1, 3, 9999), Err("ELF shared library for an unsupported machine (e_machine 9999, class 2)"));
        check(b"\x7fELF\x02", Err("truncated ELF header"));
    }
}
