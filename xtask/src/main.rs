//! `cargo xtask dist`: build the release artefacts of stackdump into `target/dist/`.
//!
//! - `stackdump-<v>-x86_64-unknown-linux-gnu.tar.gz`: `stackdump-<v>/` with `bin/stackdump`,
//!   `lib/stackdump/libstackdump.so`, man pages, bash/zsh/fish completions, docs, licences.
//! - `stackdump-<v>-x86_64-unknown-linux-gnu-debug.tar.gz`: the separate debug files, laid out
//!   as `usr/lib/debug/.build-id/xx/yyyy.debug` (unpack with `-C /`).
//! - `stackdump_<v>_amd64.deb`: `/usr/bin/stackdump`, `/usr/lib/stackdump/libstackdump.so`, man
//!   pages, completions, `/usr/share/doc/stackdump/copyright`.
//! - `stackdump-dbg_<v>_amd64.deb`: the debug files under `/usr/lib/debug/.build-id/`, where
//!   gdb and stackdump's own symbolizer find them by build id.
//!
//! The binaries are stripped (the debug info goes to the debug artefacts, linked by build id
//! and `.gnu_debuglink`). They are linked against an old glibc ([`GLIBC_FLOOR`]) with
//! cargo-zigbuild when it and zig are installed (`pip install ziglang`, `cargo install
//! cargo-zigbuild`); without them, with the host's toolchain (and the floor is then the host's:
//! say `--no-zig` to ask for that knowingly). Needs `tar`, `gzip`, `objcopy`, `strip`,
//! `readelf` and `dpkg-deb`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The Rust target of the artefacts.
const TARGET: &str = "x86_64-unknown-linux-gnu";
const GLIBC_FLOOR: &str = "2.25";

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("dist") => dist(&args[1..]),
        _ => Err(
            "usage: cargo xtask dist [--no-zig]\n  builds target/dist/stackdump-<version>-x86_64-unknown-linux-gnu.tar.gz and stackdump_<version>_amd64.deb (and their debug artefacts)"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Run a command; fail with its name and status.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e} (is it installed?)"))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed: {status}"));
    }
    Ok(())
}

/// Run a command and return its stdout.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e} (is it installed?)"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{cmd:?} printed non-UTF-8"))
}

/// The workspace version (`[workspace.package] version`).
fn version() -> Result<String> {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).map_err(|e| e.to_string())?;
    let mut in_section = false;
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
        } else if in_section {
            if let Some(v) = line.strip_prefix("version") {
                let v = v.trim().trim_start_matches('=').trim().trim_matches('"');
                return Ok(v.to_string());
            }
        }
    }
    Err("no version in [workspace.package] of Cargo.toml".into())
}

