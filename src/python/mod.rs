//! CPython frames: read each thread's Python stack from the interpreter's own structures and
//! merge it into the thread's native stack, the way `py-spy dump --native` does. Used by
//! `libstackdump.so` on its own process and by `stackdump inspect` on another.
//!
//! Nothing here calls into CPython: no GIL, no thread state API, no reference counts. We find
//! `_PyRuntime` in the ELF symbol table of the executable or of a `libpython*` mapping (at dump
//! time, so a libpython loaded late by `dlopen` is found), and follow `_PyRuntime` →
//! interpreters → thread states → frames with fault-tolerant reads ([`ProcessMemory`]). The
//! interpreter keeps running while we read: every object's type is checked (`ob_type ==
//! &PyCode_Type`, ...), thread and frame lists are capped and checked for loops, and the whole
//! read has a time budget. A surprise ends that thread's Python stack early (flagged
//! `truncated` with the reason), never the dump.
//!
//! Versions: 3.8-3.12 with per-version offsets ([`layout`]); 3.13 from
//! `_PyRuntime.debug_offsets`; 3.14 and free-threaded builds from their debug offsets too, best
//! effort (untested, labelled so). Older versions are reported as unsupported.
//!
//! Threads: 3.11+ give the kernel tid (`native_thread_id`); before that a thread state has only
//! its `pthread_t`, the address of glibc's `struct pthread`, whose `tid` field we read (offset
//! 0x2d0 on x86_64, 0xd0 on aarch64, checked against the process's tids, searched for if
//! neither fits).
//!
//! Merging ([`merge`]): each native `_PyEval_EvalFrameDefault` frame runs the Python frames up
//! to and including the next *entry* frame: 3.8-3.10, one Python frame per evaluator call;
//! 3.11, up to a frame with `is_entry`; 3.12+, up to the frame above a shim frame
//! (`FRAME_OWNED_BY_CSTACK`). The Python frames of an evaluator call are inserted just inside
//! (before, innermost first) its native frame. Only when the counts agree; when the native
//! stack is truncated, the innermost ones are merged and the rest appended; otherwise the
//! Python frames are kept apart (`python.frames`) and the thread says why.

pub mod elf;
pub mod layout;
pub mod lines;
pub mod locals;
mod names;
mod read;

pub use elf::{Finder, Located};
pub use layout::{Layout, Version};

use crate::kernel::proc::Mapping;
use crate::model::{
    Addr, Frame, PyFrameInfo, PyLocal, PyMerge, PyThreadInfo, SyscallState, Thread, Tid,
};
use crate::stack::unwind::ProcessMemory;
use read::Reader;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bounds on one read of a process's Python stacks.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Interpreters (main + subinterpreters).
    pub max_interpreters: usize,
    /// Thread states per interpreter.
    pub max_threads: usize,
    /// Python frames per thread.
    pub max_frames: usize,
    /// Time for the whole read.
    pub budget: Duration,
    /// Read `threading.Thread` names.
    pub names: bool,
    /// Read each frame's arguments and local variables ([`locals`]); never by default, since
    /// locals can hold secrets.
    pub locals: bool,
    /// Read this thread only: a thread taken again within the dump the last read with the same
    /// [`Finder`] was for. The frames of other threads are not read (before 3.11, where a
    /// thread state does not name its thread, they are, to tell which one it is), and the code
    /// objects the last read found are reused after a check (`read::KnownCodes`), so that
    /// the read is short: it is what stands between the thread's native copy and the proof
    /// that it did not run since.
    pub only: Option<Tid>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_interpreters: 64,
            max_threads: 8192,
            max_frames: 1024,
            budget: Duration::from_millis(500),
            names: true,
            locals: false,
            only: None,
        }
    }
}

/// One Python frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyFrame {
    /// `co_qualname` (3.11+) or `co_name`.
    pub function: String,
    /// `co_name`.
    pub name: String,
    /// `co_filename`.
    pub file: String,
    pub line: Option<u32>,
    pub first_line: Option<u32>,
    /// Address of the code object.
    pub code: u64,
    /// Address of the current bytecode instruction.
    pub ip: u64,
    /// The first frame of an evaluator call.
    pub entry: bool,
    /// Address of the frame: its `_PyInterpreterFrame` (3.11+) or `PyFrameObject`.
    pub frame: u64,
    /// Arguments and local variables (read only when [`Limits::locals`] asks).
    pub locals: Vec<PyLocal>,
}

