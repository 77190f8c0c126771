//! Side by side with py-spy (issue 20 point 7): the same Python processes read by `py-spy dump
//! --json` and by `stackdump inspect` (and `stackdump dump`, the library preloaded) must agree
//! thread by thread (matched by OS thread id): the same Python frames (function, file name,
//! line), the same GIL holder, the same idle/active for the threads whose state is stable.
//!
//! The fixture is `tests/targets/python/pyspy.py`: `blocked` (threads parked for good in
//! `Event.wait`, `Queue.get`, `socket.accept`, `time.sleep` in a loop and a lock at the bottom
//! of a recursion, at different depths) and `busy` (a thread holding the GIL for ever in a
//! pure-Python loop while others wait for the GIL or sleep).
//!
//! Every test runs against each CPython 3.8+ on the machine (pyenv's under `$PYENV_ROOT/versions`
//! or `~/.pyenv/versions`, Debian's `/usr/bin/python3.X`, or `STACKDUMP_TEST_PYTHONS`,
//! colon-separated). py-spy is never installed here: it is found on `PATH` (or where `python3 -m
//! pip show -f py-spy` put it); without it the tests print `SKIPPED: py-spy not installed (pip
//! install py-spy)` and pass, unless `STACKDUMP_PYSPY=required` (as `.ci/run` sets it).
//!
//! Each run prints a table per interpreter (`cargo test --release -p stackdump-cli --test pyspy
//! -- --nocapture --test-threads 1`); docs/PYSPY.md records one.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// ---------------------------------------------------------------------------------------------
// py-spy and the interpreters.

fn works(exe: &Path) -> bool {
    Command::new(exe)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// py-spy on `PATH`, or in the `bin` directory pip installed it to.
fn find_py_spy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let exe = dir.join("py-spy");
        if exe.is_file() && works(&exe) {
            return Some(exe);
        }
    }
    // `pip show -f`: `Location: .../site-packages` and the files relative to it, among them
    // `../../../bin/py-spy`.
    let out = Command::new("python3")
        .args(["-m", "pip", "show", "-f", "py-spy"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let location = text
        .lines()
        .find_map(|l| l.strip_prefix("Location:"))?
        .trim();
    text.lines()
        .map(str::trim)
        .filter(|l| l.ends_with("bin/py-spy"))
        .map(|l| Path::new(location).join(l))
        .find(|exe| exe.is_file() && works(exe))
}

/// py-spy, or `None` after printing why the test is skipped (a failure when required).
fn py_spy_or_skip() -> Option<PathBuf> {
    let found = find_py_spy();
    if found.is_none() {
        assert_ne!(
            std::env::var("STACKDUMP_PYSPY").as_deref(),
            Ok("required"),
            "py-spy not found (PATH, python3 -m pip show py-spy) and STACKDUMP_PYSPY=required"
        );
        println!("SKIPPED: py-spy not installed (pip install py-spy)");
    }
    found
}

/// Run `body` for every interpreter, collecting its table rows; report every failure.
fn for_each_python(title: &str, body: impl Fn(&Python, &mut Vec<Row>)) {
    let all = pythons();
    assert!(!all.is_empty(), "no CPython 3.8+ on this machine");
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for py in &all {
        let mut rows = Vec::new();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(py, &mut rows)));
        table.extend(rows.into_iter().map(|r| (py.version.clone(), r)));
        if let Err(e) = outcome {
            let msg = panic_message(&*e);
            failures.push(format!("=== CPython {}\n{msg}", py.version));
        }
    }
    print_table(title, &table);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// The fixture.

