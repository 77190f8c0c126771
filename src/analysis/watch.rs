//! The watchdog's judgement (`STACKDUMP_WATCH`): which threads that have not run for a while are
//! *stuck* (waiting for something that should finish: a write into a full pipe or socket, an
//! fsync, an uninterruptible sleep, a lock whose owner is itself stuck) and which are merely
//! *idle* (waiting for work: epoll_wait, poll, accept, a condition variable, a read with
//! nothing to read, a sleep). Pure functions of the model, plus the bookkeeping of run counters,
//! stuck episodes and the minimum gap between dumps ([`Watch`]); the dumper samples the kernel
//! and feeds them (`dumper/src/watch.rs`).
//!
//! The classification (`docs/WATCHDOG.md` has it as a table):
//!
//! | thread state | system call | fd kind / buffer | verdict |
//! |---|---|---|---|
//! | `D` (uninterruptible) | any | any | stuck |
//! | `S` | `fsync`, `fdatasync`, `sync`, `syncfs`, `sync_file_range`, `msync` | any | stuck |
//! | `S` | `write`, `writev`, `pwrite64`, `pwritev`, `pwritev2`, `sendto`, `sendmsg`, `sendmmsg`, `sendfile`, `splice`, `tee`, `vmsplice` | pipe, full (or a writer sleeps in `pipe_write`) | stuck |
//! | `S` | the same | pipe with room, or its level unknown and no writer in `pipe_write` | not stuck |
//! | `S` | the same | socket, tty, any other fd | stuck (a blocked write waits for buffer space) |
//! | `S` | `futex` wait | a lock whose owner is a thread of this process that is itself stuck (or in a cycle of lock waits) | stuck |
//! | `S` | `futex` wait | no owner (condition variable, semaphore, barrier) or an owner that is not stuck | idle |
//! | `S` | `read`, `readv`, `pread64`, `preadv`, `preadv2`, `recvfrom`, `recvmsg`, `recvmmsg` | any (nothing to read) | idle |
//! | `S` | `epoll_wait`, `epoll_pwait`, `epoll_pwait2`, `poll`, `ppoll`, `select`, `pselect6`, `accept`, `accept4`, `nanosleep`, `clock_nanosleep`, `rt_sigtimedwait`, `rt_sigsuspend`, `pause`, `wait4`, `waitid`, `io_getevents`, `io_uring_enter`, `msgrcv`, `semop`, `semtimedop`, `mq_timedreceive`, `flock`, `fcntl`, `connect` | any | idle |
//! | `R` (runnable), or not in a system call | - | - | not stuck (it is not waiting) |
//! | `S` | anything else | any | not stuck (unclassified calls never trigger a dump) |
//!
//! A thread is a candidate only while its run counter (schedstat) does not move: if it has not
//! run, its system call, arguments, SP and PC cannot have changed either.

