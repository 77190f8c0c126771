//! The harness both test suites share (`tests/integration/` through its `util.rs`, and
//! `injector/tests/` through `common/`): deadlines and handshakes, child processes killed and
//! reaped on drop, the workspace's artifacts, the C test targets of `tests/targets/`, the few
//! `/proc` readings the handshakes need, and the root-only guard.
//!
//! The rules it keeps for every test: every wait ends at a deadline; nothing sleeps a fixed time
//! hoping something happened (a handshake polls an observable condition); every spawned child is
//! killed (SIGKILL) and reaped when its guard is dropped, panics included; assert helpers are
//! `#[track_caller]`, so a failure points at the test's line.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Deadlines and handshakes.

/// How long a single wait of a test may take, unless the test sets its own [`Deadline`].
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An instant [`TEST_TIMEOUT`] from now.
pub fn deadline() -> Instant {
    Instant::now() + TEST_TIMEOUT
}

/// The deadline of one test: every wait in it ends there, and a command still running then is
/// killed.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
}

impl Deadline {
    /// `secs` seconds from now.
    pub fn new(secs: u64) -> Deadline {
        Deadline::after(Duration::from_secs(secs))
    }

    /// `d` from now.
    pub fn after(d: Duration) -> Deadline {
        Deadline {
            end: Instant::now() + d,
        }
    }

    /// The instant it ends.
    pub fn at(&self) -> Instant {
        self.end
    }

    /// The time left; panics once the deadline passed.
    #[track_caller]
    pub fn left(&self) -> Duration {
        let now = Instant::now();
        assert!(now < self.end, "the test's deadline passed");
        self.end - now
    }

    /// Whether it passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.end
    }
}

/// Poll `cond` with increasing backoff (1 ms → 50 ms) until it holds or `deadline` passes.
/// A handshake on an observable condition, not a fixed sleep. Returns whether it held.
pub fn poll_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    let mut delay = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(delay.min(deadline - now));
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// [`poll_until`] the test's deadline; panics naming `what` if `cond` never held.
#[track_caller]
pub fn wait_until(dl: &Deadline, what: &str, cond: impl FnMut() -> bool) {
    assert!(poll_until(dl.at(), cond), "timed out waiting until {what}");
}

// ---------------------------------------------------------------------------------------------
// Root.

/// Whether the tests run as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The command that runs the root-only tests (marked `#[ignore = "needs root"]`).
pub const ROOT_TESTS: &str = "cargo test --release --workspace -- --ignored --skip helper_";

/// First line of a root-only test: fails (never passes silently) when not run as root.
#[track_caller]
pub fn needs_root() {
    assert!(
        is_root(),
        "this test needs root (it is marked #[ignore = \"needs root\"]): run `{ROOT_TESTS}` as root"
    );
}

// ---------------------------------------------------------------------------------------------
// The workspace's artifacts.

/// The workspace root (where the root `Cargo.toml` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ sits in the workspace root")
        .to_path_buf()
}

/// `tests/targets/`: the programs the tests run (and the demo's example).
pub fn targets_dir() -> PathBuf {
    repo_root().join("tests/targets")
}

/// `…/target/<profile>`: the directory holding the running test binary's `deps/`. Works for any
/// `CARGO_TARGET_DIR` and any profile (and for `--target <triple>` layouts).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent directory");
    let dir = if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().expect("deps/ has a parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// The cargo command that builds the artifacts of this test run's profile.
pub fn profile_hint() -> String {
    let dir = target_dir();
    match dir.file_name().and_then(OsStr::to_str).unwrap_or("debug") {
        "debug" => "cargo build --workspace".to_string(),
        "release" => "cargo build --release --workspace".to_string(),
        other => format!("cargo build --profile {other} --workspace"),
    }
}

/// The real `libstackdump.so`: `STACKDUMP_LIB` if set, else the one next to this test binary
/// (same profile and target dir), built now with cargo if it is missing.
pub fn libstackdump() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(p) = std::env::var_os("STACKDUMP_LIB") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "STACKDUMP_LIB={} is not a file", p.display());
            return p;
        }
        let path = target_dir().join("libstackdump.so");
        if path.is_file() {
            return path;
        }
        // Build it (the workspace's dumper crate) with the same profile and target dir.
        let dir = target_dir();
        let profile = match dir.file_name().and_then(OsStr::to_str) {
            Some("debug") | None => "dev".to_string(),
            Some(p) => p.to_string(),
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "stackdump-dumper", "--profile", &profile])
            .arg("--manifest-path")
            .arg(repo_root().join("Cargo.toml"))
            .env(
                "CARGO_TARGET_DIR",
                dir.parent().expect("<target>/<profile>"),
            )
            .status()
            .expect("running cargo to build libstackdump.so");
        assert!(
            status.success() && path.is_file(),
            "{} is missing and building it failed: run `{}` first (same profile and target dir \
             as this test run)",
            path.display(),
            profile_hint()
        );
        path
    })
    .clone()
}

