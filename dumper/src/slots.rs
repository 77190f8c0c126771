//! The dump thread's side of the capture slots: allocate the table (once), arm a slot before
//! signalling a thread, harvest or give up on it, and return the pages of free slots. Never
//! called from a signal handler; the handler's side, and the slot protocol, are in
//! `crate::sigctx::capture`.

pub use crate::sigctx::capture::{cookie, Slot, SlotTable, COMPLETIONS, DONE, FREE};
use crate::sigctx::capture::{RawRegs, ARMED, TABLE};
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The table, allocating it on first use. `slots` and `window` are fixed at first use.
pub fn table(slots: usize, window: usize) -> Option<&'static SlotTable> {
    let existing = TABLE.load(Ordering::Acquire);
    if !existing.is_null() {
        // SAFETY: published tables are leaked and never freed.
        return Some(unsafe { &*existing });
    }
    let slots = slots.clamp(1, 0xffff);
    let bytes = slots.checked_mul(window)?;
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected. MAP_NORESERVE:
    // pages cost RSS only once a handler writes them.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let base = base as *mut u8;
    let slots: Vec<Slot> = (0..slots)
        .map(|i| Slot {
            state: AtomicU64::new(FREE),
            tid: AtomicI32::new(0),
            pc: AtomicU64::new(0),
            sp: AtomicU64::new(0),
            fp: AtomicU64::new(0),
            lr: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            // SAFETY: i * window < bytes, inside the mapping.
            buf: AtomicPtr::new(unsafe { base.add(i * window) }),
        })
        .collect();
    let table = Box::leak(Box::new(SlotTable {
        slots: Box::leak(slots.into_boxed_slice()),
        window,
    }));
    TABLE.store(table, Ordering::Release);
    Some(table)
}

/// Reclaim slots whose late handler has finished since an earlier dump gave up on them.
pub fn reclaim(table: &SlotTable) {
    for s in table.slots {
        let st = s.state.load(Ordering::Acquire);
        if st & 3 == DONE {
            let _ = s
                .state
                .compare_exchange(st, FREE, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// Arm a free slot for generation `generation`. Returns false if the slot is not free.
pub fn arm(slot: &Slot, generation: u32) -> bool {
    slot.len.store(0, Ordering::Relaxed);
    slot.state
        .compare_exchange(
            FREE,
            ((generation as u64) << 2) | ARMED,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
}

/// Give up on an armed slot. Ok(()) when no handler will touch it any more; Err(phase) when a
/// handler got it first (WRITING: leave it; DONE: harvest it).
pub fn disarm(slot: &Slot, generation: u32) -> Result<(), u64> {
    let armed = ((generation as u64) << 2) | ARMED;
    match slot
        .state
        .compare_exchange(armed, FREE, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => Ok(()),
        Err(actual) => Err(actual & 3),
    }
}

/// True when the slot holds a published capture of `generation`.
pub fn is_done(slot: &Slot, generation: u32) -> bool {
    slot.state.load(Ordering::Acquire) == ((generation as u64) << 2) | DONE
}

/// A published capture, borrowed from its slot until [`release`].
pub struct Captured<'a> {
    pub tid: i32,
    pub regs: RawRegs,
    /// The copied stack window; `stack[0]` is the byte at `regs.sp`.
    pub stack: &'a [u8],
}

/// Borrow the capture of a slot in state DONE.
pub fn captured(slot: &Slot) -> Captured<'_> {
    let len = slot.len.load(Ordering::Relaxed);
    let buf = slot.buf.load(Ordering::Relaxed);
    Captured {
        tid: slot.tid.load(Ordering::Relaxed),
        regs: RawRegs {
            pc: slot.pc.load(Ordering::Relaxed),
            sp: slot.sp.load(Ordering::Relaxed),
            fp: slot.fp.load(Ordering::Relaxed),
            lr: slot.lr.load(Ordering::Relaxed),
        },
        // SAFETY: the slot is DONE (observed with Acquire by the caller), so the handler wrote
        // `len` bytes at `buf` before publishing and no one writes them until the slot is freed.
        stack: unsafe { core::slice::from_raw_parts(buf, len) },
    }
}

/// Free a harvested slot.
pub fn release(slot: &Slot) {
    slot.state.store(FREE, Ordering::Release);
}

/// Give the pages of free slots back to the kernel (keeps idle RSS small between dumps).
pub fn trim(table: &SlotTable) {
    for s in table.slots {
        if s.state.load(Ordering::Acquire) == FREE {
            // SAFETY: a FREE slot's buffer is owned by the dump thread (no handler can win the
            // ARMED CAS on a FREE slot); MADV_DONTNEED on our own anonymous mapping only drops
            // its contents.
            unsafe {
                libc::madvise(
                    s.buf.load(Ordering::Relaxed).cast(),
                    table.window,
                    libc::MADV_DONTNEED,
                )
            };
        }
    }
}
