//! The library's own memory allocator.
//!
//! Every allocation made by this library's Rust code (the dump thread's strings, vectors,
//! symbol tables, JSON) goes to a private `dlmalloc` heap built on `mmap`, never to the host's
//! `malloc`: a host thread wedged inside `malloc` (holding its lock forever) cannot stall a dump.
//! The heap's own lock is taken only by this library's code.
//!
//! The signal handlers never allocate at all (`tests/no_alloc.rs` proves it by watching this
//! allocator: [`watch`] names one thread whose allocations are counted).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// The heap and its lock. Almost every call comes from the dump thread, so the lock is nearly
/// always free: one compare-and-swap to take it, one store to release it (glibc's
/// `pthread_mutex_lock` + `unlock`, which `dlmalloc`'s `global` feature uses, cost 5 ms of the
/// dump thread's time per dump of 1000 threads). A waiter spins briefly, then yields.
struct Heap {
    locked: AtomicBool,
    dl: UnsafeCell<dlmalloc::Dlmalloc>,
}

// SAFETY: `dl` is only reached through `Heap::with`, which holds `locked` (acquire/release) for
// the whole call: one thread at a time.
unsafe impl Sync for Heap {}

impl Heap {
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut dlmalloc::Dlmalloc) -> R) -> R {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _release = Release(&self.locked);
        // SAFETY: we hold the lock (see `unsafe impl Sync` above): no other reference exists.
        f(unsafe { &mut *self.dl.get() })
    }
}

static HEAP: Heap = Heap {
    locked: AtomicBool::new(false),
    dl: UnsafeCell::new(dlmalloc::Dlmalloc::new()),
};

/// The thread whose allocations are counted (-1: none). For tests.
static WATCHED: AtomicI32 = AtomicI32::new(-1);
static WATCHED_ALLOCS: AtomicUsize = AtomicUsize::new(0);

/// Count from now on the allocations and frees made on thread `tid` (-1 stops counting).
pub fn watch(tid: i32) {
    WATCHED_ALLOCS.store(0, Ordering::SeqCst);
    WATCHED.store(tid, Ordering::SeqCst);
}

/// Allocations and frees seen on the watched thread since [`watch`].
pub fn watched_allocations() -> usize {
    WATCHED_ALLOCS.load(Ordering::SeqCst)
}

#[inline]
fn note() {
    let w = WATCHED.load(Ordering::Relaxed);
    if w >= 0 && crate::sigctx::gettid() == w {
        WATCHED_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The global allocator of `libstackdump.so`.
pub struct DumperAlloc;

// SAFETY: every method forwards to dlmalloc under the heap's lock with the layout's size and
// alignment (what dlmalloc's own GlobalAlloc does); the bookkeeping is an atomic load and, only
// while a test watches a thread, a gettid syscall.
unsafe impl GlobalAlloc for DumperAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: size and alignment from a valid layout; dlmalloc returns null on failure.
        HEAP.with(|h| unsafe { h.malloc(layout.size(), layout.align()) })
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as in `alloc`; calloc returns zeroed memory.
        HEAP.with(|h| unsafe { h.calloc(layout.size(), layout.align()) })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: `ptr` came from this heap with this layout (GlobalAlloc's contract).
        HEAP.with(|h| unsafe { h.free(ptr, layout.size(), layout.align()) })
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: `ptr` came from this heap with this layout; `new_size` is non-zero and valid
        // for the alignment (GlobalAlloc's contract).
        HEAP.with(|h| unsafe { h.realloc(ptr, layout.size(), layout.align(), new_size) })
    }
}

/// Take the heap's lock for a `fork()` (`crate::fork`'s prepare handler), waiting at most until
/// `until` (a `CLOCK_MONOTONIC` time in nanoseconds, see [`crate::fork`]): the dump thread holds
/// it for one allocation at a time. While it is held no thread is inside the heap, so the child
/// gets a consistent heap. Returns false when it could not be taken in time (the child then
/// never uses the heap).
///
/// Async-signal-safe (a fork from a signal handler runs it): atomics, `sched_yield` and the
/// clock. Never waits forever, so a fork from a signal handler that interrupted this library's
/// own allocation on the same thread gives up instead of deadlocking.
pub fn fork_lock(until: u64) -> bool {
    loop {
        if HEAP
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
        if crate::fork::monotonic_ns() >= until {
            return false;
        }
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

/// Release the lock [`fork_lock`] took: in the parent after the fork, and in the child (where
/// the thread that took it is the only one).
///
/// Async-signal-safe: one atomic store.
pub fn fork_unlock() {
    HEAP.locked.store(false, Ordering::Release);
}

/// Give the free memory at the top of the heap (and any free segment) back to the kernel: called
/// after each dump, so what a dump needed only while it ran does not stay in the host's RSS.
pub fn trim() {
    // SAFETY: trim only releases memory dlmalloc holds free; no allocation is live in it.
    HEAP.with(|h| unsafe { h.trim(0) });
}

#[global_allocator]
static GLOBAL: DumperAlloc = DumperAlloc;
