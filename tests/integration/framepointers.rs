//! Blocked threads in frame-pointer code are captured without a signal and without a stop
//! (`stackdump_core::stack::fprecover`): the EINTR-strict host built with and without
//! `-fno-omit-frame-pointer` survives 200 `stackdump dump` (no thread signalled in any of
//! them) and 20 `stackdump inspect` (no thread stopped with ptrace); a host whose frames use
//! alloca, VLAs and over-aligned locals (rbp-based CFA even at -O2) too; and the C examples
//! give the same stacks either way.

use crate::util::*;
use stackdump_core::model::{CaptureStatus, Dump};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// Thread name → the system calls it may be blocked in, and a function of its own that must
/// be on its stack.
type Expected = &'static [(&'static str, &'static [&'static str], &'static str)];

const EINTR_HOST: Expected = &[
    ("epoll", &["epoll_wait", "epoll_pwait"], "in_epoll_wait"),
    ("poll", &["poll", "ppoll"], "in_poll"),
    (
        "nanosleep",
        &["nanosleep", "clock_nanosleep"],
        "in_nanosleep",
    ),
    ("sigtimedwait", &["rt_sigtimedwait"], "in_sigtimedwait"),
];

const ALLOCA_HOST: Expected = &[
    ("vla-poll", &["poll", "ppoll"], "alloca_outer"),
    (
        "alloca-sleep",
        &["nanosleep", "clock_nanosleep"],
        "plain_sleep_middle",
    ),
    (
        "aligned-epoll",
        &["epoll_wait", "epoll_pwait"],
        "aligned_epoll_main",
    ),
];

#[track_caller]
fn spawn(binary: &Path, preload: Preload, expected: Expected) -> Target {
    let mut t = Target::spawn(Command::new(private_copy(binary)), preload);
    t.wait_ready(deadline());
    // Every named thread in its call, and the main thread asleep too (it prints READY before
    // it enters its own wait: an inspect in between would rightly have to stop it).
    let blocked = |t: &Target| {
        t.kernel_view(stackdump_core::model::Tid(t.pid)).state == "S"
            && expected.iter().all(|(name, calls, _)| {
                let k = t.kernel_view(t.tid_of(name));
                k.state == "S" && calls.contains(&k.syscall_name().unwrap_or(""))
            })
    };
    assert!(
        poll_until(deadline(), || blocked(&t)),
        "threads never blocked in their calls\n{}",
        t.describe()
    );
    t
}

fn run(args: &[&str]) -> Output {
    Command::new(stackdump_bin())
        .args(args)
        .output()
        .expect("run stackdump")
}

#[track_caller]
fn parse(round: usize, what: &str, out: &Output, t: &Target) -> Dump {
    assert!(
        out.status.success(),
        "{what} {round} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        t.describe()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what} {round}: JSON does not parse: {e}"));
    crate::util::assert_schema(&v);
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{what} {round}: not a dump: {e}"))
}

#[track_caller]
fn functions(d: &Dump, name: &str) -> Vec<String> {
    let th = d
        .threads
        .iter()
        .find(|th| th.name == name)
        .unwrap_or_else(|| panic!("no thread {name}"));
    th.frames
        .iter()
        .filter_map(|f| f.function.as_deref().map(str::to_string))
        .collect()
}

/// Every expected thread is captured, unsignalled, complete, with its own function.
#[track_caller]
fn check_threads(d: &Dump, expected: Expected, what: &str) {
    for (name, _, own) in expected {
        let th = d
            .threads
            .iter()
            .find(|th| th.name == *name)
            .unwrap_or_else(|| panic!("{what}: no thread {name}"));
        let fns = functions(d, name);
        assert_eq!(th.capture, CaptureStatus::Ok, "{what}: {name}: {th:?}");
        assert!(!th.signalled, "{what}: {name} was signalled: {fns:?}");
        assert!(!th.truncated, "{what}: {name} truncated: {fns:?}");
        assert!(
            fns.iter().any(|f| f == own),
            "{what}: {name}: {own} is not on the stack: {fns:?}"
        );
    }
}

/// 200 `stackdump dump`: the host never exits, no thread of any dump is signalled.
#[track_caller]
fn survives_dumps(binary: &Path, expected: Expected, rounds: usize) {
    let mut t = spawn(binary, Preload::Yes, expected);
    let pid = t.pid.to_string();
    for round in 1..=rounds {
        let out = run(&["dump", &pid, "--format", "json", "--timeout", "20s"]);
        let d = parse(round, "dump", &out, &t);
        if let Some(status) = t.exited() {
            panic!("dump {round}: the host exited ({status})\n{}", t.describe());
        }
        let signalled: Vec<&str> = d
            .threads
            .iter()
            .filter(|th| th.signalled)
            .map(|th| th.name.as_str())
            .collect();
        assert!(
            signalled.is_empty() && d.capture.signalled == 0,
            "dump {round}: threads signalled: {signalled:?} ({} in capture)",
            d.capture.signalled
        );
        check_threads(&d, expected, &format!("dump {round}"));
    }
    t.assert_alive();
}

