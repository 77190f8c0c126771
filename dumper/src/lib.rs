//! # libstackdump.so — the in-process dumper
//!
//! Preload it (`LD_PRELOAD=/path/to/libstackdump.so service`); when the service hangs,
//! `kill -s USR1 PID`; read `$STACKDUMP_DIR/stackdump-<pid>-<time>Z.{txt,json}`. Every thread is
//! listed with its state, wait channel, current system call (with the file behind its fd),
//! kernel stack, and its user-space stack symbolized with function, file:line and inlined frames.
//!
//! ## How a dump is taken
//!
//! The pipeline (trigger → kernel view → copy → unwind → symbolize → analyse → render → side
//! file), where each stage lives and the rules (what runs in a signal handler, what may
//! allocate, who may import whom) are in `ARCHITECTURE.md` at the repository root. What is
//! specific to this library, stage by stage ([`capture`] runs the phases on the dump thread):
//!
//! - **Trigger** ([`sigctx::trigger`]): on the host thread that takes it, the handler records
//!   siginfo into a lock-free ring and wakes the dump thread with the capture signal (tgkill).
//!   `stackdump dump` sends the trigger to the dump thread itself (rt_tgsigqueueinfo), which
//!   keeps it blocked and takes it with sigwaitinfo: no handler runs, no host thread is
//!   interrupted. The dump thread waits in rt_sigtimedwait({trigger, capture signal}) and
//!   serves the ring.
//! - **Phase 0, kernel view**: /proc/self/task/*/{syscall,stat,stack,status} for every thread
//!   before any is interrupted, each file opened relative to its task directory (the wait
//!   channel is the first line of `stack`; `wchan` is read instead when `stack` is not
//!   readable; neither for a thread `stat` shows running); a snapshot of /proc/self/maps. The
//!   files stay open until the next dump, which reads each with one `pread` (within a share
//!   of RLIMIT_NOFILE, at most 8192 + 4096; a thread's files close when it is gone, all of them
//!   10 minutes after the last dump). A thread blocked in a system call also has its
//!   `schedstat` run counter kept and read first: when it has not moved since the thread's
//!   last whole view (of it asleep in the kernel: S, D or I, never in a ptrace stop, where a
//!   tracer may change its registers), the thread has not been on a CPU since, and only
//!   `stat` is read (its
//!   state and name can change without it running); its system call, kernel stack, wait
//!   channel and `status` are that view's (one file instead of four for every thread still
//!   blocked where it was, dump after dump). From the second
//!   dump of a process of 64 threads or more on, the helper thread [`aux`] reads the threads
//!   with odd tids meanwhile, on another CPU.
//! - **Phase 1a, blocked threads**: copied without a signal (`stackdump_core::stack::blocked`):
//!   [SP, SP+16 KiB) with process_vm_readv (the whole window only when that is not enough),
//!   kept only if the thread did not run meanwhile (its schedstat run counter, read before and
//!   after through one fd; status's context-switch counts where there is no schedstat), its
//!   syscall line is unchanged, and it unwinds to a thread entry point. From the second dump
//!   on, phase 0 reads the kept run counter before the syscall line, so equal readings after
//!   the copy prove both at once (one `pread` after the copy and one after the unwinding,
//!   through the same file phase 0 read, shared rather than `dup`'d).
//! - **Phase 1b, every other thread** (re-checked just before): the capture signal (a real-time
//!   signal, never the trigger) sent with rt_tgsigqueueinfo and a cookie (generation, slot); at
//!   most one per CPU outstanding; one deadline for the whole dump. The capture handler
//!   ([`sigctx::capture`]) checks the cookie, copies the registers from the ucontext and
//!   [SP, SP+window) with process_vm_readv on our own pid (which stops at the first unmapped
//!   page instead of faulting) into a preallocated slot, publishes, futex-wakes.
//! - **Phase 2, unwind**: as each copy arrives, with framehop from the modules' .eh_frame
//!   (`stackdump_core::stack::unwind`: a module's tables read when a stack first goes
//!   through it, copied from its file once, the main executable's read where the loader
//!   mapped it), then the slot is freed. Threads that block the signal
//!   are `signal_blocked`; threads that do not answer by the deadline are `no_response`;
//!   threads that exit are `exited`. A dump never waits past its deadline.
//! - **Phase 3, symbolize and sink**: functions, files and lines from the module files
//!   (the symbol table, and only the DWARF units that hold the dump's addresses, set up once
//!   per dump for all of them; `backtrace::resolve` for the vdso), memoized across dumps and
//!   reset when the module set changes ([`symbolize`]); compressed debug sections inflated once
//!   per host and user, kept in `$STACKDUMP_DIR/.stackdump-cache-<uid>` (written after the
//!   dump, `stackdump_core::stack::dwarfcache`); fd targets, findings ([`diagnose`]),
//!   the text; each file written under a temporary name (JSON compact, serialized straight
//!   into a 256 KiB buffer in front of the file), fsync, renamed without replacing ([`sink`]).
//!
//! ## Modules
//!
//! - [`alloc`]: the library's own heap (dlmalloc on mmap): the dump never calls the host's
//!   `malloc`.
//! - [`config`]: the `STACKDUMP_*` environment, parsed once; any bad value disables the library.
//! - [`install`]: the constructor's work: handlers, the dump thread, the second-copy check.
//! - [`fork`]: a dump thread for each child forked without exec, and what makes that safe.
//! - [`state`]: the state page the CLI reads (dump thread, trigger and who handles it, dump
//!   directory), instead of the process's environment.
//! - [`sigctx`]: **the only code that runs in signal handlers**, with the rules it follows.
//! - [`capture`]: the dump thread and the pipeline's phases.
//! - [`aux`]: the helper thread that reads half of phase 0 on another CPU.
//! - `stackdump_core::stack::unwind`: modules and DWARF unwinding of copied stacks (shared with the
//!   CLI's `inspect`).
//! - [`symbolize`]: addresses to functions, files and lines.
//! - [`diagnose`]: process facts gathered from the inside, and the findings.
//! - [`python`]: CPython frames, read from the interpreter's structures and merged in.
//! - [`sink`]: the side files.
//! - [`watch`]: the watchdog (`STACKDUMP_WATCH`): samples between triggers, and a dump on its
//!   own when threads are stuck (not idle) for the duration.
//! - [`sys`]: raw system calls the dump thread needs.
//!
//! ## Rules for code in the host
//!
//! The constructor does the minimum and never panics or prints; any error disables the library
//! silently. It does not wait for the dump thread: that thread is a bare `pthread_create` whose
//! start takes no loader lock (std's thread start would register a thread-local destructor,
//! which does), so a `dlopen` that hangs right after `main` starts cannot stop it. The dump thread blocks
//! every asynchronous signal, the trigger included, for its whole life (what remains are the
//! synchronous signals a fault raises and the C library's internal ones, which no thread can
//! block), so no handler runs on it for a signal sent to the process or to it: not ours, and
//! not one the host installed over ours. It takes its signals with
//! `rt_sigtimedwait` instead (`triggers::wait_for_work`): the trigger when it is sent to
//! the dump thread (what `stackdump dump` does, so asking for a dump interrupts no host thread
//! and works even when the host replaced our trigger handler) or when no host thread takes it,
//! and the capture signal as the wake the trigger handler sends it after recording a trigger
//! taken by a host thread. It has a file-descriptor table of its own (its fds are never visible
//! in the host's table; it holds none of the host's files; pipes are queried through
//! `pidfd_getfd`), and never reads, writes or closes a host fd. Nothing is ever written to the
//! host's stdout or stderr (a silent panic hook). Privilege and namespace launchers (`setpriv`,
//! `unshare`, ...) get no dump thread: a second thread breaks `capset`+`setuid` and
//! `unshare(CLONE_NEWUSER)`.
//!
//! A child forked without exec gets a dump thread of its own from the `pthread_atfork` child
//! handler ([`fork`], which lists every lock the fork could copy half-held and how each is made
//! safe; a fork waits at most 50 ms for the library, and only while a dump runs). The dump
//! thread publishes its state for the CLI in a one-page memfd ([`state`]) and wakes, besides
//! for triggers, 4 times in its first 10 s and then once a minute to check whether the
//! application installed its own handler over the trigger's, and, with `STACKDUMP_WATCH`, once
//! per sampling period of the watchdog.

pub mod alloc;
pub mod aux;
pub mod capture;
pub mod config;
pub mod diagnose;
pub mod fork;
pub mod install;
pub mod python;
pub mod sigctx;
pub mod sink;
pub mod slots;
pub mod state;
pub mod symbolize;
pub mod sys;
pub mod triggers;
pub mod watch;

/// The constructor: runs when the library is loaded (before `main` when preloaded).
#[ctor::ctor(unsafe)]
fn stackdump_init() {
    // Never print: this library's copy of std would write a panic message to fd 2, which may
    // be the very pipe that is stuck. Panics are caught where they can happen and reported in
    // the dump's `errors`. (The hook belongs to this library's std; the host's is untouched.)
    std::panic::set_hook(Box::new(|_| {}));
    // Never unwind out of a constructor: on any failure the library stays inert.
    let _ = std::panic::catch_unwind(install::start);
}