/// One Python thread state and its stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyThread {
    /// The kernel thread, when it could be identified.
    pub tid: Option<Tid>,
    /// `thread_id`: the `pthread_t` (also `threading.get_ident()`).
    pub thread_id: u64,
    /// Address of the `PyThreadState`.
    pub tstate: u64,
    /// `threading.Thread.name`.
    pub name: Option<String>,
    /// Innermost first.
    pub frames: Vec<PyFrame>,
    /// Why the stack was not read to its end.
    pub truncated: Option<String>,
    /// The GIL of this thread's interpreter, as read with its thread list (`None`: a
    /// free-threaded build, or not readable).
    pub gil: Option<GilState>,
}

/// A GIL as read: `struct _gil_runtime_state` of an interpreter (3.12+) or of the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilState {
    /// Address of the struct; its waiters sleep on futexes inside it.
    pub addr: u64,
    /// Size of the struct.
    pub size: u64,
    /// `locked`: someone holds it.
    pub locked: bool,
    /// `last_holder`: the thread state that took it last (the holder, when `locked`).
    pub last_holder: u64,
}

impl GilState {
    /// Whether `addr` (a futex a thread waits on) is inside this GIL.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.addr && addr - self.addr < self.size
    }
}

impl PyThread {
    /// Whether this thread holds its interpreter's GIL (`None` when not known).
    pub fn holds_gil(&self) -> Option<bool> {
        self.gil
            .map(|g| g.locked && g.last_holder == self.tstate && self.tstate != 0)
    }

    /// Python frames per evaluator call, innermost call first (the last group may lack its
    /// entry frame when the stack is truncated).
    pub fn segments(&self) -> Vec<&[PyFrame]> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, f) in self.frames.iter().enumerate() {
            if f.entry {
                out.push(&self.frames[start..=i]);
                start = i + 1;
            }
        }
        if start < self.frames.len() {
            out.push(&self.frames[start..]);
        }
        out
    }
}

/// The Python side of a process.
#[derive(Debug, Clone)]
pub struct PyProcess {
    /// `CPython 3.11.7`, `CPython 3.13.0 free-threaded`, with `(best effort)` for versions this
    /// build was not tested with.
    pub interpreter: String,
    pub version: Version,
    pub free_threaded: bool,
    /// The module holding `_PyRuntime`.
    pub module: String,
    pub threads: Vec<PyThread>,
    /// What went wrong (the rest is still valid).
    pub problems: Vec<String>,
}

/// Why there are no Python stacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PyError {
    /// No `_PyRuntime` in the executable or any libpython: not a CPython process.
    #[error("not a CPython process")]
    NotPython,
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Unreadable(String),
}

/// Read the Python stacks of the process `memory` reads (our own or another), with a fresh
/// [`Finder`] and default [`Limits`]. `tids` are the process's threads (to identify Python
/// threads before 3.11).
pub fn threads(
    memory: &ProcessMemory,
    maps: &[Mapping],
    root: &Path,
    tids: &[Tid],
) -> Result<PyProcess, PyError> {
    threads_with(
        &mut Finder::new(),
        &Limits::default(),
        memory,
        maps,
        root,
        tids,
    )
}