use crate::analysis::facts;
use crate::analysis::syscall::syscall_in;
use crate::escape::Esc;
use crate::kernel::fds::Vantage;
use crate::kernel::proc::{RunCounter, TaskReader};
use crate::model::{
    CaptureStats, Dump, Finding, Pid, ProcessFacts, StuckThread, SyscallState, Thread, Tid,
    Trigger, WatchdogTrigger, FORMAT,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The kind of a finding written by the watchdog (always first in a watchdog dump).
pub const FINDING_KIND: &str = "stuck_threads";

/// What a thread that has not run is doing, as far as the watchdog is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Waiting for something that should finish: a dump is due once it lasts. The reason.
    Stuck(String),
    /// Waiting for a lock held by this thread: stuck if that one is.
    WaitsFor(Tid),
    /// Waiting for work: never a reason for a dump. What it waits for.
    Idle(&'static str),
    /// Not waiting (runnable, in user space), or a call the table does not know.
    Other(&'static str),
}

const SYNC: &[&str] = &[
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "msync",
];
const WRITES: &[&str] = &[
    "write", "writev", "pwrite64", "pwritev", "pwritev2", "sendto", "sendmsg", "sendmmsg",
    "sendfile", "splice", "tee", "vmsplice",
];
const READS: &[&str] = &[
    "read", "readv", "pread64", "preadv", "preadv2", "recvfrom", "recvmsg", "recvmmsg",
];
const IDLE: &[&str] = &[
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "accept",
    "accept4",
    "nanosleep",
    "clock_nanosleep",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "pause",
    "wait4",
    "waitid",
    "io_getevents",
    "io_uring_enter",
    "msgrcv",
    "semop",
    "semtimedop",
    "mq_timedreceive",
    "flock",
    "fcntl",
    "connect",
];

/// True when the verdict of a thread in this call needs the process facts (fd kinds, pipe
/// levels, futex owners): the dumper gathers them only then.
pub fn needs_facts(t: &Thread) -> bool {
    if t.kernel.state == "D" {
        return false;
    }
    match &t.kernel.syscall {
        SyscallState::InSyscall { name: Some(n), .. } => {
            WRITES.contains(&n.as_str()) || n == "futex"
        }
        _ => false,
    }
}

/// Classify one thread from its kernel view and (when [`needs_facts`]) the process facts.
pub fn classify(t: &Thread, facts: Option<&ProcessFacts>) -> Verdict {
    if t.kernel.state == "D" {
        return Verdict::Stuck("uninterruptible sleep (state D)".into());
    }
    if t.kernel.state == "R" {
        return Verdict::Other("runnable");
    }
    let (name, args, fd) = match &t.kernel.syscall {
        SyscallState::InSyscall {
            name: Some(n),
            args,
            fd,
            ..
        } => (n.as_str(), args, fd),
        SyscallState::InSyscall { name: None, .. } => return Verdict::Other("unknown call"),
        _ => return Verdict::Other("not in a system call"),
    };
    if SYNC.contains(&name) {
        return Verdict::Stuck("waits for writes to reach storage".into());
    }
    if READS.contains(&name) {
        return Verdict::Idle("waits for input");
    }
    if IDLE.contains(&name) {
        return Verdict::Idle("waits for events, connections, children or time");
    }
    if WRITES.contains(&name) {
        let target = fd.as_ref().and_then(|f| f.target.as_deref()).unwrap_or("");
        if let Some(inode) = crate::kernel::fds::pipe_inode(target) {
            let pipe = facts.and_then(|p| p.pipe(inode));
            let in_pipe_write = t
                .kernel
                .wchan
                .as_deref()
                .is_some_and(|w| w.contains("pipe_write"));
            return match pipe {
                Some(p) if p.full => Verdict::Stuck(match (p.queued, p.capacity) {
                    (Some(q), Some(c)) => format!("pipe full ({q} of {c} bytes queued)"),
                    _ => "pipe full".into(),
                }),
                _ if in_pipe_write => {
                    Verdict::Stuck("pipe full (writer sleeps in pipe_write)".into())
                }
                _ => Verdict::Other("pipe with room"),
            };
        }
        if crate::kernel::fds::socket_inode(target).is_some() {
            let fdn = fd.as_ref().map(|f| f.fd).unwrap_or(-1);
            let queued = facts
                .and_then(|p| p.syscall_fd(fdn))
                .and_then(|f| f.socket.as_ref())
                .map(|s| s.tx_queue);
            return Verdict::Stuck(match queued {
                Some(q) if q > 0 => {
                    format!("socket send buffer full ({q} bytes not sent or not acknowledged)")
                }
                _ => "socket send buffer full".into(),
            });
        }
        return Verdict::Stuck("a blocked write waits for buffer space".into());
    }
    if name == "futex" {
        let addr = args.first().copied().unwrap_or_default();
        let op = args.get(1).map(|a| a.0).unwrap_or(0);
        if !crate::kernel::futex::is_wait(op) {
            return Verdict::Other("futex operation that is not a wait");
        }
        return match facts.and_then(|p| p.futex(addr)).and_then(|f| f.owner) {
            Some(owner) if owner != t.tid => Verdict::WaitsFor(owner),
            Some(_) => Verdict::Stuck("waits for a lock it holds itself".into()),
            None => Verdict::Idle("futex wait with no owner (condition variable, semaphore)"),
        };
    }
    Verdict::Other("call not in the watchdog's table")
}

/// The threads among `verdicts` that are stuck, with the reason: [`Verdict::Stuck`] ones, and
/// lock waiters whose chain of owners ends at a stuck thread or goes round in a cycle (a
/// deadlock). An owner that is not in `verdicts` (it ran recently) is not stuck.
pub fn stuck(verdicts: &BTreeMap<Tid, Verdict>) -> BTreeMap<Tid, String> {
    let mut out = BTreeMap::new();
    for (&tid, v) in verdicts {
        match v {
            Verdict::Stuck(why) => {
                out.insert(tid, why.clone());
            }
            Verdict::WaitsFor(_) => {
                let mut seen = BTreeSet::from([tid]);
                let mut cur = tid;
                let why = loop {
                    match verdicts.get(&cur) {
                        Some(Verdict::WaitsFor(owner)) => {
                            if !seen.insert(*owner) {
                                break Some(format!(
                                    "waits for a lock in a cycle of lock waits (deadlock) through thread {owner}"
                                ));
                            }
                            cur = *owner;
                        }
                        Some(Verdict::Stuck(_)) => {
                            break Some(format!(
                                "waits for a lock held by thread {cur}, itself stuck"
                            ))
                        }
                        _ => break None,
                    }
                };
                if let Some(why) = why {
                    out.insert(tid, why);
                }
            }
            _ => {}
        }
    }
    out
}

/// Where a stuck thread is: its call, arguments, SP and PC. The same threads in the same
/// places are one episode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub tid: Tid,
    pub call: (i64, Vec<u64>, u64, u64),
}

impl Place {
    pub fn of(t: &Thread) -> Place {
        let call = match &t.kernel.syscall {
            SyscallState::InSyscall {
                nr, args, sp, pc, ..
            } => (*nr, args.iter().map(|a| a.0).collect(), sp.0, pc.0),
            SyscallState::Blocked { sp, pc } => (-1, Vec::new(), sp.0, pc.0),
            _ => (-2, Vec::new(), 0, 0),
        };
        Place { tid: t.tid, call }
    }
}

/// One thread's run counter as last sampled.
#[derive(Debug, Clone)]
struct Track {
    run: Option<(u64, u64)>,
    /// When the counter was first seen at its current value.
    since: Duration,
    /// Cached: the thread's call is idle (or not waiting) whatever the facts say, so it is not
    /// looked at again until it runs.
    settled: bool,
}

/// The watchdog's state across samples: run counters, the stuck threads already reported and
/// when the last watchdog dump was written. Times are offsets from any fixed origin.
#[derive(Debug)]
pub struct Watch {
    pub duration: Duration,
    pub min_gap: Duration,
    tracks: BTreeMap<Tid, Track>,
    reported: BTreeSet<Place>,
    last_dump: Option<Duration>,
}

/// A watchdog dump to write: the stuck threads and how long each has not run.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub threads: Vec<(Tid, Duration)>,
}

