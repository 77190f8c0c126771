//! # stackdump-core
//!
//! What a stack dump *is*, and how to read the kernel's view of a thread. Shared by
//! `libstackdump.so` (which runs inside the target) and the `stackdump` CLI (which runs outside).
//! Nothing here installs a signal handler, spawns a thread or runs a constructor: linking this
//! crate has no side effects.
//!
//! The modules are the stages of the pipeline, each importing only the ones listed before it
//! (`ARCHITECTURE.md` at the repository root has the pipeline and the rules):
//!
//! - [`model`]: the resolved dump (`Dump`, `Thread`, `Frame`, `KernelView`, `Finding`) and its
//!   JSON form (`stackdump/1`, documented in `docs/FORMAT.md`); [`model::dumpfile`]: side-file
//!   names (`stackdump-<pid>-<time>Z[-r<request>].{txt,json}`); [`model::timefmt`]: UTC
//!   timestamps without `localtime` (no allocation, no locale, no tz files).
//! - [`kernel`]: the kernel's view. [`kernel::proc`]: pure parsers for
//!   `/proc/PID/task/TID/{stat,status,syscall,wchan,stack}` and `/proc/PID/maps`, plus small
//!   readers; [`kernel::syscalls`]: system call names and which arguments are file descriptors;
//!   [`kernel::signals`]: signal names and numbers, parsed **by name**; [`kernel::fds`],
//!   [`kernel::net`], [`kernel::futex`]: what the process's fds are (pipes: fill level and the
//!   other end; sockets: state and queues), and who owns the futexes its threads wait on;
//!   [`kernel::rootfs`]: the one way to open a file a target controls.
//! - [`stack`]: user stacks. [`stack::unwind`]: loaded modules and DWARF unwinding of copied
//!   stacks (inside and outside); [`stack::symbols`]: symbols from module files (DWARF, symbol
//!   tables, build-id debug files); [`stack::dwarfcache`]: the CLI's cache of their
//!   decompressed debug sections; [`stack::dwarfunits`]: which units hold an address, so only
//!   those are parsed.
//! - [`python`]: CPython frames read from the interpreter's structures and merged into the
//!   native stacks (inside and outside).
//! - [`analysis`]: [`analysis::facts`] gathers the process facts; [`analysis::diagnose`]
//!   computes the findings, one line each with evidence (full pipes, lock owners, deadlocks,
//!   `CLOSE_WAIT` sockets, threads sharing a stack).
//! - [`output`]: [`output::render`]: the text form of a dump (the JSON form is `serde_json` of
//!   the model); [`output::folded`]: folded stacks for flame graph tools;
//!   [`output::compare`]: what is stuck, what burned CPU, what came and went, across dumps.
//! - [`outside`]: dumps of processes that were not preloaded. [`outside::inspect`]: the kernel
//!   view of any process from outside (no preload, no signal); [`outside::capture`]: their user
//!   stacks: blocked threads copied without a stop, the others stopped one at a time with ptrace.
//!
//! Two policies every stage applies to what a target controls:
//!
//! - [`limits`]: the budgets of everything read from files a target controls (decompressed
//!   DWARF, unwind tables, symbol tables, dump files), with the reasons for each cap.
//! - [`escape`]: the one escaper of target-controlled text for terminals (text, folded, messages).

pub mod escape;
pub mod limits;

pub mod model;

pub mod kernel;

pub mod stack;

pub mod python;

pub mod analysis;

pub mod output;

pub mod outside;

pub use model::{Pid, Tid};
