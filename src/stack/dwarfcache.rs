//! The CLI's cache of decompressed debug sections, keyed by build id.
//!
//! Separate debug files are usually shipped with their DWARF compressed (`SHF_COMPRESSED`:
//! Debian's `libc6-dbg` holds 8.6 MB of it in 3.2 MB of zlib). Inflating it is most of what
//! `stackdump inspect` spends on symbols: 15–40 ms of CPU for a C library, on every run, more
//! than the rest of a 100-thread inspect. The first run that needs a module's sections writes
//! them here, decompressed; later runs map that file instead (gdb's `index-cache` and
//! debuginfod's client cache do the same kind of thing, under `~/.cache` too).
//!
//! - Where: for the CLI, `$STACKDUMP_CACHE_DIR`, else `$XDG_CACHE_HOME/stackdump`, else
//!   `$HOME/.cache/stackdump`; `STACKDUMP_CACHE_DIR=off` (or empty) turns the cache off. The
//!   preloaded library, which never writes outside its dump directory, keeps its own in
//!   `$STACKDUMP_DIR/.stackdump-cache-<uid>` ([`DwarfCache::in_dump_dir`], at most
//!   [`LIBRARY_LIMIT`]): the first dump of any process of that user on the host inflates the C
//!   library's DWARF once, the first dump of every later process maps it. The library writes
//!   after its dump is written ([`DwarfCache::flush`]), not while it is being taken.
//! - What: one file per build id (`dwarf/<build id>.sections`), written to a temporary name
//!   and renamed, mode 0600 in a 0700 directory. A file is used only when its header names the
//!   same build id **and the same debug file** (device, inode, size, modification and change
//!   times: a file made from another file that claims the same build id, e.g. in a container,
//!   is never used for this one) and holds, for every compressed section the debug file has, a
//!   section of exactly the size the debug file's compression header states; anything else (a
//!   truncated or foreign file) is ignored and rewritten.
//! - Trust: the directories must be real directories (not symbolic links) owned by the user
//!   running the CLI and writable by nobody else, and a cache file a regular file owned by that
//!   user, opened without following symbolic links; otherwise the cache is not used. Only files
//!   named like ours are ever removed.
//! - How big: at most [`LIMIT`] bytes in all; the least recently used files are removed when a
//!   new one would go past it.
//!
//! A module without a build id is not cached.
//!
//! A second kind of file per build id, `<build id>.names` ([`Kind::Names`]), holds the names
//! earlier runs gave that module's addresses and the module's thread entry points
//! (`crate::stack::symbols::FileSymbolizer`: for a module without compressed debug sections,
//! such as a program's own binary, the entry points are otherwise one pass over its symbol
//! table in every process, 7-30 ms for node's 110 000 symbols); it has
//! the same header and checks, is not synced (small, rewritten whenever a dump named something
//! new; a damaged one names nothing) and is evicted with the others.
//!
//! Beside the sections, a file keeps what a first dump would otherwise derive from them by
//! reading them end to end ([`INDEX_SECTIONS`]): which units hold which addresses (from
//! `.debug_aranges`), where every unit of `.debug_info` starts, and where the thread entry
//! points are (from the debug file's symbol table). A first dump of a fresh process spent
//! 1.2-2 ms of its 5-8 ms on these, mostly page faults over the C library's 8 MB of
//! `.debug_info`; read from here they cost a copy of a few dozen KB. They are words (little-endian u64), checked when read
//! ([`words`]), and derived again when absent or implausible. In the CLI's cache, a file whose
//! DWARF is not compressed (a program or library built with `-g`, such as `libstackdump.so`
//! itself: 8 MB of `.debug_info`) has a `.sections` file too from [`INDEXED_PLAIN_DWARF`] of it
//! on, holding these index sections alone (its DWARF is read from the file): sorting its units'
//! address ranges cost every `inspect` of a preloaded process 0.5-1 ms.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The cache's size limit, all files together.
pub const LIMIT: u64 = 512 << 20;