impl Watch {
    pub fn new(duration: Duration, min_gap: Duration) -> Watch {
        Watch {
            duration,
            min_gap,
            tracks: BTreeMap::new(),
            reported: BTreeSet::new(),
            last_dump: None,
        }
    }

    /// The sampling period: a quarter of the duration, at most 15 s (at least 1 ms).
    pub fn period(&self) -> Duration {
        (self.duration / 4).clamp(Duration::from_millis(1), Duration::from_secs(15))
    }

    /// Record one sample of `tid`'s run counter (None: unreadable; such a thread is never a
    /// candidate). A thread whose counter moved starts over: it ran.
    pub fn observe(&mut self, tid: Tid, run: Option<(u64, u64)>, now: Duration) {
        let t = self.tracks.entry(tid).or_insert(Track {
            run: None,
            since: now,
            settled: false,
        });
        if run.is_none() || t.run != run {
            *t = Track {
                run,
                since: now,
                settled: false,
            };
            self.reported.retain(|p| p.tid != tid);
        }
    }

    /// Forget threads not in `alive` (sorted), after a sample.
    pub fn retain(&mut self, alive: &[Tid]) {
        self.tracks.retain(|t, _| alive.binary_search(t).is_ok());
        self.reported
            .retain(|p| alive.binary_search(&p.tid).is_ok());
    }

    /// Threads that have not run for at least the duration and are not known to be idle: to be
    /// classified. With how long each has been still.
    pub fn candidates(&self, now: Duration) -> Vec<(Tid, Duration)> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.run.is_some() && !t.settled)
            .map(|(tid, t)| (*tid, now.saturating_sub(t.since)))
            .filter(|(_, still)| *still >= self.duration)
            .collect()
    }

    /// Take `run` as `tid`'s counter without counting it as a run, when `place` is where it was
    /// reported stuck: the watchdog's own dump moved it (a capture signal, or a ptrace stop,
    /// makes a thread blocked in a call run for a moment and go back to the same call), and
    /// that is not the thread running and getting stuck again. Elsewhere, or unreadable, the
    /// next sample sees it as having run.
    pub fn absorb(&mut self, tid: Tid, run: Option<(u64, u64)>, place: &Place) {
        if run.is_none() || place.tid != tid || !self.reported.contains(place) {
            return;
        }
        if let Some(t) = self.tracks.get_mut(&tid) {
            t.run = run;
        }
    }

    /// Do not look at `tid` again until it runs (its verdict is idle or not waiting whatever
    /// happens around it).
    pub fn settle(&mut self, tid: Tid) {
        if let Some(t) = self.tracks.get_mut(&tid) {
            t.settled = true;
        }
    }

    /// Given the stuck threads of this sample (with their places), decide whether a dump is
    /// due: some stuck thread is not part of an episode already reported, and the last
    /// watchdog dump is at least `min_gap` old. When it is, the episode is recorded as reported.
    pub fn decide(&mut self, now: Duration, stuck: &[(Place, Duration)]) -> Option<Episode> {
        let new = stuck.iter().any(|(p, _)| !self.reported.contains(p));
        if !new {
            return None;
        }
        if let Some(last) = self.last_dump {
            if now.saturating_sub(last) < self.min_gap {
                return None;
            }
        }
        self.last_dump = Some(now);
        self.reported.extend(stuck.iter().map(|(p, _)| p.clone()));
        Some(Episode {
            threads: stuck.iter().map(|(p, d)| (p.tid, *d)).collect(),
        })
    }
}

