//! Start-up: read the configuration, install the two handlers, start the dump thread. Runs once,
//! from the library's constructor, before `main`. Any failure leaves the host untouched or
//! undoes what was done; nothing is ever printed.

use crate::capture::DumpThread;
use crate::config::Config;
use crate::sigctx;
use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The configuration and capture handler the library started with, for the dump thread of a
/// forked child (`crate::fork`).
static STARTED: OnceLock<Config> = OnceLock::new();
static CAPTURE_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Exported so that a second copy of the library can recognise the first (see
/// `another_copy_active`). The value is irrelevant; its presence is the marker.
#[no_mangle]
#[used]
pub static stackdump_instance_marker_v1: u8 = 1;

/// Why the library did not start (kept for tests; never printed).
#[derive(Debug)]
pub enum NotStarted {
    Config(crate::config::ConfigError),
    AnotherCopy,
    CaptureSignalInUse,
    /// A privilege or namespace launcher (see [`LAUNCHERS`]).
    Launcher,
    Install(std::io::Error),
}

/// Read the configuration and start. Called by the constructor inside `catch_unwind`.
pub fn start() -> Result<(), NotStarted> {
    let cfg = Config::from_env().map_err(NotStarted::Config)?;
    if is_launcher() {
        return Err(NotStarted::Launcher);
    }
    if another_copy_active(cfg.trigger.number) {
        return Err(NotStarted::AnotherCopy);
    }
    if crate::sys::current_handler(cfg.capture.number).is_some() {
        // The host (or something preloaded before us) uses our capture signal: stay out.
        return Err(NotStarted::CaptureSignalInUse);
    }
    install_capture_handler(cfg.capture.number).map_err(NotStarted::Install)?;
    let handler = sigctx::capture::handler as *const () as usize;
    let (trigger, capture) = (cfg.trigger.number, cfg.capture.number);
    // Before anything can take a trigger: the handler and the dump thread read these.
    sigctx::trigger::set_signals(trigger, capture);
    let _ = STARTED.set(cfg.clone());
    CAPTURE_HANDLER.store(handler, Ordering::SeqCst);
    if let Err(e) = spawn_dump_thread(cfg, handler) {
        restore_default(capture);
        return Err(NotStarted::Install(e));
    }
    // A forked child gets a dump thread of its own (crate::fork).
    crate::fork::register();
    if let Err(e) = install_trigger_handler(trigger, capture) {
        // The dump thread stays in its signal wait, where only a trigger sent to it directly
        // (or one no host thread takes) reaches it: harmless.
        return Err(NotStarted::Install(e));
    }
    // What the dump thread compares the installed handler with (crate::state).
    if let Some(h) = crate::sys::current_handler(trigger) {
        crate::state::OUR_TRIGGER_HANDLER.store(h, Ordering::SeqCst);
    }
    Ok(())
}

/// Start the dump thread of a forked child (`crate::fork`'s child handler, in the child, before
/// `fork()` returns there), as the constructor does. Fails when the thread cannot be created (the
/// process or user is at its thread limit: `RLIMIT_NPROC`, `pids.max`).
pub fn start_in_child() -> Result<(), NotStarted> {
    let cfg = STARTED.get().ok_or(NotStarted::AnotherCopy)?.clone();
    // The host may have installed its own handler on our capture signal since we started: our
    // capture handler is no longer there to answer, so stay out of this child.
    let handler = CAPTURE_HANDLER.load(Ordering::SeqCst);
    if crate::sys::current_handler(cfg.capture.number) != Some(handler) {
        return Err(NotStarted::CaptureSignalInUse);
    }
    spawn_dump_thread(cfg, handler).map_err(NotStarted::Install)
}

fn restore_default(signo: i32) {
    // SAFETY: resetting a signal we installed ourselves to its default disposition.
    unsafe { libc::signal(signo, libc::SIG_DFL) };
}

/// Programs that change credentials per thread (capset, then setuid/setgid: glibc then aborts
/// if any other thread cannot follow) or enter a user namespace (`unshare(CLONE_NEWUSER)` and
/// `setns` into one refuse a process with more than one thread). Our dump thread would break
/// them, and they only exec the real program, which loads the library afresh: stay inert.
pub const LAUNCHERS: &[&str] = &[
    "setpriv",
    "unshare",
    "nsenter",
    "su",
    "sudo",
    "runuser",
    "newgrp",
    "sg",
    "bwrap",
    "capsh",
    "chroot",
    "firejail",
    "newuidmap",
    "newgidmap",
    "systemd-nspawn",
    "setcap",
    "pkexec",
    "doas",
];

fn is_launcher() -> bool {
    std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| LAUNCHERS.contains(&name.as_str()))
}

/// True when another copy of libstackdump already handles `trigger` in this process: the current
/// handler lives in an object that exports `stackdump_instance_marker_v1`, and that object is
/// not us.
fn another_copy_active(trigger: i32) -> bool {
    let Some(handler) = crate::sys::current_handler(trigger) else {
        return false;
    };
    // SAFETY: dladdr only reads the loader's tables; `info` is a valid out-parameter.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::dladdr(handler as *const libc::c_void, &mut info) } == 0
        || info.dli_fname.is_null()
    {
        return false;
    }
    let ours = &stackdump_instance_marker_v1 as *const u8 as usize;
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader; RTLD_NOLOAD only returns
    // a handle for an object that is already loaded (no constructor runs).
    let handle = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
    if handle.is_null() {
        return false;
    }
    const MARKER: &CStr = c"stackdump_instance_marker_v1";
    // SAFETY: handle is valid; MARKER is NUL-terminated.
    let theirs = unsafe { libc::dlsym(handle, MARKER.as_ptr()) } as usize;
    // SAFETY: balancing the dlopen above.
    unsafe { libc::dlclose(handle) };
    theirs != 0 && theirs != ours
}