/// The size limit of the library's cache in a dump directory.
pub const LIBRARY_LIMIT: u64 = 128 << 20;

/// Version 3: the index sections ([`INDEX_SECTIONS`]) were added; files of version 2 are
/// ignored and rewritten.
const MAGIC: &[u8; 8] = b"SDDWARF3";

/// `(begin, end, unit offset)` triples of `.debug_aranges`, sorted by begin
/// ([`crate::stack::dwarfunits::UnitIndex`]). The index sections' names hold the version of the
/// code that derived them (which ranges it keeps, which functions are entry points): another
/// version's are not read, and derived again.
pub const INDEX_ARANGES: &str = concat!("index.", env!("CARGO_PKG_VERSION"), ".1.aranges");
/// The offset of every unit of `.debug_info`, ascending
/// ([`crate::stack::dwarfunits::unit_offsets`]).
pub const INDEX_UNITS: &str = concat!("index.", env!("CARGO_PKG_VERSION"), ".1.units");
/// `[start, end)` pairs of the thread entry points ([`crate::stack::symbols::Roots`]).
pub const INDEX_ROOTS: &str = concat!("index.", env!("CARGO_PKG_VERSION"), ".1.roots");
/// The sections derived from the others, stored beside them (names that no ELF section has:
/// those start with a dot).
pub const INDEX_SECTIONS: [&str; 3] = [INDEX_ARANGES, INDEX_UNITS, INDEX_ROOTS];

/// In the CLI's cache, a file whose DWARF is stored uncompressed has an entry too (its index
/// sections only: the rest is read from the file itself) from this size of `.debug_info` on
/// ([`DwarfCache::indexes_plain_dwarf`]).
pub const INDEXED_PLAIN_DWARF: u64 = 1 << 20;

/// `values` as the bytes of an index section (little-endian u64 each).
pub fn to_words(values: impl IntoIterator<Item = u64>) -> Vec<u8> {
    values.into_iter().flat_map(u64::to_le_bytes).collect()
}

/// The words of an index section, when its length is a whole number of `group`s of words.
pub fn words(bytes: &[u8], group: usize) -> Option<Vec<u64>> {
    if group == 0 || bytes.len() % (8 * group) != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
            .collect(),
    )
}

/// The cache directory (see the module doc).
#[derive(Debug)]
pub struct DwarfCache {
    dir: PathBuf,
    limit: u64,
    /// Stores kept for [`DwarfCache::flush`] (the library's cache), instead of written at once.
    deferred: Option<std::sync::Mutex<Vec<Deferred>>>,
}

impl Clone for DwarfCache {
    /// The same cache (a clone starts with no put-off stores of its own).
    fn clone(&self) -> DwarfCache {
        DwarfCache {
            dir: self.dir.clone(),
            limit: self.limit,
            deferred: self
                .deferred
                .as_ref()
                .map(|_| std::sync::Mutex::new(Vec::new())),
        }
    }
}

/// A store put off until [`DwarfCache::flush`]: the key and a copy of the sections.
#[derive(Debug)]
struct Deferred {
    key: Key,
    kind: Kind,
    sections: Vec<(String, Vec<u8>)>,
}

/// A cache file, mapped: its sections by name.
pub struct Cached {
    map: crate::stack::mapped::Mapped,
    sections: Vec<(String, std::ops::Range<usize>)>,
}

impl Cached {
    /// The bytes of section `name` (e.g. `.debug_info`), decompressed.
    pub fn section(&self, name: &str) -> Option<&[u8]> {
        let (_, r) = self.sections.iter().find(|(n, _)| n == name)?;
        self.map.bytes().get(r.clone())
    }

    /// The mapping, to be kept alive as long as slices of [`Cached::section`] are used.
    pub fn into_map(self) -> crate::stack::mapped::Mapped {
        self.map
    }
}

