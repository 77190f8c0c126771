//! Unwinding copied stacks with DWARF CFI (`.eh_frame`), for the dumper (its own process, after
//! the capture) and for the CLI (another process, from outside).
//!
//! Owns the set of loaded modules as framehop sees them. Every module of the process is known
//! from the maps with its load bias (from its headers); its unwind tables (the address ranges
//! of `.text` and `.got`, the bytes of `.eh_frame` and `.eh_frame_hdr`) are read, in the process
//! itself, when a stack first goes through it ([`Modules::ensure`]: a process of 40 libraries
//! reads the two its stacks use), from outside at once (before any thread is copied), once, and kept across dumps together with framehop's rule cache; each dump
//! only adds what was mapped since and drops what was unmapped. A file mapped twice shares its
//! tables; the main executable's are read where the loader mapped them. Module files are opened through
//! a root directory (`/` inside the process, `/proc/PID/root` from outside, so containers work)
//! with `/proc/PID/map_files/` as the fallback; the `[vdso]` is read from memory.

use crate::kernel::proc::Mapping;
use crate::stack::elfhead::ElfHead;
use framehop::Unwinder;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Functions a complete stack ends in: the thread entry points of glibc and musl, and `_start`.
/// A stack whose last frames are none of these is truncated.
pub const THREAD_ROOTS: &[&str] = &[
    "clone3",
    "__clone3",
    "clone",
    "__clone",
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
    "start_thread",
];

/// How many of a stack's outermost frames are looked at for its thread's entry point: `_start`
/// of a stripped executable has no name, so the frame before it counts too.
pub const ROOT_FRAMES: usize = 2;

/// Whether `function` is a thread entry point (one of [`THREAD_ROOTS`]).
pub fn is_thread_root(function: &str) -> bool {
    THREAD_ROOTS.contains(&function)
}

/// The one judge of "does this stack end at its thread's entry point", for every caller (the
/// dumper and `inspect`, on unwound addresses during the capture and on symbolized frames
/// after it). `outermost` yields the stack's frames from the outermost one inward;
/// `names_root(frame)` says whether that frame names an entry point ([`is_thread_root`]). True
/// when one of the [`ROOT_FRAMES`] outermost frames does.
pub fn ends_at_thread_root<F>(
    outermost: impl IntoIterator<Item = F>,
    names_root: impl FnMut(F) -> bool,
) -> bool {
    outermost.into_iter().take(ROOT_FRAMES).any(names_root)
}

/// Whether an unwound stack is complete, as a capture decides whether to keep a copy: it hit
/// the frame limit, or it ends at its thread's entry point ([`ends_at_thread_root`]; the
/// caller's `names_root(ip, is_return)` says whether a function at that address, inlined ones
/// included, is an entry point).
pub fn unwound_complete(raw: &RawFrames, mut names_root: impl FnMut(u64, bool) -> bool) -> bool {
    raw.end == UnwindEnd::FrameLimit
        || ends_at_thread_root(raw.addrs.iter().rev(), |&(ip, is_return)| {
            names_root(ip, is_return)
        })
}

/// Whether a symbolized stack is truncated: it hit the frame limit, or it does not end at its
/// thread's entry point ([`ends_at_thread_root`] over its frames, inlined ones not counted).
pub fn is_truncated(end: UnwindEnd, frames: &[crate::model::Frame]) -> bool {
    match end {
        UnwindEnd::FrameLimit => true,
        UnwindEnd::Clean | UnwindEnd::Stopped => {
            !ends_at_thread_root(frames.iter().rev().filter(|f| !f.inlined), |f| {
                f.function.as_deref().is_some_and(is_thread_root)
            })
        }
    }
}

/// Unwinds a copied stack from its registers, and says whether the stack is complete (it ends
/// at a thread entry point, or at the frame limit).
pub type UnwindCopy<'a> = dyn FnMut(&Regs, &[u8]) -> (RawFrames, bool) + 'a;

/// The registers an unwind starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    pub pc: u64,
    pub sp: u64,
    /// Frame pointer (rbp on x86_64, x29 on aarch64); 0 when unknown.
    pub fp: u64,
    /// Link register (x30 on aarch64); 0 on x86_64 or when unknown.
    pub lr: u64,
}

/// The memory of a process (ours or another), read with `process_vm_readv`: a page that is
/// not mapped ends the read instead of faulting.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    pub pid: i32,
}

impl ProcessMemory {
    /// Read up to `buf.len()` bytes at `addr`; returns how many were read (0 on error).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
        let len = buf.len();
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let mut local = [IoSliceMut::new(buf)];
        process_vm_readv(nix::unistd::Pid::from_raw(self.pid), &mut local, &remote).unwrap_or(0)
    }

    /// Read one native-endian u64.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut word = [0u8; 8];
        (self.read(addr, &mut word) == 8).then(|| u64::from_ne_bytes(word))
    }
}

/// Where module files are found.
#[derive(Debug, Clone)]
pub struct ModuleSource {
    /// Prefix for paths from `maps`: `/` inside, `/proc/PID/root` outside.
    pub root: PathBuf,
    /// `/proc/self` or `/proc/PID`, for `map_files/` and memory.
    pub proc_dir: PathBuf,
    pub memory: ProcessMemory,
}

impl ModuleSource {
    /// Our own process.
    pub fn this_process() -> ModuleSource {
        ModuleSource {
            root: PathBuf::from("/"),
            proc_dir: PathBuf::from("/proc/self"),
            memory: ProcessMemory {
                pid: std::process::id() as i32,
            },
        }
    }

    /// Another process, seen through its root (containers, PrivateTmp).
    pub fn process(pid: i32) -> ModuleSource {
        ModuleSource {
            root: PathBuf::from(format!("/proc/{pid}/root")),
            proc_dir: PathBuf::from(format!("/proc/{pid}")),
            memory: ProcessMemory { pid },
        }
    }

    /// Open a module file: by its path under the root, or, when that fails (the file was
    /// deleted or replaced since it was mapped, e.g. by a deploy), through
    /// `map_files/START-END` of its first mapping, which still reaches the mapped file.
    fn open(&self, path: &str, first: &Range<u64>) -> std::io::Result<(std::fs::File, PathBuf)> {
        use crate::kernel::rootfs::{open_untrusted, MAX_MODULE_BYTES};
        let by_map = || {
            let p = self
                .proc_dir
                .join(format!("map_files/{:x}-{:x}", first.start, first.end));
            open_untrusted(&p, MAX_MODULE_BYTES).map(|f| (f, p))
        };
        // Another process's module: exactly the mapped file when we may read `map_files`
        // (root), whatever was renamed over its path since it was mapped.
        if path.ends_with(" (deleted)") || self.proc_dir != Path::new("/proc/self") {
            if let Ok(found) = by_map() {
                return Ok(found);
            }
        }
        let inside = Path::new(path).strip_prefix("/").unwrap_or(Path::new(path));
        let p = self.root.join(inside);
        open_untrusted(&p, MAX_MODULE_BYTES)
            .map(|f| (f, p))
            .or_else(|_| by_map())
    }
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use super::Regs as RawRegs;
    pub type Unwinder = framehop::x86_64::UnwinderX86_64<super::SectionBytes>;
    pub type Cache = framehop::x86_64::CacheX86_64;
    pub fn regs(r: &RawRegs) -> framehop::x86_64::UnwindRegsX86_64 {
        framehop::x86_64::UnwindRegsX86_64::new(r.pc, r.sp, r.fp)
    }
    /// glibc's `__restore_rt`: `mov $15, %rax; syscall` (rt_sigreturn).
    pub const SIGRETURN_CODE: &[u8] = &[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
    /// At the trampoline, `sp` points at the `ucontext_t` (the handler's return popped the
    /// trampoline address). `uc_mcontext.gregs` starts at offset 40; RBP, RSP and RIP are
    /// entries 10, 15 and 16.
    pub fn restore_signal_frame(
        sp: u64,
        mut read: impl FnMut(u64) -> Result<u64, ()>,
    ) -> Option<RawRegs> {
        let gregs = sp.checked_add(40)?;
        Some(RawRegs {
            fp: read(gregs + 10 * 8).ok()?,
            sp: read(gregs + 15 * 8).ok()?,
            pc: read(gregs + 16 * 8).ok()?,
            lr: 0,
        })
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::Regs as RawRegs;
    pub type Unwinder = framehop::aarch64::UnwinderAarch64<super::SectionBytes>;
    pub type Cache = framehop::aarch64::CacheAarch64;
    pub fn regs(r: &RawRegs) -> framehop::aarch64::UnwindRegsAarch64 {
        framehop::aarch64::UnwindRegsAarch64::new(r.lr, r.sp, r.fp)
    }
    /// Signal frames are not restored on aarch64 yet: the unwind stops there.
    pub const SIGRETURN_CODE: &[u8] = &[];
    pub fn restore_signal_frame(
        _sp: u64,
        _read: impl FnMut(u64) -> Result<u64, ()>,
    ) -> Option<RawRegs> {
        None
    }
}

/// A loaded object: where it is mapped and how to turn an address into a file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub path: std::sync::Arc<str>,
    pub range: Range<u64>,
    /// Load bias: AVMA = SVMA + bias.
    pub bias: u64,
    /// Where the file can be opened from here (under the root, or through `map_files` when it
    /// was deleted or replaced); None for the vdso.
    pub file: Option<PathBuf>,
}

/// How an unwind ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindEnd {
    /// The unwinder found the root of the stack.
    Clean,
    /// The unwinder could not go further (missing CFI, stack window too small, bad data).
    Stopped,
    /// The frame limit was reached.
    FrameLimit,
}

