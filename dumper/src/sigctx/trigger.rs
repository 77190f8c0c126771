//! The trigger handler's side: record who asked for a dump, and wake the dump thread.
//!
//! A bounded ring of [`TriggerRecord`]s written by the handler and drained by the dump thread.
//! Triggers that arrive while a dump runs wait in the ring and are served together by the next
//! dump (see `crate::capture`). When more than [`RING`] triggers are pending, the extra ones are
//! counted in [`DROPPED`] and still wake the dump thread.

use super::{futex_wake_all, ErrnoGuard};
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Capacity of the trigger ring.
pub const RING: usize = 64;

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
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: TriggerRecord = TriggerRecord {
    seq: AtomicU64::new(0),
    sender_pid: AtomicI32::new(0),
    sender_uid: AtomicU32::new(0),
    code: AtomicI32::new(0),
    value: AtomicU32::new(0),
};

/// The ring itself.
pub static RECORDS: [TriggerRecord; RING] = [EMPTY; RING];
/// Next ring index the handler will write (monotonic).
pub static HEAD: AtomicU64 = AtomicU64::new(0);
/// Next ring index the dump thread will read (monotonic).
pub static TAIL: AtomicU64 = AtomicU64::new(0);
/// Triggers that found the ring full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Futex word the dump thread sleeps on; bumped by every trigger.
pub static WAKE: AtomicU32 = AtomicU32::new(0);
/// Trigger handlers currently running. While one runs, its thread blocks the capture signal
/// (it is in the trigger's `sa_mask`), so the dump thread waits for this to reach zero before
/// believing that a thread blocks the capture signal for good.
pub static IN_HANDLER: AtomicU32 = AtomicU32::new(0);

/// The body of the trigger handler (called by signal-hook-registry's handler with the siginfo).
///
/// Async-signal-safe: a few atomic operations on statics and one `futex` wake. No allocation,
/// no lock, no fd. Several threads may run it at once: the ring index comes from `fetch_add`.
pub fn on_trigger(info: &libc::siginfo_t) {
    let _errno = ErrnoGuard::save();
    IN_HANDLER.fetch_add(1, Ordering::AcqRel);
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
    let idx = HEAD.fetch_add(1, Ordering::AcqRel);
    if idx.wrapping_sub(TAIL.load(Ordering::Acquire)) >= RING as u64 {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    } else {
        let rec = &RECORDS[(idx % RING as u64) as usize];
        rec.sender_pid.store(pid, Ordering::Relaxed);
        rec.sender_uid.store(uid, Ordering::Relaxed);
        rec.code.store(code, Ordering::Relaxed);
        rec.value.store(value, Ordering::Relaxed);
        rec.seq.store(idx + 1, Ordering::Release);
    }
    WAKE.fetch_add(1, Ordering::Release);
    futex_wake_all(&WAKE);
    IN_HANDLER.fetch_sub(1, Ordering::AcqRel);
}

/// One trigger as the dump thread reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTrigger {
    pub sender_pid: i32,
    pub sender_uid: u32,
    pub code: i32,
    /// The sigqueue value (the CLI's request id), when there was one.
    pub request: Option<u32>,
}

/// Take every pending trigger (dump thread only). Returns how many triggers found the ring
/// full (their siginfo was not recorded; they are served by this dump all the same).
///
/// The handler records trigger `idx` only when `idx - TAIL < RING`, so with `tail` the value
/// of TAIL the handlers saw, the recorded ones are exactly `[tail, min(head, tail + RING))`.
/// A record whose handler is still running is waited for (briefly, and only while a handler
/// runs); everything up to `head` is then consumed.
pub fn drain(out: &mut Vec<RawTrigger>) -> u64 {
    let head = HEAD.load(Ordering::Acquire);
    let tail = TAIL.load(Ordering::Acquire);
    let end = head.min(tail + RING as u64);
    for idx in tail..end {
        let rec = &RECORDS[(idx % RING as u64) as usize];
        let mut spins = 0u32;
        while rec.seq.load(Ordering::Acquire) != idx + 1
            && IN_HANDLER.load(Ordering::Acquire) != 0
            && spins < 100_000
        {
            spins += 1;
            std::hint::spin_loop();
            if spins % 64 == 0 {
                std::thread::yield_now();
            }
        }
        if rec.seq.load(Ordering::Acquire) == idx + 1 {
            let code = rec.code.load(Ordering::Relaxed);
            let value = rec.value.load(Ordering::Relaxed);
            out.push(RawTrigger {
                sender_pid: rec.sender_pid.load(Ordering::Relaxed),
                sender_uid: rec.sender_uid.load(Ordering::Relaxed),
                code,
                request: (code == libc::SI_QUEUE && value != 0).then_some(value),
            });
        }
    }
    TAIL.store(head, Ordering::Release);
    DROPPED.swap(0, Ordering::AcqRel)
}

/// Sleep until a trigger is waiting (dump thread only; returns at once when one already is).
pub fn wait_for_work() {
    loop {
        let seen = WAKE.load(Ordering::Acquire);
        if pending() {
            return;
        }
        crate::sys::futex_wait(&WAKE, seen, None);
    }
}

/// True when a trigger is waiting.
pub fn pending() -> bool {
    HEAD.load(Ordering::Acquire) != TAIL.load(Ordering::Acquire)
}
