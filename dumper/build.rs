//! Link the GCC unwinder into libstackdump.so statically instead of loading `libgcc_s.so.1`
//! into every host (see `build-support/static_libgcc.rs`): a preloaded `/bin/true` would pay
//! about 100 µs more of start-up and its mappings about 100 KiB of RSS.
//!
//! The unwinder's symbols stay local to the library (only the `#[no_mangle]` items are
//! exported), so a host with its own `libgcc_s` (C++) keeps its own. Executables linked with the
//! rlib (the unit tests) get the static unwinder too.

include!("../build-support/static_libgcc.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../build-support/static_libgcc.rs");
    link_libgcc_statically();
}
