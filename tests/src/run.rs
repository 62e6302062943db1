//! [`Run`]: a command run to completion (or killed after a timeout) with its exit code, stdout
//! and stderr captured, and `check_*` assertions that print all of it when they fail.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command line, for failure messages.
    pub command: String,
    /// The exit code; `None` when killed by a signal or by the timeout.
    pub code: Option<i32>,
    /// Whether the harness killed it for running longer than allowed.
    pub timed_out: bool,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// Wall-clock time it took (reported, never asserted).
    pub elapsed: Duration,
}

impl Run {
    /// Runs `command` to completion, killing it after `timeout`. Output is captured.
    ///
    /// # Panics
    /// If the command cannot be started.
    pub fn capture(mut command: Command, timeout: Duration) -> Run {
        let description = describe(&command);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().unwrap_or_else(|e| panic!("failed to start {description}: {e}"));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let deadline = started + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let elapsed = started.elapsed();
        let join = |h: std::thread::JoinHandle<String>| h.join().unwrap_or_else(|_| "<reader panicked>".into());
        Run {
            command: description,
            code: status.as_ref().and_then(ExitStatus::code),
            timed_out: status.is_none(),
            stdout: join(stdout),
            stderr: join(stderr),
            elapsed,
        }
    }

    /// Asserts the command exited with `code`, showing the run otherwise.
    ///
    /// # Panics
    /// On any other outcome.
    #[track_caller]
    pub fn check_code(&self, code: i32) {
        assert!(self.code == Some(code), "expected exit code {code}\n{self}");
    }

    /// Asserts the command succeeded.
    ///
    /// # Panics
    /// If it did not.
    #[track_caller]
    pub fn check_success(&self) {
        self.check_code(0);
    }

    /// Asserts stderr contains every one of `needles`, ignoring ASCII case.
    ///
    /// # Panics
    /// Naming the first missing needle.
    #[track_caller]
    pub fn check_stderr_mentions(&self, needles: &[&str]) {
        let haystack = self.stderr.to_ascii_lowercase();
        for needle in needles {
            assert!(haystack.contains(&needle.to_ascii_lowercase()), "stderr does not mention {needle:?}\n{self}");
        }
    }

    /// Asserts stderr is exactly one non-empty line: a clear one-line error.
    ///
    /// # Panics
    /// If it is empty or longer.
    #[track_caller]
    pub fn check_one_line_error(&self) {
        let lines = self.stderr.lines().filter(|l| !l.trim().is_empty()).count();
        assert!(lines == 1, "expected a one-line error, got {lines} lines\n{self}");
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match (self.timed_out, self.code) {
            (true, _) => "killed after the harness timeout".to_owned(),
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) => "killed by a signal".to_owned(),
        };
        writeln!(f, "--- {} ({outcome}, {:.1?})", self.command, self.elapsed)?;
        writeln!(f, "--- stdout:\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr:\n{}", self.stderr.trim_end())
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn describe(command: &Command) -> String {
    let program =
        Path::new(command.get_program()).file_name().unwrap_or(command.get_program()).to_string_lossy().into_owned();
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("{program} {}", args.join(" "))
}
