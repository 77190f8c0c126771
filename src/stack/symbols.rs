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

use crate::kernel::rootfs::{open_untrusted, MAX_MODULE_BYTES};
use crate::stack::dwarfcache::DwarfCache;
use crate::stack::mapped::Mapped;
use addr2line::gimli;
use object::{Object, ObjectSection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One symbol of an address; several when functions were inlined (innermost first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub function: Option<Arc<str>>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
}

/// The frames of one address from its symbols (innermost first; all but the last are marked
/// inlined), or one bare frame when there are none. `module`/`offset` say where `ip` lies.
pub fn push_frames(
    ip: u64,
    module: Option<Arc<str>>,
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
            jit: None,
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
            jit: None,
        });
    }
}

/// The frame of the kernel's signal trampoline (between a handler and the code it interrupted),
/// named as gdb names it.
pub fn trampoline_frame(
    ip: u64,
    module: Option<Arc<str>>,
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
        jit: None,
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
    // Opened the one safe way: inside the target's root, with its user's rights, a regular
    // file only (a planted link to a root-only file, a FIFO or a device is not a debug file).
    open_untrusted(&p, MAX_MODULE_BYTES).is_ok().then_some(p)
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
        use object::ObjectSection;
        // A symbol table larger than the cap (a hostile or sparse file claiming one) is not
        // indexed: the index costs about as much memory as the table.
        let too_big = [".symtab", ".dynsym"]
            .iter()
            .filter_map(|n| obj.section_by_name(n))
            .any(|s| s.size() > crate::limits::MAX_SYMTAB);
        if too_big {
            return SymbolTable::default();
        }
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

/// More entry points than this in one file: not believed (the pass would cost that much on
/// every question). A real module has a handful.
const MAX_ROOTS: usize = 256;

/// Where a module's thread entry points are ([`crate::stack::unwind::THREAD_ROOTS`], glibc's
/// `__GI_` aliases included), from its symbol table: what a capture asks of every stack ("does
/// it end at its thread's entry point?") answered by one pass over the symbols, without sorting
/// or copying the table (a first dump's C library has 10 000 of them).
#[derive(Debug, Default, Clone)]
pub struct Roots {
    /// `[start, end)` of each entry point, in the file's addresses.
    ranges: Vec<(u64, u64)>,
}

impl Roots {
    /// The entry points of the file `source` (see [`debug_source`]); none when unreadable.
    pub fn load(source: &Path) -> Roots {
        let Some(map) = Mapped::open(source) else {
            return Roots::default();
        };
        match object::File::parse(map.bytes()) {
            Ok(obj) => Roots::of(&obj),
            Err(_) => Roots::default(),
        }
    }

    /// [`Roots::load`], read from `cache` when it holds the index of this very file
    /// ([`crate::stack::dwarfcache::INDEX_ROOTS`]): the C library's debug file has 10 000
    /// symbols, a pass over them 0.5-0.9 ms of a first dump.
    pub fn load_cached(source: &Path, cache: Option<&DwarfCache>) -> Roots {
        Roots::load_checked(source, cache).0
    }

    /// [`Roots::load_cached`], and whether the answer is the file's (false when it could not
    /// be read or parsed: nothing worth keeping for later processes).
    pub fn load_checked(source: &Path, cache: Option<&DwarfCache>) -> (Roots, bool) {
        let Some(map) = Mapped::open(source) else {
            return (Roots::default(), false);
        };
        let Ok(obj) = object::File::parse(map.bytes()) else {
            return (Roots::default(), false);
        };
        let roots = cache
            .and_then(|cache| {
                let file = cache.load(&cache_key(&obj, source)?, &[])?;
                let section = file.section(crate::stack::dwarfcache::INDEX_ROOTS)?;
                Roots::from_words(&crate::stack::dwarfcache::words(section, 2)?)
            })
            .unwrap_or_else(|| Roots::of(&obj));
        (roots, true)
    }

    /// The ranges as words (start, end of each), to be cached.
    fn to_words(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(s, e)| [s, e])
    }

    /// The ranges [`Roots::to_words`] gave, when they are sorted and no more than a real
    /// module has.
    fn from_words(words: &[u64]) -> Option<Roots> {
        let ranges: Vec<(u64, u64)> = words.chunks_exact(2).map(|w| (w[0], w[1])).collect();
        let sound = words.len() % 2 == 0
            && ranges.len() <= MAX_ROOTS
            && ranges.windows(2).all(|w| w[0] <= w[1]);
        sound.then_some(Roots { ranges })
    }

    fn of<'d, R: object::ReadRef<'d>>(obj: &object::File<'d, R>) -> Roots {
        use object::{Object, ObjectSection, ObjectSymbol, SymbolKind, SymbolSection};
        // The table object's symbol map would read: the full one, else the dynamic one.
        let too_big = [".symtab", ".dynsym"]
            .iter()
            .filter_map(|n| obj.section_by_name(n))
            .any(|s| s.size() > crate::limits::MAX_SYMTAB);
        if too_big {
            return Roots::default();
        }
        // Code: of what `object`'s symbol map keeps (text, data, untyped), all but data; an
        // untyped symbol may be code (musl's `_start` is hand-written assembly without a type).
        let code = |s: &object::Symbol<'d, '_, R>| {
            s.is_definition()
                && matches!(s.kind(), SymbolKind::Text | SymbolKind::Unknown)
                && s.address() != 0
        };
        let scan = |with: &mut dyn FnMut(&object::Symbol<'d, '_, R>)| {
            if obj.symbols().next().is_some() {
                obj.symbols().for_each(|s| with(&s));
            } else {
                obj.dynamic_symbols().for_each(|s| with(&s));
            }
        };
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        // Entry points without a size (hand-written assembly): their start and where their
        // section ends.
        let mut sizeless: Vec<(u64, u64)> = Vec::new();
        let mut too_many = false;
        scan(&mut |s| {
            if too_many || !code(s) {
                return;
            }
            let Ok(name) = s.name_bytes() else { return };
            let name = name.strip_prefix(b"__GI_").unwrap_or(name);
            if !crate::stack::unwind::THREAD_ROOTS
                .iter()
                .any(|r| r.as_bytes() == name)
            {
                return;
            }
            let start = s.address();
            if s.size() != 0 {
                ranges.push((start, start.saturating_add(s.size())));
            } else {
                let section_end = match s.section() {
                    SymbolSection::Section(i) => obj
                        .section_by_index(i)
                        .ok()
                        .map(|sec| sec.address().saturating_add(sec.size())),
                    _ => None,
                };
                sizeless.push((start, section_end.unwrap_or(u64::MAX)));
            }
            // A file claiming more entry points than any real one has is not believed.
            too_many = ranges.len() + sizeless.len() > MAX_ROOTS;
        });
        if too_many {
            return Roots::default();
        }
        if !sizeless.is_empty() {
            // One that has no size ends where the next symbol starts, as a sorted table would
            // say: one more pass, each symbol bounding the nearest such entry point below it
            // (O(symbols × log entry points); the entry points are themselves symbols, so the
            // nearest one below is the only one a symbol can end).
            sizeless.sort_unstable();
            sizeless.dedup_by_key(|r| r.0);
            scan(&mut |s| {
                if !s.is_definition() || s.address() == 0 {
                    return;
                }
                let a = s.address();
                let i = sizeless.partition_point(|r| r.0 < a);
                if let Some(r) = i.checked_sub(1).and_then(|i| sizeless.get_mut(i)) {
                    r.1 = r.1.min(a);
                }
            });
            ranges.extend(sizeless);
        }
        ranges.sort_unstable();
        ranges.dedup();
        Roots { ranges }
    }

    /// Whether `svma` (an address in the file, already inside the call for return addresses)
    /// lies in a thread entry point; None when the table names none (stripped, no table, or
    /// no entry point in this module).
    pub fn holds(&self, svma: u64) -> Option<bool> {
        if self.ranges.is_empty() {
            return None;
        }
        Some(
            self.ranges
                .iter()
                .any(|&(start, end)| start <= svma && svma < end),
        )
    }
}

