//! Forked children get a dump thread of their own.
//!
//! `fork()` copies only the thread that calls it: a child made by fork without exec (a prefork
//! server's worker, a PostgreSQL backend, a `multiprocessing` child) has the library and its
//! trigger handler, but not the dump thread. The `pthread_atfork` handlers registered here
//! start a new one in the child before `fork()` returns there. (`vfork`, `posix_spawn` and
//! `_Fork` run no fork handlers: children that exec pay nothing, and the exec'd program loads
//! the library afresh.)
//!
//! # What may be held at the moment of the fork, and how each is made safe
//!
//! The child has one thread, the forking one; whatever lock another thread held at the fork
//! stays held in the child forever. What our side of the process can hold:
//!
//! - **The library's heap lock** (`crate::alloc`): held by the dump thread for one allocation
//!   at a time. The prepare handler takes it (bounded wait) so no thread is inside the heap at
//!   the fork; the parent handler releases it; the child handler releases it in the child.
//! - **State behind other locks that the dump thread holds across a call**: backtrace's global
//!   lock and symbol cache (and, through it, the C library's `dl_iterate_phdr` lock), the
//!   Python frame reader's cache, the file symbolizer's. The dump thread enters such calls only
//!   through [`section`], a gate shared with the prepare handler: a fork waits (bounded) for
//!   the dump thread to leave the call it is in, and the dump thread does not enter another
//!   until the fork is done. If the wait runs out (the dump thread is in a call that takes
//!   long, such as the first parse of a large library's debug information), the child never
//!   calls backtrace (it names functions from the module files only, said in its state page)
//!   and uses a fresh Python cache.
//! - **Our fork handlers themselves**: forks from several threads at once are serialized by
//!   `FORK_LOCK`; a thread that cannot take it in time (a fork from a signal handler that
//!   interrupted this thread's own fork handlers) forks without our help and its child gets no
//!   dump thread.
//! - **The trigger ring, the capture slots, the state page**: reset in the child (records and
//!   slots of threads that do not exist there are dropped; the parent's shared state page is
//!   unmapped, the child's dump thread maps its own).
//! - **The C library's locks** (malloc arenas, stdio, the loader's lock, the thread-stack
//!   cache) are made consistent in the child by glibc's own fork before any child handler runs.
//!
//! Every wait in the prepare handler is bounded by `FORK_PATIENCE` in all; none of the
//! handlers can block the fork forever. What a failure costs is the child's dump thread, never
//! the child: it then has no thread named `stackdump`, and `stackdump dump` refuses it with the
//! reason. A fork while no dump runs waits for nothing.
//!
//! The handlers are async-signal-safe up to the thread creation in the child (a fork from a
//! signal handler runs them in the handler): atomics, `sched_yield`, `futex`, `munmap`, the
//! clock. The child then starts the thread the way the constructor does (`pthread_create`,
//! which glibc makes usable in a forked child; our heap, consistent by the above).

use crate::sigctx;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

/// The longest a fork waits, in all, for the dump thread (to leave a gated call and the heap).
pub const FORK_PATIENCE: Duration = Duration::from_millis(50);

/// Bit 0: the dump thread is inside a gated call. Higher bits: forks in progress (2 each).
static GATE: AtomicU32 = AtomicU32::new(0);
const INSIDE: u32 = 1;
const FORKING: u32 = 2;

/// Serializes our fork handlers; [`FORK_OWNER`] is the `pthread_self` of its holder (the same
/// value in the child, where it is the only thread).
static FORK_LOCK: AtomicBool = AtomicBool::new(false);
static FORK_OWNER: AtomicUsize = AtomicUsize::new(0);
/// Set by the holder of [`FORK_LOCK`]: it took the heap lock; the dump thread was outside any
/// gated call.
static HEAP_TAKEN: AtomicBool = AtomicBool::new(false);
static GATE_CLEAN: AtomicBool = AtomicBool::new(false);
/// The parent's pid, noted by the prepare handler (the child's state page says it).
static PARENT: AtomicI32 = AtomicI32::new(0);

/// In this process, backtrace's state may have been copied mid-call from the parent: never
/// call it (see the module header).
static BACKTRACE_UNUSABLE: AtomicBool = AtomicBool::new(false);
/// This process was forked from `PARENT` and its dump thread started in the child handler.
static FORKED_FROM: AtomicI32 = AtomicI32::new(0);
/// Children whose dump thread could not be started (kept for tests and the state page).
pub static CHILD_WITHOUT_THREAD: AtomicU32 = AtomicU32::new(0);

