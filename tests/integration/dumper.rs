//! The preload dumper under pressure and under odd configurations, end to end: many triggers in
//! a row (RSS bounded), bursts (standard and real-time triggers, and more than the trigger queue
//! holds), request ids, the trigger chosen by name, configurations that must leave the host
//! untouched, a thread that cannot answer (ptrace-stopped), format knobs, the main thread, a
//! dump directory that does not exist, and an executable replaced on disk while it runs. Most
//! run in both capture modes: the default (threads blocked in a system call copied without a
//! signal) and `STACKDUMP_CAPTURE=signal`.
//!
//! Every dump is checked for the truth of each thread's status ([`check_statuses`]): e.g. no
//! thread is `no_response` unless it was sent the capture signal.
//!
//! Every target is a private copy of `tests/targets/c/parked.c`'s binary with `libstackdump.so`
//! preloaded (see [`private_copy`]). Waits are handshakes
//! on observable facts (a file appearing, a bit in `/proc/PID/status`, the dump thread back in
//! its idle wait), each bounded by the test's deadline; no test sleeps a fixed time.
//!
//! The dump thread's idle wait is `rt_sigtimedwait(&{trigger, capture signal}, &info, NULL, 8,
//! served)`: the library passes `served`, the number of triggers it has recorded and served so
//! far, in the fifth argument register, which that system call ignores and
//! `/proc/PID/task/TID/syscall` shows. While it sleeps there with `served == n`, every one of the
//! first `n` triggers recorded (by the trigger handler on a host thread, or by the dump thread
//! itself for a trigger it took in that wait) has been served by a finished dump (see
//! [`dumper_idle`]).

use crate::examples::{parked_names, parked_syscalls};
use crate::util::*;
use stackdump_core::model::{CaptureMethod, CaptureStatus, Thread, Tid};

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Workers of `parked` (2 readers, 2 sleepers, 2 waiters) plus `masked`, main and `stackdump`.
const WORKERS: usize = 6;

/// A deadline for a whole test.
fn test_deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Spawn `parked WORKERS` with the library preloaded and `env`, and wait for READY.
fn spawn_parked(env: &[(&str, &str)], deadline: Instant) -> Target {
    let mut t = Target::spawn(parked_cmd(env), Preload::Yes);
    t.wait_ready(deadline);
    t
}

fn parked_cmd(env: &[(&str, &str)]) -> Command {
    // A private copy: a rebuild of the shared binary must not pull it from under the target.
    let mut cmd = Command::new(private_copy(&c_target("parked")));
    cmd.arg(WORKERS.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn usr1() -> i32 {
    libc::SIGUSR1
}

/// The default capture signal, RTMAX-3.
fn capture_signo() -> i32 {
    libc::SIGRTMAX() - 3
}

/// How the test wants stacks taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// `STACKDUMP_CAPTURE=signal`: every thread is sent the capture signal.
    Signal,
    /// The default: threads blocked in a system call are copied without a signal.
    Auto,
}

impl Capture {
    /// The environment that selects this mode.
    fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Capture::Signal => &[("STACKDUMP_CAPTURE", "signal")],
            Capture::Auto => &[],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dumps on disk

impl Dumped {
    /// Every request id this dump serves: the one that names it, then the coalesced ones.
    fn requests(&self) -> Vec<u64> {
        let tr = &self.dump.trigger;
        tr.request
            .into_iter()
            .chain(tr.coalesced.iter().filter_map(|c| c.request))
            .collect()
    }
}

/// Everything in the dump dir (names), for messages.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !is_library_cache(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Wait until at least `n` JSON dumps of the target exist; return them (sorted by name).
#[track_caller]
fn wait_json_count(t: &mut Target, n: usize, deadline: Instant) -> Vec<PathBuf> {
    let dir = t.dump_dir();
    let mut files = Vec::new();
    let ok = poll_until(deadline, || {
        files = dump_files(&dir, t.pid, "json");
        files.len() >= n
    });
    if !ok {
        let alive = t.exited();
        panic!(
            "waited for {n} JSON dump(s), found {} before the deadline (exit status {alive:?})\n{}",
            files.len(),
            t.describe()
        );
    }
    files
}

/// `stackdump-<pid>-<time>Z-r<id>.<ext>` of the target, if it exists.
fn request_file(t: &Target, id: u32, ext: &str) -> Option<PathBuf> {
    let suffix = format!("-r{id}.{ext}");
    dump_files(&t.dump_dir(), t.pid, ext)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&suffix))
}

/// Wait for the dump that serves request `id` (its own file or a link).
#[track_caller]
fn wait_request(t: &mut Target, id: u32, ext: &str, deadline: Instant) -> PathBuf {
    let mut found = None;
    poll_until(deadline, || {
        found = request_file(t, id, ext);
        found.is_some()
    });
    match found {
        Some(p) => p,
        None => {
            let alive = t.exited();
            panic!(
                "no stackdump-{}-*-r{id}.{ext} before the deadline (exit status {alive:?})\n{}",
                t.pid,
                t.describe()
            )
        }
    }
}

/// Wait until signal `signo` is no longer pending for the process (`ShdPnd`): the kernel has
/// handed the last one to a thread. A standard signal sent while one is pending is merged into
/// it by the kernel (its sigqueue value is lost), so request ids are sent only after this.
#[track_caller]
fn wait_not_pending(t: &Target, signo: i32, deadline: Instant) {
    let pending = || status_mask(t.pid, "ShdPnd").is_some_and(|m| mask_has(m, signo));
    assert!(
        poll_until(deadline, || !pending()),
        "signal {signo} still pending (ShdPnd {:#x?}) at the deadline\n{}",
        status_mask(t.pid, "ShdPnd"),
        t.describe()
    );
}

/// No temporary file (a name starting with `.`, or ending with `.tmp`) in the dump dir.
#[track_caller]
fn assert_no_temp_files(t: &Target) {
    for name in listing(&t.dump_dir()) {
        assert!(
            !name.starts_with('.') && !name.ends_with(".tmp"),
            "temporary file {name:?} left in the dump dir\n{}",
            t.describe()
        );
    }
}

/// The file is a regular file with mode 0600.
#[track_caller]
fn assert_private_file(t: &Target, path: &Path) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), t.describe()));
    assert!(meta.is_file(), "{} is not a regular file", path.display());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{} has mode {:o}",
        path.display(),
        meta.permissions().mode() & 0o777
    );
}

