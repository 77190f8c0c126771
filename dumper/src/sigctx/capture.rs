//! The capture handler: on the capture signal, copy the interrupted registers and a bounded
//! window of the stack into a preallocated slot, publish, wake the dump thread. No unwinding
//! here: that happens later on the dump thread, from the copy.
//!
//! # Slots and their states
//!
//! The slot table is allocated once by the dump thread (first dump) and never freed, so a late
//! handler can never see freed memory. Each slot's `state` word is `(generation << 2) | phase`:
//!
//! ```text
//!   FREE (0) --dump thread arms for tid T, gen G--> G|ARMED
//!   G|ARMED  --handler on T with cookie (G, slot) wins the CAS--> G|WRITING
//!   G|WRITING --handler publishes--> G|DONE --dump thread harvests--> FREE
//!   G|ARMED  --deadline: dump thread wins the CAS--> FREE   (no_response)
//! ```
//!
//! A handler that arrives after its dump gave up finds the slot no longer `G|ARMED` and does
//! nothing. A slot caught in `WRITING` at the deadline stays owned by its handler until it
//! reaches `DONE`; only then does a later dump reclaim it. So a slot is never reused while a
//! handler may write it, and [`IN_FLIGHT`] counts handlers currently running.

use super::{futex_wake_all, gettid, read_own_memory, ErrnoGuard};
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

pub const FREE: u64 = 0;
pub const ARMED: u64 = 1;
pub const WRITING: u64 = 2;
pub const DONE: u64 = 3;

/// Registers the unwinder needs, as captured from the interrupted context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawRegs {
    pub pc: u64,
    pub sp: u64,
    /// Frame pointer (rbp on x86_64, x29 on aarch64).
    pub fp: u64,
    /// Link register (x30 on aarch64; 0 on x86_64).
    pub lr: u64,
}

impl From<RawRegs> for stackdump_core::stack::unwind::Regs {
    fn from(r: RawRegs) -> Self {
        stackdump_core::stack::unwind::Regs {
            pc: r.pc,
            sp: r.sp,
            fp: r.fp,
            lr: r.lr,
        }
    }
}

/// One capture slot. Everything but the stack bytes is atomic; the stack bytes are written
/// only by the handler that owns the slot (`WRITING`) and read only after `DONE` is observed.
pub struct Slot {
    pub state: AtomicU64,
    /// The tid that answered (checked against the tid we signalled).
    pub tid: AtomicI32,
    pub pc: AtomicU64,
    pub sp: AtomicU64,
    pub fp: AtomicU64,
    pub lr: AtomicU64,
    /// Bytes of stack copied from `sp` upwards.
    pub len: AtomicUsize,
    /// Where this slot's stack window lives (inside the table's buffer mapping).
    pub buf: AtomicPtr<u8>,
}

/// The table: slots plus one anonymous mapping holding every slot's window.
pub struct SlotTable {
    pub slots: &'static [Slot],
    pub window: usize,
}

/// The table, published once by the dump thread; null until the first dump.
pub static TABLE: AtomicPtr<SlotTable> = AtomicPtr::new(core::ptr::null_mut());
/// Handlers currently running (for diagnostics and for deciding when buffers may be released).
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Bumped by every published capture; the dump thread sleeps on it.
pub static COMPLETIONS: AtomicU32 = AtomicU32::new(0);

/// In a forked child (`crate::fork`): the parent's table may have slots armed or written by
/// threads that do not exist here; the child's dump thread allocates a table of its own (the
/// parent's stays mapped, copy-on-write, unused).
///
/// Async-signal-safe: atomic stores only.
pub fn reset_in_child() {
    TABLE.store(core::ptr::null_mut(), Ordering::SeqCst);
    IN_FLIGHT.store(0, Ordering::SeqCst);
}

/// Encode a slot index and generation into the sigqueue value the handler receives.
pub fn cookie(generation: u32, slot: usize) -> u64 {
    ((generation as u64) << 16) | (slot as u64 & 0xffff)
}

