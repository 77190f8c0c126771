//! Link the GCC unwinder (`_Unwind_*`, what std's panics and `backtrace` use) into
//! libstackdump.so statically, from `libgcc_eh.a`, instead of loading `libgcc_s.so.1` into every
//! host: that library's constructor probes the CPU with `cpuid` (`__cpu_indicator_init`), which
//! traps to the hypervisor in a VM, and its loading and relocation cost a preloaded `/bin/true`
//! about 100 µs of its start-up and its mappings about 100 KiB of RSS.
//!
//! std asks for `-lgcc_s`; a linker script of that name in a directory searched first turns the
//! request into `libgcc_eh.a` (what `gcc -static-libgcc` links). The unwinder's symbols stay
//! local to the library (only the `#[no_mangle]` items are exported), so a host with its own
//! `libgcc_s` (C++) keeps its own. Executables linked with the rlib (the unit tests) get the
//! static unwinder too.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || env != "gnu" {
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let dir = out.join("static-libgcc");
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n").is_err()
    {
        return; // the default: libgcc_s.so.1
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
}
