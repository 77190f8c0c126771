//! End-to-end tests of the `stackdump` CLI: real processes, real signals, real files.
//!
//! Targets are `sleep` (unprepared), `sleep` with the real libstackdump.so preloaded (through
//! `stackdump run`), and `sleep` with a fake library (tests/targets/c/fakedumper.c) that maps a
//! file named libstackdump* but misbehaves: catches nothing, swallows the trigger, or plants
//! symlinks. Every test has a deadline; every child is killed and reaped on drop; readiness is
//! a handshake on /proc (library mapped, signal caught, dump thread running), never a sleep.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const USR1: i32 = libc::SIGUSR1;

fn sleep_target(env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new("sleep");
    cmd.arg("1000");
    cmd.envs(env.iter().copied());
    Proc::spawn(cmd)
}

/// `stackdump run [--dir DIR] -- sleep 1000` with the real library, ready for a trigger.
fn prepared(dl: &Deadline, dir: &str, env: &[(&str, &str)]) -> Proc {
    prepared_with(dl, dir, env, &[], USR1)
}

fn prepared_with(
    dl: &Deadline,
    dir: &str,
    env: &[(&str, &str)],
    run_args: &[&str],
    signo: i32,
) -> Proc {
    let mut args = vec!["run", "--dir", dir];
    args.extend_from_slice(run_args);
    args.extend_from_slice(&["--", "sleep", "1000"]);
    let mut cmd = cli(&args);
    cmd.env("STACKDUMP_LIB", real_lib());
    cmd.envs(env.iter().copied());
    let p = Proc::spawn(cmd);
    wait_ready(dl, p.pid, signo);
    p
}

fn fake(mode: &str, env: &[(&str, &str)]) -> Proc {
    let mut all: Vec<(&str, &str)> = vec![
        ("LD_PRELOAD", fake_lib().to_str().unwrap()),
        ("FAKE_MODE", mode),
    ];
    all.extend_from_slice(env);
    sleep_target(&all)
}

// ---------------------------------------------------------------------------------------------
// signals

#[test]
fn signals_explains_numbers_and_names() {
    let dl = Deadline::new(30);
    let out = stackdump(&dl, &["signals", "30"]);
    out.assert_code(0);
    #[cfg(target_arch = "x86_64")]
    out.stdout_has("30 on x86_64 is PWR")
        .stdout_has("terminates the process");
    out.stdout_has("USR1").stdout_has("alpha sparc sparc64");

    let out = stackdump(&dl, &["signals", "SIGUSR1", "--arch", "all"]);
    out.assert_code(0);
    for line in ["on mips mips64 parisc", "on alpha sparc sparc64"] {
        out.stdout_has(line);
    }
    let out = stackdump(&dl, &["signals", "usr1", "--arch", "mips"]);
    out.assert_code(0).stdout_has("is 16 on mips");
    let out = stackdump(&dl, &["signals", "RTMIN+3", "--arch", "x86_64"]);
    out.assert_code(0).stdout_has("is 37 on x86_64");
    let out = stackdump(&dl, &["signals", "--arch", "amd64"]);
    out.assert_code(0).stdout_has("Signals on x86_64");
    let out = stackdump(&dl, &["signals", "--arch", "all"]);
    out.assert_code(0).stdout_has("x86/generic");
    let out = stackdump(&dl, &["signals"]);
    out.assert_code(0).stdout_has("USR1");
    let out = stackdump(&dl, &["signals", "0"]);
    out.assert_code(0).stdout_has("kill -0");
}

