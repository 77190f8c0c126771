//! The release artefacts of `cargo xtask dist`, installed the way users install them: the .deb
//! unpacked into a scratch root (`dpkg -x`), the tarball unpacked anywhere; then the installed
//! CLI, with no STACKDUMP_LIB, starts a target with the installed library and dumps it.
//!
//! They need the artefacts, which take a release build of their own (a few minutes): they are
//! `#[ignore]`d, and `.ci/run` runs `cargo xtask dist` and then them with `--ignored`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The oldest glibc the artefacts run on, as docs/DEPLOY.md states it.
const GLIBC_FLOOR: (u32, u32) = (2, 25);

fn dist() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dist");
    assert!(
        dir.is_dir(),
        "{} does not exist: run `cargo xtask dist` first",
        dir.display()
    );
    dir
}

fn artefact(name: &str) -> PathBuf {
    let p = dist().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo xtask dist`",
        p.display()
    );
    p
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Start `sleep` with the installed CLI's `run` (the library found from the CLI's own place),
/// dump it with the installed CLI, and check the dump.
fn installed_cli_dumps_a_target(cli: &Path, lib: &Path, scratch: &Scratch) {
    let dl = Deadline::new(60);
    let dumps = scratch.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let mut cmd = Command::new(cli);
    cmd.args([
        "run",
        "--dir",
        dumps.to_str().unwrap(),
        "--",
        "sleep",
        "1000",
    ]);
    cmd.env_remove("STACKDUMP_LIB").env_remove("LD_PRELOAD");
    let target = Proc::spawn(cmd);
    wait_ready(&dl, target.pid, libc::SIGUSR1);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", target.pid)).unwrap();
    let lib = lib.canonicalize().unwrap();
    assert!(
        maps.contains(lib.to_str().unwrap()),
        "the target does not map the installed {}",
        lib.display()
    );

    let mut cmd = Command::new(cli);
    cmd.args(["dump", "--json", "-p", &target.pid.to_string()]);
    let out = run(&dl, cmd);
    out.assert_code(0);
    let v = json(&out);
    assert_eq!(v["pid"], target.pid);
    assert_eq!(v["comm"], "sleep");
    assert!(
        v["threads"].as_array().is_some_and(|t| !t.is_empty()),
        "{}",
        out.stdout
    );
    // The text dump too, with the target's stack symbolized (libc from the system).
    let mut cmd = Command::new(cli);
    cmd.args(["dump", &target.pid.to_string()]);
    run(&dl, cmd)
        .assert_code(0)
        .stdout_has("\"sleep\" tid")
        .stdout_has("libc.so.6");
}

fn assert_stripped(elf: &Path) {
    let sections = ok(Command::new("readelf").arg("-S").arg(elf));
    assert!(
        !sections.contains(".debug_info") && !sections.contains(".symtab"),
        "{} is not stripped:\n{sections}",
        elf.display()
    );
    assert!(
        sections.contains(".gnu_debuglink"),
        "{} does not link to its debug file",
        elf.display()
    );
}

fn build_id(elf: &Path) -> String {
    let notes = ok(Command::new("readelf").arg("-n").arg(elf));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("{} has no build id", elf.display()))
}

#[test]
#[ignore = "needs `cargo xtask dist` (a release build of its own); .ci/run runs it"]
fn deb_installs_into_a_scratch_root_and_its_cli_dumps_a_target() {
    let deb = artefact(&format!("stackdump_{VERSION}_amd64.deb"));
    let root = Scratch::new("deb-root");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root.path));
    let cli = root.join("usr/bin/stackdump");
    let lib = root.join("usr/lib/stackdump/libstackdump.so");
    for f in [
        "usr/share/doc/stackdump/copyright",
        "usr/share/man/man1/stackdump.1.gz",
        "usr/share/man/man1/stackdump-dump.1.gz",
        "usr/share/man/man1/stackdump-inspect.1.gz",
        "usr/share/bash-completion/completions/stackdump",
        "usr/share/zsh/vendor-completions/_stackdump",
        "usr/share/fish/vendor_completions.d/stackdump.fish",
    ] {
        assert!(root.join(f).is_file(), "the .deb has no /{f}");
    }
    let control = ok(Command::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(control.contains("Package: stackdump\n"), "{control}");
    assert!(
        control.contains(&format!(
            "Depends: libc6 (>= {}.{})",
            GLIBC_FLOOR.0, GLIBC_FLOOR.1
        )),
        "{control}"
    );
    assert_stripped(&cli);
    assert_stripped(&lib);
    let version = ok(Command::new(&cli).arg("--version"));
    assert!(
        version.starts_with(&format!("stackdump {VERSION} (")),
        "{version}"
    );
    installed_cli_dumps_a_target(&cli, &lib, &root);

    // The -dbg package has the debug files, by build id, where the symbolizer looks.
    let dbg = artefact(&format!("stackdump-dbg_{VERSION}_amd64.deb"));
    ok(Command::new("dpkg-deb").arg("-x").arg(&dbg).arg(&root.path));
    for elf in [&cli, &lib] {
        let id = build_id(elf);
        let debug = root.join(&format!(
            "usr/lib/debug/.build-id/{}/{}.debug",
            &id[..2],
            &id[2..]
        ));
        let sections = ok(Command::new("readelf").arg("-S").arg(&debug));
        assert!(
            sections.contains(".debug_info") && sections.contains(".symtab"),
            "{} has no debug info",
            debug.display()
        );
    }
}

#[test]
#[ignore = "needs `cargo xtask dist` (a release build of its own); .ci/run runs it"]
fn tarball_unpacks_anywhere_and_its_cli_dumps_a_target() {
    let tgz = artefact(&format!(
        "stackdump-{VERSION}-x86_64-unknown-linux-gnu.tar.gz"
    ));
    let dir = Scratch::new("tarball");
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&dir.path));
    let top = dir.join(&format!("stackdump-{VERSION}"));
    for f in [
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "README.md",
        "share/man/man1/stackdump.1",
        "share/man/man1/stackdump-run.1",
        "share/bash-completion/completions/stackdump",
        "share/zsh/site-functions/_stackdump",
        "share/fish/vendor_completions.d/stackdump.fish",
    ] {
        assert!(top.join(f).is_file(), "the tarball has no {f}");
    }
    let cli = top.join("bin/stackdump");
    let lib = top.join("lib/stackdump/libstackdump.so");
    installed_cli_dumps_a_target(&cli, &lib, &dir);
}

/// The highest `GLIBC_x.y` version an ELF file needs (`objdump -T`).
fn newest_glibc(elf: &Path) -> (u32, u32) {
    let syms = ok(Command::new("objdump").arg("-T").arg(elf));
    let mut newest = (0, 0);
    for word in syms.split(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        let Some(v) = word.strip_prefix("GLIBC_") else {
            continue;
        };
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let ver = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        newest = newest.max(ver);
    }
    assert!(
        newest > (2, 0),
        "no GLIBC symbol versions in {}",
        elf.display()
    );
    newest
}

#[test]
#[ignore = "needs `cargo xtask dist` (a release build of its own); .ci/run runs it"]
fn artefacts_need_no_glibc_newer_than_the_stated_floor() {
    let tgz = artefact(&format!(
        "stackdump-{VERSION}-x86_64-unknown-linux-gnu.tar.gz"
    ));
    let dir = Scratch::new("glibc-floor");
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&dir.path));
    let top = dir.join(&format!("stackdump-{VERSION}"));
    for elf in ["bin/stackdump", "lib/stackdump/libstackdump.so"] {
        let newest = newest_glibc(&top.join(elf));
        assert!(
            newest <= GLIBC_FLOOR,
            "{elf} needs GLIBC_{}.{}, newer than the floor {}.{}",
            newest.0,
            newest.1,
            GLIBC_FLOOR.0,
            GLIBC_FLOOR.1
        );
    }
    // The floor the test holds the artefacts to is the one the docs state.
    let deploy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/DEPLOY.md"))
            .unwrap();
    let stated = format!("glibc {}.{}", GLIBC_FLOOR.0, GLIBC_FLOOR.1);
    assert!(
        deploy.contains(&stated),
        "docs/DEPLOY.md does not say {stated:?}"
    );
}

/// The tarball in a debootstrapped Debian bullseye root (glibc 2.31, older than the glibc that
/// builds it): a process started there with the library preloaded by the installed CLI, and
/// the CLI there dumping it. `.ci/run` makes the root and names it in STACKDUMP_BULLSEYE_ROOT.
#[test]
#[ignore = "needs `cargo xtask dist` and a Debian bullseye root (STACKDUMP_BULLSEYE_ROOT); .ci/run makes both"]
fn artefacts_run_in_a_debian_bullseye_root() {
    assert!(is_root(), "chroot needs root");
    let root = PathBuf::from(std::env::var_os("STACKDUMP_BULLSEYE_ROOT").expect(
        "STACKDUMP_BULLSEYE_ROOT: a root made by `debootstrap --variant=minbase bullseye DIR`",
    ));
    assert!(
        root.join("lib/x86_64-linux-gnu/libc-2.31.so").is_file(),
        "{} is not a Debian bullseye root (no glibc 2.31)",
        root.display()
    );
    let tgz = artefact(&format!(
        "stackdump-{VERSION}-x86_64-unknown-linux-gnu.tar.gz"
    ));
    let opt = root.join("opt");
    let installed = opt.join(format!("stackdump-{VERSION}"));
    let _ = std::fs::remove_dir_all(&installed);
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&opt));
    let cli_inside = format!("/opt/stackdump-{VERSION}/bin/stackdump");
    // In a mount namespace of its own: /proc bound into the root for the time of the command.
    let in_root = |args: &[&str]| {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--fork", "--kill-child", "sh", "-c"]);
        cmd.arg(r#"r="$1"; shift; mount --bind /proc "$r/proc" && exec chroot "$r" "$@""#);
        cmd.arg("sh").arg(&root).args(args);
        cmd.env_remove("LD_PRELOAD").env_remove("STACKDUMP_LIB");
        cmd
    };
    let dl = Deadline::new(60);
    let unshare = Proc::spawn(in_root(&[
        &cli_inside,
        "run",
        "--dir",
        "/tmp",
        "--",
        "/bin/sleep",
        "1000",
    ]));
    let mut target = 0;
    wait_until(&dl, "the target in the bullseye root is started", || {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.pid))
            .unwrap_or_default();
        target = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        target > 0 && maps_contain(target, "libstackdump.so")
    });
    wait_ready(&dl, target, libc::SIGUSR1);
    let maps = std::fs::read_to_string(format!("/proc/{target}/maps")).unwrap();
    assert!(
        maps.contains("libc-2.31.so"),
        "the target does not run on bullseye's glibc 2.31"
    );
    let out = run(
        &dl,
        in_root(&[&cli_inside, "dump", "--json", "-p", &target.to_string()]),
    );
    out.assert_code(0);
    let v = json(&out);
    assert_eq!(v["pid"], target);
    assert_eq!(v["comm"], "sleep");
    let out = run(&dl, in_root(&[&cli_inside, "inspect", &target.to_string()]));
    out.assert_code(0).stdout_has("\"sleep\" tid");
    let _ = std::fs::remove_dir_all(&installed);
}
