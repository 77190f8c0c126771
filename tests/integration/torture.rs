//! The torture suite (issue 5): the dumper never harms its host. Each test is a real host
//! (`tests/targets/c/storm.c`, `hostile.c`, `forkchild.c`, `wide.c`, everyday programs) with the
//! library preloaded, real signals and real files, handshakes on observable facts (a line on
//! stdout, a file appearing, a bit in `/proc/PID/status`, the dump thread back in its idle
//! signal wait with the number of triggers it served: see [`dumper_idle`]), each bounded by a
//! deadline.
//!
//! - trigger storm: 100+ triggers at ~50/s into a host whose threads come and go, which forks,
//!   dlopens/dlcloses, mallocs, and spins in a thread that blocks every signal;
//! - a forked child (no exec) that takes the trigger survives;
//! - everyday programs behave exactly as without the preload (output, exit status), setuid
//!   programs included;
//! - hostile surroundings: an unwritable dump dir, symlinks planted at the dump's names, a host
//!   without fds 0-2, a host at RLIMIT_NOFILE, a host with its own USR1 handler (`kill` runs
//!   it, `stackdump dump` still dumps), a host that reset every signal, two copies of the
//!   library;
//! - deep and wide: 2,000 threads in one dump.
//!
//! `STACKDUMP_SOAK=1` makes the storm long (60 s, 3,000 triggers) and prints its numbers.

use crate::util::*;
use stackdump_core::model::{CaptureStatus, Dump, SyscallState, Thread, Tid};

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

fn soak() -> bool {
    std::env::var_os("STACKDUMP_SOAK").is_some_and(|v| v == "1")
}

/// Names in a directory, sorted.
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

/// Wait for a stdout line satisfying `pred`; return it.
#[track_caller]
fn wait_line(t: &mut Target, deadline: Instant, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut found = None;
    poll_until(deadline, || {
        found = t.stdout().into_iter().find(|l| pred(l));
        found.is_some()
    });
    found.unwrap_or_else(|| {
        let status = t.exited();
        panic!(
            "no stdout line {what} before the deadline (exit status {status:?})\n{}",
            t.describe()
        )
    })
}

/// The dump of request `id` (`…-r<id>.json`), waited for.
#[track_caller]
fn wait_request(t: &mut Target, id: u32, deadline: Instant) -> PathBuf {
    let suffix = format!("-r{id}.json");
    let mut found = None;
    poll_until(deadline, || {
        found = dump_files(&t.dump_dir(), t.pid, "json")
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(&suffix));
        found.is_some()
    });
    found.unwrap_or_else(|| {
        let status = t.exited();
        panic!(
            "no stackdump-{}-*{suffix} before the deadline (exit status {status:?})\n{}",
            t.pid,
            t.describe()
        )
    })
}

/// Wait until `signo` is pending neither for the process nor for any thread of `pid`'s main
/// thread view (`ShdPnd` and `SigPnd`).
#[track_caller]
fn wait_not_pending(pid: i32, signo: i32, deadline: Instant) {
    let pending = || {
        ["ShdPnd", "SigPnd"]
            .iter()
            .any(|f| status_mask(pid, f).is_some_and(|m| mask_has(m, signo)))
    };
    assert!(
        poll_until(deadline, || !pending()),
        "signal {signo} still pending in {pid} at the deadline (ShdPnd {:x?}, SigPnd {:x?})",
        status_mask(pid, "ShdPnd"),
        status_mask(pid, "SigPnd")
    );
}

/// Wait until the dump thread is asleep in its idle wait having served exactly `n` triggers
/// ([`dumper_idle`]).
#[track_caller]
fn wait_dumper_served(t: &mut Target, n: u64, deadline: Instant) {
    let dumper = t.tid_of("stackdump");
    let mut last = None;
    let ok = poll_until(deadline, || {
        last = dumper_idle(t, dumper);
        last == Some(n)
    });
    assert!(
        ok,
        "the dump thread did not go back to its idle wait having served {n} trigger(s); last \
         seen {last:?}\n{}",
        t.describe()
    );
}

#[track_caller]
fn thread_named<'a>(d: &'a Dump, name: &str, ctx: &dyn Fn() -> String) -> &'a Thread {
    let found: Vec<&Thread> = d.threads.iter().filter(|th| th.name == name).collect();
    assert_eq!(found.len(), 1, "one thread named {name:?}\n{}", ctx());
    found[0]
}

fn has_function(th: &Thread, name: &str) -> bool {
    th.frames
        .iter()
        .any(|f| function_is(f.function.as_deref(), name))
}

/// What every dump must say truthfully: counters agree with the threads; `signal_blocked` and
/// `handler_replaced` threads were not signalled; `ok` has frames.
#[track_caller]
fn check_consistent(d: &Dump, ctx: &dyn Fn() -> String) {
    assert_eq!(d.format, "stackdump/1", "{}", ctx());
    assert_eq!(d.capture.threads, d.threads.len(), "{}", ctx());
    let ok = d
        .threads
        .iter()
        .filter(|th| th.capture == CaptureStatus::Ok)
        .count();
    assert_eq!(d.capture.captured, ok, "capture.captured\n{}", ctx());
    for th in &d.threads {
        match th.capture {
            CaptureStatus::Ok => assert!(!th.frames.is_empty(), "{} ok without frames", th.tid),
            CaptureStatus::SignalBlocked | CaptureStatus::HandlerReplaced => {
                assert!(
                    !th.signalled,
                    "{} {:?} but signalled\n{}",
                    th.tid,
                    th.capture,
                    ctx()
                )
            }
            CaptureStatus::NoResponse => {
                assert!(
                    th.signalled,
                    "{} no_response, never signalled\n{}",
                    th.tid,
                    ctx()
                )
            }
            _ => {}
        }
    }
    assert_eq!(
        d.threads
            .iter()
            .filter(|th| th.capture == CaptureStatus::Dumper)
            .count(),
        1,
        "exactly one dumper thread\n{}",
        ctx()
    );
}