/// Frames of one thread: `(address, is_return_address)`, innermost first.
pub struct RawFrames {
    pub addrs: Vec<(u64, bool)>,
    pub end: UnwindEnd,
}

/// All modules of the process, for unwinding and for naming addresses.
pub struct Modules {
    unwinder: arch::Unwinder,
    cache: arch::Cache,
    /// By start of range.
    loaded: HashMap<u64, ModuleInfo>,
    /// Sorted by range start, for lookups.
    sorted: Vec<ModuleInfo>,
    /// Modules that could not be read (path → why), reported in the dump's errors.
    pub problems: Vec<String>,
    /// Return addresses known to be (or not be) the signal trampoline.
    trampolines: HashMap<u64, bool>,
    source: ModuleSource,
    memory: ProcessMemory,
    /// The bytes of unwind tables each loaded module keeps, by start of range (their sum is
    /// at most [`crate::limits::MAX_UNWIND_PER_RUN`]).
    kept: HashMap<u64, u64>,
    /// Where the functions of each module start (SVMAs of its FDEs, from `.eh_frame_hdr`,
    /// sorted), by start of range: see [`Modules::function_start`].
    starts: HashMap<u64, FunctionStarts>,
    /// The unwind sections read, while a loaded module holds them.
    shared: SharedSections,
    /// The sections of the main executable read in place, by start of range.
    views: HashMap<u64, Vec<SectionBytes>>,
    /// The instances whose unwind tables are not read yet (see [`Modules::ensure`]), with
    /// their executable mappings.
    pending: HashMap<u64, (Instance, Vec<Range<u64>>)>,
    /// The range of a module [`Modules::ensure`] last found with nothing to read (a stack's
    /// frames are mostly in one module after another: one comparison for most of them).
    settled: Range<u64>,
    /// The instances whose tables could not be read: tried again at the next sync (a host
    /// out of file descriptors now may not be at the next dump).
    failed: HashMap<u64, Instance>,
}

/// The bytes of one unwind section of a module file, shared by every loaded instance of that
/// file and by its function-start table: node maps part of its executable a second time (V8's
/// builtins), and that instance reads the same 3.3 MB of tables, which are not copied again.
/// The main executable's sections are not copied at all: they are read where the loader
/// mapped them ([`crate::stack::mapped::InPlace`]).
#[derive(Clone)]
pub struct SectionBytes(std::sync::Arc<Bytes>);

/// Where the bytes of a section are.
enum Bytes {
    /// Read from the file.
    Copied(Vec<u8>),
    /// In the process's own mapping of its main executable.
    InPlace(crate::stack::mapped::InPlace),
}

impl SectionBytes {
    /// The view, when the bytes are read in place.
    fn in_place(&self) -> Option<&crate::stack::mapped::InPlace> {
        match &*self.0 {
            Bytes::InPlace(p) => Some(p),
            Bytes::Copied(_) => None,
        }
    }
}

impl Default for SectionBytes {
    fn default() -> SectionBytes {
        SectionBytes(std::sync::Arc::new(Bytes::Copied(Vec::new())))
    }
}

impl std::ops::Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &*self.0 {
            Bytes::Copied(v) => v,
            Bytes::InPlace(p) => p.bytes(),
        }
    }
}

/// A module file as it was opened: the same file (not only the same path) has the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(f: &std::fs::File) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = f.metadata().ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The sections read so far, by file and file range, for as long as a module keeps them.
#[derive(Default)]
struct SharedSections(HashMap<(FileId, u64, u64), std::sync::Weak<Bytes>>);

impl SharedSections {
    /// The section at `offset..offset + size` of file `id`: `in_place()`, else the bytes a
    /// loaded module holds, else `read(offset, size)`; with how many of its bytes count in the
    /// budget (all of them, shared too, so that the budget holds whichever module goes first;
    /// none when in place).
    fn get(
        &mut self,
        id: Option<FileId>,
        (offset, size): (u64, u64),
        in_place: impl FnOnce() -> Option<crate::stack::mapped::InPlace>,
        read: &dyn Fn(u64, u64) -> Option<Vec<u8>>,
    ) -> Option<(SectionBytes, u64)> {
        let key = id.map(|id| (id, offset, size));
        let shared = || {
            key.and_then(|k| self.0.get(&k))
                .and_then(std::sync::Weak::upgrade)
        };
        let bytes = match in_place() {
            Some(view) => std::sync::Arc::new(Bytes::InPlace(view)),
            None => match shared() {
                Some(bytes) => bytes,
                None => std::sync::Arc::new(Bytes::Copied(read(offset, size)?)),
            },
        };
        if let Some(k) = key {
            self.0.insert(k, std::sync::Arc::downgrade(&bytes));
        }
        let held = match &*bytes {
            Bytes::Copied(v) => v.len() as u64,
            Bytes::InPlace(_) => 0,
        };
        Some((SectionBytes(bytes), held))
    }

    /// Forget the sections no loaded module holds any more.
    fn prune(&mut self) {
        self.0.retain(|_, w| w.strong_count() > 0);
    }
}

impl Modules {
    /// An empty module set for the process that `source` describes.
    pub fn new(source: ModuleSource) -> Modules {
        Modules {
            kept: HashMap::new(),
            starts: HashMap::new(),
            shared: SharedSections::default(),
            views: HashMap::new(),
            pending: HashMap::new(),
            settled: 0..0,
            failed: HashMap::new(),
            unwinder: arch::Unwinder::new(),
            cache: arch::Cache::new(),
            loaded: HashMap::new(),
            sorted: Vec::new(),
            problems: Vec::new(),
            trampolines: HashMap::new(),
            memory: source.memory,
            source,
        }
    }
}

/// One mapped instance of an object file: its path, the whole range it covers, and the mapping
/// its load bias is computed from (the first one: file offset 0 for an object the loader
/// mapped; another offset for a part of a file mapped again elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    path: String,
    range: Range<u64>,
    anchor: Range<u64>,
    anchor_offset: u64,
}

/// True for a mapping of a file (not anonymous memory, not a pseudo mapping such as `[heap]`).
fn is_file(m: &Mapping) -> bool {
    m.path.starts_with('/') && m.inode != 0
}

