//! Phase 3a: turn addresses into functions, files and lines (inlined frames included),
//! memoized across dumps.
//!
//! The module files are read the way `stackdump inspect` reads them
//! (`stackdump_core::stack::symbols::FileSymbolizer`): the symbol table, and of the DWARF only
//! the units that hold the dump's addresses, set up once per dump for all of them
//! ([`Symbolizer::prepare`]). A first dump then parses a handful of the C library's 4000 units
//! instead of all of them (what `backtrace` did, ~20 ms before the first frame was named).
//! `backtrace::resolve` names what the files cannot (the vdso, which has no file). Whether a
//! stack ends at its thread's entry point, asked during the capture, is answered from the
//! symbol table alone when it can be ([`Symbolizer::names_root`]: one pass over it for the
//! entry points' addresses, no sorted copy of the whole table): no DWARF is read while threads
//! are being copied. A module's full symbol table is built only when its DWARF leaves an
//! address unnamed. When the module set changes we drop what is cached (`reset`).

use stackdump_core::model::{Addr, Frame};
use stackdump_core::stack::dwarfcache::DwarfCache;
use stackdump_core::stack::symbols::{demangle, push_frames, FileSymbolizer, Symbol as Sym};
use std::collections::HashMap;
use std::path::Path;

/// Memoized symbolization.
pub struct Symbolizer {
    cache: HashMap<u64, Vec<Sym>>,
    /// The module files' symbols (symbol table and DWARF), loaded on first use; the symbol
    /// table alone for [`Symbolizer::names_root`], kept for the DWARF's load.
    files: FileSymbolizer,
}

/// Where separate debug files are looked up: this process's own root.
const ROOT: &str = "/";

impl Symbolizer {
    /// A symbolizer whose decompressed debug sections are cached in the dump directory `dir`
    /// (`stackdump_core::stack::dwarfcache`): a process's first dump maps what an earlier
    /// process of the same user inflated, instead of inflating it again.
    pub fn new(dir: &Path) -> Symbolizer {
        Symbolizer {
            cache: HashMap::new(),
            files: FileSymbolizer::with_cache(DwarfCache::in_dump_dir(dir)),
        }
    }

    /// Write the debug sections this dump inflated to the cache (after the dump is written).
    /// Not inside the fork gate (`crate::fork::section`): it only writes files and its own
    /// list, which a child never uses (it makes a symbolizer of its own), and a prefork server
    /// must not wait for it.
    pub fn flush_cache(&mut self) {
        // The names this dump found that earlier ones had not (one small file per module).
        self.files.save_names();
        if let Some(cache) = self.files.dwarf_cache() {
            cache.flush();
        }
    }

    /// Forget the debug sections put off for the cache (the dump could not be written: the
    /// directory may be full).
    pub fn discard_cache_stores(&mut self) {
        if let Some(cache) = self.files.dwarf_cache() {
            cache.discard();
        }
    }

    /// Forget what addresses meant (modules were loaded or unloaded), keeping the parsed
    /// debug info.
    pub fn forget_addresses(&mut self) {
        self.cache.clear();
    }

    /// Forget everything (the loaded modules changed). backtrace's cache is cleared only when
    /// backtrace named something in this process image (a child forked without exec inherits
    /// its parent's cache and the flag): clearing walks every loaded object (~2 ms for
    /// PostgreSQL's 40), for nothing before the first `resolve`.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.files.clear();
        if BACKTRACE_USED.load(std::sync::atomic::Ordering::Relaxed)
            && !crate::fork::backtrace_unusable()
        {
            crate::fork::section(backtrace::clear_symbol_cache);
        }
    }

    /// Set every module's DWARF up once for all of `addrs` (`(address, is_return)`, with the
    /// module file and load bias of each): one set-up per module instead of one per new unit.
    pub fn prepare<'a>(&mut self, addrs: impl Iterator<Item = (u64, bool, &'a Path, u64)>) {
        let mut by_file: HashMap<&Path, Vec<u64>> = HashMap::new();
        for (ip, is_return, file, bias) in addrs {
            let lookup = if is_return { ip } else { ip.wrapping_add(1) };
            if self.cache.contains_key(&lookup) {
                continue;
            }
            by_file
                .entry(file)
                .or_default()
                .push(lookup.wrapping_sub(1).wrapping_sub(bias));
        }
        let files = &mut self.files;
        crate::fork::section(|| {
            for (file, mut svmas) in by_file {
                svmas.sort_unstable();
                svmas.dedup();
                files.prepare(file, Path::new(ROOT), &svmas);
            }
        });
    }

    /// Whether the function at `ip` (a return address when `is_return`) in the module opened
    /// at `file` with load bias `bias` is a thread entry point, by the symbol table alone; None
    /// when the table does not say (no table, or another function: an entry point inlined
    /// into it is for the DWARF to tell).
    pub fn names_root(&mut self, ip: u64, is_return: bool, file: &Path, bias: u64) -> Option<bool> {
        let lookup = if is_return { ip } else { ip.wrapping_add(1) };
        let files = &mut self.files;
        let root = crate::fork::section(|| {
            files.holds_root(
                file,
                Path::new(ROOT),
                lookup.wrapping_sub(1).wrapping_sub(bias),
            )
        });
        root.filter(|&root| root)
    }

    /// Frames for one address. `is_return`: the address is a return address (the call is the
    /// instruction before it); otherwise it is an exact program counter (frame 0).
    /// `module`/`offset` describe where the address lies.
    pub fn frames(
        &mut self,
        ip: u64,
        is_return: bool,
        module: Option<(&std::sync::Arc<str>, u64)>,
        file: Option<&Path>,
        out: &mut Vec<Frame>,
    ) {
        // An exact PC is looked up as PC+1 minus one, like a return address.
        let lookup = if is_return { ip } else { ip.wrapping_add(1) };
        let files = &mut self.files;
        let syms = self.cache.entry(lookup).or_insert_with(|| {
            // Gated (crate::fork): a fork never copies the symbolizers' state half-changed.
            crate::fork::section(|| {
                let from_file = match (module, file) {
                    (Some((_, bias)), Some(file)) => files.symbols(
                        file,
                        Path::new(ROOT),
                        lookup.wrapping_sub(1).wrapping_sub(bias),
                    ),
                    _ => Vec::new(),
                };
                if from_file.iter().any(|s| s.function.is_some())
                    || crate::fork::backtrace_unusable()
                {
                    return from_file;
                }
                // No file (the vdso), or nothing in it names the address.
                let resolved = resolve(lookup);
                if resolved.iter().any(|s| s.function.is_some()) {
                    resolved
                } else {
                    from_file
                }
            })
        });
        let (module, offset) = match module {
            Some((path, bias)) => (
                Some(std::sync::Arc::clone(path)),
                Some(Addr(ip.wrapping_sub(bias))),
            ),
            None => (None, None),
        };
        push_frames(ip, module, offset, syms, out);
    }
}

/// Whether [`resolve`] ran in this process image (see [`Symbolizer::reset`]).
static BACKTRACE_USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn resolve(addr: u64) -> Vec<Sym> {
    BACKTRACE_USED.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut syms = Vec::new();
    backtrace::resolve(addr as usize as *mut std::ffi::c_void, |s| {
        syms.push(Sym {
            // The raw name, demangled by the core's one demangler (the same names as
            // `inspect`; backtrace alone leaves C++ names mangled).
            function: s
                .name()
                .map(|n| demangle(&String::from_utf8_lossy(n.as_bytes())).into()),
            file: s.filename().map(|p| p.to_string_lossy().into()),
            line: s.lineno(),
        });
    });
    syms
}
