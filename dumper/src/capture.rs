//! The dump thread: waits for triggers and runs the pipeline (kernel view → stack capture and
//! unwinding → symbolization → files). Owns everything that lives across dumps (modules,
//! symbol cache, the dump counter) and the per-dump deadline.
//!
//! Triggers that arrive while a dump runs are served together by the next dump: one dump, one
//! file per format, plus a hard link per extra request id (see `sink`).

use crate::config::Config;
use crate::sigctx;
use crate::symbolize::Symbolizer;
use crate::{sink, sys};
use crate::{slots, triggers as trigger};
use stackdump_core::analysis::watch::{self, Alarm};
use stackdump_core::kernel::proc::{self, TaskReader};
use stackdump_core::model::dumpfile::DumpFormat;
use stackdump_core::model::timefmt::UtcTime;
use stackdump_core::model::{
    CaptureMethod, CaptureStats, CaptureStatus, CoalescedTrigger, Dump, Frame, KernelView,
    PhaseTimes, Pid, SyscallState, Thread, Tid, Trigger, FORMAT,
};
use stackdump_core::python::PyProcess;
use stackdump_core::stack::blocked::{Seen, FIRST_WINDOW};
use stackdump_core::stack::jit::{JitCode, PerfMapSource};
use stackdump_core::stack::unwind::{
    is_thread_root, is_truncated, unwound_complete, ModuleSource, Modules, RawFrames,
};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A threads as phase 0 saw it, before its stack was captured.
struct RawThread {
    tid: Tid,
    name: String,
    kernel: KernelView,
    blocks_capture: bool,
    status: CaptureStatus,
    frames: Option<RawFrames>,
    /// Copied without a signal: the thread's run counter when it was (see `copy_blocked`).
    run_at_copy: Option<(u64, u64)>,
    /// Its run counter and the reading phase 0 took before its `syscall` line, when phase 0
    /// had it open (`TaskReader::kernel_view_counted`).
    counted: Option<proc::Counted>,
    /// Sent the capture signal.
    signalled: bool,
}

/// One dump's round of capture signals: the slots, the threads still to signal, the ones
/// signalled that have not answered yet.
struct Round {
    table: &'static slots::SlotTable,
    generation: u32,
    /// Threads (indices) still to signal.
    queue: VecDeque<usize>,
    /// Slots free to arm.
    free: Vec<usize>,
    inflight: Vec<InFlight>,
    /// Time spent unwinding copies so far.
    unwind_time: Duration,
    /// Reads the last look at a thread before it is signalled.
    recheck: TaskReader,
    /// Threads copied without a signal at that last look.
    late_without_signal: usize,
}

/// A thread signalled, and the slot its handler writes.
struct InFlight {
    thread: usize,
    slot: usize,
    sent: Instant,
}