/// Group the file-backed mappings of `maps` (sorted by address, as the kernel lists them) into
/// object instances. The `[vdso]` counts as an object.
///
/// The loader reserves the whole span of an object and maps its segments inside it, so one
/// instance is its mapping of file offset 0 and every later mapping of the same file up to the
/// next mapping of another file (or a pseudo mapping such as `[heap]`); anonymous memory in
/// between belongs to it. That covers a `.bss` between two segments (a BOLT-optimized library
/// such as rustc's `librustc_driver` has its code and unwind tables in a segment after its
/// `.bss`), guard pages, and code an executable remapped to anonymous (huge) pages at the same
/// addresses. A mapping of the file at another offset that does not continue an instance is an
/// instance of its own (V8 maps its embedded builtins again from the executable elsewhere); its
/// load bias is computed from the segment holding that offset ([`bias_of`]).
fn objects(maps: &[Mapping]) -> Vec<Instance> {
    let mut out: Vec<Instance> = Vec::new();
    // The instance that later mappings of its file may continue, and the part of its file
    // (start and end offsets) the last file mapping seen maps.
    let mut open: Option<usize> = None;
    let mut last = (0u64, 0u64);
    for m in maps {
        let vdso = m.path == "[vdso]";
        if !(is_file(m) || vdso) {
            if !m.path.is_empty() && !m.path.starts_with("[anon:") {
                open = None;
            }
            continue;
        }
        // A later segment of the same load: it maps the file from where the previous mapping
        // ended (segments share at most a page of the file), and it is at least as far from
        // the anchor in memory as in the file (the loader maps segments in file order, and
        // addresses grow at least as fast as offsets). Another copy of the same part of the
        // file (V8 maps its builtins again for each code range) or a mapping of the whole
        // file as data (node reads its own executable) is a new instance.
        let continues = open.filter(|&i| {
            let o = &out[i];
            o.path == m.path
                && !vdso
                && m.offset > last.0
                && m.offset.saturating_add(4096) >= last.1
                && m.start - o.anchor.start >= m.offset - o.anchor_offset
        });
        last = (m.offset, m.offset.saturating_add(m.end - m.start));
        match continues {
            Some(i) => out[i].range.end = m.end,
            None => {
                open = Some(out.len());
                out.push(Instance {
                    path: m.path.clone(),
                    range: m.start..m.end,
                    anchor: m.start..m.end,
                    anchor_offset: m.offset,
                });
            }
        }
    }
    // Keep only objects with executable code.
    out.retain(|o| {
        maps.iter()
            .any(|m| m.executable && m.start >= o.range.start && m.end <= o.range.end)
    });
    out
}

/// The load bias of an object instance whose mapping at `anchor` maps the file from
/// `anchor_offset`: for offset 0, its lowest segment is at `anchor` (the loader's layout);
/// otherwise the segment whose file range holds the offset is. None when no segment does.
fn bias_of<'d, R: object::ReadRef<'d>>(
    file: &ElfHead<'d, R>,
    anchor: u64,
    anchor_offset: u64,
) -> Option<u64> {
    let page = 4096u64;
    if anchor_offset == 0 {
        let lowest = file.segments().map(|s| s.address).min()?;
        return Some(anchor.wrapping_sub(lowest & !(page - 1)));
    }
    // Segments may share a page of the file; one that starts on the mapped page is the one
    // mapped there, else the one holding the offset.
    let holding = |exact: bool| {
        file.segments().find_map(|s| {
            let (offset, size) = s.file_range;
            let first_page = offset & !(page - 1);
            let holds = if exact {
                first_page == anchor_offset
            } else {
                first_page <= anchor_offset && anchor_offset < offset.checked_add(size)?
            };
            // The page at `anchor_offset` is mapped at `anchor`; the segment's first page
            // holds its address rounded down.
            holds.then(|| {
                let svma = (s.address & !(page - 1)).wrapping_add(anchor_offset - first_page);
                anchor.wrapping_sub(svma)
            })
        })
    };
    holding(true).or_else(|| holding(false))
}

impl Modules {
    /// Bring the module set in line with `maps`. Returns true when it changed.
    pub fn sync(&mut self, maps: &[Mapping]) -> bool {
        self.settled = 0..0; // what is pending is decided again below
        let current = objects(maps);
        let mut changed = false;
        // Gone, or (the main executable) no longer mapped where its tables were read.
        let stale: Vec<u64> = self
            .loaded
            .iter()
            .filter(|(start, info)| {
                !current.iter().any(|o| {
                    o.range.start == **start
                        && *o.path == *info.path
                        && o.range.end == info.range.end
                }) || self.views.get(*start).is_some_and(|views| {
                    views
                        .iter()
                        .any(|v| v.in_place().is_some_and(|p| !p.still_mapped(maps)))
                })
            })
            .map(|(s, _)| *s)
            .collect();
        for start in stale {
            self.unwinder.remove_module(start);
            self.loaded.remove(&start);
            self.pending.remove(&start);
            self.failed.remove(&start);
            self.kept.remove(&start);
            self.starts.remove(&start);
            self.views.remove(&start);
            changed = true;
        }
        self.shared.prune();
        // New instances: where their file is and their load bias now (module_of and the
        // symbols need them); their unwind tables when a stack first goes through them
        // ([`Modules::ensure`]), so that a process of 40 libraries (PostgreSQL) does not read
        // the tables of all 40 for the two its stacks go through. The vdso (a few KB) at once.
        let code = |range: &Range<u64>| -> Vec<Range<u64>> {
            maps.iter()
                .filter(|m| m.executable && range.start <= m.start && m.end <= range.end)
                .map(|m| m.start..m.end)
                .collect()
        };
        for (start, instance) in std::mem::take(&mut self.failed) {
            let code = code(&instance.range);
            self.pending.insert(start, (instance, code));
        }
        for instance in current {
            let start = instance.range.start;
            if self.loaded.contains_key(&start) {
                continue;
            }
            if instance.path == "[vdso]" {
                changed |= self.load_now(instance);
                continue;
            }
            match probe(&self.source, &instance) {
                Ok((bias, file)) => {
                    self.loaded.insert(
                        start,
                        ModuleInfo {
                            path: instance.path.as_str().into(),
                            range: instance.range.clone(),
                            bias,
                            file: Some(file),
                        },
                    );
                    let code = code(&instance.range);
                    self.pending.insert(start, (instance, code));
                    changed = true;
                }
                Err(why) => self.problem(&instance.path, &why),
            }
        }
        if changed {
            self.sorted = self.loaded.values().cloned().collect();
            self.sorted.sort_by_key(|m| m.range.start);
        }
        changed
    }

    /// Read the unwind tables of the instance starting at `instance.range.start` and hand
    /// them to framehop. True when it was not known before (the vdso).
    fn load_now(&mut self, instance: Instance) -> bool {
        let again = instance.clone();
        let Instance {
            path,
            range,
            anchor,
            anchor_offset,
        } = instance;
        let kept: u64 = self.kept.values().sum();
        let remaining = crate::limits::MAX_UNWIND_PER_RUN.saturating_sub(kept);
        let loaded = load(
            &self.source,
            &mut self.shared,
            &path,
            range.clone(),
            (anchor, anchor_offset),
            remaining,
        );
        match loaded {
            Ok(m) => {
                self.kept.insert(range.start, m.kept);
                self.starts.insert(range.start, m.starts);
                if !m.views.is_empty() {
                    self.views.insert(range.start, m.views);
                }
                self.unwinder.add_module(m.module);
                let info = ModuleInfo {
                    path: path.into(),
                    range,
                    bias: m.bias,
                    file: m.file,
                };
                let before = self.loaded.insert(info.range.start, info.clone());
                if before.as_ref().is_some_and(|b| *b != info) {
                    // What the headers said before the tables were read: the file's word now.
                    if let Some(s) = self
                        .sorted
                        .iter_mut()
                        .find(|s| s.range.start == info.range.start)
                    {
                        *s = info;
                    }
                }
                before.is_none()
            }
            Err(why) => {
                self.problem(&path, &why);
                if path != "[vdso]" {
                    self.failed.insert(range.start, again);
                }
                false
            }
        }
    }

    /// Say once why a module has no unwind data.
    fn problem(&mut self, path: &str, why: &str) {
        if !self.problems.iter().any(|p| p.starts_with(path)) {
            self.problems
                .push(format!("{path}: no unwind data ({why})"));
        }
    }

    /// Read the unwind tables of the module holding `addr`, if they are not read yet and
    /// `addr` is in its code (an address in its data, a stack word the frame-pointer recovery
    /// looks at, reads nothing).
    pub fn ensure(&mut self, addr: u64) {
        if self.pending.is_empty() || self.settled.contains(&addr) {
            return;
        }
        let Some(range) = self.module_of(addr).map(|m| m.range.clone()) else {
            return;
        };
        match self.pending.get(&range.start) {
            Some((_, code)) if code.iter().any(|c| c.contains(&addr)) => {
                if let Some((instance, _)) = self.pending.remove(&range.start) {
                    self.load_now(instance);
                }
            }
            Some(_) => {} // not in its code: read when an address in it comes
            None => self.settled = range,
        }
    }

    /// Read the unwind tables of every module now (tests; a caller about to unwind stacks
    /// through all of them, or that cannot check a blocked thread after its unwind).
    pub fn load_all(&mut self) {
        let starts: Vec<u64> = self.pending.keys().copied().collect();
        for start in starts {
            if let Some((instance, _)) = self.pending.remove(&start) {
                self.load_now(instance);
            }
        }
    }