#[test]
fn signals_unknown_names_and_arches_exit_2_with_a_suggestion() {
    let dl = Deadline::new(30);
    stackdump(&dl, &["signals", "USR3"])
        .assert_code(2)
        .stderr_has("did you mean USR1 or USR2?");
    stackdump(&dl, &["signals", "SIGTREM"])
        .assert_code(2)
        .stderr_has("did you mean TERM?");
    stackdump(&dl, &["signals", "USR1", "--arch", "x86_46"])
        .assert_code(2)
        .stderr_has("did you mean x86_64?");
    stackdump(&dl, &["signals", "--arch", "vax"])
        .assert_code(2)
        .stderr_has("unknown architecture");
    stackdump(&dl, &["signals", "999"])
        .assert_code(2)
        .stderr_has("not a signal number on any");
    stackdump(&dl, &["signals", "RTMIN+99"])
        .assert_code(2)
        .stderr_has("outside the real-time range");
}

// ---------------------------------------------------------------------------------------------
// usage

#[test]
fn bad_usage_exits_2_and_help_has_examples() {
    let dl = Deadline::new(30);
    stackdump(&dl, &["dump", "1", "--timeout", "10"])
        .assert_code(2)
        .stderr_has("no unit");
    stackdump(&dl, &["dump", "1", "--timeout", "5x"])
        .assert_code(2)
        .stderr_has("unknown unit");
    stackdump(&dl, &["dump", "1", "--every", "1s"]).assert_code(2);
    stackdump(&dl, &["dump", "1", "--count", "2"]).assert_code(2);
    stackdump(&dl, &["dump", "abc"])
        .assert_code(2)
        .stderr_has("not a process id");
    stackdump(&dl, &["dump", "1", "--signal", "30"])
        .assert_code(2)
        .stderr_has("is a number");
    stackdump(&dl, &["dump", "1", "--signal", "USR3"])
        .assert_code(2)
        .stderr_has("did you mean USR1 or USR2?");
    stackdump(&dl, &["dump"]).assert_code(2);
    stackdump(&dl, &["frobnicate"]).assert_code(2);
    stackdump(&dl, &["run", "--signal", "10", "--", "true"])
        .assert_code(2)
        .stderr_has("is a number");
    let out = stackdump(&dl, &["--help"]);
    out.assert_code(0).stdout_has("Examples");
    for cmd in ["dump", "run", "list", "signals"] {
        stackdump(&dl, &[cmd, "--help"])
            .assert_code(0)
            .stdout_has("Example")
            .stdout_has(&format!("stackdump {cmd}"));
    }
}

// ---------------------------------------------------------------------------------------------
// refusals and run-time failures before anything is sent

#[test]
fn no_such_process_exits_1() {
    let dl = Deadline::new(30);
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id().to_string();
    gone.wait().unwrap();
    stackdump(&dl, &["dump", &pid])
        .assert_code(1)
        .stderr_has(&format!("no process {pid}"));
}

#[test]
fn zombie_exits_1() {
    let dl = Deadline::new(30);
    // sh starts a short child, then becomes `sleep`, which never reaps it: a zombie.
    let parent = Proc::spawn({
        let mut c = Command::new("sh");
        c.args(["-c", "true & exec sleep 1000"]);
        c
    });
    let mut zombie = 0;
    wait_until(&dl, "the child is a zombie", || {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", parent.pid))
            .unwrap_or_default();
        zombie = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .find(|&p| state(p) == Some('Z'))
            .unwrap_or(0);
        zombie != 0
    });
    stackdump(&dl, &["dump", &zombie.to_string()])
        .assert_code(1)
        .stderr_has("is a zombie");
}

#[test]
fn an_unprepared_process_is_refused_and_stays_alive() {
    let dl = Deadline::new(30);
    let target = sleep_target(&[]);
    // Asleep in its nanosleep before the refusals: the state S asserted after them says they
    // left it so.
    wait_until(&dl, "sleep sleeps", || {
        std::fs::read_link(format!("/proc/{}/exe", target.pid)).is_ok_and(|e| e.ends_with("sleep"))
            && state(target.pid) == Some('S')
    });
    let pid = target.pid.to_string();
    stackdump(&dl, &["dump", &pid])
        .assert_code(3)
        .stderr_has("libstackdump.so is not loaded")
        .stderr_has("would terminate")
        .stderr_has("stackdump run");
    stackdump(
        &dl,
        &[
            "dump", &pid, "--format", "json", "--every", "100ms", "--count", "2",
        ],
    )
    .assert_code(1)
    .stderr_has("not loaded");
    assert!(target.alive(), "the refusal must leave the process alive");
    assert_eq!(state(target.pid), Some('S'));
}