impl DwarfCache {
    /// The cache the environment asks for (see the module doc), or None when it is turned off
    /// or no directory can be named.
    pub fn from_env() -> Option<DwarfCache> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let dir = match std::env::var_os("STACKDUMP_CACHE_DIR") {
            Some(v) if v.is_empty() || v == "off" => return None,
            Some(v) => PathBuf::from(v),
            // A relative XDG_CACHE_HOME is to be ignored (XDG Base Directory specification).
            None => {
                let parent = match var("XDG_CACHE_HOME").filter(|x| Path::new(x).is_absolute()) {
                    Some(x) => PathBuf::from(x),
                    None => PathBuf::from(var("HOME")?).join(".cache"),
                };
                // Our own home's cache directory may not exist yet (a named
                // STACKDUMP_CACHE_DIR must: nothing is created above it).
                use std::os::unix::fs::DirBuilderExt;
                let _ = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&parent);
                parent.join("stackdump")
            }
        };
        Some(DwarfCache::at(dir))
    }

    /// A cache in `dir` (created when first written).
    pub fn at(dir: impl Into<PathBuf>) -> DwarfCache {
        DwarfCache {
            dir: dir.into(),
            limit: LIMIT,
            deferred: None,
        }
    }

    /// The library's cache in its dump directory `dump_dir`: `.stackdump-cache-<uid>`, at most
    /// [`LIBRARY_LIMIT`] bytes, written only by [`DwarfCache::flush`].
    pub fn in_dump_dir(dump_dir: &Path) -> DwarfCache {
        DwarfCache {
            dir: dump_dir.join(format!(".stackdump-cache-{}", euid())),
            limit: LIBRARY_LIMIT,
            deferred: Some(std::sync::Mutex::new(Vec::new())),
        }
    }

    /// Whether a file whose DWARF is not compressed gets an entry (its index alone, from
    /// [`INDEXED_PLAIN_DWARF`] of `.debug_info` on): in the CLI's cache, not in the library's,
    /// where deriving it (a walk over every unit header, a pass over the symbol table) would
    /// be on the first dump's time for a module that needs neither.
    pub fn indexes_plain_dwarf(&self) -> bool {
        self.deferred.is_none()
    }

    /// Forget the stores put off so far (the library's cache).
    pub fn discard(&self) {
        if let Some(deferred) = &self.deferred {
            deferred.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// Write the stores put off so far (the library's cache); best effort.
    pub fn flush(&self) {
        let Some(deferred) = &self.deferred else {
            return;
        };
        let pending = std::mem::take(&mut *deferred.lock().unwrap_or_else(|e| e.into_inner()));
        for d in pending {
            let parts: Vec<(&str, &[u8])> = d
                .sections
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_slice()))
                .collect();
            let _ = self.try_store(&d.key, d.kind, &parts);
        }
    }

    #[cfg(test)]
    fn file(&self, build_id: &[u8]) -> PathBuf {
        self.dir
            .join("dwarf")
            .join(file_name(build_id, Kind::Sections))
    }

    /// The `dwarf/` directory, opened without following a symbolic link at it or at the cache
    /// directory, when both are directories we trust (see [`trusted`]); created first (0700)
    /// when `create`. Every later access goes through the returned descriptor, so a directory
    /// renamed or replaced by a link after the check is not followed. Nothing is created in a
    /// directory before it is checked.
    fn open_dwarf_dir(&self, create: bool) -> Option<std::os::fd::OwnedFd> {
        use nix::fcntl::{open, openat, OFlag};
        use nix::sys::stat::{mkdirat, Mode};
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let private = Mode::from_bits_truncate(0o700);
        if create {
            // The cache directory itself, not its parents: those must exist (`~/.cache` is
            // made by the default's caller, see from_env).
            let _ = nix::unistd::mkdir(&self.dir, private);
        }
        let top = open(&self.dir, flags, Mode::empty()).ok()?;
        if !trusted(&top) {
            return None;
        }
        if create {
            let _ = mkdirat(&top, "dwarf", private);
        }
        let dwarf = openat(&top, "dwarf", flags, Mode::empty()).ok()?;
        trusted(&dwarf).then_some(dwarf)
    }

    /// The cached sections of `key`, when there is a file and it holds every `expected`
    /// section (name, decompressed size) at its size.
    pub fn load(&self, key: &Key, expected: &[(&str, usize)]) -> Option<Cached> {
        self.load_kind(key, Kind::Sections, expected)
    }

    /// The names file of `key` ([`Kind::Names`]), when there is one for this very file.
    pub fn load_names(&self, key: &Key) -> Option<Cached> {
        self.load_kind(key, Kind::Names, &[])
    }

    fn load_kind(&self, key: &Key, kind: Kind, expected: &[(&str, usize)]) -> Option<Cached> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        if key.build_id.is_empty() {
            return None;
        }
        let dir = self.open_dwarf_dir(false)?;
        let path = fd_dir(&dir).join(file_name(&key.build_id, kind));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .ok()?;
        let meta = f.metadata().ok()?;
        if !meta.is_file() || meta.uid() != euid() {
            return None;
        }
        let map = crate::stack::mapped::Mapped::of_file(&f)?;
        let sections = parse(map.bytes(), key)?;
        let complete = expected.iter().all(|(name, size)| {
            sections
                .iter()
                .any(|(n, r)| n == name && r.end - r.start == *size)
        });
        if !complete {
            return None;
        }
        // Most recently used: the eviction order.
        let _ = f.set_modified(std::time::SystemTime::now());
        Some(Cached { map, sections })
    }

    /// Write the sections of `key` (name, decompressed bytes). Best effort: a cache that cannot
    /// be written is not an error (the next run decompresses again).
    pub fn store(&self, key: &Key, sections: &[(&str, &[u8])]) {
        self.store_kind(key, Kind::Sections, sections);
    }

    /// Write the names file of `key` ([`Kind::Names`]): the section `names`, and the module's
    /// entry points ([`INDEX_ROOTS`]) when given. Best effort.
    pub fn store_names(&self, key: &Key, names: &[u8], roots: Option<&[u8]>) {
        let mut sections = vec![("names", names)];
        if let Some(r) = roots {
            sections.push((INDEX_ROOTS, r));
        }
        self.store_kind(key, Kind::Names, &sections);
    }

    fn store_kind(&self, key: &Key, kind: Kind, sections: &[(&str, &[u8])]) {
        if key.build_id.is_empty() || sections.is_empty() {
            return;
        }
        if let Some(deferred) = &self.deferred {
            let bytes: u64 = sections.iter().map(|(_, d)| d.len() as u64).sum();
            let mut pending = deferred.lock().unwrap_or_else(|e| e.into_inner());
            let held: u64 = pending
                .iter()
                .flat_map(|d| &d.sections)
                .map(|(_, b)| b.len() as u64)
                .sum();
            // Copies held until the flush: at most half the cache's size in all.
            if held + bytes <= self.limit / 2 {
                // A newer store of the same file replaces the one not written yet.
                pending.retain(|d| !(d.kind == kind && d.key == *key));
                pending.push(Deferred {
                    key: key.clone(),
                    kind,
                    sections: sections
                        .iter()
                        .map(|(n, d)| (n.to_string(), d.to_vec()))
                        .collect(),
                });
            }
            return;
        }
        let _ = self.try_store(key, kind, sections);
    }

    fn try_store(&self, key: &Key, kind: Kind, sections: &[(&str, &[u8])]) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(dir_fd) = self.open_dwarf_dir(true) else {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        };
        let dir = fd_dir(&dir_fd);
        let bytes: u64 = sections.iter().map(|(_, d)| d.len() as u64).sum();
        if bytes > self.limit / 2 {
            return Ok(()); // one module may not take most of the cache
        }
        evict(&dir, self.limit.saturating_sub(bytes));
        let header = header(key, sections);
        let path = dir.join(file_name(&key.build_id, kind));
        let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), unique()));
        let result = (|| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            w.write_all(&header)?;
            for (_, data) in sections {
                w.write_all(data)?;
                w.write_all(&[0u8; 8][..pad8(data.len())])?;
            }
            let f = w.into_inner().map_err(|e| e.into_error())?;
            // On disk before it has its name: after a crash, a file is whole or absent. (A
            // names file is not synced: it is small, rewritten often, and one damaged by a
            // crash fails its checks and names nothing.)
            if kind == Kind::Sections {
                f.sync_data()?;
            }
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// What a cache file is for: a debug file, by build id and by identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    build_id: Vec<u8>,
    /// Device, inode, size, modification and change times (ns) of the debug file.
    identity: [u64; 5],
}

