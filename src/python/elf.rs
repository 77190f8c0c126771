//! Finding the interpreter: `_PyRuntime` and the type objects in the ELF symbol tables of the
//! executable and of any `libpython*` mapped in the process, looked up at dump time (so a
//! libpython loaded late with `dlopen` is found). The names are looked up through the dynamic
//! symbol table's hash section, as the dynamic linker does (a program that is not Python may
//! export tens of thousands of names); only a file named like Python has its full symbol table
//! searched. Only those tables are read: through a read cache from outside, in a transient
//! mapping in the process itself. Results are kept per file across dumps.

use super::layout::Version;
use super::read::KnownCodes;
use crate::kernel::proc::Mapping;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, Sym, SymbolTable};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Symbols we look up, by name.
const WANTED: &[&str] = &[
    "_PyRuntime",
    "Py_Version",
    "PyCode_Type",
    "PyFrame_Type",
    "PyUnicode_Type",
    "PyBytes_Type",
    "PyDict_Type",
    "PyLong_Type",
    "PyModule_Type",
];

/// Symbol values of one file (link-time addresses, before the load bias).
#[derive(Debug, Clone, Default)]
struct FileSymbols {
    values: HashMap<&'static str, u64>,
    /// Lowest `PT_LOAD` address, page aligned.
    min_vaddr: u64,
    /// File offset and address of the first executable `PT_LOAD` segment.
    exec_segment: Option<(u64, u64)>,
}

/// The interpreter found in a process: where its module is and its symbols' run-time addresses.
#[derive(Debug, Clone)]
pub struct Located {
    /// The path of the module holding `_PyRuntime` (the executable or a libpython).
    pub module: String,
    pub runtime: u64,
    /// `Py_Version` (3.11+).
    pub py_version: Option<u64>,
    pub code_type: Option<u64>,
    pub frame_type: Option<u64>,
    pub unicode_type: Option<u64>,
    pub bytes_type: Option<u64>,
    pub dict_type: Option<u64>,
    pub long_type: Option<u64>,
    pub module_type: Option<u64>,
    /// The version the file name says (`libpython3.10.so.1.0`, `python3.9`), if any.
    pub name_version: Option<Version>,
}

/// Looks for the interpreter; remembers what it learned about each file across dumps.
#[derive(Debug, Default)]
pub struct Finder {
    /// (path, inode, file size) → the file's symbols (None: not an interpreter / unreadable).
    files: HashMap<(String, u64, u64), Option<FileSymbols>>,
    /// The code objects the last read found, for a read of one thread taken again in the same
    /// dump ([`super::Limits::only`]); see [`Finder::forget_codes`].
    pub(crate) known: KnownCodes,
}

impl Finder {
    pub fn new() -> Finder {
        Finder::default()
    }

    /// Drop the code objects the last read found. A caller that keeps a `Finder` across dumps
    /// calls this once a dump is done: they are reused only within one, and they hold memory.
    pub fn forget_codes(&mut self) {
        self.known = KnownCodes::default();
    }

