//! What every daemon's `main` does around loading its settings: parse the command line (a flag
//! for each key in the daemon's table), then start logging, turn the settings into a validated
//! configuration, start the async runtime. Each failure is printed with the program's name and
//! becomes the exit code (64 for configuration, 1 otherwise).

use std::ffi::OsString;
use std::fmt::Display;
use std::process::ExitCode;

use crate::config::{DaemonSettings, Flags, Key};

/// Exit code for unusable configuration or arguments (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// The subcommand that checks a daemon's configuration; it takes the daemon's key flags too, so
/// `dispy-node check-config --slots 4` checks what `dispy-node --slots 4` would run with.
pub const CHECK_CONFIG: &str = "check-config";

/// Parses a daemon's command line: the derived `A` (`--config`, subcommands) plus a flag for
/// each of `keys` (`--` + the key with dashes, taking one value, help from the key's row), which
/// is returned apart as [`Flags`] for [`Sources::flags`](crate::config::Sources::flags). When
/// `A` has a [`CHECK_CONFIG`] subcommand, it takes the same flags, which win over those given
/// before it.
///
/// # Errors
/// clap's error for bad arguments, and for `--help` and `--version`; print it and exit with
/// [`EXIT_CONFIG`] when it goes to stderr, 0 otherwise.
pub fn parse_args<A: clap::Parser>(
    keys: &[Key],
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<(A, Flags), clap::Error> {
    let with_keys = |command: clap::Command| {
        keys.iter().fold(command, |command, key| {
            command.arg(
                clap::Arg::new(key.name)
                    .long(key.long())
                    .value_name(key.value_name)
                    .help(key.help)
                    .action(clap::ArgAction::Set),
            )
        })
    };
    let mut command = with_keys(A::command());
    let has_check = command.find_subcommand(CHECK_CONFIG).is_some();
    if has_check {
        command = command.mut_subcommand(CHECK_CONFIG, with_keys);
    }
    let mut matches = command.try_get_matches_from(args)?;
    let mut flags: Vec<(&'static str, String)> = keys
        .iter()
        .filter_map(|key| matches.remove_one::<String>(key.name).map(|value| (key.name, value)))
        .collect();
    if let Some(sub) = has_check.then(|| matches.subcommand_matches(CHECK_CONFIG)).flatten() {
        for key in keys {
            if let Some(value) = sub.get_one::<String>(key.name).cloned() {
                flags.retain(|(name, _)| *name != key.name);
                flags.push((key.name, value));
            }
        }
    }
    Ok((A::from_arg_matches_mut(&mut matches)?, flags.into_iter().collect()))
}

/// Starts logging from `settings`, builds the configuration with `configure` and a runtime.
///
/// # Errors
/// The exit code to return after the problem was printed.
pub fn prepare<S: AsRef<DaemonSettings>, C, E1: Display, E2: Display>(
    program: &str,
    settings: Result<S, E1>,
    configure: impl FnOnce(S) -> Result<C, E2>,
) -> Result<(C, tokio::runtime::Runtime), ExitCode> {
    let settings = settings.map_err(|e| {
        eprintln!("{program}: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let daemon = settings.as_ref();
    crate::telemetry::init(daemon.log_format, &daemon.log_level);
    let threads = daemon.async_threads;
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
    use std::path::PathBuf;

    use tokio::runtime::RuntimeFlavor;

    use super::{parse_args, runtime};
    use crate::config::{Flags, NODE_KEYS};

    /// What a daemon derives itself: everything but the key flags.
    #[derive(Debug, clap::Parser)]
    struct Args {
        #[arg(long)]
        config: Option<PathBuf>,
    }

    #[test]
    fn each_key_is_a_flag_and_returned_apart() {
        let line = ["dispy-node", "--slots", "4", "--config", "node.toml", "--log-level=debug"];
        let (args, flags) = parse_args::<Args>(NODE_KEYS, line).expect("valid");
        assert_eq!(args.config, Some(PathBuf::from("node.toml")));
        assert_eq!(flags, Flags::from_iter([("slots", "4".to_owned()), ("log_level", "debug".to_owned())]));
        let error = parse_args::<Args>(NODE_KEYS, ["dispy-node", "--slot", "4"]).expect_err("no such flag");
        assert!(error.use_stderr() && error.to_string().contains("--slots"), "{error}");
        let help = parse_args::<Args>(NODE_KEYS, ["dispy-node", "--help"]).expect_err("help").to_string();
        assert!(help.contains("--health-log-interval <DURATION>") && help.contains("[default: 30s]"), "{help}");
    }

    /// A daemon with `check-config`, which takes the key flags as well.
    #[derive(Debug, clap::Parser)]
    struct Checked {
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        CheckConfig {
            #[arg(long)]
            config: Option<PathBuf>,
        },
    }

    #[test]
    fn check_config_takes_the_key_flags_after_it_too() {
        let line = ["dispy-node", "--slots", "2", "--log-level", "warn", "check-config", "--slots", "4", "--config", "n.toml"];
        let (args, flags) = parse_args::<Checked>(NODE_KEYS, line).expect("valid");
        assert!(matches!(args.command, Some(Sub::CheckConfig { config: Some(ref c) }) if c == &PathBuf::from("n.toml")));
        assert_eq!(flags, Flags::from_iter([("log_level", "warn".to_owned()), ("slots", "4".to_owned())]));
    }

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