impl Key {
    /// The key of the debug file at `source`, whose build id is `build_id`.
    pub fn of(build_id: &[u8], source: &Path) -> Option<Key> {
        let f =
            crate::kernel::rootfs::open_untrusted(source, crate::kernel::rootfs::MAX_MODULE_BYTES)
                .ok()?;
        Key::of_file(build_id, &f)
    }

    /// The key of the open debug file `f`, whose build id is `build_id`: the identity of the
    /// very file read (not of whatever its path names a moment later).
    pub fn of_file(build_id: &[u8], f: &std::fs::File) -> Option<Key> {
        use std::os::unix::fs::MetadataExt;
        let m = f.metadata().ok()?;
        let ns = |s: i64, n: i64| {
            (s as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(n as u64)
        };
        Some(Key {
            build_id: build_id.to_vec(),
            identity: [
                m.dev(),
                m.ino(),
                m.size(),
                ns(m.mtime(), m.mtime_nsec()),
                ns(m.ctime(), m.ctime_nsec()),
            ],
        })
    }
}

/// Our effective uid.
fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// The open directory `dir` is owned by us and writable by nobody else.
fn trusted(dir: &std::os::fd::OwnedFd) -> bool {
    nix::sys::stat::fstat(dir).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFDIR && st.st_uid == euid() && st.st_mode & 0o022 == 0
    })
}

