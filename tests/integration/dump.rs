//! The example programs with `libstackdump.so` preloaded, dumped with `kill -s USR1`: the side
//! files are complete, private and atomic, agree with the kernel, show the programs' known
//! stacks, and leave the process running as it was.

use crate::examples::{parked_names, parked_syscalls};
use crate::util::*;
use stackdump_core::model::{CaptureStatus, Frame, SyscallState, Thread, Tid};

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `kill -s USR1`, wait for the JSON side file, read it.
fn trigger(t: &mut Target) -> Dumped {
    let deadline = deadline();
    send_signal(t.pid, "USR1");
    Dumped::read(&wait_for_dump(&t.dump_dir(), t.pid, deadline))
}

fn spawn_ready(cmd: Command) -> Target {
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline());
    t
}

/// What holds for every dump of every target: the header, the thread list against `/proc`,
/// the dumper's own thread, the files (mode 0600, no temporary left), and a live process that
/// wrote nothing to stdout/stderr.
#[track_caller]
fn check_common(t: &mut Target, d: &Dumped) {
    let ctx = || d.context(t);
    let dump = &d.dump;
    assert_eq!(dump.format, "stackdump/1", "{}", ctx());
    assert_eq!(dump.pid.0, t.pid, "{}", ctx());
    assert_eq!(dump.trigger.signal, "USR1", "{}", ctx());
    assert_eq!(
        dump.trigger.sender_pid,
        Some(std::process::id() as i32),
        "the sender is this test process\n{}",
        ctx()
    );

    // Every thread, no more, no less: the programs' threads do not come and go.
    let in_proc: BTreeSet<Tid> = t.tids().into_iter().collect();
    let in_dump: BTreeSet<Tid> = dump.threads.iter().map(|th| th.tid).collect();
    assert_eq!(
        dump.threads.len(),
        in_proc.len(),
        "thread count differs from /proc/{}/task\n{}",
        t.pid,
        ctx()
    );
    assert_eq!(in_dump, in_proc, "tids differ from /proc\n{}", ctx());
    assert_eq!(dump.capture.threads, dump.threads.len(), "{}", ctx());
    for (tid, name) in t.thread_names() {
        let th = dump.thread(tid).expect("tid checked above");
        assert_eq!(
            th.name,
            name,
            "name of {tid} differs from its comm\n{}",
            ctx()
        );
    }
    let dumper = d.thread(t, "stackdump");
    assert_eq!(dumper.capture, CaptureStatus::Dumper, "{}", ctx());

    // Files: the JSON and its text twin, private, complete, no temporary left behind.
    let txt = d.path.with_extension("txt");
    for file in [&d.path, &txt] {
        let meta = std::fs::symlink_metadata(file)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), ctx()));
        assert!(meta.is_file(), "{} is not a regular file", file.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{} has mode {:o}",
            file.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let name = d.path.file_name().unwrap().to_string_lossy().into_owned();
    check_file_name(&name, t.pid).unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    for entry in std::fs::read_dir(t.dump_dir())
        .expect("list dump dir")
        .flatten()
    {
        let n = entry.file_name().to_string_lossy().into_owned();
        if is_library_cache(&n) {
            continue;
        }
        assert!(
            !n.starts_with('.') && !n.ends_with(".tmp"),
            "temporary file {n:?} left in the dump dir\n{}",
            ctx()
        );
    }

    // The process goes on, and nothing was written to its stdout.
    t.assert_alive();
    assert_eq!(
        t.stdout(),
        vec![format!("READY {}", t.pid)],
        "{}",
        d.context(t)
    );
}

/// `stackdump-<pid>-<YYYYmmddTHHMMSS.mmm>Z[-r<request>].json`
fn check_file_name(name: &str, pid: i32) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bad dump file name {name:?}: {why}"));
    let Some(rest) = name.strip_prefix(&format!("stackdump-{pid}-")) else {
        return bad("prefix");
    };
    let Some(rest) = rest.strip_suffix(".json") else {
        return bad("suffix");
    };
    let (stamp, request) = match rest.split_once("Z") {
        Some((s, r)) => (s, r),
        None => return bad("no Z"),
    };
    let b = stamp.as_bytes();
    let shape_ok = b.len() == 19
        && b[8] == b'T'
        && b[15] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit());
    if !shape_ok {
        return bad("timestamp is not YYYYmmddTHHMMSS.mmm");
    }
    if !(request.is_empty()
        || request
            .strip_prefix("-r")
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit())))
    {
        return bad("request suffix");
    }
    Ok(())
}