/// `python pyspy.py MODE` once it printed READY (the library preloaded when `preload`), and its
/// threads by name (`THREAD name tid` lines).
fn spawn(
    dl: &Deadline,
    py: &Python,
    mode: &str,
    preload: Option<&Path>,
) -> (Proc, BTreeMap<String, i32>) {
    let mut cmd = Command::new(&py.exe);
    cmd.arg(python_target("pyspy.py"))
        .arg(mode)
        .env_remove("LD_PRELOAD")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(dir) = preload {
        cmd.env("LD_PRELOAD", real_lib()).env("STACKDUMP_DIR", dir);
    }
    let mut p = Proc::spawn_piped(cmd);
    let rx = lines_of(p.child.stdout.take().unwrap());
    let mut threads = BTreeMap::new();
    loop {
        let line = rx
            .recv_timeout(dl.left())
            .expect("no READY line before the deadline");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["THREAD", name, tid] => {
                threads.insert(name.to_string(), tid.parse().unwrap());
            }
            ["READY", pid] => {
                assert_eq!(pid, p.pid.to_string(), "{line:?}");
                break;
            }
            _ => panic!("unexpected line from pyspy.py: {line:?}"),
        }
    }
    if mode == "blocked" {
        // MainThread writes READY just before it parks (main_park): wait until it sleeps there
        // (the others sleep at their parking spots before READY; none holds the GIL).
        let (pid, main) = (p.pid, threads["MainThread"]);
        wait_until(dl, "MainThread sleeps in main_park", || {
            task_state(pid, main) == Some('S')
        });
    }
    if preload.is_some() {
        wait_ready(dl, p.pid, libc::SIGUSR1);
    }
    (p, threads)
}