#[test]
#[ignore = "needs root"]
fn permission_denied_exits_3() {
    needs_root();
    let dl = Deadline::new(30);
    let target = sleep_target(&[]);
    let mut cmd = cli(&["dump", &target.pid.to_string()]);
    use std::os::unix::process::CommandExt;
    cmd.uid(65534).gid(65534);
    run(&dl, cmd)
        .assert_code(3)
        .stderr_has("not allowed to signal")
        .stderr_has("CAP_KILL");
    assert!(target.alive());
}

#[test]
fn library_mapped_but_trigger_not_caught_is_refused() {
    let dl = Deadline::new(60);
    // A library named libstackdump* that installs nothing.
    let t = fake("none", &[]);
    wait_until(&dl, "the fake library is mapped", || {
        maps_contain(t.pid, "libstackdump-fake")
    });
    stackdump(&dl, &["dump", &t.pid.to_string()])
        .assert_code(3)
        .stderr_has("does not catch USR1");
    assert!(t.alive());

    // The real library, disabled.
    let mut cmd = Command::new("sleep");
    cmd.arg("1000")
        .env("LD_PRELOAD", real_lib())
        .env("STACKDUMP_DISABLE", "1");
    let t = Proc::spawn(cmd);
    wait_until(&dl, "the library is mapped", || {
        maps_contain(t.pid, "libstackdump")
    });
    stackdump(&dl, &["dump", &t.pid.to_string()])
        .assert_code(3)
        .stderr_has("disabled");
    assert!(t.alive());

    // The real library with a number for a signal: it refuses it and disables itself.
    let mut cmd = Command::new("sleep");
    cmd.arg("1000")
        .env("LD_PRELOAD", real_lib())
        .env("STACKDUMP_SIGNAL", "30");
    let t = Proc::spawn(cmd);
    wait_until(&dl, "the library is mapped", || {
        maps_contain(t.pid, "libstackdump")
    });
    stackdump(&dl, &["dump", &t.pid.to_string()])
        .assert_code(3)
        .stderr_has("STACKDUMP_SIGNAL=\"30\" is not valid");
    assert!(t.alive());
}

#[test]
fn force_sends_anyway_and_says_so() {
    let dl = Deadline::new(30);
    // A shell that catches USR1 itself: no library, but sending does not kill it.
    let t = Proc::spawn({
        let mut c = Command::new("sh");
        c.args(["-c", "trap ':' USR1; while :; do sleep 1; done"]);
        c
    });
    wait_until(&dl, "the shell catches USR1", || catches(t.pid, USR1));
    stackdump(&dl, &["dump", &t.pid.to_string()]).assert_code(3);
    stackdump(
        &dl,
        &["dump", &t.pid.to_string(), "--force", "--timeout", "300ms"],
    )
    .assert_code(1)
    .stderr_has("--force: sending USR1")
    .stderr_has("no dump from process")
    .stderr_has("not loaded");
    assert!(t.alive());
}

#[test]
fn a_swallowed_trigger_times_out_with_likely_causes() {
    let dl = Deadline::new(30);
    let t = fake("catch", &[]);
    wait_until(&dl, "the fake library catches USR1", || {
        catches(t.pid, USR1)
    });
    // Without a dump thread the dump is refused at once (exit 3); --force sends anyway.
    stackdump(&dl, &["dump", &t.pid.to_string(), "--timeout", "300ms"])
        .assert_code(3)
        .stderr_has("its dump thread is not running");
    stackdump(
        &dl,
        &["dump", &t.pid.to_string(), "--timeout", "300ms", "--force"],
    )
    .assert_code(1)
    .stderr_has("no dump from process")
    .stderr_has("within 300ms")
    .stderr_has("no thread named `stackdump`")
    .stderr_has("its own USR1 handler");
    assert!(t.alive());
}

