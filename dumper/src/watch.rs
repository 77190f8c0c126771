//! The watchdog (`STACKDUMP_WATCH=<duration>`): the dump thread samples every thread's run
//! counter every `min(duration/4, 15s)` and writes a dump on its own when threads have been
//! stuck for the duration in a call that waits for something to finish (a write into a full
//! pipe or socket, an fsync, state D, a lock whose owner is itself stuck). Idle threads
//! (epoll_wait, poll, accept, a condition variable, a read with nothing to read, a sleep) never
//! cause a dump. The judgement and the sampling are the core's
//! (`stackdump_core::analysis::watch`, its table in `docs/WATCHDOG.md`); this module owns the
//! schedule and the fd budget.
//!
//! Cost: one `pread` of a kept-open `schedstat` fd per thread per period (fds in the dump
//! thread's private table, at most half the RLIMIT_NOFILE soft limit, beyond which a thread's
//! file is opened and closed at each sample); the threads still for the whole duration are read
//! once more (their `syscall`, `stack`, `stat`, `status`) and classified; idle ones are not
//! looked at again until they run. Nothing is allocated or opened when the watchdog is off.

use crate::config::Config;
use stackdump_core::analysis::facts::Options;
use stackdump_core::analysis::watch::{Alarm, Sampler, Watch};
use stackdump_core::model::Tid;
use std::time::{Duration, Instant};

/// The watchdog's schedule and sampler (dump thread only).
pub struct Watchdog {
    sampler: Sampler,
    next: Instant,
}

impl Watchdog {
    /// The watchdog when `STACKDUMP_WATCH` is set (called on the dump thread, which is never
    /// sampled: it is busy sampling).
    pub fn start(cfg: &Config) -> Option<Watchdog> {
        let duration = cfg.watch?;
        let watch = Watch::new(duration, cfg.watch_min_gap);
        let max_open = (crate::sys::nofile_soft_limit() / 2).min(65_536) as usize;
        let me = Tid(crate::sigctx::gettid());
        let sampler = Sampler::new(watch, Options::inside(), max_open, Some(me));
        Some(Watchdog {
            next: Instant::now(),
            sampler,
        })
    }

    /// How long `STACKDUMP_WATCH` is.
    pub fn duration(&self) -> Duration {
        self.sampler.watch.duration
    }

    /// Time left until the next sample is due.
    pub fn timeout(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    /// Sample if a sample is due; the alarm when a dump is due. A bug in the sampling never
    /// reaches the host: a panic is caught and the sample skipped.
    pub fn sample_if_due(&mut self) -> Option<Alarm> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + self.sampler.watch.period();
        let alarm =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sampler.sample()))
                .ok()
                .and_then(Result::ok)
                .flatten();
        // What a classification read (kernel views, facts) does not stay in the host's RSS.
        crate::alloc::trim();
        alarm
    }

    /// After the dump of `alarm` was written: the capture signal it may have sent the stuck
    /// threads moved their run counters; take them as they are for the threads back where
    /// they were (`Sampler::after_dump`), so the same episode is not reported again.
    pub fn after_dump(&mut self, alarm: &Alarm) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sampler.after_dump(alarm)
        }));
    }
}