fn syscall_of(th: &Thread) -> Option<&str> {
    syscall_name(&th.kernel.syscall)
}

/// The thread was asleep in one of `syscalls` when the dump read its kernel view.
#[track_caller]
fn check_blocked_in(t: &Target, d: &Dumped, th: &Thread, syscalls: &[&str]) {
    assert!(
        th.kernel.state == "S"
            && th.kernel.wchan.is_some()
            && syscalls.contains(&syscall_of(th).unwrap_or("")),
        "{} ({}) should be asleep in one of {syscalls:?} with a wchan; dump says state {} wchan \
         {:?} syscall {:?}\n{}",
        th.name,
        th.tid,
        th.kernel.state,
        th.kernel.wchan,
        th.kernel.syscall,
        d.context(t)
    );
}

fn position(frames: &[Frame], name: &str) -> Option<usize> {
    frames
        .iter()
        .position(|f| function_is(f.function.as_deref(), name))
}

/// `parking`, `level_20`, …, `level_01`, `worker_main`, consecutive, innermost first, each with
/// `parked.c:<line>`.
#[track_caller]
fn check_parked_stack(t: &Target, d: &Dumped, th: &Thread, parking: &str) {
    let fail = |why: String| -> ! {
        panic!(
            "{} ({}): {why}\nframes:\n{}\n{}",
            th.name,
            th.tid,
            th.frames
                .iter()
                .map(stackdump_core::output::render::frame)
                .collect::<Vec<_>>()
                .join("\n"),
            d.context(t)
        )
    };
    if th.capture != CaptureStatus::Ok {
        fail(format!("capture is {:?}, not ok", th.capture));
    }
    let mut expected = vec![parking.to_string()];
    expected.extend((1..=20).rev().map(|n| format!("level_{n:02}")));
    expected.push("worker_main".to_string());
    let Some(start) = position(&th.frames, parking) else {
        fail(format!("no {parking} frame"));
    };
    let window = &th.frames[start..];
    if window.len() < expected.len() {
        fail(format!(
            "stack ends after {} frames from {parking}",
            window.len()
        ));
    }
    for (frame, want) in window.iter().zip(&expected) {
        if !function_is(frame.function.as_deref(), want) {
            fail(format!(
                "expected {want} in sequence, found {:?}",
                frame.function
            ));
        }
        if !frame
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("parked.c"))
            || frame.line.is_none()
        {
            fail(format!(
                "{want} has no parked.c:<line> (file {:?}, line {:?})",
                frame.file, frame.line
            ));
        }
    }
    if th.truncated {
        fail("marked truncated although it unwound to worker_main".to_string());
    }
}

/// How the C example is dumped: the default (threads blocked in a system call are copied
/// without a signal) or `STACKDUMP_CAPTURE=signal` (every thread is sent the capture signal).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Auto,
    Signal,
}

#[test]
fn c_parked_dump_has_every_thread_unwound_without_frame_pointers() {
    c_parked_dump(Mode::Auto);
}

#[test]
fn c_parked_dump_with_capture_signal_for_every_thread() {
    c_parked_dump(Mode::Signal);
}