/// `/proc/PID/fd`: fd number → link target.
#[track_caller]
fn fd_table(pid: i32) -> BTreeMap<i32, String> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// A preloaded `parked` (3 workers) from a private copy.
fn parked_cmd() -> Command {
    let mut cmd = Command::new(private_copy(&c_target("parked")));
    cmd.arg("3");
    cmd
}

fn hostile(mode: &str, env: &[(&str, &str)]) -> Target {
    let mut cmd = Command::new(private_copy(&c_target("hostile")));
    cmd.arg(mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline());
    // READY is printed once both parked threads are on their way to read(): wait until they
    // sleep in it (`check_parked` expects them copied there; with reset-all, a thread still
    // running could not be sent the capture signal).
    for name in ["parked-0", "parked-1"] {
        let tid = t.tid_of(name);
        let asleep = || {
            let k = t.kernel_view(tid);
            k.state == "S" && k.syscall_name() == Some("read")
        };
        assert!(
            poll_until(deadline(), asleep),
            "{name} ({tid}) never slept in read\n{}",
            t.describe()
        );
    }
    t
}

/// `parked-0` and `parked-1` of `hostile` are captured with `park_read` on their stacks.
#[track_caller]
fn check_parked(d: &Dump, ctx: &dyn Fn() -> String) {
    for name in ["parked-0", "parked-1"] {
        let th = thread_named(d, name, ctx);
        assert!(
            th.capture == CaptureStatus::Ok && has_function(th, "park_read") && !th.truncated,
            "{name}: expected a complete stack through park_read\n{}",
            ctx()
        );
    }
}

fn load(path: &Path) -> (Dump, String) {
    let d = read_dump(path);
    let text = dump_text(path, &d);
    (d, text)
}

// ---------------------------------------------------------------------------------------------
// 1. Trigger storm

/// Compile `tests/targets/c/storm_lib.c` into `dir/libstorm.so`.
fn build_storm_lib(dir: &Path) -> PathBuf {
    let out = dir.join("libstorm.so");
    let source = targets_dir().join("c/storm_lib.c");
    compile_c(&out, &[&source], &["-shared", "-fPIC", "-O2", "-g"], &[]);
    out
}

const COUNTERS: [&str; 6] = [
    "main",
    "churner",
    "forker",
    "dlopener",
    "mallocer",
    "masked-spin",
];

fn read_counters(path: &Path) -> [u64; 6] {
    let bytes = std::fs::read(path).expect("read the counter file");
    let mut c = [0u64; 6];
    for (i, v) in c.iter_mut().enumerate() {
        *v = u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    }
    c
}

#[track_caller]
fn storm(triggers: usize, per_second: u32, budget: Duration) {
    let work = tempfile::tempdir().expect("tempdir");
    let lib = build_storm_lib(work.path());
    let counters = work.path().join("counters");
    let mut cmd = Command::new(private_copy(&c_target("storm")));
    cmd.arg(&counters).arg(&lib);
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline());
    let rss_start = vm_rss_kib(t.pid);

    let period = Duration::from_secs(1) / per_second;
    let start = Instant::now();
    for i in 0..triggers {
        let at = start + period * i as u32;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now); // pacing by the clock, not a synchronisation
        }
        if let Some(status) = t.exited() {
            panic!(
                "the host died after {i} triggers ({status})\n{}",
                t.describe()
            );
        }
        send_signal(t.pid, "USR1");
    }
    let sent = start.elapsed();
    // The end: a last trigger with a request id, once no USR1 is pending (a standard signal
    // sent while one is pending is merged into it, value lost).
    wait_not_pending(t.pid, libc::SIGUSR1, deadline());
    let id = 424_242;
    sigqueue(t.pid, libc::SIGUSR1, id as usize);
    let last = wait_request(&mut t, id, secs(budget.as_secs()));
    let total = start.elapsed();
    t.assert_alive();
    let rss_end = vm_rss_kib(t.pid);

    // The host keeps making progress, in every thread kind.
    let before = read_counters(&counters);
    let moved = poll_until(deadline(), || {
        let now = read_counters(&counters);
        now.iter().zip(before.iter()).all(|(a, b)| a > b)
    });
    let after = read_counters(&counters);
    assert!(
        moved,
        "the host stopped making progress after the storm: {:?} before, {:?} after ({COUNTERS:?})\n{}",
        before,
        after,
        t.describe()
    );

    // Every dump complete; the masked spinner listed with its kernel view, not captured.
    let files = dump_files(&t.dump_dir(), t.pid, "json");
    assert!(files.contains(&last));
    let mut served = 0usize;
    let mut durations = Vec::new();
    for f in &files {
        let (d, text) = load(f);
        let ctx = || format!("=== {}\n{text}\n=== target\n{}", f.display(), t.describe());
        check_consistent(&d, &ctx);
        assert!(
            f.with_extension("txt").is_file(),
            "{} has no .txt twin",
            f.display()
        );
        let masked = thread_named(&d, "masked-spin", &ctx);
        assert_eq!(masked.capture, CaptureStatus::SignalBlocked, "{}", ctx());
        assert!(masked.frames.is_empty() && !masked.signalled, "{}", ctx());
        // Spinning, never in a system call: its kernel view says so. On a CPU the kernel says
        // "running"; preempted, or waiting in a page fault for the mmap lock that fork and dlopen
        // take (state D, seen in CI), it gives "-1 sp pc": blocked outside any system call.
        assert!(
            matches!(
                masked.kernel.syscall,
                SyscallState::Running | SyscallState::Blocked { .. }
            ),
            "masked-spin: expected the kernel view of a running thread\n{}",
            ctx()
        );
        served += 1 + d.trigger.coalesced.len();
        durations.push(d.capture.duration_us);
    }
    assert_no_temp_files(&t);
    assert_eq!(
        listing(&t.dump_dir()).len(),
        2 * files.len(),
        "a .txt and a .json per dump, nothing else: {:?}",
        listing(&t.dump_dir())
    );
    assert!(t.stderr().is_empty(), "the host's stderr: {}", t.stderr());
    let slowest = files
        .iter()
        .map(|f| read_dump(f))
        .max_by_key(|d| d.capture.duration_us)
        .expect("a dump");
    println!(
        "storm: slowest dump {} µs, phases {:?}, errors {:?}",
        slowest.capture.duration_us, slowest.capture.phases_us, slowest.errors
    );
    durations.sort_unstable();
    let n = files.len();
    println!(
        "storm: {triggers} triggers + 1 request in {sent:?} (handshake done after {total:?}); \
         {n} dumps serving {served} recorded triggers; dump duration median {} µs, max {} µs; \
         progress during the check {:?} → {:?} ({COUNTERS:?}); host VmRSS {rss_start} KiB at \
         READY, {rss_end} KiB after the last dump (the host mallocs and dlopens all along)",
        durations[n / 2],
        durations[n - 1],
        before,
        after
    );
    // Plausible: never more dumps than triggers; standard signals merge and triggers that come
    // during a dump share the next one, but a dump takes milliseconds, not a second.
    assert!(n <= triggers + 1, "{n} dumps for {} triggers", triggers + 1);
    // How many dumps a storm yields depends on how fast dumps are on this machine right now
    // (other tests run in parallel): a timed lower bound here was flaky under load, so the rate
    // is printed above and measured by the benchmarks (bench/), not asserted.
    assert!(served <= triggers + 1 && served >= n);
}

