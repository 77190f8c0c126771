//! Phase 3a: turn addresses into functions, files and lines (inlined frames included) with
//! `backtrace::resolve`, memoized across dumps.
//!
//! backtrace reads the list of loaded objects once and caches a few parsed ones; when the
//! module set changes we drop both its cache and ours (`reset`).

use stackdump_core::model::{Addr, Frame};
use stackdump_core::stack::symbols::{demangle, push_frames, Symbol as Sym};
use std::collections::HashMap;

/// Memoized symbolization.
#[derive(Default)]
pub struct Symbolizer {
    cache: HashMap<u64, Vec<Sym>>,
    /// Fallback for addresses backtrace cannot name (e.g. in an executable deleted since it
    /// started): the module file itself, reached through `map_files`.
    files: stackdump_core::stack::symbols::FileSymbolizer,
}

impl Symbolizer {
    /// Forget what addresses meant (modules were loaded or unloaded), keeping backtrace's
    /// parsed debug info.
    pub fn forget_addresses(&mut self) {
        self.cache.clear();
    }

    /// Forget everything (the loaded modules changed).
    pub fn reset(&mut self) {
        self.cache.clear();
        self.files.clear();
        if !crate::fork::backtrace_unusable() {
            crate::fork::section(backtrace::clear_symbol_cache);
        }
    }

    /// Frames for one address. `is_return`: the address is a return address (the call is the
    /// instruction before it); otherwise it is an exact program counter (frame 0).
    /// `module`/`offset` describe where the address lies.
    pub fn frames(
        &mut self,
        ip: u64,
        is_return: bool,
        module: Option<(&str, u64)>,
        file: Option<&std::path::Path>,
        out: &mut Vec<Frame>,
    ) {
        // backtrace::resolve subtracts one from the address it is given (it expects return
        // addresses); an exact PC is passed as PC+1 so it lands on the PC itself.
        let lookup = if is_return { ip } else { ip.wrapping_add(1) };
        let files = &mut self.files;
        let syms = self.cache.entry(lookup).or_insert_with(|| {
            // Gated (crate::fork): a fork never copies backtrace's or the file symbolizer's
            // state half-changed.
            crate::fork::section(|| {
                let syms = if crate::fork::backtrace_unusable() {
                    Vec::new()
                } else {
                    resolve(lookup)
                };
                match (module, file) {
                    (Some((_, bias)), Some(file)) if syms.iter().all(|s| s.function.is_none()) => {
                        files.symbols(
                            file,
                            std::path::Path::new("/"),
                            lookup.wrapping_sub(1).wrapping_sub(bias),
                        )
                    }
                    _ => syms,
                }
            })
        });
        let (module, offset) = match module {
            Some((path, bias)) => (Some(path.to_string()), Some(Addr(ip.wrapping_sub(bias)))),
            None => (None, None),
        };
        push_frames(ip, module, offset, syms, out);
    }
}

fn resolve(addr: u64) -> Vec<Sym> {
    let mut syms = Vec::new();
    backtrace::resolve(addr as usize as *mut std::ffi::c_void, |s| {
        syms.push(Sym {
            // The raw name, demangled by the core's one demangler (the same names as
            // `inspect`; backtrace alone leaves C++ names mangled).
            function: s
                .name()
                .map(|n| demangle(&String::from_utf8_lossy(n.as_bytes()))),
            file: s.filename().map(|p| p.to_string_lossy().into_owned()),
            line: s.lineno(),
        });
    });
    syms
}
