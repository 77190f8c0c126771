//! `stackdump dump PID --locals`: the locals of the Python frames of a dump the library wrote,
//! read here, from outside, at the frame addresses the dump recorded (`frame.python.frame`).
//! The library never reads locals, so none is ever written to a dump file; the CLI reads them
//! with `process_vm_readv`, which needs the right to ptrace the target (`PTRACE_MODE_ATTACH`).
//!
//! They are read after the dump, not at its moment: a frame is read only while it still runs
//! the code object the dump saw (for a thread that waits where the dump found it, its locals of
//! the dump's moment); the others are counted in the dump's `errors`.

use super::capture::{denied_reason, memory_denied};
use crate::kernel::proc;
use crate::model::Dump;
use crate::python::{self, LocalsRead, PyError};
use crate::stack::unwind::ProcessMemory;
use std::path::PathBuf;

/// Read the locals of `dump`'s Python frames from process `pid` (as seen from here) into the
/// dump. `Err` says in one line why none could be read (no permission, not a Python process).
pub fn add_locals(pid: i32, dump: &mut Dump) -> Result<LocalsRead, String> {
    crate::kernel::rootfs::remember_creds(pid);
    let maps = match crate::kernel::proc::read_proc_file(format!("/proc/{pid}/maps")) {
        Ok(b) if !b.is_empty() => proc::parse_maps(&b),
        Ok(_) | Err(_) => return Err(denied(pid)),
    };
    if let Some(errno) = memory_denied(pid, &maps) {
        return Err(if errno == libc::EPERM || errno == libc::EACCES {
            denied(pid)
        } else {
            format!(
                "cannot read the memory of process {pid}: {}",
                std::io::Error::from_raw_os_error(errno)
            )
        });
    }
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let memory = ProcessMemory { pid };
    let read = python::read_locals(
        &mut dump.threads,
        &memory,
        &maps,
        &root,
        &python::Limits::default(),
    )
    .map_err(|e| match e {
        PyError::NotPython => format!("process {pid} is not a CPython process: no locals"),
        e => format!("no locals: {e}"),
    })?;
    if read.moved > 0 {
        dump.errors.push(format!(
            "python: locals read after the dump: {} frame(s) no longer ran the same code (returned, or their thread moved on), so they have none",
            read.moved
        ));
    }
    if read.unknown > 0 {
        dump.errors.push(format!(
            "python: {} frame(s) of the dump do not record their address (an older library), so they have no locals",
            read.unknown
        ));
    }
    if read.late {
        dump.errors.push(
            "python: the time budget ran out while reading locals: some frames have none".into(),
        );
    }
    Ok(read)
}

/// Why the memory of `pid` may not be read, and that `--locals` needs it.
fn denied(pid: i32) -> String {
    format!(
        "cannot read the locals: reading the memory of process {pid} (process_vm_readv) needs the right to ptrace it (PTRACE_MODE_ATTACH): {}",
        denied_reason(pid)
    )
}
