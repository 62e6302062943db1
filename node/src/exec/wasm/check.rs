//! The dispy ABI v1 checks [`WasmEngine::compile`](super::WasmEngine::compile) runs on a module
//! before any chunk: the only imports are `dispy.emit` and `dispy.log`, the exports have the ABI's types, and the
//! memory is a plain 32-bit one. Also how wasmtime's types and errors are written in the one-line
//! [`ExecError`] messages a user sees ([`describe_extern`], [`one_line`]).

use wasmtime::{ExternType, FuncType, Module};
use wire::abi;

use super::ExecError;

/// Signatures of the ABI's functions, as [`describe_func`] writes them.
pub(super) const SIG_ALLOC: &str = "(i32) -> i32";
pub(super) const SIG_RUN: &str = "(i32, i32, i32, i32) -> i32";
pub(super) const SIG_SETUP: &str = "(i32, i32) -> i32";
pub(super) const SIG_ABI_VERSION: &str = "() -> i32";
const SIG_EMIT: &str = "(i32, i32) -> ()";

/// Checks that every import is `dispy.emit` or the optional `dispy.log`, with the ABI's type.
pub(super) fn check_imports(module: &Module) -> Result<(), ExecError> {
    for import in module.imports() {
        let name = match (import.module(), import.name()) {
            (abi::IMPORT_MODULE, abi::IMPORT_EMIT) => abi::IMPORT_EMIT,
            (abi::IMPORT_MODULE, abi::IMPORT_LOG) => abi::IMPORT_LOG,
            (module, name) => {
                return Err(ExecError::ForbiddenImport { module: module.to_string(), name: name.to_string() })
            }
        };
        let found = describe_extern(&import.ty());
        if found != SIG_EMIT {
            return Err(ExecError::EmitType { name, found });
        }
    }
    Ok(())
}

/// Checks the `memory` export and returns its initial size in bytes.
pub(in crate::exec) fn check_memory(module: &Module) -> Result<u64, ExecError> {
    match module.get_export(abi::EXPORT_MEMORY) {
        None => Err(ExecError::MissingExport(abi::EXPORT_MEMORY)),
        Some(ExternType::Memory(ty)) if !ty.is_64() && !ty.is_shared() => {
            Ok(ty.minimum().saturating_mul(ty.page_size()))
        }
        Some(other) => Err(ExecError::ExportType {
            name: abi::EXPORT_MEMORY,
            found: describe_extern(&other),
            expected: "memory",
        }),
    }
}

/// Checks a function export's type; returns whether it exists.
pub(super) fn check_func(
    module: &Module,
    name: &'static str,
    expected: &'static str,
    required: bool,
) -> Result<bool, ExecError> {
    let Some(ty) = module.get_export(name) else {
        return if required {
            Err(ExecError::MissingExport(name))
        } else {
            Ok(false)
        };
    };
    let found = describe_extern(&ty);
    if found != expected {
        return Err(ExecError::ExportType {
            name,
            found,
            expected,
        });
    }
    Ok(true)
}

/// Describes an import's or export's type as error messages show it, e.g. `(i32) -> i32`.
pub(in crate::exec) fn describe_extern(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(func) => describe_func(func),
        ExternType::Memory(mem) if mem.is_shared() => "shared memory".to_string(),
        ExternType::Memory(mem) if mem.is_64() => "memory64".to_string(),
        ExternType::Memory(_) => "memory".to_string(),
        ExternType::Global(_) => "global".to_string(),
        ExternType::Table(_) => "table".to_string(),
        ExternType::Tag(_) => "tag".to_string(),
    }
}

/// `(i32, i32) -> i32`, with `()` for no results and parentheses around several.
fn describe_func(func: &FuncType) -> String {
    let params: Vec<String> = func.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = func.results().map(|r| r.to_string()).collect();
    let results = match results.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", results.join(", ")),
    };
    format!("({}) -> {results}", params.join(", "))
}

/// An error and its causes on one line, for messages that end up in a terminal or a log field.
///
/// WAT parse errors span several lines (message, `--> <anon>:LINE:COL`, a source snippet); they
/// become `message (at line LINE, column COL)`.
pub(in crate::exec) fn one_line(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    let location = text.lines().find_map(|line| {
        let (place, column) = line.trim().strip_prefix("--> ")?.rsplit_once(':')?;
        let (_, line) = place.rsplit_once(':')?;
        Some((line, column))
    });
    match (text.lines().next(), location) {
        (Some(first), Some((line, column))) if text.contains('\n') => {
            format!("{} (at line {line}, column {column})", first.trim())
        }
        _ => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}