fn zig_available() -> bool {
    let ok = |cmd: &mut Command| {
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    ok(Command::new("cargo-zigbuild").arg("--version"))
        && (ok(Command::new("zig").arg("version"))
            || ok(Command::new("python3").args(["-m", "ziglang", "version"])))
}

fn mkdirs(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = to.parent() {
        mkdirs(dir)?;
    }
    std::fs::copy(from, to)
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", to.display()))
}

fn write(to: &Path, text: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = to.parent() {
        mkdirs(dir)?;
    }
    std::fs::write(to, text).map_err(|e| format!("writing {}: {e}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", to.display()))
}

/// The GNU build id of an ELF file, as hex (`readelf -n`).
fn build_id(elf: &Path) -> Result<String> {
    let notes = output(Command::new("readelf").arg("-n").arg(elf))?;
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID:"))
        .map(|id| id.trim().to_string())
        .filter(|id| id.len() > 2)
        .ok_or_else(|| format!("{} has no build id", elf.display()))
}

/// Split `elf`'s debug info into `<debug_dir>/.build-id/xx/yyyy.debug` (compressed), strip
/// `elf` and link it to that file. Returns the debug file's path relative to `debug_dir`.
fn split_debug(elf: &Path, debug_root: &Path) -> Result<PathBuf> {
    let id = build_id(elf)?;
    let rel = PathBuf::from(format!(".build-id/{}/{}.debug", &id[..2], &id[2..]));
    let debug = debug_root.join(&rel);
    mkdirs(debug.parent().unwrap())?;
    run(Command::new("objcopy")
        .args(["--only-keep-debug", "--compress-debug-sections=zlib"])
        .arg(elf)
        .arg(&debug))?;
    run(Command::new("strip")
        .args(["--strip-all", "--remove-section=.comment"])
        .arg(elf))?;
    // In the debug file's directory, so objcopy finds it to checksum.
    run(Command::new("objcopy")
        .arg(format!(
            "--add-gnu-debuglink={}",
            debug.file_name().unwrap().to_string_lossy()
        ))
        .arg(std::path::absolute(elf).map_err(|e| e.to_string())?)
        .current_dir(debug.parent().unwrap()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&debug, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| e.to_string())?;
    Ok(rel)
}

/// What goes in both packages, from the built binaries.
struct Staged {
    bin: PathBuf,
    lib: PathBuf,
    man: Vec<PathBuf>,
    bash: Vec<u8>,
    zsh: Vec<u8>,
    fish: Vec<u8>,
    /// Holds `.build-id/…`.
    debug_root: PathBuf,
}

fn dist(args: &[String]) -> Result<()> {
    let mut use_zig = true;
    for a in args {
        match a.as_str() {
            "--no-zig" => use_zig = false,
            other => return Err(format!("unknown option {other:?} (dist takes --no-zig)")),
        }
    }
    let version = version()?;
    let root = root();
    let target = target_dir();
    let dist = target.join("dist");
    let work = dist.join("work");
    let _ = std::fs::remove_dir_all(&work);
    mkdirs(&work)?;

    let commit = output(
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(&root),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "unknown commit".into());
    let epoch = output(
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(&root),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "0".into());

    // 1. Build.
    if use_zig && !zig_available() {
        return Err(format!(
            "cargo-zigbuild and zig are needed to link against glibc {GLIBC_FLOOR} (`pip install ziglang` and `cargo install --locked cargo-zigbuild`); `cargo xtask dist --no-zig` links against this host's glibc instead"
        ));
    }
    let mut build = Command::new(env!("CARGO"));
    let triple = if use_zig {
        build.arg("zigbuild");
        format!("{TARGET}.{GLIBC_FLOOR}")
    } else {
        build.arg("build");
        TARGET.to_string()
    };
    // A build id in both (zig's linker writes none unless asked): the debug files are found by it.
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    rustflags.push_str(" -C link-arg=-Wl,--build-id=sha1");
    build
        .args([
            "--release",
            "--locked",
            "-p",
            "stackdump-cli",
            "-p",
            "stackdump-dumper",
            "--target",
        ])
        .arg(&triple)
        .env("RUSTFLAGS", rustflags.trim())
        .env("STACKDUMP_GIT_COMMIT", &commit)
        .current_dir(&root);
    eprintln!("xtask: building for {triple} (commit {commit})");
    run(&mut build)?;
    let out = target.join(TARGET).join("release");

    // 2. Strip, keeping the debug info apart.
    let debug_root = work.join("debug");
    let bin = work.join("stackdump");
    let lib = work.join("libstackdump.so");
    copy(&out.join("stackdump"), &bin, 0o755)?;
    copy(&out.join("libstackdump.so"), &lib, 0o644)?;
    split_debug(&bin, &debug_root)?;
    split_debug(&lib, &debug_root)?;

    // 3. Man pages and completions, from the binary itself.
    let man_dir = work.join("man");
    run(Command::new(&bin).arg("man-pages").arg(&man_dir))?;
    let mut man: Vec<PathBuf> = std::fs::read_dir(&man_dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new("1")))
        .collect();
    man.sort();
    if man.is_empty() {
        return Err("no man pages were generated".into());
    }
    let completion = |shell: &str| -> Result<Vec<u8>> {
        let out = Command::new(&bin)
            .args(["completions", shell])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() || out.stdout.is_empty() {
            return Err(format!("stackdump completions {shell} failed"));
        }
        Ok(out.stdout)
    };
    let (bash, zsh, fish) = (completion("bash")?, completion("zsh")?, completion("fish")?);
    let staged = Staged {
        bin,
        lib,
        man,
        bash,
        zsh,
        fish,
        debug_root,
    };

    let tarballs = tarballs(&root, &dist, &work, &version, &epoch, &staged)?;
    let debs = debs(&root, &dist, &work, &version, &epoch, &staged, use_zig)?;
    std::fs::remove_dir_all(&work).map_err(|e| e.to_string())?;
    for p in tarballs.iter().chain(&debs) {
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        println!("{}  ({} KiB)", p.display(), size / 1024);
    }
    Ok(())
}

/// The documentation shipped in both packages: (source in the repo, name installed).
const DOCS: &[(&str, &str)] = &[
    ("README.md", "README.md"),
    ("docs/CLI.md", "CLI.md"),
    ("docs/FORMAT.md", "FORMAT.md"),
    ("docs/DEPLOY.md", "DEPLOY.md"),
    ("docs/stackdump-1.schema.json", "stackdump-1.schema.json"),
];

/// A reproducible tar.gz of `dir`'s entry `top` (sorted, root-owned, fixed mtime).
fn tar_gz(dir: &Path, top: &str, out: &Path, epoch: &str) -> Result<()> {
    let _ = std::fs::remove_file(out);
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
        ])
        .arg(format!("--mtime=@{epoch}"))
        .args(["--use-compress-program=gzip -9n", "-cf"])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(top))
}

