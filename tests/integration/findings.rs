//! Findings end to end: the incident of `docs/incident.md` (workers blocked writing to a full
//! stderr pipe held by a `sleep` that never reads, sockets left in CLOSE_WAIT) and a lock-wait
//! program (`tests/targets/c/lockwait.c`), dumped by the preloaded library and inspected from outside
//! without it. Both must state the same facts: the blocked write on fd 2, the full pipe and its
//! 65536-byte capacity, the pid of the process holding the read end, the CLOSE_WAIT sockets, the
//! owner of a mutex. `compare` over several dumps must call the stuck workers stuck, and name
//! the thread that burned CPU.

use crate::util::*;
use stackdump_core::model::{CaptureMethod, Dump, Finding, KernelView, Pid, SyscallState, Tid};
use stackdump_core::output::compare;
use stackdump_core::outside::inspect;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

const WORKERS: usize = 4;
const CLIENTS: usize = 20;

fn spawn_incident(preload: Preload) -> Target {
    spawn_incident_with(preload, &[])
}

/// The incident with extra environment variables (e.g. `STACKDUMP_WATCH`).
pub(crate) fn spawn_incident_with(preload: Preload, env: &[(&str, &str)]) -> Target {
    let mut cmd = Command::new("python3");
    cmd.arg(python_target("incident.py"))
        .arg(WORKERS.to_string())
        .args(["--clients", &CLIENTS.to_string()])
        .envs(env.iter().copied());
    let mut t = Target::spawn(cmd, preload);
    t.wait_ready(deadline());
    wait_workers_stuck(&t);
    t
}

/// Wait until every worker sleeps for good in write(2) on the full pipe. READY alone does not
/// prove it: incident.py reads a worker's syscall and then its state, one after the other, so a
/// worker seen in write(2) while it waits for the pipe's lock (state D) and then in S (already
/// past that write, waiting for the GIL) passes. A worker counts here when two kernel views in a
/// row agree: in write(2) on fd 2 with the same registers, wait channel in pipe_write, state S,
/// and the same context-switch counts (it was not switched out in between, so both views see
/// one sleep). Asleep in S in pipe_write is the wait for room in the pipe (its lock sleeps in
/// D), and nothing ever reads that pipe.
#[track_caller]
pub(crate) fn wait_workers_stuck(t: &Target) {
    wait_n_workers_stuck(t, WORKERS);
}

/// [`wait_workers_stuck`] for an incident of `workers` workers (`incident.py N`).
#[track_caller]
pub(crate) fn wait_n_workers_stuck(t: &Target, workers: usize) {
    let workers: BTreeSet<Tid> = (0..workers)
        .map(|i| t.tid_of(&format!("worker-{i}")))
        .collect();
    let mut reader = stackdump_core::kernel::proc::TaskReader::new(t.proc_dir());
    reader.kernel_stacks = false;
    let mut view = |tid: Tid| reader.kernel_view(tid).ok().map(|(_, v, _)| v);
    let mut stuck = |tid: Tid| {
        let (Some(a), Some(b)) = (view(tid), view(tid)) else {
            return false;
        };
        let in_write_2 = matches!(&a.syscall, SyscallState::InSyscall { name: Some(n), args, .. }
            if n == "write" && args.first().map(|fd| fd.0) == Some(2));
        let asleep_in_pipe_write = |v: &KernelView| {
            v.state == "S" && v.wchan.as_deref().is_some_and(|w| w.contains("pipe_write"))
        };
        in_write_2
            && a.syscall == b.syscall
            && asleep_in_pipe_write(&a)
            && asleep_in_pipe_write(&b)
            && (a.voluntary_ctxt_switches, a.nonvoluntary_ctxt_switches)
                == (b.voluntary_ctxt_switches, b.nonvoluntary_ctxt_switches)
    };
    assert!(
        poll_until(deadline(), || workers.iter().all(|&tid| stuck(tid))),
        "the workers did not all end up asleep in write(2) on the full pipe\n{}",
        t.describe()
    );
}

fn spawn_lockwait(preload: Preload, args: &[&str]) -> Target {
    let mut cmd = Command::new(c_target("lockwait"));
    cmd.args(args);
    let mut t = Target::spawn(cmd, preload);
    t.wait_ready(deadline());
    // READY waits for the waiters asleep in futex(2), not for the owners asleep in nanosleep
    // (what the findings' evidence says they do, and where `compare` must find them stuck):
    // wait until they are.
    for name in ["holder", "pi-holder"] {
        let tid = t.tid_of(name);
        let asleep = || {
            let k = t.kernel_view(tid);
            k.state == "S"
                && ["nanosleep", "clock_nanosleep"].contains(&k.syscall_name().unwrap_or(""))
        };
        assert!(
            poll_until(deadline(), asleep),
            "{name} ({tid}) never slept in nanosleep\n{}",
            t.describe()
        );
    }
    t
}

