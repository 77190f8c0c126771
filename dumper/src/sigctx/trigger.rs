//! Triggers: record who asked for a dump, and get the dump thread to serve it.
//!
//! A bounded ring of [`TriggerRecord`]s, written by whoever takes a trigger and drained by the
//! dump thread. Triggers that arrive while a dump runs wait in the ring and are served together
//! by the next dump (see `crate::capture`). When more than [`RING`] triggers are pending, the
//! extra ones are counted in [`DROPPED`] (and are still served).
//!
//! # Who takes a trigger
//!
//! The dump thread never runs a signal handler: it blocks every asynchronous signal, the
//! trigger included, and takes its signals with `rt_sigtimedwait` in [`wait_for_work`](crate::triggers::wait_for_work), waiting
//! for two of them:
//!
//! - the **trigger** itself, when it is sent to the dump thread (`stackdump dump` directs it
//!   there with `rt_tgsigqueueinfo`), or when it is sent to the process and the kernel gives it
//!   to the waiting dump thread (every host thread blocks it, or the kernel picked our thread).
//!   The dump thread records it with [`record`] (sender pid and uid, `si_code`, request id), as
//!   the handler would. A host that replaced our trigger handler therefore still gets dumps from
//!   `stackdump dump`, and its handler never runs on our thread (whose fd table is private);
//! - the **capture signal**, as a *wake*: a trigger taken by a **host** thread runs our handler
//!   [`on_trigger`] there, which records it and then sends the capture signal to the dump thread
//!   with `tgkill(getpid(), DUMPER_TID, capture)` (see [`wake_dump_thread`]). The capture signal
//!   is a real-time signal: it queues, and never merges with a trigger (a `stackdump dump`
//!   request) pending on the dump thread. Its handler, should the signal ever reach another
//!   thread, ignores it (it is not `SI_QUEUE`).
//!
//! # No lost wake-up
//!
//! The dump thread publishes its tid in [`DUMPER_TID`] and checks the ring ([`pending`](crate::triggers::pending)) before
//! every wait; a handler records, then reads [`DUMPER_TID`], then claims [`WAKE_SENT`] and sends
//! the wake only if no wake is already on its way. All of these accesses are `SeqCst`, so in
//! their single total order:
//!
//! - a handler that read `DUMPER_TID == 0` recorded before the dump thread stored its tid, hence
//!   before the dump thread's next look at the ring, which sees the record;
//! - a handler that found `WAKE_SENT == 1` recorded before the dump thread clears `WAKE_SENT`,
//!   which it does after taking a signal (the wake that set it, or a trigger it merged into)
//!   and before it looks at the ring again: that look sees the record;
//! - otherwise the handler sent a wake, which stays pending on the dump thread until taken.
//!
//! At most one wake is in flight at a time, so a storm of triggers cannot fill the signal queue
//! with wakes. If the wake cannot be queued (`EAGAIN`: the user's `RLIMIT_SIGPENDING` is used
//! up), the handler sends the trigger signal itself to the dump thread when it is a standard
//! signal (those never need a queue entry; the dump thread tells it from a real trigger because
//! it comes from its own process with `SI_TKILL`). When the trigger is a real-time signal too,
//! nothing can be sent: the record waits in the ring until the next wake, i.e. the next trigger
//! (a `stackdump dump` request, or a trigger taken by a host thread once the queue has room).
//!
//! In a forked child the tid is forgotten (`pthread_atfork`, [`reset_in_child`]) until the child's
//! own dump thread publishes its own; before that, and for children made without `fork()`, `tgkill` with the child's own pid finds no such thread
//! and fails harmlessly: the trigger is recorded and ignored.

use super::{getpid, ErrnoGuard};
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Capacity of the trigger ring.
pub const RING: usize = 64;

/// The first real-time signal as the kernel counts (`SIGRTMIN` in the kernel's headers; the C
/// library keeps a few for itself above it, which does not matter here): standard signals
/// below it never need a queue entry, so sending one never fails with `EAGAIN`.
const KERNEL_SIGRTMIN: i32 = 32;