/// The symbols of one module file: its symbol table and its DWARF (when it has any).
pub struct ModuleDebug {
    /// Built when first needed (DWARF names most addresses: a module with DWARF may never
    /// need it), from `file`.
    names: std::cell::OnceCell<SymbolTable>,
    /// Borrows from `sections`, `maps` and `file`; declared before them, so it is dropped
    /// first.
    dwarf: Option<Lookup>,
    /// The DWARF sections decompressed, never moved or changed while `dwarf` lives (boxed
    /// slices: their bytes stay where they are when the struct moves).
    #[allow(dead_code)]
    sections: Vec<Box<[u8]>>,
    /// The cache file the decompressed sections were read from, if any.
    #[allow(dead_code)]
    maps: Vec<Mapped>,
    /// The share of the run's budget that `sections` use ([`crate::limits`]).
    #[allow(dead_code)]
    budget: crate::limits::Reservation,
    /// The file the symbols are read from, mapped: the sections stored uncompressed are read
    /// from here (by `dwarf`, declared before it), and its symbol table when first needed.
    file: Option<Mapped>,
    /// The cache key of that very file (its build id and the identity of the fd mapped), when
    /// it has a build id: what its names may be kept under ([`NameMemo`]).
    key: Option<crate::stack::dwarfcache::Key>,
}

/// The DWARF of one file, and the `addr2line` context that answers from it: set up for the
/// units holding the addresses asked for so far ([`crate::stack::dwarfunits`]), or for the whole file
/// when that is not possible.
struct Lookup {
    /// Borrows from `info` (and the owner's buffers); declared first, so it is dropped first.
    context: Option<addr2line::Context<Reader>>,
    /// The `.debug_info` with only the units in `units`, when the context reads that one,
    /// and its share of the run's budget ([`crate::limits`]).
    #[allow(dead_code)]
    info: Option<(Box<[u8]>, crate::limits::Reservation)>,
    /// The sections as loaded (slices of the owner's buffers).
    sections: Vec<(gimli::SectionId, Reader)>,
    index: crate::stack::dwarfunits::UnitIndex,
    /// The offsets of every unit, read when first needed.
    all_units: Option<Vec<usize>>,
    /// The units the context was set up with; None when it is the whole file's.
    units: Option<std::collections::BTreeSet<usize>>,
    /// Setting the whole file up failed: not tried again.
    failed: bool,
    /// A wanted section was left out (over a size cap or the run's budget, or damaged).
    degraded: bool,
}

impl Lookup {
    fn section(&self, id: gimli::SectionId) -> Reader {
        self.sections
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| *r)
            .unwrap_or_else(|| gimli::EndianSlice::new(&[], self.endian()))
    }

    fn endian(&self) -> gimli::RunTimeEndian {
        self.sections
            .first()
            .map_or(gimli::RunTimeEndian::Little, |(_, r)| {
                gimli::Reader::endian(r)
            })
    }

    /// A context over the sections, with `info` instead of the file's `.debug_info` when given.
    fn context_with(&self, info: Option<&[u8]>) -> Option<addr2line::Context<Reader>> {
        let dwarf = gimli::Dwarf::load(|id| -> Result<Reader, ()> {
            match (id, info) {
                (gimli::SectionId::DebugInfo, Some(b)) => {
                    // SAFETY: `b` is the boxed slice the caller stores in `Lookup::info` next
                    // to the context, which is dropped before it (field order) and replaced
                    // only after the context that reads it was replaced.
                    let bytes: &'static [u8] =
                        unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) };
                    Ok(gimli::EndianSlice::new(bytes, self.endian()))
                }
                _ => Ok(self.section(id)),
            }
        })
        .ok()?;
        addr2line::Context::from_dwarf(dwarf).ok()
    }

    /// Set the context up for the whole file.
    fn whole(&mut self) {
        if self.failed || (self.context.is_some() && self.units.is_none()) {
            return;
        }
        self.context = self.context_with(None);
        self.info = None;
        self.units = None;
        self.failed = self.context.is_none();
    }

    /// Make sure the context covers the units of `svmas`: only those units, the ones they
    /// refer to and the ones already set up, when `.debug_aranges` places every address; else
    /// the whole file.
    fn want(&mut self, svmas: &[u64]) {
        if self.failed || (self.context.is_some() && self.units.is_none()) {
            return;
        }
        let mut units = self.units.clone().unwrap_or_default();
        let known = units.len();
        for &a in svmas {
            match self.index.unit_of(a) {
                Some(u) => {
                    units.insert(u);
                }
                None => return self.whole(),
            }
        }
        if self.context.is_some() && units.len() == known {
            return;
        }
        use crate::stack::dwarfunits::{filtered_info, unit_offsets, with_referenced_units};
        let info = self.section(gimli::SectionId::DebugInfo).slice();
        let abbrev = self.section(gimli::SectionId::DebugAbbrev).slice();
        let endian = self.endian();
        if self.all_units.is_none() {
            self.all_units = unit_offsets(info, endian);
        }
        let Some(all) = &self.all_units else {
            return self.whole();
        };
        let Some(units) = with_referenced_units(info, abbrev, endian, &units, all) else {
            return self.whole();
        };
        // The copy counts against the run's budget; without room, the whole file instead.
        let Some(reserved) = crate::limits::Reservation::take(info.len() as u64) else {
            return self.whole();
        };
        let Some(filtered) = filtered_info(info, endian, &units) else {
            return self.whole();
        };
        let Some(context) = self.context_with(Some(&filtered)) else {
            return self.whole();
        };
        // The old context goes before the buffer it read.
        self.context = Some(context);
        self.info = Some((filtered, reserved));
        self.units = Some(units);
    }
}

impl ModuleDebug {
    /// Read the symbols of the module opened at `file` (`root`: where separate debug files are
    /// looked up, `/` or `/proc/PID/root`). Never fails: a file without symbols names nothing.
    pub fn load(file: &Path, root: &Path) -> ModuleDebug {
        ModuleDebug::load_from(&debug_source(file, root), None)
    }

    /// [`ModuleDebug::load`] from the file [`debug_source`] chose; compressed debug sections
    /// are read from `cache` when it has them, and written to it when it does not.
    pub fn load_from(source: &Path, cache: Option<&DwarfCache>) -> ModuleDebug {
        let none = || ModuleDebug {
            names: std::cell::OnceCell::from(SymbolTable::default()),
            dwarf: None,
            sections: Vec::new(),
            maps: Vec::new(),
            budget: crate::limits::Reservation::default(),
            file: None,
            key: None,
        };
        let Some((map, key)) = map_keyed(source) else {
            return none();
        };
        let Ok(obj) = object::File::parse(map.bytes()) else {
            return none();
        };
        let mut sections = Vec::new();
        let mut maps = Vec::new();
        let mut budget = crate::limits::Reservation::default();
        let dwarf = dwarf_of(
            &obj,
            key.as_ref(),
            &mut sections,
            &mut maps,
            &mut budget,
            cache,
        );
        drop(obj);
        ModuleDebug {
            names: std::cell::OnceCell::new(),
            dwarf,
            sections,
            maps,
            budget,
            file: Some(map),
            key,
        }
    }

    /// The symbol table (names only), built on first use.
    pub fn names(&self) -> &SymbolTable {
        self.names.get_or_init(|| {
            self.file
                .as_ref()
                .and_then(|m| object::File::parse(m.bytes()).ok())
                .map(|obj| SymbolTable::of(&obj))
                .unwrap_or_default()
        })
    }

    /// Whether the answers of [`ModuleDebug::symbols`] are what the whole file says: it was
    /// mapped and parsed, and its DWARF (if any) was loaded without leaving a section out and
    /// set up without failing. Only such answers are worth keeping for later processes.
    pub fn complete(&self) -> bool {
        self.file.is_some()
            && self
                .dwarf
                .as_ref()
                .map_or(true, |d| !d.degraded && !d.failed)
    }

    /// Whether the DWARF context covers only some units (test hook).
    #[cfg(test)]
    fn partial(&self) -> bool {
        self.dwarf.as_ref().is_some_and(|d| d.units.is_some())
    }

    /// Set the DWARF context up for the whole file (test hook).
    #[cfg(test)]
    fn whole(&mut self) {
        if let Some(d) = &mut self.dwarf {
            d.whole();
        }
    }