/// The stack of a worker of `parked`, innermost first: `park_*`, `level_20` … `level_01`,
/// `worker_main`, each with `parked.c:<line>`, not truncated. `Some(why)` otherwise.
fn worker_stack_problem(th: &Thread) -> Option<String> {
    if th.capture != CaptureStatus::Ok {
        return Some(format!("capture is {:?}, not ok", th.capture));
    }
    let kind = &th.name[..th.name.find('-').unwrap_or(th.name.len())];
    let parking = match kind {
        "reader" => "park_read",
        "sleeper" => "park_sleep",
        "waiter" => "park_cond",
        other => return Some(format!("not a worker: {other}")),
    };
    let mut expected = vec![parking.to_string()];
    expected.extend((1..=20).rev().map(|n| format!("level_{n:02}")));
    expected.push("worker_main".to_string());
    let Some(start) = th
        .frames
        .iter()
        .position(|f| function_is(f.function.as_deref(), parking))
    else {
        return Some(format!("no {parking} frame"));
    };
    let window = &th.frames[start..];
    if window.len() < expected.len() {
        return Some(format!(
            "stack ends {} frames after {parking}",
            window.len()
        ));
    }
    for (frame, want) in window.iter().zip(&expected) {
        if !function_is(frame.function.as_deref(), want) {
            return Some(format!(
                "expected {want} in sequence, found {:?}",
                frame.function
            ));
        }
        if !frame
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("parked.c"))
            || frame.line.is_none()
        {
            return Some(format!(
                "{want} has no parked.c:<line> (file {:?}, line {:?})",
                frame.file, frame.line
            ));
        }
    }
    if th.truncated {
        return Some("marked truncated although it unwound to worker_main".into());
    }
    None
}

/// A complete dump of `parked`: the right threads; every worker (but `except`) captured with
/// its whole stack; `masked` copied without a signal (the default, `STACKDUMP_CAPTURE=auto`) or
/// reported as blocking the signal (`STACKDUMP_CAPTURE=signal`, told by the dump's `method`);
/// the dumper's own thread marked.
#[track_caller]
fn check_complete(t: &Target, d: &Dumped, except: &[Tid]) {
    let ctx = || d.context(t);
    let dump = &d.dump;
    let signal_mode = dump.capture.method == CaptureMethod::Signal;
    assert_eq!(dump.format, "stackdump/1", "{}", ctx());
    assert_eq!(dump.pid.0, t.pid, "{}", ctx());
    assert_eq!(dump.capture.threads, dump.threads.len(), "{}", ctx());
    let names: BTreeSet<&str> = dump.threads.iter().map(|th| th.name.as_str()).collect();
    let mut expected: BTreeSet<String> = parked_names(WORKERS).into_iter().collect();
    expected.insert("parked".into());
    expected.insert("stackdump".into());
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(names, expected, "thread names\n{}", ctx());
    assert_eq!(dump.threads.len(), WORKERS + 3, "{}", ctx());
    check_statuses(d, &ctx);

    for name in parked_names(WORKERS) {
        let th = d.thread(t, &name);
        if except.contains(&th.tid) {
            continue;
        }
        if name == "masked" {
            match signal_mode {
                // It blocks every signal: not interrupted, kernel view only.
                true => assert!(
                    th.capture == CaptureStatus::SignalBlocked && th.frames.is_empty(),
                    "masked, STACKDUMP_CAPTURE=signal: expected signal_blocked without frames\n{}",
                    ctx()
                ),
                // Blocked in read: copied without a signal, mask or not.
                false => assert!(
                    th.capture == CaptureStatus::Ok
                        && !th.signalled
                        && !th.truncated
                        && th
                            .frames
                            .iter()
                            .any(|f| function_is(f.function.as_deref(), "masked_main")),
                    "masked: expected a complete stack through masked_main, copied without a \
                     signal\n{}",
                    ctx()
                ),
            }
            continue;
        }
        if let Some(why) = worker_stack_problem(th) {
            panic!("{name} ({}): {why}\n{}", th.tid, ctx());
        }
    }
    let main = dump
        .thread(Tid(t.pid))
        .unwrap_or_else(|| panic!("no main thread (tid {}) in the dump\n{}", t.pid, ctx()));
    assert_eq!(main.name, "parked", "{}", ctx());
    let dumper = d.thread(t, "stackdump");
    assert_eq!(dumper.capture, CaptureStatus::Dumper, "{}", ctx());
}

/// What every dump must say truthfully about each thread: `no_response` only for a thread
/// that was sent the capture signal; `signal_blocked` only for one that was not; `ok` only with
/// frames; and the counters agree with the threads.
#[track_caller]
fn check_statuses(d: &Dumped, ctx: &dyn Fn() -> String) {
    let dump = &d.dump;
    for th in &dump.threads {
        let who = format!("{} ({})", th.name, th.tid);
        match th.capture {
            CaptureStatus::NoResponse => assert!(
                th.signalled,
                "{who} is reported as not answering the capture signal, but it was never sent \
                 one (signalled = false)\n{}",
                ctx()
            ),
            CaptureStatus::SignalBlocked => assert!(
                !th.signalled,
                "{who} blocks the capture signal but is marked signalled\n{}",
                ctx()
            ),
            CaptureStatus::Ok => assert!(
                !th.frames.is_empty(),
                "{who} is ok without frames\n{}",
                ctx()
            ),
            _ => {}
        }
    }
    let ok = dump
        .threads
        .iter()
        .filter(|th| th.capture == CaptureStatus::Ok)
        .count();
    let signalled = dump.threads.iter().filter(|th| th.signalled).count();
    assert_eq!(dump.capture.captured, ok, "capture.captured\n{}", ctx());
    assert_eq!(
        dump.capture.signalled,
        signalled,
        "capture.signalled\n{}",
        ctx()
    );
}

// ---------------------------------------------------------------------------------------------
// The dump thread's idle wait

/// Wait until the dump thread sleeps in its idle wait and `cond` holds for the number of
/// triggers it has served ([`dumper_idle`]); return that number.
#[track_caller]
fn wait_dumper_idle(
    t: &Target,
    dumper: Tid,
    what: &str,
    deadline: Instant,
    mut cond: impl FnMut(u64) -> bool,
) -> u64 {
    let mut last = None;
    let ok = poll_until(deadline, || {
        last = dumper_idle(t, dumper);
        last.is_some_and(&mut cond)
    });
    assert!(
        ok,
        "the dump thread ({dumper}) did not reach its idle wait ({what}); last seen served = \
         {last:?}, kernel view {:?}\n{}",
        t.kernel_view(dumper),
        t.describe()
    );
    last.expect("checked above")
}

// ---------------------------------------------------------------------------------------------
// 1. Many triggers in a row

#[test]
fn hundred_consecutive_triggers_give_hundred_complete_dumps_and_rss_stays_bounded() {
    hundred_consecutive_triggers(Capture::Auto);
}

#[test]
fn hundred_consecutive_triggers_with_capture_signals_only() {
    // Every thread is sent the capture signal in every dump: the slot table and the signal path
    // are exercised 100 times.
    hundred_consecutive_triggers(Capture::Signal);
}