#[test]
fn a_target_that_exits_while_we_wait_is_reported_at_once() {
    let dl = Deadline::new(30);
    let scratch = Scratch::new("exits");
    let mark = scratch.join("triggered");
    let mut t = fake("catch", &[("FAKE_MARK", mark.to_str().unwrap())]);
    wait_until(&dl, "the fake library catches USR1", || {
        catches(t.pid, USR1)
    });
    let mut cmd = cli(&["dump", &t.pid.to_string(), "--timeout", "60s", "--force"]);
    let started = std::time::Instant::now();
    let handle = {
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    wait_until(&dl, "the trigger arrived", || mark.exists());
    t.child.kill().unwrap();
    t.child.wait().unwrap();
    let out = handle.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exited before its dump was complete"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not wait for the timeout"
    );
}

// ---------------------------------------------------------------------------------------------
// dumps with the real library

#[test]
fn dump_in_text_and_json() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("textjson");
    let t = prepared(&dl, dir.str(), &[]);
    let pid = t.pid.to_string();

    let out = stackdump(&dl, &["dump", &pid]);
    out.assert_code(0).stdout_has(&pid).stdout_has("sleep");
    assert!(!out.stdout.trim_start().starts_with('{'), "text, not JSON");

    let out = stackdump(&dl, &["dump", &pid, "--format", "json"]);
    out.assert_code(0);
    let v = json(&out);
    assert_eq!(v["format"], "stackdump/1");
    assert_eq!(v["pid"].as_i64(), Some(i64::from(t.pid)));
    assert_eq!(v["trigger"]["signal"], "USR1");
    assert!(v["trigger"]["request"].as_u64().is_some_and(|r| r > 0));
    assert!(!v["threads"].as_array().unwrap().is_empty());
    assert!(t.alive());

    // Through the component walk instead of openat2.
    let mut cmd = cli(&["dump", &pid, "--format", "json"]);
    cmd.env("STACKDUMP_TEST_NO_OPENAT2", "1");
    let out = run(&dl, cmd);
    out.assert_code(0);
    assert_eq!(json(&out)["pid"].as_i64(), Some(i64::from(t.pid)));
}

#[test]
fn formats_the_target_does_not_write() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("formats");
    let only_text = prepared(&dl, dir.str(), &[("STACKDUMP_FORMAT", "text")]);
    stackdump(
        &dl,
        &["dump", &only_text.pid.to_string(), "--format", "json"],
    )
    .assert_code(2)
    .stderr_has("writes only text dumps");
    let only_json = prepared(&dl, dir.str(), &[("STACKDUMP_FORMAT", "json")]);
    // Text is rendered here from the JSON dump.
    stackdump(&dl, &["dump", &only_json.pid.to_string()])
        .assert_code(0)
        .stdout_has(&only_json.pid.to_string());
}

#[test]
fn several_pids_one_refused() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("several");
    let good = prepared(&dl, dir.str(), &[]);
    let bad = sleep_target(&[]);
    let out = stackdump(
        &dl,
        &[
            "dump",
            &good.pid.to_string(),
            &bad.pid.to_string(),
            "--format",
            "json",
        ],
    );
    out.assert_code(3).stderr_has("not loaded");
    let v: serde_json::Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(v["pid"].as_i64(), Some(i64::from(good.pid)));
    assert!(bad.alive() && good.alive());
}

