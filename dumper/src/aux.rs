//! The second core during a dump: a helper thread (`stackdump-aux`) that reads half of the
//! threads' kernel views (phase 0) while the dump thread reads the other half.
//!
//! Phase 0 is what a dump of many threads spends most on: four `/proc` files per thread, each
//! a system call in which the kernel formats text (~25 µs a thread on the benchmark machine,
//! files kept open). It parallelises perfectly, and during an incident the machine usually has a
//! core to spare for it. The helper:
//!
//! - is started by the dump thread right after its first dump of at least [`MIN_THREADS`]
//!   threads, when the process may run on two CPUs or more (so from the second dump on), and
//!   never at start-up: short-lived processes and small ones never have it. It inherits the dump thread's signal mask (every asynchronous
//!   signal blocked: no handler ever runs on it) and its private file-descriptor table.
//! - is a bare `pthread_create` (as the dump thread is, [`crate::install`]), and the two
//!   hand jobs over through one futex word: neither `std::thread` nor `std::sync::mpsc`, whose
//!   thread handles register a thread-local destructor with the loader's lock held (a host
//!   wedged in `dlopen` would then wedge the dump thread). Creating a thread practically never
//!   blocks on a lock a wedged host thread holds: `pthread_create` takes only short-held locks
//!   of the C library's thread code (its stack cache, its TLS slot table) and allocates the new
//!   thread's TLS with the C library's `calloc` in the calling thread's arena; the dump thread
//!   allocates everything else from its own heap ([`crate::alloc`]), so that is its first
//!   `calloc`, and glibc gives such a thread an arena of its own (only a process at its arena
//!   limit, 8 per CPU, with every arena locked, would make it wait for one).
//! - runs at `SCHED_IDLE`: only on a CPU nothing else wants. A second CPU taken from the host
//!   during a dump would stall the host's running threads for a scheduler tick (measured: 2.7 to
//!   4.1 ms of the benchmark's spinning thread on two CPUs, against 0.07 ms without the helper);
//!   when the host keeps every CPU busy, the dump thread does the work alone, as before.
//! - sleeps on the futex between dumps (no wake-ups, no CPU), and takes each job whole: a
//!   reader (with its own kept-open task files, [`TaskReader::keeping`]) and the tids to read,
//!   which it claims one at a time from a shared counter; the dump thread, done with its own
//!   half, claims the rest from the same counter (a helper that gets no CPU costs little: the
//!   heap's lock, which both take, puts a waiter to sleep rather than spin, [`crate::alloc`]),
//!   then waits for the helper's answer at most [`JOB_PATIENCE`] (one thread's reading, unless
//!   the helper was preempted): without it, it reads the helper's claims itself, and the helper
//!   gets no new job until its late answer is collected.
//! - appears in dumps as the dump thread does (capture `dumper`, its kernel view blanked).