#[track_caller]
fn c_parked_dump(mode: Mode) {
    const WORKERS: usize = 6;
    let mut cmd = Command::new(c_target("parked"));
    cmd.arg(WORKERS.to_string());
    if mode == Mode::Signal {
        cmd.env("STACKDUMP_CAPTURE", "signal");
    }
    let mut t = spawn_ready(cmd);
    let d = trigger(&mut t);
    check_common(&mut t, &d);

    d.thread(&t, "parked"); // main, under the executable's name
    for name in parked_names(WORKERS) {
        let th = d.thread(&t, &name);
        check_blocked_in(&t, &d, th, parked_syscalls(&name));
        let parking = match &name[..name.find('-').unwrap_or(name.len())] {
            "reader" => "park_read",
            "sleeper" => "park_sleep",
            "waiter" => "park_cond",
            _ => continue, // masked: below
        };
        check_parked_stack(&t, &d, th, parking);
        // Blocked threads are copied without a signal, unless every thread is to be signalled.
        assert_eq!(
            th.signalled,
            mode == Mode::Signal,
            "thread {name}\n{}",
            d.context(&t)
        );
    }

    let masked = d.thread(&t, "masked");
    check_blocked_in(&t, &d, masked, &["read"]);
    match mode {
        Mode::Signal => {
            // The thread that blocks every signal is not interrupted, but the kernel still tells.
            assert_eq!(
                masked.capture,
                CaptureStatus::SignalBlocked,
                "{}",
                d.context(&t)
            );
            assert!(masked.frames.is_empty(), "{}", d.context(&t));
            assert_eq!(d.dump.capture.without_signal, 0, "{}", d.context(&t));
        }
        Mode::Auto => {
            // Blocked in read, it is copied without a signal, mask or not.
            assert_eq!(masked.capture, CaptureStatus::Ok, "{}", d.context(&t));
            assert!(!masked.signalled, "{}", d.context(&t));
            let names: Vec<&str> = masked
                .frames
                .iter()
                .filter_map(|f| f.function.as_deref())
                .collect();
            assert!(
                names.contains(&"masked_main"),
                "masked thread frames: {names:?}\n{}",
                d.context(&t)
            );
            assert!(!masked.truncated, "{}", d.context(&t));
            assert!(d.dump.capture.without_signal > WORKERS, "{}", d.context(&t));
        }
    }

    // Nobody was disturbed: every thread but main is back asleep where it was.
    let parked_again = || {
        parked_names(WORKERS).iter().all(|name| {
            let k = t.kernel_view(t.tid_of(name));
            k.state == "S" && parked_syscalls(name).contains(&k.syscall_name().unwrap_or(""))
        })
    };
    assert!(
        poll_until(deadline(), parked_again),
        "threads did not go back to sleep after the dump\n{}",
        d.context(&t)
    );
    assert_eq!(t.stderr(), "", "nothing may be written to stderr");
}

/// A process of many threads, dumped three times: after the first dump the library starts its
/// helper thread (`stackdump-aux`, when it may use two CPUs), which reads half of the threads'
/// kernel views from the second dump on; it is listed as the library's, like the dump thread,
/// and every host thread is still there, complete, as in the first dump. Between dumps the
/// library keeps the threads' /proc files open (each dump reads them with one pread).
#[test]
fn many_threads_are_read_by_the_dump_thread_and_its_helper_from_the_second_dump_on() {
    const WORKERS: usize = 120; // above the helper's threshold of 64 threads
    let mut cmd = Command::new(c_target("parked"));
    cmd.arg(WORKERS.to_string());
    let mut t = spawn_ready(cmd);
    let two_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let mut first_tids: Option<BTreeSet<Tid>> = None;
    for round in 1..=3 {
        // Each round waits for its own file.
        for ext in ["json", "txt"] {
            for f in dump_files(&t.dump_dir(), t.pid, ext) {
                std::fs::remove_file(&f).expect("remove the previous dump");
            }
        }
        let d = trigger(&mut t);
        if round > 1 {
            check_common(&mut t, &d);
        }
        let ctx = || format!("dump #{round}\n{}", d.context(&t));
        let aux: Vec<&Thread> = d
            .dump
            .threads
            .iter()
            .filter(|th| th.name == "stackdump-aux")
            .collect();
        if round == 1 {
            // Started right after this dump was written: not in it.
            assert!(aux.is_empty(), "{}", ctx());
        } else {
            assert_eq!(aux.len(), usize::from(two_cpus), "{}", ctx());
            for th in &aux {
                assert_eq!(th.capture, CaptureStatus::Dumper, "{}", ctx());
                assert!(th.frames.is_empty(), "{}", ctx());
            }
        }
        // The host's threads are the same in every dump, each complete.
        let host: BTreeSet<Tid> = d
            .dump
            .threads
            .iter()
            .filter(|th| th.capture != CaptureStatus::Dumper)
            .map(|th| th.tid)
            .collect();
        assert_eq!(host.len(), WORKERS + 2, "main, workers, masked\n{}", ctx());
        assert_eq!(
            first_tids.get_or_insert_with(|| host.clone()),
            &host,
            "{}",
            ctx()
        );
        for name in parked_names(WORKERS) {
            let th = d.thread(&t, &name);
            check_blocked_in(&t, &d, th, parked_syscalls(&name));
            assert_eq!(th.capture, CaptureStatus::Ok, "{name}\n{}", ctx());
            assert!(!th.truncated, "{name}\n{}", ctx());
            assert!(th.kernel.voluntary_ctxt_switches > 0, "{name}\n{}", ctx());
        }
        // Files kept open for the next dump, in the library's own fd table (never the host's).
        let dumper = d.thread(&t, "stackdump").tid;
        let kept = std::fs::read_dir(format!("/proc/{}/task/{}/fd", t.pid, dumper.0))
            .map(|r| r.count())
            .unwrap_or(0);
        assert!(
            kept >= 3 * WORKERS,
            "the dump thread holds {kept} fds after dump #{round}\n{}",
            ctx()
        );
    }
    let host_fds = std::fs::read_dir(format!("/proc/{}/fd", t.pid))
        .map(|r| r.count())
        .unwrap_or(0);
    assert!(host_fds < 20, "the host's fd table has {host_fds} entries");
}

