//! End-to-end tests of what a hostile target can try against the `stackdump` of someone else
//! (often root): names that drive the terminal, a library that writes escapes into its text
//! dump, an `--out` directory with planted links or others' write access, a thread id or kernel
//! thread given as a process, an init process, a full dump directory, leftovers of dead dumps.
//!
//! Real processes, handshakes on /proc instead of sleeps, children killed and reaped on drop, a
//! deadline per test. Tests that need root (chown, mount, unshare) say so on stderr and skip.

mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const USR1: i32 = libc::SIGUSR1;

/// The clipboard name as the kernel keeps it (15 bytes: the BEL is cut).
const CLIPBOARD: &str = "\x1b]52;c;ZXZpbA==";
const ERASER: &str = "\x1b[1A\x1b[2K";
/// A backslash and a line feed (the kernel keeps it whole).
const NEWLINE: &str = "a\\b\nc";

/// No raw ESC, BEL, CR or C1 in what reaches the terminal.
#[track_caller]
fn assert_no_raw_controls(what: &str, s: &str) {
    let bad: Vec<char> = s
        .chars()
        .filter(|&c| {
            c != '\n' && c != '\t' && (c.is_control() || ('\u{80}'..='\u{9f}').contains(&c))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what} has raw control characters {bad:?}:\n{s:?}"
    );
}

/// ../tests/targets/c/hostile_names.c, built into `dir` (whose name may have escapes).
fn build_hostile(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = targets_dir().join("c/hostile_names.c");
    let out = dir.join("hostile");
    compile_c(&out, &[&src], &["-O1", "-g", "-Wall", "-pthread"], &[]);
    out
}

/// `stackdump run --dir DIR -- EXE ARGS` with the real library, ready (library mapped, trigger
/// caught, dump thread and the hostile threads named).
fn hostile_target(dl: &Deadline, exe: &Path, dir: &Path, args: &[&OsStr]) -> Proc {
    let mut cmd = cli(&["run", "--dir"]);
    cmd.arg(dir).arg("--").arg(exe).args(args);
    cmd.env("STACKDUMP_LIB", real_lib());
    let p = Proc::spawn(cmd);
    wait_ready(dl, p.pid, USR1);
    wait_until(dl, "the hostile threads are named", || {
        thread_named(p.pid, CLIPBOARD)
            && thread_named(p.pid, ERASER)
            && thread_named(p.pid, NEWLINE)
    });
    p
}

#[test]
fn escapes_in_names_argv_exe_and_dir_never_reach_the_terminal() {
    let dl = Deadline::new(120);
    let scratch = Scratch::new("escapes");
    let exe = build_hostile(&scratch.join("bin\x1b[2K\x07"));
    let dumps = scratch.join("dumps\x1b]0;title\x07");
    std::fs::create_dir(&dumps).unwrap();
    let arg = OsStr::from_bytes(b"arg\x1b]52;c;ZXZpbA==\x07\xff");
    let p = hostile_target(&dl, &exe, &dumps, &[arg]);
    let pid = p.pid.to_string();

    let expect_names = |what: &str, s: &str| {
        assert_no_raw_controls(what, s);
        for shown in [
            "\\e]52;c;ZXZpbA==",
            "\\e[1A\\e[2K",
            "main\\e[31m",
            "a\\\\b\\nc",
        ] {
            assert!(s.contains(shown), "{what} lacks {shown:?}:\n{s}");
        }
    };

    // dump, text: the library's side file (rendered by render.rs, re-escaped on output).
    let out = stackdump(&dl, &["dump", &pid]);
    out.assert_code(0);
    expect_names("dump", &out.stdout);
    out.stdout_has("bin\\e[2K\\x07/hostile")
        .stdout_has("cmdline: ")
        .stdout_has("arg\\e]52;c;ZXZpbA==\\x07");

    // dump, text rendered here from the JSON (STACKDUMP_FORMAT=json is not set: force it with
    // --format json and check the values are exact there).
    let out = stackdump(&dl, &["dump", &pid, "--format", "json"]);
    out.assert_code(0);
    assert_no_raw_controls("dump --format json", &out.stdout);
    let v = json(&out);
    let names: Vec<&str> = v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for raw in [CLIPBOARD, ERASER, "main\x1b[31m", NEWLINE] {
        assert!(names.contains(&raw), "JSON keeps {raw:?} exact: {names:?}");
    }
    assert!(v["exe"]
        .as_str()
        .unwrap()
        .contains("bin\x1b[2K\x07/hostile"));

    // folded
    let out = stackdump(&dl, &["dump", &pid, "--format", "folded"]);
    out.assert_code(0);
    assert_no_raw_controls("dump --format folded", &out.stdout);

    // inspect, text and folded
    let out = stackdump(&dl, &["inspect", &pid]);
    out.assert_code(0);
    expect_names("inspect", &out.stdout);
    out.stdout_has("bin\\e[2K\\x07/hostile");
    let out = stackdump(&dl, &["inspect", &pid, "--format", "json"]);
    out.assert_code(0);
    assert_no_raw_controls("inspect --format json", &out.stdout);

    // list: comm and STACKDUMP_DIR
    let out = stackdump(&dl, &["list"]);
    out.assert_code(0);
    assert_no_raw_controls("list", &out.stdout);
    assert_no_raw_controls("list (stderr)", &out.stderr);
    out.stdout_has("main\\e[31m")
        .stdout_has("dumps\\e]0;title\\x07");

    // An error message with the target's name in it: --signal USR2 is not caught.
    let out = stackdump(&dl, &["dump", &pid, "--signal", "USR2"]);
    out.assert_code(3);
    assert_no_raw_controls("a refusal", &out.stderr);
    out.stderr_has("(main\\e[31m)");

    // compare of two saved dumps.
    let saved = scratch.join("saved");
    let out = run(&dl, {
        let mut c = cli(&["dump", &pid, "--every", "10ms", "--count", "2", "--out"]);
        c.arg(&saved);
        c
    });
    out.assert_code(0);
    let out = run(&dl, {
        let mut c = cli(&["compare"]);
        c.arg(&saved);
        c
    });
    out.assert_code(0);
    assert_no_raw_controls("compare", &out.stdout);
    out.stdout_has("main\\e[31m");
}

