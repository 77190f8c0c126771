//! Finding the interpreter: `_PyRuntime` and the type objects in the ELF symbol tables of the
//! executable and of any `libpython*` mapped in the process, looked up at dump time (so a
//! libpython loaded late with `dlopen` is found). Only the symbol tables are read, through a
//! read cache (not the whole file); results are kept per file across dumps.

use super::layout::Version;
use super::read::KnownCodes;
use crate::kernel::proc::Mapping;
use object::{Object, ObjectSegment, ObjectSymbol};
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
    // Reads checked against the file's real size and the caps before the cache allocates
    // (`crate::limits::Capped`): a sparse file may claim a symbol table of gigabytes.
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let cache = object::ReadCache::new(file);
    let used = std::cell::Cell::new(0);
    let capped = crate::limits::Capped::new(&cache, len, &used);
    let elf = object::File::parse(capped).map_err(|e| format!("not a readable ELF file: {e}"))?;
    let min_vaddr = elf.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
    let exec_segment = elf
        .segments()
        .find(|s| matches!(s.flags(), object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & 1 != 0))
        .map(|s| (s.file_range().0, s.address()));
    let mut values = HashMap::new();
    collect(elf.dynamic_symbols(), &mut values);
    // A static interpreter that does not export its symbols: the full symbol table, only for
    // files that look like Python (the table of a big program is large).
    if !values.contains_key("_PyRuntime") && base_name(&m.path).contains("python") {
        collect(elf.symbols(), &mut values);
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

fn collect<'d, S: ObjectSymbol<'d>>(
    syms: impl Iterator<Item = S>,
    values: &mut HashMap<&'static str, u64>,
) {
    for s in syms {
        if s.is_undefined() {
            continue;
        }
        if let Ok(name) = s.name() {
            if let Some(w) = WANTED.iter().find(|w| **w == name) {
                values.entry(*w).or_insert(s.address());
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