/// [`threads`] with a [`Finder`] kept across dumps and explicit limits.
pub fn threads_with(
    finder: &mut Finder,
    limits: &Limits,
    memory: &ProcessMemory,
    maps: &[Mapping],
    root: &Path,
    tids: &[Tid],
) -> Result<PyProcess, PyError> {
    let start = Instant::now();
    let loc = match finder.locate(memory.pid, maps, root) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Err(match elf::python2_module(maps) {
                Some((v, name)) => PyError::Unsupported(format!(
                    "CPython {}.{}: Python frames need CPython 3.8 or later ({name})",
                    v.major, v.minor
                )),
                None => PyError::NotPython,
            })
        }
        Err(e) => return Err(PyError::Unreadable(format!("looking for _PyRuntime: {e}"))),
    };
    let base = loc
        .module
        .rsplit('/')
        .next()
        .unwrap_or(&loc.module)
        .to_string();
    let layout = layout_of(memory, &loc).map_err(|e| match e {
        LayoutError::Unsupported(s) => PyError::Unsupported(format!("{s} ({base})")),
        LayoutError::Unreadable(s) => PyError::Unreadable(format!("{s} ({base})")),
    })?;
    let tested = matches!((layout.version.major, layout.version.minor), (3, 8..=13))
        && !layout.free_threaded;
    let interpreter = format!(
        "CPython {}{}{}",
        layout.version,
        if layout.free_threaded {
            " free-threaded"
        } else {
            ""
        },
        if tested { "" } else { " (best effort)" }
    );
    let mut r = Reader::new(memory, &layout, &loc, start + limits.budget);
    let mut problems = Vec::new();
    let mut threads = Vec::new();
    let mut names: HashMap<u64, String> = HashMap::new();

    let mut interp = r
        .u64(loc.runtime.wrapping_add(layout.runtime_interpreters_head))
        .ok_or_else(|| {
            PyError::Unreadable(format!("_PyRuntime at {:#x} is not readable", loc.runtime))
        })?;
    // From here on, the read ends at the bottom of this function, which hands the code objects
    // it knows to `finder`.
    if limits.only.is_some() {
        r.set_earlier(std::mem::take(&mut finder.known));
    }
    let mut seen_interps = HashSet::new();
    while interp != 0 {
        if !seen_interps.insert(interp) || seen_interps.len() > limits.max_interpreters {
            problems.push("the list of interpreters loops or is too long".into());
            break;
        }
        // A thread state freed while we walk the list (its thread exiting) ends the walk;
        // walk again from the head (a few times), skipping the thread states already read.
        let gil = r.gil(interp);
        let mut done: HashSet<u64> = HashSet::new();
        let mut attempts = 0;
        'walk: loop {
            let Some(mut ts) = r.u64(interp.wrapping_add(layout.interp_threads_head)) else {
                problems.push(format!(
                    "interpreter at {interp:#x} (from _PyRuntime at {:#x} in {}) is not readable",
                    loc.runtime, loc.module
                ));
                break;
            };
            let mut seen = HashSet::new();
            while ts != 0 {
                if r.late() {
                    problems.push(format!(
                        "the time budget ({} ms) ran out: some Python threads were not read",
                        limits.budget.as_millis()
                    ));
                    break 'walk;
                }
                if !seen.insert(ts) || seen.len() > limits.max_threads {
                    problems.push(format!(
                        "the thread list of interpreter {interp:#x} loops or has more than {} threads",
                        limits.max_threads
                    ));
                    break 'walk;
                }
                let Some(raw) = r.thread_state(ts, interp) else {
                    attempts += 1;
                    if attempts < 3 {
                        continue 'walk;
                    }
                    problems.push(format!(
                        "thread state at {ts:#x} is not readable or not of this interpreter (threads exiting while we read?): the threads after it were not read"
                    ));
                    break 'walk;
                };
                let other = match (limits.only, raw.native_thread_id) {
                    (Some(only), Some(n)) => n != only.0 as u64,
                    _ => false,
                };
                if !other && done.insert(ts) {
                    let (mut frames, truncated) = match r.frames(raw.frame, limits.max_frames) {
                        Ok(f) => (f, None),
                        Err((f, why)) => (f, Some(why)),
                    };
                    if limits.locals {
                        for f in &mut frames {
                            if r.late() {
                                break;
                            }
                            f.locals =
                                locals::frame_locals(&r, f.frame, f.code).unwrap_or_default();
                        }
                    }
                    let tid = raw
                        .native_thread_id
                        .and_then(|n| i32::try_from(n).ok())
                        .filter(|&n| n > 0)
                        .map(Tid);
                    threads.push(PyThread {
                        tid,
                        thread_id: raw.thread_id,
                        tstate: raw.addr,
                        name: None,
                        frames,
                        truncated,
                        gil,
                    });
                }
                ts = raw.next;
            }
            break;
        }
        if limits.names && !r.late() {
            names.extend(names::thread_names(&r, interp));
        }
        interp = r.u64(interp.wrapping_add(layout.interp_next)).unwrap_or(0);
    }
    if layout.ts_native_thread_id.is_none() {
        map_pthreads(memory, &mut threads, tids, &mut problems);
    }
    if let Some(only) = limits.only {
        threads.retain(|t| t.tid == Some(only));
    }
    for t in &mut threads {
        t.name = names.get(&t.thread_id).cloned();
    }
    finder.known = r.into_known();
    Ok(PyProcess {
        interpreter,
        version: layout.version,
        free_threaded: layout.free_threaded,
        module: loc.module.clone(),
        threads,
        problems,
    })
}