#[test]
fn periodic_dumps_with_out() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("periodic");
    let out_dir = Scratch::new("periodic-out");
    let t = prepared(&dl, dir.str(), &[]);
    let pid = t.pid.to_string();
    let out = stackdump(
        &dl,
        &[
            "dump",
            &pid,
            "--every",
            "200ms",
            "--count",
            "3",
            "--out",
            out_dir.str(),
        ],
    );
    out.assert_code(0);
    assert_eq!(
        out.stdout.lines().count(),
        6,
        "3 dumps × (json + txt):\n{}",
        out.stdout
    );
    let mut names: Vec<String> = std::fs::read_dir(&out_dir.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    let jsons: Vec<&String> = names.iter().filter(|n| n.ends_with(".json")).collect();
    assert_eq!(jsons.len(), 3);
    let mut times = Vec::new();
    for n in &jsons {
        assert!(n.starts_with(&format!("stackdump-{pid}-")), "{n}");
        let text = std::fs::read_to_string(out_dir.join(n)).unwrap();
        let v = parse_dump(&text);
        times.push(v["time"].as_str().unwrap().to_string());
    }
    // Sorted by name is sorted by time.
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "three different dumps");

    // --for: dumps at 0, 100 and 200 ms (and maybe 300), then it stops.
    let out_dir2 = Scratch::new("periodic-for");
    let out = stackdump(
        &dl,
        &[
            "dump",
            &pid,
            "--every",
            "100ms",
            "--for",
            "350ms",
            "--out",
            out_dir2.str(),
        ],
    );
    out.assert_code(0);
    let n = out.stdout.lines().filter(|l| l.ends_with(".json")).count();
    assert!((3..=4).contains(&n), "{n} dumps:\n{}", out.stdout);
    assert!(t.alive());
}

#[test]
fn periodic_dumps_stop_when_the_target_exits_and_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dl = Deadline::new(120);
    let dir = Scratch::new("periodic-stop");
    let out_dir = Scratch::new("periodic-stop-out");
    for how in ["target exits", "ctrl-c"] {
        let mut t = prepared(&dl, dir.str(), &[]);
        let mut cmd = cli(&[
            "dump",
            &t.pid.to_string(),
            "--every",
            "200ms",
            "--count",
            "1000",
            "--out",
            out_dir.str(),
        ]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut periodic = Proc::spawn_piped(cmd);
        // Handshake: the first dump is saved.
        let mut lines = BufReader::new(periodic.child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert!(first.contains("stackdump-"), "{first}");
        match how {
            "target exits" => {
                t.child.kill().unwrap();
                t.child.wait().unwrap();
            }
            _ => {
                // SAFETY: kill with a pid we spawned and a valid signal number.
                assert_eq!(unsafe { libc::kill(periodic.pid, libc::SIGINT) }, 0);
            }
        }
        let status = loop {
            if let Some(st) = periodic.child.try_wait().unwrap() {
                break st;
            }
            assert!(!dl.passed(), "{how}: the periodic run did not stop");
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut periodic.child.stderr.take().unwrap(), &mut err)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{how}: {err}");
        match how {
            "target exits" => assert!(err.contains("no more dumps of it"), "{err}"),
            _ => assert!(err.contains("interrupted"), "{err}"),
        }
    }
}

#[test]
fn concurrent_dumps_each_get_their_own() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("concurrent");
    let t = prepared(&dl, dir.str(), &[]);
    let pid = t.pid.to_string();
    // Standard signals do not queue: triggers sent while one is pending merge, and the CLI
    // must notice that its id was lost and send again.
    for _ in 0..5 {
        let spawn = || {
            let mut c = cli(&["dump", &pid, "--format", "json"]);
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        };
        let children: Vec<std::process::Child> = (0..4).map(|_| spawn()).collect();
        let mut ids = Vec::new();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            let v = parse_dump(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(v["pid"].as_i64(), Some(i64::from(t.pid)));
            ids.extend(request_ids(&v));
        }
        ids.sort();
        ids.dedup();
        assert!(ids.len() >= 4, "four requests, four ids: {ids:?}");
    }
    assert!(!dl.passed());
}