/// Whole seconds, rounded down (a thread still for 63.9 s is "stuck for 63 s").
fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// `write(fd 2 → pipe)`: a call with its fd's kind, the group key of the finding.
fn short_call(t: &Thread) -> String {
    match &t.kernel.syscall {
        SyscallState::InSyscall { name, nr, fd, .. } => {
            let name = name.clone().unwrap_or_else(|| format!("syscall_{nr}"));
            match fd {
                Some(f) => {
                    let kind = f
                        .target
                        .as_deref()
                        .map(crate::kernel::fds::kind_of)
                        .unwrap_or_else(|| "?".into());
                    format!("{}(fd {} → {})", Esc(&name), f.fd, Esc(&kind))
                }
                None => format!("{}()", Esc(&name)),
            }
        }
        _ => format!("state {}", Esc(&t.kernel.state)),
    }
}

/// The watchdog's finding for a dump of `episode`, from the dump's threads and facts (computed
/// after them): `4 threads stuck for 63 s in write(fd 2 → pipe); ...`, one evidence line per
/// thread (at most 20) with its call in words and the reason. `reasons` are the classifier's.
pub fn finding(dump: &Dump, episode: &Episode, reasons: &BTreeMap<Tid, String>) -> Finding {
    // Groups by call, in order of size.
    let mut groups: BTreeMap<String, (Vec<Tid>, Duration)> = BTreeMap::new();
    for (tid, still) in &episode.threads {
        let key = dump
            .thread(*tid)
            .map(short_call)
            .unwrap_or_else(|| "a call no longer seen".into());
        let g = groups.entry(key).or_insert((Vec::new(), *still));
        g.0.push(*tid);
        g.1 = g.1.min(*still);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1 .0.len().cmp(&a.1 .0.len()).then(a.0.cmp(&b.0)));
    let mut summary = String::new();
    for (i, (call, (tids, still))) in groups.iter().enumerate() {
        if i > 0 {
            summary.push_str("; ");
        }
        let n = tids.len();
        let _ = write!(
            summary,
            "{n} thread{} stuck for {} s in {call}",
            if n == 1 { "" } else { "s" },
            secs(*still)
        );
        if let Some(why) = tids.first().and_then(|t| reasons.get(t)) {
            let _ = write!(summary, ": {why}");
        }
    }
    let mut evidence = Vec::new();
    for (tid, still) in episode.threads.iter().take(20) {
        let Some(t) = dump.thread(*tid) else {
            evidence.push(format!("thread {tid}: gone before the dump"));
            continue;
        };
        let _ = still;
        evidence.push(format!(
            "{} ({}), state {}: {} - not run for {} s{}",
            Esc(t.display_name()),
            tid,
            Esc(&t.kernel.state),
            syscall_in(&t.kernel.syscall, dump.process.as_ref()),
            secs(*still),
            reasons
                .get(tid)
                .map(|r| format!("; {r}"))
                .unwrap_or_default()
        ));
    }
    if episode.threads.len() > 20 {
        evidence.push(format!("... and {} more", episode.threads.len() - 20));
    }
    Finding {
        kind: FINDING_KIND.into(),
        summary,
        threads: episode.threads.iter().map(|(t, _)| *t).collect(),
        evidence,
    }
}

/// What the watchdog found in one sample: the episode to dump and why each thread is stuck.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub episode: Episode,
    pub reasons: BTreeMap<Tid, String>,
}

