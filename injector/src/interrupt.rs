//! Ctrl-C and SIGTERM.
//!
//! - [`Interrupt`]: while waiting, a flag plus a self-pipe, so a `poll` wakes at once and the
//!   command ends in order (prints what it has, lets every ptrace'd thread go).
//! - [`install_watchdog`]: in every phase of every subcommand, a timer armed by the signal
//!   that, if the process is still there [`GRACE`] later (the main thread is busy parsing
//!   DWARF, rendering, or blocked in a system call), writes `stackdump: interrupted` to stderr
//!   and calls `_exit` with [`exit_code`] (130; 0 for periodic dumps, whose normal end is
//!   Ctrl-C). So the CLI ends within about 50 ms of the signal whatever it is doing.
//!
//! `_exit` is safe for `inspect` too: it never leaves a target stopped. Its threads are
//! stopped only with `PTRACE_SEIZE` + `PTRACE_INTERRUPT` (no `PTRACE_O_EXITKILL`, no SIGSTOP):
//! when the tracer exits, the kernel detaches every tracee and resumes the ones in a ptrace
//! stop (`exit_ptrace`). The CLI changes no terminal state, so there is nothing to restore.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the main thread has, after SIGINT or SIGTERM, to end in order before the watchdog
/// ends the process.
pub const GRACE: Duration = Duration::from_millis(50);

/// The exit code the watchdog uses.
static EXIT_CODE: AtomicI32 = AtomicI32::new(crate::exit::INTERRUPTED_CODE);

/// Set the exit code of an interrupted run (periodic dumps: 0).
pub fn set_exit_code(code: i32) {
    EXIT_CODE.store(code, Ordering::SeqCst);
}

/// The exit code the watchdog uses now.
pub fn exit_code() -> i32 {
    EXIT_CODE.load(Ordering::SeqCst)
}

/// From now on, SIGINT and SIGTERM end the process within [`GRACE`] (plus scheduling), even
/// when the main thread is blocked or busy: see the module documentation. [`Interrupt`]s
/// installed later still see the signal first.
///
/// No thread: the first SIGINT or SIGTERM arms a POSIX timer (`timer_settime`, async-signal-safe),
/// whose SIGALRM, [`GRACE`] later, ends the process from its handler. (A thread waiting for the
/// signal cost every run its start-up, on the path of the dump when the CLI has one CPU to itself.)
pub fn install_watchdog() -> std::io::Result<()> {
    // SAFETY: an all-zero sigevent is valid; the fields set make it "send SIGALRM to the
    // process". timer_create writes the new timer's id into `timer`, ours alone.
    let timer = unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_SIGNAL;
        sev.sigev_signo = libc::SIGALRM;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
            // No timer to be had (EAGAIN: the user's queued-signal limit is used up): a
            // thread waits for the signal instead.
            return watchdog_thread();
        }
        timer
    };
    // The mask is inherited: a parent that blocked SIGALRM would keep the timer's signal
    // pending for ever. Unblocked here, before any thread of ours exists (they inherit it).
    // SAFETY: an all-zero sigset_t is a valid out-parameter for sigemptyset; pthread_sigmask
    // changes the calling thread's mask only, with a set on our stack.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    // The timer id, for the handler (a plain integer: timer_t is a pointer-sized id in glibc).
    static TIMER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static ARMED: AtomicBool = AtomicBool::new(false);
    TIMER.store(timer as usize, Ordering::SeqCst);
    // SAFETY: the action runs in a signal handler and only makes async-signal-safe calls
    // (`interrupted_exit`: write(2) and _exit; EXIT_CODE is an atomic).
    unsafe {
        signal_hook::low_level::register(libc::SIGALRM, || interrupted_exit())?;
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the action runs in a signal handler: an atomic swap, then timer_settime
        // (async-signal-safe per POSIX) on the timer created above, with a value on its stack.
        unsafe {
            signal_hook::low_level::register(sig, || {
                // Armed once: a second Ctrl-C does not push the end further away.
                if ARMED.swap(true, Ordering::SeqCst) {
                    return;
                }
                let value = libc::itimerspec {
                    it_interval: libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    it_value: libc::timespec {
                        tv_sec: GRACE.as_secs() as libc::time_t,
                        tv_nsec: GRACE.subsec_nanos() as libc::c_long,
                    },
                };
                libc::timer_settime(
                    TIMER.load(Ordering::SeqCst) as libc::timer_t,
                    0,
                    &value,
                    std::ptr::null_mut(),
                );
            })?;
        }
    }
    Ok(())
}

/// [`install_watchdog`] without a timer: a thread that waits for the signal on a pipe, then
/// [`GRACE`], then ends the process.
fn watchdog_thread() -> std::io::Result<()> {
    let (mut read, write) = UnixStream::pair()?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
    }
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            loop {
                match read.read(&mut byte) {
                    Ok(1) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // The pipe is gone: nothing to watch.
                    _ => return,
                }
            }
            std::thread::sleep(GRACE);
            interrupted_exit();
        })?;
    Ok(())
}

/// Say `stackdump: interrupted` on stderr and `_exit` with [`exit_code`]. Async-signal-safe.
fn interrupted_exit() -> ! {
    let msg = b"stackdump: interrupted\n";
    // SAFETY: write(2) of a static buffer to fd 2, then _exit: no destructor, lock or
    // allocation is involved, so it cannot deadlock whatever the interrupted code holds.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(exit_code());
    }
}

pub struct Interrupt {
    read: UnixStream,
    flag: Arc<AtomicBool>,
}

impl Interrupt {
    /// Catch SIGINT and SIGTERM from now on (the process then no longer dies of them).
    pub fn install() -> std::io::Result<Interrupt> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGINT, libc::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        Ok(Interrupt { read, flag })
    }

    pub fn fired(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empty the pipe after a wake-up.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Sleep until `until`; false when interrupted first.
    pub fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if self.fired() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            let wait = (until - now).min(Duration::from_secs(1));
            let mut fds = [nix::poll::PollFd::new(
                self.fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut fds, ms);
            self.drain();
        }
    }
}