fn tarballs(
    root: &Path,
    dist: &Path,
    work: &Path,
    version: &str,
    epoch: &str,
    s: &Staged,
) -> Result<Vec<PathBuf>> {
    let name = format!("stackdump-{version}");
    let tree = work.join("tar");
    let top = tree.join(&name);
    copy(&s.bin, &top.join("bin/stackdump"), 0o755)?;
    copy(&s.lib, &top.join("lib/stackdump/libstackdump.so"), 0o644)?;
    for m in &s.man {
        copy(
            m,
            &top.join("share/man/man1").join(m.file_name().unwrap()),
            0o644,
        )?;
    }
    write(
        &top.join("share/bash-completion/completions/stackdump"),
        &s.bash,
        0o644,
    )?;
    write(
        &top.join("share/zsh/site-functions/_stackdump"),
        &s.zsh,
        0o644,
    )?;
    write(
        &top.join("share/fish/vendor_completions.d/stackdump.fish"),
        &s.fish,
        0o644,
    )?;
    for lic in ["LICENSE-MIT", "LICENSE-APACHE", "README.md"] {
        copy(&root.join(lic), &top.join(lic), 0o644)?;
    }
    for (src, dst) in DOCS {
        copy(
            &root.join(src),
            &top.join("share/doc/stackdump").join(dst),
            0o644,
        )?;
    }
    let tgz = dist.join(format!("{name}-{TARGET}.tar.gz"));
    tar_gz(&tree, &name, &tgz, epoch)?;

    // The debug files, to unpack at / (or any root stackdump inspects).
    let dtree = work.join("tar-debug");
    copy_tree(&s.debug_root, &dtree.join("usr/lib/debug"))?;
    let dtgz = dist.join(format!("{name}-{TARGET}-debug.tar.gz"));
    tar_gz(&dtree, "usr", &dtgz, epoch)?;
    Ok(vec![tgz, dtgz])
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    mkdirs(to)?;
    for e in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let dst = to.join(e.file_name());
        if e.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else {
            copy(&e.path(), &dst, 0o644)?;
        }
    }
    Ok(())
}

fn gzip_n(file: &Path) -> Result<()> {
    run(Command::new("gzip").args(["-9", "-n", "-f"]).arg(file))
}

/// Directories 0755 (dpkg-deb refuses group-writable ones under some umasks).
fn fix_dir_modes(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    for e in std::fs::read_dir(p).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        if e.file_type().map_err(|e| e.to_string())?.is_dir() {
            fix_dir_modes(&e.path())?;
        }
    }
    Ok(())
}

fn du_kib(p: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.filter_map(|e| e.ok())
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                _ => e.metadata().map(|m| m.len().div_ceil(1024)).unwrap_or(0),
            })
            .sum()
    }
    walk(p)
}

fn build_deb(tree: &Path, out: &Path, epoch: &str) -> Result<()> {
    fix_dir_modes(tree)?;
    let _ = std::fs::remove_file(out);
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(tree)
        .arg(out)
        .env("SOURCE_DATE_EPOCH", epoch)
        .stdout(std::process::Stdio::null()))
}

const MAINTAINER: &str = "stackdump maintainers <stackdump@localhost>";

