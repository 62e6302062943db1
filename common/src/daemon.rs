//! What every daemon's `main` does between loading its settings and running: start logging, turn
//! the settings into a validated configuration, start the async runtime. Each failure is printed
//! with the program's name and becomes the exit code (64 for configuration, 1 otherwise).

use std::fmt::Display;
use std::process::ExitCode;

use crate::telemetry::LogFormat;

/// Exit code for unusable configuration or arguments (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Logging settings every daemon has.
pub trait LogSettings {
    /// Text or JSON.
    fn log_format(&self) -> LogFormat;
    /// The default filter when `RUST_LOG` is unset.
    fn log_level(&self) -> &str;
}

impl LogSettings for crate::config::DispatcherSettings {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }

    fn log_level(&self) -> &str {
        &self.log_level
    }
}

impl LogSettings for crate::config::NodeSettings {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }

    fn log_level(&self) -> &str {
        &self.log_level
    }
}

/// Starts logging from `settings`, builds the configuration with `configure` and a runtime.
///
/// # Errors
/// The exit code to return after the problem was printed.
pub fn prepare<S: LogSettings, C, E1: Display, E2: Display>(
    program: &str,
    settings: Result<S, E1>,
    configure: impl FnOnce(S) -> Result<C, E2>,
) -> Result<(C, tokio::runtime::Runtime), ExitCode> {
    let settings = settings.map_err(|e| {
        eprintln!("{program}: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    crate::telemetry::init(settings.log_format(), settings.log_level());
    let config = configure(settings).map_err(|e| {
        eprintln!("{program}: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("{program}: failed to start the async runtime: {e}");
        ExitCode::FAILURE
    })?;
    Ok((config, runtime))
}
