//! The example programs, without the preload: they reach READY, and every thread is parked where
//! the program says, as the kernel shows it. These hold before the dumper exists, and pin down
//! what the dump tests may expect.

use crate::util::*;
use stackdump_core::kernel::signals;
use stackdump_core::model::{SyscallState, Tid};

use std::collections::BTreeSet;
use std::process::Command;

/// Thread names of `parked N`, main thread excluded.
pub fn parked_names(workers: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..workers)
        .map(|i| format!("{}-{i}", ["reader", "sleeper", "waiter"][i % 3]))
        .collect();
    names.push("masked".to_string());
    names
}

/// The syscalls a `parked` thread may sleep in, by thread name.
#[track_caller]
pub fn parked_syscalls(name: &str) -> &'static [&'static str] {
    if name.starts_with("reader-") || name == "masked" {
        &["read"]
    } else if name.starts_with("sleeper-") {
        &["clock_nanosleep", "nanosleep"]
    } else if name.starts_with("waiter-") {
        &["futex"]
    } else {
        panic!("not a parked thread: {name}")
    }
}

fn spawn_parked(workers: usize) -> Target {
    let mut cmd = Command::new(c_target("parked"));
    cmd.arg(workers.to_string());
    let mut t = Target::spawn(cmd, Preload::No);
    t.wait_ready(deadline());
    t
}

#[track_caller]
fn assert_parked(t: &Target, name: &str, expected: &[&str]) -> Tid {
    let tid = t.tid_of(name);
    let k = t.kernel_view(tid);
    assert!(
        k.state == "S" && k.wchan.is_some() && expected.contains(&k.syscall_name().unwrap_or("")),
        "{name} (tid {tid}) should sleep in one of {expected:?}, kernel says {k:?}\n{}",
        t.describe()
    );
    tid
}

/// Main threads park only after printing READY: wait (handshake on /proc) until `name` sleeps
/// in one of `expected`.
#[track_caller]
fn wait_parked(t: &Target, name: &str, expected: &[&str]) {
    let tid = t.tid_of(name);
    let parked = || {
        let k = t.kernel_view(tid);
        k.state == "S" && expected.contains(&k.syscall_name().unwrap_or(""))
    };
    assert!(
        poll_until(deadline(), parked),
        "{name} (tid {tid}) did not park in one of {expected:?}\n{}",
        t.describe()
    );
}

#[test]
fn c_parked_threads_park_in_read_sleep_and_cond_wait() {
    let t = spawn_parked(6);
    let names: BTreeSet<String> = t.thread_names().into_iter().map(|(_, n)| n).collect();
    let mut expected: BTreeSet<String> = parked_names(6).into_iter().collect();
    expected.insert("parked".to_string()); // main keeps the executable's name
    assert_eq!(names, expected, "{}", t.describe());

    for name in parked_names(6) {
        assert_parked(&t, &name, parked_syscalls(&name));
    }
    wait_parked(&t, "parked", &["pause"]);
    assert_eq!(t.stdout(), vec![format!("READY {}", t.pid)]);
    assert_eq!(t.stderr(), "", "parked must never write to stderr");
}

#[test]
fn c_parked_masked_thread_blocks_every_catchable_signal() {
    let t = spawn_parked(1);
    let tid = assert_parked(&t, "masked", &["read"]);
    let status = t.kernel_view(tid).status;
    let usr1 = signals::parse_host("USR1").unwrap().number;
    let rtmin = signals::host_rtmin();
    let rtmax = signals::host_rtmax();
    for signo in [usr1, rtmin, rtmin + 1, rtmax] {
        assert!(
            status.blocks(signo),
            "masked must block signal {signo}: SigBlk={:#x}",
            status.sig_blocked
        );
    }
    // Workers do not block anything.
    let reader = t.kernel_view(t.tid_of("reader-0")).status;
    assert_eq!(reader.sig_blocked, 0, "reader-0 blocks signals");
}

#[test]
fn c_parked_worker_count_comes_from_the_argument() {
    let t = spawn_parked(1);
    let names: BTreeSet<String> = t.thread_names().into_iter().map(|(_, n)| n).collect();
    let expected: BTreeSet<String> = ["parked", "reader-0", "masked"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected, "{}", t.describe());
}

#[test]
fn c_parked_refuses_bad_arguments_silently() {
    for bad in [&["x"][..], &["-1"], &["3", "4"]] {
        let out = Command::new(c_target("parked"))
            .args(bad)
            .output()
            .expect("run parked");
        assert_eq!(out.status.code(), Some(2), "parked {bad:?}: {out:?}");
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    }
}

fn spawn_incident(args: &[&str]) -> Target {
    let mut cmd = Command::new("python3");
    cmd.arg(python_target("incident.py")).args(args);
    let mut t = Target::spawn(cmd, Preload::No);
    t.wait_ready(deadline());
    t
}

/// The pid of a child of `pid` whose comm is `comm`, if any.
fn child_named(pid: i32, comm: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let child: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read(e.path().join("stat")).ok()?;
        let text = String::from_utf8_lossy(&stat);
        let (head, rest) = text.rsplit_once(") ")?;
        let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == pid && head.ends_with(&format!("({comm}"))).then_some(child)
    })
}

