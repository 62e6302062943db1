//! What every daemon's `main` does between loading its settings and running: start logging, turn
//! the settings into a validated configuration, start the async runtime. Each failure is printed
//! with the program's name and becomes the exit code (64 for configuration, 1 otherwise).

use std::fmt::Display;
use std::process::ExitCode;

use crate::telemetry::LogFormat;

/// Exit code for unusable configuration or arguments (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Logging and runtime settings every daemon has.
pub trait DaemonSettings {
    /// Text or JSON.
    fn log_format(&self) -> LogFormat;
    /// The default filter when `RUST_LOG` is unset.
    fn log_level(&self) -> &str;
    /// Threads of the async runtime; `None` for one per logical core.
    fn async_threads(&self) -> Option<u32>;
}

impl DaemonSettings for crate::config::DispatcherSettings {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }

    fn log_level(&self) -> &str {
        &self.log_level
    }

    fn async_threads(&self) -> Option<u32> {
        self.async_threads
    }
}

impl DaemonSettings for crate::config::NodeSettings {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }

    fn log_level(&self) -> &str {
        &self.log_level
    }

    fn async_threads(&self) -> Option<u32> {
        self.async_threads
    }
}

/// Starts logging from `settings`, builds the configuration with `configure` and a runtime.
///
/// # Errors
/// The exit code to return after the problem was printed.
pub fn prepare<S: DaemonSettings, C, E1: Display, E2: Display>(
    program: &str,
    settings: Result<S, E1>,
    configure: impl FnOnce(S) -> Result<C, E2>,
) -> Result<(C, tokio::runtime::Runtime), ExitCode> {
    let settings = settings.map_err(|e| {
        eprintln!("{program}: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    crate::telemetry::init(settings.log_format(), settings.log_level());
    let threads = settings.async_threads();
    let config = configure(settings).map_err(|e| {
        eprintln!("{program}: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let runtime = runtime(threads).map_err(|e| {
        eprintln!("{program}: failed to start the async runtime: {e}");
        ExitCode::FAILURE
    })?;
    match threads {
        Some(threads) => tracing::info!(threads, "async runtime started"),
        None => tracing::info!(threads = "one per logical core", "async runtime started"),
    }
    Ok((config, runtime))
}

/// An async runtime with `threads` threads: one thread runs every task itself (no hand-offs
/// between threads, so no wake-ups on the way from a packet to its answer); more share tasks by
/// work stealing.
///
/// # Errors
/// When the OS refuses the threads or the I/O driver.
pub fn runtime(threads: Option<u32>) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n as usize).enable_all().build(),
        None => tokio::runtime::Runtime::new(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::runtime;

    #[test]
    fn one_thread_is_a_current_thread_runtime_and_more_are_workers() {
        let one = runtime(Some(1)).expect("a runtime");
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let three = runtime(Some(3)).expect("a runtime");
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let default = runtime(None).expect("a runtime");
        assert_eq!(default.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(default.metrics().num_workers(), cores);
    }
}