/// `target_dir()/stackdump`, the CLI.
#[track_caller]
pub fn stackdump_bin() -> PathBuf {
    artifact(target_dir().join("stackdump"), "")
}

/// `target_dir()/examples/<name>`, a Rust test target (an example of the root package).
#[track_caller]
pub fn rust_target(name: &str) -> PathBuf {
    artifact(target_dir().join("examples").join(name), " --examples")
}

#[track_caller]
fn artifact(path: PathBuf, extra: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: run `{}{extra}` first (same profile and target dir as this test run)",
        path.display(),
        profile_hint()
    );
    path
}

/// `tests/targets/python/<name>`.
#[track_caller]
pub fn python_target(name: &str) -> PathBuf {
    let path = targets_dir().join("python").join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

// ---------------------------------------------------------------------------------------------
// C test targets.

/// Compile `sources` into `out` with `$CC` (default `cc`) and `args` (placed before `-o`;
/// `post` after the sources, for libraries). Compiles to a temporary name and renames, so a
/// concurrent test process never runs a half-written file. Panics with the compiler's output.
#[track_caller]
pub fn compile_c(out: &Path, sources: &[&Path], args: &[&str], post: &[&str]) {
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let name = out
        .file_name()
        .expect("an output file name")
        .to_string_lossy();
    let tmp = out.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut cmd = Command::new(&cc);
    cmd.args(args).arg("-o").arg(&tmp).args(sources).args(post);
    let output = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run the C compiler {cc:?} (a C compiler is needed for the tests): {e}")
    });
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&tmp, out)
        .unwrap_or_else(|e| panic!("rename {} into place: {e}", out.display()));
}

/// `mkdir -p dir`, every directory made world-readable and -searchable (some tests run the
/// targets as another user).
pub fn create_public_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", dir.display()));
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
}

/// How a C test target is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CFlavour {
    /// `-O2 -g -pthread`, no frame pointers (on purpose: stacks are unwound from DWARF CFI).
    Plain,
    /// The same with `-fno-omit-frame-pointer` (every function's CFA is `rbp + 16`, as in
    /// distributions built with frame pointers).
    FramePointers,
}

/// `tests/targets/c/<name>.c` compiled with `cc -O2 -g -pthread -std=c11 -Wall -Wextra` (no
/// frame pointers, on purpose) into `target_dir()/c-targets/<name>`. Once per test process per
/// target; rebuilt when the source is newer than the binary. The directories are
/// world-readable (some tests run the targets as another user).
#[track_caller]
pub fn c_target(name: &str) -> PathBuf {
    build_c_target(name, CFlavour::Plain)
}

/// [`c_target`] with `-fno-omit-frame-pointer` (every function's CFA is `rbp + 16`, as in
/// distributions built with frame pointers), into `target_dir()/c-targets/fp/<name>` (same
/// file name, so the process keeps its `comm`).
#[track_caller]
pub fn c_target_fp(name: &str) -> PathBuf {
    build_c_target(name, CFlavour::FramePointers)
}

