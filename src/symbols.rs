//! Symbolization from the module files themselves (DWARF and symbol tables, via `addr2line`):
//! for another process (`stackdump inspect`), and inside the dumper as the fallback when
//! `backtrace` cannot name an address (e.g. an executable deleted or replaced since it started:
//! it is still reachable through `/proc/PID/map_files`).
//!
//! Separate debug files are found by build id under `<root>/usr/lib/debug/.build-id/`.

use object::Object;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One symbol of an address; several when functions were inlined (innermost first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The frames of one address from its symbols (innermost first; all but the last are marked
/// inlined), or one bare frame when there are none. `module`/`offset` say where `ip` lies.
pub fn push_frames(
    ip: u64,
    module: Option<String>,
    offset: Option<crate::model::Addr>,
    symbols: &[Symbol],
    out: &mut Vec<crate::model::Frame>,
) {
    use crate::model::{Addr, Frame};
    if symbols.is_empty() {
        out.push(Frame {
            ip: Addr(ip),
            module,
            offset,
            function: None,
            file: None,
            line: None,
            inlined: false,
            python: None,
        });
        return;
    }
    let last = symbols.len() - 1;
    for (i, s) in symbols.iter().enumerate() {
        out.push(Frame {
            ip: Addr(ip),
            module: module.clone(),
            offset,
            function: s.function.clone(),
            file: s.file.clone(),
            line: s.line,
            inlined: i < last,
            python: None,
        });
    }
}

/// Loaded module files, by the path they were opened with.
#[derive(Default)]
pub struct FileSymbolizer {
    loaders: HashMap<PathBuf, Option<addr2line::Loader>>,
    cache: HashMap<(PathBuf, u64), Vec<Symbol>>,
}

/// `<root>/usr/lib/debug/.build-id/ab/cdef….debug` for the module at `file`, when it exists.
fn debug_file(file: &Path, root: &Path) -> Option<PathBuf> {
    let data = std::fs::read(file).ok()?;
    let obj = object::File::parse(&*data).ok()?;
    let id = obj.build_id().ok()??;
    if id.len() < 2 {
        return None;
    }
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let p = root.join(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ));
    p.exists().then_some(p)
}

/// True when the module file itself carries DWARF line information.
fn has_dwarf(file: &Path) -> bool {
    std::fs::read(file)
        .ok()
        .and_then(|d| {
            let obj = object::File::parse(&*d).ok()?;
            Some(obj.section_by_name(".debug_line").is_some())
        })
        .unwrap_or(false)
}

impl FileSymbolizer {
    /// Symbols of `svma` (an address as stated in the module file: the process address minus
    /// the load bias) in the module opened at `file`; `root` is where separate debug files are
    /// looked up (`/` or `/proc/PID/root`). `svma` must already point inside the call for
    /// return addresses (the caller subtracts one).
    pub fn symbols(&mut self, file: &Path, root: &Path, svma: u64) -> Vec<Symbol> {
        let key = (file.to_path_buf(), svma);
        if let Some(s) = self.cache.get(&key) {
            return s.clone();
        }
        let loader = self.loaders.entry(file.to_path_buf()).or_insert_with(|| {
            let source = if has_dwarf(file) {
                file.to_path_buf()
            } else {
                debug_file(file, root).unwrap_or_else(|| file.to_path_buf())
            };
            addr2line::Loader::new(&source).ok()
        });
        let mut out = Vec::new();
        if let Some(loader) = loader {
            if let Ok(mut frames) = loader.find_frames(svma) {
                while let Ok(Some(f)) = frames.next() {
                    let function = f
                        .function
                        .as_ref()
                        .and_then(|n| n.demangle().ok())
                        .map(|n| strip_hash(&n).to_string());
                    let (file, line) = match f.location {
                        Some(l) => (l.file.map(str::to_string), l.line),
                        None => (None, None),
                    };
                    out.push(Symbol {
                        function,
                        file,
                        line,
                    });
                }
            }
            if out.iter().all(|s| s.function.is_none()) {
                if let Some(name) = loader.find_symbol(svma) {
                    let demangled = addr2line::demangle_auto(name.into(), None);
                    let function = Some(strip_hash(&demangled).to_string());
                    match out.last_mut() {
                        Some(last) => last.function = function,
                        None => out.push(Symbol {
                            function,
                            file: None,
                            line: None,
                        }),
                    }
                }
            }
        }
        self.cache.insert(key, out.clone());
        out
    }

    /// Forget every loaded module (the process's module set changed).
    pub fn clear(&mut self) {
        self.loaders.clear();
        self.cache.clear();
    }
}

/// `foo::bar::h0123456789abcdef` → `foo::bar` (Rust legacy mangling hash).
fn strip_hash(name: &str) -> &str {
    match name.rfind("::h") {
        Some(i) if name.len() - i == 19 && name[i + 3..].bytes().all(|b| b.is_ascii_hexdigit()) => {
            &name[..i]
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_rust_hashes_only() {
        assert_eq!(
            strip_hash("std::rt::lang_start::h0123456789abcdef"),
            "std::rt::lang_start"
        );
        assert_eq!(strip_hash("main"), "main");
        assert_eq!(strip_hash("a::hb"), "a::hb");
    }

    #[test]
    fn symbolizes_this_test_binary() {
        // Our own executable: find the address of this function in the file and name it.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = crate::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let me = symbolizes_this_test_binary as *const () as u64;
        let first = maps
            .iter()
            .find(|m| m.path == exe.to_string_lossy() && m.offset == 0)
            .unwrap();
        let data = std::fs::read(&exe).unwrap();
        let obj = object::File::parse(&*data).unwrap();
        let lowest = object::Object::segments(&obj)
            .map(|s| object::ObjectSegment::address(&s))
            .min()
            .unwrap();
        let bias = first.start - (lowest & !0xfff);
        let mut s = FileSymbolizer::default();
        let syms = s.symbols(&exe, Path::new("/"), me - bias);
        let names: Vec<_> = syms.iter().filter_map(|s| s.function.as_deref()).collect();
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("symbolizes_this_test_binary")),
            "{names:?}"
        );
    }
}