/// The capture signal handler, installed with SA_SIGINFO | SA_RESTART | SA_ONSTACK.
///
/// Async-signal-safe: atomics on the leaked table, `gettid`, one `process_vm_readv` into the
/// slot's preallocated buffer, one `futex` wake. It never blocks, allocates or unwinds; errno is
/// saved and restored.
///
/// # Safety
///
/// Called by the kernel only, with valid `info` and `ctx` pointers for this signal delivery.
pub unsafe extern "C" fn handler(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let _errno = ErrnoGuard::save();
    IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
    // SAFETY: the kernel passes valid info/ctx pointers (SA_SIGINFO).
    unsafe { capture(info, ctx) };
    IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
}

unsafe fn capture(info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if info.is_null() || ctx.is_null() {
        return;
    }
    // SAFETY: info is non-null and valid for this delivery.
    let info = unsafe { &*info };
    if info.si_code != libc::SI_QUEUE {
        return; // not ours: we only ever send with sigqueue semantics
    }
    // SAFETY: si_code == SI_QUEUE, so the kernel filled si_pid and si_value.
    let (sender, value) = unsafe { (info.si_pid(), info.si_value().sival_ptr as usize as u64) };
    if sender != super::getpid() {
        return; // someone else sent our capture signal: ignore
    }
    let table = TABLE.load(Ordering::Acquire);
    if table.is_null() {
        return;
    }
    // SAFETY: the table is leaked by the dump thread and never freed.
    let table = unsafe { &*table };
    let index = (value & 0xffff) as usize;
    let generation = value >> 16;
    let Some(slot) = table.slots.get(index) else {
        return;
    };
    let armed = (generation << 2) | ARMED;
    if slot
        .state
        .compare_exchange(
            armed,
            (generation << 2) | WRITING,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return; // stale cookie: that dump is over
    }
    // SAFETY: ctx is the ucontext_t of the interrupted code.
    let regs = unsafe { regs_from_context(ctx) };
    slot.tid.store(gettid(), Ordering::Relaxed);
    slot.pc.store(regs.pc, Ordering::Relaxed);
    slot.sp.store(regs.sp, Ordering::Relaxed);
    slot.fp.store(regs.fp, Ordering::Relaxed);
    slot.lr.store(regs.lr, Ordering::Relaxed);
    let buf = slot.buf.load(Ordering::Relaxed);
    // SAFETY: we own the slot (WRITING); its buffer has `table.window` bytes and nobody reads
    // it until we publish DONE.
    let len = unsafe { read_own_memory(buf, regs.sp, table.window) };
    slot.len.store(len, Ordering::Relaxed);
    slot.state
        .store((generation << 2) | DONE, Ordering::Release);
    COMPLETIONS.fetch_add(1, Ordering::Release);
    futex_wake_all(&COMPLETIONS);
}

/// Read pc, sp, fp (and lr) out of a `ucontext_t`.
///
/// # Safety
///
/// `ctx` must point to the `ucontext_t` the kernel passed to an SA_SIGINFO handler.
#[cfg(target_arch = "x86_64")]
unsafe fn regs_from_context(ctx: *mut libc::c_void) -> RawRegs {
    // SAFETY: per the contract, ctx is a valid ucontext_t.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let g = &uc.uc_mcontext.gregs;
    RawRegs {
        pc: g[libc::REG_RIP as usize] as u64,
        sp: g[libc::REG_RSP as usize] as u64,
        fp: g[libc::REG_RBP as usize] as u64,
        lr: 0,
    }
}

/// Read pc, sp, fp and lr out of a `ucontext_t`.
///
/// # Safety
///
/// `ctx` must point to the `ucontext_t` the kernel passed to an SA_SIGINFO handler.
#[cfg(target_arch = "aarch64")]
unsafe fn regs_from_context(ctx: *mut libc::c_void) -> RawRegs {
    // SAFETY: per the contract, ctx is a valid ucontext_t.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let m = &uc.uc_mcontext;
    RawRegs {
        pc: m.pc,
        sp: m.sp,
        fp: m.regs[29],
        lr: m.regs[30],
    }
}
