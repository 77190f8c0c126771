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
//! - Creating a thread practically never wedges the dump thread on a host wedged in `malloc` or
//!   in the loader: `pthread_create` takes only short-held locks of the C library's thread code
//!   (its stack cache, its TLS slot table) and allocates the new thread's TLS with the C
//!   library's `calloc` in the calling thread's arena; the dump thread allocates everything
//!   else from its own heap ([`crate::alloc`]), so that is its first `calloc`, and glibc gives
//!   such a thread an arena of its own (only a process at its arena limit, 8 per CPU, with
//!   every arena locked, would make it wait for one). What could block is the helper's own
//!   start (std registers a thread-local destructor there, which takes the loader's lock): the
//!   dump thread waits [`START_PATIENCE`] for it, and without an answer goes on alone, for
//!   good (the helper exits when it finds its channel closed, if it ever starts).
//! - sleeps on a channel between dumps (no wake-ups, no CPU), and takes each job whole: a
//!   reader (with its own kept-open task files, [`TaskReader::keeping`]) and the tids to read.
//!   The dump thread waits for its answer at most [`JOB_PATIENCE`]; a late answer is dropped
//!   and the dump thread reads those threads itself.
//! - appears in dumps as the dump thread does (capture `dumper`, its kernel view blanked).

use stackdump_core::kernel::proc::{TaskReader, TaskStatus, ThreadGone};
use stackdump_core::model::{KernelView, Tid};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

/// A dump of fewer threads than this reads them all on the dump thread (a job costs a few
/// tens of microseconds of hand-over).
pub const MIN_THREADS: usize = 64;

/// How long the dump thread waits for a new helper to start.
pub const START_PATIENCE: Duration = Duration::from_millis(50);

/// How long the dump thread waits for a job's answer once its own half is read.
pub const JOB_PATIENCE: Duration = Duration::from_millis(500);

/// One thread's phase-0 reading.
pub type View = Result<(String, KernelView, TaskStatus), ThreadGone>;

/// What the helper is asked to read, and its answer.
pub struct Job {
    /// Which dump asked (a late answer to an earlier one is dropped).
    pub seq: u64,
    pub reader: TaskReader,
    pub tids: Vec<Tid>,
    pub views: Vec<View>,
}

/// The running helper.
pub struct Aux {
    jobs: Sender<Job>,
    done: Receiver<Job>,
    /// Its thread id (it is left out of the host's threads).
    pub tid: Tid,
}

impl Aux {
    /// Start the helper; None when it cannot be created or does not start in time.
    pub fn start() -> Option<Aux> {
        let (jobs, jobs_rx) = channel::<Job>();
        let (done_tx, done) = channel::<Job>();
        let (tid_tx, tid_rx) = channel::<i32>();
        std::thread::Builder::new()
            .name("stackdump-aux".into())
            .stack_size(256 << 10)
            .spawn(move || {
                if tid_tx.send(crate::sigctx::gettid()).is_err() {
                    return;
                }
                for mut job in jobs_rx {
                    let mut views = Vec::with_capacity(job.tids.len());
                    for &tid in &job.tids {
                        views.push(job.reader.kernel_view(tid));
                    }
                    job.views = views;
                    if done_tx.send(job).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        let tid = tid_rx.recv_timeout(START_PATIENCE).ok()?;
        Some(Aux {
            jobs,
            done,
            tid: Tid(tid),
        })
    }

    /// Hand `job` over; the job back when the helper is gone.
    pub fn send(&self, job: Job) -> Result<(), Box<Job>> {
        self.jobs.send(job).map_err(|e| Box::new(e.0))
    }

    /// The answer to job `seq`, waiting at most [`JOB_PATIENCE`] (late answers to earlier
    /// jobs are dropped on the way).
    pub fn receive(&self, seq: u64) -> Option<Job> {
        let until = std::time::Instant::now() + JOB_PATIENCE;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let job = self.done.recv_timeout(left).ok()?;
            if job.seq == seq {
                return Some(job);
            }
        }
    }
}