#[track_caller]
fn hundred_consecutive_triggers(mode: Capture) {
    const ROUNDS: usize = 100;
    let deadline = test_deadline(300);
    let started = Instant::now();
    let mut t = spawn_parked(mode.env(), deadline);
    let dumper = t.tid_of("stackdump");
    wait_dumper_idle(&t, dumper, "before any trigger", deadline, |n| n == 0);

    let mut rss_after_10 = 0;
    for n in 1..=ROUNDS {
        send_signal(t.pid, "USR1");
        let files = wait_json_count(&mut t, n, deadline);
        assert_eq!(
            files.len(),
            n,
            "round {n}: one trigger, one dump expected, found {} dumps\n{}",
            files.len(),
            t.describe()
        );
        if n == 10 {
            // Quiesce (the dump thread back in its idle wait) before measuring.
            wait_dumper_idle(&t, dumper, "after dump 10", deadline, |n| n == 10);
            rss_after_10 = vm_rss_kib(t.pid);
        }
    }
    wait_dumper_idle(&t, dumper, "after dump 100", deadline, |n| {
        n == ROUNDS as u64
    });
    let rss_after_100 = vm_rss_kib(t.pid);
    let triggered_in = started.elapsed();

    let files = dump_files(&t.dump_dir(), t.pid, "json");
    assert_eq!(files.len(), ROUNDS, "{}", t.describe());
    for (i, path) in files.iter().enumerate() {
        let d = Dumped::read(path);
        check_complete(&t, &d, &[]);
        // With copies without a signal (Auto), a thread blocked in a system call at the kernel
        // view is never signalled. The main thread takes each `kill` (its handler interrupts
        // its pause): the dump waits up to 10 ms for it to be back in pause, and under the
        // parallel tests' load it may still be running then; a running thread is signalled,
        // as it must be. So only the blocked ones are held to "not signalled".
        let signalled = mode == Capture::Signal;
        let blocked = |th: &&stackdump_core::model::Thread| {
            matches!(
                th.kernel.syscall,
                stackdump_core::model::SyscallState::InSyscall { .. }
            )
        };
        assert!(
            d.dump
                .threads
                .iter()
                .filter(|th| th.name != "stackdump" && th.name != "masked")
                .filter(|th| signalled || blocked(th))
                .all(|th| th.signalled == signalled),
            "{mode:?}: every captured thread (with Auto: every one blocked in a system call) \
             signalled = {signalled}\n{}",
            d.context(&t)
        );
        if !signalled {
            let workers_blocked = d
                .dump
                .threads
                .iter()
                .filter(|th| {
                    ["reader", "sleeper", "waiter"]
                        .iter()
                        .any(|w| th.name.starts_with(w))
                })
                .filter(blocked)
                .count();
            assert_eq!(
                workers_blocked,
                6,
                "the parked workers must be seen blocked (copied without a signal)\n{}",
                d.context(&t)
            );
        }
        assert_eq!(
            d.dump.capture.sequence,
            i as u64 + 1,
            "dumps sorted by name must have sequence 1..{ROUNDS}\n{}",
            d.context(&t)
        );
        assert!(
            d.dump.trigger.coalesced.is_empty() && d.dump.trigger.request.is_none(),
            "one kill, one dump: nothing coalesced, no request id\n{}",
            d.context(&t)
        );
        assert_eq!(
            d.dump.trigger.sender_pid,
            Some(std::process::id() as i32),
            "{}",
            d.context(&t)
        );
        assert!(
            path.with_extension("txt").is_file(),
            "no text twin of {}\n{}",
            path.display(),
            t.describe()
        );
        assert_private_file(&t, path);
    }
    assert_eq!(dump_files(&t.dump_dir(), t.pid, "txt").len(), ROUNDS);
    assert_no_temp_files(&t);
    t.assert_alive();

    let growth = rss_after_100 as i64 - rss_after_10 as i64;
    println!(
        "{mode:?}: 100 triggers in {triggered_in:?}: VmRSS after dump 10 = {rss_after_10} KiB, after dump \
         100 = {rss_after_100} KiB, growth {growth} KiB"
    );
    assert!(
        growth < 8 * 1024,
        "RSS grew by {growth} KiB between dump 10 ({rss_after_10} KiB) and dump 100 \
         ({rss_after_100} KiB): more than 8 MiB\n{}",
        t.describe()
    );
    assert_eq!(t.stdout(), vec![format!("READY {}", t.pid)]);
    assert_eq!(t.stderr(), "", "nothing may be written to stderr");
}

// ---------------------------------------------------------------------------------------------
// 2. A burst of triggers coalesces, and nothing is lost

/// Triggers a dump reports as lost to a full trigger queue (served without their request id),
/// from its `errors`; any other error fails the test.
#[track_caller]
fn dropped_triggers(t: &Target, d: &Dumped) -> u64 {
    let mut dropped = 0;
    for e in &d.dump.errors {
        match e
            .split_once(" trigger(s) arrived while the trigger queue was full")
            .and_then(|(n, _)| n.parse::<u64>().ok())
        {
            Some(n) => dropped += n,
            None => panic!("unexpected error in the dump: {e:?}\n{}", d.context(t)),
        }
    }
    dropped
}

/// Recorded triggers a dump accounts for: its first trigger (when it had one), the ones
/// coalesced into it, and the ones it reports as dropped from a full trigger queue.
fn accounted(t: &Target, d: &Dumped) -> u64 {
    let tr = &d.dump.trigger;
    u64::from(tr.sender_pid.is_some()) + tr.coalesced.len() as u64 + dropped_triggers(t, d)
}

/// Wait until the dump thread is idle, then check that the dumps on disk account for every
/// trigger it has recorded. The snapshot is consistent when the dump thread is idle with the
/// same `served` count before and after the files are read: no dump ran in between. Returns the
/// dumps (one per inode) and the count of triggers recorded.
#[track_caller]
fn settle(t: &Target, dumper: Tid, deadline: Instant) -> (Vec<Dumped>, u64) {
    let mut dumps: BTreeMap<u64, Dumped> = BTreeMap::new();
    let mut snapshot = None;
    let consistent = poll_until(deadline, || {
        let Some(before) = dumper_idle(t, dumper) else {
            return false;
        };
        for path in dump_files(&t.dump_dir(), t.pid, "json") {
            let ino = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
            dumps.entry(ino).or_insert_with(|| Dumped::read(&path));
        }
        let served: u64 = dumps.values().map(|d| accounted(t, d)).sum();
        snapshot = Some((before, served));
        dumper_idle(t, dumper) == Some(before)
    });
    assert!(
        consistent,
        "the dump thread never stayed idle long enough to read its dumps (last {snapshot:?})\n{}",
        t.describe()
    );
    let (handled, served) = snapshot.expect("set when consistent");
    if served != handled {
        let summary: Vec<String> =
            dumps
                .values()
                .map(|d| {
                    format!(
                    "  dump #{} ({}): request {:?}, first trigger {}, coalesced {}, errors {:?}",
                    d.dump.capture.sequence,
                    d.path.file_name().unwrap_or_default().to_string_lossy(),
                    d.dump.trigger.request,
                    if d.dump.trigger.sender_pid.is_some() { "yes" } else { "none" },
                    d.dump.trigger.coalesced.len(),
                    d.dump.errors
                )
                })
                .collect();
        panic!(
            "the dumps account for {served} trigger(s) but {handled} were recorded (the idle dump \
             thread's served count): {} trigger(s) lost without a trace\n{}\n{}",
            handled as i64 - served as i64,
            summary.join("\n"),
            t.describe()
        );
    }
    (dumps.into_values().collect(), handled)
}

