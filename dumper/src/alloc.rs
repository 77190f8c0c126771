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
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};

/// The heap and its lock. Almost every call comes from the dump thread, so the lock is nearly
/// always free: one compare-and-swap to take it, one swap to release it (glibc's
/// `pthread_mutex_lock` + `unlock`, which `dlmalloc`'s `global` feature uses, cost 5 ms of the
/// dump thread's time per dump of 1000 threads). A waiter spins briefly, then sleeps on the lock
/// word (a futex: [`UNLOCKED`], [`LOCKED`], [`CONTENDED`]); the release wakes one sleeper only
/// when there is one. Sleeping, not yielding, matters for the phase-0 helper ([`crate::aux`]),
/// which runs at `SCHED_IDLE`: preempted while it holds the lock, it gets a CPU again only when
/// one goes idle, and a dump thread yielding in a loop would keep its own busy.
struct Heap {
    lock: AtomicU32,
    dl: UnsafeCell<dlmalloc::Dlmalloc>,
}

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and someone may sleep on it.
const CONTENDED: u32 = 2;

// SAFETY: `dl` is only reached through `Heap::with`, which holds `lock` (acquire/release) for
// the whole call: one thread at a time.
unsafe impl Sync for Heap {}

impl Heap {
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut dlmalloc::Dlmalloc) -> R) -> R {
        if self
            .lock
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        struct Release<'a>(&'a Heap);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.unlock();
            }
        }
        let _release = Release(self);
        // SAFETY: we hold the lock (see `unsafe impl Sync` above): no other reference exists.
        f(unsafe { &mut *self.dl.get() })
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..64 {
            if self
                .lock
                .compare_exchange_weak(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        // Mark it contended; whoever releases it then wakes a sleeper.
        while self.lock.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            crate::sys::futex_wait(&self.lock, CONTENDED, None);
        }
    }

    fn unlock(&self) {
        if self.lock.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake_one(&self.lock);
        }
    }
}

/// Wake one thread sleeping on `word`. Async-signal-safe: one raw system call.
fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the address to find waiters; `word` is a valid, aligned u32
    // (the heap's lock, a static).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

