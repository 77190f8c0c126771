//! Real programs, as people run them, with the library preloaded and from outside (issue 13
//! point 5): PostgreSQL (a cluster in a temporary directory, a backend waiting on a row lock),
//! nginx (a master and two workers), a Python `multiprocessing` prefork service, Node.js,
//! OpenJDK, rustc blocked on stdin, bash and CPython.
//!
//! For each program: the host behaves the same with the preload (a workload of its own gives the
//! same result), `stackdump dump` and `stackdump inspect` work on every one of its processes,
//! and for every thread blocked in a system call our function names contain `eu-stack -d -p`'s
//! named frames in the same order (our extra inlined frames allowed), down to the thread root.
//! eu-stack runs after our two captures; a thread whose system call line (number, SP, PC)
//! changed in between moved, and is counted apart instead of compared.
//!
//! Every test writes its rows to `target/<profile>/realprograms/<program>.json`;
//! `write_compatibility_md` (ignored; `.ci/run` runs it after the suite with
//! `STACKDUMP_WRITE_COMPATIBILITY=1`) turns them into `docs/COMPATIBILITY.md`.
//!
//! A program missing from the machine is skipped with a `SKIPPED:` line, unless
//! `STACKDUMP_REAL_PROGRAMS=required` (set by `.ci/run`, which installs them all): then the test
//! fails. The tests run one at a time (their timings go into the table); each has a deadline,
//! waits on handshakes (a READY line, `pg_isready`, a port that accepts, /proc showing the thread
//! in its system call), and kills and reaps what it started on drop, panics included.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

const USR1: i32 = 10;
const SYS_READ: u32 = 0;
const SYS_FUTEX: u32 = 202;
const SYS_EPOLL_WAIT: u32 = 232;
const SYS_EPOLL_PWAIT: u32 = 281;

// ---------------------------------------------------------------------------------------------
// The run: one test at a time, programs found or skipped (or failed in CI).

static SERIAL: Mutex<()> = Mutex::new(());

/// One real program at a time: they are heavy, and their timings go into the table.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `STACKDUMP_REAL_PROGRAMS=required` (CI): a missing program fails its test.
fn required() -> bool {
    std::env::var("STACKDUMP_REAL_PROGRAMS").is_ok_and(|v| v == "required")
}

/// `which NAME`, or in /usr/sbin (nginx's place, not on every user's PATH).
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Each of `names` (and eu-stack), or None after a `SKIPPED:` line (a failure when required).
/// `test` is the program's name in the table.
#[track_caller]
fn need(test: &str, names: &[&str], package: &str) -> Option<Vec<PathBuf>> {
    // No row of an earlier run stands for this one (the test writes its row again, unless it
    // is skipped or fails before measuring).
    let _ = std::fs::remove_file(results_dir().join(format!("{test}.json")));
    let mut found = Vec::new();
    for name in names.iter().chain(&["eu-stack"]) {
        let p = if *name == "postgres" || name.starts_with("pg") || *name == "initdb" {
            pg_bin(name)
        } else {
            on_path(name)
        };
        match p {
            Some(p) => found.push(p),
            None => {
                let pkg = if *name == "eu-stack" {
                    "elfutils"
                } else {
                    package
                };
                assert!(
                    !required(),
                    "{test}: {name} is not installed, and STACKDUMP_REAL_PROGRAMS=required \
                     (.ci/run installs it: apt-get install {pkg})"
                );
                eprintln!("SKIPPED: {test}: {name} is not installed (apt-get install {pkg})");
                return None;
            }
        }
    }
    found.pop();
    Some(found)
}

/// A PostgreSQL program: on PATH, else in the newest /usr/lib/postgresql/N/bin (Debian keeps
/// the server's programs there).
fn pg_bin(name: &str) -> Option<PathBuf> {
    if let Some(p) = on_path(name) {
        return Some(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|(_, d)| d.join("bin").join(name))
        .find(|p| p.is_file())
}

/// The first line of `program ARGS` (stdout, else stderr): its version.
fn version(program: &Path, args: &[&str]) -> String {
    let Ok(o) = Command::new(program).args(args).output() else {
        return "?".into();
    };
    let text = if o.stdout.is_empty() {
        o.stderr
    } else {
        o.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("?")
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Processes: guards, stdin and stdout, handshakes.

/// A temporary directory under /tmp, readable and writable by every user (the targets run as
/// other users write their dumps there, and read the library copied there), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        let p = PathBuf::from(format!("/tmp/stackdump-real-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777)).unwrap();
        TempDir(p)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
    /// The library, copied here (world-readable, whatever the checkout's permissions).
    fn lib(&self) -> PathBuf {
        let p = self.join("libstackdump.so");
        if !p.exists() {
            std::fs::copy(real_lib(), &p).unwrap();
        }
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A host process with its stdin and its stdout lines; killed and reaped on drop.
struct Host {
    proc: Proc,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Host {
    #[track_caller]
    fn spawn(mut cmd: Command) -> Host {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child: Child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let rx = lines_of(child.stdout.take().unwrap());
        let pid = child.id() as i32;
        Host {
            proc: Proc { child, pid },
            stdin,
            lines: rx,
        }
    }

    fn pid(&self) -> i32 {
        self.proc.pid
    }

    /// The next stdout line; panics at the deadline or at the end of the output.
    #[track_caller]
    fn line(&self, dl: &Deadline) -> String {
        match self.lines.recv_timeout(dl.left()) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!("no line from pid {} in time", self.pid()),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("pid {} closed its stdout", self.pid())
            }
        }
    }

    /// Wait for the line that starts with `READY`; the words after it.
    #[track_caller]
    fn ready(&self, dl: &Deadline) -> Vec<String> {
        loop {
            let l = self.line(dl);
            if let Some(rest) = l.strip_prefix("READY") {
                return rest.split_whitespace().map(str::to_string).collect();
            }
        }
    }

    /// Write `input` to its stdin, close it, and collect the rest of its stdout and its exit
    /// code.
    #[track_caller]
    fn finish(mut self, dl: &Deadline, input: &str) -> (String, i32) {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let mut out = String::new();
        loop {
            match self.lines.recv_timeout(dl.left()) {
                Ok(l) => {
                    out.push_str(&l);
                    out.push('\n');
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("pid {} did not finish", self.pid()),
            }
        }
        let code = loop {
            if let Some(st) = self.proc.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                break st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            }
            assert!(!dl.passed(), "pid {} did not exit", self.pid());
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        (out, code)
    }
}

/// Run `cmd` with `input` on its stdin to completion within the deadline: its output without
/// its READY line, and its exit code.
#[track_caller]
fn run_input(dl: &Deadline, cmd: Command, input: &str) -> (String, i32) {
    let (out, code) = Host::spawn(cmd).finish(dl, input);
    let out: String = out
        .lines()
        .filter(|l| !l.starts_with("READY"))
        .map(|l| format!("{l}\n"))
        .collect();
    (out, code)
}

/// The /proc/PID/task/TID/syscall line, split in words.
fn syscall_words(pid: i32, tid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Wait until thread `tid` of `pid` sleeps in system call `nr`.
#[track_caller]
fn wait_in_syscall(dl: &Deadline, pid: i32, tid: i32, nr: u32) {
    wait_until(
        dl,
        &format!("thread {tid} of {pid} sleeps in system call {nr}"),
        || {
            syscall_words(pid, tid).first() == Some(&nr.to_string())
                && std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('S'))
                })
        },
    );
}

/// Wait until the main thread of `pid` sleeps in one of the system calls `nrs`.
#[track_caller]
fn wait_in_one_of(dl: &Deadline, pid: i32, nrs: &[u32]) {
    wait_until(dl, &format!("{pid} sleeps in one of {nrs:?}"), || {
        state(pid) == Some('S')
            && syscall_words(pid, pid)
                .first()
                .and_then(|w| w.parse::<u32>().ok())
                .is_some_and(|n| nrs.contains(&n))
    });
}

/// The live children of `pid`.
fn children(pid: i32) -> Vec<i32> {
    let mut kids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                        s.rsplit_once(')')
                            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok())
                            == Some(pid)
                    })
                })
                .filter(|p| alive(*p))
                .collect()
        })
        .unwrap_or_default();
    kids.sort();
    kids
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// eu-stack and the comparison.

