//! End-to-end tests of `stackdump inspect` (stacks of any process from outside, issue 7),
//! `stackdump compare` and the folded format: real processes WITHOUT the preload, handshakes on
//! READY lines and /proc state (never fixed sleeps), children killed and reaped on drop, a
//! deadline per test.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The C example `parked` with `workers` parked threads, once it is READY and its main thread
/// sleeps in `pause()`. The workers are asleep before READY; main prints READY just before its
/// call, and a main thread still running there would be stopped with ptrace by inspect (and
/// show another stack than in the next inspect).
fn spawn_parked(dl: &Deadline, workers: u32) -> Proc {
    let mut cmd = Command::new(c_target("parked"));
    cmd.arg(workers.to_string());
    let target = spawn_ready(dl, cmd).0;
    let pid = target.pid;
    wait_until(
        dl,
        "the parked target's main thread sleeps in pause()",
        || task_state(pid, pid) == Some('S'),
    );
    target
}

fn inspect_json(dl: &Deadline, pid: i32, extra: &[&str]) -> Value {
    let p = pid.to_string();
    let mut args = vec!["inspect", p.as_str(), "--format", "json"];
    args.extend_from_slice(extra);
    let out = stackdump(dl, &args);
    out.assert_code(0);
    json(&out)
}

#[track_caller]
fn thread<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no thread {name} in {d}"))
}

fn functions(t: &Value) -> Vec<String> {
    t["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str().map(str::to_string))
        .collect()
}

/// `want` appears in `have` in this order (other frames may sit between, e.g. inlined ones).
fn in_order(have: &[String], want: &[&str]) -> bool {
    let mut it = have.iter();
    want.iter().all(|w| it.any(|h| h == w))
}

fn worker_sequence(park: &str) -> Vec<String> {
    let mut v = vec![park.to_string()];
    for i in (1..=20).rev() {
        v.push(format!("level_{i:02}"));
    }
    v.extend(["worker_main", "start_thread", "clone3"].map(String::from));
    v
}

fn stat_field(pid: i32, tid: i32, n: usize) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(n - 3)?
        .parse()
        .ok()
}

fn task_state(pid: i32, tid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The spinning thread runs: its state is not a stop and its CPU time grows.
fn assert_runs_on(dl: &Deadline, pid: i32, tid: i32) {
    let utime = |pid, tid| stat_field(pid, tid, 14).unwrap_or(0);
    let before = utime(pid, tid);
    wait_until(dl, "the spinning thread runs again", || {
        utime(pid, tid) > before + 2 && !matches!(task_state(pid, tid), Some('t' | 'T'))
    });
}

/// Every thread of `pid` asleep (state S); false once it is gone.
fn all_asleep(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
        tasks.flatten().all(|t| {
            t.file_name()
                .to_str()
                .and_then(|tid| tid.parse().ok())
                .is_some_and(|tid| task_state(pid, tid) == Some('S'))
        })
    })
}

/// The busy target, once its main thread sleeps in `pause()`. `READY` is printed just before
/// the call: a main thread still running there would be stopped (and seized first) by inspect.
fn spawn_busy(dl: &Deadline, cmd: Command) -> (Proc, i32) {
    let (target, words) = spawn_ready(dl, cmd);
    let spinner: i32 = words[1].parse().unwrap();
    let pid = target.pid;
    wait_until(
        dl,
        "the busy target's main thread sleeps in pause()",
        || task_state(pid, pid) == Some('S'),
    );
    (target, spinner)
}

// ---------------------------------------------------------------------------------------------

