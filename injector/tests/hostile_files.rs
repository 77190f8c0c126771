//! File-system attacks on `stackdump` run as root against the processes of an unprivileged user
//! (issue 15): the user, `stackdump-eve`, plants symbolic links, FIFOs and devices where the CLI
//! looks for debug files, modules and dumps, and root runs `stackdump inspect` or `compare`.
//!
//! Expected behaviour (the fix's design): files the target controls are opened resolved inside
//! the target's root (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symbolic links are
//! followed but stay inside), first with `O_PATH` and checked to be regular files (FIFOs and
//! devices are never opened), with the target's file-system credentials, so that a file only
//! root may read is never read on behalf of a target; mapped modules through
//! `/proc/PID/map_files/`.
//!
//! Every test needs root (it creates the user, runs her processes, chroots): they are marked
//! `#[ignore = "needs root"]`, run by `.ci/run` as root, and fail when run without it. Everything eve runs is built into fresh world-readable directories under /tmp,
//! never under the work tree. Handshakes on READY lines, children killed and reaped on drop,
//! a deadline per test and per CLI run.
//!
//! Needs: a C compiler with a static C library (`libc.a`), `strip`, util-linux (`setpriv`,
//! `unshare`, `mount`), coreutils (`chroot`, `mkfifo`, `mknod`), `useradd`; the namespace tests
//! also need unprivileged user namespaces (skipped loudly without them).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The unprivileged user the attacks run as.
const EVE: &str = "stackdump-eve";
/// The hidden function of the root-only library: its name in any output is the leak.
const SECRET_FN: &str = "TOP_SECRET_root_only_symbol_hunter2";
/// The hidden function of eve's own library (same length as SECRET_FN): named only from a
/// debug file eve may read.
const EVE_FN: &str = "EVE_READABLE_debug_only_symbol_ok12";
/// The exported entry point of eve's library (.dynsym: named even when stripped).
const ENTRY: &str = "stackdump_hostile_enter";
/// How long one CLI run may take.
const CLI_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Preconditions.

