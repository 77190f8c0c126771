//! Processes forked without exec, hosts that own the trigger signal, hosts that overwrite their
//! environment: real processes (tests/targets/c/prefork.c, python3 multiprocessing), the real
//! library, real signals. Every wait is a handshake with a deadline; children are killed and
//! reaped on drop (the prefork workers die with their parent: PR_SET_PDEATHSIG).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;

const USR1: i32 = libc::SIGUSR1;

/// tests/targets/c/prefork.c, compiled once per test run.
fn prefork_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/targets/c/prefork.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("prefork-{}", std::process::id()))
            .join("prefork");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(&cc)
            .args([
                "-O2", "-g", "-pthread", "-std=c11", "-Wall", "-Wextra", "-o",
            ])
            .arg(&out)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running {cc}: {e}"));
        assert!(status.success(), "compiling {}", src.display());
        out
    })
}

/// A preloaded host whose stdout lines arrive on a channel.
struct Host {
    proc_: Proc,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Host {
    fn spawn(mut cmd: Command, dir: &str) -> Host {
        cmd.env("LD_PRELOAD", real_lib())
            .env("STACKDUMP_DIR", dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut proc_ = Proc::spawn_piped(cmd);
        let out = proc_.child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Host {
            proc_,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line matching `want`.
    fn line(&mut self, dl: &Deadline, what: &str, want: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(dl.left()) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if want(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no line {what} from the host (it printed {:?}; alive: {})",
                    self.seen,
                    self.proc_.alive()
                ),
            }
        }
    }

    /// The workers' pids (from "CHILD <pid>" lines) up to "READY".
    fn workers(&mut self, dl: &Deadline) -> Vec<i32> {
        let mut pids = Vec::new();
        loop {
            let l = self.line(dl, "CHILD or READY", |l| {
                l.starts_with("CHILD ") || l.starts_with("READY ")
            });
            match l.strip_prefix("CHILD ") {
                Some(p) => pids.push(p.parse().unwrap()),
                None => return pids,
            }
        }
    }
}

fn prefork(args: &[&str], dir: &str) -> Host {
    let mut cmd = Command::new(prefork_bin());
    cmd.args(args);
    Host::spawn(cmd, dir)
}

/// The JSON dump files of `pid` in `dir`.
fn dumps_of(dir: &Path, pid: i32) -> Vec<PathBuf> {
    let prefix = format!("stackdump-{pid}-");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy().into_owned();
                    n.starts_with(&prefix) && n.ends_with(".json")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// True when some thread of the dump has `function` among its frames.
fn has_function(dump: &serde_json::Value, function: &str) -> bool {
    dump["threads"].as_array().unwrap().iter().any(|t| {
        t["frames"].as_array().is_some_and(|fs| {
            fs.iter()
                .any(|f| f["function"].as_str().is_some_and(|n| n.contains(function)))
        })
    })
}

fn kill(pid: i32, signo: i32) {
    // SAFETY: kill with a pid we own (a child of a child we spawned) and a catchable signal.
    assert_eq!(unsafe { libc::kill(pid, signo) }, 0, "kill {pid}");
}

fn list_entry(dl: &Deadline, pid: i32) -> serde_json::Value {
    let out = stackdump(dl, &["list", "--format", "json"]);
    out.assert_code(0);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["pid"].as_i64() == Some(i64::from(pid)))
        .unwrap_or_else(|| panic!("{pid} not in `stackdump list`:\n{}", out.stdout))
}

#[test]
fn prefork_workers_dump_by_kill_and_by_stackdump_dump() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("prefork");
    let mut host = prefork(&["3"], dir.str());
    let workers = host.workers(&dl);
    assert_eq!(workers.len(), 3);
    for &w in &workers {
        wait_ready(&dl, w, USR1);
        // kill -s USR1: the worker's own dump, with its own stack.
        kill(w, USR1);
        wait_until(&dl, &format!("a dump of worker {w}"), || {
            !dumps_of(&dir.path, w).is_empty()
        });
        let d = read_json(&dumps_of(&dir.path, w)[0]);
        assert_eq!(d["pid"].as_i64(), Some(i64::from(w)));
        assert_eq!(d["comm"], "worker");
        assert!(has_function(&d, "worker"), "worker() not in {d}");
        // stackdump dump: through the worker's dump thread.
        let out = stackdump(&dl, &["dump", &w.to_string(), "--format", "json"]);
        out.assert_code(0);
        let v = json(&out);
        assert_eq!(v["pid"].as_i64(), Some(i64::from(w)));
        assert!(has_function(&v, "worker"));
        // list: ready, with its dump thread, the directory from the library.
        let e = list_entry(&dl, w);
        assert_eq!(e["state"], "ready", "{e}");
        assert!(e["dump_thread"].as_i64().is_some(), "{e}");
        assert_eq!(e["dir"].as_str(), Some(dir.str()), "{e}");
        assert_eq!(e["source"], "library", "{e}");
        assert!(alive(w));
    }
    // The parent still dumps, and none of its dumps is a worker's.
    let out = stackdump(
        &dl,
        &["dump", &host.proc_.pid.to_string(), "--format", "json"],
    );
    out.assert_code(0);
    assert!(has_function(&json(&out), "acceptor_main"));
}

#[test]
fn python_multiprocessing_fork_children_dump() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("mp");
    let script = r#"
import multiprocessing as mp, os, sys, time
def work(ev):
    ev.wait()
if __name__ == "__main__":
    mp.set_start_method("fork")
    ev = mp.Event()
    ps = [mp.Process(target=work, args=(ev,)) for _ in range(2)]
    for p in ps: p.start()
    for p in ps: print("CHILD", p.pid, flush=True)
    print("READY", os.getpid(), flush=True)
    time.sleep(1000)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]);
    let mut host = Host::spawn(cmd, dir.str());
    let children = host.workers(&dl);
    assert_eq!(children.len(), 2);
    for &c in &children {
        wait_ready(&dl, c, USR1);
        let out = stackdump(&dl, &["dump", &c.to_string(), "--format", "json"]);
        out.assert_code(0);
        let v = json(&out);
        assert_eq!(v["pid"].as_i64(), Some(i64::from(c)));
        kill(c, USR1);
        wait_until(&dl, &format!("kill -s USR1 dumps child {c}"), || {
            dumps_of(&dir.path, c).len() >= 2
        });
        assert_eq!(list_entry(&dl, c)["state"], "ready");
    }
    // Kill the children with their parent (they are not its process group).
    for c in children {
        kill(c, libc::SIGKILL);
    }
}