/// The pid of the child of `pid` whose comm is `comm`.
#[track_caller]
fn child_named(t: &Target, comm: &str) -> i32 {
    let found = std::fs::read_dir("/proc").ok().and_then(|entries| {
        entries.flatten().find_map(|e| {
            let child: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read(e.path().join("stat")).ok()?;
            let text = String::from_utf8_lossy(&stat);
            let (head, rest) = text.rsplit_once(") ")?;
            let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == t.pid && head.ends_with(&format!("({comm}"))).then_some(child)
        })
    });
    found.unwrap_or_else(|| panic!("no child {comm:?} of {}\n{}", t.pid, t.describe()))
}

/// The inode of `pipe:[N]` behind fd `fd` of the target.
#[track_caller]
fn pipe_inode_of(t: &Target, fd: i32) -> u64 {
    let link = std::fs::read_link(t.proc_dir().join(format!("fd/{fd}")))
        .unwrap_or_else(|e| panic!("readlink fd/{fd}: {e}"));
    stackdump_core::kernel::fds::pipe_inode(&link.to_string_lossy())
        .unwrap_or_else(|| panic!("fd {fd} is {}, not a pipe", link.display()))
}

/// Send USR1 and wait until there are `n` JSON dumps of the target; return the newest.
#[track_caller]
fn trigger_nth(t: &Target, n: usize) -> (PathBuf, Dump) {
    let deadline = deadline();
    send_signal(t.pid, "USR1");
    let mut files = Vec::new();
    let arrived = poll_until(deadline, || {
        files = dump_files(&t.dump_dir(), t.pid, "json");
        files.len() >= n
    });
    assert!(
        arrived,
        "dump #{n} did not arrive before the deadline\n{}",
        t.describe()
    );
    let path = files[n - 1].clone();
    let dump = read_dump(&path);
    (path, dump)
}

fn context(d: &Dump, t: &Target) -> String {
    dump_context(None, d, &stackdump_core::output::render::text(d), t)
}

fn findings_of<'a>(d: &'a Dump, kind: &str) -> Vec<&'a Finding> {
    d.findings.iter().filter(|f| f.kind == kind).collect()
}

pub(crate) fn worker_tids(t: &Target) -> BTreeSet<Tid> {
    (0..WORKERS)
        .map(|i| t.tid_of(&format!("worker-{i}")))
        .collect()
}