/// What holds for the dumps of a burst: complete, numbered 1..n, all from this test.
#[track_caller]
fn check_burst_dumps(t: &Target, dumps: &[Dumped]) {
    let mut sequences: Vec<u64> = dumps.iter().map(|d| d.dump.capture.sequence).collect();
    sequences.sort();
    assert_eq!(
        sequences,
        (1..=dumps.len() as u64).collect::<Vec<_>>(),
        "sequence numbers of the dumps on disk\n{}",
        t.describe()
    );
    let me = std::process::id() as i32;
    for d in dumps {
        check_complete(t, d, &[]);
        let tr = &d.dump.trigger;
        assert!(
            tr.sender_pid == Some(me) && tr.coalesced.iter().all(|c| c.sender_pid == Some(me)),
            "every trigger came from this test (pid {me})\n{}",
            d.context(t)
        );
    }
}

/// `count` triggers as fast as possible, then one with a request id; every trigger is served.
#[track_caller]
fn burst_then_request(setting: Option<&str>, signo: i32, count: usize) {
    const REQUEST: u32 = 0x5eed_0002;
    let deadline = test_deadline(120);
    let env: Vec<(&str, &str)> = setting
        .map(|s| ("STACKDUMP_SIGNAL", s))
        .into_iter()
        .collect();
    let mut t = spawn_parked(&env, deadline);
    let dumper = t.tid_of("stackdump");
    wait_dumper_idle(&t, dumper, "before any trigger", deadline, |n| n == 0);

    let started = Instant::now();
    for i in 0..count {
        // SAFETY: kill(2) with a valid signal number.
        let rc = unsafe { libc::kill(t.pid, signo) };
        assert_eq!(rc, 0, "kill #{i}: {}", std::io::Error::last_os_error());
    }
    let realtime = signo >= libc::SIGRTMIN();
    if !realtime {
        // A standard signal does not queue: a value sent while one is pending would be merged
        // away by the kernel. Once the burst's last one was taken, the request is queued; its
        // dump drains the trigger queue, so it comes after every trigger of the burst.
        wait_not_pending(&t, signo, deadline);
    }
    sigqueue(t.pid, signo, REQUEST as usize);
    let request_path = wait_request(&mut t, REQUEST, "json", deadline);
    let (dumps, handled) = settle(&t, dumper, deadline);
    println!(
        "{count} x {} + 1 sigqueue: {handled} trigger(s) taken and recorded, {} dump(s), in \
         {:?}",
        setting.unwrap_or("USR1"),
        dumps.len(),
        started.elapsed()
    );
    let sent = count as u64 + 1;
    if realtime {
        assert_eq!(
            handled, sent,
            "real-time signals queue: each one taken and recorded once"
        );
    } else {
        assert!(
            (1..=sent).contains(&handled),
            "{handled} triggers recorded for {sent} signals"
        );
    }
    assert!(
        (1..=count + 1).contains(&dumps.len()),
        "{} dumps for {sent} triggers\n{}",
        dumps.len(),
        t.describe()
    );
    check_burst_dumps(&t, &dumps);
    for d in &dumps {
        assert_eq!(dropped_triggers(&t, d), 0, "{}", d.context(&t));
    }
    let served_request = Dumped::read(&request_path);
    assert_eq!(
        served_request.dump.trigger.request,
        Some(u64::from(REQUEST)),
        "the only request id names its dump\n{}",
        served_request.context(&t)
    );
    assert_no_temp_files(&t);
    t.assert_alive();
    assert_eq!(t.stdout(), vec![format!("READY {}", t.pid)]);
    assert_eq!(t.stderr(), "", "nothing may be written to stderr");
}

#[test]
fn burst_of_usr1_coalesces_into_complete_dumps_and_no_trigger_is_lost() {
    burst_then_request(None, libc::SIGUSR1, 50);
}

#[test]
fn burst_of_queued_realtime_triggers_coalesces_and_no_trigger_is_lost() {
    // A real-time trigger queues every signal: 51 are taken and recorded, and the dumper's own
    // queue (not the kernel) has to coalesce them.
    burst_then_request(Some("RTMIN+3"), libc::SIGRTMIN() + 3, 50);
}

