//! Everything that may run inside a signal handler, and nothing else.
//!
//! # Allowed here
//!
//! - atomics (`core::sync::atomic`) on memory that lives for the whole process (statics, or a
//!   table leaked once and never freed);
//! - raw system calls through `libc::syscall` (`gettid`, `getpid`, `futex`, `tgkill`,
//!   `process_vm_readv`): they are async-signal-safe by construction, do not allocate and take
//!   no user-space lock;
//! - reading the `siginfo_t` and `ucontext_t` the kernel hands the handler;
//! - saving and restoring `errno` (every handler does, because `libc::syscall` writes it on error).
//!
//! # Forbidden here
//!
//! Allocation (no `Box`, `Vec`, `String`, `format!`), locks of any kind (`Mutex`, `OnceLock`,
//! `lazy_static`, stdio locks), std I/O, `println!`/`eprintln!`, formatting, panics (no
//! `unwrap`, no indexing that can fail, no arithmetic that can overflow in debug builds),
//! thread-locals with destructors, `backtrace::trace`/`resolve`, libgcc's unwinder and anything
//! that enters the dynamic loader (no first call of a lazily bound function: the raw-syscall
//! wrappers below are only `libc::syscall`, bound before any handler is installed).
//!
//! Each function below says why it is async-signal-safe.
//!
//! The handlers are installed by `crate::install`; the dump thread (`crate::capture`) is the only
//! consumer of what they record, through the dump-thread sides of their protocols,
//! `crate::triggers` (the trigger ring) and `crate::slots` (the capture slots), which live
//! outside this module because they allocate and wait. No handler ever runs on the dump thread:
//! it blocks every asynchronous signal and takes the trigger and its wake-ups with
//! `rt_sigtimedwait` ([`crate::triggers::wait_for_work`]).

pub mod capture;
pub mod trigger;

use core::sync::atomic::AtomicU32;

/// The calling thread's kernel tid.
///
/// Async-signal-safe: one raw `gettid` system call.
#[inline]
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The calling process's pid, as the process sees itself (not cached: correct after fork).
///
/// Async-signal-safe: one raw `getpid` system call.
#[inline]
pub fn getpid() -> i32 {
    // SAFETY: getpid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// Wake every waiter on `word` (a private futex).
///
/// Async-signal-safe: one raw `futex(FUTEX_WAKE)` system call; `word` lives for the process.
#[inline]
pub fn futex_wake_all(word: &'static AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the address to find waiters; `word` is a valid, aligned,
    // 'static u32. The result (number woken, or an error) is deliberately ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

/// Read `len` bytes of this process's memory at `remote` into `local`, stopping at the first
/// page that is not mapped or not readable. Returns the number of bytes copied (0 on error).
///
/// Async-signal-safe: one raw `process_vm_readv` system call on our own pid. The kernel checks
/// the remote range page by page and never faults: an unmapped page ends the copy instead of
/// raising SIGSEGV, which is why a stack window can be copied without knowing where the stack
/// mapping ends.
///
/// # Safety
///
/// `local` must be valid for writes of `len` bytes and not be read concurrently.
#[inline]
pub unsafe fn read_own_memory(local: *mut u8, remote: u64, len: usize) -> usize {
    let liov = libc::iovec {
        iov_base: local.cast(),
        iov_len: len,
    };
    let riov = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: both iovecs describe `len` bytes; the local one is writable per this function's
    // contract; the remote one is only read by the kernel with fault checking.
    let n = unsafe {
        libc::syscall(
            libc::SYS_process_vm_readv,
            getpid(),
            &liov,
            1usize,
            &riov,
            1usize,
            0usize,
        )
    };
    if n < 0 {
        0
    } else {
        n as usize
    }
}

/// Saves `errno` on creation and restores it on drop, so a handler never changes the errno the
/// interrupted code is about to read.
///
/// Async-signal-safe: `__errno_location` is a thread-local address computation without locks
/// or allocation.
pub struct ErrnoGuard(i32);

impl ErrnoGuard {
    #[inline]
    pub fn save() -> ErrnoGuard {
        // SAFETY: __errno_location returns the calling thread's errno address, always valid.
        ErrnoGuard(unsafe { *libc::__errno_location() })
    }
}

impl Drop for ErrnoGuard {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: as above; writing the saved value back.
        unsafe { *libc::__errno_location() = self.0 };
    }
}