/// What both the dump and `inspect` must say about the incident.
#[track_caller]
fn check_incident_facts(d: &Dump, t: &Target) {
    let ctx = || context(d, t);
    let inode = pipe_inode_of(t, 2);
    let holder = child_named(t, "sleep");
    let workers = worker_tids(t);

    // The finding, in one line, first.
    let full = findings_of(d, "full_pipe");
    assert_eq!(full.len(), 1, "one full pipe finding\n{}", ctx());
    let f = full[0];
    assert_eq!(
        d.findings[0].kind,
        "full_pipe",
        "the full pipe comes first\n{}",
        ctx()
    );
    for needle in [
        format!("{WORKERS} threads blocked in write(fd 2 → pipe:[{inode}])"),
        "the pipe is full (".to_string(),
        " of 65536 bytes)".to_string(),
        format!("its read end is held by pid {holder} (sleep) fd 0, which is not reading"),
    ] {
        assert!(
            f.summary.contains(&needle),
            "the finding should say {needle:?}: {}\n{}",
            f.summary,
            ctx()
        );
    }
    let named: BTreeSet<Tid> = f.threads.iter().copied().collect();
    assert_eq!(named, workers, "the finding names the workers\n{}", ctx());

    // The facts behind it.
    let p = d.process.as_ref().expect("process facts");
    let pipe = p
        .pipe(inode)
        .unwrap_or_else(|| panic!("pipe {inode} in facts\n{}", ctx()));
    assert_eq!(pipe.capacity, Some(65536), "{pipe:?}");
    let queued = pipe.queued.expect("queued bytes known");
    assert!(
        queued > 65536 - 4096 && queued <= 65536,
        "the pipe is full: {queued} bytes queued"
    );
    assert!(pipe.full);
    assert_eq!(pipe.fds.len(), 1, "{pipe:?}");
    assert_eq!((pipe.fds[0].fd, pipe.fds[0].end.as_str()), (2, "write"));
    let reader = pipe
        .others
        .iter()
        .find(|h| h.pid == Pid(holder))
        .unwrap_or_else(|| panic!("the sleep child {holder} holds the pipe\n{}", ctx()));
    assert_eq!((reader.fd, reader.end.as_str()), (0, "read"), "{reader:?}");
    assert_eq!(reader.reading, Some(false), "{reader:?}");
    let fd2 = p.syscall_fd(2).expect("fd 2 decoded");
    assert_eq!(fd2.pipe, Some(inode));
    assert_eq!(fd2.end.as_deref(), Some("write"));

    // The sockets: one line for all of them.
    let cw = findings_of(d, "close_wait");
    assert_eq!(cw.len(), 1, "{}", ctx());
    assert_eq!(
        cw[0].summary,
        format!("{CLIENTS} sockets in CLOSE_WAIT with unread data: the peers closed, this process never read or closed them"),
        "{}",
        ctx()
    );
    let group = p
        .sockets
        .iter()
        .find(|g| g.protocol == "tcp" && g.state == "CLOSE_WAIT")
        .unwrap_or_else(|| panic!("a tcp CLOSE_WAIT group\n{}", ctx()));
    assert_eq!((group.count, group.with_unread), (CLIENTS, CLIENTS));
    assert!(
        group.rx_queue >= 250 * CLIENTS as u64 && group.rx_queue <= 400 * CLIENTS as u64,
        "{group:?}"
    );
    assert!(p
        .sockets
        .iter()
        .any(|g| g.protocol == "tcp" && g.state == "LISTEN" && g.count == 1));
    assert!(p.fds.by_kind.get("socket").copied().unwrap_or(0) > CLIENTS);

    // The text says it too, findings first, and shows the workers' stack once.
    let text = stackdump_core::output::render::text(d);
    let findings_at = text.find("Findings:").expect("a Findings section");
    let first_thread = text.find("\" tid ").expect("threads");
    assert!(findings_at < first_thread, "{text}");
    assert!(text.contains(&f.summary), "{text}");
    let group_header = if d.capture.method == CaptureMethod::Kernel {
        format!("{WORKERS} threads in the same place (same system call, wait channel and kernel stack):")
    } else {
        format!("{WORKERS} threads with the same stack:")
    };
    assert!(
        text.contains(&group_header),
        "the workers are shown as one group\n{text}"
    );
    assert!(
        text.contains(&format!("fd 2 → pipe:[{inode}] (write end; {queued} of 65536 bytes queued, full; read end: pid {holder} (sleep) fd 0, not reading)")),
        "the syscall line decodes the pipe\n{text}"
    );
}

#[test]
fn incident_dump_names_the_full_pipe_its_reader_and_the_close_wait_sockets() {
    let mut t = spawn_incident(Preload::Yes);
    let (path, d) = trigger_nth(&t, 1);
    check_incident_facts(&d, &t);
    // With the Python frames merged in, the finding names the Python function that writes.
    let full = findings_of(&d, "full_pipe");
    assert!(
        full[0].summary.contains("from `_db_execute` (incident.py:"),
        "the finding should speak Python: {}",
        full[0].summary
    );
    // The written text file is the rendering of the JSON.
    let txt = std::fs::read_to_string(path.with_extension("txt")).expect("the .txt twin");
    assert!(
        txt.contains("sockets in CLOSE_WAIT with unread data"),
        "{txt}"
    );
    // One line per distinct stack: the four workers are one line with count 4.
    let folded = stackdump_core::output::folded::folded(std::slice::from_ref(&d));
    assert!(
        folded
            .lines()
            .any(|l| l.ends_with(&format!(" {WORKERS}")) && l.contains("write")),
        "{folded}"
    );
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("stack count");
        assert!(!stack.is_empty() && count.parse::<u32>().is_ok(), "{line}");
    }
    t.assert_alive();
    assert_eq!(t.stdout(), vec![format!("READY {}", t.pid)]);
}

