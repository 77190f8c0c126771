//! A host stuck inside a library constructor during dlopen (it holds the dynamic loader's
//! lock forever) still gets a complete, symbolized dump: the dump path takes no loader lock
//! that dlopen holds while constructors run (backtrace's dl_iterate_phdr takes only the
//! short-lived dl_load_write_lock; dladdr/dlopen/dlsym are never called while dumping).

use crate::util::*;
use std::process::Command;

fn build_stuck_lib() -> std::path::PathBuf {
    let out = target_dir().join("c-examples").join("libstuck_ctor.so");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let tmp = out.with_extension(format!("{}.tmp", std::process::id()));
    let status = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args(["-O2", "-g", "-shared", "-fPIC", "-o"])
        .arg(&tmp)
        .arg(repo_root().join("tests/targets/c/stuck_ctor_lib.c"))
        .status()
        .expect("run cc");
    assert!(status.success(), "building the stuck library failed");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

#[test]
fn dump_completes_while_a_thread_is_stuck_in_a_dlopen_constructor() {
    let lib = build_stuck_lib();
    let mut cmd = Command::new(build_c_example("stuck_ctor"));
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
