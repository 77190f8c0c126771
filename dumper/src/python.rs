//! Interpreter frames: when the process runs CPython, read each thread's Python frames from the
//! interpreter's own structures (never calling into it) and merge them into the native stack.
//! The work is `stackdump_core::python` (shared with `stackdump inspect`); this keeps its
//! cache of symbol tables across dumps.

use stackdump_core::kernel::proc::Mapping;
use stackdump_core::model::Thread;
use stackdump_core::python::{Finder, Limits};
use stackdump_core::stack::unwind::ProcessMemory;
use std::path::Path;
use std::sync::Mutex;

/// What was learnt about the process's files (which one holds `_PyRuntime`), across dumps.
/// Only the dump thread uses it.
static FINDER: Mutex<Option<Finder>> = Mutex::new(None);

/// Add Python frames to the threads of a CPython process (no-op for other processes).
pub fn annotate(threads: &mut [Thread], maps: &[Mapping], errors: &mut Vec<String>) {
    let memory = ProcessMemory {
        pid: std::process::id() as i32,
    };
    let mut finder = FINDER.lock().unwrap_or_else(|e| e.into_inner());
    let finder = finder.get_or_insert_with(Finder::new);
    stackdump_core::python::annotate_with(
        finder,
        &Limits::default(),
        threads,
        &memory,
        maps,
        Path::new("/"),
        errors,
    );
}