#[test]
fn a_text_dump_written_by_a_hostile_library_is_escaped_on_output() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("hostile-text");
    let mut cmd = Command::new("sleep");
    cmd.arg("1000")
        .env("LD_PRELOAD", fake_lib())
        .env("FAKE_MODE", "text")
        .env("STACKDUMP_DIR", dir.str());
    let p = Proc::spawn(cmd);
    wait_until(&dl, "the fake library catches USR1", || {
        maps_contain(p.pid, "libstackdump") && catches(p.pid, USR1)
    });
    let out = stackdump(&dl, &["dump", &p.pid.to_string(), "--timeout", "20s"]);
    out.assert_code(0);
    assert_no_raw_controls("dump of a hostile text file", &out.stdout);
    out.stdout_has("\\e]52;c;ZXZpbA==\\x07\\e[1A\\e[2Kforged line\n")
        .stdout_has("csi \\x9b31m")
        .stdout_has("bad byte \\xff\\r\n");
}

// ---------------------------------------------------------------------------------------------
// --out

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn out_is_private_and_refuses_links_others_dirs_and_shared_dirs() {
    let dl = Deadline::new(120);
    let scratch = Scratch::new("out");
    let dumps = scratch.join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    let mut cmd = cli(&[
        "run",
        "--dir",
        dumps.to_str().unwrap(),
        "--",
        "sleep",
        "1000",
    ]);
    cmd.env("STACKDUMP_LIB", real_lib());
    let p = Proc::spawn(cmd);
    wait_ready(&dl, p.pid, USR1);
    let pid = p.pid.to_string();
    let dump_to = |out: &Path| {
        run(&dl, {
            let mut c = cli(&["dump", &pid, "--out"]);
            c.arg(out);
            c
        })
    };

    // Created: every missing component 0700, the files 0600 (whatever the umask).
    let fresh = scratch.join("new/sub");
    let out = dump_to(&fresh);
    out.assert_code(0);
    assert_eq!(mode(&scratch.join("new")), 0o700);
    assert_eq!(mode(&fresh), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&fresh)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
        assert!(out.stdout.contains(f.to_str().unwrap()), "{}", out.stdout);
    }

    // A symlink planted at --out: refused before anything is sent, nothing written there.
    let elsewhere = scratch.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = scratch.join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let out = dump_to(&link);
    out.assert_code(2).stderr_has("is a symbolic link");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A link in a directory others can write (a sticky /tmp-like one), further up the path.
    let shared = scratch.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, shared.join("planted")).unwrap();
    let out = dump_to(&shared.join("planted/sub"));
    out.assert_code(2)
        .stderr_has("is a symbolic link in a directory others can write");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A directory others can write: refused (the sticky bit does not make it private).
    let out = dump_to(&shared);
    out.assert_code(2).stderr_has("writable by everyone");
    let group = scratch.join("group");
    std::fs::create_dir(&group).unwrap();
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o770)).unwrap();
    dump_to(&group)
        .assert_code(2)
        .stderr_has("writable by its group");
    assert_eq!(std::fs::read_dir(&group).unwrap().count(), 0);

    assert!(p.alive());
}