/// The C library's debug sections, when they are installed compressed (Debian's `libc6-dbg`):
/// the first dump inflates them and, once its files are written, keeps them in the dump
/// directory (`.stackdump-cache-<uid>`, private), with the names it gave its addresses
/// (`<build id>.names`). A later process whose dump directory holds only the sections maps
/// them (the cache marks a file it used by its modification time); one whose directory holds
/// the names too reads those. Both name every frame as the first process did.
#[test]
fn inflated_debug_sections_are_cached_in_the_dump_dir_for_the_next_process() {
    use std::os::unix::fs::MetadataExt;
    let compressed_libc_debug = std::process::Command::new("sh")
        .arg("-c")
        .arg("id=$(readelf -n /lib/x86_64-linux-gnu/libc.so.6 2>/dev/null | awk '/Build ID/{print $3}'); f=/usr/lib/debug/.build-id/$(echo $id | cut -c1-2)/$(echo $id | cut -c3-).debug; readelf -S \"$f\" 2>/dev/null | grep -A1 ' .debug_info' | grep -q ' C '")
        .status()
        .is_ok_and(|s| s.success());
    if !compressed_libc_debug {
        eprintln!("skipped: no compressed debug file of the C library here (libc6-dbg)");
        return;
    }
    const WORKERS: usize = 6;
    let spawn = || {
        let mut cmd = Command::new(c_target("parked"));
        cmd.arg(WORKERS.to_string());
        spawn_ready(cmd)
    };
    let mut first = spawn();
    let d1 = trigger(&mut first);
    // Written after the dump: wait for it.
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let cache = first.dump_dir().join(format!(".stackdump-cache-{uid}"));
    let dwarf = cache.join("dwarf");
    let cached = |dir: &Path, ext: &str| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == ext))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    };
    // The sections of the C library's debug file, and the names of the C library's and the
    // executable's addresses (both written by the same flush, the names last).
    assert!(
        poll_until(deadline(), || !cached(&dwarf, "sections").is_empty()
            && cached(&dwarf, "names").len() >= 2),
        "no cache files in {}: {:?}\n{}",
        dwarf.display(),
        std::fs::read_dir(&dwarf).map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
        d1.context(&first)
    );
    let sections = cached(&dwarf, "sections")[0].clone();
    let libc_names = sections.with_extension("names");
    assert!(
        libc_names.exists(),
        "no names beside {}",
        sections.display()
    );
    for (path, mode) in [
        (&cache, 0o700),
        (&dwarf, 0o700),
        (&sections, 0o600),
        (&libc_names, 0o600),
    ] {
        let m = std::fs::symlink_metadata(path).expect("cache entry");
        assert_eq!(m.mode() & 0o777, mode, "{}", path.display());
        assert_eq!(m.uid(), uid, "{}", path.display());
    }

    // The same frames, named alike (libc's with their file and line).
    let frames = |d: &Dumped, t: &Target| -> Vec<(Option<String>, Option<String>, Option<u32>)> {
        d.thread(t, "reader-0")
            .frames
            .iter()
            .map(|f| {
                (
                    f.function.as_deref().map(str::to_string),
                    f.file.as_deref().map(str::to_string),
                    f.line,
                )
            })
            .collect()
    };
    let f1 = frames(&d1, &first);
    let libc_read = f1
        .iter()
        .find(|(func, file, _)| {
            func.as_deref().is_some_and(|n| n.contains("read"))
                && file.as_deref().is_some_and(|p| p.ends_with(".c"))
        })
        .and_then(|(func, _, _)| func.clone());
    let Some(libc_read) = libc_read else {
        panic!("no libc frame with its source file: {f1:?}");
    };
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let mark_old = |p: &Path| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .and_then(|f| f.set_modified(old))
            .expect("mark the copy old")
    };
    let used = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .expect("copy")
            > old
    };
    // A second process, its dump directory holding a copy of the cache (marked old), first
    // without the names (the frames named from the cached sections), then with them.
    for with_names in [false, true] {
        let mut next = spawn();
        let status = Command::new("cp")
            .arg("-a")
            .arg(&cache)
            .arg(next.dump_dir())
            .status()
            .expect("cp");
        assert!(status.success());
        let copy = next
            .dump_dir()
            .join(cache.file_name().unwrap())
            .join("dwarf");
        for names in cached(&copy, "names") {
            if with_names {
                mark_old(&names);
            } else {
                std::fs::remove_file(&names).expect("remove the names");
            }
        }
        // The name the first process gave libc's read frame, changed in the copy of the
        // names (same length): the frame shows the changed name only if the names were read.
        let renamed = format!("X{}", &libc_read[1..]);
        let copied_names = copy.join(libc_names.file_name().unwrap());
        if with_names {
            let mut bytes = std::fs::read(&copied_names).expect("names");
            let mut changed = 0;
            while let Some(at) = bytes
                .windows(libc_read.len())
                .position(|w| w == libc_read.as_bytes())
            {
                bytes[at..at + libc_read.len()].copy_from_slice(renamed.as_bytes());
                changed += 1;
            }
            assert!(changed > 0, "libc's read frame is not in the names");
            std::fs::write(&copied_names, bytes).expect("rewrite the names");
            mark_old(&copied_names);
        }
        let copied_sections = copy.join(sections.file_name().unwrap());
        mark_old(&copied_sections);
        let d = trigger(&mut next);
        let mut expected = f1.clone();
        if with_names {
            assert!(
                used(&copied_names),
                "the process did not read the names\n{}",
                d.context(&next)
            );
            for f in &mut expected {
                if f.0.as_deref() == Some(libc_read.as_str()) {
                    f.0 = Some(renamed.clone());
                }
            }
        } else {
            assert!(
                used(&copied_sections),
                "the process did not use the cached sections\n{}",
                d.context(&next)
            );
        }
        assert_eq!(
            frames(&d, &next),
            expected,
            "names kept: {with_names}\n{}",
            d.context(&next)
        );
    }
}