/// What [`read_locals`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalsRead {
    /// Python frames whose locals were read.
    pub frames: usize,
    /// Python frames of the dump that no longer run the same code (the call returned since the
    /// dump, or the thread is gone): no locals for them.
    pub moved: usize,
    /// Python frames without a frame address (a dump by an older library).
    pub unknown: usize,
    /// The time budget ran out before every frame was read.
    pub late: bool,
}

/// Read the locals of the Python frames of `threads` (a dump taken earlier, e.g. by the
/// library) from the process `memory` reads, at the frame addresses the dump recorded. A
/// frame is read only if it still runs the code object the dump saw; the locals are those of
/// now, not of the dump's moment (the same while the thread waits where the dump saw it).
pub fn read_locals(
    threads: &mut [Thread],
    memory: &ProcessMemory,
    maps: &[Mapping],
    root: &Path,
    limits: &Limits,
) -> Result<LocalsRead, PyError> {
    let start = Instant::now();
    let mut finder = Finder::new();
    let loc = match finder.locate(memory.pid, maps, root) {
        Ok(Some(l)) => l,
        Ok(None) => return Err(PyError::NotPython),
        Err(e) => return Err(PyError::Unreadable(format!("looking for _PyRuntime: {e}"))),
    };
    let layout = layout_of(memory, &loc).map_err(|e| match e {
        LayoutError::Unsupported(s) | LayoutError::Unreadable(s) => PyError::Unreadable(s),
    })?;
    let r = Reader::new(memory, &layout, &loc, start + limits.budget);
    let mut out = LocalsRead::default();
    for t in threads.iter_mut() {
        let python_frames = t
            .python
            .as_mut()
            .map(|p| &mut p.frames[..])
            .unwrap_or_default();
        for f in t.frames.iter_mut().chain(python_frames.iter_mut()) {
            let Some(py) = f.python.as_mut() else {
                continue;
            };
            let Some(frame) = py.frame else {
                out.unknown += 1;
                continue;
            };
            if r.late() {
                out.late = true;
                return Ok(out);
            }
            if locals::frame_code(&r, frame.0) != Some(py.code.0) {
                out.moved += 1;
                continue;
            }
            if let Some(l) = locals::frame_locals(&r, frame.0, py.code.0) {
                py.locals = l;
                out.frames += 1;
            }
        }
    }
    Ok(out)
}

enum LayoutError {
    Unsupported(String),
    Unreadable(String),
}

/// The version and layout of the interpreter at `loc`.
fn layout_of(memory: &ProcessMemory, loc: &Located) -> Result<Layout, LayoutError> {
    let mut head = vec![0u8; layout::DEBUG_OFFSETS_BYTES];
    let n = memory.read(loc.runtime, &mut head);
    if n >= 8 && &head[..8] == layout::DEBUG_COOKIE {
        head.truncate(n);
        return layout::from_debug_offsets(&head).map_err(LayoutError::Unsupported);
    }
    if n < 8 && memory.read(loc.runtime, &mut head[..8]) < 8 {
        return Err(LayoutError::Unreadable(format!(
            "_PyRuntime at {:#x} is not readable",
            loc.runtime
        )));
    }
    let version = loc
        .py_version
        .and_then(|a| memory.read_u64(a))
        .map(Version::from_hex)
        .filter(|v| v.major == 3)
        .or(loc.name_version)
        .ok_or_else(|| {
            LayoutError::Unsupported("a CPython whose version cannot be told".to_string())
        })?;
    if !version.at_least(3, 8) {
        return Err(LayoutError::Unsupported(format!(
            "CPython {version}: Python frames need CPython 3.8 or later"
        )));
    }
    if version.at_least(3, 13) {
        return Err(LayoutError::Unsupported(format!(
            "CPython {version} without debug offsets in _PyRuntime"
        )));
    }
    layout::builtin(version)
        .ok_or_else(|| LayoutError::Unsupported(format!("CPython {version}: layout not known")))
}