/// 20 `stackdump inspect`: no thread stopped with ptrace, every stack complete.
#[track_caller]
fn survives_inspects(binary: &Path, expected: Expected, rounds: usize) {
    let mut t = spawn(binary, Preload::No, expected);
    let pid = t.pid.to_string();
    for round in 1..=rounds {
        let out = run(&["inspect", &pid, "--format", "json"]);
        let d = parse(round, "inspect", &out, &t);
        if let Some(status) = t.exited() {
            panic!(
                "inspect {round}: the host exited ({status})\n{}",
                t.describe()
            );
        }
        let c = &d.capture;
        // Stopped with ptrace = captured - read without a stop (the text form's line).
        assert_eq!(
            (c.captured, c.without_signal),
            (c.threads, c.threads),
            "inspect {round}: threads stopped with ptrace: {}\n{:?}",
            c.captured.saturating_sub(c.without_signal),
            d.errors
        );
        check_threads(&d, expected, &format!("inspect {round}"));
    }
    t.assert_alive();
}

#[test]
fn eintr_host_with_frame_pointers_survives_200_dumps_unsignalled() {
    survives_dumps(&c_target_fp("eintr"), EINTR_HOST, 200);
}

#[test]
fn eintr_host_without_frame_pointers_survives_200_dumps_unsignalled() {
    survives_dumps(&c_target("eintr"), EINTR_HOST, 200);
}

#[test]
fn eintr_host_with_frame_pointers_is_inspected_20_times_without_a_stop() {
    survives_inspects(&c_target_fp("eintr"), EINTR_HOST, 20);
}

#[test]
fn eintr_host_without_frame_pointers_is_inspected_20_times_without_a_stop() {
    survives_inspects(&c_target("eintr"), EINTR_HOST, 20);
}

#[test]
fn alloca_vla_and_aligned_frames_are_captured_without_a_signal_or_a_stop() {
    for binary in [c_target("alloca_frames"), c_target_fp("alloca_frames")] {
        survives_dumps(&binary, ALLOCA_HOST, 20);
        survives_inspects(&binary, ALLOCA_HOST, 5);
    }
}

/// The whole stack of each thread of the alloca host below its system call wrapper.
const ALLOCA_TAILS: &[(&str, &[&str])] = &[
    (
        "vla-poll",
        &[
            "vla_poll_leaf",
            "plain_middle",
            "alloca_outer",
            "vla_poll_main",
            "start_thread",
            "clone3",
        ],
    ),
    (
        "alloca-sleep",
        &[
            "alloca_sleep_leaf",
            "plain_sleep_middle",
            "alloca_sleep_main",
            "start_thread",
            "clone3",
        ],
    ),
    (
        "aligned-epoll",
        &[
            "aligned_epoll_leaf",
            "aligned_epoll_main",
            "start_thread",
            "clone3",
        ],
    ),
];

/// Thread name → function names of its stack, from one inspect of `binary`.
fn stacks_of(binary: &Path, expected: Expected) -> BTreeMap<String, Vec<String>> {
    let t = spawn(binary, Preload::No, expected);
    let out = run(&["inspect", &t.pid.to_string(), "--format", "json"]);
    let d = parse(1, "inspect", &out, &t);
    d.threads
        .iter()
        .map(|th| (th.name.clone(), functions(&d, &th.name)))
        .collect()
}

#[test]
fn c_examples_give_the_same_stacks_with_and_without_frame_pointers() {
    let parked: Expected = &[];
    for (name, expected) in [
        ("eintr", EINTR_HOST),
        ("alloca_frames", ALLOCA_HOST),
        ("parked", parked),
    ] {
        let without = stacks_of(&c_target(name), expected);
        let with = stacks_of(&c_target_fp(name), expected);
        assert_eq!(without, with, "{name}: stacks differ with frame pointers");
        if name == "alloca_frames" {
            // Exactly these frames: no stale frame of an earlier call inserted, none skipped.
            for (thread, tail) in ALLOCA_TAILS {
                assert!(
                    with[*thread]
                        .ends_with(&tail.iter().map(|f| f.to_string()).collect::<Vec<_>>()),
                    "{thread}: {:?}",
                    with[*thread]
                );
            }
        }
        for (thread, _, own) in expected {
            assert!(
                with[*thread].iter().any(|f| f == own),
                "{name}/{thread}: {:?}",
                with[*thread]
            );
        }
    }
}