/// One frame of eu-stack: its address and its name (None for `??` or none).
#[derive(Debug, Clone)]
struct EuFrame {
    ip: u64,
    name: Option<String>,
}

/// `eu-stack -d -p PID` (DWARF names where there is debug info, like ours): frames per tid, the
/// wall time, the exit code and stderr.
fn eu_stack(pid: i32) -> (BTreeMap<i32, Vec<EuFrame>>, u128, i32, String) {
    let t = Instant::now();
    let out = Command::new("eu-stack")
        .args(["-d", "-p", &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("running eu-stack");
    let ms = t.elapsed().as_millis();
    let mut threads = BTreeMap::new();
    let mut cur: Option<i32> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.strip_prefix("TID ") {
            let tid = rest.trim_end_matches(':').trim().parse().ok();
            cur = tid;
            if let Some(t) = tid {
                threads.insert(t, Vec::new());
            }
        } else if let (Some(tid), Some(rest)) = (cur, line.strip_prefix('#')) {
            // "#3  0x00007f... name" (name may hold spaces: C++ signatures).
            let mut it = rest.trim_start().splitn(2, char::is_whitespace);
            let _n = it.next();
            let rest = it.next().unwrap_or("").trim_start();
            let (addr, name) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let ip = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap_or(0);
            let name = name.trim();
            let name = (!name.is_empty() && name != "??").then(|| name.to_string());
            threads.get_mut(&tid).unwrap().push(EuFrame { ip, name });
        }
    }
    (
        threads,
        ms,
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A function name as both tools can agree on it: no symbol version (`@@GLIBC_2.34`), no Rust
/// hash (`::h0123456789abcdef`, which eu-stack's demangler keeps and ours drops).
/// eu-stack 0.188 leaves Rust's v0 names (`_RNv...`) mangled: those are demangled here.
fn normalise(name: &str) -> String {
    let demangled;
    let mut n = name.trim();
    if n.starts_with("_R") || n.starts_with("_Z") {
        demangled = stackdump_core::stack::symbols::demangle(n);
        n = &demangled;
    }
    if let Some((a, _)) = n.split_once('@') {
        n = a;
    }
    if let Some((a, h)) = n.rsplit_once("::h") {
        if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            n = a;
        }
    }
    n.to_string()
}

/// The last path segment of a name, without generic arguments or a parameter list:
/// `<Box<dyn FnOnce<()>> as FnOnce<()>>::call_once` and `call_once<(), F>` are both
/// `call_once`; `shop::Queue<int>::pop(int) const` is `pop`. Where a frame has debug info, our
/// names of Rust functions are DWARF's `DW_AT_name` (`wait_for_work`, `{closure#0}`), while
/// eu-stack prints the demangled linkage name (`stackdump::triggers::wait_for_work`): the two
/// agree on this key, as do the aliases of one address. How often it was needed is counted apart (`unqualified`).
fn key(name: &str) -> String {
    let mut out = String::new();
    let (mut angle, mut paren) = (0i32, 0i32);
    for c in normalise(name).chars() {
        match c {
            '<' => angle += 1,
            '>' if angle > 0 => angle -= 1,
            '(' => paren += 1,
            ')' if paren > 0 => paren -= 1,
            _ if angle == 0 && paren == 0 => out.push(c),
            _ => {}
        }
    }
    let out = out.trim().trim_end_matches(" const").trim();
    let last = out.rsplit("::").next().unwrap_or(out).trim();
    // Aliases of one address: `__clone3` (eu-stack, from the symbol table: assembly has no
    // DWARF function) and `clone3`; `__GI___libc_read` and `__libc_read`.
    last.trim_start_matches("__GI_")
        .trim_start_matches('_')
        .to_string()
}

/// How one thread's frames compare with eu-stack's.
#[derive(Debug, Default)]
struct Agreement {
    /// Names that agreed only by [`key`] (qualified on one side, or aliases like `__clone3`).
    by_key: usize,
    /// eu-stack frames whose name is not ours, at an address where we have a frame of
    /// another name: two symbols of one address (`lang_start::{closure#0}` and its
    /// `call_once::{shim:vtable#0}`), each tool picking one. Same unwind, another name.
    aliases: Vec<String>,
}

/// Compare one thread's frames (ours: every native frame, inlined ones included) with
/// eu-stack's: every named eu-stack frame must be found in ours, in the same order, by name
/// ([`key`]) or, failing that, by address (an alias, counted apart). Err says which eu-stack
/// frame was not found, and the two lists.
fn agrees(ours: &[Value], eu: &[EuFrame]) -> Result<Agreement, (String, String)> {
    let native: Vec<&Value> = ours.iter().filter(|f| !f["python"].is_object()).collect();
    let names: Vec<String> = native
        .iter()
        .map(|f| normalise(f["function"].as_str().unwrap_or("??")))
        .collect();
    let ips: Vec<u64> = native
        .iter()
        .map(|f| {
            f["ip"]
                .as_str()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0)
        })
        .collect();
    let keys: Vec<String> = names.iter().map(|n| key(n)).collect();
    let mut at = 0;
    let mut a = Agreement::default();
    for (i, e) in eu.iter().enumerate() {
        let Some(want) = &e.name else { continue };
        let want_key = key(want);
        if let Some(k) = keys[at..].iter().position(|h| *h == want_key) {
            if names[at + k] != normalise(want) {
                a.by_key += 1;
            }
            at += k + 1;
        } else if let Some(k) = ips[at..].iter().position(|ip| *ip == e.ip) {
            // The outermost of our frames at that address (inlined ones come first).
            let mut k = at + k;
            while k + 1 < ips.len() && ips[k + 1] == e.ip {
                k += 1;
            }
            a.aliases.push(format!(
                "{:#x}: eu-stack `{}`, ours `{}`",
                e.ip,
                normalise(want),
                names[k]
            ));
            at = k + 1;
        } else {
            let eu_names: Vec<String> = eu
                .iter()
                .map(|f| f.name.clone().unwrap_or_else(|| format!("?? {:#x}", f.ip)))
                .collect();
            return Err((
                normalise(want),
                format!(
                    "eu-stack's #{i} `{want}` ({:#x}) is not in ours after #{at}; ours: \
                     {names:?}; eu-stack: {eu_names:?}",
                    e.ip
                ),
            ));
        }
    }
    Ok(a)
}

/// What one of our captures (the library's dump or inspect) gave for one process.
#[derive(Debug, Default)]
struct Side {
    ms: u128,
    threads: usize,
    /// Blocked threads compared with eu-stack, and those that agreed.
    compared: usize,
    agreed: usize,
    /// Blocked threads that moved between our capture and eu-stack's.
    moved: usize,
    /// Agreeing threads where some names agreed only by [`key`] (qualified on one side).
    unqualified: usize,
    /// eu-stack frames matched by address under another name ([`Agreement::aliases`]).
    aliases: Vec<String>,
    /// Threads that disagree, one line each.
    disagreements: Vec<String>,
    /// Of those, the ones a test knows about (named in its `known` list): reported, not failed.
    known: Vec<String>,
}

/// One process of a program: both captures, eu-stack, and the comparison.
struct Checked {
    role: String,
    pid: i32,
    comm: String,
    dump: Option<(Value, Side)>,
    inspect: (Value, Side),
    eu_ms: u128,
    eu_code: i32,
}

impl Checked {
    fn row(&self) -> Value {
        let side = |s: &Side| {
            json!({
                "ms": s.ms as u64, "threads": s.threads, "compared": s.compared,
                "agreed": s.agreed, "moved": s.moved, "unqualified": s.unqualified,
                "aliases": s.aliases, "disagreements": s.disagreements, "known": s.known,
            })
        };
        json!({
            "process": self.role,
            "comm": self.comm,
            "dump": self.dump.as_ref().map(|(_, s)| side(s)),
            "inspect": side(&self.inspect.1),
            "eu_stack_ms": self.eu_ms as u64,
            "eu_stack_code": self.eu_code,
        })
    }
}

/// Whether a thread of one of our captures is blocked in a system call.
fn blocked(t: &Value) -> bool {
    t["state"] == "S" && t["syscall"]["state"] == "in_syscall" && t["capture"] == "ok"
}

/// A disagreement with eu-stack that a test knows about: in threads named `thread`, eu-stack's
/// frame `missing` is not in our stack, for the reason `why`. Recorded in the table and
/// printed, not failed (every other thread must still agree).
struct Known {
    thread: &'static str,
    missing: &'static str,
    why: &'static str,
}

/// Compare the blocked threads of one capture with eu-stack's, given the system call lines read
/// after eu-stack ran.
fn compare(
    d: &Value,
    eu: &BTreeMap<i32, Vec<EuFrame>>,
    after: &BTreeMap<i32, Vec<String>>,
    what: &str,
    known: &[Known],
) -> Side {
    let mut side = Side {
        threads: d["threads"].as_array().map_or(0, Vec::len),
        ..Side::default()
    };
    for t in d["threads"].as_array().unwrap() {
        if !blocked(t) {
            continue;
        }
        let tid = t["tid"].as_i64().unwrap() as i32;
        let sc = &t["syscall"];
        let hex = |v: &Value| {
            v.as_str()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        };
        // The same system call at the same SP and PC after eu-stack: the thread did not move.
        // A timed wait that eu-stack's ptrace stop interrupted is restarted as restart_syscall
        // (219), at the same SP and PC.
        let still = after.get(&tid).is_some_and(|w| {
            w.len() >= 9
                && (w[0].parse::<u64>().ok() == sc["nr"].as_u64() || w[0] == "219")
                && hex(&Value::String(w[7].clone())) == hex(&sc["sp"])
                && hex(&Value::String(w[8].clone())) == hex(&sc["pc"])
        });
        let Some(eu_frames) = eu.get(&tid).filter(|_| still) else {
            side.moved += 1;
            continue;
        };
        side.compared += 1;
        match agrees(t["frames"].as_array().unwrap(), eu_frames) {
            Ok(a) if t["truncated"] != true => {
                side.agreed += 1;
                side.unqualified += usize::from(a.by_key > 0);
                for alias in a.aliases {
                    side.aliases
                        .push(format!("tid {tid} ({}): {alias}", t["name"]));
                }
            }
            Ok(_) => side.disagreements.push(format!(
                "{what}: tid {tid} ({}): our stack is truncated",
                t["name"]
            )),
            Err((missing, e)) => {
                let line = format!("{what}: tid {tid} ({}): {e}", t["name"]);
                match known
                    .iter()
                    .find(|k| t["name"] == k.thread && missing == k.missing)
                {
                    Some(k) => side.known.push(format!("{line} [known: {}]", k.why)),
                    None => side.disagreements.push(line),
                }
            }
        }
    }
    side
}

/// `stackdump dump` (when `preloaded`) and `stackdump inspect` of `pid`, then eu-stack, then
/// the comparison of every blocked thread.
#[track_caller]
fn check(dl: &Deadline, role: &str, pid: i32, preloaded: bool, known: &[Known]) -> Checked {
    let pid_s = pid.to_string();
    let dump = preloaded.then(|| {
        let t = Instant::now();
        let out = stackdump(
            dl,
            &["dump", &pid_s, "--format", "json", "--timeout", "20s"],
        );
        let ms = t.elapsed().as_millis();
        out.assert_code(0);
        (json(&out), ms)
    });
    let t = Instant::now();
    let out = stackdump(dl, &["inspect", &pid_s, "--format", "json"]);
    let inspect_ms = t.elapsed().as_millis();
    out.assert_code(0);
    let inspect = json(&out);
    let (eu, eu_ms, eu_code, eu_err) = eu_stack(pid);
    assert!(
        !eu.is_empty(),
        "eu-stack -p {pid} ({role}) printed no thread: {eu_err}"
    );
    let after: BTreeMap<i32, Vec<String>> =
        eu.keys().map(|t| (*t, syscall_words(pid, *t))).collect();
    let dump = dump.map(|(d, ms)| {
        let mut s = compare(&d, &eu, &after, "dump", known);
        s.ms = ms;
        (d, s)
    });
    let mut s = compare(&inspect, &eu, &after, "inspect", known);
    s.ms = inspect_ms;
    Checked {
        role: role.to_string(),
        pid,
        comm: comm(pid),
        dump,
        inspect: (inspect, s),
        eu_ms,
        eu_code,
    }
}

/// Where the tests put their rows.
fn results_dir() -> PathBuf {
    target_dir().join("realprograms")
}

/// Write the program's rows (before asserting, so that a disagreement is in the table too).
fn record(program: &str, version: &str, workload: &str, checked: &[Checked], elapsed: u128) {
    let dir = results_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let v = json!({
        "program": program,
        "version": version,
        "workload": workload,
        "seconds": elapsed as f64 / 1000.0,
        "processes": checked.iter().map(Checked::row).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join(format!("{program}.json")),
        serde_json::to_string_pretty(&v).unwrap(),
    )
    .unwrap();
}

/// What holds for every program: every capture succeeded (it did, or `check` panicked), at
/// least `min_compared` blocked threads were compared, and each agreed with eu-stack.
#[track_caller]
fn assert_agreement(checked: &[Checked], min_compared: usize) {
    let mut compared = 0;
    let mut problems = Vec::new();
    for c in checked {
        for s in c.dump.iter().map(|(_, s)| s).chain([&c.inspect.1]) {
            compared += s.compared;
            for d in &s.disagreements {
                problems.push(format!("{} (pid {}): {d}", c.role, c.pid));
            }
            for k in &s.known {
                eprintln!("KNOWN DISAGREEMENT: {} (pid {}): {k}", c.role, c.pid);
            }
        }
    }
    assert!(
        compared >= min_compared,
        "only {compared} blocked threads compared with eu-stack (want {min_compared})"
    );
    assert!(
        problems.is_empty(),
        "frames that disagree with eu-stack:\n{}",
        problems.join("\n")
    );
}

fn thread_by_tid(d: &Value, tid: i32) -> &Value {
    d["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tid"] == tid)
        .unwrap_or_else(|| panic!("no thread {tid} in {d}"))
}

fn functions(t: &Value) -> Vec<String> {
    t["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("??").to_string())
        .collect()
}

/// The library's environment for `cmd`, its dumps going to `dir`.
fn preload(cmd: &mut Command, dir: &TempDir) {
    cmd.env("LD_PRELOAD", dir.lib())
        .env("STACKDUMP_DIR", dir.str());
}

// ---------------------------------------------------------------------------------------------
// The single-process programs: stdin-blocked hosts whose output for one input line is compared
// with and without the preload.

/// A program that blocks (reading its stdin or otherwise), then turns `input` into output.
struct StdinProgram<'a> {
    /// The program's name in the table.
    program: &'a str,
    version: String,
    make: &'a dyn Fn() -> Command,
    /// It prints a line starting with READY once it is about to block.
    ready_line: bool,
    /// Its main thread blocks in one of these system calls.
    nrs: &'a [u32],
    input: &'a str,
    /// How many blocked threads at least are compared with eu-stack (dump and inspect).
    min_compared: usize,
    known: &'a [Known],
}

/// Run the program without the preload for the reference output, then preloaded: wait for
/// READY and for its main thread in one of its system calls, check it, feed it, compare.
fn stdin_program(p: StdinProgram, extra: &dyn Fn(&Checked)) {
    let started = Instant::now();
    let dl = Deadline::new(240);
    let dir = TempDir::new(p.program);
    let (plain_out, plain_code) = run_input(&dl, (p.make)(), p.input);
    assert_eq!(
        plain_code, 0,
        "{} without the preload: {plain_out}",
        p.program
    );
    let mut cmd = (p.make)();
    preload(&mut cmd, &dir);
    let host = Host::spawn(cmd);
    if p.ready_line {
        host.ready(&dl);
    }
    wait_ready(&dl, host.pid(), USR1);
    wait_in_one_of(&dl, host.pid(), p.nrs);
    let checked = check(&dl, p.program, host.pid(), true, p.known);
    let (out, code) = host.finish(&dl, p.input);
    let same = out == plain_out && code == plain_code;
    let workload = format!(
        "{}: {:?}, exit {code}",
        if same {
            "same output with and without the preload"
        } else {
            "DIFFERENT output with the preload"
        },
        out.trim_end()
    );
    record(
        p.program,
        &p.version,
        &workload,
        std::slice::from_ref(&checked),
        started.elapsed().as_millis(),
    );
    assert_eq!(
        (out, code),
        (plain_out, plain_code),
        "{}: the output with the preload differs",
        p.program
    );
    extra(&checked);
    assert_agreement(&[checked], p.min_compared);
}

#[test]
fn bash_blocked_in_read() {
    let _s = serial();
    let Some(b) = need("bash", &["bash"], "bash") else {
        return;
    };
    let bash = b[0].clone();
    let make = || {
        let mut c = Command::new(&bash);
        c.args(["-c", "echo READY; read x; echo \"got $x\""]);
        c
    };
    let p = StdinProgram {
        program: "bash",
        version: version(&bash, &["--version"]),
        make: &make,
        ready_line: true,
        nrs: &[SYS_READ],
        input: "hello bash\n",
        min_compared: 2,
        known: &[],
    };
    stdin_program(p, &|c| {
        let names = functions(thread_by_tid(&c.dump.as_ref().unwrap().0, c.pid));
        assert!(names.iter().any(|n| n == "read_builtin"), "bash: {names:?}");
    });
}

/// The interpreter behind `python3` (a pyenv shim is a shell script).
fn python_exe() -> Option<PathBuf> {
    let py = on_path("python3")?;
    let o = Command::new(py)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    p.is_file().then_some(p)
}

#[test]
fn cpython_blocked_in_input() {
    let _s = serial();
    if need("cpython", &["python3"], "python3").is_none() {
        return;
    }
    let py = python_exe().expect("python3 runs");
    let make = || {
        let mut c = Command::new(&py);
        c.args([
            "-c",
            "def waiting():\n    return input()\nprint('READY', flush=True)\n\
             print(waiting()[::-1])",
        ]);
        c
    };
    let p = StdinProgram {
        program: "cpython",
        version: version(&py, &["--version"]),
        make: &make,
        ready_line: true,
        nrs: &[SYS_READ],
        input: "hello python\n",
        min_compared: 2,
        known: &[],
    };
    stdin_program(p, &|c| {
        for d in [&c.dump.as_ref().unwrap().0, &c.inspect.0] {
            let names = functions(thread_by_tid(d, c.pid));
            assert!(names.iter().any(|n| n == "waiting"), "{names:?}");
        }
    });
}

#[test]
fn node_blocked_on_stdin() {
    let _s = serial();
    let Some(n) = need("node", &["node"], "nodejs") else {
        return;
    };
    let node = n[0].clone();
    let make = || {
        let mut c = Command::new(&node);
        c.args([
            "-e",
            "let s = ''; process.stdin.on('data', d => s += d); \
             process.stdin.on('end', () => console.log(s.trim().split('').reverse().join(''))); \
             console.log('READY')",
        ]);
        c
    };
    let p = StdinProgram {
        program: "node",
        version: version(&node, &["--version"]),
        make: &make,
        ready_line: true,
        // libuv waits in epoll_pwait (or epoll_wait in older ones).
        nrs: &[SYS_EPOLL_WAIT, SYS_EPOLL_PWAIT],
        input: "hello node\n",
        min_compared: 2,
        known: &[],
    };
    stdin_program(p, &|_| {});
}

#[test]
fn java_blocked_on_system_in() {
    let _s = serial();
    let Some(j) = need("java", &["java", "javac"], "default-jdk-headless") else {
        return;
    };
    let (java, javac) = (j[0].clone(), j[1].clone());
    let dl = Deadline::new(120);
    let classes = TempDir::new("java-classes");
    std::fs::write(
        classes.join("Block.java"),
        "public class Block {\n\
           public static void main(String[] a) throws Exception {\n\
             System.out.println(\"READY\");\n\
             System.out.flush();\n\
             java.io.BufferedReader r = new java.io.BufferedReader(\n\
               new java.io.InputStreamReader(System.in));\n\
             String s = r.readLine();\n\
             System.out.println(new StringBuilder(s).reverse());\n\
           }\n\
         }\n",
    )
    .unwrap();
    let mut c = Command::new(&javac);
    c.arg("-d").arg(&classes.0).arg(classes.join("Block.java"));
    run(&dl, c).assert_code(0);
    let make = || {
        let mut c = Command::new(&java);
        c.arg("-cp").arg(&classes.0).arg("Block");
        c
    };
    let p = StdinProgram {
        program: "java",
        version: version(&java, &["-version"]),
        make: &make,
        ready_line: true,
        // The launcher's main thread waits for the Java main thread in pthread_join.
        nrs: &[SYS_FUTEX],
        input: "hello java\n",
        min_compared: 10,
        // The Java main thread, blocked in System.in's read under the interpreter, is copied
        // without a signal and its rbp recovered from the copy (src/stack/fprecover.rs): its
        // frame records run through JIT code (no CFI, return addresses not after calls) and
        // JavaCalls::call hands call_helper on as a pointer; both are followed, and the stack
        // must agree with eu-stack's like every other (it once skipped from handleRead to
        // JavaMain).
        known: &[],
    };
    stdin_program(p, &|c| {
        assert!(c.inspect.1.threads > 10, "{} threads", c.inspect.1.threads);
    });
}

#[test]
fn rustc_blocked_on_stdin() {
    let _s = serial();
    let Some(r) = need("rustc", &["rustc"], "rustc (rustup)") else {
        return;
    };
    let rustc = r[0].clone();
    let out = TempDir::new("rustc-out");
    let meta = out.join("out.rmeta");
    let make = || {
        let mut c = Command::new(&rustc);
        c.args(["-", "--crate-type", "lib", "--crate-name", "answer"])
            .args(["--emit", "metadata", "-o"])
            .arg(&meta)
            .arg("--print=crate-name");
        c
    };
    let p = StdinProgram {
        program: "rustc",
        version: version(&rustc, &["--version"]),
        make: &make,
        ready_line: false,
        nrs: &[SYS_READ],
        input: "pub fn answer() -> u32 { 42 }\n",
        min_compared: 2,
        known: &[],
    };
    stdin_program(p, &|c| {
        let names = functions(thread_by_tid(&c.dump.as_ref().unwrap().0, c.pid));
        assert!(
            names.iter().any(|n| n.starts_with("rustc_")),
            "rustc: {names:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Python multiprocessing: a prefork pool of workers blocked in a queue get.

const PREFORK: &str = r#"
import multiprocessing as mp, sys

def work(tasks, results):
    for n in iter(tasks.get, None):
        results.put(n * n)

if __name__ == "__main__":
    mp.set_start_method("fork")
    tasks, results = mp.Queue(), mp.Queue()
    workers = [mp.Process(target=work, args=(tasks, results)) for _ in range(3)]
    for w in workers:
        w.start()
    print("READY", " ".join(str(w.pid) for w in workers), flush=True)
    ns = [int(x) for x in sys.stdin.readline().split()]
    for n in ns:
        tasks.put(n)
    total = sum(results.get() for _ in ns)
    for w in workers:
        tasks.put(None)
    for w in workers:
        w.join()
    print("SUM", total, flush=True)
"#;

#[test]
fn python_multiprocessing_prefork_workers() {
    let _s = serial();
    if need("python-multiprocessing", &["python3"], "python3").is_none() {
        return;
    }
    let py = python_exe().expect("python3 runs");
    let started = Instant::now();
    let dl = Deadline::new(240);
    let dir = TempDir::new("prefork");
    let script = dir.join("prefork.py");
    std::fs::write(&script, PREFORK).unwrap();
    let make = || {
        let mut c = Command::new(&py);
        c.arg(&script);
        c
    };
    let input = "1 2 3 4 5 6 7 8 9 10\n";
    let (plain_out, plain_code) = run_input(&dl, make(), input);
    assert_eq!((plain_out.as_str(), plain_code), ("SUM 385\n", 0));
    let mut cmd = make();
    preload(&mut cmd, &dir);
    let host = Host::spawn(cmd);
    let workers: Vec<i32> = host.ready(&dl).iter().map(|w| w.parse().unwrap()).collect();
    assert_eq!(workers.len(), 3);
    wait_ready(&dl, host.pid(), USR1);
    wait_in_one_of(&dl, host.pid(), &[SYS_READ]);
    for w in &workers {
        // Forked children get a dump thread of their own.
        wait_ready(&dl, *w, USR1);
        // One worker reads the queue's pipe, the others wait for its lock.
        wait_in_one_of(&dl, *w, &[SYS_READ, SYS_FUTEX]);
    }
    let mut checked = vec![check(&dl, "main", host.pid(), true, &[])];
    for (i, w) in workers.iter().enumerate() {
        checked.push(check(&dl, &format!("worker {}", i + 1), *w, true, &[]));
    }
    let (out, code) = host.finish(&dl, input);
    let workload = format!(
        "{}: {:?}, exit {code}",
        if (out.as_str(), code) == (plain_out.as_str(), plain_code) {
            "same result with and without the preload"
        } else {
            "DIFFERENT result with the preload"
        },
        out.trim_end()
    );
    record(
        "python-multiprocessing",
        &version(&py, &["--version"]),
        &workload,
        &checked,
        started.elapsed().as_millis(),
    );
    assert_eq!((out, code), (plain_out, plain_code));
    for c in &checked[1..] {
        for d in [&c.dump.as_ref().unwrap().0, &c.inspect.0] {
            let names = functions(thread_by_tid(d, c.pid));
            assert!(
                names.iter().any(|n| n == "work") && names.iter().any(|n| n == "Queue.get"),
                "{}: {names:?}",
                c.role
            );
        }
    }
    assert_agreement(&checked, 8);
}

// ---------------------------------------------------------------------------------------------
// Servers in their own process group: every process of it killed and the leader reaped on drop.

/// A server started in a process group of its own.
struct Group {
    proc: Proc,
}

impl Group {
    #[track_caller]
    fn spawn(mut cmd: Command) -> Group {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let pid = child.id() as i32;
        Group {
            proc: Proc { child, pid },
        }
    }

    fn pid(&self) -> i32 {
        self.proc.pid
    }

    /// Send `sig` to the leader and wait (until the deadline) for it to exit.
    #[track_caller]
    fn stop(self, dl: &Deadline, sig: i32) {
        // SAFETY: kill(2) on our own child, which is not reaped yet.
        unsafe { libc::kill(self.pid(), sig) };
        let mut g = self;
        wait_until(dl, "the server exits", || {
            g.proc.child.try_wait().ok().flatten().is_some()
        });
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our child's process group (it made one with process_group(0)).
        unsafe { libc::kill(-self.proc.pid, libc::SIGKILL) };
        // Proc's own drop reaps the leader; the others were reparented and are reaped there.
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0: the status line and the body.
#[track_caller]
fn http_get(dl: &Deadline, port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(dl.left())).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let status = r.lines().next().unwrap_or("").to_string();
    let body = r.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    format!("{status} | {body}")
}

/// nginx from a config of its own in `prefix`: a master and two workers on `port`.
#[track_caller]
fn start_nginx(
    dl: &Deadline,
    nginx: &Path,
    prefix: &Path,
    port: u16,
    lib: Option<&TempDir>,
) -> Group {
    std::fs::create_dir_all(prefix).unwrap();
    let p = prefix.display();
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\npid {p}/nginx.pid;\n\
             error_log {p}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n\
               proxy_temp_path {p}/proxy;\n\
               server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello from nginx\\n\"; }} }}\n}}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(prefix)
        .arg("-e")
        .arg(prefix.join("error.log"));
    cmd.arg("-c").arg(prefix.join("nginx.conf"));
    if let Some(d) = lib {
        preload(&mut cmd, d);
    }
    let g = Group::spawn(cmd);
    wait_until(dl, "nginx accepts connections", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    wait_until(dl, "nginx has two workers", || children(g.pid()).len() == 2);
    g
}

#[test]
fn nginx_master_and_workers() {
    let _s = serial();
    let Some(n) = need("nginx", &["nginx"], "nginx") else {
        return;
    };
    let nginx = n[0].clone();
    let started = Instant::now();
    let dl = Deadline::new(180);
    let dir = TempDir::new("nginx");
    let port = free_port();
    let plain = start_nginx(&dl, &nginx, &dir.join("plain"), port, None);
    let plain_body = http_get(&dl, port, "/");
    plain.stop(&dl, libc::SIGQUIT);
    wait_until(&dl, "the port is free again", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    let ng = start_nginx(&dl, &nginx, &dir.join("preloaded"), port, Some(&dir));
    wait_ready(&dl, ng.pid(), USR1);
    // The master waits for signals; each worker in epoll_wait.
    wait_in_one_of(&dl, ng.pid(), &[130]);
    let workers = children(ng.pid());
    for w in &workers {
        wait_ready(&dl, *w, USR1);
        wait_in_one_of(&dl, *w, &[SYS_EPOLL_WAIT]);
    }
    let mut checked = vec![check(&dl, "master", ng.pid(), true, &[])];
    for (i, w) in workers.iter().enumerate() {
        checked.push(check(&dl, &format!("worker {}", i + 1), *w, true, &[]));
    }
    let body = http_get(&dl, port, "/");
    let workload = format!(
        "{}: {body:?}",
        if body == plain_body {
            "same response with and without the preload, after the dumps"
        } else {
            "DIFFERENT response with the preload"
        }
    );
    record(
        "nginx",
        &version(&nginx, &["-v"]),
        &workload,
        &checked,
        started.elapsed().as_millis(),
    );
    assert_eq!(body, plain_body);
    assert_eq!(body, "HTTP/1.1 200 OK | hello from nginx\n");
    for c in &checked[1..] {
        let d = &c.dump.as_ref().unwrap().0;
        let main = thread_by_tid(d, c.pid);
        assert_eq!(main["syscall"]["name"], "epoll_wait", "{}: {main}", c.role);
        // ngx_worker_process_cycle is static: Debian's stripped nginx has no name for it (nor
        // has eu-stack); the exported functions around it are named.
        let names = functions(main);
        let want = [
            "ngx_process_events_and_timers",
            "ngx_spawn_process",
            "ngx_master_process_cycle",
            "main",
        ];
        let mut it = names.iter();
        assert!(
            want.iter().all(|w| it.any(|n| n == w)),
            "{}: {names:?}",
            c.role
        );
    }
    assert_agreement(&checked, 6);
    ng.stop(&dl, libc::SIGQUIT);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: a cluster in a temporary directory, run as an unprivileged user.

/// The user the cluster runs as: `postgres` (made by Debian's package) or `nobody` when root,
/// else ourselves (None).
fn pg_user() -> Option<&'static str> {
    if !is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Some(if passwd.lines().any(|l| l.starts_with("postgres:")) {
        "postgres"
    } else {
        "nobody"
    })
}

/// `prog` run as the cluster's user (setpriv execs it: the pid is the program's).
fn as_pg_user(prog: &Path) -> Command {
    match pg_user() {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
                "--",
            ])
            .arg(prog);
            c
        }
        None => Command::new(prog),
    }
}

/// A client program of the cluster at `sock`/5432, as the `postgres` role.
fn pg_client(bin: &Path, sock: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("-h").arg(sock).args(["-p", "5432", "-U", "postgres"]);
    c
}

/// Start the cluster in `data`, its socket in `sock`; wait until it accepts connections.
#[track_caller]
fn start_postgres(
    dl: &Deadline,
    bins: &[PathBuf],
    data: &Path,
    sock: &Path,
    lib: Option<&TempDir>,
) -> Group {
    let mut cmd = as_pg_user(&bins[0]);
    cmd.arg("-D").arg(data).arg("-k").arg(sock);
    cmd.args(["-p", "5432", "-c", "listen_addresses=", "-c", "fsync=off"]);
    // No autovacuum worker comes and goes during the test; its launcher stays.
    cmd.args(["-c", "autovacuum_naptime=3600"]);
    // A backend waiting for a lock wakes once, after deadlock_timeout (1 s by default), to look
    // for a deadlock (SIGALRM): a dump at that moment finds it running, not in epoll_wait (seen
    // once in CI). The lock wait then stays asleep for the whole test.
    cmd.args(["-c", "deadlock_timeout=3600s"]);
    if let Some(d) = lib {
        preload(&mut cmd, d);
    }
    let g = Group::spawn(cmd);
    let ready = &bins[3];
    wait_until(dl, "pg_isready", || {
        assert!(g.proc.alive(), "postgres exited");
        let mut c = pg_client(ready, sock);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c.status().is_ok_and(|s| s.success())
    });
    g
}

/// `pgbench -i` then `pgbench -c 2 -t 50`: the transactions it processed.
#[track_caller]
fn pgbench(dl: &Deadline, pgbench: &Path, sock: &Path) -> String {
    let mut c = pg_client(pgbench, sock);
    c.args(["-i", "-q", "postgres"]);
    run(dl, c).assert_code(0);
    let mut c = pg_client(pgbench, sock);
    c.args(["-c", "2", "-t", "50", "postgres"]);
    let out = run(dl, c);
    out.assert_code(0);
    out.stdout
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed"))
        .unwrap_or_else(|| panic!("pgbench: {}", out.stdout))
        .to_string()
}

/// `psql -Atc SQL`.
#[track_caller]
fn psql(dl: &Deadline, bin: &Path, sock: &Path, sql: &str) -> String {
    let mut c = pg_client(bin, sock);
    c.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
        "postgres",
    ]);
    let out = run(dl, c);
    out.assert_code(0);
    out.stdout.trim().to_string()
}

#[test]
fn postgresql_backend_waiting_on_a_row_lock() {
    let _s = serial();
    let Some(bins) = need(
        "postgresql",
        &["postgres", "initdb", "psql", "pg_isready", "pgbench"],
        "postgresql postgresql-contrib",
    ) else {
        return;
    };
    let (psql_bin, pgbench_bin) = (&bins[2], &bins[4]);
    let started = Instant::now();
    let dl = Deadline::new(300);
    let dir = TempDir::new("pg");
    let (data, sock) = (dir.join("data"), dir.0.clone());
    let mut c = as_pg_user(&bins[1]);
    c.arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "--no-sync"]);
    run(&dl, c).assert_code(0);
    let bins4 = [
        bins[0].clone(),
        bins[1].clone(),
        bins[2].clone(),
        bins[3].clone(),
    ];

    // The workload without the preload, then with it.
    let plain = start_postgres(&dl, &bins4, &data, &sock, None);
    let plain_tx = pgbench(&dl, pgbench_bin, &sock);
    plain.stop(&dl, libc::SIGINT);
    let pg = start_postgres(&dl, &bins4, &data, &sock, Some(&dir));
    let postmaster = pg.pid();
    wait_ready(&dl, postmaster, USR1);
    let tx = pgbench(&dl, pgbench_bin, &sock);

    // A session holds a row lock in an open transaction; another waits for it.
    psql(
        &dl,
        psql_bin,
        &sock,
        "CREATE TABLE lockme (id int PRIMARY KEY, v int); INSERT INTO lockme VALUES (1, 0)",
    );
    let mut c = pg_client(psql_bin, &sock);
    c.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "postgres"]);
    let mut holder = Host::spawn(c);
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"BEGIN;\nSELECT v FROM lockme WHERE id = 1 FOR UPDATE;\n\\echo LOCKED\n")
        .unwrap();
    while holder.line(&dl) != "LOCKED" {}
    let mut c = pg_client(psql_bin, &sock);
    c.args([
        "-X",
        "-c",
        "UPDATE lockme SET v = v + 1 WHERE id = 1",
        "postgres",
    ]);
    let waiter = Host::spawn(c);
    let mut backend = 0;
    wait_until(&dl, "a backend waits on the row lock", || {
        backend = psql(
            &dl,
            psql_bin,
            &sock,
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )
        .parse()
        .unwrap_or(0);
        backend != 0
    });
    wait_in_syscall(&dl, backend, backend, SYS_EPOLL_WAIT);
    wait_ready(&dl, backend, USR1);

    // Every process of the cluster, dumped and inspected.
    let mut checked = vec![check(&dl, "postmaster", postmaster, true, &[])];
    for kid in children(postmaster) {
        let title = std::fs::read(format!("/proc/{kid}/cmdline")).unwrap_or_default();
        let title = String::from_utf8_lossy(&title).replace('\0', " ");
        let title = title.trim().trim_start_matches("postgres: ").to_string();
        wait_ready(&dl, kid, USR1);
        if kid == backend {
            let role = format!("backend waiting on a row lock ({title})");
            checked.push(check(&dl, &role, kid, true, &[]));
        } else {
            checked.push(check(&dl, &title, kid, true, &[]));
        }
    }

    // The lock is released: the waiting update completes.
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"COMMIT;\n")
        .unwrap();
    let (updated, code) = waiter.finish(&dl, "");
    let _ = holder.finish(&dl, "");
    let workload = format!(
        "{}: {tx:?}; the waiting UPDATE completes after the dumps: {:?}",
        if tx == plain_tx {
            "pgbench gives the same result with and without the preload"
        } else {
            "pgbench DIFFERS with the preload"
        },
        updated.trim()
    );
    record(
        "postgresql",
        &version(&bins[0], &["--version"]),
        &workload,
        &checked,
        started.elapsed().as_millis(),
    );
    assert_eq!(tx, plain_tx);
    assert!(tx.ends_with("100/100"), "{tx}");
    assert_eq!((updated.trim(), code), ("UPDATE 1", 0));

    // The waiting backend: ProcSleep, its latch wait, epoll_wait on an epoll fd.
    let waiting = checked.iter().find(|c| c.pid == backend).unwrap();
    for (d, side) in [
        (
            &waiting.dump.as_ref().unwrap().0,
            &waiting.dump.as_ref().unwrap().1,
        ),
        (&waiting.inspect.0, &waiting.inspect.1),
    ] {
        assert!(side.known.is_empty(), "{:?}", side.known);
        let main = thread_by_tid(d, backend);
        let names = functions(main);
        assert!(names.iter().any(|n| n == "WaitEventSetWait"), "{names:?}");
        // The frames between the latch wait and the backend's main loop. (The rbp recovery
        // once skipped them all: LockAcquire tail-calls LockAcquireExtended, and the call
        // check refused the true frame record; src/stack/fprecover.rs now follows such a
        // jump.)
        let mut it = names.iter();
        assert!(
            ["WaitEventSetWait", "WaitLatch", "ProcSleep", "PostgresMain"]
                .iter()
                .all(|w| it.any(|n| n == w)),
            "{names:?}"
        );
        let sc = &main["syscall"];
        assert_eq!(sc["name"], "epoll_wait", "{sc}");
        assert!(
            sc["fd"]["target"]
                .as_str()
                .is_some_and(|t| t.contains("eventpoll")),
            "{sc}"
        );
    }
    assert_agreement(&checked, 10);
    pg.stop(&dl, libc::SIGINT);
}