#[test]
fn trigger_storm_leaves_a_busy_host_alive_and_every_dump_complete() {
    if soak() {
        storm(3000, 50, Duration::from_secs(120));
    } else {
        storm(120, 50, Duration::from_secs(20));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A forked child

#[test]
fn forked_child_survives_the_trigger_and_dumps_only_itself() {
    let mut t = Target::spawn(
        Command::new(private_copy(&c_target("forkchild"))),
        Preload::Yes,
    );
    // Not `wait_ready`: parent and child both print after fork(), in either order, so READY is
    // not necessarily the first line (the child's CHILD-READY came first in about a quarter of
    // the runs without the library, more often with it).
    let ready = format!("READY {}", t.pid);
    wait_line(&mut t, deadline(), &ready, |l| l == ready);
    let line = wait_line(&mut t, deadline(), "CHILD <pid>", |l| {
        l.starts_with("CHILD ")
    });
    let child: i32 = line["CHILD ".len()..].parse().expect("child pid");
    let ready = format!("CHILD-READY {child}");
    wait_line(&mut t, deadline(), &ready, |l| l == ready);
    let child_alive = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| stackdump_core::kernel::proc::parse_stat(&s))
            .is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
    };
    // The child's main thread blocks USR1 outside sigsuspend(): a USR1 sent then is taken by
    // the child's own dump thread (waiting for its trigger with rt_sigtimedwait), which dumps
    // but does not wake main. Each signal goes once main is inside the wait (a loaded CI run
    // once sent the first one between CHILD-READY and the wait, and no CHILD-WOKE came).
    let in_sigsuspend = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/syscall"))
            .map(|s| stackdump_core::kernel::proc::parse_syscall(&s))
            .is_ok_and(|s| syscall_name(&s) == Some("rt_sigsuspend"))
    };
    for n in 1..=4u32 {
        assert!(
            poll_until(deadline(), || in_sigsuspend(child)),
            "the child's main thread never waited in rt_sigsuspend\n{}",
            t.describe()
        );
        if n == 4 {
            sigqueue(child, libc::SIGUSR1, 99);
        } else {
            send_signal(child, "USR1");
        }
        let want = format!("CHILD-WOKE {n}");
        wait_line(&mut t, deadline(), &want, |l| l == want);
        wait_not_pending(child, libc::SIGUSR1, deadline());
        assert!(child_alive(child), "the child died\n{}", t.describe());
    }
    // The child's own dump thread answers request 99 on its own time, not the parent's: wait
    // for its JSON (written last, after the text) before looking for leftovers. CI once looked
    // 64 ms too early and found the child's `.txt.tmp` still being written.
    let suffix = "-r99.json";
    let answered = poll_until(deadline(), || {
        dump_files(&t.dump_dir(), child, "json")
            .iter()
            .any(|p| p.to_string_lossy().ends_with(suffix))
    });
    assert!(
        answered,
        "the child {child} wrote no stackdump-{child}-*{suffix} before the deadline\n{}",
        t.describe()
    );
    // The parent still dumps (a barrier: its dump thread ran after the child's triggers).
    sigqueue(t.pid, libc::SIGUSR1, 7);
    let p = wait_request(&mut t, 7, deadline());
    let (d, text) = load(&p);
    check_consistent(&d, &|| text.clone());
    t.assert_alive();
    assert!(child_alive(child), "the child died\n{}", t.describe());
    // The child has a dump thread of its own (dumper/src/fork.rs): every dump it wrote is its
    // own, complete.
    let theirs: Vec<String> = listing(&t.dump_dir())
        .into_iter()
        .filter(|n| n.contains(&format!("-{child}-")) && n.ends_with(".json"))
        .collect();
    for name in &theirs {
        let (d, _) = load(&t.dump_dir().join(name));
        assert_eq!(d.pid.0, child);
    }
    assert_no_temp_files(&t);
}