    /// Whether the unwind tables of the module starting at `start` are read.
    pub fn tables_read(&self, start: u64) -> bool {
        self.loaded.contains_key(&start) && !self.pending.contains_key(&start)
    }

    /// Every module, by address.
    pub fn list(&self) -> &[ModuleInfo] {
        &self.sorted
    }

    /// The module containing `addr`.
    pub fn module_of(&self, addr: u64) -> Option<&ModuleInfo> {
        let i = self.sorted.partition_point(|m| m.range.start <= addr);
        let m = self.sorted.get(i.checked_sub(1)?)?;
        (addr < m.range.end).then_some(m)
    }

    /// The start of the function containing `addr`: the FDE (CFI) covering it, per the
    /// module's `.eh_frame_hdr` (None without one).
    pub fn function_start(&mut self, addr: u64) -> Option<u64> {
        self.ensure(addr);
        let m = self.module_of(addr)?;
        let svma = addr.wrapping_sub(m.bias);
        let start = self.starts.get(&m.range.start)?.start_of(svma)?;
        Some(start.wrapping_add(m.bias))
    }

    /// Unwind one copied stack: `stack[0]` is the byte at `regs.sp`.
    ///
    /// Reads outside the copy go to the live memory of the process only when `live` is set
    /// (the thread is known not to run: blocked in a system call) or after a signal frame
    /// moved the unwind to another stack (the interrupted code cannot run while its handler
    /// does). Signal frames (the `rt_sigreturn` trampoline) are unwound by restoring the
    /// registers saved in the `ucontext` on the stack, so a thread inside a signal handler of
    /// the host shows the handler *and* the code it interrupted.
    pub fn unwind(
        &mut self,
        regs: &Regs,
        stack: &[u8],
        max_frames: usize,
        live: bool,
    ) -> RawFrames {
        let sp0 = regs.sp;
        let mut hopped = false;
        let memory = self.memory;
        let read = |addr: u64, hopped: bool| -> Result<u64, ()> {
            if let Some(off) = addr.checked_sub(sp0).and_then(|o| usize::try_from(o).ok()) {
                if let Some(bytes) = off.checked_add(8).and_then(|end| stack.get(off..end)) {
                    return Ok(u64::from_ne_bytes(bytes.try_into().map_err(|_| ())?));
                }
            }
            if !(live || hopped) {
                return Err(());
            }
            memory.read_u64(addr).ok_or(())
        };
        let mut addrs: Vec<(u64, bool)> = Vec::with_capacity(32);
        let mut uregs = arch::regs(regs);
        let mut address = framehop::FrameAddress::InstructionPointer(regs.pc);
        let end = loop {
            if addrs.len() >= max_frames {
                break UnwindEnd::FrameLimit;
            }
            let is_return = matches!(address, framehop::FrameAddress::ReturnAddress(_));
            addrs.push((address.address(), is_return));
            if is_return && self.is_sigreturn(address.address()) {
                // The frame below returns into the kernel's signal trampoline: the interrupted
                // registers are in the ucontext at the current stack pointer.
                match arch::restore_signal_frame(uregs.sp(), |a| read(a, hopped)) {
                    Some(restored) => {
                        hopped = true;
                        address = framehop::FrameAddress::InstructionPointer(restored.pc);
                        uregs = arch::regs(&restored);
                        continue;
                    }
                    None => break UnwindEnd::Stopped,
                }
            }
            self.ensure(address.address_for_lookup());
            let h = hopped;
            let mut read_stack = |a: u64| read(a, h);
            match self
                .unwinder
                .unwind_frame(address, &mut uregs, &mut self.cache, &mut read_stack)
            {
                Ok(Some(ra)) => match framehop::FrameAddress::from_return_address(ra) {
                    Some(next) => address = next,
                    None => break UnwindEnd::Clean,
                },
                Ok(None) => break UnwindEnd::Clean,
                Err(_) => break UnwindEnd::Stopped,
            }
        };
        RawFrames { addrs, end }
    }

    /// True when `addr` was seen to be the signal trampoline (after [`Modules::unwind`]).
    pub fn is_trampoline(&self, addr: u64) -> bool {
        self.trampolines.get(&addr).copied().unwrap_or(false)
    }

    /// True when `addr` is the first instruction of the `rt_sigreturn` trampoline (checked by
    /// its code bytes, memoized per address).
    fn is_sigreturn(&mut self, addr: u64) -> bool {
        if let Some(&known) = self.trampolines.get(&addr) {
            return known;
        }
        let mut code = [0u8; 16];
        let want = arch::SIGRETURN_CODE;
        let n = self.memory.read(addr, &mut code[..want.len()]);
        let yes = !want.is_empty() && n == want.len() && &code[..n] == want;
        self.trampolines.insert(addr, yes);
        yes
    }
}

/// Where an instance's file is (opened as [`load`] opens it) and its load bias, from its
/// headers only: not its unwind tables.
fn probe(source: &ModuleSource, instance: &Instance) -> Result<(u64, PathBuf), String> {
    let own = source.proc_dir == Path::new("/proc/self");
    // In the process itself, a module the loader mapped from its start: its headers are in
    // our memory, and its file is at its path (one replaced since shows as deleted): no file
    // opened for the ~40 libraries of a service (PostgreSQL), 0.1-0.2 ms each.
    if own && instance.anchor_offset == 0 && !instance.path.ends_with(" (deleted)") {
        if let Some(bias) = bias_in_memory(&source.memory, &instance.anchor) {
            let inside = Path::new(&instance.path);
            let inside = inside.strip_prefix("/").unwrap_or(inside);
            return Ok((bias, source.root.join(inside)));
        }
    }
    let (f, opened) = source
        .open(&instance.path, &instance.anchor)
        .map_err(|e| e.to_string())?;
    let anchor = instance.anchor.start;
    let bias = if let Some(map) = own
        .then(|| crate::stack::mapped::Mapped::map_if_safe(&f).ok())
        .flatten()
    {
        let file = ElfHead::parse(map.bytes())?;
        bias_of(&file, anchor, instance.anchor_offset)
    } else {
        let len = f.metadata().map_err(|e| e.to_string())?.len();
        let cache = crate::limits::read_cache(&f, len);
        let used = std::cell::Cell::new(0);
        let capped = crate::limits::Capped::new(&cache, len, &used);
        let file = ElfHead::parse(capped)?;
        bias_of(&file, anchor, instance.anchor_offset)
    };
    let bias = bias.ok_or("no loadable segment holds the mapped part of the file")?;
    Ok((bias, opened))
}

/// The load bias of a module mapped from the start of its file at `anchor`, from the ELF and
/// program headers there (as [`bias_of`] computes it from the file: its lowest loadable
/// segment is at the anchor). None when they are not all in the first page, or not an ELF
/// file of this word size.
#[allow(clippy::useless_conversion)] // the addresses are u32 on a 32-bit target
fn bias_in_memory(memory: &ProcessMemory, anchor: &Range<u64>) -> Option<u64> {
    use object::read::elf::{FileHeader, ProgramHeader};
    const PAGE: u64 = 4096;
    let mut head = [0u8; PAGE as usize];
    let len = anchor.end.saturating_sub(anchor.start).min(PAGE) as usize;
    let n = memory.read(anchor.start, &mut head[..len]);
    let data = &head[..n];
    #[cfg(target_pointer_width = "64")]
    type Header = object::elf::FileHeader64<object::Endianness>;
    #[cfg(target_pointer_width = "32")]
    type Header = object::elf::FileHeader32<object::Endianness>;
    let header = Header::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let lowest: u64 = header
        .program_headers(endian, data)
        .ok()?
        .iter()
        .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
        .map(|p| p.p_vaddr(endian).into())
        .min()?;
    Some(anchor.start.wrapping_sub(lowest & !(PAGE - 1)))
}

/// A loaded module.
struct LoadedModule {
    /// framehop's view of it.
    module: framehop::Module<SectionBytes>,
    /// Its load bias.
    bias: u64,
    /// The path its file was opened from (None for the vdso).
    file: Option<PathBuf>,
    /// The bytes of unwind tables it holds (shared ones too; not those read in place).
    kept: u64,
    /// Where its functions start.
    starts: FunctionStarts,
    /// Its sections read in place ([`crate::stack::mapped::InPlace`]), checked at each sync.
    views: Vec<SectionBytes>,
}

