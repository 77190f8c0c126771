//! The dump thread's side of the trigger ring: sleep until a trigger waits
//! ([`wait_for_work`]), then take every recorded trigger ([`drain`]). Never called from a signal
//! handler; the handler's side, the ring and the no-lost-wake-up protocol are in
//! `crate::sigctx::trigger`.

pub use crate::sigctx::trigger::IN_HANDLER;
use crate::sigctx::trigger::{
    record, CAPTURE_SIGNAL, DROPPED, DUMPER_TID, HEAD, RECORDS, RING, TAIL, TRIGGER_SIGNAL,
    WAKE_SENT,
};
use crate::sigctx::{getpid, gettid};
use core::sync::atomic::Ordering;

/// One trigger as the dump thread reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTrigger {
    pub sender_pid: i32,
    pub sender_uid: u32,
    pub code: i32,
    /// The sigqueue value (the CLI's request id), when there was one.
    pub request: Option<u32>,
    /// The thread that took it.
    pub taker: i32,
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
                taker: rec.taker.load(Ordering::Relaxed),
            });
        }
    }
    TAIL.store(head, Ordering::Release);
    DROPPED.swap(0, Ordering::AcqRel)
}

/// Sleep until a trigger is waiting (dump thread only; returns at once when one already is).
///
/// Publishes the calling thread as the dump thread, then loops: if the ring holds a trigger,
/// return; else wait in `rt_sigtimedwait` for the trigger or the capture signal (both blocked
/// on this thread since it started). A trigger taken here is recorded; anything else is a wake.
/// The wait's fifth system-call argument (ignored by the kernel) is the number of triggers
/// served so far, visible in `/proc/PID/task/TID/syscall` (see `crate::sys::sigwait`).
///
/// With a `timeout`, also returns when it expires with no trigger waiting (the dump thread then
/// re-checks who handles the trigger, `crate::state`).
///
/// With `release`, the library's clean pages are dropped from the process's mappings right
/// before the wait (`crate::sys::release_clean_library_pages`), and the first page of each
/// function at the addresses given is mapped again: the code that runs between the drop and
/// the sleep is only the end of this function, and every page it touches maps back the 64 KiB
/// around it; the fewer functions, the less idle RSS, wherever the linker put them.
pub fn wait_for_work(timeout: Option<std::time::Duration>, release: Option<&[usize]>) {
    let trigger = TRIGGER_SIGNAL.load(Ordering::SeqCst);
    let capture = CAPTURE_SIGNAL.load(Ordering::SeqCst);
    // SAFETY: an all-zero sigset_t is a valid out-parameter for sigemptyset, which only writes
    // it; sigaddset writes bits of our own set (a bad number only makes it fail).
    let set = unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, trigger);
        libc::sigaddset(&mut set, capture);
        set
    };
    // SeqCst: ordered before the look at the ring below (module header).
    DUMPER_TID.store(gettid(), Ordering::SeqCst);
    let me = getpid();
    if let Some(keep) = release {
        crate::sys::release_clean_library_pages();
        crate::sys::prefault_code(keep);
    }
    loop {
        if pending() {
            return;
        }
        let served = TAIL.load(Ordering::Acquire);
        let info = match crate::sys::sigwait(&set, served, timeout) {
            Ok(info) => info,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return,
            // A stop and continue, or a debugger: look again.
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // Cannot happen with a valid set; never spin in the host if it does.
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        // Whatever was taken, any wake sent so far is now taken, merged into what was taken,
        // or still queued (a second one is then harmless): let the next handler send one, and
        // look at the ring after this store.
        WAKE_SENT.store(0, Ordering::SeqCst);
        if info.si_signo == trigger && !is_own_wake(&info, me) {
            record(&info);
        }
    }
}

/// True for the trigger signal sent by [`wake_dump_thread`](crate::sigctx::trigger::wake_dump_thread) as a wake (`EAGAIN` fallback):
/// `tgkill` from our own process.
fn is_own_wake(info: &libc::siginfo_t, me: i32) -> bool {
    // SAFETY: for SI_TKILL the kernel fills the _kill union member (si_pid, si_uid).
    info.si_code == libc::SI_TKILL && unsafe { info.si_pid() } == me
}

/// True when a trigger is waiting.
pub fn pending() -> bool {
    // SeqCst: ordered after the dump thread's stores to DUMPER_TID and WAKE_SENT (module header).
    HEAD.load(Ordering::SeqCst) != TAIL.load(Ordering::Acquire)
}