    /// Set the DWARF lookups up for all of `svmas` at once (see [`crate::stack::dwarfunits`]); later
    /// [`ModuleDebug::symbols`] of other addresses still work, at the cost of another set-up.
    pub fn prepare(&mut self, svmas: &[u64]) {
        if let Some(d) = &mut self.dwarf {
            d.want(svmas);
        }
    }

    /// Symbols of `svma` (an address as stated in the file: the process address minus the load
    /// bias; for return addresses, already pointing inside the call). Innermost first: DWARF
    /// functions (inlined ones included) with file:line; when DWARF names no function, the
    /// symbol table's name.
    pub fn symbols(&mut self, svma: u64) -> Vec<Symbol> {
        let mut out = Vec::new();
        if let Some(d) = &mut self.dwarf {
            d.want(&[svma]);
        }
        if let Some(ctx) = self.dwarf.as_ref().and_then(|d| d.context.as_ref()) {
            if let Ok(mut frames) = ctx.find_frames(svma).skip_all_loads() {
                while let Ok(Some(f)) = frames.next() {
                    let function = f
                        .function
                        .as_ref()
                        .and_then(|n| n.raw_name().ok())
                        .map(|n| Arc::from(demangle(&n)));
                    let (file, line) = match f.location {
                        Some(l) => (l.file.map(Arc::from), l.line),
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
            if let Some(name) = self.names().containing(svma) {
                let function = Some(Arc::from(demangle(name)));
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
    WANTED.contains(&id)
}

/// The DWARF context of `obj`. Sections stored uncompressed are borrowed from the file's
/// mapping; compressed ones are read from `cache` (its mapping is pushed to `maps`) or
/// decompressed into `sections` (and then written to `cache`). `sections`, `maps` and the
/// file's mapping must outlive the context: see [`ModuleDebug`]. What is decompressed is paid for from the run's
/// budget into `budget` ([`crate::limits`]): a section that would exceed the module's or the
/// run's share, or whose header states an implausible size, is left out (empty).
fn dwarf_of<'d>(
    obj: &object::File<'d, &'d [u8]>,
    file_key: Option<&crate::stack::dwarfcache::Key>,
    sections: &mut Vec<Box<[u8]>>,
    maps: &mut Vec<Mapped>,
    budget: &mut crate::limits::Reservation,
    cache: Option<&DwarfCache>,
) -> Option<Lookup> {
    use object::CompressionFormat;
    obj.section_by_name(".debug_info")?;
    let endian = if obj.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    // The wanted sections stored compressed, with their decompressed sizes.
    let compressed: Vec<(&'static str, usize)> = WANTED
        .iter()
        .filter_map(|id| {
            let c = obj.section_by_name(id.name())?.compressed_data().ok()?;
            let size = usize::try_from(c.uncompressed_size).ok()?;
            (c.format != CompressionFormat::None
                && crate::limits::plausible_inflate(c.data.len(), c.uncompressed_size))
            .then_some((id.name(), size))
        })
        .collect();
    // A large DWARF stored uncompressed (a program built with `-g`: tens of MB for a Rust
    // one) has nothing to inflate, but in the CLI's cache what is derived from it is kept all
    // the same: the unit index sorts every address range of every unit (0.5-1 ms for 8 MB),
    // paid by every `inspect` otherwise.
    use crate::stack::dwarfcache::INDEXED_PLAIN_DWARF;
    let info_size = obj.section_by_name(".debug_info").map_or(0, |s| s.size());
    let plain = compressed.is_empty();
    let key = cache
        .filter(|c| !plain || (c.indexes_plain_dwarf() && info_size >= INDEXED_PLAIN_DWARF))
        .and(file_key)
        .cloned();
    let cache = cache.filter(|_| key.is_some());
    let cached = key
        .as_ref()
        .and_then(|k| cache.and_then(|c| c.load(k, &compressed)));
    let mut fresh: Vec<(&'static str, usize)> = Vec::new();
    let mut degraded = false;
    let mut load = |id: gimli::SectionId| -> Result<Reader, ()> {
        let empty = Ok(gimli::EndianSlice::new(&[], endian));
        if !wanted(id) {
            return empty;
        }
        let Some(section) = obj.section_by_name(id.name()) else {
            return empty;
        };
        let Ok(c) = section.compressed_data() else {
            degraded = true;
            return empty;
        };
        let borrowed: Option<&[u8]> = if c.format == CompressionFormat::None {
            if c.data.len() as u64 > crate::limits::MAX_MAPPED_SECTION {
                degraded = true;
                return empty;
            }
            Some(c.data)
        } else {
            cached.as_ref().and_then(|m| m.section(id.name()))
        };
        if let Some(b) = borrowed {
            // SAFETY: `b` borrows the file's mapping or the cache file's, which the caller keeps
            // in the same `ModuleDebug` as the context (`file`, `maps`: fields declared after
            // `dwarf`, so dropped after it).
            let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) };
            return Ok(gimli::EndianSlice::new(bytes, endian));
        }
        // Paid for before anything is allocated: the module's share, then the run's.
        if !crate::limits::plausible_inflate(c.data.len(), c.uncompressed_size)
            || budget.bytes() + c.uncompressed_size > crate::limits::MAX_INFLATED_PER_MODULE
        {
            degraded = true;
            return empty;
        }
        let Some(reserved) = crate::limits::Reservation::take(c.uncompressed_size) else {
            degraded = true;
            return empty;
        };
        let Some(data) = inflate(&c) else {
            degraded = true;
            return empty;
        };
        budget.merge(reserved);
        // SAFETY: the bytes live in a boxed slice that is pushed to `sections` below and is
        // neither moved nor changed nor dropped while the context lives: the caller stores both
        // in one `ModuleDebug`, whose `dwarf` field is dropped before its `sections` field. The
        // context never hands out the 'static slices (`ModuleDebug::symbols` returns owned
        // strings).
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(data.as_ptr(), data.len()) };
        fresh.push((id.name(), sections.len()));
        sections.push(data);
        Ok(gimli::EndianSlice::new(bytes, endian))
    };
    let mut loaded = Vec::new();
    for id in WANTED {
        loaded.push((id, load(id).ok()?));
    }
    use crate::stack::dwarfcache::{to_words, words, INDEX_ARANGES, INDEX_ROOTS, INDEX_UNITS};
    use crate::stack::dwarfunits::{offsets_from_words, unit_offsets, UnitIndex};
    let slice = |want: gimli::SectionId| {
        loaded
            .iter()
            .find(|(id, _)| *id == want)
            .map_or(&[][..], |(_, r)| r.slice())
    };
    let (aranges, info) = (
        slice(gimli::SectionId::DebugAranges),
        slice(gimli::SectionId::DebugInfo),
    );
    // The index of the units, from the cache file when it has one that fits this file.
    let index_words = |name: &str, group: usize| {
        cached
            .as_ref()
            .and_then(|c| c.section(name))
            .and_then(|b| words(b, group))
    };
    let index = index_words(INDEX_ARANGES, 3)
        .and_then(|w| UnitIndex::from_words(&w, info.len()))
        .unwrap_or_else(|| UnitIndex::new(aranges, endian));
    let mut all_units =
        index_words(INDEX_UNITS, 1).and_then(|w| offsets_from_words(&w, info.len()));
    if let (Some(cache), Some(key)) = (cache, &key) {
        // (A plain DWARF only when it was read whole: an index derived from an empty
        // `.debug_info`, one too large to map, would never be used, nor replaced.)
        let sound = !plain || (!degraded && info.len() as u64 >= INDEXED_PLAIN_DWARF);
        if cached.is_none() && fresh.len() == compressed.len() && sound {
            // What a later process would derive from these sections goes with them.
            all_units = unit_offsets(info, endian);
            let derived = [
                (INDEX_ARANGES, to_words(index.to_words())),
                (
                    INDEX_UNITS,
                    to_words(all_units.iter().flatten().map(|&o| o as u64)),
                ),
                (INDEX_ROOTS, to_words(Roots::of(obj).to_words())),
            ];
            // Offsets are kept only with the units they index: none when the walk failed.
            let parts: Vec<(&str, &[u8])> = fresh
                .iter()
                .map(|&(n, i)| (n, &*sections[i]))
                .chain(
                    derived
                        .iter()
                        .filter(|(n, _)| *n != INDEX_UNITS || all_units.is_some())
                        .map(|(n, d)| (*n, &d[..])),
                )
                .collect();
            cache.store(key, &parts);
        }
    }
    if let Some(c) = cached {
        maps.push(c.into_map());
    }
    Some(Lookup {
        context: None,
        info: None,
        sections: loaded,
        index,
        all_units,
        units: None,
        failed: false,
        degraded,
    })
}

/// The sections [`wanted`].
const WANTED: [gimli::SectionId; 10] = {
    use gimli::SectionId as S;
    [
        S::DebugAbbrev,
        S::DebugAddr,
        S::DebugAranges,
        S::DebugInfo,
        S::DebugLine,
        S::DebugLineStr,
        S::DebugStr,
        S::DebugStrOffsets,
        S::DebugRanges,
        S::DebugRngLists,
    ]
};

/// A compressed section, decompressed (zlib straight into a buffer of the stated size, never
/// cleared first; zstd through `object`, which decodes into a buffer of the
/// stated size and no further). None when the data is damaged, does not fill exactly the
/// stated size, or the stated size is beyond [`crate::limits::plausible_inflate`]: the output
/// never exceeds the stated size, and the stated size is checked before anything is allocated.
fn inflate(c: &object::CompressedData<'_>) -> Option<Box<[u8]>> {
    let size = usize::try_from(c.uncompressed_size).ok()?;
    if !crate::limits::plausible_inflate(c.data.len(), c.uncompressed_size) {
        return None;
    }
    match c.format {
        object::CompressionFormat::Zlib => {
            // Inflated straight into the spare capacity: not zeroed first (an allocator that
            // does not hand out fresh pages for this, like the library's, would clear every
            // byte before zlib writes it: a third of a first dump's time).
            let mut out = Vec::with_capacity(size);
            let mut d = flate2::Decompress::new(true);
            let status = d
                .decompress_vec(c.data, &mut out, flate2::FlushDecompress::Finish)
                .ok()?;
            (status == flate2::Status::StreamEnd && d.total_out() == c.uncompressed_size)
                .then(|| out.into_boxed_slice())
        }
        _ => c
            .decompress()
            .ok()
            .map(|d| d.into_owned().into_boxed_slice()),
    }
}

/// Loaded module files, by the path they were opened with, and the symbols of each address
/// asked for (memoized).
#[derive(Default)]
pub struct FileSymbolizer {
    modules: HashMap<PathBuf, ModuleDebug>,
    /// Each module's thread entry points ([`FileSymbolizer::holds_root`]), with the file its
    /// symbols are read from ([`debug_source`], not looked up again for its DWARF).
    roots: HashMap<PathBuf, (PathBuf, Roots)>,
    cache: HashMap<(PathBuf, u64), Vec<Symbol>>,
    /// Where decompressed debug sections are read from and written to, if anywhere.
    dwarf_cache: Option<DwarfCache>,
    /// The names earlier runs gave each module's addresses, by the path it was opened with.
    memos: HashMap<PathBuf, NameMemo>,
}

/// The names a module's addresses were given before, by this process or an earlier one with
/// the same cache ([`crate::stack::dwarfcache::Kind::Names`]): what lets the first dump of a
/// fresh process name the C library's usual frames (`start_thread`, `__futex_abstimed_wait_common`,
/// `clone3`, ...) without setting up its DWARF, which cost 1-2 ms of a 6 ms first dump at
/// 20 threads. The file is keyed like the sections (the debug file's build id and identity:
/// a new debug file, or `libc6-dbg` installed since, is a new key) and holds the version of
/// the code that named them ([`NAMES_MAGIC`]); the names are those [`ModuleDebug::symbols`]
/// gave, byte for byte.
///
/// Layout of its one section (little-endian u64 numbers): [`NAMES_MAGIC`], the count `n`, the
/// `n` addresses sorted, the `n` offsets of their entries (from the section's start), then
/// each entry: its number of symbols, and for each symbol the function and the file (a
/// length, `u64::MAX` for none, then the bytes padded to 8) and the line (`u64::MAX` for
/// none). Everything is checked when read (sizes, UTF-8, caps); a damaged file names nothing.
#[derive(Default)]
struct NameMemo {
    /// The debug file's key; None when there is no cache or no build id (nothing read or
    /// written).
    key: Option<crate::stack::dwarfcache::Key>,
    /// The cache file, mapped, when there was one for this key.
    file: Option<crate::stack::dwarfcache::Cached>,
    /// Names given by this process that the file does not hold.
    fresh: std::collections::BTreeMap<u64, Vec<Symbol>>,
    /// The module's thread entry points, when this process found them and the file does not
    /// hold them (saved with the names: a large program's symbol table, 110 000 symbols for
    /// node, is then not read again by the next process).
    roots: Option<Roots>,
    /// Some of `fresh` (or `roots`) were not given to the cache yet.
    unsaved: bool,
}

/// First bytes of a names section: the format and the version of the code that wrote it
/// (another version may name addresses differently: its file is not read).
const NAMES_MAGIC: &[u8] = concat!("SDNAMES1 ", env!("CARGO_PKG_VERSION"), "\0").as_bytes();

/// At most this many addresses per module in a names file; each symbol string at most
/// [`MAX_NAME`] bytes, each address at most [`MAX_SYMBOLS`] symbols (inlined calls).
const MAX_NAMED: usize = 8192;
const MAX_NAME: usize = 4096;
const MAX_SYMBOLS: usize = 64;

impl NameMemo {
    /// The memo of the debug file whose cache key is `key`, from `cache`.
    fn open(key: Option<crate::stack::dwarfcache::Key>, cache: Option<&DwarfCache>) -> NameMemo {
        let Some(cache) = cache else {
            return NameMemo::default();
        };
        let file = key
            .as_ref()
            .and_then(|k| cache.load_names(k))
            .filter(|f| f.section("names").is_some_and(|b| names_table(b).is_some()));
        NameMemo {
            key,
            file,
            fresh: Default::default(),
            roots: None,
            unsaved: false,
        }
    }

    /// The names of `svma`, when known.
    fn get(&self, svma: u64) -> Option<Vec<Symbol>> {
        if let Some(s) = self.fresh.get(&svma) {
            return Some(s.clone());
        }
        let (bytes, count, at, i) = self.find(svma)?;
        names_entry(names_slot(bytes, count, at, i)?, 0)
    }

    /// Whether the names of `svma` are known (nothing decoded).
    fn contains(&self, svma: u64) -> bool {
        self.fresh.contains_key(&svma) || self.find(svma).is_some()
    }

    /// The file's names section, its count and tables, and the index of `svma` in it.
    fn find(&self, svma: u64) -> Option<(&[u8], usize, usize, usize)> {
        let bytes = self.file.as_ref()?.section("names")?;
        let (count, at) = names_table(bytes)?;
        let addr = |i: usize| word(bytes, at + 8 * i);
        // Binary search over the sorted addresses, read in place.
        let (mut lo, mut hi) = (0, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match addr(mid)?.cmp(&svma) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some((bytes, count, at, mid)),
            }
        }
        None
    }

    /// The entry points the file holds ([`crate::stack::dwarfcache::INDEX_ROOTS`], the same
    /// words as in a sections file), or those this process found.
    fn roots(&self) -> Option<Roots> {
        if let Some(r) = &self.roots {
            return Some(r.clone());
        }
        let section = self
            .file
            .as_ref()?
            .section(crate::stack::dwarfcache::INDEX_ROOTS)?;
        Roots::from_words(&crate::stack::dwarfcache::words(section, 2)?)
    }

    /// Remember the entry points this process found (to be saved), unless the file has them.
    fn found_roots(&mut self, roots: &Roots) {
        if self.key.is_some() && self.roots().is_none() {
            self.roots = Some(roots.clone());
            self.unsaved = true;
        }
    }

    /// Remember the names this process gave `svma` (to be saved).
    fn add(&mut self, svma: u64, symbols: &[Symbol]) {
        if self.key.is_some() && self.fresh.len() < MAX_NAMED {
            self.fresh.insert(svma, symbols.to_vec());
            self.unsaved = true;
        }
    }

    /// The file's entries and the fresh ones, encoded, and the entry points when known; None
    /// when nothing new was added since the last time.
    fn merged(&mut self) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        if !std::mem::take(&mut self.unsaved) {
            return None;
        }
        let mut all = self.fresh.clone();
        if let Some(bytes) = self.file.as_ref().and_then(|f| f.section("names")) {
            if let Some((count, at)) = names_table(bytes) {
                for i in 0..count {
                    if all.len() >= MAX_NAMED {
                        break;
                    }
                    let entry = word(bytes, at + 8 * i)
                        .zip(names_slot(bytes, count, at, i).and_then(|slot| names_entry(slot, 0)));
                    if let Some((svma, symbols)) = entry {
                        all.entry(svma).or_insert(symbols);
                    }
                }
            }
        }
        let roots = self
            .roots()
            .map(|r| crate::stack::dwarfcache::to_words(r.to_words()));
        Some((encode_names(&all), roots))
    }
}

/// The file the symbols of the module opened at `file` are read from: the one its entry points
/// were read from when they were, else [`debug_source`].
fn source_of(roots: &HashMap<PathBuf, (PathBuf, Roots)>, file: &Path, root: &Path) -> PathBuf {
    match roots.get(file) {
        Some((source, _)) => source.clone(),
        None => debug_source(file, root),
    }
}

/// The file at `source` mapped, with the cache key of the very file mapped (its build id and
/// the identity of the fd: not of whatever the path names a moment later, which a target may
/// switch under `/proc/PID/root`). None when it cannot be opened or mapped; no key without a
/// build id.
fn map_keyed(source: &Path) -> Option<(Mapped, Option<crate::stack::dwarfcache::Key>)> {
    let f = crate::kernel::rootfs::open_untrusted(source, crate::kernel::rootfs::MAX_MODULE_BYTES)
        .ok()?;
    let map = Mapped::of_file(&f)?;
    let key = crate::stack::elfhead::ElfHead::parse(map.bytes())
        .ok()
        .and_then(|head| crate::stack::dwarfcache::Key::of_file(head.build_id()?, &f));
    Some((map, key))
}

/// The cache key of the file at `source` from its headers and build-id note alone (read
/// through the capped cache: a large file someone else may write is not copied whole for it).
fn file_key(source: &Path) -> Option<crate::stack::dwarfcache::Key> {
    let f = crate::kernel::rootfs::open_untrusted(source, crate::kernel::rootfs::MAX_MODULE_BYTES)
        .ok()?;
    let len = f.metadata().ok()?.len();
    let cache = crate::limits::read_cache(&f, len);
    let used = std::cell::Cell::new(0);
    let head =
        crate::stack::elfhead::ElfHead::parse(crate::limits::Capped::new(&cache, len, &used))
            .ok()?;
    let build_id = head.build_id()?;
    crate::stack::dwarfcache::Key::of_file(build_id, &f)
}

/// The key of the debug file `source` (parsed as `obj`) in the cache: its build id and
/// identity (None without a build id).
fn cache_key<'d, R: object::ReadRef<'d>>(
    obj: &object::File<'d, R>,
    source: &Path,
) -> Option<crate::stack::dwarfcache::Key> {
    crate::stack::dwarfcache::Key::of(obj.build_id().ok().flatten()?, source)
}

/// The little-endian u64 at `at` of `bytes`.
fn word(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// The count of a names section and where its addresses start, when its header and both
/// tables fit in it.
fn names_table(bytes: &[u8]) -> Option<(usize, usize)> {
    let magic = NAMES_MAGIC.len() + (8 - NAMES_MAGIC.len() % 8) % 8;
    if bytes.get(..NAMES_MAGIC.len())? != NAMES_MAGIC {
        return None;
    }
    let count = usize::try_from(word(bytes, magic)?).ok()?;
    let at = magic + 8;
    if count > MAX_NAMED || at + 16 * count > bytes.len() {
        return None;
    }
    // The addresses strictly ascending (what the search assumes), the entries after the tables,
    // each starting after the one before (so no two share bytes: what is decoded from a file
    // is never more than the file).
    let strictly_ascending = |from: usize, floor: u64| {
        (0..count)
            .try_fold(floor, |prev, i| {
                let w = word(bytes, from + 8 * i)?;
                (i == 0 && w >= prev || w > prev).then_some(w)
            })
            .is_some()
    };
    let entries_at = (at + 16 * count) as u64;
    (strictly_ascending(at, 0) && strictly_ascending(at + 8 * count, entries_at))
        .then_some((count, at))
}

/// The bytes of the `i`-th entry of a names section (see [`names_table`]): from its offset to
/// the next entry's, or to the section's end for the last.
fn names_slot(bytes: &[u8], count: usize, at: usize, i: usize) -> Option<&[u8]> {
    let offset = |i: usize| usize::try_from(word(bytes, at + 8 * (count + i))?).ok();
    let end = if i + 1 < count {
        offset(i + 1)?
    } else {
        bytes.len()
    };
    bytes.get(offset(i)?..end)
}

/// The entry at `offset` of a names section.
fn names_entry(bytes: &[u8], mut offset: usize) -> Option<Vec<Symbol>> {
    let mut next = || {
        let w = word(bytes, offset)?;
        offset += 8;
        Some(w)
    };
    let n = usize::try_from(next()?)
        .ok()
        .filter(|&n| n <= MAX_SYMBOLS)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let text = |offset: &mut usize| -> Option<Option<Arc<str>>> {
            let len = word(bytes, *offset)?;
            *offset += 8;
            if len == u64::MAX {
                return Some(None);
            }
            let len = usize::try_from(len).ok().filter(|&l| l <= MAX_NAME)?;
            let s = std::str::from_utf8(bytes.get(*offset..offset.checked_add(len)?)?).ok()?;
            *offset += len + (8 - len % 8) % 8;
            Some(Some(Arc::from(s)))
        };
        let function = text(&mut offset)?;
        let file = text(&mut offset)?;
        let line = word(bytes, offset)?;
        offset += 8;
        out.push(Symbol {
            function,
            file,
            line: if line == u64::MAX {
                None
            } else {
                Some(u32::try_from(line).ok()?)
            },
        });
    }
    Some(out)
}

/// A names section holding `all` (see [`NameMemo`]).
fn encode_names(all: &std::collections::BTreeMap<u64, Vec<Symbol>>) -> Vec<u8> {
    let pad = |v: &mut Vec<u8>| v.resize(v.len() + (8 - v.len() % 8) % 8, 0);
    let mut entries = Vec::new();
    let mut offsets = Vec::with_capacity(all.len());
    let mut kept = Vec::with_capacity(all.len());
    for (&svma, symbols) in all {
        let fits = symbols.len() <= MAX_SYMBOLS
            && symbols.iter().all(|s| {
                s.function.as_deref().map_or(0, str::len) <= MAX_NAME
                    && s.file.as_deref().map_or(0, str::len) <= MAX_NAME
            });
        if !fits {
            continue;
        }
        kept.push(svma);
        offsets.push(entries.len());
        entries.extend_from_slice(&(symbols.len() as u64).to_le_bytes());
        for s in symbols {
            for text in [&s.function, &s.file] {
                match text {
                    Some(t) => {
                        entries.extend_from_slice(&(t.len() as u64).to_le_bytes());
                        entries.extend_from_slice(t.as_bytes());
                        pad(&mut entries);
                    }
                    None => entries.extend_from_slice(&u64::MAX.to_le_bytes()),
                }
            }
            let line = s.line.map_or(u64::MAX, u64::from);
            entries.extend_from_slice(&line.to_le_bytes());
        }
    }
    let mut out = NAMES_MAGIC.to_vec();
    pad(&mut out);
    out.extend_from_slice(&(kept.len() as u64).to_le_bytes());
    let base = out.len() + 16 * kept.len();
    for svma in &kept {
        out.extend_from_slice(&svma.to_le_bytes());
    }
    for o in offsets {
        out.extend_from_slice(&((base + o) as u64).to_le_bytes());
    }
    out.extend_from_slice(&entries);
    out
}

impl FileSymbolizer {
    /// A symbolizer that reads (and writes) decompressed debug sections in `cache`.
    pub fn with_cache(cache: DwarfCache) -> FileSymbolizer {
        FileSymbolizer {
            dwarf_cache: Some(cache),
            ..FileSymbolizer::default()
        }
    }

    /// The cache of decompressed debug sections, if any.
    pub fn dwarf_cache(&self) -> Option<&DwarfCache> {
        self.dwarf_cache.as_ref()
    }

    /// Symbols of `svma` (an address as stated in the module file: the process address minus
    /// the load bias) in the module opened at `file`; `root` is where separate debug files are
    /// looked up (`/` or `/proc/PID/root`). `svma` must already point inside the call for
    /// return addresses (the caller subtracts one).
    pub fn symbols(&mut self, file: &Path, root: &Path, svma: u64) -> Vec<Symbol> {
        let key = (file.to_path_buf(), svma);
        if let Some(s) = self.cache.get(&key) {
            return s.clone();
        }
        let out = match self.memo(file, root).get(svma) {
            Some(known) => known,
            None => {
                let module = self.module(file, root);
                let out = module.symbols(svma);
                // Only what the whole of the module's symbols said: not an empty answer, nor
                // one given while a section was left out (a budget used up, a file that could
                // not be mapped), which a later process might do better; and only under the
                // key of the file these names came from (the memo was opened separately: a
                // file switched in between must not lend its names to another's key).
                let keep = module.complete() && !out.is_empty();
                let from = module.key.clone();
                let memo = self.memo(file, root);
                if keep && from.is_some() && memo.key == from {
                    memo.add(svma, &out);
                }
                out
            }
        };
        self.cache.insert(key, out.clone());
        out
    }

    /// Set the module opened at `file` up for all of `svmas` at once (cheaper than one by one:
    /// see [`ModuleDebug::prepare`]); addresses named before (the names kept by earlier runs)
    /// are left out, and a module whose addresses all were is not even loaded.
    pub fn prepare(&mut self, file: &Path, root: &Path, svmas: &[u64]) {
        let memo = self.memo(file, root);
        let unknown: Vec<u64> = svmas
            .iter()
            .copied()
            .filter(|&a| !memo.contains(a))
            .collect();
        if !unknown.is_empty() {
            self.module(file, root).prepare(&unknown);
        }
    }

    /// The names memo of the module opened at `file`, read on first use (under the key of the
    /// file its symbols were read from, when they were).
    fn memo(&mut self, file: &Path, root: &Path) -> &mut NameMemo {
        let cache = self.dwarf_cache.as_ref();
        let roots = &self.roots;
        let loaded = self.modules.get(file).map(|m| m.key.clone());
        self.memos
            .entry(file.to_path_buf())
            .or_insert_with(|| match cache {
                None => NameMemo::default(),
                Some(_) => {
                    let key = loaded.unwrap_or_else(|| file_key(&source_of(roots, file, root)));
                    NameMemo::open(key, cache)
                }
            })
    }

    /// Give the cache the names this process found that it did not hold (written when the
    /// cache writes: at once for the CLI's, at [`DwarfCache::flush`] for the library's).
    pub fn save_names(&mut self) {
        let Some(cache) = &self.dwarf_cache else {
            return;
        };
        for memo in self.memos.values_mut() {
            if let Some((names, roots)) = memo.merged() {
                if let Some(key) = &memo.key {
                    cache.store_names(key, &names, roots.as_deref());
                }
            }
        }
    }

    /// The symbols of the module opened at `file`, loaded on first use.
    pub fn module(&mut self, file: &Path, root: &Path) -> &mut ModuleDebug {
        let cache = self.dwarf_cache.as_ref();
        let roots = &self.roots;
        self.modules
            .entry(file.to_path_buf())
            .or_insert_with(|| ModuleDebug::load_from(&source_of(roots, file, root), cache))
    }

    /// Whether `svma` lies in a thread entry point of the module opened at `file`, by its
    /// symbol table alone ([`Roots`], read on first use); None when the table names none.
    /// The names file of the module keeps them for later processes.
    pub fn holds_root(&mut self, file: &Path, root: &Path, svma: u64) -> Option<bool> {
        if !self.roots.contains_key(file) {
            let source = debug_source(file, root);
            // Known before, from the names file; else from the sections file or the table.
            let known = self.memo(file, root).roots();
            let roots = known.unwrap_or_else(|| {
                let (roots, sound) = Roots::load_checked(&source, self.dwarf_cache.as_ref());
                if sound {
                    self.memo(file, root).found_roots(&roots);
                }
                roots
            });
            self.roots.insert(file.to_path_buf(), (source, roots));
        }
        self.roots.get(file)?.1.holds(svma)
    }

    /// Use `debug` for the module opened at `file` (loaded elsewhere, e.g. on another thread).
    pub fn insert(&mut self, file: PathBuf, debug: ModuleDebug) {
        self.modules.insert(file, debug);
    }

    /// Forget every loaded module (the process's module set changed).
    pub fn clear(&mut self) {
        self.modules.clear();
        self.roots.clear();
        self.cache.clear();
        self.memos.clear();
    }
}

/// The one demangler of every path (the dumper's names from `backtrace`, the names read from
/// module files here): a raw symbol name, Rust (legacy or v0) or C++ (Itanium), as people read
/// it, without the hash of Rust's legacy mangling. A name that is not mangled (C) is returned
/// as it is. So a function has the same name in a dump and in `inspect`.
pub fn demangle(raw: &str) -> String {
    let demangled = addr2line::demangle_auto(raw.into(), None);
    strip_hash(&demangled).to_string()
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
    fn demangles_cpp_and_rust_alike_and_leaves_c_alone() {
        assert_eq!(
            demangle("_ZN13ObjectMonitor6EnterIEP10JavaThread"),
            "ObjectMonitor::EnterI(JavaThread*)"
        );
        assert_eq!(
            demangle("_ZN3std2rt10lang_start17h0123456789abcdefE"),
            "std::rt::lang_start"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
        assert_eq!(demangle("start_thread"), "start_thread");
        assert_eq!(demangle("main"), "main");
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

    /// Names given once are read back from the cache by a fresh symbolizer, which then loads
    /// no module at all; what it had to name itself is added to the file.
    #[test]
    fn names_are_read_back_from_the_cache_without_loading_the_module() {
        let (exe, addr) = own_file_address(
            names_are_read_back_from_the_cache_without_loading_the_module as *const () as u64,
        );
        let other = own_file_address(symbolizes_this_test_binary as *const () as u64).1;
        let root = Path::new("/");
        let dir = tempfile::tempdir().unwrap();
        let mut first = FileSymbolizer::with_cache(DwarfCache::at(dir.path()));
        first.prepare(&exe, root, &[addr]);
        let named = first.symbols(&exe, root, addr);
        assert!(named.iter().any(|s| s.function.as_deref().is_some_and(
            |f| f.ends_with("names_are_read_back_from_the_cache_without_loading_the_module")
        )));
        first.save_names();
        let mut second = FileSymbolizer::with_cache(DwarfCache::at(dir.path()));
        second.prepare(&exe, root, &[addr]);
        assert_eq!(second.symbols(&exe, root, addr), named);
        assert!(second.modules.is_empty(), "the module was loaded");
        // An address not in the file: named from the module, and saved with the others.
        let expected = FileSymbolizer::default().symbols(&exe, root, other);
        assert_eq!(second.symbols(&exe, root, other), expected);
        assert!(!second.modules.is_empty());
        second.save_names();
        let mut third = FileSymbolizer::with_cache(DwarfCache::at(dir.path()));
        assert_eq!(third.symbols(&exe, root, other), expected);
        assert_eq!(third.symbols(&exe, root, addr), named);
        assert!(third.modules.is_empty(), "the module was loaded");
    }

    /// Names are kept only under the key of the file they were read from: when the path named
    /// another file by the time the module was read than when its memo was opened (a target
    /// switching a file under `/proc/PID/root`), nothing is kept; without the switch, they are.
    #[test]
    fn names_are_kept_only_under_the_key_of_the_file_they_came_from() {
        let (exe, addr) = own_file_address(
            names_are_kept_only_under_the_key_of_the_file_they_came_from as *const () as u64,
        );
        let root = Path::new("/");
        let names_files = |dir: &Path| {
            std::fs::read_dir(dir.join("dwarf"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.path().extension().is_some_and(|x| x == "names"))
                        .count()
                })
                .unwrap_or(0)
        };
        for switched in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("module");
            std::fs::copy(&exe, &file).unwrap();
            let mut s = FileSymbolizer::with_cache(DwarfCache::at(dir.path().join("cache")));
            s.memo(&file, root);
            if switched {
                // Another file (same bytes, same build id) at the same path.
                let other = dir.path().join("other");
                std::fs::copy(&exe, &other).unwrap();
                std::fs::rename(&other, &file).unwrap();
            }
            let named = s.symbols(&file, root, addr);
            assert!(
                named.iter().any(|s| s
                    .function
                    .as_deref()
                    .is_some_and(|f| f.ends_with("the_file_they_came_from"))),
                "{named:?}"
            );
            s.save_names();
            let kept = names_files(&dir.path().join("cache"));
            assert_eq!(kept, usize::from(!switched), "switched: {switched}");
        }
    }

    /// The entry points a process found are kept with the names, and a later process takes
    /// them from there instead of reading the symbol table.
    #[test]
    fn entry_points_are_kept_with_the_names() {
        use crate::stack::dwarfcache::{to_words, words, INDEX_ROOTS};
        let (exe, addr) =
            own_file_address(entry_points_are_kept_with_the_names as *const () as u64);
        let root = Path::new("/");
        let dir = tempfile::tempdir().unwrap();
        let cache = DwarfCache::at(dir.path());
        let mut first = FileSymbolizer::with_cache(cache.clone());
        // This function is not an entry point; the executable's table names `_start`.
        assert_eq!(first.holds_root(&exe, root, addr), Some(false));
        first.save_names();
        let source = debug_source(&exe, root);
        let map = Mapped::open(&source).unwrap();
        let key = cache_key(&object::File::parse(map.bytes()).unwrap(), &source).unwrap();
        let file = cache.load_names(&key).unwrap();
        let stored = words(file.section(INDEX_ROOTS).unwrap(), 2).unwrap();
        assert_eq!(
            Roots::from_words(&stored).unwrap().ranges,
            Roots::load(&source).ranges
        );
        // A names file that says this function is one: believed (read from the file, not the
        // table).
        let names = encode_names(&Default::default());
        cache.store_names(&key, &names, Some(&to_words([addr, addr + 1])));
        let mut second = FileSymbolizer::with_cache(DwarfCache::at(dir.path()));
        assert_eq!(second.holds_root(&exe, root, addr), Some(true));
    }

    /// A names section gives back what was put in (no function, no file, no line, any
    /// UTF-8), and one that is damaged in any way names nothing.
    #[test]
    fn names_sections_round_trip_and_damage_names_nothing() {
        let sym = |f: Option<&str>, file: Option<&str>, line: Option<u32>| Symbol {
            function: f.map(Arc::from),
            file: file.map(Arc::from),
            line,
        };
        let mut all = std::collections::BTreeMap::new();
        all.insert(
            0x10,
            vec![
                sym(Some("inlined"), Some("a.c"), Some(3)),
                sym(Some("caller"), None, None),
            ],
        );
        all.insert(0x8, vec![]);
        all.insert(0x20, vec![sym(None, Some("é/ü.rs"), Some(u32::MAX - 1))]);
        let bytes = encode_names(&all);
        let (count, at) = names_table(&bytes).unwrap();
        assert_eq!(count, 3);
        for (&svma, symbols) in &all {
            let i = (0..count)
                .find(|&i| word(&bytes, at + 8 * i) == Some(svma))
                .unwrap();
            let offset = word(&bytes, at + 8 * (count + i)).unwrap() as usize;
            assert_eq!(names_entry(&bytes, offset).as_ref(), Some(symbols));
        }
        // Another version's file, a count beyond the tables, a truncated entry, bad UTF-8.
        let mut other = bytes.clone();
        other[3] ^= 1;
        assert!(names_table(&other).is_none());
        let mut big = bytes.clone();
        let count_at = at - 8;
        big[count_at..at].copy_from_slice(&1000u64.to_le_bytes());
        assert!(names_table(&big).is_none());
        // Two addresses pointing at one entry (a small file decoding into many copies of a
        // large entry), or addresses out of order: refused.
        let mut shared = bytes.clone();
        let first_offset = at + 8 * count;
        let o0 = shared[first_offset..first_offset + 8].to_vec();
        shared[first_offset + 8..first_offset + 16].copy_from_slice(&o0);
        assert!(names_table(&shared).is_none());
        let mut unsorted = bytes.clone();
        let a0 = unsorted[at..at + 8].to_vec();
        let a1 = unsorted[at + 8..at + 16].to_vec();
        unsorted[at..at + 8].copy_from_slice(&a1);
        unsorted[at + 8..at + 16].copy_from_slice(&a0);
        assert!(names_table(&unsorted).is_none());
        // Each entry is read within its own slot.
        for i in 0..count {
            let slot = names_slot(&bytes, count, at, i).unwrap();
            assert!(names_entry(slot, 0).is_some());
        }
        assert!(names_entry(&names_slot(&bytes, count, at, 1).unwrap()[..8], 0).is_none());
        let last = word(&bytes, at + 8 * (count + 2)).unwrap() as usize;
        assert!(names_entry(&bytes[..bytes.len() - 4], last).is_none());
        let mut bad = bytes.clone();
        let text = bad.windows(2).position(|w| w == "é".as_bytes()).unwrap();
        bad[text] = 0xff;
        assert!(names_entry(&bad, last).is_none());
        assert!(names_entry(&bytes, usize::MAX - 3).is_none());
    }

    /// Our own executable and the address `addr` of this process as stated in it.
    fn own_file_address(addr: u64) -> (PathBuf, u64) {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
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
        assert!(
            demangle(raw).ends_with("symbol_table_and_dwarf_name_the_same_function"),
            "{raw}"
        );
        let mut debug = ModuleDebug::load(&exe, root);
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

    /// The entry points found by one pass over the symbols ([`Roots`]) are those the sorted
    /// symbol table names ([`SymbolTable::containing`], glibc's `__GI_` aliases included), at
    /// the start and the middle of every function of the C library and of this test binary
    /// (and where the table kept another name of the same function), and the C library has
    /// some (`start_thread`, `clone3`).
    #[test]
    fn roots_are_the_entry_points_the_symbol_table_names() {
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let libc = maps
            .iter()
            .find(|m| m.path.contains("/libc.so"))
            .map(|m| PathBuf::from(&m.path))
            .unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        for module in [libc.clone(), exe] {
            let source = debug_source(&module, Path::new("/"));
            let table = SymbolTable::load(&source);
            let roots = Roots::load(&source);
            let by_table = |svma: u64| {
                table.containing(svma).is_some_and(|n| {
                    let n = demangle(n);
                    crate::stack::unwind::is_thread_root(n.strip_prefix("__GI_").unwrap_or(&n))
                })
            };
            let mut found = 0;
            for &(address, size, _, _) in &table.entries {
                for svma in [address, address + size / 2] {
                    let expected = by_table(svma);
                    found += usize::from(expected);
                    let holds = roots.holds(svma).unwrap_or(false);
                    // The table keeps one name per address, maybe a versioned alias
                    // (`__libc_start_main@GLIBC_2.2.5`): the pass over every symbol also
                    // sees the function's other names, so it may say yes where the table
                    // says no, inside a function whose start is an entry point's start.
                    let alias = holds
                        && !expected
                        && roots.ranges.iter().any(|&(start, _)| start == address);
                    assert!(
                        holds == expected || alias,
                        "{}: {svma:#x} ({:?}): roots {holds}, table {expected}",
                        source.display(),
                        table.containing(svma)
                    );
                }
            }
            if module == libc {
                assert!(found >= 2, "no entry point in {}", source.display());
            }
        }
    }

    /// Entry points without a type or a size (hand-written assembly; musl's `_start`) are
    /// found, and end where the next symbol (of any type) starts or, for the last one, where
    /// their section ends: assembled by `cc` into an object file.
    #[test]
    fn roots_without_a_type_or_a_size_end_at_the_next_symbol() {
        const ASM: &str = "\t.text\n\t.byte 0x90\n\
            \t.globl _start\n_start:\n\t.byte 0x90, 0x90\n\
            \t.globl helper\nhelper:\n\t.byte 0x90\n\
            \t.globl start_thread\n\t.type start_thread, @function\nstart_thread:\n\
            \t.byte 0x90, 0x90, 0x90\n\t.size start_thread, . - start_thread\n\
            \t.type after, @function\nafter:\n\t.byte 0x90\n\t.size after, . - after\n\
            \t.globl clone\nclone:\n\t.byte 0x90\n";
        let dir = tempfile::tempdir().unwrap();
        let (asm, obj) = (dir.path().join("roots.s"), dir.path().join("roots.o"));
        std::fs::write(&asm, ASM).unwrap();
        let cc = std::process::Command::new("cc")
            .arg("-c")
            .arg(&asm)
            .arg("-o")
            .arg(&obj)
            .status()
            .expect("cc (needed to assemble the test object)");
        assert!(cc.success(), "cc -c {}", asm.display());
        let roots = Roots::load(&obj);
        // _start 1..3 (untyped, no size), helper 3, start_thread 4..7, after 7..8, clone 8..
        // (untyped, no size) up to the end of .text at 9.
        for (svma, root) in [
            (1, true),
            (2, true),
            (3, false),
            (4, true),
            (6, true),
            (7, false),
            (8, true),
            (9, false),
            (100, false),
        ] {
            assert_eq!(roots.holds(svma), Some(root), "{svma:#x}: {roots:?}");
        }
    }

    /// Parsing only the units of the addresses asked for (and the units they refer to) names
    /// every address exactly as parsing the whole file does: on the C library's separate debug
    /// file when there is one (Debian: libc6-dbg; 4126 units, none referring to another), and
    /// on this test binary (Rust: units refer to each other with `DW_FORM_ref_addr`).
    #[test]
    fn only_the_units_asked_for_give_the_same_symbols_as_the_whole_file() {
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let libc = maps
            .iter()
            .find(|m| m.path.contains("/libc.so"))
            .map(|m| PathBuf::from(&m.path))
            .unwrap();
        let root = Path::new("/");
        let libc_debug = debug_source(&libc, root);
        if libc_debug == libc {
            eprintln!("no separate debug file for {}", libc.display());
        } else {
            same_symbols_by_units_and_whole(&libc_debug, true);
        }
        let exe = debug_source(&std::fs::read_link("/proc/self/exe").unwrap(), root);
        same_symbols_by_units_and_whole(&exe, false);
    }

    fn same_symbols_by_units_and_whole(source: &Path, must_be_partial: bool) {
        let table = SymbolTable::load(source);
        // Code in .text (linkers put discarded functions at address 0, where several units
        // then claim the same addresses).
        let data = std::fs::read(source).unwrap();
        let obj = object::File::parse(&*data).unwrap();
        let text = obj.section_by_name(".text").unwrap();
        let text = text.address()..text.address() + text.size();
        let step = (table.entries.len() / 400).max(1);
        let mut whole = ModuleDebug::load_from(source, None);
        let index = &whole.dwarf.as_ref().unwrap().index;
        // Code the aranges place (data symbols and code without DWARF are not theirs).
        let (svmas, elsewhere): (Vec<u64>, Vec<u64>) = table
            .entries
            .iter()
            .step_by(step)
            .filter(|e| e.1 > 1 && text.contains(&e.0))
            .flat_map(|e| [e.0, e.0 + e.1 / 2])
            .partition(|&a| index.unit_of(a).is_some());
        assert!(svmas.len() > 100, "{}", source.display());
        whole.whole();
        let mut prepared = ModuleDebug::load_from(source, None);
        prepared.prepare(&svmas);
        let mut one_by_one = ModuleDebug::load_from(source, None);
        // Through the cache: the first load writes the sections (compressed ones) and their
        // index (this test binary's DWARF, uncompressed and over INDEXED_PLAIN_DWARF: the index
        // alone), the second reads them (the unit offsets are known before any address is
        // asked for).
        let dir = tempfile::tempdir().unwrap();
        let cache = DwarfCache::at(dir.path());
        drop(ModuleDebug::load_from(source, Some(&cache)));
        let mut cached = ModuleDebug::load_from(source, Some(&cache));
        let from_cache = cached.dwarf.as_ref().unwrap().all_units.is_some();
        assert!(
            from_cache,
            "index of {} read from the cache",
            source.display()
        );
        // The library's cache (in a dump directory, written after the dump): the sections of a
        // compressed file and their index, nothing for a plain one (its index would be derived
        // on the first dump's time).
        let dump_dir = tempfile::tempdir().unwrap();
        let library = DwarfCache::in_dump_dir(dump_dir.path());
        drop(ModuleDebug::load_from(source, Some(&library)));
        library.flush();
        let again = ModuleDebug::load_from(source, Some(&library));
        assert_eq!(
            again.dwarf.as_ref().unwrap().all_units.is_some(),
            must_be_partial,
            "index of {} from the library's cache",
            source.display()
        );
        cached.prepare(&svmas);
        {
            // The cache file holds the index derived from the sections: the units' ranges,
            // their offsets, the entry points (read back as the loads read them).
            use crate::stack::dwarfcache::{words, INDEX_ARANGES, INDEX_ROOTS, INDEX_UNITS};
            let file = cache.load(&cache_key(&obj, source).unwrap(), &[]).unwrap();
            let section = |name: &str, group: usize| words(file.section(name).unwrap(), group);
            let index: Vec<u64> = whole.dwarf.as_ref().unwrap().index.to_words().collect();
            assert_eq!(section(INDEX_ARANGES, 3).unwrap(), index);
            let info = whole
                .dwarf
                .as_ref()
                .unwrap()
                .section(gimli::SectionId::DebugInfo)
                .slice();
            let offsets =
                crate::stack::dwarfunits::unit_offsets(info, gimli::RunTimeEndian::Little);
            let cached_offsets = cached.dwarf.as_ref().unwrap().all_units.clone();
            assert_eq!(cached_offsets, offsets);
            assert_eq!(
                section(INDEX_UNITS, 1).unwrap(),
                offsets
                    .unwrap()
                    .iter()
                    .map(|&o| o as u64)
                    .collect::<Vec<_>>()
            );
            let roots = Roots::load(source).ranges;
            assert!(
                !must_be_partial || !roots.is_empty(),
                "{}",
                source.display()
            );
            let stored = Roots::from_words(&section(INDEX_ROOTS, 2).unwrap()).unwrap();
            assert_eq!(stored.ranges, roots);
            assert_eq!(Roots::load_cached(source, Some(&cache)).ranges, roots);
        }
        let mut named = 0;
        for (i, &a) in svmas.iter().enumerate() {
            let expected = whole.symbols(a);
            assert_eq!(
                prepared.symbols(a),
                expected,
                "{:#x} in {}",
                a,
                source.display()
            );
            assert_eq!(cached.symbols(a), expected, "{a:#x} through the cache");
            if i % 16 == 0 {
                assert_eq!(one_by_one.symbols(a), expected, "{:#x}", a);
            }
            named += expected.iter().filter(|s| s.line.is_some()).count();
        }
        assert!(
            named > svmas.len() / 2,
            "DWARF named {named} of {}",
            svmas.len()
        );
        if must_be_partial {
            assert!(
                prepared.partial(),
                "every unit of {} was parsed",
                source.display()
            );
            assert!(one_by_one.partial());
        }
        // An address no arange places: the whole file, with the same answers.
        if let Some(&a) = elsewhere.first() {
            let expected = whole.symbols(a);
            assert_eq!(prepared.symbols(a), expected, "{a:#x}");
            assert!(!prepared.partial());
        }
    }
}
