//! The recipes of docs/DEPLOY.md, checked where this machine allows: the systemd drop-in with
//! `systemd-analyze verify`, the container recipe (the library mounted read-only from the
//! host, a pid namespace, a private /tmp) emulated with `unshare`.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn deploy_md() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/DEPLOY.md"))
        .expect("docs/DEPLOY.md")
}

/// The first fenced block of `lang` after `heading` in DEPLOY.md.
fn block(heading: &str, lang: &str) -> String {
    let doc = deploy_md();
    let from = doc
        .find(heading)
        .unwrap_or_else(|| panic!("DEPLOY.md has no {heading:?}"));
    let fence = format!("```{lang}\n");
    let start = doc[from..]
        .find(&fence)
        .map(|i| from + i + fence.len())
        .unwrap_or_else(|| panic!("no {lang} block under {heading:?}"));
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_string()
}

#[test]
fn systemd_drop_in_of_deploy_md_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the drop-in is not verified here");
        return;
    };
    assert!(out.status.success());
    let dir = Scratch::new("systemd");
    let unit = dir.join("stackdump-deploy-test.service");
    std::fs::write(
        &unit,
        "[Unit]\nDescription=stackdump deploy test\n\n[Service]\nExecStart=/bin/sleep 1000\nProtectSystem=strict\nPrivateTmp=yes\n",
    )
    .unwrap();
    let drop_in = block("## A systemd service", "ini");
    assert!(drop_in.contains("LD_PRELOAD=/usr/lib/stackdump/libstackdump.so"));
    let d = dir.join("stackdump-deploy-test.service.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("override.conf"), &drop_in).unwrap();
    let verify = |what: &str| {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .current_dir(&dir.path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("{what}: {}\n{stderr}", out.status);
        (out.status.success(), stderr)
    };
    let (ok, stderr) = verify("the drop-in of DEPLOY.md");
    assert!(
        ok && !stderr.contains("override.conf"),
        "systemd-analyze verify rejects the drop-in:\n{stderr}"
    );
    // The check can fail: a misspelt directive in the drop-in is reported.
    std::fs::write(
        d.join("override.conf"),
        format!("{drop_in}ReadWritePath=/x\n"),
    )
    .unwrap();
    let (_, stderr) = verify("a broken drop-in");
    assert!(
        stderr.contains("ReadWritePath"),
        "systemd-analyze does not read the drop-in:\n{stderr}"
    );
}

/// The container recipe: the library mounted read-only from the host at another path, the
/// target pid 1 of its own pid namespace with its own /tmp; `stackdump dump` from the host,
/// by the host's pid, reads the dump through /proc/PID/root.
#[test]
fn container_recipe_with_a_mounted_library_works_from_the_host() {
    if !is_root() {
        eprintln!("not root: the unshare emulation of a container is skipped");
        return;
    }
    let dl = Deadline::new(60);
    let lib_dir = real_lib().parent().unwrap().canonicalize().unwrap();
    let script = format!(
        "set -e; mount -t tmpfs none /mnt; mkdir /mnt/stackdump; \
         mount --bind '{}' /mnt/stackdump; mount -o remount,bind,ro /mnt/stackdump; \
         mount -t tmpfs none /tmp; \
         exec env LD_PRELOAD=/mnt/stackdump/libstackdump.so STACKDUMP_DIR=/tmp sleep 1000",
        lib_dir.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
        &script,
    ]);
    cmd.env_remove("LD_PRELOAD");
    let unshare = Proc::spawn(cmd);
    let mut target = 0;
    wait_until(&dl, "the namespaced target is started", || {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.pid))
            .unwrap_or_default();
        target = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        target > 0 && maps_contain(target, "/mnt/stackdump/libstackdump.so")
    });
    wait_ready(&dl, target, libc::SIGUSR1);
    assert_eq!(
        status_field(target, "NSpid")
            .unwrap()
            .split_whitespace()
            .last(),
        Some("1"),
        "the target is not pid 1 of its namespace"
    );
    let out = stackdump(&dl, &["dump", "--json", "--pid", &target.to_string()]);
    out.assert_code(0);
    let v = json(&out);
    assert_eq!(v["pid"], 1, "the pid as the target sees itself");
    assert_eq!(v["comm"], "sleep");
    assert!(v["host"]["boot_id"].as_str().is_some_and(|b| !b.is_empty()));
    // The dump is in the target's /tmp, not the host's.
    let host_tmp: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stackdump-1-"))
        .collect();
    assert!(
        host_tmp.is_empty(),
        "dumps of pid 1 in the host's /tmp: {host_tmp:?}"
    );
}
