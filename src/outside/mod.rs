//! A dump of a process that was not preloaded (`stackdump inspect`): its kernel view visited
//! from outside ([`inspect`]), and its user stacks read without a stop or with ptrace
//! ([`capture`]); [`inspect_stacks`] runs both.

pub mod capture;
pub mod inspect;
pub mod locals;

use crate::analysis::diagnose;
use crate::model::{Dump, Pid};
use inspect::InspectError;
use std::time::Instant;

/// Inspect process `pid` from outside with its user stacks: the kernel view (as [`inspect::inspect`]),
/// during which a thread blocked in a system call has its stack copied without a stop
/// ([`capture::Capture`]), then the other threads stopped one at a time with ptrace,
/// then the findings again (threads sharing a stack). Without permission to ptrace, the dump is
/// the kernel view and [`capture::Outcome::denied`] says why.
///
/// The maps, the modules' unwind data and a thread that reads their debug information are
/// started first ([`capture::Prepared`]), so that reading DWARF (milliseconds from the
/// cache, tens of milliseconds for a C library's compressed debug file without it) overlaps the
/// kernel view and the capture.
pub fn inspect_stacks(
    pid: Pid,
    opts: &capture::Options,
) -> Result<(Dump, capture::Outcome), InspectError> {
    let start = Instant::now();
    if pid.0 <= 0 {
        return Err(InspectError::NoSuchProcess(pid));
    }
    let prepared = capture::Prepared::start(pid.0, opts.cache.clone());
    let mut capture = capture::Capture::new(prepared, opts);
    let mut dump = inspect::inspect_visiting(pid, &mut capture)?;
    // The visit's stack copies count as capture, not as kernel view.
    let kernel_view = start.elapsed().saturating_sub(capture.visit_time());
    let outcome = capture.finish(&mut dump, opts);
    if outcome.denied.is_none() {
        dump.findings = diagnose::findings(&dump);
    }
    dump.capture.phases_us.kernel_view = kernel_view.as_micros() as u64;
    dump.capture.duration_us = start.elapsed().as_micros() as u64;
    Ok((dump, outcome))
}