/// `--out` naming a directory of another user is refused (root made it with chown).
#[test]
#[ignore = "needs root"]
fn out_refuses_a_directory_of_another_user() {
    needs_root();
    let dl = Deadline::new(60);
    let scratch = Scratch::new("out-theirs");
    let mut cmd = cli(&["run", "--dir", scratch.str(), "--", "sleep", "1000"]);
    cmd.env("STACKDUMP_LIB", real_lib());
    let p = Proc::spawn(cmd);
    wait_ready(&dl, p.pid, USR1);
    let theirs = scratch.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let mut c = cli(&["dump", &p.pid.to_string(), "--out"]);
    c.arg(&theirs);
    run(&dl, c)
        .assert_code(2)
        .stderr_has("is owned by uid 65534");
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
    assert!(p.alive());
}

// ---------------------------------------------------------------------------------------------
// Clear messages

#[test]
fn a_thread_id_and_a_kernel_thread_are_refused_with_what_to_do() {
    let dl = Deadline::new(120);
    let scratch = Scratch::new("tid");
    let exe = build_hostile(&scratch.join("bin"));
    let mut cmd = Command::new(&exe);
    cmd.env_remove("LD_PRELOAD");
    let p = Proc::spawn(cmd);
    wait_until(&dl, "the threads exist", || {
        thread_named(p.pid, ERASER) && thread_named(p.pid, CLIPBOARD)
    });
    let tid = std::fs::read_dir(format!("/proc/{}/task", p.pid))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&t| t != p.pid)
        .unwrap();
    for cmd in ["dump", "inspect"] {
        let out = stackdump(&dl, &[cmd, &tid.to_string()]);
        out.assert_code(2)
            .stderr_has(&format!(
                "{tid} is a thread of process {} (main\\e[31m)",
                p.pid
            ))
            .stderr_has(&format!("`stackdump {cmd} {}`", p.pid));
        assert_no_raw_controls(cmd, &out.stderr);
    }
    assert!(p.alive());

    // kthreadd is pid 2 where the kernel's threads are visible (not in every sandbox).
    let kthread = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| status_field(pid, "Kthread").as_deref() == Some("1"));
    match kthread {
        Some(k) => {
            for cmd in ["inspect", "dump"] {
                stackdump(&dl, &[cmd, &k.to_string()])
                    .assert_code(2)
                    .stderr_has("is a kernel thread: it has no user-space stack")
                    .stderr_has(&format!("/proc/{k}/stack"));
            }
        }
        None => eprintln!("skipped: no kernel thread visible in /proc here"),
    }
}

#[test]
fn kill_stop_and_other_signals_that_cannot_trigger_are_refused() {
    let dl = Deadline::new(60);
    for sig in ["KILL", "SIGSTOP", "segv", "CONT", "CHLD"] {
        let out = stackdump(&dl, &["run", "--signal", sig, "--", "true"]);
        out.assert_code(2).stderr_has("cannot be a trigger");
    }
    let target = Proc::spawn({
        let mut c = Command::new("sleep");
        c.arg("1000");
        c
    });
    // Asleep before the refusals: the state S asserted after them says they left it so.
    wait_until(&dl, "sleep sleeps", || state(target.pid) == Some('S'));
    for sig in ["KILL", "STOP"] {
        let out = stackdump(
            &dl,
            &["dump", &target.pid.to_string(), "--signal", sig, "--force"],
        );
        out.assert_code(2).stderr_has("cannot be caught");
    }
    assert_eq!(state(target.pid), Some('S'), "neither killed nor stopped");
}