#[test]
fn burst_larger_than_the_trigger_queue_loses_no_trigger_uncounted() {
    // More queued triggers than the dumper's trigger queue holds (64) while a dump runs: the
    // extra ones are served without their request ids and counted in `errors`; every trigger
    // taken is accounted for by exactly one dump.
    const COUNT: usize = 1000;
    let deadline = test_deadline(120);
    let signo = libc::SIGRTMIN() + 3;
    let mut t = spawn_parked(&[("STACKDUMP_SIGNAL", "RTMIN+3")], deadline);
    let dumper = t.tid_of("stackdump");
    wait_dumper_idle(&t, dumper, "before any trigger", deadline, |n| n == 0);
    for i in 0..COUNT {
        // SAFETY: kill(2) with a valid signal number.
        let rc = unsafe { libc::kill(t.pid, signo) };
        assert_eq!(rc, 0, "kill #{i}: {}", std::io::Error::last_os_error());
    }
    // Every queued signal has been handled once the dump thread idles having seen them all.
    wait_dumper_idle(&t, dumper, "after the burst", deadline, |n| {
        n == COUNT as u64
    });
    let (dumps, handled) = settle(&t, dumper, deadline);
    let dropped: u64 = dumps.iter().map(|d| dropped_triggers(&t, d)).sum();
    println!(
        "{COUNT} x RTMIN+3: {handled} trigger(s) taken and recorded, {} dump(s), {dropped} \
         reported as over the queue",
        dumps.len()
    );
    assert_eq!(handled, COUNT as u64);
    check_burst_dumps(&t, &dumps);
    assert_no_temp_files(&t);
    t.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// 3. Request ids: their own dump, or a link to a dump that names them

/// Both requests are served: `-r<a>` and `-r<b>` exist; one dump with a link names the other
/// request in `coalesced`; two dumps name one request each.
#[track_caller]
fn check_two_requests(t: &mut Target, a: u32, b: u32, deadline: Instant) -> &'static str {
    let pa = wait_request(t, a, "json", deadline);
    let pb = wait_request(t, b, "json", deadline);
    let (da, db) = (Dumped::read(&pa), Dumped::read(&pb));
    check_complete(t, &da, &[]);
    check_complete(t, &db, &[]);
    for p in [&pa, &pb] {
        assert_private_file(t, p);
        assert!(
            p.with_extension("txt").is_file(),
            "no text twin (or text link) of {}\n{}",
            p.display(),
            t.describe()
        );
    }
    let (ma, mb) = (
        std::fs::metadata(&pa).expect("stat"),
        std::fs::metadata(&pb).expect("stat"),
    );
    let same = ma.ino() == mb.ino() && ma.dev() == mb.dev();
    let (a, b) = (u64::from(a), u64::from(b));
    if same {
        let d = &da;
        let tr = &d.dump.trigger;
        let primary = tr.request.unwrap_or_else(|| {
            panic!(
                "a dump serving two requests has no request\n{}",
                d.context(t)
            )
        });
        let other = if primary == a { b } else { a };
        assert!(
            primary == a || primary == b,
            "request {primary} is neither {a} nor {b}\n{}",
            d.context(t)
        );
        assert!(
            tr.coalesced.iter().any(|c| c.request == Some(other)),
            "one dump, two names: trigger.coalesced must name request {other}\n{}",
            d.context(t)
        );
        assert!(
            ma.nlink() >= 2,
            "a link has nlink {}\n{}",
            ma.nlink(),
            t.describe()
        );
        // The primary name carries the primary request.
        let primary_path = if primary == a { &pa } else { &pb };
        let txt = primary_path.with_extension("txt");
        let other_txt = if primary == a { &pb } else { &pa }.with_extension("txt");
        assert_eq!(
            std::fs::metadata(&txt).map(|m| m.ino()).ok(),
            std::fs::metadata(&other_txt).map(|m| m.ino()).ok(),
            "the text file is linked too\n{}",
            t.describe()
        );
        "one dump, linked"
    } else {
        for (d, id) in [(&da, a), (&db, b)] {
            assert_eq!(
                d.requests(),
                vec![id],
                "a separate dump serves exactly its own request\n{}",
                d.context(t)
            );
        }
        assert_ne!(
            da.dump.capture.sequence, db.dump.capture.sequence,
            "two files, two dumps"
        );
        "two dumps"
    }
}

