//! Stacks out of the ordinary (tests/targets/c/odd_stacks.c): a thread inside its own signal
//! handler, one in a handler on a sigaltstack, one on a 16 KiB stack, one 10,000 calls deep.
//! Signal frames are unwound through the saved ucontext (the code the handler interrupted is
//! shown below `<signal handler called>`); the deep one is cut and flagged, never a crash.
//! Both capture paths: copied without a signal (default) and with the capture signal.

use crate::util::*;
use stackdump_core::model::{CaptureStatus, Dump, Thread};
use std::process::Command;

fn functions(t: &Thread) -> Vec<&str> {
    t.frames
        .iter()
        .filter(|f| !f.inlined)
        .map(|f| f.function.as_deref().unwrap_or("??"))
        .collect()
}

/// `want` appears in `have` in this order (other frames may sit between).
fn in_order(have: &[&str], want: &[&str]) -> bool {
    let mut it = have.iter();
    want.iter().all(|w| it.any(|h| h == w))
}

#[track_caller]
fn thread<'a>(d: &'a Dump, name: &str) -> &'a Thread {
    d.threads
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no thread {name}"))
}

#[track_caller]
fn check(capture: Option<&str>) {
    let mut cmd = Command::new(c_target("odd_stacks"));
    if let Some(c) = capture {
        cmd.env("STACKDUMP_CAPTURE", c);
    }
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline());
    let parked = |t: &Target| {
        ["in-handler", "altstack", "small-stack", "deep"]
            .iter()
            .all(|n| t.kernel_view(t.tid_of(n)).syscall_name() == Some("read"))
    };
    assert!(poll_until(deadline(), || parked(&t)), "{}", t.describe());
    send_signal(t.pid, "USR1");
    let path = wait_for_dump(&t.dump_dir(), t.pid, deadline());
    let d = read_dump(&path);
    let text = std::fs::read_to_string(path.with_extension("txt")).unwrap_or_default();
    let ctx = || format!("mode {capture:?}\n{text}");

    let expect = [
        (
            "in-handler",
            &[
                "park",
                "handler_body",
                "on_usr2",
                "<signal handler called>",
                "before_signal",
                "in_handler_main",
                "start_thread",
            ][..],
        ),
        (
            "altstack",
            &[
                "park",
                "alt_body",
                "on_alt",
                "<signal handler called>",
                "altstack_main",
                "start_thread",
            ][..],
        ),
        ("small-stack", &["park", "small_main", "start_thread"][..]),
    ];
    for (name, want) in expect {
        let th = thread(&d, name);
        assert_eq!(th.capture, CaptureStatus::Ok, "{name}\n{}", ctx());
        let fns = functions(th);
        assert!(
            in_order(&fns, want),
            "{name}: {fns:?} should contain {want:?} in order\n{}",
            ctx()
        );
        assert!(!th.truncated, "{name}\n{}", ctx());
    }
    let deep = thread(&d, "deep");
    assert_eq!(deep.capture, CaptureStatus::Ok, "{}", ctx());
    let fns = functions(deep);
    assert!(
        deep.truncated,
        "10,000 frames cannot fit: must be flagged truncated\n{}",
        ctx()
    );
    assert!(
        fns.iter().filter(|f| **f == "recurse").count() >= 100,
        "{fns:?}"
    );
    assert!(
        deep.frames.len() <= 600,
        "frame limit: {}",
        deep.frames.len()
    );
    t.assert_alive();
    assert!(
        poll_until(deadline(), || parked(&t)),
        "threads went back to read\n{}",
        t.describe()
    );
}

#[test]
fn odd_stacks_copied_without_a_signal() {
    check(None);
}

#[test]
fn odd_stacks_with_the_capture_signal() {
    check(Some("signal"));
}