#[test]
fn a_host_that_overwrites_its_environment_is_listed_with_the_library_settings() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("environ");
    let mut host = prefork(&["-e", "1"], dir.str());
    let workers = host.workers(&dl);
    let pid = host.proc_.pid;
    wait_ready(&dl, pid, USR1);
    // The environment now lies (what PostgreSQL's process title does to it).
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains("STACKDUMP_DIR=/nonexistent"),
        "the host did not overwrite its environment"
    );
    for p in [pid, workers[0]] {
        let e = list_entry(&dl, p);
        assert_eq!(e["dir"].as_str(), Some(dir.str()), "{e}");
        assert_eq!(e["signal"], "USR1", "{e}");
        assert_eq!(e["state"], "ready", "{e}");
        stackdump(&dl, &["dump", &p.to_string(), "--format", "json"]).assert_code(0);
    }
}

#[test]
fn an_application_usr1_handler_is_said_and_stackdump_dump_still_works() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("appusr1");
    let mut host = prefork(&["-u", "1"], dir.str());
    let workers = host.workers(&dl);
    for p in [host.proc_.pid, workers[0]] {
        wait_ready(&dl, p, USR1);
        // The library re-checks its handler soon after it starts (10 ms, 100 ms, 1 s, ...).
        wait_until(&dl, "the library sees the application's handler", || {
            list_entry(&dl, p)["handler"] == "application"
        });
        let e = list_entry(&dl, p);
        let note = e["note"].as_str().unwrap_or_default().to_string();
        assert!(note.contains("USR1 is handled by the application"), "{e}");
        assert!(note.contains(&format!("use `stackdump dump {p}`")), "{e}");
        assert!(note.contains("STACKDUMP_SIGNAL=USR2"), "{e}");
        stackdump(&dl, &["list"]).assert_code(0).stdout_has(&note);
        let out = stackdump(&dl, &["dump", &p.to_string(), "--format", "json"]);
        out.assert_code(0)
            .stderr_has("USR1 is handled by the application")
            .stderr_has("`kill -s USR1` would not take a dump")
            .stderr_has("STACKDUMP_SIGNAL=USR2");
        assert!(
            !out.stderr.contains("use `stackdump dump"),
            "{}",
            out.stderr
        );
        assert_eq!(json(&out)["pid"].as_i64(), Some(i64::from(p)));
    }
}

#[test]
fn a_process_without_a_dump_thread_is_refused_at_once() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("nothread");
    // Workers made with _Fork(): no fork handlers run, so no dump thread is started.
    let mut host = prefork(&["-F", "1"], dir.str());
    let w = host.workers(&dl)[0];
    wait_until(&dl, "the worker has the library and catches USR1", || {
        maps_contain(w, "libstackdump") && catches(w, USR1)
    });
    assert!(!thread_named(w, "stackdump"));
    let e = list_entry(&dl, w);
    assert_eq!(e["state"], "no dump thread", "{e}");
    // Refused before anything is sent: the long timeout is never waited for.
    stackdump(&dl, &["dump", &w.to_string(), "--timeout", "100s"])
        .assert_code(3)
        .stderr_has("its dump thread is not running")
        .stderr_has(&format!("stackdump inspect {w}"));
    assert!(alive(w));
    assert!(dumps_of(&dir.path, w).is_empty());
}

