//! End-to-end tests of `stackdump watch` (issue 19 point 4): the watchdog from outside, against
//! real processes with and without the preload. The incident (tests/targets/python/incident.py:
//! workers blocked writing to a full pipe nobody reads) must give exactly one evidence naming
//! its workers; a process whose threads are all idle (tests/targets/c/parked.c: read on an empty
//! pipe, nanosleep, a condition variable, pause) must give none. Handshakes on READY lines and
//! /proc state (never fixed sleeps), children killed and reaped on drop, a deadline per test.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKERS: usize = 4;

fn have_python() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "pass"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: no python3");
    }
    ok
}

/// The tids of the threads of `pid` named `worker-*`.
fn workers(pid: i32) -> Vec<i64> {
    let mut tids: Vec<i64> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("worker-"))
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// One reading of a thread: its syscall line, state, wait channel and context switches.
fn view(pid: i32, tid: i64) -> Option<(String, String, String, String)> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let syscall = std::fs::read_to_string(format!("{dir}/syscall")).ok()?;
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let state = stat.rsplit_once(") ")?.1.chars().next()?.to_string();
    let wchan = std::fs::read_to_string(format!("{dir}/wchan")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let switches: String = status
        .lines()
        .filter(|l| l.contains("ctxt_switches"))
        .collect();
    Some((syscall, state, wchan, switches))
}

/// The incident (`incident.py 4`), optionally preloaded, once every worker sleeps for good in
/// write(2) on fd 2: two readings in a row agree (same call and registers, same context
/// switches), state S, wait channel in pipe_write (READY alone does not prove it: a worker may
/// be seen there on its way to the pipe's lock).
fn incident(dl: &Deadline, preload: Option<&Path>, env: &[(&str, &str)]) -> Option<Proc> {
    if !have_python() {
        return None;
    }
    let mut cmd = Command::new("python3");
    cmd.arg(targets_dir().join("python/incident.py"))
        .arg(WORKERS.to_string());
    match preload {
        Some(dir) => {
            cmd.env("LD_PRELOAD", real_lib()).env("STACKDUMP_DIR", dir);
        }
        None => {
            cmd.env_remove("LD_PRELOAD");
        }
    }
    cmd.env_remove("STACKDUMP_WATCH");
    cmd.envs(env.iter().copied());
    let p = spawn_ready(dl, cmd).0;
    let pid = p.pid;
    wait_until(
        dl,
        "every worker sleeps in write(2) on the full pipe",
        || {
            let tids = workers(pid);
            tids.len() == WORKERS
                && tids.iter().all(|&tid| {
                    let (Some(a), Some(b)) = (view(pid, tid), view(pid, tid)) else {
                        return false;
                    };
                    let nr = a.0.split_whitespace().next().unwrap_or("");
                    let fd = a.0.split_whitespace().nth(1).unwrap_or("");
                    nr == "1" && fd == "0x2" && a == b && a.1 == "S" && a.2.contains("pipe_write")
                })
        },
    );
    if preload.is_some() {
        wait_ready(dl, pid, libc::SIGUSR1);
    }
    Some(p)
}

/// The JSON files in `dir`.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_dump(path: &Path) -> Value {
    parse_dump(&std::fs::read_to_string(path).unwrap())
}

/// The one evidence line on stdout, and the JSON file it names.
#[track_caller]
fn evidence(out: &Out, pid: i32) -> PathBuf {
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one evidence line:\n{}", out.stdout);
    let prefix = format!("stackdump: watch: pid {pid}: {WORKERS} threads stuck for ");
    assert!(lines[0].starts_with(&prefix), "{}", lines[0]);
    assert!(lines[0].contains("in write(fd 2 → pipe)"), "{}", lines[0]);
    let path = lines[0]
        .rsplit_once("; evidence: ")
        .map(|(_, p)| PathBuf::from(p))
        .unwrap_or_else(|| panic!("no evidence path in {}", lines[0]));
    assert!(path.is_file(), "{}", path.display());
    path
}

