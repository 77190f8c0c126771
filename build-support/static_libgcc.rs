/// Link the GCC unwinder (`_Unwind_*`, what std's panics and backtraces use) statically, from
/// `libgcc_eh.a`, instead of loading `libgcc_s.so.1`: that library's constructor probes the CPU
/// with `cpuid` (`__cpu_indicator_init`), which traps to the hypervisor in a VM (~0.2 ms of a
/// process's start-up measured on the benchmark's EPYC VM), and its loading and relocation
/// cost more.
///
/// std asks for `-lgcc_s`; a linker script of that name in a directory searched first turns the
/// request into `libgcc_eh.a` (what `gcc -static-libgcc` links). Shared by the build scripts of
/// `dumper` (libstackdump.so, loaded into every host) and `injector` (the `stackdump` CLI, whose
/// start-up is part of every `stackdump dump`), with `include!`.
fn link_libgcc_statically() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || env != "gnu" {
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR").map(std::path::PathBuf::from) else {
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