static HEAP: Heap = Heap {
    lock: AtomicU32::new(UNLOCKED),
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

/// Blocks this large or larger (with at most a page's alignment) are mapped on their own
/// instead of carved from the heap: `dlmalloc` clears every byte of a zeroed block before
/// returning it, where a fresh mapping is zero already and its pages cost nothing until they
/// are written (the copy of `.debug_info` that keeps only the units a dump needs is 6 MB of
/// mostly untouched zeros; clearing it was a third of a first dump), and freeing one gives its
/// memory back at once. The size of a block (which `dealloc` is given) says which it is.
const LARGE: usize = 1 << 20;
const PAGE: usize = 4096;

fn is_large(size: usize, align: usize) -> bool {
    size >= LARGE && align <= PAGE
}

fn map_len(size: usize) -> usize {
    size.div_ceil(PAGE) * PAGE
}

/// A fresh private mapping of at least `size` bytes, zeroed; null on failure.
fn map_large(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len(size),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

/// The global allocator of `libstackdump.so`.
pub struct DumperAlloc;

// SAFETY: small blocks are forwarded to dlmalloc under the heap's lock with the layout's size and
// alignment (what dlmalloc's own GlobalAlloc does); large ones ([`is_large`], decided by the
// layout alone, so a block is always freed the way it was allocated) are mappings of their own,
// page-aligned (so any alignment up to a page holds). The bookkeeping is an atomic load and, only
// while a test watches a thread, a gettid syscall.
unsafe impl GlobalAlloc for DumperAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        if is_large(layout.size(), layout.align()) {
            return map_large(layout.size());
        }
        // SAFETY: size and alignment from a valid layout; dlmalloc returns null on failure.
        HEAP.with(|h| unsafe { h.malloc(layout.size(), layout.align()) })
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        if is_large(layout.size(), layout.align()) {
            return map_large(layout.size()); // zeroed by the kernel
        }
        // SAFETY: as in `alloc`; calloc returns zeroed memory.
        HEAP.with(|h| unsafe { h.calloc(layout.size(), layout.align()) })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        if is_large(layout.size(), layout.align()) {
            // SAFETY: `ptr` is the start of a mapping of map_len(size) bytes made by
            // map_large for this very layout (GlobalAlloc's contract), used by nothing else.
            unsafe { libc::munmap(ptr.cast(), map_len(layout.size())) };
            return;
        }
        // SAFETY: `ptr` came from this heap with this layout (GlobalAlloc's contract).
        HEAP.with(|h| unsafe { h.free(ptr, layout.size(), layout.align()) })
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        let (old_large, new_large) = (
            is_large(layout.size(), layout.align()),
            is_large(new_size, layout.align()),
        );
        if !old_large && !new_large {
            // SAFETY: `ptr` came from this heap with this layout; `new_size` is non-zero and
            // valid for the alignment (GlobalAlloc's contract).
            return HEAP
                .with(|h| unsafe { h.realloc(ptr, layout.size(), layout.align(), new_size) });
        }
        if old_large && new_large {
            // SAFETY: `ptr` is a mapping of map_len(old size) bytes of ours (see dealloc); the
            // kernel moves or grows it whole, contents kept.
            let p = unsafe {
                libc::mremap(
                    ptr.cast(),
                    map_len(layout.size()),
                    map_len(new_size),
                    libc::MREMAP_MAYMOVE,
                )
            };
            return if p == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                p.cast()
            };
        }
        // From one kind to the other: a new block, the contents copied, the old one freed.
        // SAFETY: `new_size` with the old alignment is a valid layout (GlobalAlloc's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid, non-zero layout.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are at least min(old, new) bytes long and distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
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
            .lock
            .compare_exchange_weak(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
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
/// Async-signal-safe: one atomic swap, and a futex wake when someone sleeps on the lock.
pub fn fork_unlock() {
    HEAP.unlock();
}

/// Give the free memory at the top of the heap (and any free segment) back to the kernel: called
/// after each dump, so what a dump needed only while it ran does not stay in the host's RSS.
pub fn trim() {
    // SAFETY: trim only releases memory dlmalloc holds free; no allocation is live in it.
    HEAP.with(|h| unsafe { h.trim(0) });
}

#[global_allocator]
static GLOBAL: DumperAlloc = DumperAlloc;

#[cfg(test)]
mod tests {
    use super::*;

    /// Large blocks are mappings of their own: zeroed when asked, kept whole across a realloc
    /// within the large kind and across the threshold both ways.
    #[test]
    fn large_blocks_round_trip_through_realloc_and_are_zeroed() {
        let a = DumperAlloc;
        let layout = Layout::from_size_align(3 * LARGE + 123, 16).unwrap();
        // SAFETY: valid non-zero layouts; every block is freed with the layout it has.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % PAGE, 0, "a mapping of its own");
            assert!(std::slice::from_raw_parts(p, layout.size())
                .iter()
                .all(|&b| b == 0));
            for i in 0..layout.size() {
                *p.add(i) = (i % 251) as u8;
            }
            // Large to larger.
            let p = a.realloc(p, layout, 5 * LARGE);
            assert!(!p.is_null());
            let check = |p: *mut u8, n: usize| (0..n).all(|i| *p.add(i) == (i % 251) as u8);
            assert!(check(p, layout.size()));
            // Large to small, and back.
            let big = Layout::from_size_align(5 * LARGE, 16).unwrap();
            let p = a.realloc(p, big, 4000);
            assert!(!p.is_null() && check(p, 4000));
            let small = Layout::from_size_align(4000, 16).unwrap();
            let p = a.realloc(p, small, 2 * LARGE);
            assert!(!p.is_null() && check(p, 4000));
            a.dealloc(p, Layout::from_size_align(2 * LARGE, 16).unwrap());
            // Over a page of alignment: from the heap.
            let odd = Layout::from_size_align(LARGE, 2 * PAGE).unwrap();
            let q = a.alloc(odd);
            assert!(!q.is_null() && q as usize % (2 * PAGE) == 0);
            a.dealloc(q, odd);
        }
    }
}
