//! A host stuck inside a library constructor during dlopen (it holds the dynamic loader's
//! lock forever) still gets a complete, symbolized dump: the dump path takes no loader lock
//! that dlopen holds while constructors run (backtrace's dl_iterate_phdr takes only the
//! short-lived dl_load_write_lock; dladdr/dlopen/dlsym are never called while dumping).

use crate::util::*;
use std::process::Command;

fn build_stuck_lib() -> std::path::PathBuf {
    let dir = target_dir().join("c-targets");
    create_public_dir(&dir);
    let out = dir.join("libstuck_ctor.so");
    let source = targets_dir().join("c/stuck_ctor_lib.c");
    compile_c(&out, &[&source], &["-O2", "-g", "-shared", "-fPIC"], &[]);
    out
}

#[test]
fn dump_completes_while_a_thread_is_stuck_in_a_dlopen_constructor() {
    let lib = build_stuck_lib();
    let mut cmd = Command::new(c_target("stuck_ctor"));
    cmd.arg(&lib);
    let mut t = Target::spawn(cmd, Preload::Yes);
    t.wait_ready(deadline());
    let loader = t.tid_of("loader");
    assert!(
        poll_until(deadline(), || t.kernel_view(loader).syscall_name()
            == Some("pause")),
        "the constructor never parked\n{}",
        t.describe()
    );
    send_signal(t.pid, "USR1");
    let path = wait_for_dump(&t.dump_dir(), t.pid, deadline());
    let d = read_dump(&path);
    let th = d
        .threads
        .iter()
        .find(|th| th.name == "loader")
        .expect("loader listed");
    let fns: Vec<&str> = th
        .frames
        .iter()
        .filter_map(|f| f.function.as_deref())
        .collect();
    for want in ["never_returns", "stuck_constructor", "loader_main"] {
        assert!(
            fns.contains(&want),
            "{want} missing from the loader's stack: {fns:?}"
        );
    }
    assert!(
        fns.iter().any(|f| f.contains("dlopen")),
        "the stack goes through dlopen: {fns:?}"
    );
    t.assert_alive();
}