#[test]
fn a_planted_symlink_is_not_followed() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("symlink");
    let secret = dir.join("secret");
    std::fs::write(&secret, "TOPSECRET\n").unwrap();
    let dumps = dir.join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    let t = fake(
        "symlink",
        &[
            ("STACKDUMP_DIR", dumps.to_str().unwrap()),
            ("FAKE_SECRET", secret.to_str().unwrap()),
        ],
    );
    wait_until(&dl, "the fake library catches USR1", || {
        catches(t.pid, USR1)
    });
    for format in ["text", "json"] {
        let out = stackdump(
            &dl,
            &[
                "dump",
                &t.pid.to_string(),
                "--format",
                format,
                "--timeout",
                "500ms",
            ],
        );
        out.assert_code(1).stderr_has("symlink");
        assert!(!out.stdout.contains("TOPSECRET") && !out.stderr.contains("TOPSECRET"));
    }
    // The symlinks were planted (so the test tested something).
    let planted = std::fs::read_dir(&dumps)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_symlink())
        .count();
    assert!(planted >= 2);

    // A dump directory that is a symlink is refused before anything is sent.
    let real = dir.join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let t = prepared(&dl, link.to_str().unwrap(), &[]);
    stackdump(&dl, &["dump", &t.pid.to_string()])
        .assert_code(3)
        .stderr_has("goes through a symlink");
    assert!(t.alive());
}

#[test]
fn an_oversized_side_file_is_refused_by_name_and_size() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("oversized");
    let t = fake("oversized", &[("STACKDUMP_DIR", dir.str())]);
    wait_until(&dl, "the fake library catches USR1", || {
        catches(t.pid, USR1)
    });
    for format in ["text", "json"] {
        let out = stackdump(
            &dl,
            &[
                "dump",
                &t.pid.to_string(),
                "--format",
                format,
                "--timeout",
                "500ms",
            ],
        );
        out.assert_code(1)
            .stderr_has("larger than the 64 MiB limit for a dump")
            .stderr_has(&format!("({} bytes)", 65u64 << 20));
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    assert!(t.alive());
}

#[test]
fn a_stopped_process_is_refused() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("stopped");
    let t = prepared(&dl, dir.str(), &[]);
    // SAFETY: kill with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(t.pid, libc::SIGSTOP) }, 0);
    wait_until(&dl, "the target is stopped", || state(t.pid) == Some('T'));
    stackdump(&dl, &["dump", &t.pid.to_string()])
        .assert_code(3)
        .stderr_has("it is stopped (state T)")
        .stderr_has("kill -s CONT");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(t.pid, libc::SIGCONT) }, 0);
    wait_until(&dl, "the target runs again", || state(t.pid) == Some('S'));
    stackdump(&dl, &["dump", &t.pid.to_string()]).assert_code(0);
}

#[test]
fn a_missing_dump_directory_is_refused() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("missing");
    let gone = dir.join("gone");
    std::fs::create_dir(&gone).unwrap();
    let t = prepared(&dl, gone.to_str().unwrap(), &[]);
    std::fs::remove_dir(&gone).unwrap();
    stackdump(&dl, &["dump", &t.pid.to_string()])
        .assert_code(3)
        .stderr_has("does not exist in its file system");
    assert!(t.alive());
}