#[test]
fn parked_c_example_without_preload_has_full_symbolized_stacks() {
    let dl = Deadline::new(60);
    let target = spawn_parked(&dl, 6);
    let d = inspect_json(&dl, target.pid, &[]);
    assert_eq!(d["capture"]["method"], "outside");
    assert_eq!(d["capture"]["signalled"], 0);
    for (name, park) in [
        ("reader-0", "park_read"),
        ("sleeper-1", "park_sleep"),
        ("waiter-2", "park_cond"),
        ("reader-3", "park_read"),
    ] {
        let t = thread(&d, name);
        assert_eq!(t["capture"], "ok", "{t}");
        assert!(t.get("signalled").map_or(true, |s| s == false), "{t}");
        assert_ne!(t["truncated"], true, "{t}");
        let f = functions(t);
        let want = worker_sequence(park);
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        assert!(in_order(&f, &want), "{name}: {f:?}");
        let level = t["frames"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == "level_13")
            .unwrap();
        assert!(
            level["file"].as_str().unwrap().ends_with("parked.c"),
            "{level}"
        );
        assert!(level["line"].as_u64().unwrap() > 0);
    }
    // The masked thread blocks every signal: irrelevant from outside.
    assert!(in_order(
        &functions(thread(&d, "masked")),
        &["masked_main", "start_thread", "clone3"]
    ));
    // Nothing was stopped: every thread was blocked in a call.
    assert!(
        !d["errors"].to_string().contains("stopped with ptrace"),
        "{}",
        d["errors"]
    );
    // The readers' pipe: the target holds both ends, and nobody else: every process was
    // looked through for other holders (an end may be anywhere: inherited by a grandchild,
    // passed over a socket) and none was found.
    let fd = thread(&d, "reader-0")["syscall"]["fd"]["target"]
        .as_str()
        .expect("reader-0 blocked on an fd")
        .to_string();
    let pipe = d["process"]["pipes"]
        .as_array()
        .expect("process.pipes")
        .iter()
        .find(|p| fd == format!("pipe:[{}]", p["inode"]))
        .unwrap_or_else(|| panic!("the readers' {fd} in {}", d["process"]["pipes"]));
    assert_eq!(pipe["others_checked"], true, "{pipe}");
    assert_eq!(pipe["others"], serde_json::json!([]), "{pipe}");
    // The text form: the same frames with file:line, the pipe's search, and the process is
    // left sleeping.
    let out = stackdump(&dl, &["inspect", &target.pid.to_string()]);
    out.assert_code(0)
        .stdout_has("inspected from outside")
        .stdout_has("park_read at ")
        .stdout_has("parked.c:");
    let said = if pipe.get("others_note").is_some() {
        "no other holder found ("
    } else {
        "no other process holds it"
    };
    out.stdout_has(said);
    assert_eq!(state(target.pid), Some('S'));
}

#[test]
fn consistent_stops_all_threads_and_lets_them_go() {
    let dl = Deadline::new(60);
    let target = spawn_parked(&dl, 3);
    let d = inspect_json(&dl, target.pid, &["--consistent"]);
    assert_eq!(d["capture"]["method"], "outside+consistent");
    let f = functions(thread(&d, "reader-0"));
    let want = worker_sequence("park_read");
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert!(in_order(&f, &want), "{f:?}");
    assert!(
        d["errors"].to_string().contains("all at once"),
        "{}",
        d["errors"]
    );
    assert!(target.alive());
    for t in std::fs::read_dir(format!("/proc/{}/task", target.pid)).unwrap() {
        let tid: i32 = t.unwrap().file_name().to_str().unwrap().parse().unwrap();
        assert_ne!(
            task_state(target.pid, tid),
            Some('t'),
            "thread {tid} left stopped"
        );
    }
}

#[test]
fn a_busy_thread_is_captured_with_a_short_stop() {
    let dl = Deadline::new(60);
    let (target, spinner) = spawn_busy(&dl, Command::new(c_target("busy")));
    let d = inspect_json(&dl, target.pid, &[]);
    let t = thread(&d, "spinner");
    assert_eq!(t["capture"], "ok", "{t}");
    assert!(
        in_order(
            &functions(t),
            &[
                "spin_here",
                "spin_outer",
                "spinner_main",
                "start_thread",
                "clone3"
            ]
        ),
        "{:?}",
        functions(t)
    );
    let errors = d["errors"].to_string();
    assert!(
        errors.contains(&format!("{spinner} (spinner)")) && errors.contains(" µs"),
        "the stop time of the spinner is reported: {errors}"
    );
    // main was blocked in pause(): read without a stop.
    assert_eq!(d["capture"]["without_signal"], 1, "{}", d["capture"]);
    assert_runs_on(&dl, target.pid, spinner);
}