/// What the handler records about one trigger. `seq` is written last: a slot is complete when
/// its `seq` equals its ring index plus one.
pub struct TriggerRecord {
    pub seq: AtomicU64,
    pub sender_pid: AtomicI32,
    pub sender_uid: AtomicU32,
    /// `si_code` of the trigger (`SI_USER` for kill, `SI_QUEUE` for sigqueue, ...).
    pub code: AtomicI32,
    /// Low 32 bits of `si_value` when `code == SI_QUEUE`, else 0.
    pub value: AtomicU32,
    /// The thread that took the trigger (ran the handler, or the dump thread's sigwait).
    pub taker: AtomicI32,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: TriggerRecord = TriggerRecord {
    seq: AtomicU64::new(0),
    sender_pid: AtomicI32::new(0),
    sender_uid: AtomicU32::new(0),
    code: AtomicI32::new(0),
    value: AtomicU32::new(0),
    taker: AtomicI32::new(0),
};

/// The ring itself.
pub static RECORDS: [TriggerRecord; RING] = [EMPTY; RING];
/// Next ring index a trigger will be recorded at (monotonic: the number of triggers recorded).
pub static HEAD: AtomicU64 = AtomicU64::new(0);
/// Next ring index the dump thread will read (monotonic).
pub static TAIL: AtomicU64 = AtomicU64::new(0);
/// Triggers that found the ring full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Trigger handlers currently running. While one runs, its thread blocks the capture signal
/// (it is in the trigger's `sa_mask`), so the dump thread waits for this to reach zero before
/// believing that a thread blocks the capture signal for good.
pub static IN_HANDLER: AtomicU32 = AtomicU32::new(0);
/// The dump thread's kernel tid, published by [`wait_for_work`](crate::triggers::wait_for_work); 0 before it first waits and in
/// a forked child.
pub static DUMPER_TID: AtomicI32 = AtomicI32::new(0);
/// 1 while a wake sent by a handler may not have been taken yet by the dump thread.
pub static WAKE_SENT: AtomicU32 = AtomicU32::new(0);
/// The trigger signal's number, set once by `crate::install` before any handler or the dump
/// thread can run.
pub static TRIGGER_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The capture signal's number (the wake), set with [`TRIGGER_SIGNAL`].
pub static CAPTURE_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Set the two signal numbers (`crate::install`, before the dump thread starts and before the
/// trigger handler is installed).
pub fn set_signals(trigger: i32, capture: i32) {
    TRIGGER_SIGNAL.store(trigger, Ordering::SeqCst);
    CAPTURE_SIGNAL.store(capture, Ordering::SeqCst);
}

/// In a forked child (`crate::fork`, from the `pthread_atfork` child handler): the parent's dump
/// thread does not exist here. Forget it, and every trigger the parent had recorded but not
/// served yet (those were for the parent's dump, not the child's); handlers that were running
/// on the parent's other threads do not run here.
///
/// Async-signal-safe (a fork from a signal handler runs it): atomic stores only.
pub fn reset_in_child() {
    DUMPER_TID.store(0, Ordering::SeqCst);
    WAKE_SENT.store(0, Ordering::SeqCst);
    IN_HANDLER.store(0, Ordering::SeqCst);
    TAIL.store(HEAD.load(Ordering::SeqCst), Ordering::SeqCst);
    DROPPED.store(0, Ordering::SeqCst);
}

/// The body of the trigger handler (called by signal-hook-registry's handler with the siginfo)
/// on a host thread: record the trigger, then wake the dump thread.
///
/// Async-signal-safe: atomic operations on statics and at most three raw system calls
/// (`getpid`, `tgkill`, maybe a second `tgkill`). No allocation, no lock, no fd; errno is saved
/// and restored. Several threads may run it at once: the ring index comes from `fetch_add`.
pub fn on_trigger(info: &libc::siginfo_t) {
    let _errno = ErrnoGuard::save();
    IN_HANDLER.fetch_add(1, Ordering::AcqRel);
    record(info);
    wake_dump_thread();
    IN_HANDLER.fetch_sub(1, Ordering::AcqRel);
}

/// Record one trigger into the ring (from the handler on a host thread, or from the dump thread
/// for a trigger it took with `rt_sigtimedwait`): sender pid and uid, `si_code`, and the
/// sigqueue value (the CLI's request id) for `SI_QUEUE`.
///
/// Async-signal-safe: atomic operations on statics only.
pub fn record(info: &libc::siginfo_t) {
    let code = info.si_code;
    // SAFETY: for signals sent by kill/sigqueue/tgkill (si_code <= 0, i.e. SI_USER, SI_QUEUE,
    // SI_TKILL) the kernel fills the _kill/_rt union members, so si_pid and si_uid are
    // initialised; for SI_QUEUE si_value is initialised as well. For other codes we read
    // nothing from the union.
    let (pid, uid, value) = unsafe {
        if code <= 0 {
            let value = if code == libc::SI_QUEUE {
                info.si_value().sival_ptr as usize as u32
            } else {
                0
            };
            (info.si_pid(), info.si_uid(), value)
        } else {
            (0, 0, 0)
        }
    };
    // SeqCst: ordered before the handler's look at DUMPER_TID and WAKE_SENT (module header).
    let idx = HEAD.fetch_add(1, Ordering::SeqCst);
    if idx.wrapping_sub(TAIL.load(Ordering::Acquire)) >= RING as u64 {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    } else {
        let rec = &RECORDS[(idx % RING as u64) as usize];
        rec.sender_pid.store(pid, Ordering::Relaxed);
        rec.sender_uid.store(uid, Ordering::Relaxed);
        rec.code.store(code, Ordering::Relaxed);
        rec.value.store(value, Ordering::Relaxed);
        rec.taker.store(super::gettid(), Ordering::Relaxed);
        rec.seq.store(idx + 1, Ordering::Release);
    }
}

/// `tgkill(tgid, tid, signo)`; the errno on failure.
///
/// Async-signal-safe: one raw system call; errno is read right after it (the caller's
/// [`ErrnoGuard`] restores it).
fn tgkill(tgid: i32, tid: i32, signo: i32) -> Result<(), i32> {
    // SAFETY: tgkill takes three integers and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, signo) };
    if r == 0 {
        Ok(())
    } else {
        // SAFETY: __errno_location returns the calling thread's errno address, always valid.
        Err(unsafe { *libc::__errno_location() })
    }
}

/// Get the dump thread to look at the ring: send it the capture signal, unless a wake is
/// already on its way or it has not started waiting yet (see the module header for why neither
/// loses a trigger, and for the `EAGAIN` fallback).
///
/// Async-signal-safe: atomics and at most two raw `tgkill` system calls.
pub fn wake_dump_thread() {
    let tid = DUMPER_TID.load(Ordering::SeqCst);
    if tid <= 0 {
        return; // it checks the ring before its first wait
    }
    if WAKE_SENT.swap(1, Ordering::SeqCst) != 0 {
        return; // a wake is on its way; the ring is checked after it is taken
    }
    // The tgid is our own pid as the kernel sees it now: in a forked child the dump thread's
    // tid is not one of its threads, and tgkill fails with ESRCH instead of reaching anyone.
    let pid = getpid();
    let err = match tgkill(pid, tid, CAPTURE_SIGNAL.load(Ordering::Relaxed)) {
        Ok(()) => return,
        Err(e) => e,
    };
    let trigger = TRIGGER_SIGNAL.load(Ordering::Relaxed);
    if err == libc::EAGAIN && trigger < KERNEL_SIGRTMIN && tgkill(pid, tid, trigger).is_ok() {
        return;
    }
    // Nothing is on its way: let the next trigger try again.
    WAKE_SENT.store(0, Ordering::SeqCst);
}