impl Round {
    /// Forget threads that exited while we waited for them (their slots are disarmed).
    fn forget_exited(&mut self, pid: i32, threads: &mut [RawThread], now: Instant) {
        let mut i = 0;
        while i < self.inflight.len() {
            let f = &self.inflight[i];
            if now.duration_since(f.sent) > PATIENCE
                && !sys::thread_alive(pid, threads[f.thread].tid.0)
            {
                let slot = &self.table.slots[f.slot];
                if slots::disarm(slot, self.generation).is_ok() {
                    threads[f.thread].status = CaptureStatus::Exited;
                    self.free.push(f.slot);
                    self.inflight.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Look for slots that late handlers of an earlier dump have finished with; sleep a
    /// millisecond when there are none yet.
    fn reclaim_free(&mut self) {
        slots::reclaim(self.table);
        self.free = (0..self.table.slots.len())
            .filter(|&s| self.table.slots[s].state.load(Ordering::Acquire) == slots::FREE)
            .collect();
        if self.free.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A thread's run counter (see `copy_blocked`).
type RunCounter = (u64, u64);

/// How phases 1 and 2 took the stacks.
struct Taken {
    /// Threads with a stack.
    captured: usize,
    /// Stacks copied without a signal.
    without_signal: usize,
    /// Threads sent the capture signal.
    signalled: usize,
    /// Time spent unwinding the copies.
    unwind_time: Duration,
}

/// How long a dump waits for the threads that took its triggers to return to what they were
/// doing (see `wait_for_takers`).
const TAKER_PATIENCE: Duration = Duration::from_millis(10);

/// How many times a Python thread that ran during the dump is taken again (see
/// `retake_moved_python_threads`).
const RETAKES: usize = 3;

/// How long a Python thread that could not be taken again is given before the next try
/// (doubled at each failure), and the most all the threads of one dump are given together.
const RETAKE_PAUSE: Duration = Duration::from_micros(100);
const RETAKE_PAUSES: Duration = Duration::from_millis(2);

/// A capture that has not answered after this long no longer counts against the number of
/// threads signalled at once (it still has until the deadline to answer).
const PATIENCE: Duration = Duration::from_millis(5);

/// State kept across dumps.
pub struct DumpThread {
    cfg: Config,
    modules: Modules,
    symbols: Symbolizer,
    /// Executable memory outside the modules (JIT code) as of this dump, and its perf map.
    jit: JitCode,
    generation: u32,
    sequence: u64,
    last_millis: i64,
    /// The address of our capture handler, to check it is still installed before sending.
    handler: usize,
    /// Buffer for stacks copied without a signal (kept across dumps).
    scratch: Vec<u8>,
    /// The modules present when backtrace's symbol cache was last reset (what it knows).
    backtrace_modules: Vec<(std::sync::Arc<str>, std::ops::Range<u64>)>,
    /// Dumps that could not be written since the last one that was: (first and last
    /// sequence number, the last error), said in the `errors` of the next dump written.
    unwritten: Option<(u64, u64, String)>,
    /// Look for leftover temporary files before the next write (see `sink::clean_leftovers`):
    /// before the first dump, and after a failed write.
    clean_leftovers: bool,
    /// The task files kept open from one dump to the next (`TaskReader::keeping`): the next
    /// dump reads each with one `pread` instead of `openat` + `read` + `close`.
    tasks: Option<TaskReader>,
    /// The helper that reads half of phase 0 on another CPU ([`crate::aux`]), once started;
    /// `aux_tried` once a start was attempted (never twice), and the helper's reader between
    /// dumps.
    aux: Option<crate::aux::Aux>,
    aux_tried: bool,
    aux_tasks: Option<TaskReader>,
    /// When the last dump ended (kept task files are closed [`KEPT_IDLE`] after it).
    last_dump: Option<Instant>,
}

/// How many task files the dump thread keeps open between dumps; its helper keeps up to half as
/// many again. Our private fd table shares the RLIMIT_NOFILE soft limit: the dump thread and its
/// helper together take at most three quarters of it, or three eighths when the watchdog's
/// counters may hold another half; never more than 8192 (+ 4096): 5 files for each thread a
/// reader keeps (`syscall`, `stat`, `stack`, `status`, `schedstat`), enough for 1600 threads on
/// the dump thread's side and 800 on the helper's (the threads beyond are read as before, each
/// file opened and closed).
/// Each kept file holds the kernel's 4 KiB text buffer (charged to the process's memory
/// cgroup): about 25 KiB a thread, 50 MiB at 2000 threads, which is why they are all closed
/// [`KEPT_IDLE`] after the last dump.
fn kept_files_budget(watchdog: bool) -> usize {
    let soft = sys::nofile_soft_limit();
    let share = if watchdog { soft / 4 } else { soft / 2 };
    share.min(8192) as usize
}

/// Kept task files are closed this long after the last dump: periodic dumps (a script taking one
/// every minute, the watchdog's) keep them, a one-off dump does not hold them for good.
const KEPT_IDLE: Duration = Duration::from_secs(600);

impl DumpThread {
    pub fn new(cfg: Config, handler: usize) -> DumpThread {
        DumpThread {
            symbols: Symbolizer::new(&cfg.dir),
            cfg,
            modules: Modules::new(ModuleSource::this_process()),
            jit: JitCode::default(),
            generation: 0,
            sequence: 0,
            last_millis: 0,
            handler,
            scratch: Vec::new(),
            backtrace_modules: Vec::new(),
            unwritten: None,
            clean_leftovers: true,
            tasks: None,
            aux: None,
            aux_tried: false,
            aux_tasks: None,
            last_dump: None,
        }
    }

    /// Serve triggers forever.
    pub fn run(mut self) -> ! {
        let mut triggers = Vec::new();
        // The state page the CLI reads, and the re-checks of who handles the trigger.
        let mut watch = crate::state::Watch::start(&self.cfg);
        // The watchdog (STACKDUMP_WATCH), when on: its samples share this wait.
        let mut watchdog = crate::watch::Watchdog::start(&self.cfg);
        // Idle, the thread keeps little of the library's code mapped (`sys::
        // release_clean_library_pages`): after start-up and after each state check, but not
        // after a dump (triggers come in bursts), nor with the watchdog (which runs the same
        // code again every sampling period), and only until the first dump: a page a debugger
        // or a uprobe wrote into (a breakpoint, copied on write) would be dropped too, and by
        // then the process holds the dump's memory anyway. The signal handlers' first pages
        // are mapped again at once, so a trigger taken by a host thread does not wait for a
        // page fault.
        let release = watchdog.is_none();
        let mut released = false;
        loop {
            let timeout = match &watchdog {
                Some(w) => w.timeout().min(watch.timeout()),
                None => watch.timeout(),
            };
            // Dropped right before the wait (see `trigger::wait_for_work`).
            let keep = [
                crate::state::OUR_TRIGGER_HANDLER.load(Ordering::Relaxed),
                sigctx::trigger::on_trigger as *const () as usize,
                self.handler,
            ];
            let drop_now = release && !released && self.sequence == 0;
            released |= drop_now;
            trigger::wait_for_work(Some(timeout), drop_now.then_some(&keep[..]));
            if watch.check_if_due(&self.cfg.dir, false) {
                released = false;
                self.close_idle_task_files();
            }
            triggers.clear();
            let dropped = trigger::drain(&mut triggers);
            let alarm = watchdog
                .as_mut()
                .and_then(|w| w.sample_if_due().map(|a| (a, w.duration())));
            if triggers.is_empty() && dropped == 0 && alarm.is_none() {
                continue;
            }
            // A panic in one dump must not kill the host or the dump thread.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.dump(&triggers, dropped, alarm.as_ref())
            }));
            if let (Some(w), Some((a, _))) = (watchdog.as_mut(), alarm.as_ref()) {
                w.after_dump(a);
            }
            crate::alloc::trim();
            watch.check_if_due(&self.cfg.dir, true);
        }
    }

    /// [`KEPT_IDLE`] after the last dump, close the task files kept for the next one.
    fn close_idle_task_files(&mut self) {
        if self.last_dump.is_some_and(|t| t.elapsed() >= KEPT_IDLE) {
            self.last_dump = None;
            self.tasks = None;
            self.aux_tasks = None;
            // A late answer holds the helper's reader too.
            drop(self.aux.as_ref().and_then(|aux| aux.take_late()));
        }
    }

    /// One dump, in its phases: kernel view (0), stacks copied and unwound (1, 2), symbols and
    /// Python frames (3), the dump assembled with its findings, the side files written.
    ///
    /// `alarm`: the watchdog's, when it asked for this dump (with `STACKDUMP_WATCH`): the dump
    /// then says so in its trigger and leads its findings with the stuck threads.
    fn dump(
        &mut self,
        triggers: &[trigger::RawTrigger],
        dropped: u64,
        alarm: Option<&(Alarm, Duration)>,
    ) {
        let start = Instant::now();
        let millis = self.next_millis();
        self.sequence += 1;
        let mut errors = self.carried_errors(dropped);
        let pid = sigctx::getpid();
        let me = Tid(sigctx::gettid());
        self.let_takers_return(triggers, me);

        // Phase 0: the kernel's view of every thread, before any of them is interrupted.
        let mut reader = self.tasks.take().unwrap_or_else(|| {
            let mut r =
                TaskReader::keeping("/proc/self", kept_files_budget(self.cfg.watch.is_some()));
            r.open_run_counters = self.cfg.blocked_without_signal;
            r
        });
        let mut threads = self.kernel_view(&mut reader, me, &mut errors);
        let maps = std::fs::read("/proc/self/maps")
            .map(|b| proc::parse_maps(&b))
            .unwrap_or_else(|e| {
                errors.push(format!("cannot read /proc/self/maps: {e}"));
                Vec::new()
            });
        let t_kernel = start.elapsed();

        // Phase 1 and 2: capture stacks with the capture signal, unwinding each copy as it comes in.
        self.sync_modules(&maps);
        // The modules the blocked threads are in (their C library, nearly always) have their
        // unwind tables read now, not between a thread's copy and the check that it did not
        // run; the others as the unwinds go through them.
        for t in &threads {
            if let SyscallState::InSyscall { pc, .. } = t.kernel.syscall {
                self.modules.ensure(pc.0);
            }
        }
        // The perf map is read only if a stack goes through JIT code.
        self.jit = JitCode::new(&maps, &self.modules, Some(PerfMapSource::this_process()));
        let taken = self.take_stacks(pid, &mut threads, &mut reader, &mut errors);
        // (After the unwinds: a module's tables are read when a stack first goes through it.)
        errors.extend(self.modules.problems.iter().cloned());
        // Interpreter frames (CPython), read now, as close to the native copies as possible
        // (a thread that wakes every millisecond must not have moved in between), and merged
        // once the native stacks are symbolized.
        let tids: Vec<Tid> = threads.iter().map(|t| t.tid).collect();
        let py = crate::python::read(&tids, &maps);
        if let Ok(p) = &py {
            unmark_unmoved(&mut threads, p, &mut reader);
        }
        let t_capture = start.elapsed() - t_kernel;

        // Phase 3: symbolize, decode, assemble.
        let t3 = Instant::now();
        let (mut out_threads, captured, runs_at_copy) = self.symbolize_threads(threads, &reader);
        errors.extend(self.jit.problem.take());
        stackdump_core::python::merge_into(&mut out_threads, py, &mut errors);
        self.retake_moved_python_threads(
            &mut out_threads,
            &runs_at_copy,
            &maps,
            &mut reader,
            &mut errors,
        );
        crate::python::forget_codes();
        // The files of threads that have exited are closed; the others kept for the next dump.
        let live: Vec<Tid> = out_threads
            .iter()
            .filter(|t| t.capture != CaptureStatus::Exited)
            .map(|t| t.tid)
            .collect();
        reader.forget_others(&live);
        self.tasks = Some(reader);
        if let Some(helper) = &mut self.aux_tasks {
            helper.forget_others(&live);
        }
        let t_symbolize = t3.elapsed();

        let phases = PhaseTimes {
            kernel_view: t_kernel.as_micros() as u64,
            capture: (t_capture.saturating_sub(taken.unwind_time)).as_micros() as u64,
            unwind: taken.unwind_time.as_micros() as u64,
            symbolize: t_symbolize.as_micros() as u64,
        };
        let taken = Taken { captured, ..taken };
        let mut dump = self.assemble(pid, millis, triggers, out_threads, &taken, phases, errors);
        if let Some((alarm, duration)) = alarm {
            dump.trigger.watchdog = Some(watch::trigger_of(alarm, *duration));
            if triggers.is_empty() {
                // Nobody sent a signal: the watchdog wrote this dump on its own.
                dump.trigger.signal = "watchdog".into();
                dump.trigger.signo = 0;
            }
        }
        crate::diagnose::run(&mut dump);
        if let Some((alarm, _)) = alarm {
            let stuck = watch::finding(&dump, &alarm.episode, &alarm.reasons);
            dump.findings.insert(0, stuck);
        }
        dump.capture.duration_us = start.elapsed().as_micros() as u64;
        let requests: Vec<u32> = triggers.iter().filter_map(|t| t.request).collect();
        self.write(&dump, millis, &requests);
        if self.unwritten.is_none() {
            // Only where this dump could be written (the sink checked the directory).
            self.symbols.flush_cache();
        } else {
            self.symbols.discard_cache_stores();
        }
        let tids: Vec<Tid> = dump.threads.iter().map(|t| t.tid).collect();
        self.start_aux_if_useful(&tids);
        self.last_dump = Some(Instant::now());
    }

    /// The dump's time: now, or a millisecond after the previous dump's, so that file names
    /// stay unique and sorted.
    fn next_millis(&mut self) -> i64 {
        let mut millis = sys::now_unix_millis();
        if millis <= self.last_millis {
            millis = self.last_millis + 1;
        }
        self.last_millis = millis;
        millis
    }

    /// What this dump must say about earlier ones: triggers that found the ring full, and
    /// dumps that could not be written.
    fn carried_errors(&self, dropped: u64) -> Vec<String> {
        let mut errors = Vec::new();
        if dropped > 0 {
            errors.push(format!("{dropped} trigger(s) arrived while the trigger queue was full and were served by this dump without their request ids"));
        }
        if let Some((first, last, why)) = &self.unwritten {
            let dir = self.cfg.dir.display();
            errors.push(if first == last {
                format!("the previous dump (#{first}) could not be written to {dir}: {why}")
            } else {
                format!("the previous dumps (#{first} to #{last}) could not be written to {dir}; the last error: {why}")
            });
        }
        errors
    }

    /// The thread that took the trigger is still in the trigger handler; give it a moment to
    /// return to what it was doing, so its kernel view shows that and not our handler.
    fn let_takers_return(&self, triggers: &[trigger::RawTrigger], me: Tid) {
        let until = Instant::now() + Duration::from_millis(5);
        while trigger::IN_HANDLER.load(Ordering::Acquire) != 0 && Instant::now() < until {
            std::thread::yield_now();
        }
        std::thread::yield_now();
        self.wait_for_takers(triggers, me);
    }

    /// Phase 0: every thread's kernel view (our own thread's, busy reading /proc, says nothing
    /// about the host and is blanked; so is the helper's). With many threads and more than one
    /// CPU, the helper ([`crate::aux`]) reads the threads with odd tids meanwhile (by tid, so
    /// each keeps the same threads' files open from one dump to the next).
    fn kernel_view(
        &mut self,
        reader: &mut TaskReader,
        me: Tid,
        errors: &mut Vec<String>,
    ) -> Vec<RawThread> {
        let tids = reader.tids().unwrap_or_else(|e| {
            errors.push(format!("cannot list /proc/self/task: {e}"));
            vec![me]
        });
        let mut views: Vec<Option<crate::aux::View>> = Vec::new();
        views.resize_with(tids.len(), || None);
        if let Some(odd) = self.aux_job(&tids) {
            for (i, &tid) in tids.iter().enumerate() {
                if tid.0 % 2 == 0 {
                    views[i] = Some(reader.kernel_view_counted(tid));
                }
            }
            // What the helper has not started is ours too (it may have no CPU at all).
            let mut stolen = Vec::new();
            if let Some(aux) = &self.aux {
                while let Some(j) = aux.claim(odd.len()) {
                    stolen.push((j, reader.kernel_view_counted(odd[j])));
                }
            }
            let answer = self
                .aux
                .as_ref()
                .and_then(|aux| aux.receive(crate::aux::JOB_PATIENCE));
            let mut odd_views: Vec<Option<crate::aux::View>> = match answer {
                Some(mut job) => {
                    let v = std::mem::take(&mut job.views);
                    self.aux_tasks = Some(job.reader);
                    v
                }
                None => Vec::new(),
            };
            odd_views.resize_with(odd.len(), || None);
            for (j, v) in stolen {
                odd_views[j] = Some(v);
            }
            let mut odd_views = odd.iter().zip(odd_views);
            for (i, &tid) in tids.iter().enumerate() {
                if tid.0 % 2 != 0 {
                    // None (the helper's claim, unanswered in time): read below.
                    views[i] = odd_views.next().and_then(|(t, v)| v.filter(|_| *t == tid));
                }
            }
        }
        let ours = [Some(me), self.aux.as_ref().map(|a| a.tid)];
        let mut threads: Vec<RawThread> = Vec::with_capacity(tids.len());
        for (tid, view) in tids.into_iter().zip(views) {
            // Read here: a small dump, no helper, or one the helper did not answer.
            let view = view.unwrap_or_else(|| reader.kernel_view_counted(tid));
            let ours = ours.contains(&Some(tid));
            let t = match view {
                Ok(proc::TaskView {
                    name,
                    mut kernel,
                    status,
                    counted,
                }) => RawThread {
                    kernel: if ours {
                        // Our own threads are busy reading /proc: their syscall and kernel
                        // stack describe the dump itself, not the host.
                        kernel.syscall = SyscallState::Running;
                        kernel.kernel_stack = None;
                        kernel.wchan = None;
                        kernel
                    } else {
                        kernel
                    },
                    tid,
                    name,
                    blocks_capture: status.blocks(self.cfg.capture.number),
                    status: if ours {
                        CaptureStatus::Dumper
                    } else {
                        CaptureStatus::Skipped
                    },
                    frames: None,
                    run_at_copy: None,
                    counted: counted.filter(|_| !ours),
                    signalled: false,
                },
                Err(proc::ThreadGone) => RawThread {
                    tid,
                    name: String::new(),
                    kernel: KernelView::default(),
                    blocks_capture: false,
                    status: CaptureStatus::Exited,
                    frames: None,
                    run_at_copy: None,
                    counted: None,
                    signalled: false,
                },
            };
            threads.push(t);
        }
        threads
    }

    /// After the first dump of at least [`crate::aux::MIN_THREADS`] threads, on a machine where
    /// we may use two CPUs: start the helper for the next dumps, and have it open (and keep)
    /// the files of its half of the threads now. Not during a dump: a first dump reads files
    /// the kernel has not looked up yet, which two threads do no faster than one (measured: 200
    /// threads, 12 ms alone against 35 ms in two halves), and the new thread's start would be
    /// on the dump's time.
    fn start_aux_if_useful(&mut self, tids: &[Tid]) {
        if self.aux_tried || tids.len() < crate::aux::MIN_THREADS {
            return;
        }
        self.aux_tried = true;
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return;
        }
        self.aux = crate::aux::Aux::start();
        if self.aux_job(tids).is_some() {
            let answer = self
                .aux
                .as_ref()
                .and_then(|aux| aux.receive(crate::aux::WARM_UP_PATIENCE));
            self.aux_tasks = answer.map(|job| job.reader);
            // The helper keeps the odd tids' files from now on: ours go, so that the budget
            // holds the even tids' (phase 1 opens the odd ones' `syscall` and `schedstat` again).
            if let Some(reader) = &mut self.tasks {
                reader.forget_where(|t| t.0 % 2 != 0);
            }
        }
    }

    /// Hand the helper the threads with odd tids; those tids (in the job's order), or None to
    /// read everything here.
    fn aux_job(&mut self, tids: &[Tid]) -> Option<Vec<Tid>> {
        if tids.len() < crate::aux::MIN_THREADS {
            return None;
        }
        let aux = self.aux.as_ref()?;
        // A late answer to the last job brings the helper's reader (and its kept files) back.
        if let Some(late) = aux.take_late() {
            self.aux_tasks = Some(late.reader);
        }
        let reader = self.aux_tasks.take().unwrap_or_else(|| {
            let mut r = TaskReader::keeping(
                "/proc/self",
                kept_files_budget(self.cfg.watch.is_some()) / 2,
            );
            // Its threads' run counters too: their views then come with one (phase 1's proof,
            // and the next view of a thread that has not run reads `stat` alone).
            r.open_run_counters = self.cfg.blocked_without_signal;
            r
        });
        let odd: Vec<Tid> = tids.iter().copied().filter(|t| t.0 % 2 != 0).collect();
        let job = crate::aux::Job {
            reader,
            tids: odd.clone(),
            views: Vec::new(),
        };
        if let Err(job) = aux.send(job) {
            // Still busy with a job it did not answer in time.
            self.aux_tasks = Some(job.reader);
            return None;
        }
        Some(odd)
    }

    /// Bring the modules up to date with `maps`, and the symbol caches with them.
    fn sync_modules(&mut self, maps: &[proc::Mapping]) {
        if !self.modules.sync(maps) {
            return;
        }
        // Addresses may mean something else now: drop our memo. backtrace's own cache (the
        // parsed debug info, ~100 ms to rebuild for libc) is dropped only when a module now
        // sits where backtrace knew a different one; objects it does not know yet (dlopen'ed
        // since) are named by the file symbolizer meanwhile.
        let known = &self.backtrace_modules;
        let conflict = self.modules.list().iter().any(|m| {
            known.iter().any(|(path, range)| {
                range.start < m.range.end
                    && m.range.start < range.end
                    && (*path != m.path || range.start != m.range.start)
            })
        });
        if conflict || known.is_empty() {
            self.symbols.reset();
            self.backtrace_modules = self
                .modules
                .list()
                .iter()
                .map(|m| (m.path.clone(), m.range.clone()))
                .collect();
        } else {
            self.symbols.forget_addresses();
        }
    }

    /// Phases 1 and 2: the blocked threads copied without a signal, then every other one sent
    /// the capture signal under one deadline (the copies without a signal need none).
    fn take_stacks(
        &mut self,
        pid: i32,
        threads: &mut [RawThread],
        reader: &mut TaskReader,
        errors: &mut Vec<String>,
    ) -> Taken {
        let without_signal = if self.cfg.blocked_without_signal {
            self.capture_blocked(threads, reader)
        } else {
            0
        };
        let deadline = Instant::now() + self.cfg.deadline;
        let mut late_without_signal = 0;
        let unwind_time = self.capture_stacks(
            pid,
            threads,
            deadline,
            reader,
            errors,
            &mut late_without_signal,
        );
        Taken {
            captured: 0, // known once symbolized
            without_signal: without_signal + late_without_signal,
            signalled: threads.iter().filter(|t| t.signalled).count(),
            unwind_time,
        }
    }

    /// Phase 3: every thread with its symbolized stack (and the fd behind its system call);
    /// how many have one; with each, its run counter at a copy without a signal.
    fn symbolize_threads(
        &mut self,
        threads: Vec<RawThread>,
        reader: &TaskReader,
    ) -> (Vec<Thread>, usize, Vec<Option<RunCounter>>) {
        // Every module's DWARF set up once, for all the addresses of every stack.
        let modules = &self.modules;
        self.symbols.prepare(
            threads
                .iter()
                .filter_map(|t| t.frames.as_ref())
                .flat_map(|raw| &raw.addrs)
                .filter_map(|&(ip, is_return)| {
                    let m = modules.module_of(ip)?;
                    Some((ip, is_return, m.file.as_deref()?, m.bias))
                }),
        );
        let mut out_threads = Vec::with_capacity(threads.len());
        let mut captured = 0;
        let mut runs_at_copy = Vec::with_capacity(threads.len());
        for mut t in threads {
            reader.resolve_fd(&mut t.kernel.syscall);
            let (frames, truncated) = match &t.frames {
                Some(raw) => {
                    captured += 1;
                    self.symbolize(raw)
                }
                None => (Vec::new(), false),
            };
            runs_at_copy.push(t.run_at_copy);
            out_threads.push(Thread {
                tid: t.tid,
                name: t.name,
                kernel: t.kernel,
                capture: t.status,
                frames,
                truncated,
                signalled: t.signalled,
                python: None,
            });
        }
        (out_threads, captured, runs_at_copy)
    }

    /// The dump: the process, its triggers, how its stacks were taken, its threads.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        &self,
        pid: i32,
        millis: i64,
        triggers: &[trigger::RawTrigger],
        threads: Vec<Thread>,
        taken: &Taken,
        phases_us: PhaseTimes,
        errors: Vec<String>,
    ) -> Dump {
        let first = triggers.first().copied();
        Dump {
            format: FORMAT.to_string(),
            pid: Pid(pid),
            comm: std::fs::read_to_string("/proc/self/comm")
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default(),
            exe: std::fs::read_link("/proc/self/exe")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cmdline: cmdline(),
            time: UtcTime::from_unix_millis(millis).rfc3339(),
            trigger: Trigger {
                signal: self.cfg.trigger.name.clone(),
                signo: self.cfg.trigger.number,
                sender_pid: first.map(|t| t.sender_pid),
                sender_uid: first.map(|t| t.sender_uid),
                // The request id that names the file must be the first request, whether or
                // not the first trigger carried one.
                request: triggers.iter().find_map(|t| t.request).map(u64::from),
                coalesced: triggers
                    .iter()
                    .skip(1)
                    .map(|t| CoalescedTrigger {
                        sender_pid: Some(t.sender_pid),
                        request: t.request.map(u64::from),
                    })
                    .collect(),
                watchdog: None,
            },
            capture: CaptureStats {
                duration_us: 0,
                threads: threads.len(),
                captured: taken.captured,
                method: if taken.without_signal > 0 {
                    CaptureMethod::SyscallSignal
                } else {
                    CaptureMethod::Signal
                },
                without_signal: taken.without_signal,
                signalled: taken.signalled,
                capture_signal: self.cfg.capture.name.clone(),
                deadline_ms: self.cfg.deadline.as_millis() as u64,
                phases_us,
                sequence: self.sequence,
            },
            threads,
            findings: Vec::new(),
            process: None,
            errors,
            host: Some(stackdump_core::kernel::host::host(None)),
        }
    }

    /// A host thread that took a trigger was interrupted in whatever it was doing, most often
    /// a blocking system call it restarts once our handler returns. Wait (at most
    /// [`TAKER_PATIENCE`]) until it is back in a system call, so that phase 0 shows what it
    /// really waits for, and it is copied without a second signal, instead of showing it
    /// "running" for the few microseconds of its way back (or longer, when it is preempted
    /// on the way). A thread that was running anyway costs this wait.
    fn wait_for_takers(&self, triggers: &[trigger::RawTrigger], me: Tid) {
        let mut takers: Vec<Tid> = triggers
            .iter()
            .map(|t| Tid(t.taker))
            .filter(|t| t.0 > 0 && *t != me)
            .collect();
        takers.sort();
        takers.dedup();
        if takers.is_empty() {
            return;
        }
        let until = Instant::now() + TAKER_PATIENCE;
        let mut reader = TaskReader::new("/proc/self");
        reader.kernel_stacks = false;
        for tid in takers {
            loop {
                match reader.syscall(tid) {
                    Ok(SyscallState::InSyscall { .. }) | Err(_) => break,
                    Ok(_) if Instant::now() >= until => return,
                    Ok(_) => std::thread::sleep(Duration::from_micros(50)),
                }
            }
        }
    }

    /// Symbolize one captured stack: frames (inlined ones marked), and whether it is truncated
    /// (it did not end at a thread entry point, or hit the frame limit).
    fn symbolize(&mut self, raw: &RawFrames) -> (Vec<Frame>, bool) {
        // One allocation at about its size (a few inlined frames more at most), not a growth
        // from 4 by doubling: a frame is ~200 bytes, and each regrowth copies them all through
        // the allocator's path for large blocks (8 % of the dump thread's time at 200 threads).
        let mut frames: Vec<Frame> = Vec::with_capacity(raw.addrs.len() + 8);
        for &(ip, is_return) in &raw.addrs {
            let info = self.modules.module_of(ip);
            if info.is_none() {
                if let Some(f) = self.jit.frame(ip, is_return) {
                    frames.push(f);
                    continue;
                }
            }
            let module = info.map(|m| (&m.path, m.bias));
            let file = info.and_then(|m| m.file.as_deref());
            if self.modules.is_trampoline(ip) {
                // Like gdb: the kernel's signal frame, between a handler and the code it
                // interrupted.
                frames.push(stackdump_core::stack::symbols::trampoline_frame(
                    ip,
                    module.map(|(p, _)| std::sync::Arc::clone(p)),
                    module.map(|(_, bias)| stackdump_core::model::Addr(ip - bias)),
                ));
                continue;
            }
            self.symbols
                .frames(ip, is_return, module, file, &mut frames);
        }
        let truncated = is_truncated(raw.end, &frames);
        (frames, truncated)
    }

    /// Python frames are read from the interpreter's memory after every native stack was
    /// copied. A thread copied without a signal that has run since (its run counter moved: it
    /// woke up, e.g. from a short sleep) may now be on another Python line than its native
    /// stack shows. Such a thread is taken again, whole (kernel view, stack, symbols, Python
    /// frames), up to [`RETAKES`] times, each retake checked like the first copy (see
    /// [`settle`]); if it keeps running, the dump says so.
    fn retake_moved_python_threads(
        &mut self,
        threads: &mut [Thread],
        runs_at_copy: &[Option<(u64, u64)>],
        maps: &[proc::Mapping],
        reader: &mut TaskReader,
        errors: &mut Vec<String>,
    ) {
        let mut pauses_left = RETAKE_PAUSES;
        for (t, run) in threads.iter_mut().zip(runs_at_copy) {
            let (Some(run), Some(_)) = (*run, &t.python) else {
                continue;
            };
            let tid = t.tid;
            let mut retake = LiveRetake {
                dumper: self,
                reader,
                thread: t,
                maps,
                paused: 0,
                pauses_left: &mut pauses_left,
            };
            if !settle(run, RETAKES, &mut retake) {
                errors.push(format!(
                    "thread {tid} ran while its Python frames were read and could not be taken again consistently: its Python frames may be newer than its native stack",
                ));
            }
        }
    }

    /// Copy the stacks of threads blocked in a system call without interrupting them: their SP
    /// and PC are in `/proc/self/task/TID/syscall`. The copy is kept only when the thread
    /// provably did not move while it was taken (its run counter unchanged since before its
    /// `syscall` line was read; without one, the same line and context-switch counts before
    /// and after) and unwinds from SP and PC alone to a thread entry point
    /// (x86_64 frames whose CFA depends on rbp get it recovered from the copy when that is
    /// unambiguous, `stackdump_core::stack::fprecover`; otherwise, and for aarch64 leaf wrappers, the
    /// registers only the capture signal gives are needed: those threads are left for it).
    /// Returns how many.
    fn capture_blocked(&mut self, threads: &mut [RawThread], reader: &mut TaskReader) -> usize {
        let mut done = 0;
        for t in threads
            .iter_mut()
            .filter(|t| t.status == CaptureStatus::Skipped)
        {
            let before = (
                t.kernel.voluntary_ctxt_switches,
                t.kernel.nonvoluntary_ctxt_switches,
            );
            let counted = t.counted.take();
            if let Some((frames, run)) =
                self.copy_blocked(reader, t.tid, &t.kernel.syscall, before, counted)
            {
                t.frames = Some(frames);
                t.run_at_copy = run;
                t.status = CaptureStatus::Ok;
                done += 1;
            }
        }
        done
    }

    /// Copy and unwind the stack of `tid`, which `syscall` (read together with the context
    /// switch counts `switches`) says is blocked in a system call. None when it is not
    /// blocked, moved during the copy, or does not unwind from SP and PC alone. With the
    /// frames comes the thread's run counter at the copy, when there is one.
    ///
    /// The copy and its proof are shared with `stackdump inspect`
    /// ([`stackdump_core::stack::blocked::copy_blocked`]): with `counted` (phase 0 read the
    /// counter before the thread's `syscall` line, or before the earlier view it reused), the
    /// run counter unchanged since that reading, after the copy and after the unwinding, proves
    /// the line still holds; without it, the counter is read at the copy and the `syscall` line
    /// again after it (where the kernel keeps no run counter, the context-switch counts of
    /// `status`, compared with phase 0's); the first
    /// copy is [`FIRST_WINDOW`] bytes, then the whole window if the stack does not end within
    /// it; a thread that ran but is back in the same call at the same place is copied once
    /// more instead of being sent the capture signal.
    fn copy_blocked(
        &mut self,
        reader: &mut TaskReader,
        tid: Tid,
        syscall: &SyscallState,
        switches: (u64, u64),
        counted: Option<proc::Counted>,
    ) -> Option<(RawFrames, Option<(u64, u64)>)> {
        // Phase 0's reading (before the `syscall` line) when it had the counter open; else the
        // counter is read at the copy, and the line again after it.
        let (counter, runs) = match counted {
            Some(c) => (Some(c.counter), c.before),
            None => (reader.run_counter(tid), None),
        };
        let full = self.cfg.window;
        let max_frames = self.cfg.max_frames;
        let mut buf = std::mem::take(&mut self.scratch);
        let seen = Seen {
            syscall,
            switches,
            runs,
        };
        // Shared by the unwinder and the frame-pointer recovery's function starts.
        let this = std::cell::RefCell::new(&mut *self);
        let result = stackdump_core::stack::blocked::copy_blocked(
            reader,
            tid,
            seen,
            counter.as_ref(),
            (FIRST_WINDOW.min(full), full),
            &mut buf,
            &mut |addr, b| {
                // SAFETY: `b` is our own buffer of `b.len()` bytes, not shared.
                unsafe { sigctx::read_own_memory(b.as_mut_ptr(), addr, b.len()) }
            },
            &mut |regs, stack| {
                let mut me = this.borrow_mut();
                let frames = me.modules.unwind(regs, stack, max_frames, true);
                let complete =
                    unwound_complete(&frames, |ip, is_return| me.names_root(ip, is_return));
                (frames, complete)
            },
            &mut |addr| this.borrow_mut().modules.function_start(addr),
            &mut |addr| this.borrow().jit.region_of(addr).is_some(),
        );
        self.scratch = buf;
        result
    }

    /// Whether a function at `ip` (a return address when `is_return`), inlined ones included,
    /// is a thread entry point: the symbol table says so without any DWARF being read; only
    /// otherwise are the frames (inlined ones) looked at.
    fn names_root(&mut self, ip: u64, is_return: bool) -> bool {
        let info = self.modules.module_of(ip);
        if let Some((file, bias)) = info.and_then(|m| Some((m.file.as_deref()?, m.bias))) {
            if self.symbols.names_root(ip, is_return, file, bias) == Some(true) {
                return true;
            }
        }
        let mut frames = Vec::new();
        let info = self.modules.module_of(ip);
        let module = info.map(|m| (&m.path, m.bias));
        let file = info.and_then(|m| m.file.as_deref());
        self.symbols
            .frames(ip, is_return, module, file, &mut frames);
        frames
            .iter()
            .any(|f| f.function.as_deref().is_some_and(is_thread_root))
    }

    /// Send the capture signal to every thread that can take it, at most a few at a time, and
    /// unwind each copy as it arrives. Returns the time spent unwinding.
    fn capture_stacks(
        &mut self,
        pid: i32,
        threads: &mut [RawThread],
        deadline: Instant,
        reader: &mut TaskReader,
        errors: &mut Vec<String>,
        late_without_signal: &mut usize,
    ) -> Duration {
        let Some(table) = slots::table(self.cfg.slots, self.cfg.window) else {
            errors.push("cannot allocate capture slots (mmap failed): no user stacks".into());
            for t in threads
                .iter_mut()
                .filter(|t| t.status == CaptureStatus::Skipped)
            {
                t.status = CaptureStatus::Failed;
            }
            return Duration::ZERO;
        };
        slots::reclaim(table);
        self.generation = self.generation.wrapping_add(1);
        // The round reads through the dump's reader (and its kept files); handed back below.
        let recheck = std::mem::replace(reader, TaskReader::new("/proc/self"));
        let mut round = Round {
            table,
            generation: self.generation,
            queue: self.signal_queue(pid, threads, deadline),
            free: (0..table.slots.len())
                .rev()
                .filter(|&s| table.slots[s].state.load(Ordering::Acquire) == slots::FREE)
                .collect(),
            inflight: Vec::new(),
            unwind_time: Duration::ZERO,
            recheck,
            late_without_signal: 0,
        };
        let concurrency = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(1);
        let mut last_alive_check = Instant::now();

        while !(round.queue.is_empty() && round.inflight.is_empty()) {
            let seen = slots::COMPLETIONS.load(Ordering::Acquire);
            self.harvest_published(&mut round, threads);
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Threads that exited while we waited for them.
            if now.duration_since(last_alive_check) > Duration::from_millis(20) {
                last_alive_check = now;
                round.forget_exited(pid, threads, now);
            }
            self.send_more(pid, &mut round, threads, concurrency, now, errors);
            if round.inflight.is_empty() && (round.queue.is_empty() || round.free.is_empty()) {
                if round.queue.is_empty() {
                    break;
                }
                // No free slot and nothing in flight: slots are held by late handlers of an
                // earlier dump. Give them a moment.
                round.reclaim_free();
                continue;
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(PATIENCE);
            sys::futex_wait(&slots::COMPLETIONS, seen, Some(wait));
        }
        *late_without_signal += round.late_without_signal;
        std::mem::swap(reader, &mut round.recheck);
        self.give_up_at_deadline(pid, round, threads, errors)
    }

    /// The threads to send the capture signal to, in order. A thread that seemed to block the
    /// capture signal in phase 0 may have been inside the trigger handler (whose `sa_mask`
    /// holds it for a few microseconds): handlers are let finish and it is looked at again;
    /// one that still blocks it is marked so (or gone).
    fn signal_queue(
        &self,
        pid: i32,
        threads: &mut [RawThread],
        deadline: Instant,
    ) -> VecDeque<usize> {
        let mut queue: VecDeque<usize> = VecDeque::new();
        let mut maybe_blocked = Vec::new();
        for (i, t) in threads.iter_mut().enumerate() {
            if t.status != CaptureStatus::Skipped {
                continue;
            }
            if t.blocks_capture {
                maybe_blocked.push(i);
            } else {
                queue.push_back(i);
            }
        }
        if maybe_blocked.is_empty() {
            return queue;
        }
        let until = Instant::now() + Duration::from_millis(5);
        let mut handlers_ran = false;
        while trigger::IN_HANDLER.load(Ordering::Acquire) != 0 && Instant::now() < until {
            handlers_ran = true;
            std::thread::yield_now();
        }
        // While triggers keep coming (a burst of queued real-time triggers), a thread may enter
        // the handler again and again: it is looked at for up to 50 ms then (within the
        // deadline); otherwise 20 looks (a thread that masks every signal costs nothing more).
        let patience = if handlers_ran {
            Duration::from_millis(50)
        } else {
            Duration::ZERO
        };
        let mut reader = TaskReader::new("/proc/self");
        for i in maybe_blocked {
            let t = &mut threads[i];
            let mut blocked = true;
            let give_up = (Instant::now() + patience).min(deadline);
            let mut looks = 0;
            while looks < 20 || Instant::now() < give_up {
                looks += 1;
                match reader.status(t.tid) {
                    Ok(st) if st.blocks(self.cfg.capture.number) => std::thread::yield_now(),
                    Ok(_) => {
                        blocked = false;
                        break;
                    }
                    Err(proc::ThreadGone) => break,
                }
            }
            if blocked {
                t.status = if sys::thread_alive(pid, t.tid.0) {
                    CaptureStatus::SignalBlocked
                } else {
                    CaptureStatus::Exited
                };
            } else {
                queue.push_back(i);
            }
        }
        queue
    }

    /// Unwind every copy published since the last look, and free its slot.
    fn harvest_published(&mut self, round: &mut Round, threads: &mut [RawThread]) {
        let mut i = 0;
        while i < round.inflight.len() {
            let f = &round.inflight[i];
            let slot = &round.table.slots[f.slot];
            if slots::is_done(slot, round.generation) {
                let t0 = Instant::now();
                self.harvest(&mut threads[f.thread], slot);
                round.unwind_time += t0.elapsed();
                slots::release(slot);
                round.free.push(f.slot);
                round.inflight.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Signal more threads, keeping at most `concurrency` fresh requests outstanding. Before
    /// each, the handler is checked to still be ours, and the thread is looked at once more: one
    /// that has entered a blocking system call since phase 0 is copied without a signal.
    fn send_more(
        &mut self,
        pid: i32,
        round: &mut Round,
        threads: &mut [RawThread],
        concurrency: usize,
        now: Instant,
        errors: &mut Vec<String>,
    ) {
        let mut active = round
            .inflight
            .iter()
            .filter(|f| now.duration_since(f.sent) < PATIENCE)
            .count();
        while active < concurrency && !round.queue.is_empty() && !round.free.is_empty() {
            if sys::current_handler(self.cfg.capture.number) != Some(self.handler) {
                errors.push(format!(
                    "the host replaced or reset the handler of the capture signal SIG{}; threads not yet captured were not signalled (set STACKDUMP_CAPTURE_SIGNAL to a signal the host does not use)",
                    self.cfg.capture.name
                ));
                for ti in round.queue.drain(..) {
                    threads[ti].status = CaptureStatus::HandlerReplaced;
                }
                break;
            }
            let Some(ti) = round.queue.pop_front() else {
                break;
            };
            // Last look before interrupting it: a thread that has entered a blocking
            // system call since phase 0 is copied without a signal (so it sees no EINTR).
            if self.cfg.blocked_without_signal {
                let tid = threads[ti].tid;
                let recheck = &mut round.recheck;
                if let (Ok(sc), Ok(st)) = (recheck.syscall(tid), recheck.status(tid)) {
                    let switches = (st.voluntary_ctxt_switches, st.nonvoluntary_ctxt_switches);
                    if let Some((frames, run)) =
                        self.copy_blocked(recheck, tid, &sc, switches, None)
                    {
                        threads[ti].frames = Some(frames);
                        threads[ti].run_at_copy = run;
                        threads[ti].status = CaptureStatus::Ok;
                        round.late_without_signal += 1;
                        continue;
                    }
                }
            }
            let Some(si) = round.free.pop() else {
                round.queue.push_front(ti);
                break;
            };
            let slot = &round.table.slots[si];
            if !slots::arm(slot, round.generation) {
                round.queue.push_front(ti);
                continue; // not free after all (a late handler): drop it from the free list
            }
            let tid = threads[ti].tid.0;
            match sys::tg_sigqueue(
                pid,
                tid,
                self.cfg.capture.number,
                slots::cookie(round.generation, si),
            ) {
                Ok(()) => {
                    threads[ti].signalled = true;
                    round.inflight.push(InFlight {
                        thread: ti,
                        slot: si,
                        sent: Instant::now(),
                    });
                    active += 1;
                }
                Err(e) => {
                    let _ = slots::disarm(slot, round.generation);
                    round.free.push(si);
                    match e.raw_os_error() {
                        Some(libc::ESRCH) => threads[ti].status = CaptureStatus::Exited,
                        Some(libc::EAGAIN) => {
                            // The queue of pending real-time signals is full: retry later.
                            round.queue.push_back(ti);
                            break;
                        }
                        _ => {
                            threads[ti].status = CaptureStatus::Failed;
                            errors.push(format!("cannot signal thread {tid}: {e}"));
                        }
                    }
                }
            }
        }
    }

    /// The deadline: whoever has not answered is reported, and their slots are given up (a
    /// copy published at the last moment is still taken); threads never signalled are listed
    /// as skipped. Returns the time spent unwinding in the whole round.
    fn give_up_at_deadline(
        &mut self,
        pid: i32,
        round: Round,
        threads: &mut [RawThread],
        errors: &mut Vec<String>,
    ) -> Duration {
        let mut unwind_time = round.unwind_time;
        for f in round.inflight {
            let slot = &round.table.slots[f.slot];
            let t = &mut threads[f.thread];
            match slots::disarm(slot, round.generation) {
                Ok(()) => {
                    t.status = if sys::thread_alive(pid, t.tid.0) {
                        CaptureStatus::NoResponse
                    } else {
                        CaptureStatus::Exited
                    }
                }
                Err(slots::DONE) => {
                    let t0 = Instant::now();
                    self.harvest(t, slot);
                    unwind_time += t0.elapsed();
                    slots::release(slot);
                }
                Err(_) => t.status = CaptureStatus::NoResponse, // its handler is still writing
            }
        }
        if !round.queue.is_empty() {
            errors.push(format!(
                "the deadline ({} ms) passed before {} thread(s) could be signalled: they are listed as skipped (raise STACKDUMP_DEADLINE_MS)",
                self.cfg.deadline.as_millis(),
                round.queue.len()
            ));
        }
        for ti in round.queue {
            // Never signalled: not "no response", just not attempted in time.
            threads[ti].status = CaptureStatus::Skipped;
        }
        slots::trim(round.table);
        unwind_time
    }

    fn harvest(&mut self, t: &mut RawThread, slot: &slots::Slot) {
        let cap = slots::captured(slot);
        if cap.tid != t.tid.0 || cap.stack.is_empty() {
            t.status = CaptureStatus::Failed;
            return;
        }
        t.frames =
            Some(
                self.modules
                    .unwind(&cap.regs.into(), cap.stack, self.cfg.max_frames, false),
            );
        t.status = CaptureStatus::Ok;
    }

    fn write(&mut self, dump: &Dump, millis: i64, requests: &[u32]) {
        let text = if self.cfg.text {
            Some(stackdump_core::output::render::text(dump))
        } else {
            None
        };
        let write_text = |w: &mut sink::FileWriter<'_>| {
            std::io::Write::write_all(w, text.as_deref().unwrap_or_default().as_bytes())
        };
        // Compact, streamed: a pretty-printed dump of 1000 threads is 60% larger (7.7 MB) and
        // was serialized whole into memory first.
        let write_json = |w: &mut sink::FileWriter<'_>| {
            serde_json::to_writer(&mut *w, dump).map_err(std::io::Error::from)?;
            std::io::Write::write_all(w, b"\n")
        };
        let mut outputs = Vec::new();
        // Text first, JSON last: once the .json is there, the .txt is too.
        if text.is_some() {
            outputs.push(sink::Output {
                format: DumpFormat::Text,
                content: &write_text,
            });
        }
        if self.cfg.json {
            outputs.push(sink::Output {
                format: DumpFormat::Json,
                content: &write_json,
            });
        }
        let pid = dump.pid;
        if std::mem::take(&mut self.clean_leftovers) {
            // Before writing: on a full file system this may make the room we need.
            let _ = sink::clean_leftovers(&self.cfg.dir, pid.0);
        }
        // Errors have nowhere to go now (never the host's stderr): the dump is dropped, and
        // the next dump that is written says so in its `errors`.
        match sink::write(&self.cfg.dir, pid.0, millis, requests, &outputs) {
            Ok((_, used)) => {
                self.last_millis = self.last_millis.max(millis + i64::from(used));
                self.unwritten = None;
            }
            Err(e) => {
                let seq = dump.capture.sequence;
                let first = self.unwritten.as_ref().map_or(seq, |u| u.0);
                self.unwritten = Some((first, seq, sink::describe(&e)));
                self.clean_leftovers = true;
            }
        }
    }
}

/// What became of a thread taken again (see [`settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retaken {
    /// Taken again, whole; with its run counter at the new copy.
    Taken((u64, u64)),
    /// Not taken again (it is running now, or the copy did not hold), or taken again with no
    /// run counter to check the new copy against: the thread keeps its last copy, unverified.
    Failed,
    /// The thread is gone: what we have is its last state.
    Gone,
    /// Taken again, and proved not to have run between the new copy and the read of its
    /// Python frames that came right after it.
    Held,
}

/// One thread that may have run between the copy of its native stack and the read of its
/// Python frames, as [`settle`] sees it.
trait Retake {
    /// Whether the thread ran since the copy whose run counter was `run`; None when it is gone.
    fn ran_since(&mut self, run: (u64, u64)) -> Option<bool>;
    /// Take the thread again, whole (kernel view, stack, symbols, Python frames).
    fn take_again(&mut self) -> Retaken;
    /// Give the thread a moment before the next try, after a retake that failed.
    fn pause(&mut self);
}

/// Take `thread` again until it did not run between a copy and the read of its Python frames
/// that follows, at most `retakes` times. Every copy, the first one and each retake, is checked
/// the same way, after its Python frames were read: true when the last one held (or the
/// thread is gone), false when it ran again after the last retake, or the last retake failed.
/// A retake that failed (the thread was running at that moment, or waiting for a CPU: a
/// thread that naps wakes up for tens of microseconds at a time) is tried again, within the
/// same limit, after a pause.
fn settle(mut run: (u64, u64), retakes: usize, thread: &mut impl Retake) -> bool {
    let mut left = retakes;
    let mut check = true;
    loop {
        if check {
            match thread.ran_since(run) {
                None | Some(false) => return true,
                Some(true) => {}
            }
        }
        if left == 0 {
            return false;
        }
        left -= 1;
        match thread.take_again() {
            Retaken::Taken(again) => (run, check) = (again, true),
            Retaken::Failed => {
                check = false;
                if left > 0 {
                    thread.pause();
                }
            }
            Retaken::Gone | Retaken::Held => return true,
        }
    }
}

/// A thread of this process, taken again by the dump thread.
struct LiveRetake<'a> {
    dumper: &'a mut DumpThread,
    reader: &'a mut TaskReader,
    thread: &'a mut Thread,
    maps: &'a [proc::Mapping],
    /// Pauses so far, for this thread.
    paused: u32,
    /// What is left of the dump's time for pauses ([`RETAKE_PAUSES`]).
    pauses_left: &'a mut Duration,
}

impl Retake for LiveRetake<'_> {
    fn ran_since(&mut self, run: (u64, u64)) -> Option<bool> {
        let counter = self.reader.run_counter(self.thread.tid)?;
        Some(counter.read() != Some(run))
    }