#[test]
#[ignore = "needs root"]
fn an_init_process_is_never_sent_a_signal_it_does_not_catch() {
    needs_root();
    let dl = Deadline::new(60);
    let outer = Proc::spawn({
        let mut c = Command::new("unshare");
        c.args([
            "--fork",
            "--pid",
            "--mount-proc",
            "--kill-child",
            "sleep",
            "1000",
        ]);
        c
    });
    let mut inner = 0;
    wait_until(&dl, "the namespaced init runs sleep", || {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", outer.pid))
            .unwrap_or_default();
        inner = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .next()
            .unwrap_or(0);
        inner != 0 && status_field(inner, "Name").as_deref() == Some("sleep")
    });
    let ns_pid = status_field(inner, "NSpid").unwrap();
    assert_eq!(ns_pid.split_whitespace().last(), Some("1"));
    for force in [false, true] {
        let mut args = vec!["dump".to_string(), inner.to_string()];
        if force {
            args.push("--force".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stackdump(&dl, &args)
            .assert_code(3)
            .stderr_has("it is the init process of its pid namespace (pid 1 there)")
            .stderr_has("libstackdump.so is not loaded in it")
            .stderr_has("--force does not override this");
    }
    assert_eq!(
        status_field(inner, "SigPnd").as_deref(),
        Some("0000000000000000")
    );
    assert_eq!(
        status_field(inner, "ShdPnd").as_deref(),
        Some("0000000000000000")
    );
    assert!(alive(inner));
}

#[test]
#[ignore = "needs root"]
fn pid_1_is_refused_even_with_force() {
    needs_root();
    let dl = Deadline::new(30);
    for args in [&["dump", "1"][..], &["dump", "1", "--force"]] {
        let out = stackdump(&dl, args);
        out.assert_code(3);
        // Where pid 1 can be read: the init refusal; in a sandbox that hides it even from
        // root: why root may not (never "run as root").
        assert!(
            out.stderr.contains("it is pid 1, the init process")
                || out.stderr.contains("even root may not"),
            "{}",
            out.stderr
        );
    }
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root"]
fn a_full_dump_directory_is_named_and_the_next_dump_says_what_was_lost() {
    needs_root();
    let dl = Deadline::new(120);
    let scratch = Scratch::new("full");
    let dir = scratch.join("small");
    std::fs::create_dir(&dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let _mount = Mount(dir.clone());
    // Fill it.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    let mut cmd = cli(&["run", "--dir", dir.to_str().unwrap(), "--", "sleep", "1000"]);
    cmd.env("STACKDUMP_LIB", real_lib());
    let p = Proc::spawn(cmd);
    wait_ready(&dl, p.pid, USR1);
    let pid = p.pid.to_string();
    let out = stackdump(&dl, &["dump", &pid, "--timeout", "3s"]);
    out.assert_code(1)
        .stderr_has("Likely causes")
        .stderr_has(&format!("the dump directory {} is full", dir.display()));
    std::fs::remove_file(&filler).unwrap();
    let out = stackdump(&dl, &["dump", &pid, "--format", "json"]);
    out.assert_code(0);
    let v = json(&out);
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.starts_with(&format!(
            "the previous dump (#1) could not be written to {}: ENOSPC",
            dir.display()
        ))),
        "{errors:?}"
    );
    assert_eq!(v["capture"]["sequence"].as_u64(), Some(2));
}

#[test]
#[ignore = "needs root"]
fn an_unwritable_dump_directory_is_named_and_the_next_dump_says_what_was_lost() {
    needs_root();
    let dl = Deadline::new(120);
    let scratch = Scratch::new("unwritable");
    let dir = scratch.join("root-only");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The target runs as nobody and must reach the library and the directory.
    for p in [
        scratch.path.as_path(),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    ] {
        let m = mode(p);
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m | 0o055)).unwrap();
    }
    let mut cmd = cli(&["run", "--dir", dir.to_str().unwrap(), "--", "sleep", "1000"]);
    cmd.env("STACKDUMP_LIB", real_lib());
    {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let p = Proc::spawn(cmd);
    wait_ready(&dl, p.pid, USR1);
    let pid = p.pid.to_string();
    stackdump(&dl, &["dump", &pid, "--timeout", "2s"])
        .assert_code(1)
        .stderr_has(&format!(
            "the dump directory {} may not be writable by uid 65534",
            dir.display()
        ));
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let out = stackdump(&dl, &["dump", &pid, "--format", "json"]);
    out.assert_code(0);
    let v = json(&out);
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.starts_with(&format!(
            "the previous dump (#1) could not be written to {}: EACCES",
            dir.display()
        ))),
        "{errors:?}"
    );
}

#[test]
fn leftovers_of_dead_dumps_are_removed_by_the_next_dump() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("leftovers");
    // A pid that is gone: a child that exited and was reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let leftover = dir.join(&format!(
        ".stackdump-{dead}-20260101T000000.000Z-r7.txt.tmp"
    ));
    let recent = dir.join(&format!(
        ".stackdump-{dead}-20260101T000000.000Z-r7.json.tmp"
    ));
    let live = dir.join(&format!(
        ".stackdump-{}-20260101T000000.000Z.txt.tmp",
        std::process::id()
    ));
    let unrelated = dir.join(&format!("stackdump-{dead}.tmp"));
    for f in [&leftover, &recent, &live, &unrelated] {
        std::fs::write(f, b"partial").unwrap();
    }
    for f in [&leftover, &live, &unrelated] {
        // An hour old.
        let ok = Command::new("touch")
            .args(["-h", "-d", "1 hour ago"])
            .arg(f)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let mut cmd = cli(&["run", "--dir", dir.str(), "--", "sleep", "1000"]);
    cmd.env("STACKDUMP_LIB", real_lib());
    let p = Proc::spawn(cmd);
    wait_ready(&dl, p.pid, USR1);
    stackdump(&dl, &["dump", &p.pid.to_string()]).assert_code(0);
    assert!(!leftover.exists(), "the leftover of a dead pid is removed");
    assert!(recent.exists(), "a recent temporary file stays");
    assert!(live.exists(), "a live process's temporary file stays");
    assert!(unrelated.exists(), "other names stay");
}