use stackdump_core::kernel::proc::{TaskReader, TaskView, ThreadGone};
use stackdump_core::model::Tid;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A dump of fewer threads than this reads them all on the dump thread (a job costs a few
/// tens of microseconds of hand-over).
pub const MIN_THREADS: usize = 64;

/// How long the dump thread waits for a new helper to start.
pub const START_PATIENCE: Duration = Duration::from_millis(50);

/// How long the dump thread waits for a job's answer once every thread is claimed: the one
/// thread the helper may still be reading takes ~30 µs; a helper preempted in the middle of
/// one (it runs at `SCHED_IDLE`) is not waited for, its threads are read again here.
pub const JOB_PATIENCE: Duration = Duration::from_micros(200);

/// How long the dump thread waits, after a dump, for the helper's first job (which opens its
/// threads' files for the next dumps).
pub const WARM_UP_PATIENCE: Duration = Duration::from_millis(100);

/// The helper's stack (it parses /proc files; nothing deep).
const STACK: usize = 256 << 10;

/// One thread's phase-0 reading (with the run counter the helper keeps for it, which the
/// dump thread's copy of the stack then reads through the same file).
pub type View = Result<TaskView, ThreadGone>;

/// What the helper is asked to read, and its answer: `views[i]` for `tids[i]` when the helper
/// claimed it.
pub struct Job {
    pub reader: TaskReader,
    pub tids: Vec<Tid>,
    pub views: Vec<Option<View>>,
}

/// The futex word's states: who owns `Shared::job`.
const IDLE: u32 = 0; // the dump thread (no job, or an answer taken)
const POSTED: u32 = 1; // the helper (a job to do)
const DONE: u32 = 2; // the dump thread (an answer to take)

const WAITING: u32 = 0;
const STARTED: u32 = 1;
const ABANDONED: u32 = 2;

/// What the dump thread and the helper share (leaked: the helper lives as long as the process).
struct Shared {
    state: AtomicU32,
    tid: AtomicI32,
    /// [`WAITING`] until the helper starts ([`STARTED`]) or the dump thread gives up on it
    /// ([`ABANDONED`]); whoever moves it first decides (a helper that starts too late exits).
    start: AtomicU32,
    /// The next index of the job's tids to claim (helper and dump thread alike).
    next: AtomicUsize,
    /// Reached only by the side the state gives it to (Acquire/Release on `state`).
    job: UnsafeCell<Option<Job>>,
}

// SAFETY: `job` is only touched by the owner `state` names, after an Acquire load of that state
// and before the Release store that hands it over.
unsafe impl Sync for Shared {}

/// The running helper.
pub struct Aux {
    shared: &'static Shared,
    /// Its thread id (it is left out of the host's threads).
    pub tid: Tid,
}

impl Aux {
    /// Start the helper; None when it cannot be created or does not start in time (it then
    /// never gets a job).
    pub fn start() -> Option<Aux> {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: AtomicU32::new(IDLE),
            tid: AtomicI32::new(0),
            start: AtomicU32::new(WAITING),
            next: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
        }));
        let arg = shared as *const Shared as *mut libc::c_void;
        // SAFETY: `shared` is 'static, so the pointer the thread gets stays valid; aux_main
        // catches panics.
        let r = unsafe { crate::sys::spawn_detached(STACK, aux_main, arg) };
        if r != 0 {
            return None;
        }
        let until = Instant::now() + START_PATIENCE;
        loop {
            if shared.start.load(Ordering::Acquire) == STARTED {
                break;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Too late: it exits when it starts, unless it started just now.
                if shared
                    .start
                    .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return None;
                }
                break;
            }
            std::thread::sleep(left.min(Duration::from_micros(200)));
        }
        Some(Aux {
            shared,
            tid: Tid(shared.tid.load(Ordering::Acquire)),
        })
    }

    /// A late answer to an earlier job, if it has come (its reader is worth keeping).
    pub fn take_late(&self) -> Option<Job> {
        let s = self.shared;
        if s.state.load(Ordering::Acquire) != DONE {
            return None;
        }
        // SAFETY: DONE: the answer is ours to take (Acquire above) until we store IDLE.
        let job = unsafe { (*s.job.get()).take() };
        s.state.store(IDLE, Ordering::Release);
        job
    }

    /// Hand `job` over (its `views` as long as its `tids`); the job back when the helper still
    /// works on an earlier one.
    pub fn send(&self, mut job: Job) -> Result<(), Box<Job>> {
        let s = self.shared;
        if s.state.load(Ordering::Acquire) != IDLE {
            return Err(Box::new(job));
        }
        job.views.clear();
        job.views.resize_with(job.tids.len(), || None);
        s.next.store(0, Ordering::Relaxed);
        // SAFETY: IDLE: the slot is ours until the Release store below.
        unsafe { *s.job.get() = Some(job) };
        s.state.store(POSTED, Ordering::Release);
        wake(&s.state);
        Ok(())
    }

    /// Claim the next index of the job sent last (None when all are claimed): the dump thread
    /// takes over what the helper has not started.
    pub fn claim(&self, len: usize) -> Option<usize> {
        let i = self.shared.next.fetch_add(1, Ordering::Relaxed);
        (i < len).then_some(i)
    }

    /// The answer to the job sent last, waiting at most `patience`.
    pub fn receive(&self, patience: Duration) -> Option<Job> {
        let s = self.shared;
        let until = Instant::now() + patience;
        loop {
            if let Some(job) = self.take_late() {
                return Some(job);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Sleeps only while the job is still the helper's (POSTED): an answer stored since
            // the look above makes the wait return at once.
            crate::sys::futex_wait(&s.state, POSTED, Some(left));
        }
    }
}

/// Wake whoever waits on `word`.
fn wake(word: &'static AtomicU32) {
    crate::sigctx::futex_wake_all(word);
}

/// The helper's start routine: name, then jobs forever. It inherits the dump thread's signal
/// mask (every asynchronous signal blocked) and shares its private fd table.
extern "C" fn aux_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `arg` is the leaked, 'static `Shared` of `Aux::start`.
    let s: &'static Shared = unsafe { &*(arg as *const Shared) };
    // A panic must not unwind out of an `extern "C"` function (that aborts the host): caught,
    // it ends this thread, and the dump thread reads everything itself from then on.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        // SAFETY: prctl(PR_SET_NAME) names the calling thread; the name is NUL-terminated and
        // at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"stackdump-aux".as_ptr()) };
        // Only CPUs nobody else wants (see the module doc). Lowering one's own priority needs
        // no privilege; if it fails, the helper is not started (the dump thread waits for the
        // tid).
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler on the calling thread (0) with a valid parameter.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            return;
        }
        s.tid.store(crate::sigctx::gettid(), Ordering::Release);
        if s.start
            .compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // abandoned: the dump thread did not wait for us
        }
        loop {
            let state = s.state.load(Ordering::Acquire);
            if state != POSTED {
                crate::sys::futex_wait(&s.state, state, None);
                continue;
            }
            // SAFETY: POSTED: the job is ours (Acquire above) until we store DONE.
            let job = unsafe { &mut *s.job.get() };
            if let Some(job) = job.as_mut() {
                while let Some(i) =
                    Some(s.next.fetch_add(1, Ordering::Relaxed)).filter(|&i| i < job.tids.len())
                {
                    job.views[i] = Some(job.reader.kernel_view_counted(job.tids[i]));
                }
            }
            s.state.store(DONE, Ordering::Release);
            wake(&s.state);
        }
    }));
    std::ptr::null_mut()
}