#[test]
fn incident_inspect_without_preload_states_the_same_facts() {
    let mut t = spawn_incident(Preload::No);
    let d =
        inspect::inspect(Pid(t.pid)).unwrap_or_else(|e| panic!("inspect: {e}\n{}", t.describe()));
    assert_eq!(d.capture.method, CaptureMethod::Kernel);
    assert!(
        d.threads.iter().all(|th| th.frames.is_empty()),
        "kernel view only"
    );
    check_incident_facts(&d, &t);
    // Nothing was loaded or sent: the process is as it was.
    t.assert_alive();
    let maps = read_to_string(t.proc_dir().join("maps"));
    assert!(!maps.contains("libstackdump"), "nothing loaded");
}

/// The workers are stuck in the comparison: one group of all of them across every dump.
#[track_caller]
fn check_workers_stuck(c: &compare::Comparison, t: &Target, dumps: usize) {
    let workers = worker_tids(t);
    let text = compare::text(c);
    assert_eq!(c.processes.len(), 1, "{text}");
    let p = &c.processes[0];
    assert_eq!(p.dumps, dumps, "{text}");
    let group = p
        .stuck
        .iter()
        .find(|g| g.threads.iter().any(|r| workers.contains(&r.tid)))
        .unwrap_or_else(|| panic!("the workers are not stuck\n{text}\n{}", t.describe()));
    let stuck: BTreeSet<Tid> = group.threads.iter().map(|r| r.tid).collect();
    assert!(
        workers.is_subset(&stuck),
        "all workers stuck together: {stuck:?} vs {workers:?}\n{text}"
    );
    assert_eq!(group.dumps, dumps, "{text}");
    assert!(group.syscall.starts_with("write(fd 2 → pipe:["), "{text}");
    assert!(
        text.contains(&format!(
            "{} threads stuck for at least",
            group.threads.len()
        )) && text.contains(&format!("across {dumps} dumps")),
        "{text}"
    );
    // JSON survives a round trip.
    let back: compare::Comparison =
        serde_json::from_str(&compare::json(c)).expect("comparison JSON");
    assert_eq!(&back, c);
}

#[test]
fn incident_compare_over_three_dumps_reports_the_workers_stuck() {
    let t = spawn_incident(Preload::Yes);
    for n in 1..=3 {
        trigger_nth(&t, n);
    }
    let dumps = compare::load(&[t.dump_dir()]).expect("load the dump dir");
    assert_eq!(dumps.len(), 3);
    let c = compare::compare(&dumps);
    check_workers_stuck(&c, &t, 3);
    check_workers_folded(&dumps, 3);
}

/// Folded over `dumps` dumps of stuck workers: each worker's stack once per dump, and workers
/// with the same stack on one line, their counts summed.
///
/// The workers need not all share one native stack. CPython's specializing interpreter (3.11
/// and later) specializes the print() call in `_db_execute` once it has run a few times (shared
/// by all threads: it is the code object's); a worker that entered that print() before then
/// blocks below the generic call (`PyObject_Vectorcall` → `cfunction_vectorcall_FASTCALL_KEYWORDS`
/// → `builtin_print`), a worker that entered it later below the specialized one (`builtin_print`
/// called straight from `_PyEval_EvalFrameDefault`). Which workers block where depends on how the
/// threads were scheduled while the pipe filled up: under load, a worker that began its first
/// print() and was preempted before its write(2) blocks there while the others fill the pipe.
/// So the count is checked per stack, not as one line of `dumps` × WORKERS.
#[track_caller]
fn check_workers_folded(dumps: &[Dump], n: u64) {
    use stackdump_core::output::folded::{folded, folded_with, Options, Root};
    use std::collections::BTreeMap;
    let named = folded_with(
        dumps,
        &Options {
            root: Root::Thread,
            ..Options::default()
        },
    );
    let mut workers_with: BTreeMap<&str, u64> = BTreeMap::new();
    for i in 0..WORKERS {
        let prefix = format!("[worker-{i}];");
        let lines: Vec<&str> = named.lines().filter(|l| l.starts_with(&prefix)).collect();
        let [line] = lines[..] else {
            panic!("worker-{i} should have one stack in all {n} dumps: {lines:#?}\n{named}");
        };
        let (stack, count) = line.rsplit_once(' ').expect("stack count");
        assert!(
            count == n.to_string() && stack.contains(";_db_execute (incident.py);") && stack.contains("write"),
            "worker-{i}: its stack blocked in write from _db_execute, once per dump ({n}): {line}\n{named}"
        );
        *workers_with.entry(&stack[prefix.len()..]).or_default() += 1;
    }
    // Without names: one line per distinct stack, counted over every dump.
    let folded = folded(dumps);
    for (stack, workers) in workers_with {
        let line = format!("{stack} {}", n * workers);
        assert!(
            folded.lines().any(|l| l == line),
            "{workers} worker(s) × {n} dumps: {line}\n{folded}"
        );
    }
}