#[test]
fn the_cli_killed_while_it_holds_a_thread_leaves_the_target_running() {
    let dl = Deadline::new(60);
    let (target, spinner) = spawn_busy(&dl, Command::new(c_target("busy")));
    for how in [libc::SIGKILL, libc::SIGTERM] {
        let mut cmd = cli(&["inspect", &target.pid.to_string()]);
        cmd.env("STACKDUMP_TEST_PAUSE_AFTER_SEIZE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut p = Proc::spawn_piped(cmd);
        let err = p.child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = loop {
            let l = rx.recv_timeout(dl.left()).expect("no SEIZED line");
            if l.starts_with("SEIZED ") {
                break l;
            }
        };
        assert_eq!(line, format!("SEIZED {spinner}"));
        // It holds the spinner stopped right now.
        assert_eq!(task_state(target.pid, spinner), Some('t'));
        // SAFETY: kill with a pid we spawned and still own (not reaped yet).
        assert_eq!(unsafe { libc::kill(p.pid, how) }, 0);
        let status = p.child.wait().unwrap();
        if how == libc::SIGTERM {
            // SIGTERM is caught: it lets the thread go and exits 130 after printing.
            assert_eq!(status.code(), Some(130), "{status:?}");
        }
        assert_runs_on(&dl, target.pid, spinner);
        assert!(target.alive());
    }
}

#[test]
fn the_eintr_host_survives_50_inspects() {
    let dl = Deadline::new(120);
    let (mut target, _) = spawn_ready(&dl, Command::new(c_target("eintr")));
    // READY is printed just before the threads enter their calls (and main its pause()): a
    // thread still running there would be stopped with ptrace, and interrupted if it entered
    // its call meanwhile.
    let tpid = target.pid;
    wait_until(
        &dl,
        "every thread of the eintr host sleeps in its call",
        || all_asleep(tpid),
    );
    let pid = target.pid.to_string();
    for i in 0..50 {
        let out = stackdump(&dl, &["inspect", &pid, "--format", "json"]);
        assert_eq!(out.code, 0, "inspect #{i}: {}", out.stderr);
        assert!(
            target.child.try_wait().unwrap().is_none(),
            "the host exited after inspect #{i} (a blocked call returned: EINTR)"
        );
        if i == 0 {
            let d = json(&out);
            assert_eq!(
                d["capture"]["captured"], d["capture"]["threads"],
                "every thread is captured: {}",
                d["capture"]
            );
            assert!(!d["errors"].to_string().contains("stopped with ptrace"));
        }
    }
    assert!(target.alive());
}

/// Wait until the `workers` threads `worker-*` of the incident `pid` sleep for good in write(2)
/// on fd 2, the full pipe: two readings in a row agree (same call and registers, same context
/// switches), state S, wait channel in pipe_write. READY alone does not prove it: incident.py
/// reads a worker's system call and then its state, one after the other, so a worker on its
/// way (past one write, waiting for the GIL) may pass its check.
fn wait_workers_stuck(dl: &Deadline, pid: i32, workers: usize) {
    let tids = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.starts_with("worker-"))
                    })
                    .filter_map(|t| t.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let view = |tid: &str| -> Option<[String; 4]> {
        let dir = format!("/proc/{pid}/task/{tid}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let status = read("status")?;
        let switches: String = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .collect();
        let stat = read("stat")?;
        let state = stat.rsplit_once(") ")?.1.chars().next()?.to_string();
        Some([read("syscall")?, state, read("wchan")?, switches])
    };
    let write_nr = libc::SYS_write.to_string();
    wait_until(
        dl,
        "every worker sleeps in write(2) on the full pipe",
        || {
            let tids = tids();
            tids.len() == workers
                && tids.iter().all(|tid| {
                    let (Some(a), Some(b)) = (view(tid), view(tid)) else {
                        return false;
                    };
                    let mut call = a[0].split_whitespace();
                    call.next() == Some(write_nr.as_str())
                        && call.next() == Some("0x2")
                        && a == b
                        && a[1] == "S"
                        && a[2].contains("pipe_write")
                })
        },
    );
}

fn incident(dl: &Deadline) -> Option<Proc> {
    if Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("skipped: no python3");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/targets/python/incident.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["4", "--clients", "3"]);
    let target = spawn_ready(dl, cmd).0;
    wait_workers_stuck(dl, target.pid, 4);
    Some(target)
}

#[test]
fn the_incident_without_preload_names_the_stuck_write_and_compare_says_stuck() {
    let dl = Deadline::new(120);
    let Some(target) = incident(&dl) else { return };
    let pid = target.pid.to_string();
    let scratch = Scratch::new("inspect-incident");
    for i in 0..3 {
        let out = stackdump(&dl, &["inspect", &pid, "--format", "json"]);
        out.assert_code(0);
        if i == 0 {
            let d = json(&out);
            let w = thread(&d, "worker-0");
            let f = functions(w);
            assert!(
                f.first().is_some_and(|f| f.contains("write")),
                "innermost frame is the write: {f:?}"
            );
            assert!(
                in_order(
                    &f,
                    &["_db_execute", "handle_request", "start_thread", "clone3"]
                ),
                "{f:?}"
            );
            let findings = d["findings"].to_string();
            assert!(findings.contains("65536"), "{findings}");
            assert!(findings.contains("CLOSE_WAIT"), "{findings}");
            // The process facts (gathered while the stacks are taken): the full pipe's read
            // end is held by the `sleep` child, which is not reading it.
            let pipes = d["process"]["pipes"].as_array().expect("process.pipes");
            let holders: Vec<&Value> = pipes
                .iter()
                .filter(|p| p["full"] == true)
                .flat_map(|p| p["others"].as_array().into_iter().flatten())
                .collect();
            assert!(
                holders
                    .iter()
                    .any(|h| h["comm"] == "sleep" && h["end"] == "read" && h["reading"] == false),
                "the sleep child holds the full pipe's read end: {pipes:?}"
            );
        }
        std::fs::write(
            scratch.join(&format!("stackdump-{pid}-{i}.json")),
            &out.stdout,
        )
        .unwrap();
    }
    let out = stackdump(&dl, &["compare", scratch.str()]);
    out.assert_code(0).stdout_has("stuck");
    for w in 0..4 {
        out.stdout_has(&format!("worker-{w}"));
    }
    let out = stackdump(&dl, &["compare", scratch.str(), "--format", "json"]);
    out.assert_code(0);
    let c: Value = serde_json::from_str(&out.stdout).unwrap();
    let stuck: usize = c["processes"][0]["stuck"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["threads"].as_array().unwrap().len())
        .sum();
    assert!(stuck >= 4, "{c}");
}