    fn take_again(&mut self) -> Retaken {
        let t = &mut *self.thread;
        let Ok(proc::TaskView {
            name,
            mut kernel,
            counted,
            ..
        }) = self.reader.kernel_view_counted(t.tid)
        else {
            return Retaken::Gone;
        };
        let switches = (
            kernel.voluntary_ctxt_switches,
            kernel.nonvoluntary_ctxt_switches,
        );
        let Some((raw, again)) =
            self.dumper
                .copy_blocked(self.reader, t.tid, &kernel.syscall, switches, counted)
        else {
            // Running now (or waiting for a CPU: on a small machine, maybe this one), or not
            // copyable without a signal.
            return Retaken::Failed;
        };
        // The Python frames right after the copy (this thread's only, with the code objects
        // the dump's first read found), then the proof that it did not run between the two;
        // symbols and the merge come after.
        let py = crate::python::read_again(t.tid, self.maps);
        let held =
            again.is_some() && self.reader.run_counter(t.tid).and_then(|c| c.read()) == again;
        // A read that lost the thread (it left Python, or could not be told apart from the
        // others) keeps the thread's last copy: no Python frames are dropped by a retake.
        let read = py.as_ref().is_ok_and(|p| {
            p.threads
                .iter()
                .any(|pt| pt.tid == Some(t.tid) && !pt.frames.is_empty())
        });
        if !read {
            return Retaken::Failed;
        }
        let (frames, truncated) = self.dumper.symbolize(&raw);
        self.reader.resolve_fd(&mut kernel.syscall);
        t.name = name;
        t.kernel = kernel;
        t.frames = frames;
        t.truncated = truncated;
        // The retake does not read thread names: the first read's name stays.
        let name = t.python.take().and_then(|p| p.name);
        // The process-wide notes were given by the first pass.
        let mut notes = Vec::new();
        stackdump_core::python::merge_into(std::slice::from_mut(t), py, &mut notes);
        if let Some(p) = t.python.as_mut().filter(|p| p.name.is_none()) {
            p.name = name;
        }
        match again {
            Some(_) if held => Retaken::Held,
            Some(run) => Retaken::Taken(run),
            None => Retaken::Failed, // nothing to check this copy against
        }
    }