#[test]
fn two_request_ids_each_get_a_file_or_a_link_naming_the_other() {
    let deadline = test_deadline(120);
    // USR1 is a standard signal: the kernel merges a second one sent while the first is still
    // pending (and drops its value), so the second id is queued once the first was taken; the
    // dumper may or may not have started its dump by then.
    {
        let mut t = spawn_parked(&[], deadline);
        let (a, b) = (0x5eed_0031, 0x5eed_0032);
        sigqueue(t.pid, usr1(), a as usize);
        wait_not_pending(&t, usr1(), deadline);
        sigqueue(t.pid, usr1(), b as usize);
        let how = check_two_requests(&mut t, a, b, deadline);
        println!("USR1, two request ids: {how}");
        t.assert_alive();
        assert_no_temp_files(&t);
    }
    // A real-time trigger queues both: sent truly back to back.
    {
        let mut t = spawn_parked(&[("STACKDUMP_SIGNAL", "RTMIN+3")], deadline);
        let signo = libc::SIGRTMIN() + 3;
        let (a, b) = (0x5eed_0041, 0x5eed_0042);
        sigqueue(t.pid, signo, a as usize);
        sigqueue(t.pid, signo, b as usize);
        let how = check_two_requests(&mut t, a, b, deadline);
        println!("RTMIN+3, two request ids back to back: {how}");
        t.assert_alive();
        assert_no_temp_files(&t);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The trigger is chosen by name

#[test]
fn trigger_signal_is_chosen_by_name() {
    let deadline = test_deadline(120);
    for (setting, signo, canonical) in [
        ("USR2", libc::SIGUSR2, "USR2"),
        ("RTMIN+3", libc::SIGRTMIN() + 3, "RTMIN+3"),
        ("SIGUSR2", libc::SIGUSR2, "USR2"),
    ] {
        let mut t = spawn_parked(&[("STACKDUMP_SIGNAL", setting)], deadline);
        let caught = status_mask(t.pid, "SigCgt").expect("SigCgt");
        assert!(
            mask_has(caught, signo),
            "STACKDUMP_SIGNAL={setting}: signal {signo} is not caught (SigCgt {caught:#018x})\n{}",
            t.describe()
        );
        assert!(
            !mask_has(caught, usr1()),
            "STACKDUMP_SIGNAL={setting}: USR1 must be left alone (SigCgt {caught:#018x})"
        );
        assert!(
            mask_has(caught, capture_signo()),
            "the capture signal RTMAX-3 is caught (SigCgt {caught:#018x})"
        );
        // SAFETY: kill(2) with a valid signal number.
        let rc = unsafe { libc::kill(t.pid, signo) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signo}): {}",
            t.pid,
            std::io::Error::last_os_error()
        );
        let path = wait_json_count(&mut t, 1, deadline).remove(0);
        let d = Dumped::read(&path);
        check_complete(&t, &d, &[]);
        assert_eq!(
            (d.dump.trigger.signal.as_str(), d.dump.trigger.signo),
            (canonical, signo),
            "STACKDUMP_SIGNAL={setting}\n{}",
            d.context(&t)
        );
        t.assert_alive();
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A bad configuration leaves the host untouched

/// What a preloaded `parked` looks like: threads, caught signals, the library mapped.
struct HostLook {
    threads: Vec<(Tid, String)>,
    caught: u64,
    mapped: bool,
}

fn look(t: &Target) -> HostLook {
    let lib = libstackdump();
    let lib = lib.to_string_lossy();
    let maps = read_to_string(t.proc_dir().join("maps"));
    HostLook {
        threads: t.thread_names(),
        caught: status_mask(t.pid, "SigCgt").expect("SigCgt"),
        mapped: maps.lines().any(|l| l.ends_with(lib.as_ref())),
    }
}

#[test]
fn bad_configuration_leaves_the_host_untouched() {
    let deadline = test_deadline(120);
    // The control: the same checks see the library at work with a good configuration.
    {
        let t = spawn_parked(&[], deadline);
        let l = look(&t);
        assert!(l.mapped, "libstackdump.so not mapped\n{}", t.describe());
        assert!(mask_has(l.caught, usr1()) && mask_has(l.caught, capture_signo()));
        assert_eq!(l.threads.len(), WORKERS + 3, "{:?}", l.threads);
        assert!(l.threads.iter().any(|(_, n)| n == "stackdump"));
    }
    for env in [
        ("STACKDUMP_SIGNAL", "10"),
        ("STACKDUMP_SIGNAL", "USR9"),
        ("STACKDUMP_SIGNAL", "KILL"),
        ("STACKDUMP_DISABLE", "1"),
        ("STACKDUMP_FORMAT", "xml"),
    ] {
        let setting = format!("{}={}", env.0, env.1);
        let mut t = spawn_parked(&[env], deadline);
        let l = look(&t);
        let ctx = |t: &Target| format!("{setting}\n{}", t.describe());
        assert!(
            l.mapped,
            "{setting}: libstackdump.so is not even mapped: the test proves nothing\n{}",
            ctx(&t)
        );
        assert!(
            !mask_has(l.caught, usr1()) && !mask_has(l.caught, capture_signo()),
            "{setting}: SigCgt {:#018x} has USR1 ({}) or the capture signal ({})\n{}",
            l.caught,
            usr1(),
            capture_signo(),
            ctx(&t)
        );
        assert!(
            !l.threads.iter().any(|(_, n)| n == "stackdump"),
            "{setting}: a stackdump thread exists: {:?}\n{}",
            l.threads,
            ctx(&t)
        );
        assert_eq!(
            l.threads.len(),
            WORKERS + 2,
            "{setting}: only the example's own threads (workers, masked, main): {:?}\n{}",
            l.threads,
            ctx(&t)
        );
        t.kill_and_collect(deadline);
        assert_eq!(
            t.stdout(),
            vec![format!("READY {}", t.pid)],
            "{setting}: stdout"
        );
        assert_eq!(
            t.stderr(),
            "",
            "{setting}: nothing may be written to stderr"
        );
        assert!(
            listing(&t.dump_dir()).is_empty(),
            "{setting}: files in the dump dir: {:?}",
            listing(&t.dump_dir())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. A thread that does not answer before the deadline

/// A thread of the target held in a ptrace stop by a dedicated tracer thread (ptrace requests
/// must come from the thread that seized). Dropping it detaches; so does the tracer thread
/// exiting, whatever happens.
struct PtraceStop {
    tid: Tid,
    detach: Option<mpsc::Sender<()>>,
    tracer: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl PtraceStop {
    /// PTRACE_SEIZE + PTRACE_INTERRUPT `tid`, and wait (until `deadline`) for the stop.
    #[track_caller]
    fn stop(tid: Tid, deadline: Instant) -> PtraceStop {
        let (stopped_tx, stopped_rx) = mpsc::channel::<Result<(), String>>();
        let (detach_tx, detach_rx) = mpsc::channel::<()>();
        let tracer = std::thread::Builder::new()
            .name(format!("tracer-{tid}"))
            .spawn(move || tracer(tid, deadline, stopped_tx, detach_rx))
            .expect("spawn the tracer thread");
        let mut guard = PtraceStop {
            tid,
            detach: Some(detach_tx),
            tracer: Some(tracer),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match stopped_rx.recv_timeout(left) {
            Ok(Ok(())) => guard,
            Ok(Err(e)) => {
                let joined = guard.finish();
                panic!("cannot ptrace-stop {tid}: {e} (tracer: {joined:?})")
            }
            Err(e) => {
                let joined = guard.finish();
                panic!("no ptrace stop of {tid} before the deadline: {e} (tracer: {joined:?})")
            }
        }
    }

    /// Detach now; the tracer's result.
    fn finish(&mut self) -> Result<(), String> {
        drop(self.detach.take());
        match self.tracer.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err("the tracer thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for PtraceStop {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The tracer thread: seize, interrupt, wait for the stop, report, wait for the word to detach.
fn tracer(
    tid: Tid,
    deadline: Instant,
    stopped: mpsc::Sender<Result<(), String>>,
    detach: mpsc::Receiver<()>,
) -> Result<(), String> {
    use nix::sys::ptrace;
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let pid = nix::unistd::Pid::from_raw(tid.0);
    let fail = |stopped: &mpsc::Sender<Result<(), String>>, e: String| {
        let _ = stopped.send(Err(e.clone()));
        Err(e)
    };
    if let Err(e) = ptrace::seize(pid, ptrace::Options::empty()) {
        return fail(&stopped, format!("PTRACE_SEIZE: {e}"));
    }
    if let Err(e) = ptrace::interrupt(pid) {
        let _ = ptrace::detach(pid, None);
        return fail(&stopped, format!("PTRACE_INTERRUPT: {e}"));
    }
    // Poll (WNOHANG) so that this thread can never hang past the deadline.
    let mut delay = Duration::from_micros(200);
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(
                WaitStatus::Stopped(..)
                | WaitStatus::PtraceEvent(..)
                | WaitStatus::PtraceSyscall(..),
            ) => break,
            Ok(other) => return fail(&stopped, format!("waitpid: unexpected {other:?}")),
            Err(e) => return fail(&stopped, format!("waitpid: {e}")),
        }
        if Instant::now() >= deadline {
            let _ = ptrace::detach(pid, None);
            return fail(&stopped, "not stopped before the deadline".into());
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
    let _ = stopped.send(Ok(()));
    // Until told (or until the guard is gone): hold the stop.
    let _ = detach.recv();
    ptrace::detach(pid, None).map_err(|e| format!("PTRACE_DETACH: {e}"))
}

/// `reader-0` is held in a ptrace stop (from inside its `read`) while the target is dumped with
/// a 300 ms deadline; then released, and dumped again.
#[track_caller]
fn dump_with_a_ptrace_stopped_thread(mode: Capture) {
    let deadline = test_deadline(120);
    let mut env = vec![("STACKDUMP_DEADLINE_MS", "300")];
    if mode == Capture::Signal {
        env.push(("STACKDUMP_CAPTURE", "signal"));
    }
    let mut t = spawn_parked(&env, deadline);
    let victim_name = "reader-0";
    let victim = t.tid_of(victim_name);
    // Declared after `t`: dropped (detached) before the target is killed, panics included.
    let mut stop = PtraceStop::stop(victim, deadline);
    assert_eq!(stop.tid, victim);
    let k = t.kernel_view(victim);
    assert_eq!(
        k.state,
        "t",
        "{victim_name} should be in a tracing stop: {k:?}\n{}",
        t.describe()
    );

    let started = Instant::now();
    send_signal(t.pid, "USR1");
    let path = wait_json_count(&mut t, 1, deadline).remove(0);
    let took = started.elapsed();
    let d = Dumped::read(&path);
    check_complete(&t, &d, &[victim]);
    let th = d.thread(&t, victim_name);
    assert_eq!(
        th.kernel.state,
        "t",
        "its kernel view is there and says tracing stop\n{}",
        d.context(&t)
    );
    assert_eq!(d.dump.capture.deadline_ms, 300, "{}", d.context(&t));
    match mode {
        Capture::Signal => {
            assert_eq!(
                th.capture,
                CaptureStatus::NoResponse,
                "the stopped thread cannot run its capture handler\n{}",
                d.context(&t)
            );
            assert!(th.signalled && th.frames.is_empty(), "{}", d.context(&t));
            // main and every other worker; not masked (blocks the signal), not the victim.
            assert_eq!(d.dump.capture.captured, WORKERS, "{}", d.context(&t));
        }
        Capture::Auto => {
            // Stopped inside read(2): its SP and PC are in /proc/TID/syscall and it cannot
            // move, so it is copied without a signal.
            if let Some(why) = worker_stack_problem(th) {
                panic!("the stopped thread: {why}\n{}", d.context(&t));
            }
            assert!(!th.signalled, "{}", d.context(&t));
        }
    }
    println!(
        "{mode:?}: dump with one ptrace-stopped thread: file after {took:?}, capture took {} us, \
         stopped thread {:?}",
        d.dump.capture.duration_us, th.capture
    );

    // Let it go: it parks again, and the next dump captures it.
    stop.finish()
        .unwrap_or_else(|e| panic!("detach: {e}\n{}", t.describe()));
    drop(stop);
    t.assert_alive();
    let parked_again = || {
        let k = t.kernel_view(victim);
        k.state == "S" && parked_syscalls(victim_name).contains(&k.syscall_name().unwrap_or(""))
    };
    assert!(
        poll_until(deadline, parked_again),
        "{victim_name} did not park again after PTRACE_DETACH\n{}",
        t.describe()
    );
    send_signal(t.pid, "USR1");
    let files = wait_json_count(&mut t, 2, deadline);
    let d2 = Dumped::read(&files[1]);
    check_complete(&t, &d2, &[]);
    assert_eq!(
        d2.thread(&t, victim_name).capture,
        CaptureStatus::Ok,
        "{}",
        d2.context(&t)
    );
    t.assert_alive();
    assert_no_temp_files(&t);
    assert_eq!(t.stdout(), vec![format!("READY {}", t.pid)]);
    assert_eq!(t.stderr(), "", "nothing may be written to stderr");
}

#[test]
fn ptrace_stopped_thread_is_no_response_and_the_dump_completes() {
    dump_with_a_ptrace_stopped_thread(Capture::Signal);
}

#[test]
fn ptrace_stopped_thread_in_a_syscall_is_copied_without_a_signal() {
    dump_with_a_ptrace_stopped_thread(Capture::Auto);
}

// ---------------------------------------------------------------------------------------------
// 7. Format knobs

#[test]
fn format_json_writes_only_json() {
    let deadline = test_deadline(60);
    let mut t = spawn_parked(&[("STACKDUMP_FORMAT", "json")], deadline);
    send_signal(t.pid, "USR1");
    let path = wait_json_count(&mut t, 1, deadline).remove(0);
    // Text is written before JSON: once the JSON is there, a text file would be too.
    let d = Dumped::read(&path);
    check_complete(&t, &d, &[]);
    assert_private_file(&t, &path);
    let names = listing(&t.dump_dir());
    assert!(
        names.len() == 1 && names[0].ends_with(".json"),
        "STACKDUMP_FORMAT=json: the dump dir holds {names:?}"
    );
    t.assert_alive();
}

#[test]
fn format_text_writes_only_text_with_a_block_per_thread() {
    const REQUEST: u32 = 0x5eed_0007;
    let deadline = test_deadline(60);
    let mut t = spawn_parked(&[("STACKDUMP_FORMAT", "text")], deadline);
    send_signal(t.pid, "USR1");
    let dir = t.dump_dir();
    let mut first = None;
    poll_until(deadline, || {
        first = dump_files(&dir, t.pid, "txt").into_iter().next();
        first.is_some()
    });
    let first = first.unwrap_or_else(|| panic!("no .txt dump\n{}", t.describe()));
    // A second dump (with a request id, to know which file is which) proves the first is
    // finished: dumps are written one after the other. Then no JSON may exist.
    wait_not_pending(&t, usr1(), deadline);
    sigqueue(t.pid, usr1(), REQUEST as usize);
    let second = wait_request(&mut t, REQUEST, "txt", deadline);
    let names = listing(&dir);
    assert!(
        names.len() == 2 && names.iter().all(|n| n.ends_with(".txt")),
        "STACKDUMP_FORMAT=text: the dump dir holds {names:?}"
    );
    let threads = t.thread_names();
    assert_eq!(threads.len(), WORKERS + 3, "{threads:?}");
    for path in [&first, &second] {
        assert_private_file(&t, path);
        let text = read_to_string(path);
        let ctx = || {
            format!(
                "=== {}\n{text}\n=== target\n{}",
                path.display(),
                t.describe()
            )
        };
        assert!(
            text.starts_with(&format!("stackdump of pid {} ", t.pid)),
            "the text begins with `stackdump of pid {}`\n{}",
            t.pid,
            ctx()
        );
        for (tid, name) in &threads {
            let block = format!("\"{name}\" tid {tid} ");
            assert_eq!(
                text.matches(&block).count(),
                1,
                "one block {block:?} per thread\n{}",
                ctx()
            );
        }
        for marker in [
            "park_read",
            "park_sleep",
            "park_cond",
            "level_20",
            "worker_main",
        ] {
            assert!(text.contains(marker), "no {marker} in the text\n{}", ctx());
        }
    }
    assert!(
        read_to_string(&second).contains(&format!("request {REQUEST}")),
        "the second dump names its request\n{}",
        read_to_string(&second)
    );
    t.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// 8. The main thread, which takes the trigger

#[test]
fn main_thread_is_seen_in_pause_with_main_on_its_stack() {
    main_thread_in_pause(Capture::Auto);
}

#[test]
fn main_thread_is_seen_in_pause_when_signalled_too() {
    main_thread_in_pause(Capture::Signal);
}

/// main prints READY then calls pause(): wait for it to get there.
#[track_caller]
fn wait_main_in_pause(t: &Target, deadline: Instant) {
    let in_pause = || {
        let k = t.kernel_view(Tid(t.pid));
        k.state == "S" && k.syscall_name() == Some("pause")
    };
    assert!(
        poll_until(deadline, in_pause),
        "main did not reach pause()\n{}",
        t.describe()
    );
}

#[track_caller]
fn main_thread_in_pause(mode: Capture) {
    let deadline = test_deadline(60);
    let mut t = spawn_parked(mode.env(), deadline);
    wait_main_in_pause(&t, deadline);
    send_signal(t.pid, "USR1");
    let path = wait_json_count(&mut t, 1, deadline).remove(0);
    let d = Dumped::read(&path);
    check_complete(&t, &d, &[]);
    let main = d
        .dump
        .thread(Tid(t.pid))
        .unwrap_or_else(|| panic!("no main thread\n{}", d.context(&t)));
    assert!(
        main.kernel.state == "S" && syscall_name(&main.kernel.syscall) == Some("pause"),
        "main (tid == pid) should be asleep in pause: state {} syscall {:?}\n{}",
        main.kernel.state,
        main.kernel.syscall,
        d.context(&t)
    );
    assert_eq!(main.capture, CaptureStatus::Ok, "{}", d.context(&t));
    assert_eq!(
        main.signalled,
        mode == Capture::Signal,
        "{mode:?}: main copied without a signal only in the default mode\n{}",
        d.context(&t)
    );
    assert!(
        main.frames
            .iter()
            .any(|f| function_is(f.function.as_deref(), "main")),
        "no `main` frame on the main thread\n{}",
        d.context(&t)
    );
    assert!(
        !main.frames.iter().any(|f| f
            .function
            .as_deref()
            .is_some_and(|n| n.contains("on_trigger") || n.contains("signal_hook"))),
        "the main thread was captured inside the trigger handler\n{}",
        d.context(&t)
    );
    t.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// 9. A dump directory that does not exist

#[test]
fn missing_dump_dir_fails_quietly_and_the_next_dump_works() {
    const REQUEST: u32 = 0x5eed_0009;
    let deadline = test_deadline(60);
    let mut t = Target::spawn_without_dump_dir(parked_cmd(&[]), Preload::Yes);
    t.wait_ready(deadline);
    let dir = t.dump_dir();
    assert!(!dir.exists(), "{} exists", dir.display());
    let dumper = t.tid_of("stackdump");
    wait_dumper_idle(&t, dumper, "before any trigger", deadline, |n| n == 0);

    send_signal(t.pid, "USR1");
    // The handshake: the dump thread is back in its idle wait having seen the trigger, so the
    // dump (and its failed write) is over.
    wait_dumper_idle(
        &t,
        dumper,
        "after the dump into a missing directory",
        deadline,
        |n| n == 1,
    );
    t.assert_alive();
    assert!(!dir.exists(), "the dumper created {}", dir.display());

    std::fs::create_dir(&dir).expect("create the dump dir");
    wait_not_pending(&t, usr1(), deadline);
    sigqueue(t.pid, usr1(), REQUEST as usize);
    let path = wait_request(&mut t, REQUEST, "json", deadline);
    let d = Dumped::read(&path);
    check_complete(&t, &d, &[]);
    assert_eq!(
        d.dump.capture.sequence,
        2,
        "the failed dump counted as dump #1\n{}",
        d.context(&t)
    );
    assert!(d.dump.trigger.coalesced.is_empty(), "{}", d.context(&t));
    assert_eq!(
        dump_files(&dir, t.pid, "json").len(),
        1,
        "{:?}",
        listing(&dir)
    );
    assert_no_temp_files(&t);
    t.assert_alive();
    t.kill_and_collect(deadline);
    assert_eq!(t.stdout(), vec![format!("READY {}", t.pid)]);
    assert_eq!(
        t.stderr(),
        "",
        "the failed write must not be reported on stderr"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. The executable is replaced on disk while it runs (a deploy, a rebuild)

/// Start a private copy of `parked`, then replace the file (write a new copy, rename it over
/// the old one, as `cc -o`, `install` and package managers do): the process now runs a deleted
/// executable, `/proc/PID/exe` says `(deleted)`, but its code and unwind data are still mapped.
#[track_caller]
fn spawn_parked_then_replace_its_executable(
    env: &[(&str, &str)],
    deadline: Instant,
) -> (Target, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("stackdump-it-exe-")
        .tempdir()
        .expect("temp dir");
    let exe = dir.path().join("parked");
    std::fs::copy(c_target("parked"), &exe).expect("copy parked");
    let mut cmd = Command::new(&exe);
    cmd.arg(WORKERS.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline);
    let new = dir.path().join("parked.new");
    std::fs::copy(&exe, &new).expect("copy the new version");
    std::fs::rename(&new, &exe).expect("replace the executable");
    let link = std::fs::read_link(t.proc_dir().join("exe")).expect("readlink exe");
    assert!(
        link.to_string_lossy().ends_with(" (deleted)"),
        "/proc/{}/exe is {}",
        t.pid,
        link.display()
    );
    (t, dir)
}

#[test]
#[ignore = "needs root"]
fn replaced_executable_still_gives_complete_stacks() {
    // The replaced file is reached through /proc/self/map_files/, which the kernel opens only
    // with CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE): an unprivileged host loses the
    // executable's unwind data and symbols (a known limitation, see the README).
    needs_root();
    let deadline = test_deadline(60);
    let (mut t, _exe_dir) = spawn_parked_then_replace_its_executable(&[], deadline);
    send_signal(t.pid, "USR1");
    let path = wait_json_count(&mut t, 1, deadline).remove(0);
    let d = Dumped::read(&path);
    check_complete(&t, &d, &[]);
    t.assert_alive();
}

#[test]
#[ignore = "needs root"]
fn replaced_executable_with_a_1ms_deadline_reports_no_thread_as_unanswered_unsignalled() {
    // The replaced file is reached through /proc/self/map_files/, which the kernel opens only
    // with CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE): an unprivileged host loses the
    // executable's unwind data and symbols (a known limitation, see the README).
    needs_root();
    // Threads blocked in a system call need no signal, hence no deadline: however long copying
    // them takes, and whatever happens to that copy, none may be reported as not answering a
    // capture signal it was never sent. (With the executable intact, the same 1 ms deadline
    // gives every thread of `parked` a complete stack: none of them needs a signal.)
    let deadline = test_deadline(60);
    let (mut t, _exe_dir) =
        spawn_parked_then_replace_its_executable(&[("STACKDUMP_DEADLINE_MS", "1")], deadline);
    send_signal(t.pid, "USR1");
    let path = wait_json_count(&mut t, 1, deadline).remove(0);
    let d = Dumped::read(&path);
    check_statuses(&d, &|| d.context(&t));
    check_complete(&t, &d, &[]);
    t.assert_alive();
}

#[test]
fn blocked_threads_need_no_deadline() {
    // The control for the test above: 1 ms is enough when nobody needs a signal.
    let deadline = test_deadline(60);
    let mut t = spawn_parked(&[("STACKDUMP_DEADLINE_MS", "1")], deadline);
    // main is counted below: in pause(), not on its way there.
    wait_main_in_pause(&t, deadline);
    send_signal(t.pid, "USR1");
    let path = wait_json_count(&mut t, 1, deadline).remove(0);
    let d = Dumped::read(&path);
    check_complete(&t, &d, &[]);
    assert_eq!(
        d.dump.capture.without_signal,
        WORKERS + 2,
        "main, the workers and masked copied without a signal\n{}",
        d.context(&t)
    );
    t.assert_alive();
}