/// `CLOCK_MONOTONIC` in nanoseconds. Async-signal-safe (`clock_gettime` is, by POSIX).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Run `f` (dump thread only) where a fork cannot copy it half-done: see the module header.
/// Waits while a fork is being prepared (for as long as the fork takes, a few ms at most).
pub fn section<R>(f: impl FnOnce() -> R) -> R {
    loop {
        let g = GATE.load(Ordering::Acquire);
        if g & !INSIDE == 0 {
            if GATE
                .compare_exchange(g, g | INSIDE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break;
            }
            continue;
        }
        crate::sys::futex_wait(&GATE, g, Some(Duration::from_millis(1)));
    }
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            // Only a fork waits for this (`prepare` adds FORKING before it looks at INSIDE and
            // sleeps while GATE still holds what it saw): no FORKING in what we cleared INSIDE
            // from, no sleeper, and no system call on the dump's hot path (a section per
            // thread copied).
            if GATE.fetch_and(!INSIDE, Ordering::AcqRel) & !INSIDE != 0 {
                sigctx::futex_wake_all(&GATE);
            }
        }
    }
    let _leave = Leave;
    f()
}

/// True when backtrace must not be called in this process (see the module header).
pub fn backtrace_unusable() -> bool {
    BACKTRACE_UNUSABLE.load(Ordering::Relaxed)
}

/// The parent's pid when this process's dump thread was started by the fork handler.
pub fn forked_from() -> Option<i32> {
    Some(FORKED_FROM.load(Ordering::Relaxed)).filter(|p| *p > 0)
}

/// Register the handlers (from `crate::install`, once the dump thread runs).
pub fn register() {
    // SAFETY: the three handlers are `extern "C" fn()` that never unwind; the library is never
    // unloaded while the process runs (dlclose of a preloaded object does not unload it).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

fn self_id() -> usize {
    // SAFETY: pthread_self has no preconditions and is async-signal-safe in glibc (it reads
    // the thread pointer).
    unsafe { libc::pthread_self() as usize }
}

extern "C" fn prepare() {
    let until = monotonic_ns().saturating_add(FORK_PATIENCE.as_nanos() as u64);
    // Serialize forks among themselves (bounded: see FORK_LOCK).
    loop {
        if FORK_LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            break;
        }
        if monotonic_ns() >= until {
            return; // not ours: the child gets no dump thread
        }
        // SAFETY: no preconditions.
        unsafe { libc::sched_yield() };
    }
    FORK_OWNER.store(self_id(), Ordering::SeqCst);
    PARENT.store(sigctx::getpid(), Ordering::SeqCst);
    // Close the gate, then wait for the dump thread to leave the call it is in.
    GATE.fetch_add(FORKING, Ordering::AcqRel);
    let mut clean = false;
    loop {
        let g = GATE.load(Ordering::Acquire);
        if g & INSIDE == 0 {
            clean = true;
            break;
        }
        let now = monotonic_ns();
        if now >= until {
            break;
        }
        crate::sys::futex_wait(
            &GATE,
            g,
            Some(Duration::from_nanos((until - now).min(1_000_000))),
        );
    }
    GATE_CLEAN.store(clean, Ordering::SeqCst);
    HEAP_TAKEN.store(crate::alloc::fork_lock(until), Ordering::SeqCst);
}

extern "C" fn parent() {
    if FORK_OWNER.load(Ordering::SeqCst) != self_id() || !FORK_LOCK.load(Ordering::SeqCst) {
        return; // prepare gave up before taking anything
    }
    if HEAP_TAKEN.swap(false, Ordering::SeqCst) {
        crate::alloc::fork_unlock();
    }
    FORK_OWNER.store(0, Ordering::SeqCst);
    GATE.fetch_sub(FORKING, Ordering::AcqRel);
    sigctx::futex_wake_all(&GATE);
    FORK_LOCK.store(false, Ordering::Release);
}

extern "C" fn child() {
    let _errno = sigctx::ErrnoGuard::save();
    // Whatever happens below, nothing of the parent's dump thread exists here.
    sigctx::trigger::reset_in_child();
    sigctx::capture::reset_in_child();
    crate::state::unmap_in_child();
    GATE.store(0, Ordering::SeqCst);
    let ours = FORK_OWNER.load(Ordering::SeqCst) == self_id() && FORK_LOCK.load(Ordering::SeqCst);
    let heap = ours && HEAP_TAKEN.swap(false, Ordering::SeqCst);
    let clean = GATE_CLEAN.load(Ordering::SeqCst);
    FORK_OWNER.store(0, Ordering::SeqCst);
    FORK_LOCK.store(false, Ordering::SeqCst);
    FORKED_FROM.store(0, Ordering::SeqCst);
    if !heap {
        // Another thread's fork was half-way through ours, or the heap could not be taken in
        // time: its lock may be held forever here, so nothing of ours may allocate. No thread.
        CHILD_WITHOUT_THREAD.fetch_add(1, Ordering::Relaxed);
        return;
    }
    crate::alloc::fork_unlock();
    if !clean {
        BACKTRACE_UNUSABLE.store(true, Ordering::SeqCst);
    }
    FORKED_FROM.store(PARENT.load(Ordering::SeqCst), Ordering::SeqCst);
    if crate::install::start_in_child().is_err() {
        FORKED_FROM.store(0, Ordering::SeqCst);
        CHILD_WITHOUT_THREAD.fetch_add(1, Ordering::Relaxed);
    }
}
