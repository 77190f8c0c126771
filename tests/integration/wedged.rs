//! A host wedged inside malloc (tests/targets/c/wedged_malloc.c replaces malloc; one thread blocks
//! forever inside it, holding its lock) still gets a complete, symbolized dump: nothing on the
//! dump path uses the host's allocator.

use crate::util::*;
use std::process::Command;

#[test]
fn dump_completes_while_a_thread_is_wedged_inside_malloc() {
    let mut t = Target::spawn(Command::new(c_target("wedged_malloc")), Preload::Yes);
    t.wait_ready(deadline());
    let wedged = t.tid_of("wedged");
    assert!(
        poll_until(deadline(), || t.kernel_view(wedged).syscall_name()
            == Some("read")),
        "the wedge never blocked\n{}",
        t.describe()
    );
    send_signal(t.pid, "USR1");
    let path = wait_for_dump(&t.dump_dir(), t.pid, deadline());
    let d = read_dump(&path);
    let th = d
        .threads
        .iter()
        .find(|th| th.name == "wedged")
        .expect("wedged thread listed");
    let fns: Vec<&str> = th
        .frames
        .iter()
        .filter_map(|f| f.function.as_deref())
        .collect();
    for want in [
        "wait_forever_holding_the_lock",
        "arena_alloc",
        "malloc",
        "wedged_main",
    ] {
        assert!(fns.contains(&want), "{want} missing from {fns:?}");
    }
    assert!(
        th.frames.iter().any(|f| f
            .file
            .as_deref()
            .is_some_and(|p| p.ends_with("wedged_malloc.c"))
            && f.line.is_some()),
        "file:line for the fixture's frames: {:?}",
        th.frames
    );
    t.assert_alive();
}