#[test]
fn incident_compare_of_three_inspections_reports_the_workers_stuck() {
    let t = spawn_incident(Preload::No);
    let dumps: Vec<Dump> = (0..3)
        .map(|_| inspect::inspect(Pid(t.pid)).expect("inspect"))
        .collect();
    let c = compare::compare(&dumps);
    check_workers_stuck(&c, &t, 3);
}

/// What both the dump and `inspect` must say about the lock waits.
#[track_caller]
fn check_lock_findings(d: &Dump, t: &Target, waiters: usize) {
    let ctx = || context(d, t);
    let holder = t.tid_of("holder");
    let waiting: BTreeSet<Tid> = (0..waiters)
        .map(|i| t.tid_of(&format!("waiter-{i}")))
        .collect();
    let waits = findings_of(d, "lock_wait");
    let f = waits
        .iter()
        .find(|f| f.threads.iter().any(|w| waiting.contains(w)))
        .unwrap_or_else(|| panic!("no lock_wait finding for the waiters\n{}", ctx()));
    let named: BTreeSet<Tid> = f.threads.iter().copied().collect();
    assert_eq!(named, waiting, "{}", ctx());
    assert!(
        f.summary
            .starts_with(&format!("{waiters} threads wait on futex 0x"))
            && f.summary
                .ends_with(&format!("owned by thread holder ({holder})")),
        "{}\n{}",
        f.summary,
        ctx()
    );
    assert!(
        f.evidence.iter().any(|e| e.contains("nanosleep")),
        "the evidence says what the owner does: {:?}",
        f.evidence
    );
    // The priority-inheritance mutex: the owner is in the futex word.
    let pi_holder = t.tid_of("pi-holder");
    let pi_waiter = t.tid_of("pi-waiter");
    assert!(
        waits.iter().any(|f| f.threads == vec![pi_waiter]
            && f.summary
                .ends_with(&format!("owned by thread pi-holder ({pi_holder})"))),
        "{}",
        ctx()
    );
    // The deadlock, once, first.
    let (a, b) = (t.tid_of("dl-a"), t.tid_of("dl-b"));
    let dl = findings_of(d, "deadlock");
    assert_eq!(dl.len(), 1, "{}", ctx());
    assert_eq!(d.findings[0].kind, "deadlock", "{}", ctx());
    let mut pair = dl[0].threads.clone();
    pair.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(pair, expected, "{}", ctx());
    assert!(
        dl[0].summary.contains(&format!("dl-a ({a})"))
            && dl[0].summary.contains(&format!("dl-b ({b})"))
    );
    // The text names the owner on the waiters' syscall line.
    let text = stackdump_core::output::render::text(d);
    assert!(
        text.contains(&format!(
            "(owned by thread {holder} \"holder\"), FUTEX_WAIT_PRIVATE, 2"
        )),
        "{text}"
    );
}

#[test]
fn lockwait_dump_names_the_owner_thread() {
    let mut t = spawn_lockwait(Preload::Yes, &["3"]);
    let (_, d) = trigger_nth(&t, 1);
    check_lock_findings(&d, &t, 3);
    t.assert_alive();
}

#[test]
fn lockwait_inspect_names_the_owner_thread() {
    let t = spawn_lockwait(Preload::No, &["3"]);
    let d = inspect::inspect(Pid(t.pid)).expect("inspect");
    check_lock_findings(&d, &t, 3);
}

/// CPU ticks (user + system) of a thread, from outside.
fn cpu_ticks(t: &Target, tid: Tid) -> u64 {
    let stat = std::fs::read(t.proc_dir().join(format!("task/{}/stat", tid.0))).expect("stat");
    let s = stackdump_core::kernel::proc::parse_stat(&stat).expect("parse stat");
    s.utime + s.stime
}

