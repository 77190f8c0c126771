//! # stackdump-core
//!
//! What a stack dump *is*, and how to read the kernel's view of a thread. Shared by
//! `libstackdump.so` (which runs inside the target) and the `stackdump` CLI (which runs outside).
//! Nothing here installs a signal handler, spawns a thread or runs a constructor: linking this
//! crate has no side effects.
//!
//! - [`model`]: the resolved dump (`Dump`, `Thread`, `Frame`, `KernelView`, `Finding`) and its
//!   JSON form (`stackdump/1`, documented in `docs/FORMAT.md`).
//! - [`proc`]: pure parsers for `/proc/PID/task/TID/{stat,status,syscall,wchan,stack}` and
//!   `/proc/PID/maps`, plus small readers.
//! - [`signals`]: signal names and numbers, parsed **by name**.
//! - [`syscalls`]: system call names and which arguments are file descriptors.
//! - [`render`]: the text form of a dump (the JSON form is `serde_json` of the model).
//! - [`dumpfile`]: side-file names (`stackdump-<pid>-<time>Z[-r<request>].{txt,json}`).
//! - [`timefmt`]: UTC timestamps without `localtime` (no allocation, no locale, no tz files).
//! - [`unwind`]: loaded modules and DWARF unwinding of copied stacks (inside and outside).

pub mod dumpfile;
pub mod model;
pub mod proc;
pub mod render;
pub mod signals;
pub mod syscalls;
pub mod timefmt;
pub mod unwind;

pub use model::{Pid, Tid};