#[test]
fn folded_format_counts_distinct_stacks() {
    let dl = Deadline::new(60);
    let target = spawn_parked(&dl, 6);
    let out = stackdump(
        &dl,
        &["inspect", &target.pid.to_string(), "--format", "folded"],
    );
    out.assert_code(0);
    let levels: Vec<String> = (1..=20).map(|i| format!("level_{i:02}")).collect();
    let reader = format!(
        "clone3;start_thread;worker_main;{};park_read;",
        levels.join(";")
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&reader))
        .unwrap_or_else(|| panic!("no reader stack in:\n{}", out.stdout));
    assert!(line.ends_with(" 2"), "two readers of six workers: {line}");
    for l in out.stdout.lines() {
        let (_, n) = l.rsplit_once(' ').unwrap();
        assert!(n.parse::<u32>().is_ok(), "{l}");
    }
}

#[test]
fn usage_and_missing_targets_have_their_exit_codes() {
    let dl = Deadline::new(30);
    stackdump(&dl, &["inspect", "2147483000"])
        .assert_code(1)
        .stderr_has("no process");
    stackdump(&dl, &["inspect", "x"]).assert_code(2);
    stackdump(&dl, &["compare", "/nonexistent/dumps"]).assert_code(2);
    let scratch = Scratch::new("inspect-bad-compare");
    std::fs::write(scratch.join("stackdump-1-x.json"), "{not json").unwrap();
    stackdump(&dl, &["compare", scratch.str()]).assert_code(2);
    // `dump` of a process without the library still refuses, and points at inspect.
    let mut sleep = Command::new("sleep");
    sleep.arg("1000");
    let target = Proc::spawn(sleep);
    wait_until(&dl, "sleep runs", || state(target.pid) == Some('S'));
    let pid = target.pid.to_string();
    stackdump(&dl, &["dump", &pid])
        .assert_code(3)
        .stderr_has(&format!("stackdump inspect {pid}"));
    assert!(target.alive());
}

#[test]
#[ignore = "needs root"]
fn without_ptrace_permission_the_reason_and_the_kernel_view() {
    needs_root();
    let dl = Deadline::new(60);
    // A root process, inspected by nobody.
    let target = spawn_parked(&dl, 3);
    let mut c = cli(&["inspect", &target.pid.to_string()]);
    c.uid(65534).gid(65534);
    let out = run(&dl, c);
    out.assert_code(0)
        .stderr_has("no stacks for process")
        .stderr_has("uid 0")
        .stdout_has("stackdump of pid")
        .stdout_has("reader-0");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);

    // A non-dumpable process of nobody, inspected by nobody.
    let mut cmd = Command::new(c_target("busy"));
    cmd.arg("nodump").uid(65534).gid(65534);
    let (nd, _) = spawn_ready(&dl, cmd);
    let mut c = cli(&["inspect", &nd.pid.to_string()]);
    c.uid(65534).gid(65534);
    run(&dl, c)
        .assert_code(0)
        .stderr_has("not dumpable")
        .stdout_has("stackdump of pid");
    // Root (CAP_SYS_PTRACE) may read it.
    let d = inspect_json(&dl, nd.pid, &[]);
    assert!(
        d["capture"]["captured"].as_u64().unwrap() >= 1,
        "{}",
        d["capture"]
    );
    assert!(nd.alive());
}