#[test]
fn forks_in_a_loop_under_dumps_do_not_deadlock() {
    let dl = Deadline::new(180);
    let dir = Scratch::new("forkloop");
    // The main thread and 4 more fork children that exit at once, as fast as they can.
    let mut host = prefork(&["-l", "-t", "0"], dir.str());
    host.workers(&dl);
    let pid = host.proc_.pid;
    wait_ready(&dl, pid, USR1);
    let forked = |host: &mut Host, dl: &Deadline| -> u64 {
        let l = host.line(dl, "FORKED <n>", |l| l.starts_with("FORKED "));
        l["FORKED ".len()..].parse().unwrap()
    };
    let mut last = forked(&mut host, &dl);
    for round in 0..10 {
        if round % 2 == 0 {
            kill(pid, USR1);
            wait_until(&dl, "the dump from kill -s USR1", || {
                dumps_of(&dir.path, pid).len() > round
            });
        } else {
            stackdump(&dl, &["dump", &pid.to_string(), "--format", "json"]).assert_code(0);
        }
        // The main thread still forks and reaps (a child stuck in fork() would stop it).
        let now = forked(&mut host, &dl);
        assert!(now > last);
        last = now;
    }
    assert!(host.proc_.alive());
}

#[test]
fn inspect_subprocesses_reads_the_master_and_every_worker_in_one_command() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("inspect-tree");
    let mut host = prefork(&["3"], dir.str());
    let mut workers = host.workers(&dl);
    workers.sort_unstable();
    let master = host.proc_.pid;
    // JSON: one document per line, the master first, then its workers in pid order.
    let out = stackdump(
        &dl,
        &["inspect", "--subprocesses", &master.to_string(), "--json"],
    );
    out.assert_code(0);
    let docs: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON per line ({e}): {l}"))
        })
        .collect();
    let pids: Vec<i32> = docs
        .iter()
        .map(|d| d["pid"].as_i64().unwrap() as i32)
        .collect();
    let mut expect = vec![master];
    expect.extend(&workers);
    assert_eq!(pids, expect, "stderr: {}", out.stderr);
    for d in &docs {
        assert_schema(d);
    }
    assert!(
        has_function(&docs[0], "main"),
        "main() not in the master's dump"
    );
    for d in &docs[1..] {
        assert_eq!(d["comm"], "worker", "{d}");
        assert!(has_function(d, "worker"), "worker() not in {d}");
    }
    // Several PIDs, one of them gone: the others are printed (text, one after the other), the
    // gone one is named on stderr, and the exit code says something failed.
    let out = stackdump(
        &dl,
        &[
            "inspect",
            &workers[0].to_string(),
            "2147483000",
            "-p",
            &workers[1].to_string(),
        ],
    );
    out.assert_code(1)
        .stderr_has("no process 2147483000")
        .stderr_has("1 of 3 processes could not be inspected");
    for w in &workers[..2] {
        out.stdout_has(&format!("pid {w}"));
    }
    // Folded: the stacks of the whole tree, one tower per process.
    let out = stackdump(
        &dl,
        &[
            "inspect",
            "--subprocesses",
            &master.to_string(),
            "--format",
            "folded",
            "--folded-root",
            "process",
        ],
    );
    out.assert_code(0);
    for p in &expect {
        assert!(
            out.stdout.lines().any(|l| l.contains(&format!(" {p}];"))),
            "no tower of {p} in\n{}",
            out.stdout
        );
    }
}

#[test]
fn dump_subprocesses_dumps_a_preloaded_master_and_its_workers_at_once() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("dump-tree");
    let mut host = prefork(&["2"], dir.str());
    let mut workers = host.workers(&dl);
    workers.sort_unstable();
    let master = host.proc_.pid;
    for &w in &workers {
        wait_ready(&dl, w, USR1);
    }
    let out = stackdump(
        &dl,
        &["dump", "--subprocesses", &master.to_string(), "--json"],
    );
    out.assert_code(0);
    let docs: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON per line ({e}): {l}"))
        })
        .collect();
    let pids: Vec<i32> = docs
        .iter()
        .map(|d| d["pid"].as_i64().unwrap() as i32)
        .collect();
    let mut expect = vec![master];
    expect.extend(&workers);
    assert_eq!(pids, expect, "stderr: {}", out.stderr);
    for d in &docs[1..] {
        // Written by the worker's own dump thread, on the trigger signal.
        assert_eq!(d["trigger"]["signal"], "USR1", "{d}");
        assert!(
            d["threads"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["capture"] == "dumper"),
            "no dump thread in {d}"
        );
        assert!(has_function(d, "worker"), "worker() not in {d}");
    }
}