/// eve's uid and gid, the user created when missing (once per process; a concurrent `useradd`
/// from another test process is waited out).
#[track_caller]
fn eve() -> (u32, u32) {
    static EVE_IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *EVE_IDS.get_or_init(|| {
        let lookup = || {
            let o = Command::new("getent").args(["passwd", EVE]).output().ok()?;
            let line = String::from_utf8(o.stdout).ok()?;
            let f: Vec<&str> = line.trim_end().split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
        };
        for _ in 0..50 {
            if let Some(ids) = lookup() {
                return ids;
            }
            // Exit 9: it exists (made meanwhile); 10: the passwd file is locked by another.
            let o = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(EVE)
                .output()
                .expect("running useradd");
            if !o.status.success() && !matches!(o.status.code(), Some(9 | 10)) {
                panic!(
                    "useradd {EVE}: {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("user {EVE} could not be created");
    })
}

/// `prog` run as eve (real and effective ids, no supplementary groups, no capabilities).
fn as_eve(prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let (uid, gid) = eve();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--"])
        .arg(prog);
    cmd
}

/// True when eve may make a user and mount namespace and mount a tmpfs over /usr/lib/debug in
/// it; else says loudly why the test is skipped.
fn userns_or_skip() -> bool {
    static WHY_NOT: OnceLock<Option<String>> = OnceLock::new();
    let why_not = WHY_NOT.get_or_init(|| {
        let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").ok();
        if max.as_deref().map(str::trim) == Some("0") {
            return Some("user.max_user_namespaces = 0".into());
        }
        let clone = std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone").ok();
        if clone.as_deref().map(str::trim) == Some("0") {
            return Some("kernel.unprivileged_userns_clone = 0".into());
        }
        let mut cmd = as_eve("unshare");
        cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /usr/lib/debug && mkdir /usr/lib/debug/.build-id");
        match cmd.output() {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "{EVE} cannot mount a tmpfs over /usr/lib/debug in a user namespace: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("running unshare: {e}")),
        }
    });
    if let Some(why) = why_not {
        eprintln!("SKIPPED: needs unprivileged user namespaces: {why}");
        return false;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Files.

/// A fresh directory under /tmp (not under the work tree: eve must reach it), removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    #[track_caller]
    fn new(prefix: &str, mode: u32) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let path = PathBuf::from(format!(
                "/tmp/{prefix}-{}-{}-{nanos:x}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    chmod(&path, mode);
                    return TempDir { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating {}: {e}", path.display()),
            }
        }
    }

    fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[track_caller]
fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

#[track_caller]
fn chown_eve(p: &Path) {
    let (uid, gid) = eve();
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {EVE} {}: {e}", p.display()));
}

#[track_caller]
fn copy(from: &Path, to: &Path, mode: u32) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    chmod(to, mode);
}

#[track_caller]
fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {target}: {e}", link.display()));
}

/// Run a setup command (mkfifo, mknod, ln, strip...) to success.
#[track_caller]
fn sh(mut cmd: Command) {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Single-quoted for sh (the paths here have no quotes).
#[track_caller]
fn q(p: impl AsRef<Path>) -> String {
    let s = p.as_ref().to_str().unwrap();
    assert!(!s.contains('\''), "{s}");
    format!("'{s}'")
}

/// Compile `tests/targets/c/hostile/SRC` to `out` with `args` (after the source: `-l` and
/// `-static` options go there).
fn cc(out: &Path, src: &str, args: &[&str]) {
    let src = targets_dir().join("c/hostile").join(src);
    compile_c(out, &[&src], &["-Wall"], args);
}

/// The programs of one test, in a fresh world-readable directory, all with one build id:
/// eve's library and static program with their genuine debug files (`-g`, not stripped) and
/// stripped copies (what eve runs), and the target that dlopens the library.
struct Builds {
    dir: TempDir,
    build_id: String,
    /// lib.c with FN = EVE_FN, `-g`: the genuine debug file of `lib`.
    lib_debug: PathBuf,
    /// The same, stripped (the build id note and .eh_frame stay).
    lib: PathBuf,
    target: PathBuf,
}

impl Builds {
    fn new() -> Builds {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = TempDir::new("stackdump-eve-bin", 0o755);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let build_id = format!(
            "{:08x}{:08x}{:024x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            nanos & ((1 << 96) - 1)
        );
        let b = Builds {
            lib_debug: dir.join("libeve.debug"),
            lib: dir.join("libeve.so"),
            target: dir.join("target"),
            dir,
            build_id,
        };
        b.shared_lib(&b.lib_debug, EVE_FN);
        b.strip(&b.lib_debug, &b.lib);
        cc(
            &b.target,
            "target.c",
            &["-O1", "-g", "-Wl,--compress-debug-sections=zlib", "-ldl"],
        );
        b
    }

    fn build_id_flag(&self) -> String {
        format!("-Wl,--build-id=0x{}", self.build_id)
    }

    /// lib.c with FN = `name`, `-g`, this build id.
    fn shared_lib(&self, out: &Path, name: &str) {
        cc(
            out,
            "lib.c",
            &[
                "-O0",
                "-g",
                "-fPIC",
                "-shared",
                &format!("-DFN={name}"),
                &self.build_id_flag(),
            ],
        );
        chmod(out, 0o644);
    }

    /// static.c with FN = `name`, `-g -static`, this build id.
    fn static_prog(&self, out: &Path, name: &str) {
        cc(
            out,
            "static.c",
            &[
                "-O0",
                "-g",
                "-static",
                &format!("-DFN={name}"),
                &self.build_id_flag(),
            ],
        );
    }

    fn strip(&self, from: &Path, to: &Path) {
        let mut cmd = Command::new("strip");
        cmd.arg("-o").arg(to).arg(from);
        sh(cmd);
        chmod(to, 0o755);
    }

    /// Where a separate debug file of this build id is looked up, relative to a root.
    fn debug_rel(&self) -> String {
        format!(
            "usr/lib/debug/.build-id/{}/{}.debug",
            &self.build_id[..2],
            &self.build_id[2..]
        )
    }

    fn debug_abs(&self) -> String {
        format!("/{}", self.debug_rel())
    }
}

/// Root's secret: a 0700 directory of root's with a 0600 file in it, built from the same source
/// as eve's file (same layout, same build id) but with FN = SECRET_FN.
struct Secret {
    _dir: TempDir,
    file: PathBuf,
}

impl Secret {
    fn lib(b: &Builds) -> Secret {
        let dir = TempDir::new("stackdump-secret", 0o700);
        let file = dir.join("secret.so");
        b.shared_lib(&file, SECRET_FN);
        chmod(&file, 0o600);
        Secret { _dir: dir, file }
    }

    fn static_prog(b: &Builds) -> Secret {
        let dir = TempDir::new("stackdump-secret", 0o700);
        let file = dir.join("secret-static-debug");
        b.static_prog(&file, SECRET_FN);
        chmod(&file, 0o600);
        Secret { _dir: dir, file }
    }

    fn path(&self) -> &str {
        self.file.to_str().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// Spawn `cmd` (stdout and stderr piped) and wait for its `READY <pid>` line; the pid must be
/// the spawned one (every wrapper execs), so that dropping the Proc kills the target itself.
#[track_caller]
fn spawn_ready(dl: &Deadline, mut cmd: Command) -> Proc {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut p = Proc::spawn_piped(cmd);
    let out = p.child.stdout.take().unwrap();
    let mut err = p.child.stderr.take().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let e = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            e.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep the pipe open and drained: the target never blocks on a full stdout.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx.recv_timeout(dl.left()).unwrap_or_default();
    let pid = line
        .strip_prefix("READY ")
        .and_then(|w| w.trim().parse::<i32>().ok());
    if pid.is_none() {
        std::thread::sleep(Duration::from_millis(100)); // let its stderr arrive
        panic!(
            "no READY line from {what}: got {line:?}; its stderr:\n{}",
            stderr.lock().unwrap()
        );
    }
    assert_eq!(pid, Some(p.pid), "READY from another process than {what}");
    p
}

/// eve's target in her own user and mount namespace: a tmpfs over /usr/lib/debug, the
/// shell commands `plant` run in it (as root of her namespace), then the target dlopens `lib`
/// and blocks in it. READY comes after everything is planted and loaded.
fn spawn_eve_in_userns(dl: &Deadline, b: &Builds, plant: &str, lib: &Path) -> Proc {
    let script = format!(
        "set -e\nmount -t tmpfs -o mode=0755 tmpfs /usr/lib/debug\nmkdir -p /usr/lib/debug/.build-id/{}\n{plant}\nexec {} {}\n",
        &b.build_id[..2],
        q(&b.target),
        q(lib)
    );
    let mut cmd = as_eve("unshare");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]);
    spawn_ready(dl, cmd)
}

/// What is at `rel` (and in its directory) inside the root of `pid`, as root sees it: the
/// planted layout, for failure messages.
fn layout(pid: i32, rel: &str) -> String {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let p = root.join(rel);
    let mut s = format!("inside the root of {pid}:\n");
    if let Some(dir) = p.parent() {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let path = e.path();
                let meta = std::fs::symlink_metadata(&path);
                let kind = match &meta {
                    Ok(m) if m.file_type().is_symlink() => format!(
                        "symlink -> {}",
                        std::fs::read_link(&path)
                            .map(|t| t.display().to_string())
                            .unwrap_or_default()
                    ),
                    Ok(m) => {
                        use std::os::unix::fs::FileTypeExt;
                        let t = m.file_type();
                        let kind = if t.is_fifo() {
                            "fifo"
                        } else if t.is_char_device() {
                            "char device"
                        } else if t.is_dir() {
                            "directory"
                        } else {
                            "file"
                        };
                        format!("{kind} mode {:o}", m.permissions().mode())
                    }
                    Err(e) => format!("({e})"),
                };
                s += &format!(
                    "  {}: {kind}\n",
                    path.strip_prefix(&root).unwrap().display()
                );
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The CLI.

/// One CLI run that may overstay: killed at `limit`.
struct Run {
    out: Out,
    timed_out: bool,
    took: Duration,
    what: String,
}

impl Run {
    fn all(&self) -> String {
        format!(
            "{} (exit {}, {:.1} s{}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.out.code,
            self.took.as_secs_f64(),
            if self.timed_out {
                ", KILLED: still running at its time limit"
            } else {
                ""
            },
            self.out.stdout,
            self.out.stderr
        )
    }
}

#[track_caller]
fn run_within(dl: &Deadline, limit: Duration, mut cmd: Command) -> Run {
    let limit = limit.min(dl.left());
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let t2 = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() >= limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    use std::os::unix::process::ExitStatusExt;
    Run {
        out: Out {
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: t1.join().unwrap(),
            stderr: t2.join().unwrap(),
        },
        timed_out,
        took,
        what,
    }
}

/// `stackdump inspect PID` in text and in JSON, each within CLI_LIMIT.
fn inspect_both(dl: &Deadline, pid: i32) -> Vec<Run> {
    let p = pid.to_string();
    vec![
        run_within(dl, CLI_LIMIT, cli(&["inspect", &p])),
        run_within(dl, CLI_LIMIT, cli(&["inspect", &p, "--format", "json"])),
    ]
}

#[track_caller]
fn assert_finished_ok(r: &Run, ctx: &str) {
    assert!(
        !r.timed_out,
        "the CLI hung (killed after {:.1} s)\n{ctx}\n{}",
        r.took.as_secs_f64(),
        r.all()
    );
    assert_eq!(r.out.code, 0, "exit code\n{ctx}\n{}", r.all());
}

#[track_caller]
fn assert_shows(r: &Run, what: &str, ctx: &str) {
    assert_finished_ok(r, ctx);
    assert!(
        r.out.stdout.contains(what),
        "the output lacks {what:?}\n{ctx}\n{}",
        r.all()
    );
}

#[track_caller]
fn assert_never_shows(r: &Run, what: &str, ctx: &str) {
    assert_finished_ok(r, ctx);
    assert!(
        !r.out.stdout.contains(what) && !r.out.stderr.contains(what),
        "LEAK: the output names {what:?}, read from a file only root may read\n{ctx}\n{}",
        r.all()
    );
}

/// The stack has frames (at least two), named or not: `#1 ` in text, `frames` in JSON.
#[track_caller]
fn assert_has_frames(r: &Run, ctx: &str) {
    assert_finished_ok(r, ctx);
    let frames = match serde_json::from_str::<serde_json::Value>(&r.out.stdout) {
        Ok(v) => v["threads"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t["frames"].as_array().map_or(0, Vec::len))
            .max()
            .unwrap_or(0),
        Err(_) => usize::from(r.out.stdout.contains("   #1 ")) * 2,
    };
    assert!(frames >= 2, "no stack shown\n{ctx}\n{}", r.all());
}

/// Run one case of a test; a failing case is reported (its panic message is printed as it
/// happens) and the next one still runs, so one run shows every case that fails.
fn case(failed: &mut Vec<String>, what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        failed.push(what.to_string());
    }
}

#[track_caller]
fn verdict(failed: &[String]) {
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
}

// ---------------------------------------------------------------------------------------------

/// eve, root of her own user and mount namespace, mounts a tmpfs over /usr/lib/debug and plants
/// her library's build-id debug path as an absolute symbolic link to a root-only file.
#[test]
#[ignore = "needs root"]
fn a_build_id_symlink_planted_in_a_user_namespace_does_not_read_a_root_only_file() {
    needs_root();
    if !userns_or_skip() {
        return;
    }
    let dl = Deadline::new(150);
    let b = Builds::new();
    let secret = Secret::lib(&b);
    let public = TempDir::new("stackdump-public", 0o755);
    let public_debug = public.join("libeve.debug");
    copy(&b.lib_debug, &public_debug, 0o644);

    let mut failed = Vec::new();
    case(
        &mut failed,
        "control: a link to a debug file eve may read",
        || {
            let plant = format!("ln -s {} {}", q(&public_debug), q(b.debug_abs()));
            let target = spawn_eve_in_userns(&dl, &b, &plant, &b.lib);
            let ctx = format!(
                "control: debug link to eve's readable debug file\n{}",
                layout(target.pid, &b.debug_rel())
            );
            for r in inspect_both(&dl, target.pid) {
                assert_shows(&r, EVE_FN, &ctx);
            }
        },
    );
    case(&mut failed, "attack: a link to root's secret", || {
        let plant = format!("ln -s {} {}", q(secret.path()), q(b.debug_abs()));
        let target = spawn_eve_in_userns(&dl, &b, &plant, &b.lib);
        let ctx = format!(
            "attack: debug link to {} (root's, mode 0600 in a 0700 directory)\n{}",
            secret.path(),
            layout(target.pid, &b.debug_rel())
        );
        for r in inspect_both(&dl, target.pid) {
            assert_never_shows(&r, "TOP_SECRET", &ctx);
            assert_shows(&r, ENTRY, &ctx);
        }
    });
    verdict(&failed);
}

/// A chroot of eve's (root made it, as a container runtime would; no user namespace) whose
/// build-id debug path escapes the chroot to root's secret: by an absolute link (resolved
/// against the root of whoever follows it) and by a relative one with more `..` than the chroot
/// is deep.
#[test]
#[ignore = "needs root"]
fn a_chroot_without_user_namespace_does_not_read_a_root_only_file() {
    needs_root();
    let dl = Deadline::new(150);
    let b = Builds::new();
    let secret = Secret::static_prog(&b);
    let prog_debug = b.dir.join("static.debug");
    b.static_prog(&prog_debug, EVE_FN);
    chmod(&prog_debug, 0o644);
    let prog = b.dir.join("static");
    b.strip(&prog_debug, &prog);

    let escape_rel = format!("{}{}", "../".repeat(12), &secret.path()[1..]);
    let cases: [(&str, Option<&str>, bool); 3] = [
        (
            "control: a regular debug file inside the chroot",
            None,
            true,
        ),
        (
            "attack: absolute link out of the chroot",
            Some(secret.path()),
            false,
        ),
        (
            "attack: relative link out of the chroot",
            Some(&escape_rel),
            false,
        ),
    ];
    let mut failed = Vec::new();
    for (what, link, control) in cases {
        case(&mut failed, what, || {
            let chroot = make_chroot(&b, &prog);
            let debug = chroot.join(&b.debug_rel());
            match link {
                None => copy(&prog_debug, &debug, 0o644),
                Some(l) => symlink(l, &debug),
            }
            let target = spawn_chrooted(&dl, &chroot);
            let ctx = format!(
                "{what}; chroot {}\n{}",
                chroot.path.display(),
                layout(target.pid, &b.debug_rel())
            );
            for r in inspect_both(&dl, target.pid) {
                if control {
                    assert_shows(&r, EVE_FN, &ctx);
                } else {
                    assert_never_shows(&r, "TOP_SECRET", &ctx);
                    assert_has_frames(&r, &ctx);
                }
            }
        });
    }
    verdict(&failed);
}

/// Symbolic links inside a chroot, absolute or relative, are followed inside it (Fedora's
/// `.build-id` links are links; a container's absolute links name paths of the container).
#[test]
#[ignore = "needs root"]
fn a_chroot_debug_link_is_followed_inside_the_chroot() {
    needs_root();
    let dl = Deadline::new(120);
    let b = Builds::new();
    let prog_debug = b.dir.join("static.debug");
    b.static_prog(&prog_debug, EVE_FN);
    chmod(&prog_debug, 0o644);
    let prog = b.dir.join("static");
    b.strip(&prog_debug, &prog);
    let mut failed = Vec::new();
    for (what, link) in [
        (
            "relative link inside the chroot",
            "../../../../../debugfiles/prog.debug",
        ),
        (
            "absolute link inside the chroot (no such path outside it)",
            "/debugfiles/prog.debug",
        ),
    ] {
        case(&mut failed, what, || {
            let chroot = make_chroot(&b, &prog);
            std::fs::create_dir(chroot.join("debugfiles")).unwrap();
            copy(&prog_debug, &chroot.join("debugfiles/prog.debug"), 0o644);
            symlink(link, &chroot.join(&b.debug_rel()));
            let target = spawn_chrooted(&dl, &chroot);
            let ctx = format!(
                "{what}; chroot {}\n{}",
                chroot.path.display(),
                layout(target.pid, &b.debug_rel())
            );
            for r in inspect_both(&dl, target.pid) {
                assert_shows(&r, EVE_FN, &ctx);
            }
        });
    }
    verdict(&failed);
}

/// A chroot directory (world-readable) with `prog` at /prog and the build-id directory made.
fn make_chroot(b: &Builds, prog: &Path) -> TempDir {
    let chroot = TempDir::new("stackdump-chroot", 0o755);
    copy(prog, &chroot.join("prog"), 0o755);
    let debug = chroot.join(&b.debug_rel());
    std::fs::create_dir_all(debug.parent().unwrap()).unwrap();
    chroot
}

/// `/prog` of `chroot`, run there as eve.
fn spawn_chrooted(dl: &Deadline, chroot: &TempDir) -> Proc {
    let (uid, gid) = eve();
    let mut cmd = Command::new("chroot");
    cmd.arg(format!("--userspec={uid}:{gid}"))
        .arg(format!("--groups={gid}"))
        .arg(&chroot.path)
        .arg("/prog");
    spawn_ready(dl, cmd)
}

/// The debug path is a FIFO in eve's tmpfs: opening it for reading would wait for a writer
/// forever.
#[test]
#[ignore = "needs root"]
fn a_fifo_planted_at_a_debug_file_path_does_not_hang_inspect() {
    needs_root();
    if !userns_or_skip() {
        return;
    }
    let dl = Deadline::new(120);
    let b = Builds::new();
    let plant = format!("mkfifo -m 0644 {}", q(b.debug_abs()));
    let target = spawn_eve_in_userns(&dl, &b, &plant, &b.lib);
    let ctx = format!(
        "a FIFO at the debug path\n{}",
        layout(target.pid, &b.debug_rel())
    );
    for r in inspect_both(&dl, target.pid) {
        assert_shows(&r, ENTRY, &ctx);
        assert_shows(&r, "target.c", &ctx);
    }
}

/// eve bind-mounts a device node (root's, a null device, mode 0666) over her debug path: root
/// watches the node for IN_OPEN while inspecting; nothing may open it.
#[test]
#[ignore = "needs root"]
fn a_device_planted_at_a_debug_file_path_is_never_opened() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::unix::fs::OpenOptionsExt;
    needs_root();
    if !userns_or_skip() {
        return;
    }
    let dl = Deadline::new(120);
    let b = Builds::new();
    let devdir = TempDir::new("stackdump-dev", 0o755);
    let dev = devdir.join("null");
    let mut mknod = Command::new("mknod");
    mknod.args(["-m", "0666"]).arg(&dev).args(["c", "1", "3"]);
    sh(mknod);

    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
    ino.add_watch(&dev, AddWatchFlags::IN_OPEN).unwrap();
    let events = |ino: &Inotify| match ino.read_events() {
        Ok(v) => v.len(),
        Err(nix::errno::Errno::EAGAIN) => 0,
        Err(e) => panic!("reading inotify events: {e}"),
    };
    // Calibration: an O_PATH open (allowed: it reads nothing) must not count as an open here
    // (it does on kernels before 6.x moved the hook), or the test cannot tell.
    drop(
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&dev)
            .unwrap(),
    );
    if events(&ino) != 0 {
        eprintln!("SKIPPED: this kernel reports O_PATH opens as IN_OPEN: cannot tell a real open");
        return;
    }
    // Control: a real open is seen.
    drop(std::fs::File::open(&dev).unwrap());
    assert_eq!(events(&ino), 1, "an open of {} was not seen", dev.display());

    let plant = format!(
        ": > {debug}\nmount --bind {} {debug}",
        q(&dev),
        debug = q(b.debug_abs())
    );
    let target = spawn_eve_in_userns(&dl, &b, &plant, &b.lib);
    let ctx = format!(
        "root's null device {} bind-mounted at the debug path\n{}",
        dev.display(),
        layout(target.pid, &b.debug_rel())
    );
    let before = events(&ino);
    for r in inspect_both(&dl, target.pid) {
        let opened = events(&ino);
        assert_eq!(
            opened,
            0,
            "the device was opened {opened} time(s) during the run ({before} before it)\n{ctx}\n{}",
            r.all()
        );
        assert_shows(&r, ENTRY, &ctx);
    }
}

/// eve's target dlopened her library from her own directory; her helper exchanges the
/// library's name with a FIFO's, over and over: a module opened by its path is a FIFO half of
/// the time.
#[test]
#[ignore = "needs root"]
fn a_mapped_library_swapped_for_a_fifo_does_not_hang_inspect() {
    needs_root();
    let dl = Deadline::new(6 * 30 + 60);
    let b = Builds::new();
    let swap = b.dir.join("swap");
    cc(&swap, "swap.c", &["-O1"]);
    let home = TempDir::new("stackdump-eve-home", 0o755);
    chown_eve(&home.path);
    let lib = home.join("libeve.so");
    copy(&b.lib, &lib, 0o755);
    chown_eve(&lib);
    let fifo = home.join("fifo");
    let mut mkfifo = as_eve("mkfifo");
    mkfifo.arg(&fifo);
    sh(mkfifo);

    let mut cmd = as_eve(&b.target);
    cmd.arg(&lib);
    let target = spawn_ready(&dl, cmd);
    let mut cmd = as_eve(&swap);
    cmd.arg(&lib).arg(&fifo);
    let _swapper = spawn_ready(&dl, cmd);
    for i in 1..=6 {
        let r = run_within(&dl, CLI_LIMIT, cli(&["inspect", &target.pid.to_string()]));
        let ctx = format!(
            "run {i} of 6; {} and {} exchanged every 50 us",
            lib.display(),
            fifo.display()
        );
        assert_shows(&r, ENTRY, &ctx);
        assert_shows(&r, "target.c", &ctx);
    }
}

/// A FIFO named like a dump in a directory given to `compare`: reading it would wait for a
/// writer forever. It is refused by name, as not a regular file.
#[test]
#[ignore = "needs root"]
fn compare_of_a_directory_with_a_fifo_named_like_a_dump_does_not_hang() {
    needs_root();
    let dl = Deadline::new(90);
    let dir = TempDir::new("stackdump-compare", 0o755);
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/sample-dump.json");
    copy(
        &sample,
        &dir.join("stackdump-30621-20251231T000000.000Z.json"),
        0o644,
    );

    // Control: the directory with the one regular dump compares.
    let r = run_within(
        &dl,
        CLI_LIMIT,
        cli(&["compare", dir.path.to_str().unwrap()]),
    );
    assert_finished_ok(&r, "control: one regular dump");

    let name = "stackdump-123-20260101T000000.000Z.json";
    let fifo = dir.join(name);
    let mut mkfifo = Command::new("mkfifo");
    mkfifo.arg(&fifo);
    sh(mkfifo);
    let mut failed = Vec::new();
    for arg in [&dir.path, &fifo] {
        case(&mut failed, &format!("compare {}", arg.display()), || {
            let r = run_within(&dl, CLI_LIMIT, cli(&["compare", arg.to_str().unwrap()]));
            let ctx = format!("compare {}: {} is a FIFO", arg.display(), fifo.display());
            assert!(!r.timed_out, "the CLI hung\n{ctx}\n{}", r.all());
            assert_ne!(
                r.out.code,
                0,
                "a FIFO was taken as a dump\n{ctx}\n{}",
                r.all()
            );
            assert!(
                r.out.stderr.contains(name) && r.out.stderr.contains("not a regular file"),
                "stderr should name {name} and say it is not a regular file\n{ctx}\n{}",
                r.all()
            );
        });
    }
    verdict(&failed);
}

/// `STACKDUMP_CACHE_DIR` names a symbolic link to a directory: the cache is not used there, and
/// nothing is created inside the directory the link names, whether root or eve made the link.
#[test]
#[ignore = "needs root"]
fn a_cache_dir_symlink_gets_nothing_created_inside() {
    needs_root();
    let dl = Deadline::new(120);
    let b = Builds::new();
    let target = spawn_ready(&dl, as_eve(&b.target));
    let pid = target.pid.to_string();
    let inspect_with_cache = |dir: &Path| {
        let mut cmd = cli(&["inspect", &pid]);
        cmd.env("STACKDUMP_CACHE_DIR", dir);
        let r = run_within(&dl, CLI_LIMIT, cmd);
        assert_finished_ok(&r, &format!("STACKDUMP_CACHE_DIR={}", dir.display()));
        r
    };
    let listing = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };

    // Control: a real cache directory of root's gets the target's sections (so the cases below
    // would write if they wrote anywhere).
    let real = TempDir::new("stackdump-cache", 0o700);
    let r = inspect_with_cache(&real.path);
    assert!(
        !listing(&real.join("dwarf")).is_empty(),
        "control: nothing cached in {} (the target's debug sections are compressed)\n{}",
        real.path.display(),
        r.all()
    );

    let mut failed = Vec::new();
    case(&mut failed, "root's link in root's directory", || {
        let x = TempDir::new("stackdump-cache-x", 0o755);
        let victim = x.join("victim");
        std::fs::create_dir(&victim).unwrap();
        chmod(&victim, 0o755);
        let link = x.join("link");
        symlink(victim.to_str().unwrap(), &link);
        let r = inspect_with_cache(&link);
        let inside = listing(&victim);
        assert!(
            inside.is_empty(),
            "created in {} through the link {} -> {}: {inside:?}\n{}",
            victim.display(),
            link.display(),
            victim.display(),
            r.all()
        );
    });
    case(&mut failed, "eve's link in eve's directory", || {
        let evedir = TempDir::new("stackdump-cache-eve", 0o755);
        chown_eve(&evedir.path);
        let v = TempDir::new("stackdump-cache-victim", 0o755);
        let victim = v.join("victim");
        std::fs::create_dir(&victim).unwrap();
        chmod(&victim, 0o755);
        let link = evedir.join("link");
        let mut ln = as_eve("ln");
        ln.arg("-s").arg(&victim).arg(&link);
        sh(ln);
        let r = inspect_with_cache(&link);
        let inside = listing(&victim);
        assert!(
            inside.is_empty(),
            "created in {} through eve's link {} -> {}: {inside:?}\n{}",
            victim.display(),
            link.display(),
            victim.display(),
            r.all()
        );
    });
    verdict(&failed);
}