/// The watchdog's sampling of one process (`/proc/self` in the dumper, `/proc/PID` in
/// `stackdump watch`): each thread's run counter read through a kept-open `schedstat` fd (one
/// `pread` per thread per sample), and only the threads still for the whole duration read
/// further (their kernel view; the process facts only when their calls need them, see
/// [`needs_facts`]).
pub struct Sampler {
    pub watch: Watch,
    reader: TaskReader,
    facts: facts::Options,
    /// Run counters kept open, at most `max_open` (past that, opened and closed each sample).
    counters: BTreeMap<Tid, RunCounter>,
    max_open: usize,
    /// A thread never sampled (the dump thread itself: it is busy sampling).
    skip: Option<Tid>,
    origin: Instant,
}

impl Sampler {
    /// `max_open`: how many fds the sampler may keep open (mind RLIMIT_NOFILE).
    pub fn new(watch: Watch, facts: facts::Options, max_open: usize, skip: Option<Tid>) -> Sampler {
        let dir = match facts.vantage {
            Vantage::Inside => PathBuf::from("/proc/self"),
            Vantage::Outside(pid) => PathBuf::from(format!("/proc/{pid}")),
        };
        Sampler {
            watch,
            reader: TaskReader::new(dir),
            facts,
            counters: BTreeMap::new(),
            max_open,
            skip,
            origin: Instant::now(),
        }
    }

    /// How many run counters are kept open.
    pub fn open_counters(&self) -> usize {
        self.counters.len()
    }

    /// One sample: every thread's run counter, then the candidates classified. Returns the
    /// alarm when a dump is due. An error means the process is gone (its task list cannot be
    /// read).
    pub fn sample(&mut self) -> std::io::Result<Option<Alarm>> {
        let now = self.origin.elapsed();
        let tids = self.reader.tids()?;
        for &tid in &tids {
            if Some(tid) == self.skip {
                continue;
            }
            let mut run = self.counters.get(&tid).and_then(RunCounter::read);
            if run.is_none() {
                // New, or a tid reused by a new thread (the old fd then fails): open afresh.
                self.counters.remove(&tid);
                if let Some(c) = self.reader.run_counter(tid) {
                    run = c.read();
                    if run.is_some() && self.counters.len() < self.max_open {
                        self.counters.insert(tid, c);
                    }
                }
            }
            self.watch.observe(tid, run, now);
        }
        self.counters.retain(|t, _| tids.binary_search(t).is_ok());
        self.watch.retain(&tids);
        let candidates = self.watch.candidates(now);
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut threads = Vec::with_capacity(candidates.len());
        let mut still = BTreeMap::new();
        for (tid, d) in candidates {
            let Ok((name, mut kernel, _)) = self.reader.kernel_view(tid) else {
                continue;
            };
            self.reader.resolve_fd(&mut kernel.syscall);
            still.insert(tid, d);
            threads.push(Thread::kernel_only(tid, name, kernel));
        }
        let facts = threads
            .iter()
            .any(needs_facts)
            .then(|| facts::gather(&sample_dump(&self.facts, threads.clone()), &self.facts).0);
        let mut verdicts = BTreeMap::new();
        for t in &threads {
            let v = classify(t, facts.as_ref());
            if matches!(v, Verdict::Idle(_) | Verdict::Other(_)) {
                self.watch.settle(t.tid);
            }
            verdicts.insert(t.tid, v);
        }
        let reasons = stuck(&verdicts);
        let places: Vec<(Place, Duration)> = threads
            .iter()
            .filter(|t| reasons.contains_key(&t.tid))
            .map(|t| (Place::of(t), still[&t.tid]))
            .collect();
        Ok(self
            .watch
            .decide(now, &places)
            .map(|episode| Alarm { episode, reasons }))
    }
}

