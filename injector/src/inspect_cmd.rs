//! `stackdump inspect PID...`: any process, without the library and without a signal: every
//! thread's kernel view, its user stack read from outside (`stackdump_core::outside::capture`), the
//! process facts and the findings. Several PIDs (and `--subprocesses`, the tree under each) are
//! inspected one after the other: the texts one after the other, one JSON document per line,
//! the folded stacks of all together.
//!
//! Exit codes (with several processes, the most serious of their outcomes, as `dump`): 0 done (also without permission to ptrace: the reason goes to stderr in one line
//! and the kernel view is printed); 1 the process does not exist, is a zombie, or /proc cannot
//! be read; 130 Ctrl-C or SIGTERM during the capture (what was read is printed; every thread
//! was let go), or at any other moment (ended by the watchdog of [`crate::interrupt`] 50 ms
//! later if it has not ended by then: the kernel lets every seized thread go).
//!
//! Test hook: with `STACKDUMP_TEST_PAUSE_AFTER_SEIZE=1` in its environment, inspect prints
//! `SEIZED <tid>` to stderr while it holds a thread stopped and waits there until Ctrl-C or
//! SIGTERM (or until it is killed), so tests can check that a CLI killed mid-capture leaves the
//! target running.

use crate::cli::{InspectArgs, StackFormat};
use crate::exit::{Interrupted, Several};
use crate::interrupt::Interrupt;
use crate::target::TargetError;
use anyhow::Context;
use stackdump_core::model::{Pid, Tid};
use stackdump_core::outside::inspect::InspectError;
use stackdump_core::outside::{self, capture};
use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

/// The environment variable of the test hook (see the module documentation).
pub const PAUSE_ENV: &str = "STACKDUMP_TEST_PAUSE_AFTER_SEIZE";

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let interrupt = Interrupt::install().context("installing the Ctrl-C handler")?;
    let pause = std::env::var_os(PAUSE_ENV).is_some_and(|v| v == "1");
    let cancel = || interrupt.fired();
    let on_stopped = |tid: Tid| {
        if pause {
            eprintln!("SEIZED {tid}");
            while !interrupt.fired() {
                interrupt.sleep_until(std::time::Instant::now() + Duration::from_secs(1));
            }
        }
    };
    let opts = capture::Options {
        consistent: args.consistent,
        locals: args.locals,
        cancel: &cancel,
        on_stopped: &on_stopped,
        cache: stackdump_core::stack::dwarfcache::DwarfCache::from_env(),
        exits_after: true,
        ..capture::Options::default()
    };
    let pids = if args.subprocesses {
        crate::target::with_subprocesses(&args.pids)
    } else {
        let mut seen = HashSet::new();
        args.pids
            .iter()
            .copied()
            .filter(|p| seen.insert(*p))
            .collect()
    };
    // With one process its error is returned as is; with several, each failure is reported as
    // it happens and the others are still inspected (as `dump` does).
    let multi = pids.len() > 1;
    let mut errors: Vec<anyhow::Error> = Vec::new();
    // One buffer, written in large pieces (stdout is line-buffered: JSON would otherwise be
    // written line by line).
    let mut stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut folded = Vec::new();
    let mut cancelled = false;
    for (i, &pid) in pids.iter().enumerate() {
        if interrupt.fired() {
            cancelled = true;
            break;
        }
        let (dump, outcome) = match inspect_one(pid, &opts) {
            Ok(d) => d,
            Err(e) if multi => {
                stdout.flush()?;
                crate::exit::report(&e);
                errors.push(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(why) = &outcome.denied {
            stdout.flush()?;
            eprintln!(
                "stackdump: no stacks for process {pid}, kernel view only: {}",
                stackdump_core::escape::text(&why.to_string())
            );
        }
        match args.format {
            StackFormat::Text => {
                if i > 0 {
                    writeln!(stdout)?;
                }
                stdout.write_all(
                    stackdump_core::output::render::text_with(
                        &dump,
                        &stackdump_core::output::render::TextOptions {
                            native_all: args.native_all,
                        },
                    )
                    .as_bytes(),
                )?
            }
            StackFormat::Json => {
                // DEL and C1 characters in names, which serde_json writes raw, escaped too.
                // Several processes: one document per line, so they stay machine-readable.
                let json = if multi {
                    serde_json::to_string(&dump)?
                } else {
                    serde_json::to_string_pretty(&dump)?
                };
                stdout.write_all(stackdump_core::escape::json(&json).as_bytes())?;
                writeln!(stdout)?;
            }
            StackFormat::Folded => folded.push(dump),
        }
        if outcome.cancelled {
            cancelled = true;
            break;
        }
    }
    if !folded.is_empty() {
        stdout.write_all(
            stackdump_core::output::folded::folded_with(&folded, &args.folded_root.options())
                .as_bytes(),
        )?;
    }
    stdout.flush()?;
    // The process exits next: freeing every frame of every thread one by one (milliseconds for
    // thousands of threads) would only delay that.
    std::mem::forget(folded);
    if cancelled || interrupt.fired() {
        return Err(Interrupted.into());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Several {
            done: "inspected",
            total: pids.len(),
            errors,
        }
        .into())
    }
}

/// One process: its dump and how the capture went.
pub(crate) fn inspect_one(
    pid: i32,
    opts: &capture::Options,
) -> anyhow::Result<(stackdump_core::model::Dump, capture::Outcome)> {
    // A thread id or a kernel thread: say what to do instead (exit 2).
    crate::target::check_pid_is_process(pid, "inspect")?;
    let inspected = outside::inspect_stacks(Pid(pid), opts).map_err(|e| match e {
        InspectError::NoSuchProcess(_) => TargetError::NoSuchProcess { pid },
        InspectError::Zombie(_) => TargetError::Zombie {
            pid,
            ppid: ppid(pid),
        },
        InspectError::Io { source, .. } => TargetError::Io {
            pid,
            context: format!("reading /proc/{pid}"),
            source,
        },
    })?;
    Ok(inspected)
}

fn ppid(pid: i32) -> i32 {
    stackdump_core::kernel::proc::read_proc_text(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