#[track_caller]
fn build_c_target(name: &str, flavour: CFlavour) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, CFlavour, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, path)) = built.iter().find(|(n, f, _)| n == name && *f == flavour) {
        return path.clone();
    }
    let source = targets_dir().join("c").join(format!("{name}.c"));
    assert!(source.is_file(), "{} is missing", source.display());
    let out_dir = match flavour {
        CFlavour::Plain => target_dir().join("c-targets"),
        CFlavour::FramePointers => target_dir().join("c-targets/fp"),
    };
    create_public_dir(&out_dir);
    let binary = out_dir.join(name);
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = matches!((mtime(&source), mtime(&binary)), (Some(s), Some(b)) if b >= s);
    if !fresh {
        let mut args = vec!["-O2", "-g", "-pthread", "-std=c11", "-Wall", "-Wextra"];
        if flavour == CFlavour::FramePointers {
            args.insert(0, "-fno-omit-frame-pointer");
        }
        compile_c(&binary, &[&source], &args, &[]);
    }
    built.push((name.to_string(), flavour, binary.clone()));
    binary
}

/// A copy of `binary` that nothing will ever replace or delete while a test runs it:
/// `target_dir()/c-targets/private/<content hash>/<name>` (same file name, so the process
/// keeps its `comm`), written under a temporary name and renamed into place once per content.
/// (The binary [`c_target`] returns is rebuilt in place whenever a checkout sharing this
/// target dir has a newer source; a process started from it then runs a deleted executable.)
pub fn private_copy(binary: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    static LOCK: Mutex<()> = Mutex::new(());
    let _serialized = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let bytes =
        std::fs::read(binary).unwrap_or_else(|e| panic!("cannot read {}: {e}", binary.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let name = binary.file_name().expect("a binary has a file name");
    let dir = target_dir()
        .join("c-targets/private")
        .join(format!("{:016x}", h.finish()));
    let path = dir.join(name);
    if !path.is_file() {
        create_public_dir(&dir);
        // Unique per process (and serialized within it): another test process may race us.
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::write(&tmp, &bytes).expect("write the private copy");
        let mode = std::fs::metadata(binary)
            .expect("stat the binary")
            .permissions();
        std::fs::set_permissions(&tmp, mode).expect("chmod the private copy");
        std::fs::rename(&tmp, &path).expect("rename the private copy into place");
    }
    path
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub pid: i32,
}

impl Proc {
    /// Spawn with stdin and stdout from/to /dev/null (stderr inherited).
    #[track_caller]
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        Proc::spawn_piped(cmd)
    }

    /// Spawn keeping the caller's stdout/stderr settings (pipes to read progress from); stdin
    /// from /dev/null.
    #[track_caller]
    pub fn spawn_piped(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        Proc { child, pid }
    }

    /// True while it runs (a zombie is not alive; it is not reaped here).
    pub fn alive(&self) -> bool {
        alive(self.pid)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// /proc readings for handshakes.

/// Process state letter from `/proc/PID/stat`, or `None` when gone.
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// The value of a line of `/proc/PID/status` (`NSpid`, `SigCgt`, ...), trimmed.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// A signal mask line of `/proc/PID/status` (`SigCgt`, `SigBlk`, `ShdPnd`, ...), as bits.
/// `None` when the process is gone or the line is missing.
pub fn status_mask(pid: i32, field: &str) -> Option<u64> {
    u64::from_str_radix(&status_field(pid, field)?, 16).ok()
}

/// Whether signal `signo` is set in a `/proc` signal mask (bit `signo - 1`).
pub fn mask_has(mask: u64, signo: i32) -> bool {
    (1..=64).contains(&signo) && mask & (1u64 << (signo - 1)) != 0
}

/// Whether `pid` catches signal `signo` (a handler is installed).
pub fn catches(pid: i32, signo: i32) -> bool {
    status_mask(pid, "SigCgt").is_some_and(|m| mask_has(m, signo))
}

/// Whether `/proc/PID/maps` mentions `what`.
pub fn maps_contain(pid: i32, what: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(what))
}

/// Whether a thread of `pid` is called `name`.
pub fn thread_named(pid: i32, name: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| {
        d.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
    })
}

/// Wait until the real library is ready in `pid`: mapped, trigger `signo` caught, dump thread
/// running.
#[track_caller]
pub fn wait_ready(dl: &Deadline, pid: i32, signo: i32) {
    wait_until(dl, &format!("libstackdump.so is ready in {pid}"), || {
        maps_contain(pid, "libstackdump") && catches(pid, signo) && thread_named(pid, "stackdump")
    });
}
