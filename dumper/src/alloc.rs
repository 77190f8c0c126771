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
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

static HEAP: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

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

// SAFETY: every method forwards to dlmalloc's GlobalAlloc with the same arguments; the
// bookkeeping is an atomic load and, only while a test watches a thread, a gettid syscall.
unsafe impl GlobalAlloc for DumperAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { HEAP.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { HEAP.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: forwarded unchanged; ptr came from this allocator.
        unsafe { HEAP.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged; ptr came from this allocator.
        unsafe { HEAP.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: DumperAlloc = DumperAlloc;