/// The target in its own pid and mount namespaces, with a private /tmp (a container, or
/// systemd's PrivateTmp): its dump is read through /proc/PID/root.
#[test]
#[ignore = "needs root"]
fn dump_a_target_in_other_namespaces() {
    needs_root();
    let dl = Deadline::new(120);
    let lib = real_lib().to_str().unwrap().to_string();
    // The library is held open before the private /tmp hides it (a checkout under /tmp), and
    // preloaded through that descriptor.
    let script = format!(
        "exec 3<'{lib}' && mount -t tmpfs tmpfs /tmp && exec env LD_PRELOAD=/proc/self/fd/3 sleep 1000"
    );

    // pid + mount namespace, private /tmp.
    let outer = Proc::spawn({
        let mut c = Command::new("unshare");
        c.args([
            "--fork",
            "--pid",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            &script,
        ]);
        c
    });
    let mut inner = 0;
    wait_until(&dl, "the namespaced target is ready", || {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", outer.pid))
            .unwrap_or_default();
        inner = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .next()
            .unwrap_or(0);
        inner != 0
            && maps_contain(inner, "libstackdump")
            && catches(inner, USR1)
            && thread_named(inner, "stackdump")
    });
    assert_eq!(
        status_field(inner, "NSpid")
            .unwrap()
            .split_whitespace()
            .last(),
        Some("1")
    );
    for no_openat2 in ["0", "1"] {
        let mut cmd = cli(&["dump", &inner.to_string(), "--format", "json"]);
        cmd.env("STACKDUMP_TEST_NO_OPENAT2", no_openat2);
        let out = run(&dl, cmd);
        out.assert_code(0);
        let v = json(&out);
        assert_eq!(
            v["pid"].as_i64(),
            Some(1),
            "the pid as the target sees itself"
        );
        let req = v["trigger"]["request"].as_u64().unwrap();
        // The file is in the target's private /tmp, not in ours.
        let ours = std::fs::read_dir("/tmp").unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(&format!("-r{req}."))
        });
        assert!(!ours, "the dump must not be in the host's /tmp");
    }
    stackdump(&dl, &["dump", &inner.to_string()])
        .assert_code(0)
        .stdout_has("sleep");

    // Same pid namespace, private /tmp only (`unshare -m`).
    let private = Proc::spawn({
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c", &script]);
        c
    });
    wait_until(&dl, "the PrivateTmp target is ready", || {
        maps_contain(private.pid, "libstackdump")
            && catches(private.pid, USR1)
            && thread_named(private.pid, "stackdump")
    });
    let out = stackdump(&dl, &["dump", &private.pid.to_string(), "--format", "json"]);
    out.assert_code(0);
    assert_eq!(json(&out)["pid"].as_i64(), Some(i64::from(private.pid)));
}

// ---------------------------------------------------------------------------------------------
// list and run

#[test]
fn list_shows_prepared_processes() {
    let dl = Deadline::new(120);
    let dir = Scratch::new("list");
    let t = prepared_with(&dl, dir.str(), &[], &["--signal", "USR2"], libc::SIGUSR2);
    let unprepared = sleep_target(&[]);
    stackdump(&dl, &["dump", &t.pid.to_string()]).assert_code(0);
    let out = stackdump(&dl, &["list"]);
    out.assert_code(0);
    let line = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&t.pid.to_string()))
        .unwrap_or_else(|| panic!("{} not listed:\n{}", t.pid, out.stdout));
    assert!(line.contains("USR2 (ready)"), "{line}");
    assert!(line.contains(dir.str()), "{line}");
    assert!(line.contains(&format!("stackdump-{}-", t.pid)), "{line}");
    assert!(!out
        .stdout
        .lines()
        .any(|l| l.split_whitespace().next() == Some(&unprepared.pid.to_string())));
    let out = stackdump(&dl, &["list", "--format", "json"]);
    out.assert_code(0);
    let mine = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["pid"].as_i64() == Some(i64::from(t.pid)))
        .unwrap();
    assert_eq!(mine["signal"], "USR2");
    assert_eq!(mine["state"], "ready");
    assert_eq!(mine["watch_ms"], serde_json::Value::Null);

    // A process with the watchdog on says so (from the library's state page).
    let watched = prepared_with(&dl, dir.str(), &[("STACKDUMP_WATCH", "90s")], &[], USR1);
    let out = stackdump(&dl, &["list"]);
    out.assert_code(0);
    let line = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&watched.pid.to_string()))
        .unwrap_or_else(|| panic!("{} not listed:\n{}", watched.pid, out.stdout));
    assert!(line.contains("USR1 (ready, watchdog 1m30s)"), "{line}");
    let out = stackdump(&dl, &["list", "--format", "json"]);
    let entry = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["pid"].as_i64() == Some(i64::from(watched.pid)))
        .unwrap();
    assert_eq!(entry["watch_ms"], 90_000);
}