#[test]
fn dump_prints_folded_stacks_of_one_dump_or_many() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("dump-folded");
    let mut cmd = cli(&["run", "--dir", dir.str(), "--", "sleep", "1000"]);
    cmd.env("STACKDUMP_LIB", real_lib());
    let target = Proc::spawn(cmd);
    wait_ready(&dl, target.pid, libc::SIGUSR1);
    // The library is ready before `sleep`'s main() runs: wait until main sleeps in its call.
    let tpid = target.pid;
    wait_until(&dl, "sleep's main thread sleeps in nanosleep", || {
        task_state(tpid, tpid) == Some('S')
            && std::fs::read_to_string(format!("/proc/{tpid}/syscall")).is_ok_and(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|nr| nr.parse::<libc::c_long>().ok())
                    .is_some_and(|nr| nr == libc::SYS_nanosleep || nr == libc::SYS_clock_nanosleep)
            })
    });
    let pid = target.pid.to_string();
    let out = stackdump(&dl, &["dump", &pid, "--format", "folded"]);
    out.assert_code(0);
    let main = out
        .stdout
        .lines()
        .find(|l| l.contains("nanosleep"))
        .unwrap_or_else(|| panic!("no sleeping main thread in:\n{}", out.stdout));
    assert!(main.ends_with(" 1"), "{main}");
    // Three dumps summed.
    let out = stackdump(
        &dl,
        &[
            "dump", &pid, "--format", "folded", "--every", "100ms", "--count", "3",
        ],
    );
    out.assert_code(0);
    let main = out
        .stdout
        .lines()
        .find(|l| l.contains("nanosleep"))
        .unwrap();
    assert!(main.ends_with(" 3"), "{}", out.stdout);
    // With --out: a .folded file beside each dump.
    let saved = Scratch::new("dump-folded-out");
    let out = stackdump(
        &dl,
        &["dump", &pid, "--format", "folded", "--out", saved.str()],
    );
    out.assert_code(0);
    let folded: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.ends_with(".folded"))
        .collect();
    assert_eq!(folded.len(), 1, "{}", out.stdout);
    assert!(std::fs::read_to_string(folded[0])
        .unwrap()
        .contains("nanosleep"));
    assert!(out.stdout.lines().any(|l| l.ends_with(".json")));
}

/// The C library's separate debug file, when it has one with compressed DWARF (Debian's
/// libc6-dbg): the case the cache of decompressed debug sections is for.
fn compressed_libc_debug_file(pid: i32) -> Option<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))?;
    let debug = stackdump_core::stack::symbols::debug_source(Path::new(libc), Path::new("/"));
    let sections = Command::new("readelf")
        .arg("-SW")
        .arg(&debug)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&sections.stdout);
    // The flags column of `.debug_info` holds C when it is compressed.
    let line = text.lines().find(|l| l.contains(" .debug_info "))?;
    let flags = line.split_whitespace().rev().nth(3)?;
    (debug != Path::new(libc) && flags.contains('C')).then_some(debug)
}

/// A frame's function, file and line.
type Place = (Value, Value, Value);

