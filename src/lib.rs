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
//! - [`symbols`]: symbols from module files (DWARF, symbol tables, build-id debug files);
//!   [`dwarfcache`]: the CLI's cache of their decompressed debug sections; [`dwarfunits`]:
//!   which units hold an address, so only those are parsed.
//! - [`syscalls`]: system call names and which arguments are file descriptors.
//! - [`render`]: the text form of a dump (the JSON form is `serde_json` of the model).
//! - [`facts`], [`fds`], [`net`], [`futex`]: what the process's fds are (pipes: fill level and
//!   the other end; sockets: state and queues), and who owns the futexes its threads wait on.
//! - [`diagnose`]: findings, one line each with evidence (full pipes, lock owners, deadlocks,
//!   `CLOSE_WAIT` sockets, threads sharing a stack).
//! - [`inspect`]: a kernel-view dump of any process from outside (no preload, no signal).
//! - [`outside`]: user stacks of another process from outside: blocked threads copied without
//!   a stop, the others stopped one at a time with ptrace.
//! - [`compare`]: what is stuck, what burned CPU, what came and went, across dumps.
//! - [`folded`]: folded stacks for flame graph tools.
//! - [`limits`]: the budgets of everything read from files a target controls (decompressed
//!   DWARF, unwind tables, symbol tables, dump files), with the reasons for each cap.
//! - [`escape`]: the one escaper of target-controlled text for terminals (text, folded, messages).
//! - [`dumpfile`]: side-file names (`stackdump-<pid>-<time>Z[-r<request>].{txt,json}`).
//! - [`timefmt`]: UTC timestamps without `localtime` (no allocation, no locale, no tz files).
//! - [`unwind`]: loaded modules and DWARF unwinding of copied stacks (inside and outside).
//! - [`fprecover`]: rbp recovered from the copied stack of a thread blocked in a system call,
//!   so frame-pointer code is captured without a signal or a stop.
//! - [`python`]: CPython frames read from the interpreter's structures and merged into the
//!   native stacks (inside and outside).

pub mod compare;
pub mod diagnose;
pub mod dumpfile;
pub mod dwarfcache;
pub mod dwarfunits;
pub mod escape;
pub mod facts;
pub mod fds;
pub mod folded;
pub mod fprecover;
pub mod futex;
pub mod inspect;
pub mod limits;
pub mod model;
pub mod net;
pub mod outside;
pub mod proc;
pub mod python;
pub mod render;
pub mod rootfs;
pub mod signals;
pub mod symbols;
pub mod syscalls;
pub mod timefmt;
pub mod unwind;

pub use model::{Pid, Tid};