// ---------------------------------------------------------------------------------------------
// 3. Everyday programs

struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run `cmd` to completion (killed at the deadline), stdout and stderr to files.
#[track_caller]
fn run(mut cmd: Command, preload: bool) -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    cmd.env_remove("LD_PRELOAD")
        .env("STACKDUMP_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"));
    if preload {
        cmd.env("LD_PRELOAD", libstackdump());
    }
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let d = secs(20);
    let mut status = None;
    poll_until(d, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish in 20 s")
    });
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Ran {
        status,
        stdout: read(&out),
        stderr: read(&err),
    }
}

/// Run `make()` without and with the preload; both must agree exactly. Returns the first.
#[track_caller]
fn same_with_preload(make: impl Fn() -> Command, filter: impl Fn(&str) -> String) -> Ran {
    let a = run(make(), false);
    let b = run(make(), true);
    let what = format!("{:?}", make());
    assert_eq!(a.status, b.status, "{what}: exit status\n{}", b.stderr);
    assert_eq!(filter(&a.stdout), filter(&b.stdout), "{what}: stdout");
    assert_eq!(a.stderr, b.stderr, "{what}: stderr");
    a
}

fn same(s: &str) -> String {
    s.to_string()
}

fn ls() -> Command {
    let mut c = Command::new("ls");
    c.args(["-la", "/"]).env("LC_ALL", "C");
    c
}

