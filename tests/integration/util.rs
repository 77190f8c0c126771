//! The integration suite's harness, on top of the shared one (`test-support/`, re-exported
//! here: deadlines, handshakes, artifacts, the C targets of `tests/targets/`): spawn targets
//! (with or without `libstackdump.so` preloaded), signal them by name, wait for dumps on a
//! handshake (the file appearing), and explain failures with everything we have (text dump,
//! child's stderr).
//!
//! Every wait has a deadline; nothing sleeps a fixed time hoping something happened. Every child
//! is killed (SIGKILL) and reaped when its [`Target`] is dropped, panics included.

#![allow(dead_code)] // not every test module uses every helper

pub use test_support::*;

use stackdump_core::kernel::proc::{self as kproc, TaskReader};
use stackdump_core::model::{Dump, SyscallState, Thread, Tid};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether to preload `libstackdump.so` into a [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preload {
    Yes,
    No,
}

/// A spawned target program. Killed (SIGKILL) and reaped on drop; its directories go with it.
pub struct Target {
    child: Child,
    pub pid: i32,
    /// What the program is, for messages.
    pub what: String,
    /// Holds `dumps/` (the target's `STACKDUMP_DIR`) and `stderr.log` (the child's stderr).
    root: tempfile::TempDir,
    /// The target's `STACKDUMP_DIR` (`root/dumps`, or `root/missing` for
    /// [`Target::spawn_without_dump_dir`]).
    dumps: PathBuf,
    stdout_lines: mpsc::Receiver<String>,
    /// Every stdout line seen so far (the reader thread appends).
    stdout_all: Arc<Mutex<Vec<String>>>,
    ready: bool,
}

impl Target {
    /// Spawn `cmd` with stdout piped, stderr to a log file, stdin from /dev/null,
    /// `STACKDUMP_DIR` set to a fresh directory and, with [`Preload::Yes`],
    /// `LD_PRELOAD=libstackdump.so`. Extra environment belongs on `cmd`.
    pub fn spawn(cmd: Command, preload: Preload) -> Target {
        Target::spawn_in(cmd, preload, "dumps", true)
    }

    /// Like [`Target::spawn`], but `STACKDUMP_DIR` names a directory that does not exist (yet):
    /// `root/missing`. Create it with `std::fs::create_dir(t.dump_dir())` when the test wants.
    pub fn spawn_without_dump_dir(cmd: Command, preload: Preload) -> Target {
        Target::spawn_in(cmd, preload, "missing", false)
    }

    #[track_caller]
    fn spawn_in(mut cmd: Command, preload: Preload, dir_name: &str, create: bool) -> Target {
        let root = tempfile::Builder::new()
            .prefix("stackdump-it-")
            .tempdir()
            .expect("create a temp dir");
        let dumps = root.path().join(dir_name);
        if create {
            std::fs::create_dir(&dumps).expect("create dumps dir");
        }
        let stderr = std::fs::File::create(root.path().join("stderr.log")).expect("stderr.log");
        let what = format!("{cmd:?}");
        cmd.env("STACKDUMP_DIR", &dumps)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        match preload {
            Preload::Yes => {
                cmd.env("LD_PRELOAD", libstackdump());
            }
            Preload::No => {
                cmd.env_remove("LD_PRELOAD");
            }
        }
        // ETXTBSY: a test that just wrote an executable (a private copy) while another test's
        // thread forked keeps a write descriptor of it open in that child until its exec.
        let busy_until = Instant::now() + Duration::from_secs(10);
        let mut child = loop {
            match cmd.spawn() {
                Err(e)
                    if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < busy_until =>
                {
                    std::thread::yield_now();
                }
                other => break other.unwrap_or_else(|e| panic!("cannot spawn {what}: {e}")),
            }
        };
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let stdout_all = Arc::new(Mutex::new(Vec::new()));
        let all = Arc::clone(&stdout_all);
        std::thread::Builder::new()
            .name(format!("stdout-{pid}"))
            .spawn(move || {
                // Reads until EOF (the child and everything that inherited its stdout are gone).
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    all.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.clone());
                    let _ = tx.send(line);
                }
            })
            .expect("spawn stdout reader");
        Target {
            child,
            pid,
            what,
            root,
            dumps,
            stdout_lines: rx,
            stdout_all,
            ready: false,
        }
    }

    /// The target's `STACKDUMP_DIR`.
    pub fn dump_dir(&self) -> PathBuf {
        self.dumps.clone()
    }

    /// The target's `/proc/<pid>`.
    pub fn proc_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}", self.pid))
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(self.root.path().join("stderr.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read stderr.log: {e}>"))
    }

    /// Everything the child wrote to stdout so far, one entry per line.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout_all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The child's exit status if it has exited (reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait for the `READY <pid>` line. Panics at the deadline, or as soon as the child dies,
    /// with its stderr.
    #[track_caller]
    pub fn wait_ready(&mut self, deadline: Instant) -> &mut Target {
        loop {
            match self.stdout_lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    let expected = format!("READY {}", self.pid);
                    assert_eq!(
                        line,
                        expected,
                        "{}: first stdout line is not {expected:?}\n{}",
                        self.what,
                        self.describe()
                    );
                    self.ready = true;
                    return self;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the child is most likely exiting; give it until the
                    // deadline to do so, for its status.
                    let mut status = None;
                    poll_until(deadline, || {
                        status = self.exited();
                        status.is_some()
                    });
                    panic!(
                        "{} closed stdout before READY (exit status {status:?})\n{}",
                        self.what,
                        self.describe()
                    );
                }
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited before READY ({status})\n{}",
                    self.what,
                    self.describe()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not print READY before the deadline\n{}",
                    self.what,
                    self.describe()
                );
            }
        }
    }

    /// Kill (SIGKILL) and reap the child, then wait (until `deadline`) for the end of its
    /// stdout, so that [`Target::stdout`] and [`Target::stderr`] hold everything it ever wrote.
    /// Returns the exit status. The target is not usable afterwards (drop is still fine).
    #[track_caller]
    pub fn kill_and_collect(&mut self, deadline: Instant) -> ExitStatus {
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("wait {}: {e}", self.what));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .stdout_lines
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return status,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if left.is_zero() {
                        panic!(
                            "{}: stdout still open at the deadline after the child was killed \
                             (a grandchild holds it?)\n{}",
                            self.what,
                            self.describe()
                        );
                    }
                }
            }
        }
    }

    /// The tids of the target right now (sorted).
    #[track_caller]
    pub fn tids(&self) -> Vec<Tid> {
        TaskReader::new(self.proc_dir()).tids().unwrap_or_else(|e| {
            panic!("{}: cannot list tasks: {e}\n{}", self.what, self.describe())
        })
    }

    /// `(tid, comm)` of every thread right now.
    pub fn thread_names(&self) -> Vec<(Tid, String)> {
        self.tids()
            .into_iter()
            .filter_map(|tid| {
                let comm =
                    std::fs::read_to_string(self.proc_dir().join(format!("task/{}/comm", tid.0)))
                        .ok()?;
                Some((tid, comm.trim_end_matches('\n').to_string()))
            })
            .collect()
    }

    /// The tid of the thread called `name`; panics if there is none or several. A thread names
    /// itself when it first runs (the library's dump thread does; the constructor does not wait
    /// for it, to keep the host's start-up short), which on a loaded machine may come after
    /// the host's READY: it is given up to 30 s to appear.
    #[track_caller]
    pub fn tid_of(&self, name: &str) -> Tid {
        let mut names = Vec::new();
        poll_until(Instant::now() + Duration::from_secs(30), || {
            names = self.thread_names();
            names.iter().filter(|(_, n)| n == name).count() == 1
        });
        let found: Vec<Tid> = names
            .iter()
            .filter(|(_, n)| n == name)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected exactly one thread named {name:?}, threads: {names:?}\n{}",
            self.what,
            self.describe()
        );
        found[0]
    }

    /// Syscall, wchan, state and status of one thread, read from outside (kernel view only).
    #[track_caller]
    pub fn kernel_view(&self, tid: Tid) -> KernelSnapshot {
        let mut reader = TaskReader::new(self.proc_dir());
        reader.kernel_stacks = false;
        let (name, mut view, status) = reader
            .kernel_view(tid)
            .unwrap_or_else(|_| panic!("{}: thread {tid} is gone\n{}", self.what, self.describe()));
        reader.resolve_fd(&mut view.syscall);
        KernelSnapshot {
            name,
            state: view.state,
            wchan: view.wchan,
            syscall: view.syscall,
            status,
        }
    }

    /// The process is alive: not a zombie, and `kill(pid, 0)` succeeds.
    #[track_caller]
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} died ({status})\n{}", self.what, self.describe());
        }
        let stat = std::fs::read(self.proc_dir().join("stat"))
            .unwrap_or_else(|e| panic!("{}: no /proc stat: {e}", self.what));
        let stat = kproc::parse_stat(&stat).expect("parse /proc/PID/stat");
        assert!(
            !matches!(stat.state, 'Z' | 'X'),
            "{} is a zombie (state {})\n{}",
            self.what,
            stat.state,
            self.describe()
        );
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), None)
            .unwrap_or_else(|e| panic!("{}: kill(pid, 0) failed: {e}", self.what));
    }

    /// Everything we know, for failure messages: stdout and stderr so far, and the dump dir.
    pub fn describe(&self) -> String {
        let mut s = format!("--- pid {} ({})\n", self.pid, self.what);
        let stdout = self.stdout();
        s += &format!("--- stdout ({} lines)\n", stdout.len());
        for line in &stdout {
            s += line;
            s.push('\n');
        }
        s += "--- stderr\n";
        s += &self.stderr();
        s += "\n--- dump dir\n";
        match std::fs::read_dir(self.dump_dir()) {
            Ok(entries) => {
                for e in entries.flatten() {
                    s += &format!("{}\n", e.file_name().to_string_lossy());
                }
            }
            Err(e) => s += &format!("<{e}>\n"),
        }
        s += "--- threads (kernel view)\n";
        s += &self.kernel_summary();
        s
    }

    fn kernel_summary(&self) -> String {
        let Ok(tids) = TaskReader::new(self.proc_dir()).tids() else {
            return "<process gone>\n".to_string();
        };
        let mut reader = TaskReader::new(self.proc_dir());
        reader.kernel_stacks = false;
        let mut s = String::new();
        for tid in tids {
            if let Ok((name, view, _)) = reader.kernel_view(tid) {
                s += &format!(
                    "{tid} {name:<16} {} wchan={} {}\n",
                    view.state,
                    view.wchan.as_deref().unwrap_or("-"),
                    stackdump_core::analysis::syscall::syscall(&view.syscall)
                );
            }
        }
        s
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// One thread's kernel view, read from outside the process.
#[derive(Debug, Clone)]
pub struct KernelSnapshot {
    pub name: String,
    pub state: String,
    pub wchan: Option<String>,
    pub syscall: SyscallState,
    pub status: kproc::TaskStatus,
}

impl KernelSnapshot {
    /// The name of the syscall the thread is blocked in, if any.
    pub fn syscall_name(&self) -> Option<&str> {
        match &self.syscall {
            SyscallState::InSyscall { name, .. } => name.as_deref(),
            _ => None,
        }
    }
}

/// The library's dump thread asleep in its idle wait, `rt_sigtimedwait(&{trigger, capture
/// signal}, &info, NULL, 8, served)`: returns `served`, the number of triggers it has recorded
/// and served with finished dumps. The library passes that count in the fifth argument
/// register, which `rt_sigtimedwait` ignores and `/proc/PID/task/TID/syscall` shows (see
/// `dumper/src/sigctx/trigger.rs`). `None` while the thread is anywhere else (dumping, or on its
/// way back). While it sleeps there with `served == n`, every one of the first `n` triggers has
/// been served by a finished dump, and no recorded trigger waits.
pub fn dumper_idle(t: &Target, dumper: Tid) -> Option<u64> {
    let k = t.kernel_view(dumper);
    match &k.syscall {
        SyscallState::InSyscall {
            name: Some(name),
            args,
            ..
        // The dump thread's only rt_sigtimedwait is its wait for work (its timeout is the next
        // check of the trigger's handler, dumper/src/state.rs).
        } if k.state == "S" && name == "rt_sigtimedwait" && args.len() == 6 => {
            Some(args[4].0)
        }
        _ => None,
    }
}

/// The syscall name of a dumped or observed thread.
pub fn syscall_name(s: &SyscallState) -> Option<&str> {
    match s {
        SyscallState::InSyscall { name, .. } => name.as_deref(),
        _ => None,
    }
}

/// Send the signal called `name` (`USR1`, `SIGUSR1`, `RTMIN+3`) to `pid`. Names only: the
/// number is looked up for this machine.
#[track_caller]
pub fn send_signal(pid: i32, name: &str) {
    use std::str::FromStr;
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper.clone()
    } else {
        format!("SIG{upper}")
    };
    let target = nix::unistd::Pid::from_raw(pid);
    match nix::sys::signal::Signal::from_str(&full) {
        Ok(sig) => nix::sys::signal::kill(target, sig)
            .unwrap_or_else(|e| panic!("kill -s {name} {pid}: {e}")),
        Err(_) => {
            // Real-time signals are not in nix's enum: resolve the name with our own table.
            let sig = stackdump_core::kernel::signals::parse_host(name)
                .unwrap_or_else(|e| panic!("signal {name:?}: {e}"));
            // SAFETY: kill(2) with a valid signal number has no memory-safety preconditions.
            let rc = unsafe { libc::kill(pid, sig.number) };
            assert_eq!(
                rc,
                0,
                "kill -s {name} {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The dump files of `pid` in `dir` with this extension (`json`, `txt`), sorted by name.
/// The library's cache of inflated debug sections in a dump directory
/// (`.stackdump-cache-<uid>`, `stackdump_core::stack::dwarfcache`): the one entry of a dump
/// directory that is not a side file.
pub fn is_library_cache(name: &str) -> bool {
    name.starts_with(".stackdump-cache-")
}

pub fn dump_files(dir: &Path, pid: i32, ext: &str) -> Vec<PathBuf> {
    let prefix = format!("stackdump-{pid}-");
    let suffix = format!(".{ext}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(&prefix) && name.ends_with(&suffix)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Wait until a `stackdump-<pid>-*.json` appears in `dir` (polling with backoff 1 ms → 50 ms)
/// and return it; panic at the deadline with what the directory holds.
#[track_caller]
pub fn wait_for_dump(dir: &Path, pid: i32, deadline: Instant) -> PathBuf {
    let mut found = None;
    poll_until(deadline, || {
        found = dump_files(dir, pid, "json").into_iter().next();
        found.is_some()
    });
    found.unwrap_or_else(|| {
        let listing: Vec<String> = std::fs::read_dir(dir)
            .map(|e| {
                e.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "no stackdump-{pid}-*.json in {} before the deadline; the directory holds {listing:?}",
            dir.display()
        )
    })
}

/// Read and parse a JSON dump.
#[track_caller]
pub fn read_dump(path: &Path) -> Dump {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n--- content\n{text}", path.display()));
    assert_schema(&value);
    Dump::from_json(&text).unwrap_or_else(|e| {
        panic!(
            "{} is not a stackdump/1 dump: {e}\n--- content\n{text}",
            path.display()
        )
    })
}

/// The text form of a dump, for failure messages: the `.txt` twin of `json_path` if there is
/// one, else rendered from the JSON.
pub fn dump_text(json_path: &Path, dump: &Dump) -> String {
    let txt = json_path.with_extension("txt");
    match std::fs::read_to_string(&txt) {
        Ok(text) => text,
        Err(_) => stackdump_core::output::render::text(dump),
    }
}

/// A JSON dump read back from its side file, with its text form for failure messages.
pub struct Dumped {
    pub path: PathBuf,
    pub dump: Dump,
    pub text: String,
}

impl Dumped {
    /// Read and parse `path`, and its text form ([`dump_text`]).
    #[track_caller]
    pub fn read(path: &Path) -> Dumped {
        let dump = read_dump(path);
        let text = dump_text(path, &dump);
        Dumped {
            path: path.to_path_buf(),
            dump,
            text,
        }
    }

    /// The dump and the target's state, for failure messages.
    pub fn context(&self, t: &Target) -> String {
        dump_context(Some(&self.path), &self.dump, &self.text, t)
    }

    /// The one thread called `name`; panics (with the context) if there is none or several.
    #[track_caller]
    pub fn thread(&self, t: &Target, name: &str) -> &Thread {
        let found: Vec<&Thread> = self
            .dump
            .threads
            .iter()
            .filter(|th| th.name == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one thread named {name:?} in the dump\n{}",
            self.context(t)
        );
        found[0]
    }
}

/// A dump (its text form, its findings) and the target's state, for failure messages. `path`:
/// the side file it was read from, if any; `text`: its text form.
pub fn dump_context(path: Option<&Path>, d: &Dump, text: &str, t: &Target) -> String {
    let from = path
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default();
    format!(
        "=== dump{from}\n{text}\n=== json findings\n{:#?}\n=== target\n{}",
        d.findings,
        t.describe()
    )
}

/// Does a frame's function name denote `name`? Accepts `name`, `path::to::name` and a trailing
/// Rust hash (`::h0123456789abcdef`).
pub fn function_is(function: Option<&str>, name: &str) -> bool {
    let Some(f) = function else { return false };
    let f = match f.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => f,
    };
    f == name || f.ends_with(&format!("::{name}"))
}

/// Read a whole file into a string (for `/proc` files), panicking with the path.
#[track_caller]
pub fn read_to_string(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    s
}

/// `sigqueue(pid, signo, value)`: a process-directed signal carrying `value` (the way the CLI
/// attaches a request id to a trigger). Sent by number: `signo` comes from libc or our table.
#[track_caller]
pub fn sigqueue(pid: i32, signo: i32, value: usize) {
    let sv = libc::sigval {
        sival_ptr: value as *mut libc::c_void,
    };
    // SAFETY: sigqueue(3) with a valid signal number and a plain value has no memory-safety
    // preconditions (the pointer is never dereferenced, only carried).
    let rc = unsafe { libc::sigqueue(pid, signo, sv) };
    assert_eq!(
        rc,
        0,
        "sigqueue({pid}, {signo}, {value}): {}",
        std::io::Error::last_os_error()
    );
}

/// `VmRSS` of `/proc/<pid>/status`, in KiB.
#[track_caller]
pub fn vm_rss_kib(pid: i32) -> u64 {
    let status = read_to_string(format!("/proc/{pid}/status"));
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// Check a stackdump/1 document against docs/stackdump-1.schema.json; panic with every
/// violation (and where it is).
pub fn assert_schema(v: &serde_json::Value) {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/stackdump-1.schema.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
    });
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "the dump does not match docs/stackdump-1.schema.json:\n{}",
        errors.join("\n")
    );
}
