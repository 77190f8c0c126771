//! A host that must never see EINTR (threads in epoll_wait, poll, nanosleep and sigtimedwait,
//! each exiting with status 1 if its call ever returns) survives 200 dumps: threads blocked in a
//! system call are copied without a signal. The control case proves the fixture would notice:
//! with `STACKDUMP_CAPTURE=signal` the first dump kills it with status 1.

use crate::util::*;
use stackdump_core::model::CaptureStatus;
use std::process::Command;

/// Thread name → the system calls it may be blocked in.
const SENSITIVE: &[(&str, &[&str])] = &[
    ("epoll", &["epoll_wait", "epoll_pwait"]),
    ("poll", &["poll", "ppoll"]),
    ("nanosleep", &["nanosleep", "clock_nanosleep"]),
    ("sigtimedwait", &["rt_sigtimedwait"]),
];

#[track_caller]
fn spawn(capture: Option<&str>) -> Target {
    let mut cmd = Command::new(c_target("eintr"));
    if let Some(c) = capture {
        cmd.env("STACKDUMP_CAPTURE", c);
    }
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline());
    wait_blocked(&t);
    t
}

/// READY is printed just before the calls; wait until every thread sits in its call.
#[track_caller]
fn wait_blocked(t: &Target) {
    let blocked = |t: &Target| {
        SENSITIVE.iter().all(|(name, calls)| {
            let k = t.kernel_view(t.tid_of(name));
            k.state == "S" && calls.contains(&k.syscall_name().unwrap_or(""))
        })
    };
    assert!(
        poll_until(deadline(), || blocked(t)),
        "threads never blocked in their calls\n{}",
        t.describe()
    );
}

#[track_caller]
fn dump_once(t: &mut Target, n: usize) {
    send_signal(t.pid, "USR1");
    let dir = t.dump_dir();
    let pid = t.pid;
    let ok = poll_until(deadline(), || {
        dump_files(&dir, pid, "json").len() >= n || t.exited().is_some()
    });
    assert!(ok, "dump {n} never appeared\n{}", t.describe());
}

#[test]
fn host_that_must_not_see_eintr_survives_200_dumps() {
    let mut t = spawn(None);
    for n in 1..=200 {
        dump_once(&mut t, n);
        if let Some(status) = t.exited() {
            panic!(
                "the host saw EINTR (or died) at dump {n}: {status}\n{}",
                t.describe()
            );
        }
    }
    t.assert_alive();
    let files = dump_files(&t.dump_dir(), t.pid, "json");
    assert_eq!(files.len(), 200);
    let last = read_dump(files.last().unwrap());
    for (name, calls) in SENSITIVE {
        let th = last
            .threads
            .iter()
            .find(|th| th.name == *name)
            .unwrap_or_else(|| panic!("no thread {name} in the last dump"));
        assert_eq!(th.capture, CaptureStatus::Ok, "{name}: {th:?}");
        assert!(!th.signalled, "{name} was signalled: {th:?}");
        let fns: Vec<&str> = th
            .frames
            .iter()
            .filter_map(|f| f.function.as_deref())
            .collect();
        assert!(
            fns.iter().any(|f| f.starts_with("in_")),
            "{name}: its own function is on the stack: {fns:?}"
        );
        assert!(!th.truncated, "{name}: {fns:?}");
        let k = t.kernel_view(t.tid_of(name));
        assert!(
            calls.contains(&k.syscall_name().unwrap_or("")),
            "{name} left its call"
        );
    }
}

#[test]
fn control_signalling_every_thread_does_interrupt_such_a_host() {
    let mut t = spawn(Some("signal"));
    send_signal(t.pid, "USR1");
    let exited = poll_until(deadline(), || t.exited().is_some());
    assert!(
        exited,
        "the fixture did not notice the capture signal\n{}",
        t.describe()
    );
    let status = t.exited().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status 1 means a call returned early: {status}"
    );
}

/// `stackdump dump` sends the trigger to the library's own thread: even a main thread that
/// would die on any signal (strict mode: it waits in epoll_wait and exits 1 if that returns)
/// is never interrupted, through 50 dumps.
#[test]
fn stackdump_dump_interrupts_no_host_thread() {
    let mut cmd = Command::new(c_target("eintr"));
    cmd.arg("strict");
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline());
    // A thread still on its way to its call would be sent the capture signal, and see EINTR if
    // it entered the call before taking it.
    wait_blocked(&t);
    let main = stackdump_core::Tid(t.pid);
    assert!(
        poll_until(deadline(), || t.kernel_view(main).syscall_name()
            == Some("epoll_wait")),
        "main never blocked in epoll_wait\n{}",
        t.describe()
    );
    for round in 1..=50 {
        let out = Command::new(stackdump_bin())
            .args([
                "dump",
                &t.pid.to_string(),
                "--format",
                "json",
                "--timeout",
                "20s",
            ])
            .output()
            .expect("run stackdump");
        assert!(
            out.status.success(),
            "round {round}: stackdump dump failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            t.describe()
        );
        if let Some(status) = t.exited() {
            panic!(
                "round {round}: the host was interrupted and exited ({status})\n{}",
                t.describe()
            );
        }
    }
    t.assert_alive();
}

/// Control for the test above: a process-directed `kill -s USR1` does interrupt the strict
/// main thread (the kernel gives the signal to main), which then exits with status 1.
#[test]
fn control_process_directed_trigger_interrupts_strict_main() {
    let mut cmd = Command::new(c_target("eintr"));
    cmd.arg("strict");
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline());
    let main = stackdump_core::Tid(t.pid);
    assert!(poll_until(deadline(), || t
        .kernel_view(main)
        .syscall_name()
        == Some("epoll_wait")));
    send_signal(t.pid, "USR1");
    assert!(
        poll_until(deadline(), || t.exited().is_some()),
        "{}",
        t.describe()
    );
    assert_eq!(t.exited().unwrap().code(), Some(1));
}