fn drop_tmp(s: &str) -> String {
    s.lines()
        .filter(|l| !l.ends_with(" tmp"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn everyday_programs_behave_the_same_with_the_preload() {
    let r = same_with_preload(
        || {
            let mut c = Command::new("sh");
            c.args(["-c", "echo a; echo b >&2; exit 3"]);
            c
        },
        same,
    );
    assert_eq!(
        (r.status.code(), r.stdout.as_str(), r.stderr.as_str()),
        (Some(3), "a\n", "b\n")
    );

    // `/tmp` changes under other tests (its mtime and link count): leave its line out. Other
    // entries of `/` may change between two runs too (another test, the container): a pair of
    // runs that differ is retried, up to 3 pairs; a difference every time fails.
    let ls_equal = (0..3).any(|_| {
        let a = run(ls(), false);
        let b = run(ls(), true);
        a.status == b.status && drop_tmp(&a.stdout) == drop_tmp(&b.stdout) && a.stderr == b.stderr
    });
    assert!(
        ls_equal,
        "ls -la / differs with the preload in 3 pairs of runs"
    );
    let r = run(ls(), true);
    assert!(
        r.status.success() && r.stdout.contains(" usr"),
        "{}",
        r.stdout
    );

    let r = same_with_preload(
        || {
            let mut c = Command::new("python3");
            c.args(["-c", "import sys; print(sys.version); sys.exit(4)"]);
            c
        },
        same,
    );
    assert_eq!(r.status.code(), Some(4), "{}", r.stderr);
    assert!(!r.stdout.is_empty());
}

#[test]
fn unshare_user_namespace_behaves_the_same_with_the_preload() {
    let probe = run(
        {
            let mut c = Command::new("unshare");
            c.args(["-Ur", "true"]);
            c
        },
        false,
    );
    if !probe.status.success() {
        println!(
            "skipped: unshare -Ur is not permitted here ({}): {}",
            probe.status, probe.stderr
        );
        return;
    }
    let r = same_with_preload(
        || {
            let mut c = Command::new("unshare");
            c.args(["-Ur", "id", "-u"]);
            c
        },
        same,
    );
    assert_eq!((r.status.code(), r.stdout.as_str()), (Some(0), "0\n"));
}

const NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

fn setuid_program() -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    [
        "/usr/bin/passwd",
        "/usr/bin/su",
        "/bin/su",
        "/usr/bin/newgrp",
    ]
    .into_iter()
    .find(|p| std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o4000 != 0 && m.uid() == 0))
}

/// A setuid program started by an unprivileged user (secure-execution mode): the loader ignores
/// the preload; nothing is printed. `setpriv` itself runs without the preload here; `env`
/// (not setuid) puts `LD_PRELOAD` in the setuid program's environment.
#[test]
#[ignore = "needs root"]
fn setuid_program_ignores_the_preload_and_prints_nothing_more() {
    needs_root();
    let Some(prog) = setuid_program() else {
        println!("skipped: no setuid-root program found");
        return;
    };
    let lib = libstackdump();
    let make = |preload: bool| {
        let mut c = Command::new("setpriv");
        c.args(NOBODY).arg("/usr/bin/env");
        if preload {
            c.arg(format!("LD_PRELOAD={}", lib.display()));
        }
        c.args([prog, "--help"]);
        c
    };
    let a = run(make(false), false);
    let b = run(make(true), false);
    assert_eq!(
        a.status, b.status,
        "{prog} --help: exit status; stderr {}",
        b.stderr
    );
    assert_eq!(a.stdout, b.stdout, "{prog} --help: stdout");
    assert_eq!(a.stderr, b.stderr, "{prog} --help: stderr");
    assert!(
        !(a.stdout.is_empty() && a.stderr.is_empty()),
        "{prog} --help printed nothing"
    );
}

/// `setpriv` drops privileges the way many daemons do: PR_SET_KEEPCAPS, setresuid, then (with
/// the capabilities it kept, in its own thread) setresgid. glibc applies set*id to every thread
/// of the process; the dump thread has neither the kept capabilities nor keepcaps.
#[test]
#[ignore = "needs root"]
fn setpriv_dropping_privileges_behaves_the_same_with_the_preload() {
    needs_root();
    let r = same_with_preload(
        || {
            let mut c = Command::new("setpriv");
            c.args(NOBODY).args(["id", "-u"]);
            c
        },
        same,
    );
    assert_eq!((r.status.code(), r.stdout.as_str()), (Some(0), "65534\n"));
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile surroundings

/// The target runs as uid 65534 (root would write anyway): `setpriv` (without the preload)
/// execs `env LD_PRELOAD=… parked`, same pid.
#[test]
#[ignore = "needs root"]
fn unwritable_dump_dir_drops_the_dump_quietly_and_the_next_one_works() {
    needs_root();
    use std::os::unix::fs::chown;
    let mut cmd = Command::new("setpriv");
    cmd.args(NOBODY)
        .arg("/usr/bin/env")
        .arg(format!("LD_PRELOAD={}", libstackdump().display()))
        .arg(private_copy(&c_target("parked")))
        .arg("3");
    let mut t = Target::spawn(cmd, Preload::No);
    let dir = t.dump_dir();
    let root = dir.parent().expect("parent").to_path_buf();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod root");
    chown(&dir, Some(65534), Some(65534)).expect("chown dumps");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).expect("chmod 0500");
    t.wait_ready(deadline());
    sigqueue(t.pid, libc::SIGUSR1, 1);
    wait_dumper_served(&mut t, 1, deadline());
    t.assert_alive();
    assert_eq!(
        listing(&dir),
        Vec::<String>::new(),
        "nothing can be written"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    sigqueue(t.pid, libc::SIGUSR1, 2);
    let p = wait_request(&mut t, 2, deadline());
    let (d, text) = load(&p);
    check_consistent(&d, &|| text.clone());
    assert_eq!(d.pid.0, t.pid);
    assert_eq!(listing(&dir).len(), 2, "{:?}", listing(&dir));
    assert_no_temp_files(&t);
    t.assert_alive();
    assert!(t.stderr().is_empty(), "{}", t.stderr());
}

/// Symlinks to a victim file at every name the next dumps could take for 2 s (final and
/// temporary names, both formats): the victim is never written, the symlinks stay, and the dump
/// lands under a name nobody planted.
#[test]
fn symlinks_planted_at_the_dump_names_are_never_followed_and_the_dump_still_appears() {
    use stackdump_core::model::timefmt::UtcTime;
    let mut t = Target::spawn(parked_cmd(), Preload::Yes);
    t.wait_ready(deadline());
    let victim_dir = tempfile::tempdir().expect("tempdir");
    let victim = victim_dir.path().join("passwd");
    std::fs::write(&victim, "root:x:0:0:precious\n").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let dir = t.dump_dir();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let mut planted = Vec::new();
    for ms in now..now + 2000 {
        let stem = format!(
            "stackdump-{}-{}",
            t.pid,
            UtcTime::from_unix_millis(ms).compact()
        );
        for ext in ["txt", "json"] {
            for name in [format!("{stem}.{ext}"), format!(".{stem}.{ext}.tmp")] {
                let link = dir.join(&name);
                std::os::unix::fs::symlink(&victim, &link).expect("plant");
                planted.push(link);
            }
        }
    }
    send_signal(t.pid, "USR1");
    let mut real = None;
    poll_until(secs(10), || {
        real = dump_files(&dir, t.pid, "json")
            .into_iter()
            .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()));
        real.is_some()
    });
    t.assert_alive();
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "root:x:0:0:precious\n",
        "the victim was written through a planted symlink"
    );
    let replaced: Vec<&PathBuf> = planted
        .iter()
        .filter(|l| std::fs::read_link(l).map_or(true, |v| v != victim))
        .filter(|l| {
            !l.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert!(
        replaced.is_empty(),
        "planted final names replaced: {replaced:?}"
    );
    let real = real.unwrap_or_else(|| {
        let status = t.exited();
        panic!(
            "no dump appeared under an unplanted name within 10 s ({} symlinks planted for \
             {}..{} ms; exit status {status:?}); regular files in the dir: {:?}",
            planted.len(),
            now,
            now + 2000,
            std::fs::read_dir(&dir)
                .map(|e| e
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|f| !f.is_symlink()))
                    .map(|e| e.file_name())
                    .collect::<Vec<_>>())
                .unwrap_or_default()
        )
    });
    let (d, text) = load(&real);
    check_consistent(&d, &|| text.clone());
}