/// Frames of every thread, by name.
fn frames_by_thread(d: &Value) -> Vec<(String, Vec<Place>)> {
    let mut out: Vec<_> = d["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let frames = t["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| (f["function"].clone(), f["file"].clone(), f["line"].clone()))
                .collect();
            (t["name"].as_str().unwrap().to_string(), frames)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn decompressed_debug_sections_are_cached_per_user_and_give_the_same_stacks() {
    let dl = Deadline::new(60);
    let target = spawn_parked(&dl, 3);
    let pid = target.pid.to_string();
    let home = Scratch::new("cache-home");
    let run = |env: &[(&str, &str)]| {
        let mut cmd = cli(&["inspect", &pid, "--format", "json"]);
        cmd.env_remove("STACKDUMP_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME")
            .env("HOME", home.str());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(&dl, cmd);
        out.assert_code(0);
        json(&out)
    };
    let kind = |dir: &Path, ext: &str| -> Vec<PathBuf> {
        std::fs::read_dir(dir.join("dwarf"))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == ext))
                    .collect()
            })
            .unwrap_or_default()
    };
    let cached = |dir: &Path| kind(dir, "sections");
    // Turned off: nothing written anywhere.
    let off = run(&[("STACKDUMP_CACHE_DIR", "off")]);
    assert!(!home.join(".cache").exists());
    // The default place: ~/.cache/stackdump; the first run writes, the second reads.
    let first = run(&[]);
    let second = run(&[]);
    let dir = home.join(".cache/stackdump");
    let files = cached(&dir);
    match compressed_libc_debug_file(target.pid) {
        Some(debug) => {
            assert_eq!(files.len(), 1, "{files:?} for {}", debug.display());
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(dir.join("dwarf"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        None => eprintln!("the C library has no compressed debug file here: nothing to cache"),
    }
    // The names the first run gave the modules' addresses are kept (by the build id of each
    // module's debug file: the C library's at least), so that the next run does not set up
    // their DWARF again.
    let names = kind(&dir, "names");
    assert!(!names.is_empty(), "no names kept in {}", dir.display());
    // The same stacks, with or without the cache, written or read.
    let want = frames_by_thread(&off);
    assert!(want
        .iter()
        .any(|(_, f)| f.iter().any(|f| f.0 == "park_read")));
    assert_eq!(frames_by_thread(&first), want);
    assert_eq!(frames_by_thread(&second), want);
    // A damaged cache file is not used (and the stacks are still right).
    for f in files.iter().chain(&names) {
        std::fs::write(f, b"SDDWARF1 but not really").unwrap();
    }
    assert_eq!(frames_by_thread(&run(&[])), want);
    // XDG_CACHE_HOME, then STACKDUMP_CACHE_DIR, name the place.
    let xdg = Scratch::new("cache-xdg");
    run(&[("XDG_CACHE_HOME", xdg.str())]);
    assert_eq!(cached(&xdg.join("stackdump")).len(), files.len());
    let own = Scratch::new("cache-own");
    run(&[
        ("STACKDUMP_CACHE_DIR", own.str()),
        ("XDG_CACHE_HOME", xdg.str()),
    ]);
    assert_eq!(cached(&own.path).len(), files.len());
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs: Ctrl-C in every phase, bombs, files that are no dumps (issue 15)

/// Spawn `cmd` with its stdout a pipe nobody reads, wait until its main thread blocks writing
/// to it, send `sig`, and return (exit code, time from the signal to the exit).
#[track_caller]
fn interrupted_while_writing(dl: &Deadline, mut cmd: Command, sig: i32) -> (Option<i32>, Duration) {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut p = Proc::spawn_piped(cmd);
    let _unread = p.child.stdout.take().unwrap();
    wait_until(dl, "the CLI blocks writing its output", || {
        std::fs::read_to_string(format!("/proc/{}/wchan", p.pid))
            .is_ok_and(|w| w.trim().ends_with("pipe_write"))
    });
    let sent = std::time::Instant::now();
    // SAFETY: kill with a pid we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(p.pid, sig) }, 0);
    let status = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        assert!(!dl.passed(), "the CLI did not end after the signal");
        std::thread::sleep(Duration::from_millis(1));
    };
    (status.code(), sent.elapsed())
}

#[test]
fn ctrl_c_ends_inspect_blocked_writing_its_output_and_the_target_runs_on() {
    let dl = Deadline::new(120);
    // 300 threads: a JSON dump far larger than a pipe holds.
    let target = spawn_parked(&dl, 300);
    let mut took = Vec::new();
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGINT,
    ] {
        let cmd = cli(&["inspect", &target.pid.to_string(), "--format", "json"]);
        let (code, t) = interrupted_while_writing(&dl, cmd, sig);
        assert_eq!(code, Some(130), "signal {sig}");
        took.push(t);
        // No thread of the target is left stopped.
        for task in std::fs::read_dir(format!("/proc/{}/task", target.pid)).unwrap() {
            let tid: i32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
            assert!(
                !matches!(task_state(target.pid, tid), Some('t' | 'T')),
                "thread {tid} left stopped"
            );
        }
    }
    // A parent that blocked SIGALRM (the mask is inherited through fork and exec) does not
    // keep the CLI from ending: its watchdog timer's signal is unblocked at start.
    let mut cmd = cli(&["inspect", &target.pid.to_string(), "--format", "json"]);
    // SAFETY: between fork and exec only sigprocmask, async-signal-safe, on sets on our stack.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGALRM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let (code, t) = interrupted_while_writing(&dl, cmd, libc::SIGINT);
    assert_eq!(code, Some(130), "SIGINT with SIGALRM blocked by the parent");
    took.push(t);
    took.sort();
    eprintln!("inspect blocked in write(2), signal to exit: {took:?}");
    // Generous for a loaded machine; the watchdog's grace is 50 ms.
    assert!(took[took.len() - 1] < Duration::from_secs(2), "{took:?}");
    assert!(target.alive());
}

#[test]
fn ctrl_c_while_inspect_holds_a_thread_ends_it_and_the_thread_runs_on() {
    let dl = Deadline::new(60);
    let (target, spinner) = spawn_busy(&dl, Command::new(c_target("busy")));
    let mut took = Vec::new();
    for _ in 0..5 {
        let mut cmd = cli(&["inspect", &target.pid.to_string()]);
        cmd.env("STACKDUMP_TEST_PAUSE_AFTER_SEIZE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut p = Proc::spawn_piped(cmd);
        let err = p.child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let l = rx.recv_timeout(dl.left()).expect("no SEIZED line");
            if l.starts_with("SEIZED ") {
                break;
            }
        }
        let sent = std::time::Instant::now();
        // SAFETY: kill with a pid we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(p.pid, libc::SIGINT) }, 0);
        let status = loop {
            if let Some(st) = p.child.try_wait().unwrap() {
                break st;
            }
            assert!(!dl.passed(), "inspect did not end after Ctrl-C");
            std::thread::sleep(Duration::from_millis(1));
        };
        took.push(sent.elapsed());
        assert_eq!(status.code(), Some(130), "{status:?}");
        assert_runs_on(&dl, target.pid, spinner);
    }
    took.sort();
    eprintln!("inspect holding a thread, Ctrl-C to exit: {took:?}");
    assert!(took[took.len() - 1] < Duration::from_secs(2), "{took:?}");
}

#[test]
fn compare_refuses_devices_fifos_symlinks_and_huge_files_at_once() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("compare-hostile");
    let zero = dir.join("stackdump-1-20260101T000000.000Z.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = dir.join("fifo.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let big = dir.join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    for (path, says) in [
        (zero.to_str().unwrap(), "a symbolic link, not a dump file"),
        (fifo.to_str().unwrap(), "a FIFO, not a regular file"),
        ("/dev/zero", "a device, not a regular file"),
        (
            big.to_str().unwrap(),
            "68157440 bytes, larger than the 64 MiB limit",
        ),
        // A directory whose stackdump-*.json is a symlink planted to /dev/zero.
        (dir.str(), "a symbolic link"),
    ] {
        let started = std::time::Instant::now();
        let out = stackdump(&dl, &["compare", path]);
        out.assert_code(2).stderr_has(says).stderr_has("refused");
        assert!(started.elapsed() < Duration::from_secs(10), "{path}");
    }
}

/// Little-endian ELF64 section headers by name: (name, offset of the header).
fn elf_sections(elf: &[u8]) -> Vec<(String, usize)> {
    let u = |o: usize, n: usize| {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&elf[o..o + n]);
        u64::from_le_bytes(v) as usize
    };
    let (shoff, shentsize, shnum, shstrndx) = (u(0x28, 8), u(0x3a, 2), u(0x3c, 2), u(0x3e, 2));
    let strtab = u(shoff + shstrndx * shentsize + 24, 8);
    (0..shnum)
        .map(|i| {
            let h = shoff + i * shentsize;
            let name = strtab + u(h, 4);
            let end = name + elf[name..].iter().position(|&c| c == 0).unwrap();
            (String::from_utf8_lossy(&elf[name..end]).into_owned(), h)
        })
        .collect()
}