#[test]
fn watch_takes_evidence_of_the_incident_from_outside() {
    let dl = Deadline::new(120);
    let Some(target) = incident(&dl, None, &[]) else {
        return;
    };
    let pid = target.pid;
    let workers = workers(pid);
    let scratch = Scratch::new("watch-incident");
    let dir = scratch.join("out");
    let out = stackdump(
        &dl,
        &[
            "watch",
            &pid.to_string(),
            "--stuck",
            "2s",
            "--once",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    out.assert_code(0);
    let path = evidence(&out, pid);
    assert_eq!(json_files(&dir), vec![path.clone()]);
    assert!(path.with_extension("txt").is_file());
    let d = read_dump(&path);
    assert_eq!(
        d["capture"]["method"], "outside",
        "an inspect: {}",
        d["capture"]
    );
    let first = &d["findings"][0];
    assert_eq!(first["kind"], "stuck_threads", "{}", d["findings"]);
    let named: Vec<i64> = first["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    assert_eq!(named, workers, "{first}");
    assert!(
        first["summary"]
            .as_str()
            .unwrap()
            .starts_with("4 threads stuck for "),
        "{first}"
    );
    let w = &d["trigger"]["watchdog"];
    assert_eq!(w["watch_ms"], 2000, "{w}");
    let listed: Vec<i64> = w["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, workers, "{w}");
    assert!(w["threads"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["stuck_ms"].as_u64().unwrap() >= 2000
            && t["reason"].as_str().unwrap().contains("pipe full")));
    assert!(target.alive());
}

#[test]
fn watch_of_an_idle_process_takes_nothing() {
    let dl = Deadline::new(60);
    let mut cmd = Command::new(c_target("parked"));
    cmd.arg("6");
    let target = spawn_ready(&dl, cmd).0;
    let scratch = Scratch::new("watch-idle");
    let dir = scratch.join("out");
    let out = stackdump(
        &dl,
        &[
            "watch",
            &target.pid.to_string(),
            "--stuck",
            "1s",
            "--for",
            "6s",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    out.assert_code(0);
    assert_eq!(out.stdout, "", "no evidence; stderr:\n{}", out.stderr);
    out.stderr_has("0 episodes caught");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(target.alive());
}

#[test]
fn watch_of_a_preloaded_process_takes_a_dump_through_the_library() {
    let dl = Deadline::new(120);
    let scratch = Scratch::new("watch-preloaded");
    let dumps = scratch.join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    let Some(target) = incident(&dl, Some(&dumps), &[]) else {
        return;
    };
    let pid = target.pid;
    let dir = scratch.join("out");
    let out = stackdump(
        &dl,
        &[
            "watch",
            &pid.to_string(),
            "--stuck",
            "2s",
            "--once",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    out.assert_code(0);
    out.stderr_has("dump taken by its libstackdump.so");
    let path = evidence(&out, pid);
    let d = read_dump(&path);
    // The library's own dump, asked for as `stackdump dump` does: a request id, its capture.
    assert_ne!(d["capture"]["method"], "outside", "{}", d["capture"]);
    assert!(
        d["capture"]["method"].as_str().unwrap().contains("signal"),
        "{}",
        d["capture"]
    );
    assert!(d["trigger"]["request"].is_u64(), "{}", d["trigger"]);
    assert!(d["trigger"]["watchdog"].is_null(), "{}", d["trigger"]);
    assert!(target.alive());
}

#[test]
fn the_watchs_own_dump_does_not_make_a_new_episode() {
    // Every thread of the dump gets the capture signal: the stuck workers run their handler
    // and go back to their write. That is not them running: one episode, one evidence, even
    // without a minimum gap.
    let dl = Deadline::new(120);
    let scratch = Scratch::new("watch-own-dump");
    let dumps = scratch.join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    let Some(target) = incident(&dl, Some(&dumps), &[("STACKDUMP_CAPTURE", "signal")]) else {
        return;
    };
    let pid = target.pid;
    let dir = scratch.join("out");
    let out = stackdump(
        &dl,
        &[
            "watch",
            &pid.to_string(),
            "--stuck",
            "1s",
            "--min-gap",
            "0",
            "--for",
            "7s",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    out.assert_code(0).stderr_has("1 episode caught");
    let path = evidence(&out, pid);
    let d = read_dump(&path);
    assert!(
        d["threads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["signalled"] == true),
        "the dump signalled threads: {}",
        d["capture"]
    );
}

#[test]
fn watch_of_a_bad_pid_fails_as_inspect_does() {
    let dl = Deadline::new(60);
    // Above any pid_max: never a process.
    let missing = "2147483646";
    let w = stackdump(&dl, &["watch", missing, "--stuck", "1s"]);
    let i = stackdump(&dl, &["inspect", missing]);
    i.assert_code(1);
    w.assert_code(1)
        .stderr_has(&format!("no process {missing}"));
    assert_eq!(w.stderr, i.stderr);
    // A thread id: the process to watch instead (exit 2), as inspect says.
    let mut cmd = Command::new(c_target("parked"));
    cmd.arg("3");
    let target = spawn_ready(&dl, cmd).0;
    let tid = std::fs::read_dir(format!("/proc/{}/task", target.pid))
        .unwrap()
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse::<i32>().ok())
        .find(|&t| t != target.pid)
        .unwrap()
        .to_string();
    let w = stackdump(&dl, &["watch", &tid, "--stuck", "1s"]);
    let i = stackdump(&dl, &["inspect", &tid]);
    i.assert_code(2);
    w.assert_code(2).stderr_has(&format!(
        "not a process; watch the process: `stackdump watch {}`",
        target.pid
    ));
    // A duration without its unit: usage.
    stackdump(&dl, &["watch", &target.pid.to_string(), "--stuck", "10"])
        .assert_code(2)
        .stderr_has("has no unit");
}

#[test]
fn watch_exec_runs_with_the_evidence_in_its_environment() {
    let dl = Deadline::new(120);
    let Some(target) = incident(&dl, None, &[]) else {
        return;
    };
    let pid = target.pid;
    let scratch = Scratch::new("watch-exec");
    let dir = scratch.join("out");
    let env_file = scratch.join("env");
    let cmd = format!(
        "env | grep '^STACKDUMP_' > '{0}.tmp' && mv '{0}.tmp' '{0}'",
        env_file.display()
    );
    let out = stackdump(
        &dl,
        &[
            "watch",
            &pid.to_string(),
            "--stuck",
            "2s",
            "--once",
            "--out",
            dir.to_str().unwrap(),
            "--exec",
            &cmd,
        ],
    );
    out.assert_code(0);
    let path = evidence(&out, pid);
    wait_until(&dl, "the --exec command wrote its environment", || {
        env_file.exists()
    });
    let env = std::fs::read_to_string(&env_file).unwrap();
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in\n{env}"))
            .to_string()
    };
    assert_eq!(var("STACKDUMP_PID"), pid.to_string());
    let dump = PathBuf::from(var("STACKDUMP_DUMP"));
    assert_eq!(dump, path);
    assert!(dump.is_file(), "{}", dump.display());
    assert!(Path::new(&var("STACKDUMP_DUMP_TEXT")).is_file());
    assert!(
        var("STACKDUMP_SUMMARY").starts_with("4 threads stuck for "),
        "{env}"
    );
}

/// Whether `cli` holds a run counter of `pid` open (the watch loop has started sampling it).
fn samples(cli: i32, pid: i32) -> bool {
    let want = format!("/proc/{pid}/task/");
    std::fs::read_dir(format!("/proc/{cli}/fd")).is_ok_and(|d| {
        d.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| {
                let l = l.to_string_lossy();
                l.starts_with(&want) && l.ends_with("/schedstat")
            })
        })
    })
}

/// Run `stackdump watch` in the background, stdout and stderr into files.
fn spawn_watch(scratch: &Scratch, args: &[&str]) -> Proc {
    let mut cmd = cli(args);
    cmd.stdout(std::fs::File::create(scratch.join("stdout")).unwrap())
        .stderr(std::fs::File::create(scratch.join("stderr")).unwrap());
    Proc::spawn_piped(cmd)
}

#[track_caller]
fn wait_exit(dl: &Deadline, p: &mut Proc) -> i32 {
    let mut code = None;
    wait_until(dl, "stackdump watch exits", || {
        code = p.child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
        code.is_some()
    });
    code.unwrap()
}

#[test]
fn watch_ends_cleanly_on_sigterm_and_when_its_process_exits() {
    let dl = Deadline::new(60);
    let scratch = Scratch::new("watch-end");
    let out = scratch.join("out");
    let spawn_parked = || {
        let mut cmd = Command::new(c_target("parked"));
        cmd.arg("3");
        spawn_ready(&dl, cmd).0
    };
    // SIGTERM: exit 0, saying how many episodes were caught.
    let target = spawn_parked();
    let mut w = spawn_watch(
        &scratch,
        &[
            "watch",
            &target.pid.to_string(),
            "--stuck",
            "1s",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    wait_until(&dl, "the watch samples its process", || {
        samples(w.pid, target.pid)
    });
    // SAFETY: kill(2) of our own child, which we have not reaped yet.
    unsafe { libc::kill(w.pid, libc::SIGTERM) };
    assert_eq!(wait_exit(&dl, &mut w), 0);
    let err = std::fs::read_to_string(scratch.join("stderr")).unwrap();
    assert!(err.contains("0 episodes caught"), "{err}");
    // The process exits: said once, and the watch ends (0) with no process left.
    let mut w = spawn_watch(
        &scratch,
        &[
            "watch",
            &target.pid.to_string(),
            "--stuck",
            "1s",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    wait_until(&dl, "the watch samples its process", || {
        samples(w.pid, target.pid)
    });
    let pid = target.pid;
    drop(target);
    assert_eq!(wait_exit(&dl, &mut w), 0);
    let err = std::fs::read_to_string(scratch.join("stderr")).unwrap();
    assert_eq!(
        err.matches(&format!("stackdump: watch: pid {pid} exited"))
            .count(),
        1,
        "{err}"
    );
}
