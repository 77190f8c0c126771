//! A dump of a process that was not preloaded (`stackdump inspect`): its kernel view visited
//! from outside ([`inspect`]), and its user stacks read without a stop or with ptrace
//! ([`capture`]); [`inspect_stacks`] runs both.

pub mod capture;
pub mod inspect;
pub mod locals;

use crate::analysis::{diagnose, facts};
use crate::model::{Dump, Pid};
use inspect::InspectError;
use std::time::Instant;

/// Inspect process `pid` from outside with its user stacks: the kernel view (as [`inspect::inspect`]),
/// during which a thread blocked in a system call has its stack copied without a stop
/// ([`capture::Capture`]), then the other threads stopped one at a time with ptrace (while
/// another thread gathers the process facts from the kernel view; with
/// [`capture::Options::consistent`], before every thread is stopped), then the findings. Without
/// permission to ptrace, the dump is the kernel view and [`capture::Outcome::denied`] says why.
///
/// The maps, each module's load bias and a thread that reads their debug information are
/// started first ([`capture::Prepared`]), so that reading DWARF (milliseconds from the
/// cache, tens of milliseconds for a C library's compressed debug file without it) overlaps the
/// kernel view and the capture.
///
/// Those two helper threads (debug information, process facts) are started only when a CPU is
/// free for them (fewer runnable tasks than our CPUs). Otherwise the work is done in turn on
/// the calling thread: a helper would take the CPU of the thread it helps, or of one of the
/// target's running threads, and a running thread interrupted for its stop stops only once it
/// is back on a CPU (seen: a thread spinning on one of two CPUs took 2.6 ms to stop while our
/// facts thread held its CPU).
pub fn inspect_stacks(
    pid: Pid,
    opts: &capture::Options,
) -> Result<(Dump, capture::Outcome), InspectError> {
    let start = Instant::now();
    if pid.0 <= 0 {
        return Err(InspectError::NoSuchProcess(pid));
    }
    let helpers = spare_cpu();
    let prepared = capture::Prepared::start(pid.0, opts.cache.clone(), helpers);
    let mut capture = capture::Capture::new(prepared, opts);
    let mut dump = inspect::visit_threads(pid, &mut capture)?;
    // The visit's stack copies count as capture, not as kernel view.
    let kernel_view = start.elapsed().saturating_sub(capture.visit_time());
    // The process facts (its fds and sockets, the other ends of its pipes: a look through
    // every process's fds) come from the kernel view alone: gathered on a thread of their own
    // while the stacks are taken and symbolized, from a copy of the threads as visited.
    let visited = dump.clone();
    let facts_opts = facts::Options::outside(pid);
    let errors_before = dump.errors.len();
    let (outcome, (process, errors)) = std::thread::scope(|s| {
        let gather = || facts::gather(&visited, &facts_opts);
        if opts.consistent {
            // Every thread stays stopped until the last copy: the facts first, so that a scan
            // beside the copies does not make that longer.
            let gathered = gather();
            return (capture.finish(&mut dump, opts), gathered);
        }
        if !helpers {
            // No CPU to spare: after the stacks, on this thread.
            let outcome = capture.finish(&mut dump, opts);
            return (outcome, gather());
        }
        let gathering = std::thread::Builder::new()
            .name("facts".into())
            .spawn_scoped(s, gather);
        let outcome = capture.finish(&mut dump, opts);
        let gathered = match gathering {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: gathered here, after the stacks.
            Err(_) => gather(),
        };
        (outcome, gathered)
    });
    dump.process = Some(process);
    // In the order of a dump gathered before its stacks: the facts' errors first.
    dump.errors.splice(errors_before..errors_before, errors);
    // With the stacks when they could be read (threads sharing a stack), else from the kernel
    // view alone.
    dump.findings = diagnose::findings(&dump);
    dump.capture.phases_us.kernel_view = kernel_view.as_micros() as u64;
    dump.capture.duration_us = start.elapsed().as_micros() as u64;
    Ok((dump, outcome))
}

/// Whether a CPU is free beyond the ones running now (this thread among them): the runnable
/// tasks of the whole system (`/proc/loadavg`'s fourth field, at this instant) fewer than the
/// CPUs this thread may run on (its affinity: both counts are of the host's CPUs, where a
/// container's CPU quota would compare a host-wide count with a share). Unknown counts as no.
fn spare_cpu() -> bool {
    let cpus = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).map_or(1, |set| {
        (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .count()
    });
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| runnable_now(&t))
        .is_some_and(|running| running < cpus)
}

/// The runnable tasks counted in `/proc/loadavg` (`0.52 0.58 0.59 2/311 12345`: 2).
fn runnable_now(loadavg: &str) -> Option<usize> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runnable_tasks_of_loadavg() {
        assert_eq!(runnable_now("0.52 0.58 0.59 2/311 12345\n"), Some(2));
        assert_eq!(runnable_now("1.00 1.00 1.00 17/2048 99"), Some(17));
        assert_eq!(runnable_now("0.00 0.00 0.00"), None);
        assert_eq!(runnable_now("a b c x/y z"), None);
        // This test runs: at least itself.
        let text = std::fs::read_to_string("/proc/loadavg").unwrap();
        assert!(runnable_now(&text).unwrap() >= 1, "{text}");
    }
}
