//! End-to-end tests: real processes, real signals, real files.
//!
//! - `examples`: the target programs (C, Python, Rust) reach READY with every thread parked
//!   where it should be, seen from `/proc`. No preload: these run before the dumper exists.
//! - `dump`: the same programs with `libstackdump.so` preloaded, dumped with `kill -s USR1`;
//!   the side files are checked against the kernel's view and the programs' known stacks.
//! - `dumper`: the dumper under pressure and odd configurations: 100 triggers in a row (RSS
//!   bounded), bursts (every trigger accounted for), request ids, the trigger by name, bad
//!   configurations that leave the host untouched, a ptrace-stopped thread, format knobs, the
//!   main thread, a missing dump dir, an executable replaced on disk while it runs.
//! - `eintr`: a host that must never see EINTR survives 200 dumps (blocked threads are copied
//!   without a signal).
//! - `loader`: a host stuck in a library constructor during dlopen still gets a dump.
//! - `wedged`: a host wedged inside malloc still gets a complete, symbolized dump.
//! - `odd_stacks`: signal handlers, a sigaltstack, a 16 KiB stack, a 10,000-deep recursion.
//! - `python`: CPython processes (every version on the machine): Python frames, names and lines
//!   merged at the evaluator frames; recursion, 150 threads, 500 dumps under churn, start-up,
//!   exit, fork; the core's reader from outside.
//! - `torture`: the dumper never harms its host: a trigger storm into a busy host, a forked
//!   child, everyday programs (setuid, setpriv, unshare), hostile surroundings (unwritable dir,
//!   planted symlinks, no fds 0-2, RLIMIT_NOFILE, the host's own handlers, two copies), 2,000
//!   threads.
//! - `findings`: the incident (full stderr pipe, CLOSE_WAIT sockets) and lock waits, dumped with
//!   the preload and inspected without it: the findings name the pipe, its reader, the sockets,
//!   the owner of a mutex; `compare` calls stuck threads stuck and names the CPU burner.
//! - `watchdog`: `STACKDUMP_WATCH` catches the incident with no human action; 200 idle threads
//!   write no dump; a stuck write and a state-D thread are caught.
//!
//! Run: `cargo build --release && cargo test --release --test integration` (the C examples are
//! compiled by the tests with `cc`; the Python example needs `python3`). The artifacts are found
//! next to this test binary, so any `CARGO_TARGET_DIR` works as long as the workspace was built
//! there with the same profile.

mod dump;
mod dumper;
mod eintr;
mod examples;
mod findings;
mod framepointers;
mod loader;
mod odd_stacks;
mod python;
mod torture;
mod util;
mod watchdog;
mod wedged;
