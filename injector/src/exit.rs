//! The one place that maps errors to exit codes.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | failed at run time: the target is gone or a zombie, no dump before the deadline, an unsafe file, an I/O error |
//! | 2 | bad usage: unknown signal or architecture, a trigger signal that cannot work (KILL, STOP, faults, job control), bad duration, bad flags; a thread id instead of a process id, a kernel thread; an `--out` directory that is a symlink, not ours or writable by others; `compare` of files that are not dumps |
//! | 3 | refused: the target cannot take a dump safely (trigger signal not caught, library not loaded), or permission (`dump`; `watch` when it may not read the threads' system calls; `inspect` without ptrace permission says why on stderr, prints the kernel view and exits 0) |
//! | 126, 127 | `run`: the command could not be executed / was not found (as `env` and shells say) |
//! | 130 | interrupted (Ctrl-C, SIGTERM), in any phase of any subcommand (periodic `dump` and `watch` stop with 0: Ctrl-C is how they normally end); within about 50 ms, see [`crate::interrupt`] |
//!
//! `run` passes the exit status of its command through (it execs it).

use crate::target::TargetError;
use stackdump_core::escape;
use std::process::ExitCode;

/// What went wrong, as far as the exit code is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Failed,
    Usage,
    Refused,
    CannotExecute,
    NotFound,
    Interrupted,
}

/// The exit code of an interrupted run.
pub const INTERRUPTED_CODE: i32 = 130;

impl ExitKind {
    pub fn code(self) -> u8 {
        match self {
            ExitKind::Failed => 1,
            ExitKind::Usage => 2,
            ExitKind::Refused => 3,
            ExitKind::CannotExecute => 126,
            ExitKind::NotFound => 127,
            ExitKind::Interrupted => INTERRUPTED_CODE as u8,
        }
    }
}

/// A usage error found after the command line parsed (unknown architecture, format the target
/// does not write, ...). Exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `run` could not execute its command.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {command}: {source}")]
pub struct ExecError {
    pub command: String,
    #[source]
    pub source: std::io::Error,
}

/// Ctrl-C (or SIGTERM) while waiting for a dump.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Periodic dumps where some rounds failed (each was reported as it happened). Exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} dumps failed")]
pub struct RoundsFailed {
    pub failed: usize,
    pub total: usize,
}

/// Several targets, several outcomes: the most serious decides (refused > failed).
#[derive(Debug, thiserror::Error)]
#[error("{} of {total} processes could not be {done}", errors.len())]
pub struct Several {
    /// What could not be done to them: `dumped`, `inspected`.
    pub done: &'static str,
    pub total: usize,
    pub errors: Vec<anyhow::Error>,
}

/// The exit kind of an error: the first typed error found in its chain decides.
pub fn kind_of(err: &anyhow::Error) -> ExitKind {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<TargetError>() {
            return match e {
                TargetError::PermissionDenied { .. } | TargetError::Refused { .. } => {
                    ExitKind::Refused
                }
                TargetError::NotAProcess { .. } | TargetError::KernelThread { .. } => {
                    ExitKind::Usage
                }
                TargetError::NoSuchProcess { .. }
                | TargetError::Zombie { .. }
                | TargetError::Exited { .. }
                | TargetError::Timeout { .. }
                | TargetError::UnsafeFile { .. }
                | TargetError::Trigger { .. }
                | TargetError::Io { .. } => ExitKind::Failed,
                TargetError::Interrupted => ExitKind::Interrupted,
            };
        }
        if cause.downcast_ref::<UsageError>().is_some()
            || cause
                .downcast_ref::<stackdump_core::kernel::signals::SignalError>()
                .is_some()
        {
            return ExitKind::Usage;
        }
        if let Some(e) = cause.downcast_ref::<ExecError>() {
            return match e.source.kind() {
                std::io::ErrorKind::NotFound => ExitKind::NotFound,
                _ => ExitKind::CannotExecute,
            };
        }
        if cause.downcast_ref::<Interrupted>().is_some() {
            return ExitKind::Interrupted;
        }
        if cause.downcast_ref::<RoundsFailed>().is_some() {
            return ExitKind::Failed;
        }
        if let Some(s) = cause.downcast_ref::<Several>() {
            let kinds: Vec<ExitKind> = s.errors.iter().map(kind_of).collect();
            return if kinds.contains(&ExitKind::Refused) {
                ExitKind::Refused
            } else if kinds.contains(&ExitKind::Interrupted) {
                ExitKind::Interrupted
            } else {
                ExitKind::Failed
            };
        }
    }
    ExitKind::Failed
}

/// An error with its causes, in one line (a cause already in the message is not repeated).
pub fn with_causes(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// Report an error on stderr (`stackdump: ...`, with its causes) and return its exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let kind = kind_of(err);
    match err.downcast_ref::<Several>() {
        // Each failure was already reported when it happened.
        Some(_) => eprintln!("stackdump: {}", escape::text(&err.to_string())),
        None => {
            // Names and paths in it came from the target: nothing raw reaches the terminal.
            eprintln!("stackdump: {}", escape::text(&with_causes(err)));
        }
    }
    ExitCode::from(kind.code())
}

/// clap's own errors: help and version go to stdout with 0, the rest is usage (2).
pub fn report_clap(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = err.print();
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::SUCCESS,
        _ => ExitCode::from(ExitKind::Usage.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_map_to_their_codes() {
        let e = anyhow::Error::new(UsageError("x".into()));
        assert_eq!(kind_of(&e), ExitKind::Usage);
        let e = anyhow::Error::new(TargetError::NoSuchProcess { pid: 1 });
        assert_eq!(kind_of(&e).code(), 1);
        let e = anyhow::Error::new(TargetError::Refused {
            pid: 1,
            comm: "x".into(),
            reason: "r".into(),
            todo: "t".into(),
        })
        .context("while checking");
        assert_eq!(kind_of(&e).code(), 3);
        let e = anyhow::anyhow!("plain");
        assert_eq!(kind_of(&e).code(), 1);
        let e = anyhow::Error::new(Several {
            done: "dumped",
            total: 2,
            errors: vec![
                anyhow::Error::new(TargetError::NoSuchProcess { pid: 1 }),
                anyhow::Error::new(TargetError::PermissionDenied {
                    pid: 2,
                    what: "signal",
                    owner: None,
                }),
            ],
        });
        assert_eq!(kind_of(&e).code(), 3);
    }
}
