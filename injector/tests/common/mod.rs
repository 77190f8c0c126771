//! The CLI suite's helpers, on top of the shared harness (`test-support/`, re-exported here:
//! deadlines, handshakes, child guards, artifacts, the C targets of `tests/targets/`): run
//! `stackdump` to completion within the test's deadline, scratch directories, the fake library.

#![allow(dead_code)]

pub use test_support::*;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The outcome of one `stackdump` run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Out {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn stderr_has(&self, what: &str) -> &Out {
        assert!(
            self.stderr.contains(what),
            "stderr lacks {what:?}:\n{}",
            self.stderr
        );
        self
    }
    #[track_caller]
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
#[track_caller]
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

#[track_caller]
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

/// The real libstackdump.so ([`libstackdump`]).
pub fn real_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(libstackdump)
}

/// The fake library (tests/targets/c/fakedumper.c), compiled once per test run.
pub fn fake_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let src = targets_dir().join("c/fakedumper.c");
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-{}", std::process::id()));
        create_public_dir(&dir);
        let out = dir.join("libstackdump-fake.so");
        compile_c(
            &out,
            &[&src],
            &["-shared", "-fPIC", "-O1", "-Wall"],
            &["-lpthread"],
        );
        out
    })
}

/// Parse `stackdump dump --format json` output.
/// A stackdump/1 document is also checked against docs/stackdump-1.schema.json.
#[track_caller]
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

/// Spawn `cmd` (stdout piped) and wait for its `READY <pid> ...` line; returns the process and
/// the words after READY.
#[track_caller]
pub fn spawn_ready(dl: &Deadline, mut cmd: Command) -> (Proc, Vec<String>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut p = Proc::spawn_piped(cmd);
    let out = p.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(dl.left())
        .expect("no READY line before the deadline");
    let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    assert_eq!(words.first().map(String::as_str), Some("READY"), "{line:?}");
    (p, words[1..].to_vec())
}

/// Every line `out` (a child's piped stdout) prints, as it prints it, on a channel (a thread of
/// its own reads until EOF).
pub fn lines_of(out: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The message of a caught panic (`catch_unwind`'s error).
pub fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// One interpreter: its path and version.
#[derive(Debug, Clone)]
pub struct Python {
    pub exe: PathBuf,
    /// (major, minor, micro), for the order of the table.
    pub number: (u32, u32, u32),
    pub version: String,
}

fn probe_python(exe: &Path) -> Option<Python> {
    let out = Command::new(exe)
        .args(["-c", "import sys; print('%d %d %d' % sys.version_info[:3])"])
        .env_remove("LD_PRELOAD")
        .output()
        .ok()?;
    let v: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (out.status.success() && v.len() == 3 && v[0] == 3 && v[1] >= 8).then(|| Python {
        exe: exe.to_path_buf(),
        number: (v[0], v[1], v[2]),
        version: format!("{}.{}.{} ({})", v[0], v[1], v[2], exe.display()),
    })
}

/// Every CPython 3.8+ on this machine (see the module documentation), oldest first.
pub fn pythons() -> Vec<Python> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(list) = std::env::var("STACKDUMP_TEST_PYTHONS") {
        candidates.extend(list.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    } else {
        let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| {
            format!(
                "{}/.pyenv",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into())
            )
        });
        if let Ok(dirs) = std::fs::read_dir(Path::new(&root).join("versions")) {
            let mut dirs: Vec<PathBuf> = dirs.flatten().map(|d| d.path()).collect();
            dirs.sort();
            candidates.extend(
                dirs.iter()
                    .map(|d| d.join("bin/python3"))
                    .filter(|p| p.is_file()),
            );
        }
        for minor in 8..=14 {
            let p = PathBuf::from(format!("/usr/bin/python3.{minor}"));
            if p.is_file() {
                candidates.push(p);
            }
        }
    }
    let mut found: Vec<Python> = candidates.iter().filter_map(|c| probe_python(c)).collect();
    found.sort_by_key(|p| p.number);
    found
}