/// Offsets of `tid` in glibc's `struct pthread` to try first.
#[cfg(target_arch = "x86_64")]
const PTHREAD_TID: u64 = 0x2d0;
#[cfg(target_arch = "aarch64")]
const PTHREAD_TID: u64 = 0xd0;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const PTHREAD_TID: u64 = 0x2d0;

/// Before 3.11 a thread state knows only its `pthread_t`: read the tid from `struct pthread`.
/// An offset is good when every thread state maps to a distinct thread of the process, to 0
/// (an exited thread: the kernel clears the field) or to a tid we do not know (a thread born
/// after the list of tids was taken, or a `struct pthread` reused by one), and at least one
/// (the main thread, whose tid is the pid, when it has a thread state) maps to a known thread.
/// The usual glibc offset is tried first, then every offset of the first 2 KiB, keeping the one
/// that identifies the most threads.
fn map_pthreads(
    memory: &ProcessMemory,
    threads: &mut [PyThread],
    tids: &[Tid],
    problems: &mut Vec<String>,
) {
    if threads.is_empty() {
        return;
    }
    let live: HashSet<i32> = tids.iter().map(|t| t.0).collect();
    let pid = memory.pid;
    // (tids found, whether the main thread is among them), None when two thread states map to
    // the same thread (not the tid field).
    let try_offset = |off: u64, sample: usize| -> Option<(Vec<Option<Tid>>, bool)> {
        let mut used: HashMap<i32, u64> = HashMap::new();
        let mut out = Vec::with_capacity(threads.len());
        for t in threads.iter().take(sample) {
            let mut word = [0u8; 4];
            if t.thread_id < 4096 || memory.read(t.thread_id.wrapping_add(off), &mut word) != 4 {
                out.push(None);
                continue;
            }
            let tid = i32::from_le_bytes(word);
            if tid > 0 && live.contains(&tid) {
                // Two thread states may share a pthread_t (3.8-3.10 give a thread state made
                // for a thread about to start its creator's ident), not a tid.
                if used
                    .insert(tid, t.thread_id)
                    .is_some_and(|p| p != t.thread_id)
                {
                    return None;
                }
                out.push(Some(Tid(tid)));
            } else {
                out.push(None);
            }
        }
        let main = used.contains_key(&pid);
        (!used.is_empty()).then_some((out, main))
    };
    let found = try_offset(PTHREAD_TID, threads.len()).or_else(|| {
        // Search on a sample (a few hundred reads at most), then map every thread.
        let sample = threads.len().min(16);
        let mut best: Option<(u64, usize, bool)> = None;
        for off in (0..2048u64).step_by(4) {
            if let Some((found, main)) = try_offset(off, sample) {
                let n = found.iter().flatten().count();
                let better = match best {
                    None => true,
                    Some((_, bn, bmain)) => (main, n) > (bmain, bn),
                };
                if better {
                    best = Some((off, n, main));
                }
            }
        }
        best.and_then(|(off, _, _)| try_offset(off, threads.len()))
    });
    match found {
        Some((tids, _)) => {
            for (t, tid) in threads.iter_mut().zip(tids) {
                t.tid = tid;
            }
        }
        None => problems.push(
            "cannot tell which kernel thread each Python thread is (the tid in struct pthread was not found)"
                .into(),
        ),
    }
}

/// Whether `t` waits for the GIL `gil`: it sleeps on a futex inside the GIL's struct (its
/// condition variables and mutexes: `take_gil` waiting for the holder to drop it, or a dropping
/// thread waiting for the switch), or its native stack reaches `take_gil` before any Python
/// frame (symbols needed).
pub fn waits_for_gil(t: &Thread, gil: &GilState) -> bool {
    if let SyscallState::InSyscall { name, args, .. } = &t.kernel.syscall {
        if name.as_deref() == Some("futex") && args.first().is_some_and(|a| gil.contains(a.0)) {
            return true;
        }
    }
    t.frames
        .iter()
        .take_while(|f| f.python.is_none() && !is_eval_frame(f))
        .any(|f| {
            f.function.as_deref().is_some_and(|n| {
                n.strip_prefix("take_gil")
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            })
        })
}