/// Read the unwind sections of one object. `anchor` is the mapping its bias is computed from
/// and the file offset it maps (see [`objects`]). `remaining`: what is left of the run's
/// budget for unwind tables.
fn load(
    source: &ModuleSource,
    shared: &mut SharedSections,
    path: &str,
    range: Range<u64>,
    anchor: (Range<u64>, u64),
    remaining: u64,
) -> Result<LoadedModule, String> {
    let (first, anchor_offset) = anchor;
    let anchor = (first.start, anchor_offset);
    if path == "[vdso]" {
        // The kernel's (a few KB); a mapping of that name larger than the cap is not read.
        let len = (range.end - range.start).min(crate::limits::MAX_READ) as usize;
        let mut bytes = vec![0u8; len];
        let n = source.memory.read(range.start, &mut bytes);
        bytes.truncate(n);
        let file = ElfHead::parse(&bytes[..])?;
        let read = |offset: u64, size: u64| {
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            bytes.get(start..end).map(<[u8]>::to_vec)
        };
        let read = &mut |_, at| shared.get(None, at, || None, &read);
        return module(&file, path, range, anchor, remaining, read, None);
    }
    let (f, opened) = source.open(path, &first).map_err(|e| e.to_string())?;
    let id = FileId::of(&f);
    // Our own process's main executable: its unwind sections are read where the loader
    // mapped them, when they are the file's bytes (`InPlace`).
    let own = source.proc_dir == Path::new("/proc/self");
    let exe = own
        .then(|| crate::stack::mapped::Executable::of(&f, path))
        .flatten();
    let view = |file: &dyn Fn(u64, u64) -> bool, addr: u64, (offset, size): (u64, u64)| {
        let unchanged = file(offset, size);
        exe.as_ref()?.in_place((addr, offset, size), unchanged)
    };
    // Our own process's module files, when only root or we may write them, are mapped (no
    // system call per header or name read), for as long as this function runs: the unwind
    // sections are copied out. (Kept mapped, a module's pages would show in the process's
    // maps as another mapping of that library at another address, and tools that read the
    // maps, eu-stack among them, then place the library wrong: seen with rustc.) A host that
    // truncated one of its own libraries would fault on that library's code anyway. Another
    // process's (inspect, as root) are read through the capped cache below: a target running
    // as root could truncate a root-owned file under a mapping, and the fault (SIGBUS) would
    // end the CLI.
    if let Some(map) = own
        .then(|| crate::stack::mapped::Mapped::map_if_safe(&f).ok())
        .flatten()
    {
        let bytes = map.bytes();
        let file = ElfHead::parse(bytes)?;
        let unchanged = loaded_unchanged(&file);
        // The unwind sections are copied into the buffers framehop keeps, after the same caps
        // as below.
        let read = |offset: u64, size: u64| {
            if size > crate::limits::MAX_READ {
                return None;
            }
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            bytes.get(start..end).map(<[u8]>::to_vec)
        };
        let read = &mut |addr, at| shared.get(id, at, || view(&unchanged, addr, at), &read);
        return module(&file, path, range, anchor, remaining, read, Some(opened));
    }
    // Every read is checked against the file's real size and the caps before the cache
    // allocates for it (`crate::limits::Capped`): sizes in the file are the target's word.
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let cache = crate::limits::read_cache(&f, len);
    let used = std::cell::Cell::new(0);
    let capped = crate::limits::Capped::new(&cache, len, &used);
    let file = ElfHead::parse(capped)?;
    let unchanged = loaded_unchanged(&file);
    // The unwind sections are read straight into the buffers framehop keeps (one copy, not
    // the cache's and then ours), after the same checks.
    let read = |offset: u64, size: u64| {
        let end = offset.checked_add(size)?;
        if end > len || size > crate::limits::MAX_READ {
            return None;
        }
        let mut buf = vec![0u8; usize::try_from(size).ok()?];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, offset).ok()?;
        Some(buf)
    };
    let read = &mut |addr, at| shared.get(id, at, || view(&unchanged, addr, at), &read);
    module(&file, path, range, anchor, remaining, read, Some(opened))
}

/// A module from its parsed file: `read(address, (offset, size))` gives each section (its
/// address in this instance, its place in the file) and the bytes it holds that count in the
/// budget.
fn module<'d, R: object::ReadRef<'d>>(
    file: &ElfHead<'d, R>,
    path: &str,
    range: Range<u64>,
    (first, first_offset): (u64, u64),
    remaining: u64,
    read: &mut dyn FnMut(u64, (u64, u64)) -> Option<(SectionBytes, u64)>,
    opened: Option<PathBuf>,
) -> Result<LoadedModule, String> {
    let bias = bias_of(file, first, first_offset)
        .ok_or("no loadable segment holds the mapped part of the file")?;
    let section = |name: &str| file.section_by_name(name);
    let svma = |name: &str| section(name).map(|s| s.address..s.address + s.size);
    let mut data = |name: &str| {
        let s = section(name)?;
        read(s.address.wrapping_add(bias), s.file_range?)
    };
    // The sections kept must fit what is left of the run's budget (each one was already
    // checked against the file's size and the per-read cap when read).
    let sizes: u64 = [".eh_frame", ".eh_frame_hdr"]
        .iter()
        .filter_map(|n| section(n))
        .map(|s| s.size)
        .fold(0, u64::saturating_add);
    if sizes > remaining.min(crate::limits::MAX_READ) {
        return Err(format!(
            "unwind sections of {sizes} bytes: over the cap of {} MiB per module or the {remaining} bytes left of {} MiB per process",
            crate::limits::MAX_READ >> 20,
            crate::limits::MAX_UNWIND_PER_RUN >> 20
        ));
    }
    let eh_frame = data(".eh_frame");
    let debug_frame = if eh_frame.is_none() {
        data(".debug_frame")
            .filter(|(d, _)| d.len() as u64 <= remaining.min(crate::limits::MAX_READ) - sizes)
    } else {
        None
    };
    if eh_frame.is_none() && debug_frame.is_none() {
        return Err("neither .eh_frame nor .debug_frame (or beyond the size caps)".into());
    }
    let eh_frame_hdr = data(".eh_frame_hdr");
    let kept = [&eh_frame, &debug_frame, &eh_frame_hdr]
        .iter()
        .map(|d| d.as_ref().map_or(0, |(_, held)| *held))
        .sum::<u64>();
    let [eh_frame, debug_frame, eh_frame_hdr] =
        [eh_frame, debug_frame, eh_frame_hdr].map(|d| d.map(|(bytes, _)| bytes));
    let views = [&eh_frame, &debug_frame, &eh_frame_hdr]
        .into_iter()
        .flatten()
        .filter(|b| b.in_place().is_some())
        .cloned()
        .collect();
    // The table is read when first asked for (70-170 µs), from the section framehop holds.
    let starts = FunctionStarts {
        table: std::cell::OnceCell::new(),
        sorted: std::cell::OnceCell::new(),
        hdr: eh_frame_hdr
            .clone()
            .zip(svma(".eh_frame_hdr"))
            .map(|(hdr, at)| (hdr, at.start)),
    };
    let info = framehop::ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: svma(".text"),
        text: None,
        got_svma: svma(".got"),
        eh_frame_svma: svma(".eh_frame"),
        eh_frame,
        eh_frame_hdr_svma: svma(".eh_frame_hdr"),
        eh_frame_hdr,
        debug_frame,
        ..Default::default()
    };
    Ok(LoadedModule {
        module: framehop::Module::new(path.to_string(), range, bias, info),
        bias,
        file: opened,
        kept,
        starts,
        views,
    })
}

/// Whether the bytes at `(offset, size)` of `file` are, once it is loaded, the file's bytes:
/// a loadable segment without write permission holds them within its size in the file (not a
/// RELRO part of a writable one: relocated, then protected; not past its file size: zeroed),
/// and the file has no text relocations ([`text_relocated`]).
fn loaded_unchanged<'d, R: object::ReadRef<'d>>(
    file: &ElfHead<'d, R>,
) -> impl Fn(u64, u64) -> bool {
    let relocated = text_relocated(file);
    let read_only: Vec<(u64, u64)> = file
        .segments()
        .filter(|s| s.flags & object::elf::PF_W.0 != object::elf::PF_W.0)
        .map(|s| s.file_range)
        .collect();
    move |offset, size| {
        !relocated
            && offset.checked_add(size).is_some_and(|end| {
                read_only.iter().any(|&(start, len)| {
                    start <= offset && start.checked_add(len).is_some_and(|e| end <= e)
                })
            })
    }
}