    /// Find `_PyRuntime` in the process whose maps are `maps`, opening files under `root` (`/`
    /// inside the process, `/proc/PID/root` from outside) and, failing that, through
    /// `/proc/PID/map_files/`. `Ok(None)`: not a CPython process.
    pub fn locate(
        &mut self,
        pid: i32,
        maps: &[Mapping],
        root: &Path,
    ) -> Result<Option<Located>, String> {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| {
                let s = p.to_string_lossy().into_owned();
                s.strip_suffix(" (deleted)")
                    .map(str::to_string)
                    .unwrap_or(s)
            });
        // Candidates: every libpython, then the executable.
        let mut candidates: Vec<&Mapping> = Vec::new();
        for m in maps
            .iter()
            .filter(|m| m.offset == 0 && m.path.starts_with('/'))
        {
            if candidates.iter().any(|c| c.path == m.path) {
                continue;
            }
            if base_name(&m.path).starts_with("libpython") {
                candidates.insert(0, m);
            } else if exe.as_deref() == Some(m.path.as_str()) {
                candidates.push(m);
            }
        }
        let mut problems = Vec::new();
        for m in candidates {
            let size = open_mapped(root, pid, m)
                .and_then(|f| f.metadata())
                .map(|md| md.len())
                .unwrap_or(0);
            let key = (m.path.clone(), m.inode, size);
            if !self.files.contains_key(&key) {
                let syms = match read_symbols(root, pid, m) {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push(format!("{}: {e}", m.path));
                        None
                    }
                };
                self.files.insert(key.clone(), syms);
            }
            let Some(Some(syms)) = self.files.get(&key) else {
                continue;
            };
            let Some(&runtime) = syms.values.get("_PyRuntime") else {
                continue;
            };
            let Some(bias) = load_bias(maps, m, syms) else {
                problems.push(format!(
                    "{}: mapped, but not as the loader maps a module",
                    m.path
                ));
                continue;
            };
            let at = |name: &str| syms.values.get(name).map(|v| v.wrapping_add(bias));
            return Ok(Some(Located {
                module: m.path.clone(),
                runtime: runtime.wrapping_add(bias),
                py_version: at("Py_Version"),
                code_type: at("PyCode_Type"),
                frame_type: at("PyFrame_Type"),
                unicode_type: at("PyUnicode_Type"),
                bytes_type: at("PyBytes_Type"),
                dict_type: at("PyDict_Type"),
                long_type: at("PyLong_Type"),
                module_type: at("PyModule_Type"),
                name_version: version_in_name(base_name(&m.path)),
            }));
        }
        if problems.is_empty() {
            Ok(None)
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The load bias of the module `first` is a mapping of. A file can be mapped more than once
/// at offset 0 (a symbolizer that `mmap`s a whole library to read its debug info, as the dumper
/// itself does): the loaded image is the offset-0 mapping whose executable segment is mapped
/// where that bias puts it.
fn load_bias(maps: &[Mapping], first: &Mapping, syms: &FileSymbols) -> Option<u64> {
    let same_file = |m: &&Mapping| m.path == first.path && m.inode == first.inode;
    let Some((x_offset, x_vaddr)) = syms.exec_segment else {
        return Some(first.start.wrapping_sub(syms.min_vaddr));
    };
    maps.iter()
        .filter(same_file)
        .filter(|m| m.offset == 0)
        .map(|m| m.start.wrapping_sub(syms.min_vaddr))
        .find(|&bias| {
            maps.iter().filter(same_file).any(|e| {
                e.executable
                    && e.offset == x_offset & !0xfff
                    && e.start == bias.wrapping_add(x_vaddr & !0xfff)
            })
        })
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn in_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The file mapped at `m`: through `map_files` (exactly what is mapped), else by its path in
/// the root, both opened the one safe way ([`crate::kernel::rootfs::open_untrusted`]).
fn open_mapped(root: &Path, pid: i32, m: &Mapping) -> std::io::Result<std::fs::File> {
    use crate::kernel::rootfs::{open_untrusted, MAX_MODULE_BYTES};
    let by_map = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
    open_untrusted(&by_map, MAX_MODULE_BYTES)
        .or_else(|_| open_untrusted(&in_root(root, &m.path), MAX_MODULE_BYTES))
}

/// The symbols we want from one file, or None when it has no `_PyRuntime`.
fn read_symbols(root: &Path, pid: i32, m: &Mapping) -> Result<Option<FileSymbols>, String> {
    let file = open_mapped(root, pid, m).map_err(|e| format!("cannot open: {e}"))?;
    let python_named = base_name(&m.path).contains("python");
    // In the process itself (the library), a file only root or we may write is mapped for
    // the look-up: the symbol and hash tables are read where they are, without a copy of a
    // big program's dynamic symbol table (node's: 1.8 MB, 3 ms). The mapping is gone when
    // this returns. From outside (inspect, as root) the capped cache below is used: a target
    // could truncate its file under a mapping and the fault would end the CLI.
    if pid == std::process::id() as i32 {
        if let Ok(map) = crate::stack::mapped::Mapped::map_if_safe(&file) {
            return symbols_of(map.bytes(), python_named);
        }
    }
    // Reads checked against the file's real size and the caps before the cache allocates
    // (`crate::limits::Capped`): a sparse file may claim a symbol table of gigabytes.
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let cache = crate::limits::read_cache(&file, len);
    let used = std::cell::Cell::new(0);
    symbols_of(crate::limits::Capped::new(&cache, len, &used), python_named)
}

/// [`read_symbols`] of the file whose bytes `data` reads.
fn symbols_of<'d, R: object::ReadRef<'d>>(
    data: R,
    python_named: bool,
) -> Result<Option<FileSymbols>, String> {
    let not_elf = |e: object::Error| format!("not a readable ELF file: {e}");
    match object::FileKind::parse(data).map_err(not_elf)? {
        object::FileKind::Elf64 => {
            elf_symbols::<elf::FileHeader64<object::Endianness>, _>(data, python_named)
        }
        object::FileKind::Elf32 => {
            elf_symbols::<elf::FileHeader32<object::Endianness>, _>(data, python_named)
        }
        _ => return Err("not an ELF file".to_string()),
    }
    .map_err(not_elf)
}

/// [`read_symbols`] of an ELF file. The wanted names are looked up in the dynamic symbol
/// table's hash section, as the dynamic linker does, so a big program that is not Python (node
/// exports 75 000 symbols) costs a few reads, not one per symbol name. Without a hash section
/// the table is searched, and for a static interpreter that does not export its symbols, only
/// in files that look like Python, the full symbol table.
fn elf_symbols<'d, Elf, R>(data: R, python_named: bool) -> object::Result<Option<FileSymbols>>
where
    Elf: FileHeader<Endian = object::Endianness>,
    R: object::ReadRef<'d>,
{
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let loads = || {
        header
            .program_headers(endian, data)
            .into_iter()
            .flatten()
            .filter(|p| p.p_type(endian) == elf::PT_LOAD)
    };
    let min_vaddr = loads().map(|p| p.p_vaddr(endian).into()).min().unwrap_or(0) & !0xfff;
    let exec_segment = loads()
        .find(|p| p.p_flags(endian) & elf::PF_X == elf::PF_X)
        .map(|p| (p.p_offset(endian).into(), p.p_vaddr(endian).into()));
    let sections = header.sections(endian, data)?;
    let mut values = HashMap::new();
    // Through a hash table when there is one that parses and every answer is a definition (a
    // chain may hold an undefined entry ahead of the definition); else the table is searched.
    let answers = hashed::<Elf, R>(endian, data, &sections);
    match answers {
        Some(a)
            if a.iter()
                .all(|(_, s)| s.map_or(true, |s| !s.is_undefined(endian))) =>
        {
            for (w, sym) in a {
                if let Some(sym) = sym {
                    values.insert(w, sym.st_value(endian).into());
                }
            }
        }
        _ => collect(
            endian,
            &sections.symbols(endian, data, elf::SHT_DYNSYM)?,
            &mut values,
        ),
    }
    if !values.contains_key("_PyRuntime") && python_named {
        collect(
            endian,
            &sections.symbols(endian, data, elf::SHT_SYMTAB)?,
            &mut values,
        );
    }
    if !values.contains_key("_PyRuntime") {
        return Ok(None);
    }
    Ok(Some(FileSymbols {
        values,
        min_vaddr,
        exec_segment,
    }))
}

/// The wanted names as the dynamic linker finds them: through the `.gnu.hash` section, else
/// the SysV `.hash`, each with the symbol table it links to. None when the file has neither,
/// or what it has does not parse (a hostile `bloom_shift` of 32 or more is refused before
/// `object` shifts by it).
#[allow(clippy::type_complexity)]
fn hashed<'d, Elf, R>(
    endian: Elf::Endian,
    data: R,
    sections: &object::read::elf::SectionTable<'d, Elf, R>,
) -> Option<Vec<(&'static str, Option<&'d Elf::Sym>)>>
where
    Elf: FileHeader,
    R: object::ReadRef<'d>,
{
    let versions = sections.versions(endian, data).ok()?.unwrap_or_default();
    // Each wanted name as `find(name)` answers it.
    let answers = |find: &dyn Fn(&[u8]) -> Option<&'d Elf::Sym>| {
        Some(WANTED.iter().map(|w| (*w, find(w.as_bytes()))).collect())
    };
    if let Some((gnu, link)) = sections.gnu_hash(endian, data).ok()? {
        let header = sections.gnu_hash_header(endian, data).ok()??;
        if header.bloom_shift.get(endian) >= 32 {
            return None;
        }
        let table = sections.symbol_table_by_index(endian, data, link).ok()?;
        return answers(&|name| {
            let hash = elf::gnu_hash(name);
            let found = gnu.find(endian, name, hash, None, &table, &versions);
            found.map(|(_, sym)| sym)
        });
    }
    let (sysv, link) = sections.hash(endian, data).ok()??;
    let table = sections.symbol_table_by_index(endian, data, link).ok()?;
    answers(&|name| {
        let found = sysv.find(endian, name, elf::hash(name), None, &table, &versions);
        found.map(|(_, sym)| sym)
    })
}