/// A dump leaves the process's mappings of its modules as the loader made them: tools that
/// read `/proc/PID/maps` (eu-stack, gdb, perf) place a library by its mappings, and a part of
/// libc kept mapped again elsewhere (the unwind sections, once) made eu-stack name rustc's
/// frames wrong. (A whole debug file or module file mapped from offset 0 for its symbols is
/// not a part of a module: those stay allowed.)
#[test]
fn a_dump_maps_no_part_of_a_module_elsewhere() {
    let mut cmd = Command::new(c_target("parked"));
    cmd.arg("3");
    let mut t = spawn_ready(cmd);
    // (path, offset, length) of every mapping of a file at a nonzero offset.
    let parts = |pid: i32| -> BTreeSet<(String, u64, u64)> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
        stackdump_core::kernel::proc::parse_maps(maps.as_bytes())
            .into_iter()
            .filter(|m| m.path.starts_with('/') && m.offset != 0)
            .map(|m| (m.path, m.offset, m.end - m.start))
            .collect()
    };
    let before = parts(t.pid);
    let d1 = trigger(&mut t);
    let d2 = trigger(&mut t);
    let after = parts(t.pid);
    let added: Vec<_> = after.difference(&before).collect();
    assert!(
        added.is_empty(),
        "mapped by the dumps: {added:?}\n{}\n{}",
        d1.context(&t),
        d2.context(&t)
    );
}