/// Whether the loader writes to the read-only segments of `file` when it loads it: `DT_TEXTREL`,
/// or `DF_TEXTREL` in `DT_FLAGS`, in its dynamic section (then its sections in memory are not
/// the file's bytes).
fn text_relocated<'d, R: object::ReadRef<'d>>(file: &ElfHead<'d, R>) -> bool {
    let Some(data) = file
        .section_by_name(".dynamic")
        .and_then(|s| file.section_data(s))
    else {
        return false;
    };
    let word = if file.is_64() { 8 } else { 4 };
    let read = |b: &[u8]| -> u64 {
        let mut w = [0u8; 8];
        if file.is_little_endian() {
            w[..word].copy_from_slice(b);
            u64::from_le_bytes(w)
        } else {
            w[8 - word..].copy_from_slice(b);
            u64::from_be_bytes(w)
        }
    };
    data.chunks_exact(2 * word)
        .map(|e| (read(&e[..word]), read(&e[word..])))
        .take_while(|&(tag, _)| tag != object::elf::DT_NULL.0 as u64)
        .any(|(tag, value)| {
            tag == object::elf::DT_TEXTREL.0 as u64
                || (tag == object::elf::DT_FLAGS.0 as u64 && value & object::elf::DF_TEXTREL.0 != 0)
        })
}

/// Where the functions of a module start ([`fde_starts`]): read from its `.eh_frame_hdr` when
/// first asked for (most dumps never ask: only a stack that the CFI could not unwind does).
pub struct FunctionStarts {
    table: std::cell::OnceCell<Vec<u64>>,
    /// Whether the section's table is the usual one, searched in place ([`SortedTable`]).
    sorted: std::cell::OnceCell<Option<SortedTable>>,
    /// The section (the bytes framehop holds) and its SVMA.
    hdr: Option<(SectionBytes, u64)>,
}

/// The search table of an `.eh_frame_hdr` as linkers write it: `fde_count` entries of two
/// 4-byte signed offsets from the section's start (`DW_EH_PE_datarel | DW_EH_PE_sdata4`), the
/// functions' starts (the section's SVMA plus the first) ascending, checked once. Searched where it is, without a
/// copy or a parse of every entry (PostgreSQL's: ~1 ms in a first dump).
#[derive(Clone, Copy)]
struct SortedTable {
    /// Byte offset of the first entry in the section.
    at: usize,
    count: usize,
}

impl SortedTable {
    fn of(hdr: &[u8], hdr_svma: u64) -> Option<SortedTable> {
        const DATAREL_SDATA4: u8 = 0x3b;
        const UDATA4: u8 = 0x03;
        const PCREL_SDATA4: u8 = 0x1b;
        let [1, eh_frame_ptr_enc, count_enc, DATAREL_SDATA4, ..] = *hdr else {
            return None;
        };
        if eh_frame_ptr_enc != PCREL_SDATA4 || count_enc != UDATA4 {
            return None;
        }
        let count = u32::from_ne_bytes(hdr.get(8..12)?.try_into().ok()?) as usize;
        let table = SortedTable { at: 12, count };
        let end = count.checked_mul(8)?.checked_add(12)?;
        if end > hdr.len() {
            return None;
        }
        let start = |i| table.start(hdr, hdr_svma, i);
        let ascending = (1..count).all(|i| start(i - 1) <= start(i));
        ascending.then_some(table)
    }

    /// The SVMA where entry `i`'s function starts.
    fn start(&self, hdr: &[u8], hdr_svma: u64, i: usize) -> u64 {
        let at = self.at + i * 8;
        let offset = i32::from_ne_bytes([hdr[at], hdr[at + 1], hdr[at + 2], hdr[at + 3]]);
        hdr_svma.wrapping_add(i64::from(offset) as u64)
    }
}

