//! Puts the git commit of the build into `stackdump --version`
//! (`STACKDUMP_GIT_COMMIT`: set it yourself when building outside a git checkout), and links the
//! GCC unwinder statically (`build-support/static_libgcc.rs`): no `libgcc_s.so.1` to load and
//! initialise at each start of the CLI, which is part of every `stackdump dump`.

use std::process::Command;

include!("../build-support/static_libgcc.rs");

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=../build-support/static_libgcc.rs");
    link_libgcc_statically();
    println!("cargo:rerun-if-env-changed=STACKDUMP_GIT_COMMIT");
    let commit = std::env::var("STACKDUMP_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown commit".into());
    // Rebuild when HEAD moves: a commit, a checkout or a reset writes these.
    for p in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=STACKDUMP_GIT_COMMIT={commit}");
}