/// A host that closed 0, 1 and 2 before starting its threads: nothing of ours ever sits on
/// them. Seen from inside (a host thread checks fds 0-2 constantly and prints what it finds)
/// and from outside (`/proc/PID/fd` sampled during 20 dumps).
#[test]
fn host_without_fds_0_to_2_never_finds_our_files_there() {
    let mut t = hostile("closed-stdio", &[]);
    let before = fd_table(t.pid);
    assert!(
        !before.keys().any(|fd| *fd <= 2),
        "precondition: the host closed 0-2: {before:?}"
    );
    let pid = t.pid;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut samples = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for fd in 0..=2 {
                    if let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
                        seen.push((fd, target));
                    }
                }
                samples += 1;
            }
            (seen, samples)
        })
    };
    for id in 1..=20u32 {
        sigqueue(t.pid, libc::SIGUSR1, id as usize);
        let p = wait_request(&mut t, id, deadline());
        let (d, text) = load(&p);
        let ctx = || format!("{text}\n{}", t.describe());
        check_consistent(&d, &ctx);
        check_parked(&d, &ctx);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, samples) = sampler.join().expect("sampler");
    t.assert_alive();
    let low: Vec<String> = t
        .stdout()
        .into_iter()
        .filter(|l| l.starts_with("LOWFD"))
        .collect();
    println!("closed 0-2: {samples} samples of /proc/{pid}/fd/0..2 during 20 dumps");
    // Distinct targets (with the dump's time stamps and request ids taken out), with counts.
    let mut distinct: BTreeMap<String, usize> = BTreeMap::new();
    let shape = |s: &str| {
        s.split('/')
            .map(|c| {
                if c.starts_with(".stackdump-") {
                    ".stackdump-<pid>-<time>.<ext>.tmp"
                } else {
                    c
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    for l in &low {
        *distinct
            .entry(format!("host saw {}", shape(l)))
            .or_default() += 1;
    }
    for (fd, target) in &seen {
        *distinct
            .entry(format!(
                "/proc saw fd {fd} -> {}",
                shape(&target.to_string_lossy())
            ))
            .or_default() += 1;
    }
    assert!(
        distinct.is_empty(),
        "our files landed on fds 0-2 during dumps (what, how many times): {distinct:#?}"
    );
    assert_eq!(fd_table(t.pid), before, "the host's fds changed");
}

/// A host that has used up RLIMIT_NOFILE: the dump cannot open anything and is dropped; the
/// host is unharmed (alive, every fd it had still there); once the limit is raised (prlimit
/// from outside) the next dump works.
#[test]
fn host_at_rlimit_nofile_is_unharmed_and_dumps_once_fds_are_available() {
    let mut t = hostile("nofile", &[]);
    let line = wait_line(&mut t, deadline(), "FDS <n>", |l| l.starts_with("FDS "));
    let before = fd_table(t.pid);
    assert!(
        before.len() >= 60,
        "precondition: the host used up its 64 fds ({line}): {before:?}"
    );
    sigqueue(t.pid, libc::SIGUSR1, 1);
    wait_dumper_served(&mut t, 1, deadline());
    t.assert_alive();
    let first = listing(&t.dump_dir());
    println!("at RLIMIT_NOFILE (64 of 64 fds used), a dump gives: {first:?}");
    assert_no_temp_files(&t);
    for name in first.iter().filter(|n| n.ends_with(".json")) {
        let (d, text) = load(&t.dump_dir().join(name));
        check_consistent(&d, &|| text.clone());
        println!("  errors: {:?}", d.errors);
    }
    assert_eq!(fd_table(t.pid), before, "the host's fds changed");
    let limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 4096,
    };
    // SAFETY: prlimit on our own child with a valid new limit and no old-limit out-parameter.
    let rc = unsafe { libc::prlimit(t.pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    sigqueue(t.pid, libc::SIGUSR1, 2);
    let p = wait_request(&mut t, 2, deadline());
    let (d, text) = load(&p);
    let ctx = || format!("{text}\n{}", t.describe());
    check_consistent(&d, &ctx);
    check_parked(&d, &ctx);
    assert_eq!(fd_table(t.pid), before, "the host's fds changed");
    t.assert_alive();
}

/// The `HOST-USR1 <n> code <si_code> value <v>` lines of `hostile own-usr1`, as (n, code, v).
fn host_usr1_runs(t: &Target) -> Vec<(u32, i32, i32)> {
    t.stdout()
        .iter()
        .filter_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            match w.as_slice() {
                ["HOST-USR1", n, "code", code, "value", v] => {
                    Some((n.parse().ok()?, code.parse().ok()?, v.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

/// A host that installs its own USR1 handler after start replaces the library's trigger
/// handler. `kill -s USR1` goes to a host thread (main, in `pause`), which runs the host's
/// handler: no dump. `stackdump dump` sends the trigger to the library's dump thread, which
/// keeps it blocked and takes it with `sigwaitinfo`: the dump is written, and the host's handler
/// does not run for it (the next host signal is its handler's run number 2, not 3, and no run
/// ever saw the CLI's request id).
#[test]
fn host_with_its_own_usr1_handler_gets_it_from_kill_and_a_dump_from_stackdump_dump() {
    const MARK: i32 = 4242;
    let mut t = hostile("own-usr1", &[]);
    send_signal(t.pid, "USR1");
    wait_line(&mut t, deadline(), "HOST-USR1 1", |l| {
        l.starts_with("HOST-USR1 1 ")
    });
    assert_eq!(
        host_usr1_runs(&t),
        vec![(1, libc::SI_USER, 0)],
        "the kill ran the host's handler once\n{}",
        t.describe()
    );
    wait_not_pending(t.pid, libc::SIGUSR1, deadline());
    // Nothing reached the library: its dump thread is idle having served no trigger.
    wait_dumper_served(&mut t, 0, deadline());
    assert_eq!(listing(&t.dump_dir()), Vec::<String>::new());

    let out = Command::new(stackdump_bin())
        .args(["dump", &t.pid.to_string(), "--timeout", "30s"])
        .stdin(Stdio::null())
        .output()
        .expect("run stackdump dump");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stackdump dump on a host with its own USR1 handler: {stderr}\n{}",
        t.describe()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The dump thread served exactly that one trigger and is idle again.
    wait_dumper_served(&mut t, 1, deadline());
    let files = dump_files(&t.dump_dir(), t.pid, "json");
    assert_eq!(
        files.len(),
        1,
        "one dump, from stackdump dump: {:?}",
        listing(&t.dump_dir())
    );
    let (d, text) = load(&files[0]);
    let ctx = || format!("{text}\n{}", t.describe());
    check_consistent(&d, &ctx);
    check_parked(&d, &ctx);
    let request = d
        .trigger
        .request
        .unwrap_or_else(|| panic!("the CLI's trigger carries a request id\n{}", ctx()));
    assert!(
        files[0]
            .to_string_lossy()
            .ends_with(&format!("-r{request}.json")),
        "{}",
        files[0].display()
    );
    assert!(
        files[0].with_extension("txt").is_file(),
        "no text twin\n{}",
        ctx()
    );
    assert!(
        stdout.contains(&format!("stackdump of pid {}", t.pid)),
        "the CLI prints the dump: {stdout}"
    );
    assert_no_temp_files(&t);

    // The handshake for "the host's handler did not run for the CLI's trigger": one more host
    // signal, with a mark, must be the handler's second run. (A run for the CLI's trigger would
    // have started before the dump was written, on a host thread; the mark is sent after it.)
    wait_not_pending(t.pid, libc::SIGUSR1, deadline());
    sigqueue(t.pid, libc::SIGUSR1, MARK as usize);
    let want = format!("value {MARK}");
    wait_line(&mut t, deadline(), "HOST-USR1 <n> … value MARK", |l| {
        l.starts_with("HOST-USR1 ") && l.ends_with(&want)
    });
    let runs = host_usr1_runs(&t);
    assert_eq!(
        runs,
        vec![(1, libc::SI_USER, 0), (2, libc::SI_QUEUE, MARK)],
        "the host's handler ran for the kill and the mark only (request id {request})\n{}",
        t.describe()
    );
    assert!(
        !runs.iter().any(|r| r.2 == request as i32),
        "the host's handler saw the CLI's request id"
    );
    // The mark did not reach the library either.
    wait_dumper_served(&mut t, 1, deadline());
    assert_eq!(dump_files(&t.dump_dir(), t.pid, "json").len(), 1);
    t.assert_alive();
    assert!(t.stderr().is_empty(), "the host's stderr: {}", t.stderr());
}

/// A host whose threads all block USR1: a process-directed `kill -s USR1` can only be taken by
/// the library's dump thread, which waits for it with `sigwaitinfo`, so it dumps; `stackdump
/// dump` is not refused ("every thread blocks USR1" no longer means "never delivered" when the
/// dump thread runs) and dumps too.
#[test]
fn host_whose_threads_all_block_usr1_still_dumps_on_kill_and_on_stackdump_dump() {
    let mut t = hostile("masked-usr1", &[]);
    let blocked = |tid: Tid| {
        let status = std::fs::read_to_string(format!("/proc/{}/task/{}/status", t.pid, tid.0))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|m| mask_has(m, libc::SIGUSR1))
    };
    // Every thread of the host blocks USR1. (The library's thread blocks it too, but while it
    // waits for it in sigwaitinfo the kernel shows it unblocked in SigBlk.)
    for (tid, name) in t.thread_names() {
        if name == "stackdump" {
            continue;
        }
        assert!(
            blocked(tid),
            "precondition: {name} ({tid}) blocks USR1\n{}",
            t.describe()
        );
    }
    send_signal(t.pid, "USR1");
    wait_dumper_served(&mut t, 1, deadline());
    let files = dump_files(&t.dump_dir(), t.pid, "json");
    assert_eq!(files.len(), 1, "{:?}", listing(&t.dump_dir()));
    let (d, text) = load(&files[0]);
    let ctx = || format!("{text}\n{}", t.describe());
    check_consistent(&d, &ctx);
    check_parked(&d, &ctx);
    assert_eq!(
        d.trigger.sender_pid,
        Some(std::process::id() as i32),
        "{}",
        ctx()
    );
    assert_eq!(d.trigger.request, None, "{}", ctx());

    wait_not_pending(t.pid, libc::SIGUSR1, deadline());
    let out = Command::new(stackdump_bin())
        .args(["dump", &t.pid.to_string(), "--timeout", "30s"])
        .stdin(Stdio::null())
        .output()
        .expect("run stackdump dump");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stackdump dump on a host whose threads all block USR1: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        t.describe()
    );
    wait_dumper_served(&mut t, 2, deadline());
    let files = dump_files(&t.dump_dir(), t.pid, "json");
    assert_eq!(files.len(), 2, "{:?}", listing(&t.dump_dir()));
    assert_no_temp_files(&t);
    t.assert_alive();
    assert!(t.stderr().is_empty(), "the host's stderr: {}", t.stderr());
}

/// A host that resets every signal (but USR1, the library's trigger) to SIG_DFL: the capture
/// signal would now kill it. The library re-checks its handler before each send: the spinning
/// thread (which needs the signal) is `handler_replaced`, the host lives on.
#[track_caller]
fn reset_all(capture: Option<&str>) {
    let env: Vec<(&str, &str)> = capture
        .map(|c| ("STACKDUMP_CAPTURE", c))
        .into_iter()
        .collect();
    let mut t = hostile("reset-all", &env);
    // READY waits for the parked threads only: the spinner names itself when it first runs,
    // which on a loaded machine may come after READY.
    assert!(
        poll_until(deadline(), || t
            .thread_names()
            .iter()
            .any(|(_, n)| n == "spinner")),
        "the spinner never named itself\n{}",
        t.describe()
    );
    let capture_signo = libc::SIGRTMAX() - 3;
    assert!(
        !status_mask(t.pid, "SigCgt").is_some_and(|m| mask_has(m, capture_signo)),
        "precondition: the capture signal is back to SIG_DFL"
    );
    for id in 1..=5u32 {
        sigqueue(t.pid, libc::SIGUSR1, id as usize);
        let p = wait_request(&mut t, id, deadline());
        let (d, text) = load(&p);
        let ctx = || format!("{text}\n{}", t.describe());
        check_consistent(&d, &ctx);
        let spinner = thread_named(&d, "spinner", &ctx);
        assert_eq!(spinner.capture, CaptureStatus::HandlerReplaced, "{}", ctx());
        assert!(
            d.errors.iter().any(|e| e.contains("replaced or reset")),
            "{}",
            ctx()
        );
        assert_eq!(d.capture.signalled, 0, "{}", ctx());
        if capture.is_none() {
            check_parked(&d, &ctx);
        }
        t.assert_alive();
    }
}

#[test]
fn host_that_reset_every_signal_is_never_killed_by_the_capture_signal() {
    reset_all(None);
}

#[test]
fn host_that_reset_every_signal_survives_with_capture_signals_only() {
    reset_all(Some("signal"));
}

/// Two copies of the library (two paths) in one process: one dump thread, one dump per trigger.
#[test]
fn two_copies_of_the_library_install_once() {
    let copy_dir = tempfile::tempdir().expect("tempdir");
    let copy = copy_dir.path().join("libstackdump-copy.so");
    std::fs::copy(libstackdump(), &copy).expect("copy the library");
    let mut cmd = Command::new("/usr/bin/env");
    cmd.arg(format!(
        "LD_PRELOAD={} {}",
        libstackdump().display(),
        copy.display()
    ))
    .arg(private_copy(&c_target("parked")))
    .arg("3");
    let mut t = Target::spawn(cmd, Preload::No);
    t.wait_ready(deadline());
    let maps = read_to_string(t.proc_dir().join("maps"));
    assert!(
        maps.contains(&libstackdump().display().to_string())
            && maps.contains(&copy.display().to_string()),
        "precondition: both copies are mapped"
    );
    let _ = t.tid_of("stackdump"); // exactly one dump thread
    for id in 1..=3u32 {
        sigqueue(t.pid, libc::SIGUSR1, id as usize);
        let p = wait_request(&mut t, id, deadline());
        let (d, text) = load(&p);
        check_consistent(&d, &|| text.clone());
    }
    wait_dumper_served(&mut t, 3, deadline());
    assert_eq!(dump_files(&t.dump_dir(), t.pid, "json").len(), 3);
    assert_eq!(dump_files(&t.dump_dir(), t.pid, "txt").len(), 3);
    let _ = t.tid_of("stackdump");
    t.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// 5. Deep and wide

#[track_caller]
fn wide(threads: usize, capture: Option<&str>) {
    let mut cmd = Command::new(private_copy(&c_target("wide")));
    cmd.arg(threads.to_string());
    if let Some(c) = capture {
        cmd.env("STACKDUMP_CAPTURE", c)
            .env("STACKDUMP_DEADLINE_MS", "15000");
    }
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline());
    // Every worker asleep in read (state S), seen from outside.
    let all_parked = |t: &Target| {
        let task = t.proc_dir().join("task");
        let mut n = 0;
        for e in std::fs::read_dir(&task).into_iter().flatten().flatten() {
            let stat = std::fs::read(e.path().join("stat")).unwrap_or_default();
            let Some(s) = stackdump_core::kernel::proc::parse_stat(&stat) else {
                continue;
            };
            if s.name.starts_with("w-") && s.state == 'S' {
                n += 1;
            }
        }
        n == threads
    };
    assert!(poll_until(deadline(), || all_parked(&t)), "workers parked");
    let t0 = Instant::now();
    send_signal(t.pid, "USR1");
    let p = wait_for_dump(&t.dump_dir(), t.pid, deadline());
    let took = t0.elapsed();
    let (d, text) = load(&p);
    let ctx = || text.chars().take(20_000).collect::<String>();
    check_consistent(&d, &ctx);
    assert_eq!(d.threads.len(), threads + 2, "workers + main + stackdump");
    let mut bad = Vec::new();
    for th in d.threads.iter().filter(|th| th.name.starts_with("w-")) {
        if th.capture != CaptureStatus::Ok || !has_function(th, "park_read") || th.truncated {
            bad.push(format!(
                "{} {:?} truncated={}",
                th.name, th.capture, th.truncated
            ));
        }
    }
    println!(
        "{threads} threads, capture {:?}: file after {took:?}; dump duration {} µs, phases {:?}, \
         {} copied without a signal, {} signalled",
        capture.unwrap_or("auto"),
        d.capture.duration_us,
        d.capture.phases_us,
        d.capture.without_signal,
        d.capture.signalled
    );
    assert!(
        bad.is_empty(),
        "{} workers incomplete: {:?}",
        bad.len(),
        &bad[..bad.len().min(20)]
    );
    t.assert_alive();
}

#[test]
fn two_thousand_threads_in_one_complete_dump() {
    wide(2000, None);
}

#[test]
fn two_thousand_threads_with_capture_signals_only() {
    wide(2000, Some("signal"));
}