#[test]
fn run_sets_the_environment_and_passes_the_exit_status_through() {
    let dl = Deadline::new(60);
    let dir = Scratch::new("run");
    let lib = real_lib().to_str().unwrap().to_string();
    let mut cmd = cli(&[
        "run",
        "--dir",
        dir.str(),
        "--signal",
        "sigusr2",
        "--",
        "sh",
        "-c",
        "echo \"$LD_PRELOAD|$STACKDUMP_SIGNAL|$STACKDUMP_DIR\"; exit 7",
    ]);
    cmd.env("STACKDUMP_LIB", &lib).env("LD_PRELOAD", "");
    let out = run(&dl, cmd);
    out.assert_code(7);
    assert_eq!(out.stdout.trim(), format!("{lib}|USR2|{}", dir.str()));

    let mut cmd = cli(&["run", "--", "/nonexistent/program"]);
    cmd.env("STACKDUMP_LIB", &lib);
    run(&dl, cmd).assert_code(127).stderr_has("cannot run");

    let mut cmd = cli(&["run", "--", "true"]);
    cmd.env("STACKDUMP_LIB", "/nonexistent/libstackdump.so");
    run(&dl, cmd).assert_code(1).stderr_has("STACKDUMP_LIB");

    let mut cmd = cli(&["run", "--dir", "/nonexistent/dir", "--", "true"]);
    cmd.env("STACKDUMP_LIB", &lib);
    run(&dl, cmd)
        .assert_code(2)
        .stderr_has("not an existing directory");

    // Killed by a signal: the status says so (exec keeps it the same process).
    let mut cmd = cli(&["run", "--", "sh", "-c", "kill -s TERM $$"]);
    cmd.env("STACKDUMP_LIB", &lib);
    run(&dl, cmd).assert_code(128 + libc::SIGTERM);

    // Found next to the executable when STACKDUMP_LIB is unset.
    let copy = dir.join("bin");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(bin(), copy.join("stackdump")).unwrap();
    std::fs::copy(&lib, copy.join("libstackdump.so")).unwrap();
    let mut cmd = Command::new(copy.join("stackdump"));
    cmd.args(["run", "--", "sh", "-c", "echo $LD_PRELOAD"]);
    cmd.env_remove("STACKDUMP_LIB").env_remove("LD_PRELOAD");
    let out = run(&dl, cmd);
    out.assert_code(0);
    assert_eq!(
        out.stdout.trim(),
        copy.join("libstackdump.so")
            .canonicalize()
            .unwrap()
            .to_str()
            .unwrap()
    );
}

#[test]
fn failed_rounds_are_reported_and_the_run_goes_on_behind_schedule() {
    let dl = Deadline::new(60);
    let t = fake("catch", &[]);
    wait_until(&dl, "the fake library catches USR1", || {
        catches(t.pid, USR1)
    });
    let out = stackdump(
        &dl,
        &[
            "dump",
            &t.pid.to_string(),
            "--every",
            "100ms",
            "--count",
            "3",
            "--timeout",
            "250ms",
            // It has no dump thread (refused without --force).
            "--force",
        ],
    );
    out.assert_code(1)
        .stderr_has("round 1/3: no dump from process")
        .stderr_has("round 3/3: no dump from process")
        .stderr_has("behind schedule")
        .stderr_has("3 of 3 dumps failed");
    assert!(t.alive());
}