/// Is this native frame the evaluator (`_PyEval_EvalFrameDefault`, or a compiler's clone of
/// it such as `_PyEval_EvalFrameDefault.cold`)?
pub fn is_eval_frame(f: &Frame) -> bool {
    if f.inlined || f.python.is_some() {
        return false;
    }
    let Some(name) = f.function.as_deref() else {
        return false;
    };
    match name.strip_prefix("_PyEval_EvalFrameDefault") {
        Some(rest) => rest.is_empty() || rest.starts_with('.'),
        None => false,
    }
}

/// The result of merging one thread's Python frames into its native frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The thread's frames: native frames with the Python frames inserted (when `merge` is
    /// `merged` or `partial`), or the native frames unchanged (`separate`).
    pub frames: Vec<Frame>,
    /// The Python frames on their own, when `separate`; empty otherwise.
    pub python: Vec<Frame>,
    pub merge: PyMerge,
    pub eval_frames: usize,
    pub entries: usize,
    pub note: Option<String>,
}

/// A Python frame as a [`Frame`] of the dump.
pub fn to_frame(f: &PyFrame) -> Frame {
    Frame {
        ip: Addr(f.ip),
        module: None,
        offset: None,
        function: Some(f.function.as_str().into()),
        file: Some(f.file.as_str().into()),
        line: f.line,
        inlined: false,
        python: Some(PyFrameInfo {
            code: Addr(f.code),
            name: f.name.clone(),
            first_line: f.first_line,
            entry: f.entry,
            frame: (f.frame != 0).then_some(Addr(f.frame)),
            locals: f.locals.clone(),
        }),
        jit: None,
    }
}

/// Merge `py`'s frames into `native` (innermost first; `native_truncated`: the native stack
/// does not reach its thread's entry point). See the module documentation.
pub fn merge(native: &[Frame], native_truncated: bool, py: &PyThread) -> Merged {
    let evals: Vec<usize> = native
        .iter()
        .enumerate()
        .filter(|(_, f)| is_eval_frame(f))
        .map(|(i, _)| i)
        .collect();
    let segments = py.segments();
    let (e, s) = (evals.len(), segments.len());
    let py_truncated = py.truncated.is_some();
    let separate = |note: String| Merged {
        frames: native.to_vec(),
        python: py.frames.iter().map(to_frame).collect(),
        merge: PyMerge::Separate,
        eval_frames: e,
        entries: s,
        note: Some(note),
    };
    if py.frames.is_empty() {
        return Merged {
            frames: native.to_vec(),
            python: Vec::new(),
            merge: PyMerge::Merged,
            eval_frames: e,
            entries: 0,
            note: None,
        };
    }
    if native.is_empty() {
        return separate("no native stack to merge into".into());
    }
    let pairs = if e == s {
        e
    } else if (native_truncated && e < s) || (py_truncated && s < e) {
        e.min(s)
    } else {
        return separate(format!(
            "not merged: the native stack has {e} evaluator frame(s) (_PyEval_EvalFrameDefault), the Python stack {s} evaluator entr{} (the thread may have moved between the two reads)",
            if s == 1 { "y" } else { "ies" }
        ));
    };
    if pairs == 0 && s > 0 {
        return separate(format!(
            "not merged: no evaluator frame in the {} native stack",
            if native_truncated {
                "truncated"
            } else {
                "captured"
            }
        ));
    }
    let mut frames = Vec::with_capacity(native.len() + py.frames.len());
    let mut next = 0;
    for (k, &at) in evals.iter().take(pairs).enumerate() {
        frames.extend_from_slice(&native[next..at]);
        frames.extend(segments[k].iter().map(to_frame));
        next = at;
    }
    frames.extend_from_slice(&native[next..]);
    if pairs == e && pairs == s {
        return Merged {
            frames,
            python: Vec::new(),
            merge: PyMerge::Merged,
            eval_frames: e,
            entries: s,
            note: None,
        };
    }
    let note = if pairs < s {
        // The native stack is truncated: the outer Python frames go after it.
        for seg in &segments[pairs..] {
            frames.extend(seg.iter().map(to_frame));
        }
        format!(
            "the native stack is truncated: its {e} evaluator frame(s) are merged with the innermost Python frames, the {} outer Python frame(s) follow it",
            segments[pairs..].iter().map(|s| s.len()).sum::<usize>()
        )
    } else {
        format!(
            "the Python stack is truncated: its {s} evaluator entries are merged with the innermost native evaluator frames; the outer {} native evaluator frame(s) have no Python frames",
            e - pairs
        )
    };
    Merged {
        frames,
        python: Vec::new(),
        merge: PyMerge::Partial,
        eval_frames: e,
        entries: s,
        note: Some(note),
    }
}