/// Make section `name` compressed (SHF_COMPRESSED, an Elf64_Chdr stating `ch_size`, `data`
/// appended to the file).
#[track_caller]
fn elf_compress(elf: &mut Vec<u8>, name: &str, ch_type: u32, ch_size: u64, data: &[u8]) {
    let h = elf_sections(elf)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1;
    while elf.len() % 8 != 0 {
        elf.push(0);
    }
    let at = elf.len() as u64;
    elf.extend_from_slice(&ch_type.to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes());
    elf.extend_from_slice(&ch_size.to_le_bytes());
    elf.extend_from_slice(&1u64.to_le_bytes());
    elf.extend_from_slice(data);
    let size = elf.len() as u64 - at;
    let flags = u64::from_le_bytes(elf[h + 8..h + 16].try_into().unwrap()) | 0x800;
    elf[h + 8..h + 16].copy_from_slice(&flags.to_le_bytes());
    elf[h + 24..h + 32].copy_from_slice(&at.to_le_bytes());
    elf[h + 32..h + 40].copy_from_slice(&size.to_le_bytes());
}

/// A zstd frame of `total` zero bytes in RLE blocks of 128 KiB (4 bytes each).
fn zstd_rle_bomb(total: u64) -> Vec<u8> {
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    let mut left = total;
    while left > 0 {
        let n = left.min(128 << 10);
        left -= n;
        let h = ((n as u32) << 3) | (1 << 1) | u32::from(left == 0);
        f.extend_from_slice(&h.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

#[test]
fn inspect_of_a_process_with_dwarf_bombs_stays_in_bounds_and_prints_the_stack() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("inspect-bomb");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    std::fs::write(
        dir.join("bomb.c"),
        "#include <stdio.h>\n#include <unistd.h>\n\
         __attribute__((noinline)) void bomb_park(void) {\n\
           printf(\"READY %d\\n\", (int)getpid()); fflush(stdout);\n\
           for (;;) pause();\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("main.c"),
        "void bomb_park(void);\nint main(void) { bomb_park(); return 0; }\n",
    )
    .unwrap();
    let lib = dir.join("libbomb.so");
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    assert!(ok(Command::new(&cc)
        .args(["-g", "-O1", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(dir.join("bomb.c"))));
    assert!(ok(Command::new(&cc)
        .args(["-g", "-O1", "-o"])
        .arg(dir.join("main"))
        .arg(dir.join("main.c"))
        .arg(format!("-L{}", dir.str()))
        .arg(format!("-Wl,-rpath,{}", dir.str()))
        .arg("-lbomb")));
    // .debug_info: 64 KiB of zstd that inflate to 2 GiB (the header says so); .debug_line: a
    // header stating 60 MiB over the same 2 GiB stream; .debug_str: zlib stating 2^40 bytes.
    let mut elf = std::fs::read(&lib).unwrap();
    let bomb = zstd_rle_bomb(2 << 30);
    elf_compress(&mut elf, ".debug_info", 2, 2 << 30, &bomb);
    elf_compress(&mut elf, ".debug_line", 2, 60 << 20, &bomb);
    elf_compress(
        &mut elf,
        ".debug_str",
        1,
        1 << 40,
        &[0x78, 0x9c, 3, 0, 0, 0, 0, 1],
    );
    std::fs::write(&lib, &elf).unwrap();
    let (target, _) = spawn_ready(&dl, Command::new(dir.join("main")));

    let mut cmd = cli(&["inspect", &target.pid.to_string(), "--format", "json"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    const AS_LIMIT: u64 = 1 << 30;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: AS_LIMIT,
                rlim_max: AS_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut p = Proc::spawn_piped(cmd);
    let mut out = p.child.stdout.take().unwrap();
    let mut err = p.child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let mut text = String::new();
    std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaping our own child, with pointers to live locals.
    let reaped = unsafe { libc::wait4(p.pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, p.pid);
    // Reaped above: its drop must not kill a pid that may be reused.
    std::mem::forget(p);
    let stderr = errs.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}: {stderr}"
    );
    let peak_mib = usage.ru_maxrss >> 10;
    eprintln!("inspect of the bomb target: peak RSS {peak_mib} MiB");
    assert!(peak_mib < 256, "peak RSS {peak_mib} MiB");
    let d: Value = parse_dump(&text);
    let main = &d["threads"].as_array().unwrap()[0];
    assert!(
        functions(main).iter().any(|f| f == "bomb_park"),
        "{:?}",
        functions(main)
    );
    assert!(target.alive());
}

#[test]
fn the_interpreters_frames_between_python_frames_are_one_line_unless_native_all() {
    let dl = Deadline::new(120);
    let Some(target) = incident(&dl) else { return };
    let pid = target.pid.to_string();
    // The native frames between two Python frames of a worker: between `[py] worker_main` and
    // `[py] Thread.run` CPython calls the function (`_PyEval_EvalFrameDefault`, ...).
    let between = |text: &str| -> Vec<String> {
        let block: Vec<&str> = text
            .split("\n\n")
            .find(|b| b.contains("python \"worker-0\""))
            .unwrap_or_else(|| panic!("no worker-0 in\n{text}"))
            .lines()
            .collect();
        let at = |needle: &str| {
            block
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{}", block.join("\n")))
        };
        block[at("[py] worker_main") + 1..at("[py] Thread.run")]
            .iter()
            .map(|l| l.to_string())
            .collect()
    };
    // The same in the preloaded library's dump (whose text file leaves the frames out:
    // `dump --native-all` renders its JSON instead).
    let scratch = Scratch::new("native-all");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/targets/python/incident.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(["4", "--clients", "3"])
        .env("LD_PRELOAD", real_lib())
        .env("STACKDUMP_DIR", scratch.str());
    let (preloaded, _) = spawn_ready(&dl, cmd);
    wait_workers_stuck(&dl, preloaded.pid, 4);
    let preloaded_pid = preloaded.pid.to_string();
    for (how, pid) in [("inspect", &pid), ("dump", &preloaded_pid)] {
        let out = stackdump(&dl, &[how, pid]);
        out.assert_code(0);
        let folded = between(&out.stdout);
        assert_eq!(folded.len(), 1, "{how}: {folded:?}");
        assert!(
            folded[0].contains("frames of the interpreter in ")
                && folded[0].contains("python3")
                && folded[0].ends_with("(--native-all shows them)"),
            "{how}: {folded:?}"
        );
        let out = stackdump(&dl, &[how, pid, "--native-all"]);
        out.assert_code(0);
        let all = between(&out.stdout);
        assert!(all.len() >= 2, "{how}: {all:?}");
        assert!(
            all.iter().any(|l| l.contains("_PyEval_EvalFrameDefault")),
            "{how}: {all:?}"
        );
        assert!(
            !out.stdout.contains("frames of the interpreter"),
            "{how}: {}",
            out.stdout
        );
    }
}