#[test]
fn python_incident_dump_is_written_while_stderr_is_a_full_pipe() {
    const WORKERS: usize = 4;
    let mut cmd = Command::new("python3");
    cmd.arg(python_target("incident.py"))
        .arg(WORKERS.to_string());
    let mut t = spawn_ready(cmd);
    // READY does not prove every worker stuck for good (see `wait_workers_stuck`).
    crate::findings::wait_n_workers_stuck(&t, WORKERS);
    let d = trigger(&mut t);
    check_common(&mut t, &d);

    for i in 0..WORKERS {
        let th = d.thread(&t, &format!("worker-{i}"));
        let wchan = th.kernel.wchan.as_deref().unwrap_or("");
        assert!(
            th.kernel.state == "S" && wchan.contains("pipe_write"),
            "{} should sleep in (anon_)pipe_write, dump says {} {wchan:?}\n{}",
            th.name,
            th.kernel.state,
            d.context(&t)
        );
        match &th.kernel.syscall {
            SyscallState::InSyscall {
                name: Some(name),
                fd: Some(fd),
                ..
            } if name == "write"
                && fd.fd == 2
                && fd
                    .target
                    .as_deref()
                    .is_some_and(|p| p.starts_with("pipe:[")) => {}
            other => panic!(
                "{} should be in write(fd=2 → pipe:[…]), dump says {other:?}\n{}",
                th.name,
                d.context(&t)
            ),
        }
        assert_eq!(th.capture, CaptureStatus::Ok, "{}", d.context(&t));
        assert!(!th.frames.is_empty(), "{}", d.context(&t));
    }

    // The pipe was full all along: the workers are still stuck in write(2).
    for i in 0..WORKERS {
        let k = t.kernel_view(t.tid_of(&format!("worker-{i}")));
        assert_eq!(k.syscall_name(), Some("write"), "{k:?}\n{}", d.context(&t));
    }
}

#[test]
fn rust_named_threads_dump_shows_names_and_marker_functions() {
    let mut t = spawn_ready(Command::new(rust_target("named_threads")));
    let d = trigger(&mut t);
    check_common(&mut t, &d);

    for (name, marker, syscalls) in [
        ("db-writer", "blocked_in_pipe_read", &["read"][..]),
        (
            "sleeper",
            "sleeping_in_nanosleep",
            &["clock_nanosleep", "nanosleep"],
        ),
        ("lock-waiter", "waiting_for_mutex", &["futex"]),
        ("cond-waiter", "waiting_on_condvar", &["futex"]),
    ] {
        let th = d.thread(&t, name);
        check_blocked_in(&t, &d, th, syscalls);
        assert_eq!(th.capture, CaptureStatus::Ok, "{name}\n{}", d.context(&t));
        let Some(i) = position(&th.frames, marker) else {
            panic!("{name}: no {marker} frame\n{}", d.context(&t));
        };
        let f = &th.frames[i];
        assert!(
            f.file
                .as_deref()
                .is_some_and(|p| p.ends_with("named_threads.rs"))
                && f.line.is_some(),
            "{name}: {marker} has no named_threads.rs:<line>: {f:?}\n{}",
            d.context(&t)
        );
    }
    assert_eq!(t.stderr(), "", "nothing may be written to stderr");
}

#[test]
fn dump_file_names_follow_the_contract() {
    // The checker itself must reject what the contract forbids (a test that cannot fail is no
    // test).
    assert!(check_file_name("stackdump-42-20240102T030405.678Z.json", 42).is_ok());
    assert!(check_file_name("stackdump-42-20240102T030405.678Z-r17.json", 42).is_ok());
    for bad in [
        "stackdump-43-20240102T030405.678Z.json",
        "stackdump-42-20240102T030405Z.json",
        "stackdump-42-20240102T030405.678.json",
        "stackdump-42-20240102T030405.678Z-r.json",
        "stackdump-42-20240102T030405.678Z.json.tmp",
    ] {
        assert!(check_file_name(bad, 42).is_err(), "{bad} accepted");
    }
}