/// The path of an open directory: names under it are looked up in that very directory.
fn fd_dir(dir: &std::os::fd::OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/thread-self/fd/{}", dir.as_raw_fd()))
}

/// What a cache file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The decompressed debug sections and their index (`<build id>.sections`).
    Sections,
    /// The names of the addresses earlier dumps named (`<build id>.names`, see
    /// `crate::stack::symbols::FileSymbolizer`).
    Names,
}

/// The cache file of a build id.
fn file_name(build_id: &[u8], kind: Kind) -> String {
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    match kind {
        Kind::Sections => format!("{hex}.sections"),
        Kind::Names => format!("{hex}.names"),
    }
}

/// Whether `name` is one of the files this module writes: `<hex>.sections`, or a temporary
/// `.<pid>.<n>.tmp`.
fn ours(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(stem) = name
        .strip_suffix(".sections")
        .or_else(|| name.strip_suffix(".names"))
    {
        return hex(stem);
    }
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .and_then(|n| n.split_once('.'))
        .is_some_and(|(pid, n)| digits(pid) && digits(n))
}

/// A number no other store of this process used (temporary file names).
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn pad8(n: usize) -> usize {
    (8 - n % 8) % 8
}

/// The file's header: magic, build id, the debug file's identity, then (name, offset, length)
/// of each section; the
/// sections follow, each at an offset that is a multiple of 8. All numbers little-endian u64.
fn header(key: &Key, sections: &[(&str, &[u8])]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(MAGIC);
    let put = |h: &mut Vec<u8>, v: u64| h.extend_from_slice(&v.to_le_bytes());
    let put_bytes = |h: &mut Vec<u8>, b: &[u8]| {
        put(h, b.len() as u64);
        h.extend_from_slice(b);
        h.extend_from_slice(&[0u8; 8][..pad8(b.len())]);
    };
    put_bytes(&mut h, &key.build_id);
    for v in key.identity {
        put(&mut h, v);
    }
    put(&mut h, sections.len() as u64);
    let table_len: usize = sections
        .iter()
        .map(|(n, _)| 8 + n.len() + pad8(n.len()) + 16)
        .sum();
    let mut offset = (h.len() + table_len) as u64;
    for (name, data) in sections {
        put_bytes(&mut h, name.as_bytes());
        put(&mut h, offset);
        put(&mut h, data.len() as u64);
        offset += (data.len() + pad8(data.len())) as u64;
    }
    h
}