    fn pause(&mut self) {
        let pause = (RETAKE_PAUSE * (1 << self.paused.min(4))).min(*self.pauses_left);
        self.paused += 1;
        if !pause.is_zero() {
            std::thread::sleep(pause);
            *self.pauses_left -= pause;
        }
    }
}

/// After the Python frames were read: a Python thread copied without a signal whose run
/// counter has not moved since its copy did not run in between, so its Python frames belong to
/// its native stack; its copy's counter is dropped, and it is not taken again
/// (`retake_moved_python_threads` looks only at threads that keep one).
fn unmark_unmoved(threads: &mut [RawThread], py: &PyProcess, reader: &mut TaskReader) {
    for pt in &py.threads {
        let Some(t) = pt
            .tid
            .and_then(|tid| threads.iter_mut().find(|t| t.tid == tid))
        else {
            continue;
        };
        let Some(run) = t.run_at_copy else {
            continue;
        };
        if reader.run_counter(t.tid).and_then(|c| c.read()) == Some(run) {
            t.run_at_copy = None;
        }
    }
}

/// The command line with arguments separated by spaces, at most 4 KiB.
fn cmdline() -> String {
    let bytes = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let mut s: String = bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if s.len() > 4096 {
        let mut cut = 4096;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread scripted check by check: `moved[i]` is what the i-th check finds (None: gone);
    /// `retakes[i]` what the i-th retake gives (its run counter is `(i + 1, i + 1)`).
    struct Scripted {
        moved: Vec<Option<bool>>,
        retakes: Vec<Retaken>,
        /// The run counter each check was asked about.
        checked: Vec<(u64, u64)>,
        taken: usize,
        paused: usize,
    }

    impl Scripted {
        fn new(moved: &[Option<bool>], retakes: &[Retaken]) -> Scripted {
            Scripted {
                moved: moved.to_vec(),
                retakes: retakes.to_vec(),
                checked: Vec::new(),
                taken: 0,
                paused: 0,
            }
        }
    }

    impl Retake for Scripted {
        fn ran_since(&mut self, run: (u64, u64)) -> Option<bool> {
            let answer = self.moved[self.checked.len()];
            self.checked.push(run);
            answer
        }

        fn take_again(&mut self) -> Retaken {
            let r = self.retakes[self.taken];
            self.taken += 1;
            r
        }

        fn pause(&mut self) {
            self.paused += 1;
        }
    }

    fn taken(n: u64) -> Retaken {
        Retaken::Taken((n, n))
    }

    #[test]
    fn a_thread_that_did_not_run_is_not_taken_again() {
        let mut t = Scripted::new(&[Some(false)], &[]);
        assert!(settle((0, 0), RETAKES, &mut t));
        assert_eq!((t.checked.len(), t.taken), (1, 0));
    }

    #[test]
    fn a_retake_that_held_settles_the_thread() {
        let mut t = Scripted::new(&[Some(true), Some(false)], &[taken(1)]);
        assert!(settle((0, 0), RETAKES, &mut t));
        // The second check is made against the retake's own counter.
        assert_eq!(t.checked, vec![(0, 0), (1, 1)]);
    }

    /// The defect this replaced: the last retake was never checked, so a thread that ran
    /// until the last retake and then held was reported as not taken consistently.
    #[test]
    fn the_last_retake_is_checked_too() {
        let mut moved = vec![Some(true); RETAKES];
        moved.push(Some(false));
        let retakes: Vec<Retaken> = (1..=RETAKES as u64).map(taken).collect();
        let mut t = Scripted::new(&moved, &retakes);
        assert!(settle((0, 0), RETAKES, &mut t));
        assert_eq!(t.taken, RETAKES);
        let expected: Vec<(u64, u64)> = (0..=RETAKES as u64).map(|n| (n, n)).collect();
        assert_eq!(
            t.checked, expected,
            "one check per copy, the last retake included"
        );
    }

    #[test]
    fn a_thread_that_ran_after_every_retake_is_reported() {
        let moved = vec![Some(true); RETAKES + 1];
        let retakes: Vec<Retaken> = (1..=RETAKES as u64).map(taken).collect();
        let mut t = Scripted::new(&moved, &retakes);
        assert!(!settle((0, 0), RETAKES, &mut t));
        // Exactly RETAKES retakes, each checked; no retake beyond the limit.
        assert_eq!((t.checked.len(), t.taken), (RETAKES + 1, RETAKES));
    }

    #[test]
    fn a_retake_that_failed_is_tried_again_within_the_limit() {
        // Running at the first retake, asleep at the second: settled, one check only.
        let mut t = Scripted::new(&[Some(true)], &[Retaken::Failed, Retaken::Held]);
        assert!(settle((0, 0), RETAKES, &mut t));
        assert_eq!((t.checked.len(), t.taken, t.paused), (1, 2, 1));
        // A failed retake is not checked against the copy before it; the next one is.
        let mut t = Scripted::new(&[Some(true), Some(false)], &[Retaken::Failed, taken(2)]);
        assert!(settle((0, 0), RETAKES, &mut t));
        assert_eq!(t.checked, vec![(0, 0), (2, 2)]);
        // Failing every time: reported after exactly RETAKES retakes.
        // No pause after the last one: nothing follows it.
        let mut t = Scripted::new(&[Some(true)], &[Retaken::Failed; RETAKES]);
        assert!(!settle((0, 0), RETAKES, &mut t));
        assert_eq!(
            (t.checked.len(), t.taken, t.paused),
            (1, RETAKES, RETAKES - 1)
        );
    }

    #[test]
    fn a_thread_gone_is_its_last_state() {
        let mut t = Scripted::new(&[None], &[]);
        assert!(settle((0, 0), RETAKES, &mut t));
        let mut t = Scripted::new(&[Some(true)], &[Retaken::Gone]);
        assert!(settle((0, 0), RETAKES, &mut t));
        let mut t = Scripted::new(&[Some(true), None], &[taken(1)]);
        assert!(settle((0, 0), RETAKES, &mut t));
        assert_eq!(t.taken, 1);
    }

    #[test]
    fn no_retakes_allowed_reports_a_thread_that_ran() {
        let mut t = Scripted::new(&[Some(true)], &[]);
        assert!(!settle((0, 0), 0, &mut t));
        assert_eq!(t.taken, 0);
    }
}