impl FunctionStarts {
    /// The start of the function holding `svma` (the last FDE starting at or before it).
    fn start_of(&self, svma: u64) -> Option<u64> {
        if let Some((hdr, hdr_svma)) = &self.hdr {
            if let Some(t) = self.sorted.get_or_init(|| SortedTable::of(hdr, *hdr_svma)) {
                let (mut lo, mut hi) = (0, t.count);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if t.start(hdr, *hdr_svma, mid) <= svma {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                return Some(t.start(hdr, *hdr_svma, lo.checked_sub(1)?));
            }
        }
        let starts = self.table();
        let i = starts.partition_point(|&s| s <= svma).checked_sub(1)?;
        Some(starts[i])
    }

    fn table(&self) -> &[u64] {
        self.table.get_or_init(|| {
            self.hdr
                .as_ref()
                .map_or_else(Vec::new, |(hdr, at)| fde_starts(hdr, *at))
        })
    }
}

/// The SVMAs where the FDEs of a module start (its functions, as its CFI sees them), sorted:
/// the search table of its `.eh_frame_hdr` (`hdr`, at SVMA `hdr_svma`). Empty when the
/// section has no table or does not parse.
pub fn fde_starts(hdr: &[u8], hdr_svma: u64) -> Vec<u64> {
    let bases = addr2line::gimli::BaseAddresses::default().set_eh_frame_hdr(hdr_svma);
    let parsed = match addr2line::gimli::EhFrameHdr::new(hdr, addr2line::gimli::NativeEndian)
        .parse(&bases, 8)
    {
        Ok(p) => p,
        Err(_) => return Vec::new(),
    };
    let Some(table) = parsed.table() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut it = table.iter(&bases);
    while let Ok(Some((start, _))) = it.next() {
        if let addr2line::gimli::Pointer::Direct(a) = start {
            out.push(a);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `load` of instance `o` of this process, with the sections read so far in `shared`.
    fn load_own(shared: &mut SharedSections, o: &Instance) -> LoadedModule {
        load(
            &ModuleSource::this_process(),
            shared,
            &o.path,
            o.range.clone(),
            (o.anchor.clone(), o.anchor_offset),
            crate::limits::MAX_UNWIND_PER_RUN,
        )
        .unwrap()
    }

    fn maps(text: &str) -> Vec<Mapping> {
        crate::kernel::proc::parse_maps(text.as_bytes())
    }

    fn ranges(maps: &[Mapping]) -> Vec<(String, Range<u64>, u64)> {
        objects(maps)
            .into_iter()
            .map(|o| (o.path, o.range, o.anchor_offset))
            .collect()
    }

    /// node: non-PIE, a one-page gap after `.plt`, its builtins mapped again far away, twice
    /// (one copy per code range), with JIT code between the copies and a mapping of the whole
    /// file as data before them: the JIT code is in no module, and the data mapping (no code)
    /// is none.
    #[test]
    fn a_module_spans_gaps_and_a_second_mapping_elsewhere_is_its_own_instance() {
        let m = maps(
            "00400000-00b6f000 r--p 00000000 fe:00 247584 /usr/bin/node
00b6f000-00b71000 r-xp 0076f000 fe:00 247584 /usr/bin/node
00b72000-025fe000 r-xp 00772000 fe:00 247584 /usr/bin/node
02600000-02601000 r-xp 02200000 fe:00 247584 /usr/bin/node
02601000-0563a000 r--p 02201000 fe:00 247584 /usr/bin/node
0563e000-0565d000 rw-p 0523d000 fe:00 247584 /usr/bin/node
0565d000-05689000 rw-p 00000000 00:00 0 
2ce44000-2d107000 rw-p 00000000 00:00 0 [heap]
7f7bfa000000-7f7bffe5a000 r--p 00000000 fe:00 247584 /usr/bin/node
7f7c01fc3000-7f7c01fff000 rwxp 00000000 00:00 0 
7f7c21e00000-7f7c21f92000 r-xp 014c4000 fe:00 247584 /usr/bin/node
7f7c21f92000-7f7c22000000 ---p 00000000 00:00 0 
7f7c22003000-7f7c2203f000 rwxp 00000000 00:00 0 
7f7c2203f000-7f7c22e00000 ---p 00000000 00:00 0 
7f7c22e00000-7f7c22f92000 r-xp 014c4000 fe:00 247584 /usr/bin/node
7f7c29000000-7f7c29028000 r--p 00000000 fe:00 326279 /usr/lib/libc.so.6
7f7c29028000-7f7c2917d000 r-xp 00028000 fe:00 326279 /usr/lib/libc.so.6
",
        );
        assert_eq!(
            ranges(&m),
            vec![
                ("/usr/bin/node".into(), 0x400000..0x565d000, 0),
                (
                    "/usr/bin/node".into(),
                    0x7f7c21e00000..0x7f7c21f92000,
                    0x14c4000
                ),
                (
                    "/usr/bin/node".into(),
                    0x7f7c22e00000..0x7f7c22f92000,
                    0x14c4000
                ),
                (
                    "/usr/lib/libc.so.6".into(),
                    0x7f7c29000000..0x7f7c2917d000,
                    0
                ),
            ]
        );
    }

    /// rustc's BOLT-optimized librustc_driver: code and unwind tables in a segment after its
    /// `.bss` (anonymous) and a reserved gap; the next library starts a new module.
    #[test]
    fn a_module_spans_its_bss_and_ends_at_another_file() {
        let m = maps(
            "7f41ec600000-7f41ed7a1000 r--p 00000000 fe:00 193406 /lib/librustc_driver.so
7f41ed7a1000-7f41f12bf000 r-xp 011a0000 fe:00 193406 /lib/librustc_driver.so
7f41f150f000-7f41f1518000 rw-p 04f0c000 fe:00 193406 /lib/librustc_driver.so
7f41f1518000-7f41f151e000 rw-p 00000000 00:00 0 
7f41f151e000-7f41f1600000 ---p 04f1e000 fe:00 193406 /lib/librustc_driver.so
7f41f1600000-7f41f41e3000 r-xp 05000000 fe:00 193406 /lib/librustc_driver.so
7f41f4255000-7f41f4260000 rw-p 00000000 00:00 0 
7f41f4260000-7f41f4263000 r--p 00000000 fe:00 326970 /lib/libz.so.1
7f41f4263000-7f41f4276000 r-xp 00003000 fe:00 326970 /lib/libz.so.1
7f41f4276000-7f41f427d000 r--p 00016000 fe:00 326970 /lib/libz.so.1
",
        );
        assert_eq!(
            ranges(&m),
            vec![
                (
                    "/lib/librustc_driver.so".into(),
                    0x7f41ec600000..0x7f41f41e3000,
                    0
                ),
                ("/lib/libz.so.1".into(), 0x7f41f4260000..0x7f41f427d000, 0),
            ]
        );
    }

    /// The same file loaded twice (dlmopen) is two modules; a data file without code is none.
    #[test]
    fn two_loads_of_one_file_are_two_modules() {
        let m = maps(
            "7f0000000000-7f0000001000 r--p 00000000 fe:00 5 /lib/libx.so
7f0000001000-7f0000002000 r-xp 00001000 fe:00 5 /lib/libx.so
7f0000002000-7f0000003000 r--p 00000000 fe:00 5 /lib/libx.so
7f0000003000-7f0000004000 r-xp 00001000 fe:00 5 /lib/libx.so
7f0000005000-7f0000006000 r--p 00000000 fe:00 6 /usr/lib/locale/locale-archive
",
        );
        assert_eq!(
            ranges(&m),
            vec![
                ("/lib/libx.so".into(), 0x7f0000000000..0x7f0000002000, 0),
                ("/lib/libx.so".into(), 0x7f0000002000..0x7f0000004000, 0),
            ]
        );
    }

    use crate::model::{Addr, Frame};

    fn frame(function: Option<&str>, inlined: bool) -> Frame {
        Frame {
            ip: Addr(0x1000),
            module: None,
            offset: None,
            function: function.map(std::sync::Arc::from),
            file: None,
            line: None,
            inlined,
            python: None,
            jit: None,
        }
    }

    /// One judge: an entry point among the two outermost frames (inlined ones not counted)
    /// makes a stack complete; deeper, or only inlined, it does not; the frame limit always
    /// truncates.
    #[test]
    fn a_stack_is_complete_when_one_of_its_two_outermost_frames_is_an_entry_point() {
        let f = |n: &str| frame(Some(n), false);
        let ends_in_clone = [f("work"), f("start_thread"), f("clone3")];
        assert!(!is_truncated(UnwindEnd::Clean, &ends_in_clone));
        assert!(is_truncated(UnwindEnd::FrameLimit, &ends_in_clone));
        // `_start` of a stripped executable has no name: the frame before it counts.
        let stripped = [f("main"), f("__libc_start_main"), frame(None, false)];
        assert!(!is_truncated(UnwindEnd::Stopped, &stripped));
        let too_deep = [f("start_thread"), f("a"), f("b")];
        assert!(is_truncated(UnwindEnd::Clean, &too_deep));
        let inlined_only = [f("a"), frame(Some("start_thread"), true), f("b")];
        assert!(is_truncated(UnwindEnd::Clean, &inlined_only));
        let skip_inlined = [f("start_thread"), frame(Some("x"), true), f("b")];
        assert!(!is_truncated(UnwindEnd::Clean, &skip_inlined));

        let raw = RawFrames {
            addrs: vec![(1, false), (2, true), (3, true)],
            end: UnwindEnd::Clean,
        };
        assert!(unwound_complete(&raw, |ip, _| ip == 2));
        assert!(!unwound_complete(&raw, |ip, _| ip == 1));
        let limit = RawFrames {
            end: UnwindEnd::FrameLimit,
            ..raw
        };
        assert!(unwound_complete(&limit, |_, _| false));
    }

    /// A file loaded twice (node maps part of its executable again) reads its unwind sections
    /// once: the second instance shares the first one's bytes (each is charged for them in the
    /// budget, whichever goes first), its function starts are the same, and once neither is
    /// loaded the bytes are forgotten.
    #[test]
    fn a_second_instance_of_a_file_shares_its_unwind_sections() {
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let libc = objects(&maps)
            .into_iter()
            .find(|o| o.path.contains("/libc.so"))
            .expect("libc is mapped");
        let mut shared = SharedSections::default();
        let load_libc = |shared: &mut SharedSections| load_own(shared, &libc);
        let first = load_libc(&mut shared);
        let second = load_libc(&mut shared);
        assert!(
            first.kept > 0,
            "libc's sections are copied (not the executable)"
        );
        assert!(first.views.is_empty());
        assert_eq!(second.kept, first.kept, "charged for what it holds");
        let hdr = |l: &LoadedModule| l.starts.hdr.clone().expect("an .eh_frame_hdr").0;
        assert!(std::sync::Arc::ptr_eq(&hdr(&first).0, &hdr(&second).0));
        assert!(!first.starts.table().is_empty());
        assert_eq!(first.starts.table(), second.starts.table());
        // Another process's view (its own `SharedSections`) reads them again.
        let other = load_libc(&mut SharedSections::default());
        assert!(!std::sync::Arc::ptr_eq(&hdr(&other).0, &hdr(&first).0));
        assert_eq!(&*hdr(&other), &*hdr(&first));
        drop((first, second, other));
        shared.prune();
        assert!(shared.0.is_empty(), "forgotten once no module holds them");
    }

    /// The unwind sections of the process's own executable are read where the loader mapped
    /// them: nothing copied, the same bytes as in the file; the module is dropped (and loaded
    /// again) when the maps no longer show them there.
    #[test]
    fn the_executables_unwind_sections_are_read_in_place() {
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let me = objects(&maps)
            .into_iter()
            .find(|o| o.path == exe)
            .expect("the test binary is mapped");
        let loaded = load_own(&mut SharedSections::default(), &me);
        assert_eq!(loaded.kept, 0, "nothing copied");
        assert_eq!(loaded.views.len(), 2, ".eh_frame and .eh_frame_hdr");
        let (hdr, svma) = loaded.starts.hdr.clone().expect("an .eh_frame_hdr");
        let view = hdr.in_place().expect("read in place");
        assert_eq!(
            hdr.as_ptr() as u64,
            svma.wrapping_add(loaded.bias),
            "where it is loaded"
        );
        let bytes = std::fs::read(exe).unwrap();
        let file = ElfHead::parse(&bytes[..]).unwrap();
        let (offset, size) = file
            .section_by_name(".eh_frame_hdr")
            .and_then(|s| s.file_range)
            .unwrap();
        assert_eq!(&*hdr, &bytes[offset as usize..(offset + size) as usize]);
        assert!(loaded_unchanged(&file)(offset, size));
        // Not what a writable segment holds (relocated, or RELRO), nor past the file's end.
        let data = file.section_by_name(".data").and_then(|s| s.file_range);
        let (data_offset, data_size) = data.expect("a .data section");
        assert!(!loaded_unchanged(&file)(data_offset, data_size.max(1)));
        let opened = std::fs::File::open(exe).unwrap();
        let executable = crate::stack::mapped::Executable::of(&opened, exe).expect("our own exe");
        let place = (hdr.as_ptr() as u64, offset, size);
        assert!(executable.in_place(place, true).is_some());
        assert!(
            executable.in_place(place, false).is_none(),
            "the caller's word counts"
        );
        let past_end = (hdr.as_ptr() as u64, bytes.len() as u64 - 8, 16);
        assert!(executable.in_place(past_end, true).is_none());
        // Only the main executable.
        let libc = maps.iter().find(|m| m.path.contains("/libc.so")).unwrap();
        let libc_file = std::fs::File::open(&libc.path).unwrap();
        assert!(crate::stack::mapped::Executable::of(&libc_file, &libc.path).is_none());
        // A writable mapping there, or another offset, is not the file's pages any more.
        assert!(view.still_mapped(&maps));
        let moved = |f: &dyn Fn(&mut Mapping)| {
            let mut m = maps.clone();
            m.iter_mut().for_each(f);
            view.still_mapped(&m)
        };
        assert!(!moved(&|m| m.writable = true));
        assert!(!moved(&|m| m.offset += 4096));
        assert!(!moved(&|m| m.inode += 1));
        assert!(!view.still_mapped(&[]));
        // The same code through `Modules`: this stack unwinds with it, and a sync whose maps
        // no longer show the tables drops the module.
        let mut modules = Modules::new(ModuleSource::this_process());
        modules.sync(&maps);
        assert!(
            !modules.tables_read(me.range.start),
            "read when first needed"
        );
        let here = the_executables_unwind_sections_are_read_in_place as *const () as u64;
        assert!(modules
            .function_start(here + 1)
            .is_some_and(|s| s <= here + 1));
        assert!(modules.tables_read(me.range.start));
        assert_eq!(modules.views.get(&me.range.start).map(Vec::len), Some(2));
        let mut protected = maps.clone();
        protected
            .iter_mut()
            .filter(|m| m.path == exe)
            .for_each(|m| m.readable = false);
        assert!(
            modules.sync(&protected),
            "the executable is dropped and loaded again"
        );
    }

    /// A file whose code the loader must relocate (`-z notext`: an absolute address in
    /// `.text`) says so (`DT_TEXTREL`); the C library does not.
    #[test]
    fn text_relocations_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (asm, so) = (dir.path().join("textrel.s"), dir.path().join("textrel.so"));
        std::fs::write(&asm, "\t.text\n\t.globl f\nf:\n\t.quad f\n").unwrap();
        let status = std::process::Command::new("cc")
            .args(["-shared", "-nostdlib", "-Wl,-z,notext"])
            .arg(&asm)
            .arg("-o")
            .arg(&so)
            .status()
            .expect("cc (needed to build the test object)");
        assert!(
            status.success(),
            "cc -shared -Wl,-z,notext {}",
            asm.display()
        );
        let bytes = std::fs::read(&so).unwrap();
        assert!(text_relocated(&ElfHead::parse(&bytes[..]).unwrap()));
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let libc = maps.iter().find(|m| m.path.contains("/libc.so")).unwrap();
        let bytes = std::fs::read(&libc.path).unwrap();
        assert!(!text_relocated(&ElfHead::parse(&bytes[..]).unwrap()));
    }

    /// A module's unwind tables are read when a stack first goes through it: after a sync
    /// every module is known (named, its bias), none has its tables read but the vdso, and
    /// an unwind through libc reads libc's alone.
    #[test]
    fn unwind_tables_are_read_when_a_stack_goes_through_the_module() {
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let mut modules = Modules::new(ModuleSource::this_process());
        assert!(modules.sync(&maps));
        let libc = objects(&maps)
            .into_iter()
            .find(|o| o.path.contains("/libc.so"))
            .unwrap();
        let listed: Vec<&str> = modules.list().iter().map(|m| &*m.path).collect();
        for o in objects(&maps) {
            assert!(listed.contains(&o.path.as_str()), "{} listed", o.path);
            assert_eq!(
                modules.tables_read(o.range.start),
                o.path == "[vdso]",
                "{}",
                o.path
            );
        }
        let info = modules.module_of(libc.range.start).unwrap().clone();
        // Its first page (headers, not code) is no reason to read its tables.
        modules.ensure(libc.range.start);
        assert!(!modules.tables_read(libc.range.start));
        assert_ne!(
            info.bias, 0,
            "libc's bias is known before its tables are read"
        );
        // Where the current thread is blocked-or-not does not matter: unwind from a libc
        // address with an empty stack copy; the tables are read for it.
        let syscall_wrapper = libc::getpid as *const () as u64;
        modules.unwind(
            &Regs {
                pc: syscall_wrapper,
                ..Regs::default()
            },
            &[],
            4,
            false,
        );
        assert!(modules.tables_read(libc.range.start));
        let others = objects(&maps)
            .into_iter()
            .filter(|o| o.path != "[vdso]" && o.range.start != libc.range.start)
            .filter(|o| modules.tables_read(o.range.start))
            .count();
        assert_eq!(others, 0, "no other module's tables read");
        assert_eq!(
            modules.module_of(libc.range.start),
            Some(&info),
            "same bias after"
        );
        // The headers in memory give every module the bias and file its tables give.
        let before = modules.list().to_vec();
        modules.load_all();
        assert_eq!(modules.list(), &before[..]);
        assert!(objects(&maps)
            .iter()
            .all(|o| modules.tables_read(o.range.start)));
    }

    /// The search table of `.eh_frame_hdr` searched in place gives the same function starts
    /// as the table read and sorted (libc's and this binary's); a table out of order is read
    /// and sorted instead.
    #[test]
    fn function_starts_searched_in_place_are_those_of_the_parsed_table() {
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        for o in objects(&maps)
            .into_iter()
            .filter(|o| o.path.contains("/libc.so") || Path::new(&o.path) == exe)
        {
            let loaded = load_own(&mut SharedSections::default(), &o);
            let (hdr, at) = loaded.starts.hdr.clone().unwrap();
            assert!(
                SortedTable::of(&hdr, at).is_some(),
                "{}: the usual table",
                o.path
            );
            let parsed = fde_starts(&hdr, at);
            assert!(parsed.len() > 100, "{}", o.path);
            let by_table = |svma: u64| {
                let i = parsed.partition_point(|&s| s <= svma).checked_sub(1)?;
                Some(parsed[i])
            };
            let probes = parsed
                .iter()
                .flat_map(|&s| [s.wrapping_sub(1), s, s + 1, s + 7])
                .chain([0, u64::MAX]);
            for svma in probes {
                assert_eq!(
                    loaded.starts.start_of(svma),
                    by_table(svma),
                    "{} {svma:#x}",
                    o.path
                );
            }
            // Two entries swapped: not searched in place.
            let mut bad = hdr.to_vec();
            bad[12..20].copy_from_slice(&hdr[20..28]);
            bad[20..28].copy_from_slice(&hdr[12..20]);
            assert!(SortedTable::of(&bad, at).is_none());
        }
        // Damaged sections: read and sorted the slow way (or nothing), never a panic.
        let mut usual = vec![1u8, 0x1b, 0x03, 0x3b, 0, 0, 0, 0];
        usual.extend(2u32.to_ne_bytes());
        for e in [0x10i32, 0x10, 0x20, 0x30] {
            usual.extend(e.to_ne_bytes());
        }
        assert!(SortedTable::of(&usual, 0x1000).is_some());
        let mut too_many = usual.clone();
        too_many[8..12].copy_from_slice(&u32::MAX.to_ne_bytes());
        let mut version_2 = usual.clone();
        version_2[0] = 2;
        let mut other_encoding = usual.clone();
        other_encoding[3] = 0x1b;
        for bad in [
            &too_many[..],
            &version_2,
            &other_encoding,
            &usual[..11],
            &[][..],
        ] {
            assert!(SortedTable::of(bad, 0x1000).is_none());
            let starts = FunctionStarts {
                table: std::cell::OnceCell::new(),
                sorted: std::cell::OnceCell::new(),
                hdr: Some((
                    SectionBytes(std::sync::Arc::new(Bytes::Copied(bad.to_vec()))),
                    0x1000,
                )),
            };
            let _ = starts.start_of(0x1010);
        }
        let mut none = usual.clone();
        none[8..12].copy_from_slice(&0u32.to_ne_bytes());
        let t = SortedTable::of(&none, 0x1000).unwrap();
        assert_eq!(t.count, 0);
    }
}