impl Sampler {
    /// After the dump of `alarm` was taken: its threads' counters are read again and, for the
    /// threads still in the place they were reported stuck in, taken as they are
    /// ([`Watch::absorb`]). Without this, a dump that signals or stops a stuck thread makes it
    /// look as if it ran, and the same episode is reported again after the minimum gap.
    ///
    /// A thread still runnable (finishing its capture handler) is looked at again, a few times
    /// 2 ms apart, so that its counter is read once it is back asleep.
    pub fn after_dump(&mut self, alarm: &Alarm) {
        for &(tid, _) in &alarm.episode.threads {
            for attempt in 0..5 {
                let Ok((name, kernel, _)) = self.reader.kernel_view(tid) else {
                    break;
                };
                if kernel.state == "R" && attempt < 4 {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                // Read after the view: asleep in its call, the counter cannot move meanwhile.
                let run = match self.counters.get(&tid) {
                    Some(c) => c.read(),
                    None => self.reader.run_counter(tid).and_then(|c| c.read()),
                };
                let t = Thread::kernel_only(tid, name, kernel);
                self.watch.absorb(tid, run, &Place::of(&t));
                break;
            }
        }
    }
}

/// A dump holding only `threads`, for gathering the facts their calls need.
fn sample_dump(opts: &facts::Options, threads: Vec<Thread>) -> Dump {
    Dump {
        format: FORMAT.into(),
        pid: match opts.vantage {
            Vantage::Outside(pid) => pid,
            Vantage::Inside => Pid(std::process::id() as i32),
        },
        comm: String::new(),
        exe: String::new(),
        cmdline: String::new(),
        time: String::new(),
        trigger: Trigger {
            signal: "watchdog".into(),
            signo: 0,
            sender_pid: None,
            sender_uid: None,
            request: None,
            coalesced: Vec::new(),
            watchdog: None,
        },
        capture: CaptureStats::default(),
        threads,
        findings: Vec::new(),
        process: None,
        errors: Vec::new(),
        host: None,
    }
}

/// The `trigger.watchdog` of a dump written for `alarm`.
pub fn trigger_of(alarm: &Alarm, duration: Duration) -> WatchdogTrigger {
    WatchdogTrigger {
        watch_ms: duration.as_millis() as u64,
        threads: alarm
            .episode
            .threads
            .iter()
            .map(|(tid, d)| StuckThread {
                tid: *tid,
                stuck_ms: d.as_millis() as u64,
                reason: alarm.reasons.get(tid).cloned().unwrap_or_default(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diagnose::tests::{dump, in_syscall, thread};
    use crate::model::{Addr, FutexFacts, PipeFacts};

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn in_state(mut t: Thread, state: &str) -> Thread {
        t.kernel.state = state.into();
        t
    }

    fn write_pipe() -> Thread {
        thread(
            1,
            "w",
            in_syscall("write", [2, 0, 301, 0, 0, 0], Some((2, "pipe:[77]"))),
            Some("pipe_write"),
        )
    }

    fn pipe_facts(full: bool) -> ProcessFacts {
        ProcessFacts {
            pipes: vec![PipeFacts {
                inode: 77,
                queued: Some(if full { 65536 } else { 10 }),
                capacity: Some(65536),
                full,
                ..PipeFacts::default()
            }],
            ..ProcessFacts::default()
        }
    }

    #[test]
    fn table_writes() {
        let full = pipe_facts(true);
        assert!(
            matches!(classify(&write_pipe(), Some(&full)), Verdict::Stuck(w) if w.contains("65536 of 65536"))
        );
        // The writer sleeping in pipe_write is enough when the level is unknown.
        assert!(matches!(classify(&write_pipe(), None), Verdict::Stuck(_)));
        // A pipe with room and no writer in pipe_write: not stuck.
        let mut t = write_pipe();
        t.kernel.wchan = None;
        assert_eq!(
            classify(&t, Some(&pipe_facts(false))),
            Verdict::Other("pipe with room")
        );
        let sock = thread(
            2,
            "s",
            in_syscall("sendto", [5, 0, 10, 0, 0, 0], Some((5, "socket:[9]"))),
            None,
        );
        assert!(matches!(classify(&sock, None), Verdict::Stuck(_)));
        let tty = thread(
            3,
            "t",
            in_syscall("write", [1; 6], Some((1, "/dev/pts/3"))),
            None,
        );
        assert!(matches!(classify(&tty, None), Verdict::Stuck(_)));
        assert!(needs_facts(&write_pipe()));
    }

    #[test]
    fn table_idle_calls_are_idle_whatever_the_fd() {
        for (call, fd) in [
            ("epoll_wait", Some((3, "anon_inode:[eventpoll]"))),
            ("poll", None),
            ("accept4", Some((4, "socket:[1]"))),
            ("read", Some((5, "socket:[2]"))),
            ("read", Some((6, "pipe:[3]"))),
            ("recvfrom", Some((5, "socket:[2]"))),
            ("nanosleep", None),
            ("clock_nanosleep", None),
            ("rt_sigtimedwait", None),
            ("wait4", None),
        ] {
            let t = thread(1, "i", in_syscall(call, [0; 6], fd), None);
            assert!(matches!(classify(&t, None), Verdict::Idle(_)), "{call}");
            assert!(!needs_facts(&t), "{call}");
        }
    }

    #[test]
    fn table_state_d_and_sync_are_stuck() {
        let t = in_state(
            thread(
                1,
                "r",
                in_syscall("read", [5; 6], Some((5, "/mnt/fuse/f"))),
                None,
            ),
            "D",
        );
        assert!(matches!(classify(&t, None), Verdict::Stuck(w) if w.contains("state D")));
        assert!(!needs_facts(&t));
        let t = thread(
            1,
            "f",
            in_syscall("fdatasync", [5; 6], Some((5, "/var/db"))),
            None,
        );
        assert!(matches!(classify(&t, None), Verdict::Stuck(_)));
        // Runnable, or in user space: not waiting at all.
        let t = in_state(thread(1, "b", SyscallState::Running, None), "R");
        assert!(matches!(classify(&t, None), Verdict::Other(_)));
        let t = thread(1, "x", in_syscall("ioctl", [0; 6], None), None);
        assert!(matches!(classify(&t, None), Verdict::Other(_)));
    }

    fn futex_wait(tid: i32, addr: u64) -> Thread {
        thread(
            tid,
            "l",
            in_syscall("futex", [addr, 128, 2, 0, 0, 0], None),
            None,
        )
    }

    fn owned(addr: u64, owner: Option<i32>) -> FutexFacts {
        FutexFacts {
            addr: Addr(addr),
            op: "FUTEX_WAIT_PRIVATE".into(),
            owner: owner.map(Tid),
            ..FutexFacts::default()
        }
    }

    #[test]
    fn table_futex_waits_and_lock_chains() {
        let facts = ProcessFacts {
            futexes: vec![
                owned(0x10, None),
                owned(0x20, Some(1)),
                owned(0x30, Some(5)),
                owned(0x40, Some(4)),
            ],
            ..ProcessFacts::default()
        };
        // A condition variable: idle.
        assert!(matches!(
            classify(&futex_wait(2, 0x10), Some(&facts)),
            Verdict::Idle(_)
        ));
        assert_eq!(
            classify(&futex_wait(3, 0x20), Some(&facts)),
            Verdict::WaitsFor(Tid(1))
        );
        let mut v = BTreeMap::new();
        v.insert(Tid(1), classify(&write_pipe(), None)); // stuck
        v.insert(Tid(2), classify(&futex_wait(2, 0x10), Some(&facts))); // idle
        v.insert(Tid(3), classify(&futex_wait(3, 0x20), Some(&facts))); // waits for 1
        v.insert(Tid(4), classify(&futex_wait(4, 0x30), Some(&facts))); // 4 -> 5
        v.insert(Tid(5), classify(&futex_wait(5, 0x40), Some(&facts))); // 5 -> 4: deadlock
        v.insert(Tid(6), Verdict::WaitsFor(Tid(99))); // owner ran recently
        let st = stuck(&v);
        assert_eq!(
            st.keys().copied().collect::<Vec<_>>(),
            vec![Tid(1), Tid(3), Tid(4), Tid(5)]
        );
        assert!(st[&Tid(3)].contains("thread 1"));
        assert!(st[&Tid(4)].contains("deadlock"));
    }

    #[test]
    fn period_is_a_quarter_at_most_15s() {
        assert_eq!(Watch::new(s(60), s(600)).period(), s(15));
        assert_eq!(Watch::new(s(4), s(600)).period(), s(1));
        assert_eq!(Watch::new(s(3600), s(600)).period(), s(15));
    }

    #[test]
    fn candidates_need_a_still_counter_for_the_duration() {
        let mut w = Watch::new(s(60), s(600));
        w.observe(Tid(1), Some((1, 1)), s(0));
        w.observe(Tid(2), Some((1, 1)), s(0));
        w.observe(Tid(3), None, s(0));
        w.observe(Tid(1), Some((1, 1)), s(30));
        w.observe(Tid(2), Some((2, 2)), s(30)); // ran
        assert!(w.candidates(s(59)).is_empty());
        assert_eq!(w.candidates(s(60)), vec![(Tid(1), s(60))]);
        assert_eq!(w.candidates(s(90)), vec![(Tid(1), s(90)), (Tid(2), s(60))]);
        w.settle(Tid(1));
        assert_eq!(w.candidates(s(90)), vec![(Tid(2), s(60))]);
        w.retain(&[Tid(1)]);
        assert!(w.candidates(s(200)).is_empty());
        // running again un-settles it
        w.observe(Tid(1), Some((5, 5)), s(200));
        assert_eq!(w.candidates(s(260)), vec![(Tid(1), s(60))]);
    }

    #[test]
    fn one_dump_per_episode_and_a_minimum_gap() {
        let mut w = Watch::new(s(60), s(600));
        let p = |tid: i32, sp: u64| Place {
            tid: Tid(tid),
            call: (1, vec![2, 0, 301], sp, 0x40),
        };
        w.observe(Tid(1), Some((1, 1)), s(0));
        w.observe(Tid(2), Some((1, 1)), s(0));
        let e = w.decide(s(60), &[(p(1, 8), s(60))]).unwrap();
        assert_eq!(e.threads, vec![(Tid(1), s(60))]);
        // The same thread in the same place: the same episode.
        assert!(w.decide(s(75), &[(p(1, 8), s(75))]).is_none());
        // A new thread joins, but within the gap: no dump yet...
        assert!(w
            .decide(s(90), &[(p(1, 8), s(90)), (p(2, 8), s(60))])
            .is_none());
        // ...until the gap has passed, if it is still stuck.
        let e = w
            .decide(s(660), &[(p(1, 8), s(660)), (p(2, 8), s(630))])
            .unwrap();
        assert_eq!(e.threads.len(), 2);
        assert!(w.decide(s(2000), &[(p(1, 8), s(2000))]).is_none());
        // Thread 1 runs and gets stuck again: a new episode (after the gap).
        w.observe(Tid(1), Some((9, 9)), s(2001));
        assert!(w.decide(s(2100), &[(p(1, 8), s(99))]).is_some());
        // Zero gap: only the episode rule.
        let mut w = Watch::new(s(1), Duration::ZERO);
        assert!(w.decide(s(1), &[(p(1, 8), s(1))]).is_some());
        assert!(w.decide(s(2), &[(p(1, 8), s(2))]).is_none());
        assert!(w.decide(s(2), &[(p(1, 16), s(2))]).is_some());
    }

    #[test]
    fn the_watchdogs_own_dump_does_not_make_a_new_episode() {
        let mut w = Watch::new(s(60), Duration::ZERO);
        let p = |sp: u64| Place {
            tid: Tid(1),
            call: (1, vec![2, 0, 301], sp, 0x40),
        };
        w.observe(Tid(1), Some((1, 1)), s(0));
        assert!(w.decide(s(60), &[(p(8), s(60))]).is_some());
        // The dump signalled it: its counter moved, it is back in the same place.
        w.absorb(Tid(1), Some((2, 2)), &p(8));
        w.observe(Tid(1), Some((2, 2)), s(75));
        assert_eq!(w.candidates(s(75)), vec![(Tid(1), s(75))]);
        assert!(w.decide(s(75), &[(p(8), s(75))]).is_none());
        // Elsewhere after the dump: not absorbed, it ran.
        w.absorb(Tid(1), Some((3, 3)), &p(16));
        w.observe(Tid(1), Some((3, 3)), s(90));
        assert!(w.candidates(s(120)).is_empty());
        assert_eq!(w.candidates(s(150)), vec![(Tid(1), s(60))]);
        // A thread that really ran and is stuck again in the same place: a new episode.
        assert!(w.decide(s(150), &[(p(8), s(60))]).is_some());
    }

    #[test]
    fn the_finding_leads_with_count_duration_and_call() {
        let mut threads: Vec<Thread> = (1..=4)
            .map(|i| {
                let mut t = write_pipe();
                t.tid = Tid(i);
                t
            })
            .collect();
        threads.push(futex_wait(9, 0x20));
        let mut d = dump(threads);
        d.process = Some(pipe_facts(true));
        let ep = Episode {
            threads: vec![
                (Tid(1), s(63)),
                (Tid(2), s(64)),
                (Tid(3), s(70)),
                (Tid(4), s(63)),
                (Tid(9), s(61)),
            ],
        };
        let mut reasons = BTreeMap::new();
        for i in 1..=4 {
            reasons.insert(
                Tid(i),
                "pipe full (65536 of 65536 bytes queued)".to_string(),
            );
        }
        let f = finding(&d, &ep, &reasons);
        assert_eq!(f.kind, FINDING_KIND);
        assert!(
            f.summary
                .starts_with("4 threads stuck for 63 s in write(fd 2 → pipe): pipe full"),
            "{}",
            f.summary
        );
        assert!(
            f.summary.contains("; 1 thread stuck for 61 s in futex()"),
            "{}",
            f.summary
        );
        assert_eq!(f.threads.len(), 5);
        assert!(
            f.evidence[0].contains("write(fd 2 → pipe:[77]"),
            "{}",
            f.evidence[0]
        );
    }
}