fn copyright(root: &Path) -> Result<String> {
    let mit = std::fs::read_to_string(root.join("LICENSE-MIT")).map_err(|e| e.to_string())?;
    let mit: String = mit
        .lines()
        .map(|l| {
            if l.trim().is_empty() {
                " .\n".to_string()
            } else {
                format!(" {l}\n")
            }
        })
        .collect();
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: stackdump\n\n\
         Files: *\n\
         Copyright: 2026 The stackdump authors\n\
         License: MIT or Apache-2.0\n\n\
         License: MIT\n{mit}\n\
         License: Apache-2.0\n \
         On Debian systems, the full text of the Apache License, Version 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n"
    ))
}

#[allow(clippy::too_many_arguments)]
fn debs(
    root: &Path,
    dist: &Path,
    work: &Path,
    version: &str,
    epoch: &str,
    s: &Staged,
    zig: bool,
) -> Result<Vec<PathBuf>> {
    let tree = work.join("deb");
    copy(&s.bin, &tree.join("usr/bin/stackdump"), 0o755)?;
    copy(
        &s.lib,
        &tree.join("usr/lib/stackdump/libstackdump.so"),
        0o644,
    )?;
    for m in &s.man {
        let dst = tree.join("usr/share/man/man1").join(m.file_name().unwrap());
        copy(m, &dst, 0o644)?;
        gzip_n(&dst)?;
    }
    write(
        &tree.join("usr/share/bash-completion/completions/stackdump"),
        &s.bash,
        0o644,
    )?;
    write(
        &tree.join("usr/share/zsh/vendor-completions/_stackdump"),
        &s.zsh,
        0o644,
    )?;
    write(
        &tree.join("usr/share/fish/vendor_completions.d/stackdump.fish"),
        &s.fish,
        0o644,
    )?;
    let doc = tree.join("usr/share/doc/stackdump");
    write(&doc.join("copyright"), copyright(root)?.as_bytes(), 0o644)?;
    for (src, dst) in DOCS {
        copy(&root.join(src), &doc.join(dst), 0o644)?;
    }
    // glibc: the floor the binaries were linked against, else this host's.
    let libc_floor = if zig {
        GLIBC_FLOOR.to_string()
    } else {
        host_glibc().unwrap_or_else(|| GLIBC_FLOOR.to_string())
    };
    let control = format!(
        "Package: stackdump\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {}\n\
         Depends: libc6 (>= {libc_floor})\n\
         Section: utils\n\
         Priority: optional\n\
         Description: what every thread of a live process is doing\n \
         stackdump prints every thread's native (and Python) stack, state, kernel wait\n \
         channel and system call of a live Linux process, without harming it: preload\n \
         /usr/lib/stackdump/libstackdump.so and `stackdump dump PID`, or `stackdump\n \
         inspect PID` from outside with ptrace.\n",
        du_kib(&tree)
    );
    write(&tree.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    let deb = dist.join(format!("stackdump_{version}_amd64.deb"));
    build_deb(&tree, &deb, epoch)?;

    let dtree = work.join("deb-dbg");
    copy_tree(&s.debug_root, &dtree.join("usr/lib/debug"))?;
    write(
        &dtree.join("usr/share/doc/stackdump-dbg/copyright"),
        copyright(root)?.as_bytes(),
        0o644,
    )?;
    let dcontrol = format!(
        "Package: stackdump-dbg\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {}\n\
         Depends: stackdump (= {version})\n\
         Section: debug\n\
         Priority: optional\n\
         Description: debug symbols for stackdump\n \
         The debug info of /usr/bin/stackdump and libstackdump.so, by build id, so that\n \
         stacks through the library (and the CLI's own crashes) are symbolized.\n",
        du_kib(&dtree)
    );
    write(&dtree.join("DEBIAN/control"), dcontrol.as_bytes(), 0o644)?;
    let ddeb = dist.join(format!("stackdump-dbg_{version}_amd64.deb"));
    build_deb(&dtree, &ddeb, epoch)?;
    Ok(vec![deb, ddeb])
}

/// This host's glibc version (`ldd --version`'s first line ends with it).
fn host_glibc() -> Option<String> {
    let out = output(Command::new("ldd").arg("--version")).ok()?;
    let first = out.lines().next()?;
    first.split_whitespace().last().map(str::to_string)
}
