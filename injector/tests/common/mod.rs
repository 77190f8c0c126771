//! Helpers for the CLI's end-to-end tests: real processes, handshakes instead of sleeps, children
//! killed and reaped on drop, a deadline per test.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The deadline of one test: every wait in it ends there, and a CLI still running then is killed.
pub struct Deadline {
    end: Instant,
}

impl Deadline {
    pub fn new(secs: u64) -> Deadline {
        Deadline {
            end: Instant::now() + Duration::from_secs(secs),
        }
    }

    pub fn left(&self) -> Duration {
        let now = Instant::now();
        assert!(now < self.end, "the test's deadline passed");
        self.end - now
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.end
    }
}

/// Poll `f` every few milliseconds until it holds (a handshake on observable state).
pub fn wait_until(dl: &Deadline, what: &str, mut f: impl FnMut() -> bool) {
    let mut pause = Duration::from_millis(1);
    loop {
        if f() {
            return;
        }
        assert!(!dl.passed(), "timed out waiting until {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub pid: i32,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let pid = child.id() as i32;
        Proc { child, pid }
    }

    /// Spawn keeping the caller's stdout/stderr settings (pipes to read progress from).
    pub fn spawn_piped(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let pid = child.id() as i32;
        Proc { child, pid }
    }

    /// True while it runs (a zombie is not alive; it is not reaped here).
    pub fn alive(&self) -> bool {
        alive(self.pid)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Process state letter from /proc/PID/stat, or None when gone.
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

pub fn alive(pid: i32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

pub fn catches(pid: i32, signo: i32) -> bool {
    status_field(pid, "SigCgt")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|m| m & (1 << (signo - 1)) != 0)
}

pub fn maps_contain(pid: i32, what: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(what))
}

pub fn thread_named(pid: i32, name: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| {
        d.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
    })
}

/// Wait until the real library is ready in `pid`: mapped, trigger caught, dump thread running.
pub fn wait_ready(dl: &Deadline, pid: i32, signo: i32) {
    wait_until(dl, &format!("libstackdump.so is ready in {pid}"), || {
        maps_contain(pid, "libstackdump") && catches(pid, signo) && thread_named(pid, "stackdump")
    });
}

/// The outcome of one `stackdump` run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn assert_code(&self, code: i32) -> &Out {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn stderr_has(&self, what: &str) -> &Out {
        assert!(
            self.stderr.contains(what),
            "stderr lacks {what:?}:\n{}",
            self.stderr
        );
        self
    }
    pub fn stdout_has(&self, what: &str) -> &Out {
        assert!(
            self.stdout.contains(what),
            "stdout lacks {what:?}:\n{}",
            self.stdout
        );
        self
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stackdump")
}

/// A `stackdump` command (the CLI under test), with the library path set.
pub fn cli(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    cmd.env_remove("STACKDUMP_TEST_NO_OPENAT2");
    // `inspect`'s cache of decompressed debug sections: the test run's, not the user's.
    cmd.env(
        "STACKDUMP_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("dwarf-cache"),
    );
    cmd
}

/// Run a command to completion within the deadline; kill it if it overstays.
pub fn run(dl: &Deadline, mut cmd: Command) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if dl.passed() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running at the test's deadline");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    use std::os::unix::process::ExitStatusExt;
    Out {
        code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
}

pub fn stackdump(dl: &Deadline, args: &[&str]) -> Out {
    run(dl, cli(args))
}

/// A scratch directory under the target dir (not under /tmp, which some tests hide).
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = base.join(format!("cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    pub fn str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn target_dir() -> PathBuf {
    // The test binary is <target>/<profile>/deps/cli-<hash>.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// The real libstackdump.so: STACKDUMP_LIB, or built next to the CLI (release or debug), or
/// built now with cargo.
pub fn real_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(p) = std::env::var_os("STACKDUMP_LIB") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "STACKDUMP_LIB={} is not a file", p.display());
            return p;
        }
        let target = target_dir();
        let profile_dir = Path::new(bin()).parent().unwrap().to_path_buf();
        let candidates = [
            profile_dir.join("libstackdump.so"),
            target.join("release/libstackdump.so"),
            target.join("debug/libstackdump.so"),
        ];
        if let Some(p) = candidates.iter().find(|p| p.is_file()) {
            return p.clone();
        }
        // Build it (the workspace's dumper crate) into the same target directory.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "stackdump-dumper", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("running cargo to build libstackdump.so");
        assert!(status.success(), "building libstackdump.so failed");
        let p = target.join("debug/libstackdump.so");
        assert!(p.is_file(), "{} not built", p.display());
        p
    })
}

/// The fake library (tests/fixtures/fakedumper.c), compiled once per test run.
pub fn fake_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fakedumper.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fake-{}", std::process::id()))
            .join("libstackdump-fake.so");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-lpthread")
            .status()
            .unwrap_or_else(|e| {
                panic!("running {cc} (a C compiler is needed for the fixture): {e}")
            });
        assert!(status.success(), "compiling {}", src.display());
        out
    })
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Parse `stackdump dump --format json` output.
/// A stackdump/1 document is also checked against docs/stackdump-1.schema.json.
pub fn json(out: &Out) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", out.stdout, out.stderr));
    if v["format"] == "stackdump/1" {
        assert_schema(&v);
    }
    v
}

/// Every request id a dump names (its trigger and the coalesced ones).
pub fn request_ids(v: &serde_json::Value) -> Vec<u64> {
    let mut ids: Vec<u64> = v["trigger"]["request"].as_u64().into_iter().collect();
    if let Some(c) = v["trigger"]["coalesced"].as_array() {
        ids.extend(c.iter().filter_map(|t| t["request"].as_u64()));
    }
    ids
}

/// Check a stackdump/1 document against docs/stackdump-1.schema.json; panic with every
/// violation (and where it is).
pub fn assert_schema(v: &serde_json::Value) {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/stackdump-1.schema.json");
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

/// Parse a JSON dump and check it against the schema.
pub fn parse_dump(text: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
    assert_schema(&v);
    v
}
