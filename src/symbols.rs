//! Symbolization from the module files themselves (DWARF and symbol tables): for another process
//! (`stackdump inspect`), and inside the dumper as the fallback when `backtrace` cannot name an
//! address (e.g. an executable deleted or replaced since it started: it is still reachable
//! through `/proc/PID/map_files`).
//!
//! Separate debug files are found by build id under `<root>/usr/lib/debug/.build-id/`.
//!
//! Two levels, so callers pay only for what they use:
//! - [`SymbolTable`]: the names of the ELF symbol table (`.symtab`, else `.dynsym`), read with
//!   one parse of the file's headers and one read of the table (libc's, from its debug file:
//!   about 1 ms). Enough to name functions, not to give file:line or inlined frames.
//! - [`ModuleDebug`]: the symbol table plus the DWARF of the file. Only the sections that
//!   naming an address needs are read and decompressed (`.debug_info`, `_abbrev`, `_line`,
//!   `_str`, `_line_str`, `_str_offsets`, `_addr`, `_ranges`, `_rnglists`, `_aranges`), never the
//!   location lists, type units or macros (libc's debug file: 8.6 of 10 MB decompressed).
//!   Files are mapped (pages are read as they are touched), never read whole.
//!
//! [`FileSymbolizer`] keeps one [`ModuleDebug`] per file and memoizes per address.

use addr2line::gimli;
use object::{Object, ObjectSection};
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

/// The frame of the kernel's signal trampoline (between a handler and the code it interrupted),
/// named as gdb names it.
pub fn trampoline_frame(
    ip: u64,
    module: Option<String>,
    offset: Option<crate::model::Addr>,
) -> crate::model::Frame {
    crate::model::Frame {
        ip: crate::model::Addr(ip),
        module,
        offset,
        function: Some("<signal handler called>".into()),
        file: None,
        line: None,
        inlined: false,
        python: None,
    }
}