/// Every wanted name defined in `table`, the first definition of each.
fn collect<'d, Elf: FileHeader, R: object::ReadRef<'d>>(
    endian: Elf::Endian,
    table: &SymbolTable<'d, Elf, R>,
    values: &mut HashMap<&'static str, u64>,
) {
    let strings = table.strings();
    for s in table.symbols() {
        if s.is_undefined(endian) {
            continue;
        }
        if let Ok(name) = s.name(endian, strings) {
            if let Some(w) = WANTED.iter().find(|w| w.as_bytes() == name) {
                values.entry(*w).or_insert(s.st_value(endian).into());
            }
        }
    }
}

/// `3.10` from `libpython3.10.so.1.0`, `python3.9`, `libpython3.8d.so`.
pub fn version_in_name(name: &str) -> Option<Version> {
    let rest = &name[name.find("python")? + "python".len()..];
    let mut parts = rest.splitn(2, '.');
    let major: u8 = parts.next()?.parse().ok()?;
    let minor_text = parts.next()?;
    let digits: String = minor_text
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let minor: u8 = digits.parse().ok()?;
    Some(Version {
        major,
        minor,
        micro: None,
    })
}

/// A Python 2 interpreter mapped in the process (`libpython2.7.so.1.0`, or an executable named
/// `python2` / `python2.7`): it has no `_PyRuntime`, so [`Finder::locate`] finds nothing, but
/// the dump should say why there are no Python frames. Its version (from the name) and base name.
pub fn python2_module(maps: &[Mapping]) -> Option<(Version, String)> {
    maps.iter()
        .filter(|m| m.offset == 0 && m.path.starts_with('/'))
        .map(|m| base_name(&m.path))
        .filter(|n| n.starts_with("libpython2.") || *n == "python2" || n.starts_with("python2."))
        .find_map(|n| {
            let v = version_in_name(n).unwrap_or(Version {
                major: 2,
                minor: 7,
                micro: None,
            });
            (v.major == 2).then(|| (v, n.to_string()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build `src` with `cc` and `args` into `dir/name`; its bytes.
    fn built(dir: &Path, name: &str, src: &str, args: &[&str]) -> Vec<u8> {
        let (c, out) = (dir.join(format!("{name}.c")), dir.join(name));
        std::fs::write(&c, src).unwrap();
        let status = std::process::Command::new("cc")
            .args(args)
            .arg(&c)
            .arg("-o")
            .arg(&out)
            .status()
            .expect("cc (needed to build the test objects)");
        assert!(status.success(), "cc {args:?} {}", c.display());
        std::fs::read(out).unwrap()
    }

    /// The wanted symbols are found through the GNU hash table, the SysV one, and, for a
    /// static interpreter that does not export them, the full symbol table of a file that
    /// looks like Python only; a file that only refers to `_PyRuntime` is no interpreter.
    #[test]
    fn the_runtime_is_found_by_each_hash_table_and_in_the_full_table_of_a_static_python() {
        // Enough other exported names that a hash chain is not the whole table.
        let mut src = String::from("int _PyRuntime[64] = {1};\nint PyCode_Type[8] = {2};\n");
        for i in 0..300 {
            src += &format!("int other_{i}(void) {{ return {i}; }}\n");
        }
        src += "int main(void) { return _PyRuntime[0]; }\n";
        let dir = tempfile::tempdir().unwrap();
        let want = |bytes: &[u8], python_named: bool| {
            symbols_of(bytes, python_named).unwrap().map(|s| {
                let mut v: Vec<_> = s.values.keys().copied().collect();
                v.sort_unstable();
                v
            })
        };
        let both = Some(vec!["PyCode_Type", "_PyRuntime"]);
        for style in ["gnu", "sysv"] {
            let so = built(
                dir.path(),
                &format!("lib{style}.so"),
                &src,
                &["-shared", "-fPIC", &format!("-Wl,--hash-style={style}")],
            );
            assert_eq!(want(&so, false), both, "--hash-style={style}");
            if style == "gnu" {
                // A hostile shift in the header (object shifts by it): the table is searched.
                let file = object::File::parse(&so[..]).unwrap();
                let at = object::ObjectSection::file_range(
                    &object::Object::section_by_name(&file, ".gnu.hash").unwrap(),
                )
                .unwrap()
                .0 as usize;
                let mut bad = so.clone();
                bad[at + 12..at + 16].copy_from_slice(&40u32.to_ne_bytes());
                assert_eq!(want(&bad, false), both, "bloom_shift 40");
            }
        }
        // Exported from an executable (-rdynamic), as Debian's python3 does.
        let exe = built(dir.path(), "exported", &src, &["-rdynamic"]);
        assert_eq!(want(&exe, false), both);
        // Not exported: only in the full symbol table, read for a file named like Python.
        let hidden = built(dir.path(), "python-static", &src, &[]);
        assert_eq!(want(&hidden, false), None);
        assert_eq!(want(&hidden, true), both);
        // Stripped of its full table as well: nothing to find.
        let stripped = built(dir.path(), "python-stripped", &src, &["-s"]);
        assert_eq!(want(&stripped, true), None);
        // A library that uses `_PyRuntime` without defining it (an extension module).
        let user = built(
            dir.path(),
            "libuser.so",
            "extern int _PyRuntime[]; int f(void) { return _PyRuntime[0]; }\n",
            &["-shared", "-fPIC"],
        );
        assert_eq!(want(&user, true), None);
        assert!(symbols_of(&b"not an ELF file"[..], true).is_err());
    }

    #[test]
    fn python2_is_told_by_its_module_names() {
        let m = |path: &str| Mapping {
            start: 0x1000,
            end: 0x2000,
            readable: true,
            writable: false,
            executable: false,
            offset: 0,
            inode: 1,
            path: path.into(),
        };
        let found = |maps: &[Mapping]| python2_module(maps).map(|(v, n)| (v.major, v.minor, n));
        assert_eq!(
            found(&[
                m("/usr/lib/libc.so.6"),
                m("/opt/py/lib/libpython2.7.so.1.0")
            ]),
            Some((2, 7, "libpython2.7.so.1.0".into()))
        );
        assert_eq!(
            found(&[m("/usr/bin/python2.7")]),
            Some((2, 7, "python2.7".into()))
        );
        assert_eq!(found(&[m("/usr/bin/python3.11")]), None);
        assert_eq!(found(&[m("/usr/bin/python2-config-helper")]), None);
    }

    #[test]
    fn versions_in_names() {
        let v = |s| version_in_name(s).map(|v| (v.major, v.minor));
        assert_eq!(v("libpython3.10.so.1.0"), Some((3, 10)));
        assert_eq!(v("libpython3.8d.so"), Some((3, 8)));
        assert_eq!(v("python3.9"), Some((3, 9)));
        assert_eq!(v("python3.13t"), Some((3, 13)));
        assert_eq!(v("python3"), None);
        assert_eq!(v("libfoo.so"), None);
    }
}