/// The sections a cache file holds, when it is well formed and is that of `key`.
fn parse(file: &[u8], key: &Key) -> Option<Vec<(String, std::ops::Range<usize>)>> {
    let mut c = Cursor { file, at: 0 };
    if c.take(8)? != MAGIC {
        return None;
    }
    let id_len = c.num()?;
    if c.take(id_len)? != key.build_id {
        return None;
    }
    c.take(pad8(id_len))?;
    for v in key.identity {
        if c.take(8)? != v.to_le_bytes() {
            return None;
        }
    }
    let count = c.num()?;
    if count > 64 {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = c.num()?;
        let name = std::str::from_utf8(c.take(len)?).ok()?.to_string();
        c.take(pad8(len))?;
        let offset = c.num()?;
        let size = c.num()?;
        let range = offset..offset.checked_add(size)?;
        if range.end > file.len() {
            return None;
        }
        out.push((name, range));
    }
    Some(out)
}

/// Reads a cache file's header.
struct Cursor<'a> {
    file: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.file.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(b)
    }

    fn num(&mut self) -> Option<usize> {
        usize::try_from(u64::from_le_bytes(self.take(8)?.try_into().ok()?)).ok()
    }
}

/// Remove the least recently used files of `dir` until at most `keep` bytes are left.
fn evict(dir: &Path, keep: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            if !ours(e.file_name().to_str()?) {
                return None;
            }
            let m = e.metadata().ok()?; // of the entry itself: a symbolic link is not a file
            if !m.is_file() {
                return None;
            }
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= keep {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total = total.saturating_sub(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &[u8], identity: u64) -> Key {
        Key {
            build_id: id.to_vec(),
            identity: [1, 2, 3, 4, identity],
        }
    }

    #[test]
    fn stores_and_loads_only_what_matches() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DwarfCache::at(dir.path().join("c"));
        let k = key(&[0xab, 0xcd, 0xef, 1, 2], 5);
        let info = vec![7u8; 1001];
        let line = b"line program".to_vec();
        assert!(cache.load(&k, &[(".debug_info", 1001)]).is_none());
        cache.store(&k, &[(".debug_info", &info), (".debug_line", &line)]);
        let got = cache
            .load(&k, &[(".debug_info", 1001), (".debug_line", line.len())])
            .expect("stored");
        assert_eq!(got.section(".debug_info"), Some(&info[..]));
        assert_eq!(got.section(".debug_line"), Some(&line[..]));
        assert_eq!(got.section(".debug_str"), None);
        // Another build id, another debug file with the same build id, another size, a
        // section it lacks: not used.
        assert!(cache
            .load(&key(&[0xab, 0xcd], 5), &[(".debug_info", 1001)])
            .is_none());
        assert!(cache
            .load(&key(&k.build_id, 6), &[(".debug_info", 1001)])
            .is_none());
        assert!(cache.load(&k, &[(".debug_info", 1000)]).is_none());
        assert!(cache.load(&k, &[(".debug_abbrev", 3)]).is_none());
        // The file is private, its directories too.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache.file(&k.build_id)), 0o600);
        assert_eq!(mode(&dir.path().join("c")), 0o700);
        assert_eq!(mode(&dir.path().join("c/dwarf")), 0o700);
    }

    #[test]
    fn a_damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DwarfCache::at(dir.path());
        let k = key(&[9u8; 20], 1);
        let info = vec![1u8; 4096];
        cache.store(&k, &[(".debug_info", &info)]);
        let path = cache.file(&k.build_id);
        let whole = std::fs::read(&path).unwrap();
        for cut in [0, 7, 8, 40, whole.len() - 1] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert!(
                cache.load(&k, &[(".debug_info", 4096)]).is_none(),
                "cut at {cut}"
            );
        }
        let mut bad = whole.clone();
        bad[0] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(cache.load(&k, &[(".debug_info", 4096)]).is_none());
        std::fs::write(&path, &whole).unwrap();
        assert!(cache.load(&k, &[(".debug_info", 4096)]).is_some());
    }

    /// Symbolic links and directories others may write are not used; a FIFO in place of a
    /// cache file does not block.
    #[test]
    fn an_untrusted_place_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let k = key(&[1, 2, 3], 1);
        let info = vec![3u8; 100];
        DwarfCache::at(&real).store(&k, &[(".debug_info", &info)]);
        let want = [(".debug_info", 100)];
        assert!(DwarfCache::at(&real).load(&k, &want).is_some());
        // Through a symbolic link: neither read nor written.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(DwarfCache::at(&link).load(&k, &want).is_none());
        let k2 = key(&[4, 5, 6], 1);
        DwarfCache::at(&link).store(&k2, &[(".debug_info", &info)]);
        assert!(!DwarfCache::at(&real).file(&k2.build_id).exists());
        // A link to a directory without a cache: nothing is created in it.
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let to_victim = dir.path().join("to-victim");
        std::os::unix::fs::symlink(&victim, &to_victim).unwrap();
        DwarfCache::at(&to_victim).store(&k2, &[(".debug_info", &info)]);
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
        // A group-writable directory.
        std::fs::set_permissions(real.join("dwarf"), std::fs::Permissions::from_mode(0o770))
            .unwrap();
        assert!(DwarfCache::at(&real).load(&k, &want).is_none());
        std::fs::set_permissions(real.join("dwarf"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        // A cache file that is a FIFO, or a symbolic link to a good file.
        let path = DwarfCache::at(&real).file(&k.build_id);
        let saved = dir.path().join("saved");
        std::fs::rename(&path, &saved).unwrap();
        let c = std::ffi::CString::new(path.as_os_str().to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(DwarfCache::at(&real).load(&k, &want).is_none());
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&saved, &path).unwrap();
        assert!(DwarfCache::at(&real).load(&k, &want).is_none());
    }

    #[test]
    fn evicts_the_least_recently_used_of_its_own_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("0a.sections");
        let new = dir.path().join("0b.sections");
        let foreign = dir.path().join("libc.so.6");
        for p in [&old, &new, &foreign] {
            std::fs::write(p, vec![0u8; 1000]).unwrap();
        }
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for p in [&old, &foreign] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
        evict(dir.path(), 1500);
        assert!(!old.exists());
        assert!(new.exists());
        assert!(foreign.exists(), "not ours: never removed");
        evict(dir.path(), 0);
        assert!(!new.exists());
        assert!(foreign.exists());
        assert!(ours(".12.3.tmp") && ours("93ac.sections"));
        assert!(!ours("x.sections") && !ours(".tmp") && !ours(".1.tmp") && !ours("a.so"));
    }

    #[test]
    fn file_names_are_the_build_id_in_hex() {
        let c = DwarfCache::at("/x");
        assert_eq!(c.file(&[0x0f, 0xa0]), Path::new("/x/dwarf/0fa0.sections"));
    }
}
