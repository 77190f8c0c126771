//! Interpreter frames: when the process runs CPython, read each thread's Python frames from the
//! interpreter's own structures (never calling into it) and merge them into the native stack.
//! The work is `stackdump_core::python` (shared with `stackdump inspect`); this keeps its
//! cache of symbol tables across dumps, and, within one dump, the code objects its first read
//! found, so that a thread taken again is read again quickly ([`read_again`]).

use stackdump_core::kernel::proc::Mapping;
use stackdump_core::model::Tid;
use stackdump_core::python::{Finder, Limits, PyError, PyProcess};
use stackdump_core::stack::unwind::ProcessMemory;
use std::path::Path;
use std::sync::Mutex;

/// What was learnt about the process's files (which one holds `_PyRuntime`), across dumps.
/// Only the dump thread uses it.
static FINDER: Mutex<Option<Finder>> = Mutex::new(None);

/// Run `f` with the process's [`Finder`], inside a fork section.
fn with_finder<T>(f: impl FnOnce(&mut Finder) -> T) -> T {
    crate::fork::section(|| {
        // Only the dump thread takes the lock, so it is free, except in a child forked while
        // the parent's dump thread held it (see crate::fork): that child's lock stays held
        // forever, and it reads with a cache of its own, for one dump.
        let mut fresh = None;
        let mut guard = match FINDER.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        let finder = match guard.as_mut() {
            Some(g) => g.get_or_insert_with(Finder::new),
            None => fresh.get_or_insert_with(Finder::new),
        };
        f(finder)
    })
}

fn read_with(limits: &Limits, tids: &[Tid], maps: &[Mapping]) -> Result<PyProcess, PyError> {
    let memory = ProcessMemory {
        pid: std::process::id() as i32,
    };
    with_finder(|finder| {
        stackdump_core::python::threads_with(finder, limits, &memory, maps, Path::new("/"), tids)
    })
}

/// Read the Python frames of threads `tids`: done right after the native stacks are copied,
/// and merged into them once they are symbolized (`stackdump_core::python::merge_into`), so
/// that both describe the same moment.
pub fn read(tids: &[Tid], maps: &[Mapping]) -> Result<PyProcess, PyError> {
    read_with(&Limits::default(), tids, maps)
}

/// Read the Python frames of `tid` again, right after its native stack was copied again, in
/// the dump whose [`read`] came before: that thread's frames only, the code objects the first
/// read found reused after a check, and no thread names (the caller keeps the name it had).
/// This is the window in which the thread must not run for the two to agree, so it is kept to
/// a few dozen reads.
pub fn read_again(tid: Tid, maps: &[Mapping]) -> Result<PyProcess, PyError> {
    let limits = Limits {
        only: Some(tid),
        names: false,
        ..Limits::default()
    };
    read_with(&limits, &[tid], maps)
}

/// Drop what one dump learnt about code objects: called when the dump is done, so that an
/// idle process does not hold them.
pub fn forget_codes() {
    with_finder(Finder::forget_codes)
}