#[test]
fn compare_names_the_thread_that_burned_cpu_and_the_stuck_waiters() {
    let t = spawn_lockwait(Preload::No, &["2", "--spin"]);
    let spinner = t.tid_of("spinner");
    let first = inspect::inspect(Pid(t.pid)).expect("inspect");
    let before = cpu_ticks(&t, spinner);
    // A handshake on the kernel's accounting, not a sleep: wait until the spinner has used 20
    // more ticks.
    assert!(
        poll_until(deadline(), || cpu_ticks(&t, spinner) >= before + 20),
        "the spinner does not spin\n{}",
        t.describe()
    );
    let second = inspect::inspect(Pid(t.pid)).expect("inspect");
    let c = compare::compare(&[second, first]);
    let text = compare::text(&c);
    let p = &c.processes[0];
    assert_eq!(p.cpu[0].tid, spinner, "{text}");
    assert!(p.cpu[0].user_ticks + p.cpu[0].system_ticks >= 20, "{text}");
    assert!(text.contains(&format!("spinner ({spinner})")), "{text}");
    // The waiters and holders did not move; the spinner is never "stuck".
    let stuck: BTreeSet<Tid> = p
        .stuck
        .iter()
        .flat_map(|g| g.threads.iter().map(|r| r.tid))
        .collect();
    for name in ["waiter-0", "waiter-1", "dl-a", "dl-b", "holder"] {
        assert!(stuck.contains(&t.tid_of(name)), "{name} stuck\n{text}");
    }
    assert!(!stuck.contains(&spinner), "{text}");
}

#[test]
fn the_lockwait_example_refuses_bad_arguments_silently() {
    for bad in [&["x"][..], &["0"], &["65"], &["--spinn"]] {
        let out = Command::new(c_target("lockwait"))
            .args(bad)
            .output()
            .expect("run lockwait");
        assert_eq!(out.status.code(), Some(2), "lockwait {bad:?}: {out:?}");
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    }
}

/// What an inspection without ptrace permission over `pid` must look like: no failure, the
/// threads listed, nothing claimed that could not be seen, and the reasons in `errors`.
#[track_caller]
fn check_unprivileged_inspection(pid: i32, min_threads: usize) {
    let d = inspect::inspect(Pid(pid)).unwrap_or_else(|e| panic!("inspect failed: {e}"));
    let text = stackdump_core::output::render::text(&d);
    assert!(d.threads.len() >= min_threads, "{text}");
    assert!(
        d.threads.iter().all(|t| !t.kernel.state.is_empty()),
        "{text}"
    );
    for needle in [
        "needs ptrace permission",
        &format!("cannot list /proc/{pid}/fd"),
    ] {
        assert!(
            d.errors.iter().any(|e| e.contains(needle)),
            "the errors should say {needle:?}: {:?}",
            d.errors
        );
    }
    assert!(
        d.findings.is_empty(),
        "nothing claimed without evidence (threads whose system call is unknown are not \"in the same place\")\n{text}"
    );
    let fds = &d.process.as_ref().expect("process facts").fds;
    assert!(
        fds.unknown
            .as_deref()
            .is_some_and(|u| u.contains("ermission")),
        "the fd count is unknown, not 0: {fds:?}"
    );
    assert!(text.contains("fds: unknown"), "{text}");
}

/// The environment variable that turns [`helper_inspect_as_nobody`] on, with the pid to inspect.
const AS_NOBODY_PID: &str = "STACKDUMP_IT_INSPECT_AS_NOBODY_PID";

/// Run by [`inspect_without_permission_degrades_with_reasons`] in a copy of this test binary
/// running as `nobody`.
#[test]
#[ignore = "helper: run as nobody by inspect_without_permission_degrades_with_reasons"]
fn helper_inspect_as_nobody() {
    let pid: i32 = std::env::var(AS_NOBODY_PID)
        .expect("run by inspect_without_permission_degrades_with_reasons")
        .parse()
        .expect("a pid");
    // SAFETY: geteuid has no preconditions.
    assert_ne!(unsafe { libc::geteuid() }, 0, "must not run as root");
    check_unprivileged_inspection(pid, WORKERS + 1);
    println!("CHILD OK");
}

#[test]
fn inspect_without_permission_degrades_with_reasons() {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        // Not root: we are the unprivileged side already; any process of another user will do.
        let init_uid = std::fs::metadata("/proc/1").expect("/proc/1").uid();
        assert_ne!(
            init_uid, euid,
            "this test needs root, or a pid 1 owned by another user"
        );
        check_unprivileged_inspection(1, 1);
        return;
    }
    let t = spawn_incident(Preload::No);
    use std::os::unix::process::CommandExt;
    let out = Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            "--exact",
            "findings::helper_inspect_as_nobody",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(AS_NOBODY_PID, t.pid.to_string())
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run the test binary as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD OK"),
        "the unprivileged inspection failed ({}):\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        t.describe()
    );
}