/// A file mapped read-only into memory (what `addr2line`'s loader does too): its pages are read
/// by the kernel as they are touched, so a large file costs only what is looked at.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; sharing or sending the pointer
// between threads is as safe as sharing an immutable byte slice.
unsafe impl Send for Mapped {}
// SAFETY: as above: only ever read.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn open(path: &Path) -> Option<Mapped> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).ok()?;
        let len = usize::try_from(f.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: a private read-only mapping of a file we opened, of its current length; the
        // fd may be closed afterwards (the mapping keeps the file). A file truncated while
        // mapped would fault on access (SIGBUS): module and debug files are not rewritten in
        // place (package managers and linkers write new files and rename them).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live read-only mapping of `len` bytes until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping this value owns, once; no slice of it outlives `self`
        // (slices borrow `self`, or are held by a context dropped first: see `ModuleDebug`).
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The file a module's symbols are read from: the module itself when it carries DWARF line
/// information, else its separate debug file (`<root>/usr/lib/debug/.build-id/ab/cdef….debug`)
/// when there is one, else the module (its symbol table only).
pub fn debug_source(file: &Path, root: &Path) -> PathBuf {
    let Some(map) = Mapped::open(file) else {
        return file.to_path_buf();
    };
    let Ok(obj) = object::File::parse(map.bytes()) else {
        return file.to_path_buf();
    };
    if obj.section_by_name(".debug_line").is_some() {
        return file.to_path_buf();
    }
    build_id_file(&obj, root).unwrap_or_else(|| file.to_path_buf())
}

fn build_id_file<'d, R: object::ReadRef<'d>>(
    obj: &object::File<'d, R>,
    root: &Path,
) -> Option<PathBuf> {
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

/// The names of an ELF symbol table (defined text and data symbols, the best name per address,
/// sizes guessed where missing: `object`'s symbol map), owned.
#[derive(Debug, Default, Clone)]
pub struct SymbolTable {
    /// (address, size, start of the name in `names`, its length), by address.
    entries: Vec<(u64, u64, u32, u32)>,
    names: String,
}

impl SymbolTable {
    /// The symbol table of the file `source` (see [`debug_source`]); empty when unreadable.
    pub fn load(source: &Path) -> SymbolTable {
        let Some(map) = Mapped::open(source) else {
            return SymbolTable::default();
        };
        match object::File::parse(map.bytes()) {
            Ok(obj) => SymbolTable::of(&obj),
            Err(_) => SymbolTable::default(),
        }
    }

    fn of<'d, R: object::ReadRef<'d>>(obj: &object::File<'d, R>) -> SymbolTable {
        let map = obj.symbol_map();
        let mut t = SymbolTable {
            entries: Vec::with_capacity(map.symbols().len()),
            names: String::new(),
        };
        for s in map.symbols() {
            let (Ok(start), Ok(len)) =
                (u32::try_from(t.names.len()), u32::try_from(s.name().len()))
            else {
                break;
            };
            t.names.push_str(s.name());
            t.entries.push((s.address(), s.size(), start, len));
        }
        t
    }

    /// The raw (mangled) name of the symbol containing `svma`.
    pub fn containing(&self, svma: u64) -> Option<&str> {
        let i = self
            .entries
            .partition_point(|e| e.0 <= svma)
            .checked_sub(1)?;
        let (address, size, start, len) = self.entries[i];
        if size != 0 && svma.wrapping_sub(address) >= size {
            return None;
        }
        self.names.get(start as usize..(start + len) as usize)
    }
}

/// The reader of DWARF sections: slices of the section buffers a [`ModuleDebug`] owns. The
/// `'static` is never seen outside: the context that holds such slices is a field of the same
/// `ModuleDebug`, dropped before the buffers, and only owned data leaves it.
type Reader = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

/// The symbols of one module file: its symbol table and its DWARF (when it has any).
pub struct ModuleDebug {
    names: SymbolTable,
    /// Borrows from `sections` and `map`; declared before them, so it is dropped first.
    dwarf: Option<addr2line::Context<Reader>>,
    /// The DWARF sections decompressed, never moved or changed while `dwarf` lives (boxed
    /// slices: their bytes stay where they are when the struct moves).
    #[allow(dead_code)]
    sections: Vec<Box<[u8]>>,
    /// The file, mapped: sections stored uncompressed are read from here.
    #[allow(dead_code)]
    map: Option<Mapped>,
}

impl ModuleDebug {
    /// Read the symbols of the module opened at `file` (`root`: where separate debug files are
    /// looked up, `/` or `/proc/PID/root`). Never fails: a file without symbols names nothing.
    pub fn load(file: &Path, root: &Path) -> ModuleDebug {
        ModuleDebug::load_from(&debug_source(file, root))
    }

    /// [`ModuleDebug::load`] from the file [`debug_source`] chose.
    pub fn load_from(source: &Path) -> ModuleDebug {
        let none = || ModuleDebug {
            names: SymbolTable::default(),
            dwarf: None,
            sections: Vec::new(),
            map: None,
        };
        let Some(map) = Mapped::open(source) else {
            return none();
        };
        let Ok(obj) = object::File::parse(map.bytes()) else {
            return none();
        };
        let mut sections = Vec::new();
        let dwarf = dwarf_of(&obj, &mut sections);
        let names = SymbolTable::of(&obj);
        drop(obj);
        ModuleDebug {
            names,
            dwarf,
            sections,
            map: Some(map),
        }
    }

    /// The symbol table (names only).
    pub fn names(&self) -> &SymbolTable {
        &self.names
    }

    /// Symbols of `svma` (an address as stated in the file: the process address minus the load
    /// bias; for return addresses, already pointing inside the call). Innermost first: DWARF
    /// functions (inlined ones included) with file:line; when DWARF names no function, the
    /// symbol table's name.
    pub fn symbols(&self, svma: u64) -> Vec<Symbol> {
        let mut out = Vec::new();
        if let Some(ctx) = &self.dwarf {
            if let Ok(mut frames) = ctx.find_frames(svma).skip_all_loads() {
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
        }
        if out.iter().all(|s| s.function.is_none()) {
            if let Some(name) = self.names.containing(svma) {
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
        out
    }
}

/// The DWARF sections that naming an address reads (addr2line's lookups: units, their
/// ranges, functions, inlined calls and line programs).
fn wanted(id: gimli::SectionId) -> bool {
    use gimli::SectionId as S;
    matches!(
        id,
        S::DebugAbbrev
            | S::DebugAddr
            | S::DebugAranges
            | S::DebugInfo
            | S::DebugLine
            | S::DebugLineStr
            | S::DebugStr
            | S::DebugStrOffsets
            | S::DebugRanges
            | S::DebugRngLists
    )
}

/// The DWARF context of `obj`, its sections read into `sections` (which must outlive it: see
/// [`ModuleDebug`]).
fn dwarf_of<'d, R: object::ReadRef<'d>>(
    obj: &object::File<'d, R>,
    sections: &mut Vec<Box<[u8]>>,
) -> Option<addr2line::Context<Reader>> {
    obj.section_by_name(".debug_info")?;
    let endian = if obj.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Reader, ()> {
        let data = if wanted(id) {
            obj.section_by_name(id.name())
                .and_then(|s| s.uncompressed_data().ok())
        } else {
            None
        };
        let data: Box<[u8]> = match data {
            None => return Ok(gimli::EndianSlice::new(&[], endian)),
            Some(std::borrow::Cow::Borrowed(b)) => {
                // SAFETY: `b` borrows the file's mapping, which the caller keeps in the same
                // `ModuleDebug` as the context, and drops after it (see `ModuleDebug`).
                let bytes: &'static [u8] =
                    unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) };
                return Ok(gimli::EndianSlice::new(bytes, endian));
            }
            Some(std::borrow::Cow::Owned(v)) => v.into_boxed_slice(),
        };
        // SAFETY: the bytes live in a boxed slice that is pushed to `sections` below and is
        // neither moved nor changed nor dropped while the context lives: the caller stores both
        // in one `ModuleDebug`, whose `dwarf` field is dropped before its `sections` field. The
        // context never hands out the 'static slices (`ModuleDebug::symbols` returns owned
        // strings).
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(data.as_ptr(), data.len()) };
        sections.push(data);
        Ok(gimli::EndianSlice::new(bytes, endian))
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

/// Loaded module files, by the path they were opened with, and the symbols of each address
/// asked for (memoized).
#[derive(Default)]
pub struct FileSymbolizer {
    modules: HashMap<PathBuf, ModuleDebug>,
    cache: HashMap<(PathBuf, u64), Vec<Symbol>>,
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
        let out = self.module(file, root).symbols(svma);
        self.cache.insert(key, out.clone());
        out
    }

    /// The symbols of the module opened at `file`, loaded on first use.
    pub fn module(&mut self, file: &Path, root: &Path) -> &ModuleDebug {
        self.modules
            .entry(file.to_path_buf())
            .or_insert_with(|| ModuleDebug::load(file, root))
    }

    /// Use `debug` for the module opened at `file` (loaded elsewhere, e.g. on another thread).
    pub fn insert(&mut self, file: PathBuf, debug: ModuleDebug) {
        self.modules.insert(file, debug);
    }

    /// Forget every loaded module (the process's module set changed).
    pub fn clear(&mut self) {
        self.modules.clear();
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
        let (exe, addr) = own_file_address(symbolizes_this_test_binary as *const () as u64);
        let mut s = FileSymbolizer::default();
        let syms = s.symbols(&exe, Path::new("/"), addr);
        let names: Vec<_> = syms.iter().filter_map(|s| s.function.as_deref()).collect();
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("symbolizes_this_test_binary")),
            "{names:?}"
        );
    }

    /// Our own executable and the address `addr` of this process as stated in it.
    fn own_file_address(addr: u64) -> (PathBuf, u64) {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = crate::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
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
        (exe, addr - bias)
    }

    /// The symbol table alone names a function (what the capture asks, cheaply), and the
    /// module's DWARF names it too, with its file and line; an address beyond every symbol
    /// is named by neither.
    #[test]
    fn symbol_table_and_dwarf_name_the_same_function() {
        let here = symbol_table_and_dwarf_name_the_same_function as *const () as u64;
        let (exe, svma) = own_file_address(here);
        let root = Path::new("/");
        let table = SymbolTable::load(&debug_source(&exe, root));
        let raw = table.containing(svma).expect("the symbol table names it");
        let demangled = addr2line::demangle_auto(raw.into(), None);
        assert!(
            strip_hash(&demangled).ends_with("symbol_table_and_dwarf_name_the_same_function"),
            "{raw}"
        );
        let debug = ModuleDebug::load(&exe, root);
        let syms = debug.symbols(svma);
        let outer = syms.last().expect("DWARF names it");
        assert!(
            outer
                .function
                .as_deref()
                .is_some_and(|f| f.ends_with("symbol_table_and_dwarf_name_the_same_function")),
            "{syms:?}"
        );
        assert!(
            outer
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("symbols.rs")),
            "{syms:?}"
        );
        assert_eq!(table.containing(u64::MAX), None);
        assert!(debug.symbols(u64::MAX).is_empty());
    }
}
