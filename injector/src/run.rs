//! `stackdump run -- CMD ARGS...`: exec CMD with libstackdump.so preloaded.

use crate::cli::RunArgs;
use crate::exit::{ExecError, UsageError};
use anyhow::{bail, Context};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

const LIB: &str = "libstackdump.so";

/// Where the packages install the library (the .deb; the tarball's layout relative to the CLI).
pub const SYSTEM_LIB_DIR: &str = "/usr/lib/stackdump";

/// The places [`find_library`] looks, in order, for a CLI at `exe`: next to it (a build tree,
/// `target/release/`), `../lib/stackdump/` (the tarball and the .deb, and `cargo install`'s
/// `~/.cargo/bin` with the library put in `~/.cargo/lib/stackdump/`), `../lib/`, then
/// `/usr/lib/stackdump/` (the .deb's library for a CLI installed elsewhere).
pub fn library_candidates(exe: &Path) -> Vec<PathBuf> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    vec![
        dir.join(LIB),
        dir.join("../lib/stackdump").join(LIB),
        dir.join("../lib").join(LIB),
        Path::new(SYSTEM_LIB_DIR).join(LIB),
    ]
}

/// Where the library is: `STACKDUMP_LIB`, else the first of [`library_candidates`] that is a
/// file.
pub fn find_library() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("STACKDUMP_LIB").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "STACKDUMP_LIB={} is not a file; point it at {LIB}",
                p.display()
            );
        }
        return std::path::absolute(&p).context("making STACKDUMP_LIB absolute");
    }
    let exe = std::env::current_exe().context("finding the stackdump executable")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let candidates = library_candidates(&exe);
    for c in &candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    bail!(
        "{LIB} not found (looked at {}); install the stackdump package or tarball, which put it in place, or set STACKDUMP_LIB=/path/to/{LIB}. After `cargo install`: `cargo build --release -p stackdump-dumper` in the source tree and `install -D -m 644 target/release/{LIB} ~/.cargo/lib/stackdump/{LIB}`",
        looked.join(", ")
    )
}

/// `LD_PRELOAD` with `lib` first, keeping what was there (once).
pub fn preload_value(lib: &Path, existing: Option<&std::ffi::OsStr>) -> OsString {
    let mut out = OsString::from(lib.as_os_str());
    if let Some(existing) = existing {
        for part in existing.to_string_lossy().split([':', ' ']) {
            if part.is_empty() || Path::new(part) == lib {
                continue;
            }
            out.push(":");
            out.push(part);
        }
    }
    out
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let lib = find_library()?;
    let (program, rest) = args.command.split_first().ok_or_else(|| {
        UsageError("no command given; usage: stackdump run -- CMD [ARGS...]".into())
    })?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    cmd.env(
        "LD_PRELOAD",
        preload_value(&lib, std::env::var_os("LD_PRELOAD").as_deref()),
    );
    let mut dir_shown = std::env::var("STACKDUMP_DIR").unwrap_or_else(|_| "/tmp".into());
    if let Some(dir) = &args.dir {
        if !dir.is_dir() {
            return Err(UsageError(format!(
                "--dir {}: not an existing directory",
                dir.display()
            ))
            .into());
        }
        // Absolute: the program may change its working directory.
        let abs = std::path::absolute(dir).context("making --dir absolute")?;
        dir_shown = abs.display().to_string();
        cmd.env("STACKDUMP_DIR", abs);
    }
    let mut signal_shown = std::env::var("STACKDUMP_SIGNAL").unwrap_or_else(|_| "USR1".into());
    if let Some(sig) = &args.signal {
        signal_shown = sig.name.clone();
        cmd.env("STACKDUMP_SIGNAL", &sig.name);
    }
    if std::env::var_os("STACKDUMP_DISABLE").is_some() {
        eprintln!(
            "stackdump: STACKDUMP_DISABLE was set; unset for {}",
            program.to_string_lossy()
        );
        cmd.env_remove("STACKDUMP_DISABLE");
    }
    if std::io::stderr().is_terminal() {
        eprintln!(
            "stackdump: running {} with {} (trigger {signal_shown}, dumps in {dir_shown}); dump it with: stackdump dump {}",
            program.to_string_lossy(),
            lib.display(),
            std::process::id()
        );
    }
    // exec only returns on failure.
    let err = cmd.exec();
    Err(ExecError {
        command: program.to_string_lossy().into_owned(),
        source: err,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_is_looked_for_in_every_layout() {
        let c = library_candidates(Path::new("/opt/stackdump-0.1.0/bin/stackdump"));
        assert_eq!(
            c,
            [
                Path::new("/opt/stackdump-0.1.0/bin/libstackdump.so"),
                Path::new("/opt/stackdump-0.1.0/bin/../lib/stackdump/libstackdump.so"),
                Path::new("/opt/stackdump-0.1.0/bin/../lib/libstackdump.so"),
                Path::new("/usr/lib/stackdump/libstackdump.so"),
            ]
        );
    }

    #[test]
    fn preload_keeps_others_once() {
        let lib = Path::new("/opt/libstackdump.so");
        assert_eq!(preload_value(lib, None), "/opt/libstackdump.so");
        assert_eq!(
            preload_value(lib, Some("/a.so:/opt/libstackdump.so /b.so".as_ref())),
            "/opt/libstackdump.so:/a.so:/b.so"
        );
    }
}