/// Add Python frames and names to the threads of a dump (no-op when the process is not a
/// CPython process). What went wrong goes to `errors`, prefixed `python: `.
pub fn annotate(
    threads: &mut [Thread],
    memory: &ProcessMemory,
    maps: &[Mapping],
    root: &Path,
    errors: &mut Vec<String>,
) {
    annotate_with(
        &mut Finder::new(),
        &Limits::default(),
        threads,
        memory,
        maps,
        root,
        errors,
    )
}

/// [`annotate`] with a [`Finder`] kept across dumps and explicit limits.
pub fn annotate_with(
    finder: &mut Finder,
    limits: &Limits,
    threads: &mut [Thread],
    memory: &ProcessMemory,
    maps: &[Mapping],
    root: &Path,
    errors: &mut Vec<String>,
) {
    let tids: Vec<Tid> = threads.iter().map(|t| t.tid).collect();
    let py = threads_with(finder, limits, memory, maps, root, &tids);
    merge_into(threads, py, errors);
}

/// The second half of [`annotate_with`]: merge Python frames read earlier by [`threads_with`]
/// into the (symbolized) native stacks of `threads`. The dumper reads them as soon as the
/// native stacks are copied, and merges once they are symbolized, so that the two describe
/// as nearly as possible the same moment.
pub fn merge_into(
    threads: &mut [Thread],
    py: Result<PyProcess, PyError>,
    errors: &mut Vec<String>,
) {
    let py = match py {
        Ok(p) => p,
        Err(PyError::NotPython) => return,
        Err(e) => {
            errors.push(format!("python: {e}"));
            return;
        }
    };
    errors.extend(py.problems.iter().take(8).map(|p| format!("python: {p}")));
    let mut unmatched = 0;
    for pt in &py.threads {
        let Some(t) = pt
            .tid
            .and_then(|tid| threads.iter_mut().find(|t| t.tid == tid))
        else {
            // Thread states without frames are threads about to start or just finishing.
            if !pt.frames.is_empty() {
                unmatched += 1;
            }
            continue;
        };
        // A second thread state for the same thread (one made for a thread about to start
        // carries its creator's ident before 3.11): keep the one with frames.
        if t.python
            .as_ref()
            .is_some_and(|p| p.depth >= pt.frames.len())
        {
            continue;
        }
        let waits_for_gil = pt.gil.is_some_and(|g| waits_for_gil(t, &g));
        let active = match t.kernel.state.as_str() {
            "" => None,
            s => Some(s == "R" && !waits_for_gil),
        };
        let m = merge(&t.frames, t.truncated, pt);
        let note = match (&pt.truncated, m.note) {
            (Some(why), Some(n)) => Some(format!("Python stack truncated: {why}; {n}")),
            (Some(why), None) => Some(format!("Python stack truncated: {why}")),
            (None, n) => n,
        };
        t.frames = m.frames;
        t.python = Some(PyThreadInfo {
            interpreter: py.interpreter.clone(),
            name: pt.name.clone(),
            merge: m.merge,
            depth: pt.frames.len(),
            eval_frames: m.eval_frames,
            entries: m.entries,
            frames: m.python,
            truncated: pt.truncated.is_some(),
            note,
            gil: pt.holds_gil(),
            waits_for_gil,
            active,
        });
    }
    if unmatched > 0 {
        errors.push(format!(
            "python: {unmatched} Python thread state(s) with frames match no thread of the process (threads that started or exited during the dump, or not identifiable)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Frame {
                ip: Addr(0x1000 + i as u64),
                module: Some("/usr/lib/libpython3.11.so".into()),
                offset: None,
                function: Some((*n).into()),
                file: None,
                line: None,
                inlined: false,
                python: None,
                jit: None,
            })
            .collect()
    }

    fn py(frames: &[(&str, bool)]) -> PyThread {
        PyThread {
            tid: Some(Tid(1)),
            thread_id: 0,
            tstate: 0,
            name: None,
            gil: None,
            frames: frames
                .iter()
                .enumerate()
                .map(|(i, (n, entry))| PyFrame {
                    function: n.to_string(),
                    name: n.to_string(),
                    file: "x.py".into(),
                    line: Some(i as u32 + 1),
                    first_line: Some(1),
                    code: 0x5000,
                    ip: 0x6000 + i as u64,
                    entry: *entry,
                    frame: 0x7000 + i as u64,
                    locals: Vec::new(),
                })
                .collect(),
            truncated: None,
        }
    }

    fn names(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let n = f.function.as_deref().unwrap_or_default().to_string();
                if f.python.is_some() {
                    format!("py:{n}")
                } else {
                    n
                }
            })
            .collect()
    }

    const EVAL: &str = "_PyEval_EvalFrameDefault";

    #[test]
    fn merges_at_the_evaluator_frames() {
        let n = native(&["write", "builtin_print", EVAL, "sorted", EVAL, "main"]);
        let p = py(&[
            ("inner", false),
            ("key", true),
            ("outer", false),
            ("<module>", true),
        ]);
        let m = merge(&n, false, &p);
        assert_eq!(m.merge, PyMerge::Merged);
        assert_eq!(
            names(&m.frames),
            [
                "write",
                "builtin_print",
                "py:inner",
                "py:key",
                EVAL,
                "sorted",
                "py:outer",
                "py:<module>",
                EVAL,
                "main"
            ]
        );
        assert!(m.python.is_empty());
    }

    #[test]
    fn counts_that_disagree_keep_both() {
        let n = native(&["write", EVAL, "main"]);
        let p = py(&[("a", true), ("b", true)]);
        let m = merge(&n, false, &p);
        assert_eq!(m.merge, PyMerge::Separate);
        assert_eq!(names(&m.frames), ["write", EVAL, "main"]);
        assert_eq!(names(&m.python), ["py:a", "py:b"]);
        assert!(m.note.unwrap().contains("1 evaluator frame"));
    }

    #[test]
    fn truncated_native_stack_merges_the_innermost() {
        let n = native(&["write", EVAL, "call", EVAL]);
        let p = py(&[("a", true), ("b", true), ("c", true), ("d", true)]);
        let m = merge(&n, true, &p);
        assert_eq!(m.merge, PyMerge::Partial);
        assert_eq!(
            names(&m.frames),
            ["write", "py:a", EVAL, "call", "py:b", EVAL, "py:c", "py:d"]
        );
    }

    #[test]
    fn cold_clones_and_inlined_frames() {
        let mut n = native(&["write", "_PyEval_EvalFrameDefault.cold", EVAL, "main"]);
        n[2].inlined = true; // an inlined frame of the same name does not count
        let p = py(&[("a", true)]);
        let m = merge(&n, false, &p);
        assert_eq!(m.merge, PyMerge::Merged);
        assert_eq!(
            names(&m.frames),
            [
                "write",
                "py:a",
                "_PyEval_EvalFrameDefault.cold",
                EVAL,
                "main"
            ]
        );
        assert!(!is_eval_frame(&native(&["_PyEval_EvalFrameDefaultX"])[0]));
    }

    #[test]
    fn segments_end_at_entries() {
        let p = py(&[("a", false), ("b", true), ("c", true), ("d", false)]);
        let s: Vec<Vec<&str>> = p
            .segments()
            .iter()
            .map(|s| s.iter().map(|f| f.name.as_str()).collect())
            .collect();
        assert_eq!(s, vec![vec!["a", "b"], vec!["c"], vec!["d"]]);
    }
}