#[test]
fn python_incident_workers_are_stuck_writing_to_a_full_stderr_pipe() {
    let t = spawn_incident(&["4"]);
    // READY does not prove every worker stuck for good (see `wait_workers_stuck`).
    crate::findings::wait_n_workers_stuck(&t, 4);
    let stderr_target = std::fs::read_link(t.proc_dir().join("fd/2"))
        .expect("readlink fd/2")
        .to_string_lossy()
        .into_owned();
    assert!(
        stderr_target.starts_with("pipe:["),
        "fd 2 is {stderr_target}"
    );

    for i in 0..4 {
        let name = format!("worker-{i}");
        let k = t.kernel_view(t.tid_of(&name));
        let fd = match &k.syscall {
            SyscallState::InSyscall {
                name: Some(n), fd, ..
            } if n == "write" => fd.clone(),
            other => panic!("{name} not in write: {other:?}\n{}", t.describe()),
        };
        let fd = fd.expect("write's fd is resolved");
        assert_eq!(fd.fd, 2, "{name} writes to fd {}", fd.fd);
        assert_eq!(fd.target.as_deref(), Some(stderr_target.as_str()));
        let wchan = k.wchan.clone().unwrap_or_default();
        assert!(
            k.state == "S" && wchan.contains("pipe_write"),
            "{name} should sleep in (anon_)pipe_write: {k:?}"
        );
    }

    // The read end is held by a child that never reads (else write would fail with EPIPE).
    let holder = child_named(t.pid, "sleep").expect("the `sleep` child holding the read end");
    let holder_stdin = std::fs::read_link(format!("/proc/{holder}/fd/0")).expect("holder fd 0");
    assert_eq!(holder_stdin.to_string_lossy(), stderr_target);
    assert_eq!(t.stdout(), vec![format!("READY {}", t.pid)]);

    // Killing the target takes the holder with it (PR_SET_PDEATHSIG): nothing leaks.
    drop(t);
    let holder_dead = || match std::fs::read(format!("/proc/{holder}/stat")) {
        Err(_) => true,
        Ok(stat) => stackdump_core::kernel::proc::parse_stat(&stat)
            .map_or(true, |s| matches!(s.state, 'Z' | 'X')),
    };
    assert!(
        poll_until(deadline(), holder_dead),
        "the pipe holder {holder} outlived the target"
    );
}

/// `(inode, state, rx_queue)` of the TCP sockets of the network namespace of `pid`.
fn tcp_sockets(pid: i32) -> Vec<(u64, u8, u64)> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let state = u8::from_str_radix(f[3], 16).unwrap_or(0);
            let rx = f[4]
                .split_once(':')
                .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
                .unwrap_or(0);
            let inode = f[9].parse().unwrap_or(0);
            out.push((inode, state, rx));
        }
    }
    out
}

/// Socket inodes of the fds of `pid`.
fn socket_inodes(pid: i32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list fds")
        .flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            let link = link.to_string_lossy();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn python_incident_clients_leave_close_wait_sockets_with_unread_requests() {
    let t = spawn_incident(&["2", "--clients", "5"]);
    // READY does not prove every worker stuck for good (see `wait_workers_stuck`).
    crate::findings::wait_n_workers_stuck(&t, 2);
    let ours = socket_inodes(t.pid);
    const CLOSE_WAIT: u8 = 0x08;
    const LISTEN: u8 = 0x0A;
    let sockets: Vec<_> = tcp_sockets(t.pid)
        .into_iter()
        .filter(|(inode, _, _)| ours.contains(inode))
        .collect();
    let close_wait: Vec<_> = sockets.iter().filter(|s| s.1 == CLOSE_WAIT).collect();
    assert_eq!(
        close_wait.len(),
        5,
        "sockets: {sockets:?}\n{}",
        t.describe()
    );
    for (inode, _, rx) in &close_wait {
        assert!(
            (250..=400).contains(rx),
            "socket {inode} should hold one unread ~300-byte request, Recv-Q {rx}"
        );
    }
    assert_eq!(sockets.iter().filter(|s| s.1 == LISTEN).count(), 1);
    // The main thread goes on accepting.
    let main = t.kernel_view(Tid(t.pid)).name;
    wait_parked(&t, &main, &["accept", "accept4"]);
    // The workers are stuck as without --clients.
    for i in 0..2 {
        let k = t.kernel_view(t.tid_of(&format!("worker-{i}")));
        assert_eq!(k.syscall_name(), Some("write"), "{k:?}");
    }
}

#[test]
fn rust_named_threads_park_in_their_marker_functions_syscalls() {
    let mut t = Target::spawn(Command::new(rust_target("named_threads")), Preload::No);
    t.wait_ready(deadline());
    for (name, expected) in [
        ("db-writer", &["read"][..]),
        ("sleeper", &["clock_nanosleep", "nanosleep"]),
        ("lock-waiter", &["futex"]),
        ("cond-waiter", &["futex"]),
    ] {
        assert_parked(&t, name, expected);
    }
    let names: BTreeSet<String> = t.thread_names().into_iter().map(|(_, n)| n).collect();
    assert_eq!(names.len(), 5, "main + 4 named threads: {names:?}");
    assert_eq!(t.stdout(), vec![format!("READY {}", t.pid)]);
    assert_eq!(t.stderr(), "");
}