/// The system call a thread is in (`/proc/PID/task/TID/syscall`'s first word), if any.
fn syscall_nr(pid: i32, tid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn task_state(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

// ---------------------------------------------------------------------------------------------
// The two readings, reduced to what both say.

/// One Python frame: function (py-spy: `co_qualname` from 3.11 on, as stackdump), file name
/// (basename: py-spy's `filename` is `co_filename`, relative on 3.8), line.
type PyFrame = (String, String, u64);

/// One Python thread as a tool saw it.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    frames: Vec<PyFrame>,
    active: Option<bool>,
    gil: Option<bool>,
}

fn basename(file: &str) -> String {
    file.rsplit('/').next().unwrap_or(file).to_string()
}

/// `py-spy dump --pid PID --json` (py-spy pauses the process while it reads, its default).
fn py_spy_dump(dl: &Deadline, exe: &Path, pid: i32) -> BTreeMap<i32, Seen> {
    let mut cmd = Command::new(exe);
    cmd.args(["dump", "--pid", &pid.to_string(), "--json"]);
    let out = run(dl, cmd);
    out.assert_code(0);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("py-spy's JSON ({e}):\n{}\n{}", out.stdout, out.stderr));
    let mut threads = BTreeMap::new();
    for t in v
        .as_array()
        .expect("py-spy dump --json: an array of threads")
    {
        let tid = t["os_thread_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no os_thread_id in {t}")) as i32;
        let frames = t["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_string(),
                    basename(f["filename"].as_str().unwrap()),
                    f["line"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        threads.insert(
            tid,
            Seen {
                name: t["thread_name"].as_str().unwrap_or("").to_string(),
                frames,
                active: t["active"].as_bool(),
                gil: t["owns_gil"].as_bool(),
            },
        );
    }
    threads
}

/// `stackdump inspect|dump PID --format json`, the threads that have Python frames.
fn stackdump_dump(dl: &Deadline, how: &str, pid: i32) -> BTreeMap<i32, Seen> {
    let out = stackdump(dl, &[how, &pid.to_string(), "--format", "json"]);
    out.assert_code(0);
    let d = json(&out);
    let mut threads = BTreeMap::new();
    for t in d["threads"].as_array().expect("threads") {
        let py = &t["python"];
        if !py.is_object() {
            continue;
        }
        let merged = t["frames"].as_array().into_iter().flatten();
        let apart = py["frames"].as_array().into_iter().flatten();
        let frames = merged
            .chain(apart)
            .filter(|f| f["python"].is_object())
            .map(|f| {
                (
                    f["function"].as_str().unwrap_or("??").to_string(),
                    basename(f["file"].as_str().unwrap_or("")),
                    f["line"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        threads.insert(
            t["tid"].as_i64().unwrap() as i32,
            Seen {
                name: py["name"].as_str().unwrap_or("").to_string(),
                frames,
                active: py["active"].as_bool(),
                gil: py["gil"].as_bool(),
            },
        );
    }
    threads
}

// ---------------------------------------------------------------------------------------------
// The table.

/// One comparison: a process read by py-spy and by one of ours.
#[derive(Debug, Default)]
struct Row {
    scenario: String,
    threads: usize,
    frames_same: usize,
    gil_same: usize,
    activity_same: usize,
    /// Comparisons counted (threads × samples).
    of: usize,
}

fn print_table(title: &str, table: &[(String, Row)]) {
    println!("\n{title}\n");
    println!(
        "| interpreter | scenario | threads | frames agree | GIL holder same | idle/active same |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (py, r) in table {
        let version = py.split(" (").next().unwrap_or(py);
        let exe = py
            .rsplit_once(" (")
            .map_or("", |x| x.1.trim_end_matches(')'));
        let which = if exe.starts_with("/usr/bin/") {
            format!("{version} (Debian)")
        } else {
            version.to_string()
        };
        println!(
            "| {which} | {} | {} | {}/{} | {}/{} | {}/{} |",
            r.scenario, r.threads, r.frames_same, r.of, r.gil_same, r.of, r.activity_same, r.of
        );
    }
}

fn show(frames: &[PyFrame]) -> String {
    frames
        .iter()
        .map(|(f, file, line)| format!("{f} ({file}:{line})"))
        .collect::<Vec<_>>()
        .join(" <- ")
}

// ---------------------------------------------------------------------------------------------
// The blocked threads.

/// Innermost frame of our own code expected of each thread of `blocked`, and the Python depth
/// the thread has at least (ours plus threading's bootstrap).
const BLOCKED: &[(&str, &str, usize)] = &[
    ("event-waiter", "ev_inner", 7),
    ("queue-getter", "q_inner", 8),
    ("acceptor", "accept_outer", 5),
    ("sleeper", "sleep_loop", 5),
    ("recurser", "recurse", 10),
    ("MainThread", "main_park", 3),
];

/// Compare two readings of the `blocked` process: every thread parked for good, so everything
/// must be equal.
#[track_caller]
fn compare_blocked(
    scenario: &str,
    threads: &BTreeMap<String, i32>,
    spy: &BTreeMap<i32, Seen>,
    ours: &BTreeMap<i32, Seen>,
) -> Row {
    let mut row = Row {
        scenario: scenario.to_string(),
        threads: spy.len(),
        of: spy.len(),
        ..Row::default()
    };
    let mut problems = Vec::new();
    if spy.keys().collect::<Vec<_>>() != ours.keys().collect::<Vec<_>>() {
        problems.push(format!(
            "Python threads: py-spy {:?}, stackdump {:?}",
            spy.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>()
        ));
    }
    for (tid, s) in spy {
        let Some(o) = ours.get(tid) else { continue };
        if s.frames == o.frames {
            row.frames_same += 1;
        } else {
            problems.push(format!(
                "thread {tid} {:?}: frames differ\n  py-spy:    {}\n  stackdump: {}",
                s.name,
                show(&s.frames),
                show(&o.frames)
            ));
        }
        if s.gil == Some(o.gil.unwrap_or(false)) {
            row.gil_same += 1;
        } else {
            problems.push(format!(
                "thread {tid} {:?}: GIL py-spy {:?}, stackdump {:?}",
                s.name, s.gil, o.gil
            ));
        }
        if s.active.is_some() && s.active == o.active {
            row.activity_same += 1;
        } else {
            problems.push(format!(
                "thread {tid} {:?}: active py-spy {:?}, stackdump {:?}",
                s.name, s.active, o.active
            ));
        }
    }
    // Not vacuous: each thread of the fixture is there, idle, at its parking spot.
    for (name, inner, depth) in BLOCKED {
        let tid = threads[*name];
        let Some(s) = spy.get(&tid) else {
            problems.push(format!("py-spy has no thread {name} ({tid})"));
            continue;
        };
        if s.name != *name
            || s.frames.len() < *depth
            || !s.frames.iter().any(|f| f.0 == *inner && f.1 == "pyspy.py")
            || s.active != Some(false)
        {
            problems.push(format!(
                "thread {name} ({tid}) not as parked: {:?} {:?} {}",
                s.name,
                s.active,
                show(&s.frames)
            ));
        }
    }
    assert!(problems.is_empty(), "{scenario}:\n{}", problems.join("\n"));
    row
}

/// Wait until every one of `threads` sleeps again: py-spy stops every thread for its read
/// (PTRACE_INTERRUPT) and wakes them all when it lets go; each goes back to its call, but a
/// dump right after could find it runnable (active) for a moment.
fn asleep_again(dl: &Deadline, pid: i32, threads: &BTreeMap<String, i32>) {
    for (name, &tid) in threads {
        wait_until(
            dl,
            &format!("{name} ({tid}) sleeps again after py-spy"),
            || task_state(pid, tid) == Some('S'),
        );
    }
}

#[test]
fn blocked_threads_agree_with_py_spy() {
    let Some(spy) = py_spy_or_skip() else { return };
    for_each_python(
        "py-spy vs stackdump: threads blocked for good",
        |py, rows| {
            let dl = Deadline::new(120);
            // Read from outside.
            let (p, threads) = spawn(&dl, py, "blocked", None);
            let s = py_spy_dump(&dl, &spy, p.pid);
            asleep_again(&dl, p.pid, &threads);
            let o = stackdump_dump(&dl, "inspect", p.pid);
            rows.push(compare_blocked("blocked, inspect", &threads, &s, &o));
            drop(p);

            // The library preloaded: its dump, and inspect of the same process.
            let dir = Scratch::new("pyspy-blocked");
            let (p, threads) = spawn(&dl, py, "blocked", Some(&dir.path));
            let s = py_spy_dump(&dl, &spy, p.pid);
            asleep_again(&dl, p.pid, &threads);
            let o = stackdump_dump(&dl, "dump", p.pid);
            rows.push(compare_blocked(
                "blocked, dump (preloaded)",
                &threads,
                &s,
                &o,
            ));
            let o = stackdump_dump(&dl, "inspect", p.pid);
            rows.push(compare_blocked(
                "blocked, inspect (preloaded)",
                &threads,
                &s,
                &o,
            ));
            assert!(p.alive());
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The GIL held by a busy thread.

/// futex(2), where the waiters sleep for the GIL (their naps are `select` or `clock_nanosleep`).
#[cfg(target_arch = "x86_64")]
const FUTEX: u32 = 202;
#[cfg(target_arch = "aarch64")]
const FUTEX: u32 = 98;
/// restart_syscall(2): a futex wait with a timeout that py-spy's stop interrupted goes on as
/// this.
#[cfg(target_arch = "x86_64")]
const RESTART_SYSCALL: u32 = 219;
#[cfg(target_arch = "aarch64")]
const RESTART_SYSCALL: u32 = 128;

/// Samples of the `busy` process per tool.
const SAMPLES: usize = 5;

#[test]
fn busy_thread_holds_the_gil_as_py_spy_says() {
    let Some(spy) = py_spy_or_skip() else { return };
    for_each_python(
        "py-spy vs stackdump: one thread holding the GIL",
        |py, rows| {
            let dl = Deadline::new(180);
            let dir = Scratch::new("pyspy-busy");
            let (p, threads) = spawn(&dl, py, "busy", Some(&dir.path));
            let pid = p.pid;
            let cruncher = threads["cruncher"];
            // Settled: the waiters woke from their naps and sleep for the GIL (futex), MainThread
            // sleeps in a futex (the join, or the GIL) and the sleeper sleeps; the cruncher runs.
            // From then on nothing but the cruncher moves: it never lets go of the GIL. Except
            // that py-spy stops every thread for its read (PTRACE_INTERRUPT), which wakes them
            // all when it lets go: each goes back to its call, but a dump right after can find
            // it runnable (active) for a moment. So each stackdump sample waits for this again.
            let settled = || {
                for (name, &tid) in &threads {
                    match name.as_str() {
                        "cruncher" => {}
                        "sleeper" => wait_until(&dl, "the sleeper sleeps", || {
                            task_state(pid, tid) == Some('S')
                        }),
                        _ => wait_until(&dl, &format!("{name} ({tid}) sleeps in futex"), || {
                            matches!(syscall_nr(pid, tid), Some(FUTEX | RESTART_SYSCALL))
                                && task_state(pid, tid) == Some('S')
                        }),
                    }
                }
            };
            settled();
            for how in ["inspect", "dump"] {
                let mut row = Row {
                    scenario: format!("busy, {how} (preloaded), {SAMPLES} samples"),
                    ..Row::default()
                };
                let mut problems = Vec::new();
                let (mut spy_busy, mut ours_busy) = (0, 0);
                for _ in 0..SAMPLES {
                    let s = py_spy_dump(&dl, &spy, pid);
                    settled();
                    let o = stackdump_dump(&dl, how, pid);
                    row.threads = s.len();
                    if s.keys().collect::<Vec<_>>() != o.keys().collect::<Vec<_>>() {
                        problems.push(format!(
                            "Python threads: py-spy {:?}, stackdump {:?}",
                            s.keys().collect::<Vec<_>>(),
                            o.keys().collect::<Vec<_>>()
                        ));
                    }
                    let sc = &s[&cruncher];
                    let oc = &o[&cruncher];
                    spy_busy += usize::from(sc.active == Some(true) && sc.gil == Some(true));
                    ours_busy += usize::from(oc.active == Some(true) && oc.gil == Some(true));
                    for (tid, st) in &s {
                        let Some(ot) = o.get(tid) else { continue };
                        row.of += 1;
                        // The cruncher runs between the two reads: its innermost line may differ
                        // (py-spy reads after stopping it, we read it running); nothing else may.
                        let same_frames = if *tid == cruncher {
                            st.frames.len() == ot.frames.len()
                                && st.frames.iter().zip(&ot.frames).enumerate().all(
                                    |(i, (a, b))| {
                                        a.0 == b.0 && a.1 == b.1 && (i == 0 || a.2 == b.2)
                                    },
                                )
                        } else {
                            st.frames == ot.frames
                        };
                        if same_frames {
                            row.frames_same += 1;
                        } else {
                            problems.push(format!(
                            "thread {tid} {:?}: frames differ\n  py-spy:    {}\n  stackdump: {}",
                            st.name,
                            show(&st.frames),
                            show(&ot.frames)
                        ));
                        }
                        if st.gil == Some(ot.gil.unwrap_or(false)) {
                            row.gil_same += 1;
                        } else if *tid != cruncher {
                            problems.push(format!(
                                "thread {tid} {:?}: GIL py-spy {:?}, stackdump {:?}",
                                st.name, st.gil, ot.gil
                            ));
                        }
                        if st.active.is_some() && st.active == ot.active {
                            row.activity_same += 1;
                        } else if *tid != cruncher {
                            problems.push(format!(
                                "thread {tid} {:?}: active py-spy {:?}, stackdump {:?}",
                                st.name, st.active, ot.active
                            ));
                        }
                    }
                    // The others are idle for both: sleeping, or waiting for the GIL.
                    for (name, &tid) in &threads {
                        if name != "cruncher" && s.get(&tid).and_then(|t| t.active) != Some(false) {
                            problems.push(format!("py-spy: {name} ({tid}) is not idle"));
                        }
                    }
                    assert!(
                        sc.frames.first().is_some_and(|f| f.0 == "crunch_inner"),
                        "py-spy: the cruncher is not crunching: {}",
                        show(&sc.frames)
                    );
                }
                // The cruncher, active with the GIL in most samples, for both.
                if spy_busy * 2 <= SAMPLES || ours_busy * 2 <= SAMPLES {
                    problems.push(format!(
                        "the cruncher is active with the GIL in {spy_busy}/{SAMPLES} samples of \
                     py-spy, {ours_busy}/{SAMPLES} of stackdump {how}"
                    ));
                }
                rows.push(row);
                assert!(problems.is_empty(), "busy, {how}:\n{}", problems.join("\n"));
            }
            assert!(p.alive());
        },
    );
}