// ---------------------------------------------------------------------------------------------
// docs/COMPATIBILITY.md from the rows the tests wrote.

const PROGRAMS: &[&str] = &[
    "postgresql",
    "nginx",
    "python-multiprocessing",
    "node",
    "java",
    "rustc",
    "bash",
    "cpython",
];

#[test]
#[ignore = "writes docs/COMPATIBILITY.md from the suite's results: .ci/run runs it after the suite"]
fn write_compatibility_md() {
    if std::env::var_os("STACKDUMP_WRITE_COMPATIBILITY").is_none() {
        eprintln!(
            "not written: set STACKDUMP_WRITE_COMPATIBILITY=1 to write docs/COMPATIBILITY.md"
        );
        return;
    }
    let mut md = String::from(
        "# Compatibility with real programs\n\n\
         Generated by `injector/tests/realprograms.rs` (`.ci/run` runs the suite, then \
         `write_compatibility_md`); do not edit by hand.\n\n\
         For each program: a workload of its own gives the same result with and without \
         `libstackdump.so` preloaded; `stackdump dump` (the preloaded library) and `stackdump \
         inspect` (from outside) of every one of its processes succeed; and for every thread \
         blocked in a system call, our functions contain the named frames of `eu-stack -d -p` \
         (elfutils) in the same order, down to the thread root (our extra inlined frames \
         allowed). eu-stack runs after our two captures; a thread that left its system call \
         (or entered another) in between *moved* and is not compared. Times are wall times of \
         the whole command (`stackdump dump`, `stackdump inspect`, `eu-stack`), in ms.\n\n\
         Names are compared without symbol versions (`@@GLIBC_2.34`), Rust hashes, generic \
         arguments, parameter lists, leading underscores (`__clone3` and `clone3`) or path: \
         where a Rust frame has debug info, our name is DWARF's (`wait_for_work`, \
         `{closure#0}`) and eu-stack's the demangled symbol (`stackdump::triggers::\
         wait_for_work`); *unqualified* counts the threads where that was needed. An eu-stack \
         frame whose name is not ours but whose address is one of our frames' is two symbols \
         of one address (listed below), not a different unwind. A *known* disagreement is one \
         the test names and explains (below); every other one fails its test.\n\n\
         | program | process | threads | dump | inspect | blocked threads agreeing with eu-stack (dump / inspect) | moved | unqualified | ms: dump / inspect / eu-stack |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut notes = String::new();
    let mut known = String::new();
    let mut aliases: Vec<String> = Vec::new();
    let mut missing = Vec::new();
    for program in PROGRAMS {
        let path = results_dir().join(format!("{program}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            missing.push(*program);
            continue;
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        for (i, p) in v["processes"].as_array().unwrap().iter().enumerate() {
            let name = if i == 0 {
                format!("**{program}**")
            } else {
                String::new()
            };
            let frac = |s: &Value| {
                if s.is_null() {
                    "—".to_string()
                } else {
                    format!("{}/{}", s["agreed"], s["compared"])
                }
            };
            let ms = |s: &Value| {
                if s.is_null() {
                    "—".to_string()
                } else {
                    s["ms"].to_string()
                }
            };
            let sum = |k: &str| {
                p["dump"][k].as_u64().unwrap_or(0) + p["inspect"][k].as_u64().unwrap_or(0)
            };
            md.push_str(&format!(
                "| {name} | {} | {} | {} | ok | {} / {} | {} | {} | {} / {} / {} |\n",
                p["process"].as_str().unwrap_or("?").replace('|', "\\|"),
                p["inspect"]["threads"],
                if p["dump"].is_null() { "—" } else { "ok" },
                frac(&p["dump"]),
                frac(&p["inspect"]),
                sum("moved"),
                sum("unqualified"),
                ms(&p["dump"]),
                ms(&p["inspect"]),
                p["eu_stack_ms"],
            ));
            let process = p["process"].as_str().unwrap_or("?");
            for side in ["dump", "inspect"] {
                for d in p[side]["disagreements"].as_array().into_iter().flatten() {
                    notes.push_str(&format!(
                        "- {program}, {process}: {}\n",
                        d.as_str().unwrap_or("?")
                    ));
                }
                for d in p[side]["known"].as_array().into_iter().flatten() {
                    known.push_str(&format!(
                        "- {program}, {process}: {}\n",
                        d.as_str().unwrap_or("?")
                    ));
                }
                for a in p[side]["aliases"].as_array().into_iter().flatten() {
                    // The same pair of names once per program.
                    let a = a.as_str().unwrap_or("?");
                    let pair = a.split_once(": 0x").map_or(a, |(_, r)| r);
                    let pair = pair.split_once(": ").map_or(pair, |(_, r)| r);
                    let line = format!("- {program}: {pair}\n");
                    if !aliases.contains(&line) {
                        aliases.push(line);
                    }
                }
            }
        }
    }
    md.push_str(
        "\n## Programs\n\n| program | version | workload | test time (s) |\n|---|---|---|---|\n",
    );
    for program in PROGRAMS {
        let Ok(text) = std::fs::read_to_string(results_dir().join(format!("{program}.json")))
        else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        md.push_str(&format!(
            "| {program} | {} | {} | {} |\n",
            v["version"].as_str().unwrap_or("?").replace('|', "\\|"),
            v["workload"].as_str().unwrap_or("?").replace('|', "\\|"),
            v["seconds"]
        ));
    }
    md.push_str("\n## Known disagreements with eu-stack\n\n");
    md.push_str(if known.is_empty() { "None.\n" } else { &known });
    md.push_str("\n## Other disagreements with eu-stack\n\n");
    md.push_str(if notes.is_empty() { "None.\n" } else { &notes });
    md.push_str("\n## One address, two names\n\n");
    if aliases.is_empty() {
        md.push_str("None.\n");
    } else {
        md.push_str(&aliases.concat());
    }
    if !missing.is_empty() {
        md.push_str(&format!(
            "\n## Not run\n\n{} (not installed, or its test failed before recording).\n",
            missing.join(", ")
        ));
    }
    let out = repo_root().join("docs/COMPATIBILITY.md");
    std::fs::write(&out, md).unwrap();
    eprintln!("wrote {}", out.display());
}