fn install_capture_handler(signo: i32) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; we fill handler, flags and an empty mask.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = sigctx::capture::handler as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // SAFETY: sa_mask is a valid sigset_t inside `act`.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: installing our async-signal-safe handler (see sigctx::capture::handler).
    if unsafe { libc::sigaction(signo, &act, std::ptr::null_mut()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn install_trigger_handler(signo: i32, capture: i32) -> std::io::Result<()> {
    // SAFETY: on_trigger is async-signal-safe (sigctx::trigger); signal-hook-registry chains any
    // handler that was installed before us.
    unsafe { signal_hook_registry::register_sigaction(signo, sigctx::trigger::on_trigger) }?;
    // signal-hook-registry installs with SA_SIGINFO | SA_RESTART; add SA_ONSTACK so a thread
    // on an alternate signal stack (or nearly out of stack) takes the trigger there, and block
    // the capture signal while the trigger handler runs: the dump thread it wakes may signal
    // this very thread, and its stack must be captured in the host's code, not in our handler.
    // SAFETY: query then re-install the very same handler with one more flag and mask bit.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signo, std::ptr::null(), &mut cur) == 0 {
            cur.sa_flags |= libc::SA_ONSTACK | libc::SA_RESTART | libc::SA_SIGINFO;
            libc::sigaddset(&mut cur.sa_mask, capture);
            libc::sigaction(signo, &cur, std::ptr::null_mut());
        }
    }
    Ok(())
}

/// The dump thread's stack: what std gives a spawned thread by default.
const DUMP_THREAD_STACK: usize = 2 << 20;

/// Start the dump thread with every asynchronous signal blocked from its first instruction, and
/// for its whole life: no signal handler ever runs on it. It takes the trigger (and the
/// capture signal, as a wake) with `rt_sigtimedwait` (`triggers::wait_for_work`).
///
/// A bare `pthread_create`, not `std::thread`: std's thread start registers a thread-local
/// destructor (its spawn hooks) with `__cxa_thread_atexit_impl`, which takes the dynamic
/// loader's lock, so the constructor had to wait for that start-up before `main` could start a
/// `dlopen` that might hold the lock forever (a constructor that hangs: a hang we must be able
/// to dump). Our start routine registers no thread-local destructor and takes no loader lock
/// (nor does glibc's thread start; the thread's TLS block is allocated by `pthread_create` in
/// the creating thread), so the constructor returns without waiting: the thread gets ready
/// while the host runs.
fn spawn_dump_thread(cfg: Config, handler: usize) -> std::io::Result<()> {
    let arg = Box::into_raw(Box::new((cfg, handler)));
    // SAFETY: sigset_t out-parameters, initialized by the calls that take them;
    // pthread_sigmask on the calling thread only; `arg` is a leaked Box that the new thread takes
    // over (or that we take back if it is not created); dump_thread_main catches panics.
    let r = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        for sync in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGTRAP,
            libc::SIGABRT,
            libc::SIGSYS,
        ] {
            libc::sigdelset(&mut all, sync);
        }
        // The new thread inherits this mask: blocked from its first instruction.
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = crate::sys::spawn_detached(DUMP_THREAD_STACK, dump_thread_main, arg.cast());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if r != 0 {
            drop(Box::from_raw(arg));
        }
        r
    };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// The dump thread's start routine: name, private fd table, then serve triggers forever.
extern "C" fn dump_thread_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `arg` is the Box leaked by `spawn_dump_thread` for this thread alone.
    let started = unsafe { Box::from_raw(arg.cast::<(Config, usize)>()) };
    // A panic must not unwind out of an `extern "C"` function (that aborts the host): caught
    // here, it ends this thread silently (the panic hook prints nothing).
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let (cfg, handler) = *started;
        // SAFETY: prctl(PR_SET_NAME) names the calling thread; the name is NUL-terminated and
        // at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"stackdump".as_ptr()) };
        // `stackdump dump` directs the trigger here (rt_tgsigqueueinfo to the thread named
        // `stackdump`), so that asking for a dump interrupts no host thread; this thread takes
        // it with rt_sigtimedwait, so no handler (ours, or one the host installed over ours)
        // ever runs here.
        // A file-descriptor table of our own: every fd the dump opens lives there, so the host
        // never finds one of ours (even on fds 0-2 it closed, or when it is at RLIMIT_NOFILE),
        // and we close our copies of the host's fds at once, so we never keep a host file open
        // after the host closed it. This thread opens nothing before.
        // SAFETY: unshare and close_range act on this thread's own fd table.
        unsafe {
            if libc::unshare(libc::CLONE_FILES) == 0 {
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
            }
        }
        DumpThread::new(cfg, handler).run()
    }));
    std::ptr::null_mut()
}
