//! User stacks of another process, taken from outside (`stackdump inspect PID`), with nothing
//! loaded into it and no signal sent to it.
//!
//! - A thread blocked in a system call is read **without stopping it**, in the same visit as
//!   its kernel view ([`Capture`], through [`crate::outside::inspect::Visit`]): its run counter
//!   (`schedstat`) is read, then its `syscall` line (SP and PC), then its stack is copied with
//!   `process_vm_readv`, then the run counter again: unchanged means it was not put on a CPU
//!   since before the line was read (and read once more after the unwinding, which may read
//!   beyond the copy), so it did not move while it was copied ([`copy_blocked`]: a thread that
//!   ran but is back in the same call at the same place is tried once more; without
//!   `schedstat`, the line and the context-switch counts are compared instead, once). The copy is unwound with the shared
//!   DWARF unwinder from SP and PC alone and kept only when it ends at a thread entry point,
//!   named from the modules' symbol tables (a frame whose CFA depends on a register the kernel
//!   does not show, e.g. rbp, cannot unwind that way).
//! - Every other thread (running, runnable, or blocked but not unwindable from SP/PC) is
//!   **stopped alone, for the copy only**: `PTRACE_SEIZE` (without `PTRACE_O_EXITKILL`: if we
//!   die, the kernel detaches and the target runs on), `PTRACE_INTERRUPT`, `waitpid(__WALL)`
//!   (polled, so the stop is seen at once), `PTRACE_GETREGS`, a copy of the stack window into a
//!   buffer allocated before the stop, `PTRACE_DETACH`. Unwinding and symbols come after the
//!   detach. The time each thread was stopped is measured and reported.
//! - With [`Options::consistent`], every thread is seized and stopped first (a coherent cut of
//!   the whole process), then all are copied, then all are detached. Blocked calls of the
//!   target may then see EINTR (as under gdb), which the default mode avoids.
//! - Symbols (function, file:line, inlined frames) come from DWARF, read on a thread of its own
//!   ([`Prepared`]) while the kernel view and the stacks are read: the module the main thread
//!   is blocked in and the executable first, then every module a stack goes through as soon as
//!   one does (compressed sections through [`crate::stack::dwarfcache`] when the caller gives one).
//!   Once every stack is taken, each module's DWARF is set up for the units its addresses are
//!   in ([`crate::stack::dwarfunits`]), and each distinct address is symbolized once.
//!
//! - Python frames (CPython) are read once every stack is copied, and made to agree with the
//!   stacks copied without a stop (a thread that ran in between is copied again, and its
//!   Python frames read right after).
//!
//! The target is never left stopped by us: every seized thread is held by a guard that detaches
//! it on every path (errors, panics, an early return on cancellation).
//! Unwind data and symbols come from the target's own files, through `/proc/PID/root` and
//! `/proc/PID/map_files` ([`crate::stack::unwind::ModuleSource::process`]).

use crate::kernel::proc::{self, Mapping, RunCounter, TaskReader};
use crate::model::{Addr, CaptureMethod, CaptureStatus, Dump, Frame, SyscallState, Thread, Tid};
use crate::stack::blocked::{copy_blocked, Seen, FIRST_WINDOW};
use crate::stack::dwarfcache::DwarfCache;
use crate::stack::jit::{JitCode, PerfMapSource};
use crate::stack::symbols::{debug_source, FileSymbolizer, ModuleDebug, Roots};
use crate::stack::unwind::{
    is_truncated, unwound_complete, ModuleSource, Modules, ProcessMemory, RawFrames, Regs,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How to take the stacks.
pub struct Options<'a> {
    /// Stop every thread first, then copy, then detach every thread.
    pub consistent: bool,
    /// Bytes of stack copied from SP.
    pub window: usize,
    pub max_frames: usize,
    /// Checked between threads: true stops the capture (the threads left are `skipped`).
    pub cancel: &'a dyn Fn() -> bool,
    /// Called while a thread is held stopped, after its registers were read (a test hook: the
    /// CLI uses it to pause there, so a test can kill the CLI while it holds a thread).
    pub on_stopped: &'a dyn Fn(Tid),
    /// Where decompressed debug sections are kept between runs (None: decompressed each time).
    pub cache: Option<DwarfCache>,
    /// Read the arguments and local variables of Python frames (never by default: they can
    /// hold secrets).
    pub locals: bool,
    /// The caller exits after its output (the CLI's `inspect`): when no CPU is free, what a
    /// capture leaves to free (thousands of small allocations, milliseconds) is not freed beside
    /// the output, which it would delay, but kept until the next capture of this process
    /// begins. Otherwise it is freed on a thread of its own (a long-lived caller such as
    /// `watch` does not keep it between captures).
    pub exits_after: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            consistent: false,
            window: 64 * 1024,
            max_frames: 512,
            cancel: &|| false,
            on_stopped: &|_| {},
            cache: None,
            locals: false,
            exits_after: false,
        }
    }
}

/// One thread stopped with ptrace, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub tid: Tid,
    pub name: String,
    /// From `PTRACE_INTERRUPT` to the return of `PTRACE_DETACH`: an upper bound of the time
    /// the thread did not run because of us (a runnable thread that waits for a CPU reaches its
    /// stop only when it gets one).
    pub stopped: Duration,
    /// From the moment `waitpid` reported the stop to the return of `PTRACE_DETACH`: the time
    /// we held the thread (registers and stack copy), a lower bound of its stop.
    pub held: Duration,
}

/// What happened besides the stacks.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Why no stack could be read at all (no permission to ptrace the process), in one line.
    pub denied: Option<String>,
    /// Threads read without being stopped.
    pub without_stop: usize,
    /// Threads stopped, with their stop times.
    pub stops: Vec<Stop>,
    /// The capture was cancelled (Ctrl-C) before every thread was read.
    pub cancelled: bool,
}

impl Outcome {
    /// The longest stop of any thread.
    pub fn longest_stop(&self) -> Option<&Stop> {
        self.stops.iter().max_by_key(|s| s.stopped)
    }
}

/// A copied stack and the registers to unwind it from.
struct Copy {
    regs: Regs,
    stack: Vec<u8>,
    /// The thread cannot run (it is blocked, and was re-checked): reads beyond the copy may go
    /// to its live memory.
    live: bool,
}

/// What [`crate::outside::inspect_stacks`] starts before the kernel view is read: the target's maps, its
/// modules' unwind data, and a thread that reads the DWARF of the modules its stacks are in,
/// in parallel with the capture (starting with the module the main thread is blocked in and
/// the executable, the ones nearly every stack goes through).
pub struct Prepared {
    pid: i32,
    ready: Result<Ready, String>,
}

struct Ready {
    /// The cache of decompressed debug sections (and what is derived from them), if any.
    cache: Option<DwarfCache>,
    maps: Vec<Mapping>,
    modules: Modules,
    loader: DebugLoader,
    /// Executable memory outside the modules, for the frame-pointer recovery's candidates.
    jit: JitCode,
    /// A CPU was free when the capture began: what it leaves to free is freed on a thread of
    /// its own (else, when the caller exits next, kept for later: see [`LEFTOVERS`]).
    helper: bool,
}

/// What the last capture left to free (its parsed DWARF, unwind tables and memo: thousands of
/// small allocations, milliseconds to free) when no CPU was free to do it beside the output and
/// its caller exits next ([`Options::exits_after`]). Freed, in place, when the next capture of
/// this process begins, before it reads anything (the DWARF it holds counts against the
/// budget of decompressed sections, `crate::limits::Reservation`); or never, when the process
/// exits first.
static LEFTOVERS: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>> =
    std::sync::Mutex::new(None);

/// Free what `garbage` holds off the path to the output: on a thread of its own, unless no CPU
/// is free (`helper` false) and the caller exits next: then later ([`LEFTOVERS`]).
fn free_later(garbage: Box<dyn std::any::Any + Send>, helper: bool, exits_after: bool) {
    if !helper && exits_after {
        if let Ok(mut kept) = LEFTOVERS.lock() {
            // (The last capture's were freed when this one began: this is empty.)
            *kept = Some(garbage);
            return;
        }
    }
    let _ = std::thread::Builder::new()
        .name("free".into())
        .spawn(move || drop(garbage));
}

impl Prepared {
    /// Read the maps of process `pid` and start loading what its stacks will need (debug
    /// sections through `cache` when given; on a thread of its own with `helper`, else when
    /// the symbols are needed). Without permission to read them, [`Capture::finish`] says why
    /// (in [`Outcome::denied`]).
    pub fn start(pid: i32, cache: Option<DwarfCache>, helper: bool) -> Prepared {
        let old = LEFTOVERS.lock().ok().and_then(|mut kept| kept.take());
        drop(old);
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        // Its credentials as of now, before the paths of its maps are known: its files are
        // opened with these only (crate::kernel::rootfs).
        crate::kernel::rootfs::remember_creds(pid);
        let maps = match std::fs::read(proc_dir.join("maps")) {
            Ok(b) if !b.is_empty() => proc::parse_maps(&b),
            Ok(_) | Err(_) => {
                return Prepared {
                    pid,
                    ready: Err(denied_reason(pid)),
                }
            }
        };
        if let Some(errno) = memory_denied(pid, &maps) {
            let why = if errno == libc::EPERM || errno == libc::EACCES {
                denied_reason(pid)
            } else {
                format!(
                    "cannot read the memory of process {pid}: {}",
                    std::io::Error::from_raw_os_error(errno)
                )
            };
            return Prepared {
                pid,
                ready: Err(why),
            };
        }
        let mut modules = Modules::new(ModuleSource::process(pid));
        modules.sync(&maps);
        let mut loader = DebugLoader::start(proc_dir.join("root"), cache.clone(), helper);
        // The module the main thread is blocked in (its C library, nearly always), and the
        // executable.
        if let Ok(b) = std::fs::read(proc_dir.join("syscall")) {
            if let SyscallState::InSyscall { pc, .. } | SyscallState::Blocked { pc, .. } =
                proc::parse_syscall(&String::from_utf8_lossy(&b))
            {
                loader.request(&modules, pc.0);
            }
        }
        if let Ok(exe) = std::fs::read_link(proc_dir.join("exe")) {
            let exe = exe.to_string_lossy();
            if let Some(m) = modules.list().iter().find(|m| *m.path == *exe) {
                loader.request(&modules, m.range.start);
            }
        }
        let jit = JitCode::new(&maps, &modules, None);
        Prepared {
            pid,
            ready: Ok(Ready {
                cache,
                maps,
                modules,
                loader,
                jit,
                helper,
            }),
        }
    }
}

/// Reads module debug information on a thread of its own, as the capture finds the modules its
/// stacks go through. Without that thread (no CPU to spare, or it could not be spawned),
/// everything is loaded when the symbols are needed.
struct DebugLoader {
    root: PathBuf,
    tx: Option<mpsc::Sender<PathBuf>>,
    worker: Option<std::thread::JoinHandle<Vec<(PathBuf, ModuleDebug)>>>,
    /// Modules asked for, by the start of their range.
    requested: HashSet<u64>,
}

impl DebugLoader {
    fn start(root: PathBuf, cache: Option<DwarfCache>, thread: bool) -> DebugLoader {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let r = root.clone();
        let worker = thread
            .then(|| {
                std::thread::Builder::new()
                    .name("symbols".into())
                    .spawn(move || {
                        let mut out = Vec::new();
                        for file in rx {
                            let debug =
                                ModuleDebug::load_from(&debug_source(&file, &r), cache.as_ref());
                            out.push((file, debug));
                        }
                        out
                    })
                    .ok()
            })
            .flatten();
        DebugLoader {
            root,
            tx: worker.is_some().then_some(tx),
            worker,
            requested: HashSet::new(),
        }
    }

    /// Ask for the debug information of the module containing `addr`.
    fn request(&mut self, modules: &Modules, addr: u64) {
        let Some(m) = modules.module_of(addr) else {
            return;
        };
        if !self.requested.insert(m.range.start) {
            return;
        }
        if let (Some(tx), Some(file)) = (&self.tx, &m.file) {
            let _ = tx.send(file.clone());
        }
    }

    /// Ask for the modules of every address of an unwound stack.
    fn request_all(&mut self, modules: &Modules, raw: &RawFrames) {
        let mut last = None;
        for &(ip, _) in &raw.addrs {
            let start = modules.module_of(ip).map(|m| m.range.start);
            if start != last {
                last = start;
                self.request(modules, ip);
            }
        }
    }

    /// Wait for what was asked for and hand it to `symbols`.
    fn finish(mut self, symbols: &mut FileSymbolizer) {
        drop(self.tx.take());
        if let Some(worker) = self.worker.take() {
            if let Ok(loaded) = worker.join() {
                for (file, debug) in loaded {
                    symbols.insert(file, debug);
                }
            }
        }
    }
}

/// The outside capture of one `inspect`: started before the kernel view ([`Capture::new`]), fed
/// every thread during it ([`Visit`](crate::outside::inspect::Visit): a thread blocked in a system call has its stack copied
/// there, without a stop), finished after it ([`Capture::finish`]: the other threads stopped one
/// at a time, or all at once with [`Options::consistent`]; every stack unwound and symbolized).
pub struct Capture {
    pid: i32,
    ready: Result<Ready, String>,
    /// Blocked threads are copied during the visit (not with `--consistent`, which stops
    /// every thread for one coherent cut).
    copy_blocked: bool,
    memory: ProcessMemory,
    names: Names,
    scratch: Vec<u8>,
    window: usize,
    max_frames: usize,
    /// The run counter of the thread being visited, read before its kernel view.
    counter: Option<Counted>,
    /// Stacks taken so far, by index in `Dump::threads`.
    frames_of: Vec<(usize, RawFrames)>,
    /// The threads copied without a stop, by index in `Dump::threads`, with their run
    /// counter at the copy: [`settle_python`] checks it after their Python frames are read.
    runs_at_copy: Vec<(usize, Tid, (u64, u64))>,
    /// Time spent copying and unwinding during the visit.
    visit_time: Duration,
    unwind_time: Duration,
}

impl Capture {
    /// A capture of the process `prepared` was started for.
    pub fn new(prepared: Prepared, opts: &Options) -> Capture {
        let cache = prepared.ready.as_ref().ok().and_then(|r| r.cache.clone());
        Capture {
            pid: prepared.pid,
            ready: prepared.ready,
            copy_blocked: !opts.consistent,
            memory: ProcessMemory { pid: prepared.pid },
            names: Names {
                roots: HashMap::new(),
                cache,
            },
            scratch: Vec::new(),
            window: opts.window,
            max_frames: opts.max_frames,
            counter: None,
            frames_of: Vec::new(),
            runs_at_copy: Vec::new(),
            visit_time: Duration::ZERO,
            unwind_time: Duration::ZERO,
        }
    }

    /// The time the visit spent on stacks (part of the kernel view's wall time).
    pub fn visit_time(&self) -> Duration {
        self.visit_time
    }
}

/// A thread's run counter and its reading before the thread's kernel view.
struct Counted {
    tid: Tid,
    counter: RunCounter,
    before: Option<(u64, u64)>,
}

impl crate::outside::inspect::Visit for Capture {
    fn before(&mut self, reader: &mut TaskReader, tid: Tid) {
        self.counter = None;
        if !self.copy_blocked || self.ready.is_err() {
            return;
        }
        if let Some(counter) = reader.run_counter(tid) {
            let before = counter.read();
            self.counter = Some(Counted {
                tid,
                counter,
                before,
            });
        }
    }

    fn after(&mut self, reader: &mut TaskReader, index: usize, thread: &Thread) {
        let Ok(ready) = &mut self.ready else {
            return;
        };
        if !self.copy_blocked {
            return;
        }
        let t0 = Instant::now();
        let counted = self.counter.take().filter(|c| c.tid == thread.tid);
        let k = &thread.kernel;
        // The unwind tables of the module the thread is blocked in (its C library, nearly
        // always) are read before its stack is copied: the window between the copy and the
        // check that it did not run stays short. Those of its callers' modules are read when
        // an unwind first goes through them (a retry when that thread ran meanwhile).
        if let SyscallState::InSyscall { pc, .. } = &k.syscall {
            ready.modules.ensure(pc.0);
            if counted.is_none() {
                // Without a run counter nothing is checked after the unwind, which may read
                // beyond the copy from live memory: every module's tables now, not between
                // the check and those reads.
                ready.modules.load_all();
            }
        }
        let seen = Seen {
            syscall: &k.syscall,
            switches: (k.voluntary_ctxt_switches, k.nonvoluntary_ctxt_switches),
            runs: counted.as_ref().and_then(|c| c.before),
        };
        let mut copier = Copier {
            memory: &self.memory,
            modules: &mut ready.modules,
            jit: &ready.jit,
            names: &mut self.names,
            root: &ready.loader.root,
            scratch: &mut self.scratch,
            window: self.window,
            max_frames: self.max_frames,
            unwound: Duration::ZERO,
        };
        let taken = copier.copy(
            reader,
            thread.tid,
            seen,
            counted.as_ref().map(|c| &c.counter),
        );
        let unwound = copier.unwound;
        if let Some((raw, run)) = taken {
            ready.loader.request_all(&ready.modules, &raw);
            self.frames_of.push((index, raw));
            if let Some(run) = run {
                self.runs_at_copy.push((index, thread.tid, run));
            }
        }
        self.unwind_time += unwound;
        self.visit_time += t0.elapsed();
    }
}

/// What copies a blocked thread's stack without a stop ([`copy_blocked`]) and unwinds it: in
/// the visit, and again for a Python thread that ran before its Python frames were read
/// ([`settle_python`]).
struct Copier<'a> {
    memory: &'a ProcessMemory,
    modules: &'a mut Modules,
    jit: &'a JitCode,
    names: &'a mut Names,
    root: &'a Path,
    scratch: &'a mut Vec<u8>,
    window: usize,
    max_frames: usize,
    /// Time spent unwinding the copies.
    unwound: Duration,
}

impl Copier<'_> {
    /// The copy and its run counter reading (see [`copy_blocked`]); the time spent unwinding
    /// is added to [`Copier::unwound`].
    fn copy(
        &mut self,
        reader: &mut TaskReader,
        tid: Tid,
        seen: Seen,
        counter: Option<&RunCounter>,
    ) -> Option<(RawFrames, Option<(u64, u64)>)> {
        let memory = self.memory;
        let jit = self.jit;
        // Shared by the unwinder and the frame-pointer recovery's function starts.
        let modules = std::cell::RefCell::new(&mut *self.modules);
        let names = &mut *self.names;
        let root = self.root;
        let max_frames = self.max_frames;
        let unwound = &mut self.unwound;
        let mut unwind = |regs: &Regs, stack: &[u8]| {
            let t = Instant::now();
            let mut modules = modules.borrow_mut();
            let raw = modules.unwind(regs, stack, max_frames, true);
            *unwound += t.elapsed();
            let complete = unwound_complete(&raw, |ip, is_return| {
                names.names_root(&modules, root, ip, is_return)
            });
            (raw, complete)
        };
        copy_blocked(
            reader,
            tid,
            seen,
            counter,
            (FIRST_WINDOW.min(self.window), self.window),
            self.scratch,
            &mut |addr, buf| memory.read(addr, buf),
            &mut unwind,
            &mut |addr| modules.borrow_mut().function_start(addr),
            &mut |addr| jit.region_of(addr).is_some(),
        )
    }
}

impl Capture {
    /// Take the stacks the visit did not (running threads, and blocked ones that moved or do
    /// not unwind from SP and PC): each stopped alone with ptrace for its copy only, or all at
    /// once with [`Options::consistent`]. Then unwind and symbolize every stack. Threads read
    /// get `capture: ok`, `signalled: false`; the others keep their status, with the reason in
    /// `errors`.
    pub fn finish(self, dump: &mut Dump, opts: &Options) -> Outcome {
        let Capture {
            pid,
            ready,
            memory,
            mut names,
            mut scratch,
            window,
            max_frames,
            mut frames_of,
            runs_at_copy,
            visit_time,
            mut unwind_time,
            ..
        } = self;
        let mut out = Outcome::default();
        let Ready {
            cache,
            maps,
            mut modules,
            mut loader,
            jit: exec_regions,
            helper,
        } = match ready {
            Ok(r) => r,
            Err(why) => {
                dump.errors.push(format!("no user stacks: {why}"));
                out.denied = Some(why);
                return out;
            }
        };
        let root = loader.root.clone();
        out.without_stop = frames_of.len();
        let _ = pid;

        let start = Instant::now();
        let mut failures: Vec<String> = Vec::new();
        let done: HashSet<usize> = frames_of.iter().map(|(i, _)| *i).collect();
        let todo: Vec<usize> = (0..dump.threads.len())
            .filter(|i| !done.contains(i) && dump.threads[*i].capture == CaptureStatus::Skipped)
            .collect();

        let copies = if opts.consistent {
            stop_all_then_copy(dump, &todo, &memory, opts, &mut out, &mut failures)
        } else {
            stop_one_at_a_time(dump, &todo, &memory, opts, &mut out, &mut failures)
        };
        let capture_time = start.elapsed() + visit_time;
        for (i, c) in copies {
            let t0 = Instant::now();
            let raw = modules.unwind(&c.regs, &c.stack, opts.max_frames, c.live);
            unwind_time += t0.elapsed();
            loader.request_all(&modules, &raw);
            frames_of.push((i, raw));
        }

        // Python frames, read now that every native stack is copied (as close to the copies
        // as the process allows), then made to agree with them: merged after the symbols.
        let limits = crate::python::Limits {
            locals: opts.locals,
            ..crate::python::Limits::default()
        };
        let mut finder = crate::python::Finder::new();
        let tids: Vec<Tid> = dump.threads.iter().map(|t| t.tid).collect();
        let mut py =
            crate::python::threads_with(&mut finder, &limits, &memory, &maps, &root, &tids);
        if let Ok(py) = &mut py {
            let mut copier = Copier {
                memory: &memory,
                modules: &mut modules,
                jit: &exec_regions,
                names: &mut names,
                root: &root,
                scratch: &mut scratch,
                window,
                max_frames,
                unwound: Duration::ZERO,
            };
            let python = PythonRead {
                finder: &mut finder,
                limits,
                maps: &maps,
            };
            // Copied without a stop, with their run counters; and copied with a stop though
            // the visit found them blocked (they moved while copied): those may have moved on
            // since, and are taken again without a stop if they are blocked now.
            let mut copied: Vec<Copied> = runs_at_copy
                .iter()
                .map(|&(i, tid, run)| (i, tid, Some(run)))
                .collect();
            if !opts.consistent {
                let stopped: HashSet<usize> = frames_of.iter().map(|(i, _)| *i).collect();
                copied.extend(
                    todo.iter()
                        .filter(|&&i| {
                            stopped.contains(&i)
                                && matches!(
                                    dump.threads[i].kernel.syscall,
                                    SyscallState::InSyscall { .. }
                                )
                        })
                        .map(|&i| (i, dump.threads[i].tid, None)),
                );
            }
            let retaken = settle_python(pid, py, dump, &copied, &mut copier, python);
            unwind_time += copier.unwound;
            for (i, raw) in retaken {
                loader.request_all(&modules, &raw);
                if let Some(slot) = frames_of.iter_mut().find(|(j, _)| *j == i) {
                    slot.1 = raw;
                }
            }
        }

        // (After every unwind, the Python retakes' too: a module's tables are read when a
        // stack first goes through it, and a failure to read them is one of these.)
        dump.errors.extend(modules.problems.iter().cloned());

        // Symbolize: each distinct address once.
        let t3 = Instant::now();
        let mut symbols = prepare_symbols(&modules, loader, &frames_of, &root, cache);
        let mut memo: HashMap<(u64, bool), Vec<Frame>> = HashMap::new();
        let mut jit = JitCode::new(&maps, &modules, PerfMapSource::process(pid));
        for (i, raw) in frames_of {
            let t = &mut dump.threads[i];
            let mut names = Namer {
                modules: &modules,
                symbols: &mut symbols,
                jit: &mut jit,
                root: &root,
            };
            let (frames, truncated) = symbolize(&mut names, &raw, &mut memo);
            t.frames = frames;
            t.truncated = truncated;
            t.capture = CaptureStatus::Ok;
            t.signalled = false;
        }
        dump.errors.extend(jit.problem.take());
        // The names found in DWARF this time, for the next inspect of a process with these
        // modules (nothing is written when every name came from the cache).
        symbols.save_names();
        crate::python::merge_into(&mut dump.threads, py, &mut dump.errors);
        // Freeing the parsed DWARF, unwind tables and memo takes milliseconds (many small
        // allocations): off the path to the output.
        free_later(
            Box::new((symbols, memo, modules, maps)),
            helper,
            opts.exits_after,
        );
        let symbolize_time = t3.elapsed();

        dump.errors.extend(failures);
        if out.cancelled {
            let left = dump
                .threads
                .iter()
                .filter(|t| t.capture == CaptureStatus::Skipped)
                .count();
            dump.errors.push(format!(
                "interrupted: the stacks of {left} thread(s) were not read (they are listed as skipped)"
            ));
        }
        if let Some(note) = stops_note(&out.stops, opts.consistent) {
            dump.errors.push(note);
        }
        let phases = (capture_time, unwind_time, symbolize_time);
        record_capture(dump, &out, opts.consistent, phases);
        out
    }
}

/// [`Options::consistent`]: seize and stop every thread of `todo`, then copy each, then let
/// them all go. Returns the copies; a thread that could not be stopped or copied gets its
/// status and a line in `failures`.
fn stop_all_then_copy(
    dump: &mut Dump,
    todo: &[usize],
    memory: &ProcessMemory,
    opts: &Options,
    out: &mut Outcome,
    failures: &mut Vec<String>,
) -> Vec<(usize, Copy)> {
    let mut copies: Vec<(usize, Copy)> = Vec::new();
    // Seize and stop everything, then copy, then let everything go.
    let mut held: Vec<(usize, Seized)> = Vec::new();
    for &i in todo {
        if (opts.cancel)() {
            out.cancelled = true;
            break;
        }
        let t = &mut dump.threads[i];
        match Seized::stop(t.tid) {
            Ok(s) => held.push((i, s)),
            Err(e) => note_failure(t, e, failures),
        }
    }
    for (i, s) in &mut held {
        let t = &mut dump.threads[*i];
        match s.copy(memory, vec![0u8; opts.window]) {
            Ok(c) => {
                (opts.on_stopped)(t.tid);
                copies.push((*i, c));
            }
            Err(e) => note_failure(t, e, failures),
        }
    }
    for (i, s) in held {
        let (stopped, held) = s.detach();
        out.stops.push(Stop {
            tid: dump.threads[i].tid,
            name: dump.threads[i].name.clone(),
            stopped,
            held,
        });
    }
    copies
}

/// Stop each thread of `todo` alone, for its copy only (not preempted meanwhile when
/// allowed). Returns the copies; a thread that could not be stopped or copied gets its status
/// and a line in `failures`.
fn stop_one_at_a_time(
    dump: &mut Dump,
    todo: &[usize],
    memory: &ProcessMemory,
    opts: &Options,
    out: &mut Outcome,
    failures: &mut Vec<String>,
) -> Vec<(usize, Copy)> {
    let mut copies: Vec<(usize, Copy)> = Vec::new();
    for &i in todo {
        if (opts.cancel)() {
            out.cancelled = true;
            break;
        }
        let t = &mut dump.threads[i];
        let tid = t.tid;
        // Allocated before the stop, not during it.
        let stack = vec![0u8; opts.window];
        // Not preempted while the thread is held (when allowed): neither by other
        // processes nor by our own debug-information thread.
        let urgent = Urgent::enter();
        let mut seized = match Seized::stop_with(tid, !urgent.active()) {
            Ok(s) => s,
            Err(e) => {
                note_failure(t, e, failures);
                continue;
            }
        };
        let copied = seized.copy(memory, stack);
        if copied.is_ok() {
            (opts.on_stopped)(tid);
        }
        let (stopped, held) = seized.detach();
        drop(urgent);
        out.stops.push(Stop {
            tid,
            name: t.name.clone(),
            stopped,
            held,
        });
        match copied {
            Ok(c) => copies.push((i, c)),
            Err(e) => note_failure(t, e, failures),
        }
    }
    copies
}

/// The file symbolizer with every module's DWARF set up once, for all the addresses of the
/// unwound stacks (the debug loader's work handed over first).
fn prepare_symbols(
    modules: &Modules,
    loader: DebugLoader,
    frames_of: &[(usize, RawFrames)],
    root: &Path,
    cache: Option<DwarfCache>,
) -> FileSymbolizer {
    // With the cache, the names earlier runs gave these modules' addresses are taken from it
    // (no DWARF set up for them), and the new ones are added to it.
    let mut symbols = cache.map_or_else(FileSymbolizer::default, FileSymbolizer::with_cache);
    loader.finish(&mut symbols);
    // Every module's DWARF set up once, for all of its addresses: each distinct address
    // once (threads share most of theirs; a path is costly to hash, a frame at a time).
    let mut addrs: Vec<(u64, bool)> = frames_of
        .iter()
        .flat_map(|(_, raw)| raw.addrs.iter().copied())
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    let mut by_file: HashMap<&Path, Vec<u64>> = HashMap::new();
    for (ip, is_return) in addrs {
        if let Some((file, bias)) = modules
            .module_of(ip)
            .and_then(|m| Some((m.file.as_deref()?, m.bias)))
        {
            let lookup = probe(ip, is_return);
            by_file
                .entry(file)
                .or_default()
                .push(lookup.wrapping_sub(bias));
        }
    }
    for (file, mut svmas) in by_file {
        svmas.sort_unstable();
        svmas.dedup();
        symbols.prepare(file, root, &svmas);
    }
    symbols
}

/// The note that lists the threads stopped with ptrace, longest stop first; `None` when none
/// was.
fn stops_note(stops: &[Stop], consistent: bool) -> Option<String> {
    if stops.is_empty() {
        return None;
    }
    let mut stops = stops.to_vec();
    stops.sort_by_key(|s| std::cmp::Reverse(s.stopped));
    let list: Vec<String> = stops
        .iter()
        .take(16)
        .map(|s| {
            format!(
                "{} ({}) {} µs (held {} µs)",
                s.tid,
                s.name,
                s.stopped.as_micros(),
                s.held.as_micros()
            )
        })
        .collect();
    let more = stops.len().saturating_sub(16);
    Some(format!(
            "note: {} thread(s) stopped with ptrace{}, longest first, from interrupt to detach (held: from the reported stop to detach): {}{}",
            stops.len(),
            if consistent {
                " all at once (--consistent)"
            } else {
                " one at a time, each for its copy only"
            },
            list.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
}

/// How the stacks were taken, in the dump's capture statistics. `phases`: the time of the
/// capture (the visit's copies included), of unwinding and of symbolizing.
fn record_capture(
    dump: &mut Dump,
    out: &Outcome,
    consistent: bool,
    (capture_time, unwind_time, symbolize_time): (Duration, Duration, Duration),
) {
    let c = &mut dump.capture;
    c.method = if consistent {
        CaptureMethod::OutsideConsistent
    } else {
        CaptureMethod::Outside
    };
    c.captured = dump
        .threads
        .iter()
        .filter(|t| t.capture == CaptureStatus::Ok)
        .count();
    c.without_signal = out.without_stop;
    c.signalled = 0;
    c.phases_us.capture = capture_time.saturating_sub(unwind_time).as_micros() as u64;
    c.phases_us.unwind = unwind_time.as_micros() as u64;
    c.phases_us.symbolize = symbolize_time.as_micros() as u64;
}

fn note_failure(t: &mut Thread, e: StopError, failures: &mut Vec<String>) {
    match e {
        StopError::Exited => t.capture = CaptureStatus::Exited,
        StopError::Other(why) => {
            t.capture = CaptureStatus::Failed;
            failures.push(format!("thread {} ({}): {why}", t.tid, t.name));
        }
    }
}

/// The address to look `ip` up at: a return address points after its call, so the call is
/// one byte before it; an exact PC (frame 0, a signal frame) is itself.
fn probe(ip: u64, is_return: bool) -> u64 {
    if is_return {
        ip.wrapping_sub(1)
    } else {
        ip
    }
}

/// A thread whose Python frames [`settle_python`] checks: its index in `Dump::threads`, its
/// tid, and its run counter at its copy (None: copied with a stop).
type Copied = (usize, Tid, Option<(u64, u64)>);

/// How many times a Python thread that ran before its Python frames were read is taken again.
const PYTHON_RETAKES: usize = 6;

/// How long a thread that could not be taken again (it was running, or runnable and waiting
/// for a CPU) is given before the next try, doubled at each try; and the most all the threads
/// of one inspect are given together.
const RETAKE_PAUSE: Duration = Duration::from_micros(100);
const RETAKE_PAUSES: Duration = Duration::from_millis(10);

/// What reads the Python frames of one thread again.
struct PythonRead<'a> {
    finder: &'a mut crate::python::Finder,
    limits: crate::python::Limits,
    maps: &'a [Mapping],
}

/// Make the Python frames of the threads copied without a stop agree with their native
/// stacks. Such a thread was copied during the visit, its Python frames read after every other
/// thread was taken: if its run counter moved since its copy, it ran in between (a thread that
/// wakes every millisecond) and its Python frames may be on a later line. It is then taken
/// again, as in the visit, and its Python frames read right after (its own only, with the code
/// objects the first read found: a few dozen reads), until the counter holds across both, up
/// to [`PYTHON_RETAKES`] times, pausing ([`RETAKE_PAUSE`]) before a try that follows one that
/// found it running or waiting for a CPU; if it never holds, the dump says so. A thread of
/// `copied` without a run counter (copied with a stop, its Python frames read after it was let
/// go) is taken again the same way, and keeps its copy, with no note, when no retake holds:
/// that is a running thread's lot. With `--locals`, the re-read includes the locals, which
/// lengthens it: a retake holds less often. Returns the new copies, by index in
/// `dump.threads`.
fn settle_python(
    pid: i32,
    py: &mut crate::python::PyProcess,
    dump: &mut Dump,
    copied: &[Copied],
    copier: &mut Copier<'_>,
    python: PythonRead<'_>,
) -> Vec<(usize, RawFrames)> {
    let mut retaken = Vec::new();
    let mut reader = TaskReader::new(format!("/proc/{pid}"));
    let mut pauses_left = RETAKE_PAUSES;
    let memory = copier.memory;
    for &(index, tid, run) in copied {
        let Some(slot) = py
            .threads
            .iter()
            .position(|t| t.tid == Some(tid) && !t.frames.is_empty())
        else {
            continue;
        };
        let ran = |reader: &mut TaskReader, run| {
            reader.run_counter(tid).and_then(|c| c.read()) != Some(run)
        };
        if run.is_some_and(|run| !ran(&mut reader, run)) {
            continue;
        }
        let mut settled = false;
        for attempt in 0..PYTHON_RETAKES {
            if attempt > 0 {
                // The last try found it running, or waiting for a CPU (ours, on a small
                // machine): let it go back to sleep first.
                let pause = (RETAKE_PAUSE * (1 << (attempt - 1))).min(pauses_left);
                std::thread::sleep(pause);
                pauses_left -= pause;
            }
            let Some(counter) = reader.run_counter(tid) else {
                settled = true; // gone
                break;
            };
            let before = counter.read();
            let Ok((name, mut kernel, _)) = reader.kernel_view(tid) else {
                settled = true;
                break;
            };
            let seen = Seen {
                syscall: &kernel.syscall,
                switches: (
                    kernel.voluntary_ctxt_switches,
                    kernel.nonvoluntary_ctxt_switches,
                ),
                runs: before,
            };
            let taken = copier.copy(&mut reader, tid, seen, Some(&counter));
            let Some((raw, Some(again))) = taken else {
                continue; // running now (it wakes for microseconds at a time), or moved
            };
            let limits = crate::python::Limits {
                only: Some(tid),
                names: false,
                ..python.limits
            };
            let read = crate::python::threads_with(
                python.finder,
                &limits,
                memory,
                python.maps,
                copier.root,
                &[tid],
            );
            if counter.read() != Some(again) {
                continue;
            }
            // Before 3.11, a thread state about to start carries its creator's id: the one
            // with frames is the thread's.
            let Some(mut fresh) = read.ok().and_then(|p| {
                p.threads
                    .into_iter()
                    .filter(|t| t.tid == Some(tid))
                    .max_by_key(|t| t.frames.len())
            }) else {
                break; // it left Python: it keeps its last copy, and the note below
            };
            fresh.name = py.threads[slot].name.take();
            py.threads[slot] = fresh;
            reader.resolve_fd(&mut kernel.syscall);
            dump.threads[index].kernel = kernel;
            dump.threads[index].name = name;
            retaken.push((index, raw));
            settled = true;
            break;
        }
        if !settled && run.is_some() {
            dump.errors.push(format!(
                "thread {tid} ran while its Python frames were read and could not be taken again consistently: its Python frames may be newer than its native stack",
            ));
        }
    }
    python.finder.forget_codes();
    retaken
}

/// The modules' thread entry points, from their symbol tables (cheap: one pass over each, no
/// DWARF), for deciding during the capture whether a stack read without a stop reached its
/// thread's entry point.
struct Names {
    roots: HashMap<PathBuf, Roots>,
    /// Where the entry points of a cached debug file are read from ([`Roots::load_cached`]).
    cache: Option<DwarfCache>,
}

impl Names {
    /// Whether the function at `ip` (a return address when `is_return`) is a thread entry point.
    fn names_root(&mut self, modules: &Modules, root: &Path, ip: u64, is_return: bool) -> bool {
        if modules.is_trampoline(ip) {
            return false;
        }
        let ip = probe(ip, is_return);
        let Some(m) = modules.module_of(ip) else {
            return false;
        };
        let Some(file) = m.file.as_deref() else {
            return false;
        };
        // (Looked up by reference first: an owned key for `entry` is an allocation a frame.)
        if !self.roots.contains_key(file) {
            let roots = Roots::load_cached(&debug_source(file, root), self.cache.as_ref());
            self.roots.insert(file.to_path_buf(), roots);
        }
        self.roots
            .get(file)
            .and_then(|r| r.holds(ip.wrapping_sub(m.bias)))
            .unwrap_or(false)
    }
}

/// What names addresses: the modules and their symbols, and the JIT code outside them.
struct Namer<'a> {
    modules: &'a Modules,
    symbols: &'a mut FileSymbolizer,
    jit: &'a mut JitCode,
    root: &'a Path,
}

/// Frames of one address: an exact PC (frame 0) or a return address (looked up at addr-1).
fn frames_at(names: &mut Namer<'_>, ip: u64, is_return: bool, out: &mut Vec<Frame>) {
    let Namer {
        modules,
        symbols,
        jit,
        root,
    } = names;
    let info = modules.module_of(ip);
    if info.is_none() {
        if let Some(f) = jit.frame(ip, is_return) {
            out.push(f);
            return;
        }
    }
    let module = info.map(|m| std::sync::Arc::clone(&m.path));
    let offset = info.map(|m| Addr(ip.wrapping_sub(m.bias)));
    if modules.is_trampoline(ip) {
        out.push(crate::stack::symbols::trampoline_frame(ip, module, offset));
        return;
    }
    let lookup = probe(ip, is_return);
    let syms = match info.and_then(|m| m.file.as_deref().map(|f| (f, m.bias))) {
        Some((file, bias)) => symbols.symbols(file, root, lookup.wrapping_sub(bias)),
        None => Vec::new(),
    };
    crate::stack::symbols::push_frames(ip, module, offset, &syms, out);
}

/// Frames of an unwound stack, and whether it is truncated (it does not end at an entry point).
/// `memo` keeps the frames of each address (threads share most of theirs).
fn symbolize(
    names: &mut Namer<'_>,
    raw: &RawFrames,
    memo: &mut HashMap<(u64, bool), Vec<Frame>>,
) -> (Vec<Frame>, bool) {
    // Every address's frames first, so the thread's list is allocated once at its size.
    let mut len = 0;
    for &(ip, is_return) in &raw.addrs {
        len += memo
            .entry((ip, is_return))
            .or_insert_with(|| {
                let mut v = Vec::new();
                frames_at(names, ip, is_return, &mut v);
                v
            })
            .len();
    }
    let mut frames = Vec::with_capacity(len);
    for key in &raw.addrs {
        frames.extend_from_slice(&memo[key]);
    }
    let truncated = is_truncated(raw.end, &frames);
    (frames, truncated)
}

/// The errno of reading a little of the target's memory, when that fails.
pub(crate) fn memory_denied(pid: i32, maps: &[Mapping]) -> Option<i32> {
    let m = maps.iter().find(|m| m.readable && m.end > m.start)?;
    let mut buf = [0u8; 8];
    let mut local = [std::io::IoSliceMut::new(&mut buf)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: m.start as usize,
        len: 8,
    }];
    match nix::sys::uio::process_vm_readv(nix::unistd::Pid::from_raw(pid), &mut local, &remote) {
        Err(e @ (nix::errno::Errno::EPERM | nix::errno::Errno::EACCES)) => Some(e as i32),
        Ok(_) | Err(_) => None,
    }
}

/// Why we may not ptrace (or read the memory of) process `pid`, in one line.
pub fn denied_reason(pid: i32) -> String {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let status = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, key: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let mine = status("/proc/self/status");
    let theirs = status(&format!("/proc/{pid}/status"));
    let cap_sys_ptrace = field(&mine, "CapEff")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|caps| caps & (1 << 19) != 0); // bit 19: CAP_SYS_PTRACE
                                                    // SAFETY: getuid cannot fail and has no preconditions.
    let me = unsafe { libc::getuid() };
    let uids: Vec<u32> = field(&theirs, "Uid")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|u| u.parse().ok())
        .collect();
    let tracer = field(&theirs, "TracerPid")
        .and_then(|t| t.parse::<i32>().ok())
        .filter(|&t| t != 0);
    // A process that is not dumpable has its /proc files (not its directory) owned by root.
    let proc_owner = std::fs::metadata(format!("/proc/{pid}/mem"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok();
    if let Some(t) = tracer {
        return format!("process {pid} is already traced by pid {t} (a debugger or strace): only one tracer at a time");
    }
    if scope == Some(3) {
        return "ptrace is disabled on this host (kernel.yama.ptrace_scope = 3, which only a reboot lifts)".into();
    }
    if !cap_sys_ptrace {
        if let Some(&uid) = uids.first() {
            if uids.iter().any(|&u| u != me) {
                return format!("process {pid} runs as uid {uid} and stackdump as uid {me} without CAP_SYS_PTRACE: run it as uid {uid} or as root");
            }
        }
        if proc_owner == Some(0) && me != 0 {
            return format!("process {pid} is not dumpable (prctl(PR_SET_DUMPABLE, 0), or it changed credentials): only CAP_SYS_PTRACE (root) may read its stacks");
        }
        match scope {
            Some(2) => return "kernel.yama.ptrace_scope = 2: only CAP_SYS_PTRACE may ptrace; run as root".into(),
            Some(1) => return format!("kernel.yama.ptrace_scope = 1: only an ancestor of process {pid} may ptrace it; run as root, or set the sysctl kernel.yama.ptrace_scope=0"),
            _ => {}
        }
    }
    format!("not allowed to ptrace process {pid} (EPERM){}: a security module (SELinux, AppArmor) or the container's seccomp policy may forbid ptrace", if cap_sys_ptrace { " although stackdump has CAP_SYS_PTRACE" } else { "" })
}

/// How long [`Seized::wait_stop`] polls for a stop before it sleeps in `waitpid`.
const POLL_STOP: Duration = Duration::from_millis(2);

/// This thread on the lowest real-time priority (`SCHED_FIFO` 1) while it holds a thread of
/// the target stopped, so that no ordinary task (another process, or our own thread reading
/// debug information) preempts it between the stop and the detach, and its wake-up from
/// `waitpid` is immediate. Best effort: without the privilege (`CAP_SYS_NICE` or an
/// `RLIMIT_RTPRIO`), nothing changes. The previous policy is restored on drop; children would
/// not inherit it (`SCHED_RESET_ON_FORK`).
struct Urgent {
    previous: Option<(libc::c_int, libc::sched_param)>,
    /// Not Send: the policy must be restored by the thread that changed it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Urgent {
    fn enter() -> Urgent {
        // SAFETY: sched_getscheduler on the calling thread takes no pointers.
        let policy = unsafe { libc::sched_getscheduler(0) };
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid out pointer for the duration of the call.
        let got = unsafe { libc::sched_getparam(0, &mut param) } == 0;
        if !got || policy != libc::SCHED_OTHER {
            // Already special: leave it alone.
            return Urgent {
                previous: None,
                _thread: std::marker::PhantomData,
            };
        }
        let fifo = libc::sched_param { sched_priority: 1 };
        // SAFETY: `fifo` is a valid sched_param; pid 0 is the calling thread.
        let ok = unsafe {
            libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &fifo)
        } == 0;
        Urgent {
            previous: ok.then_some((policy, param)),
            _thread: std::marker::PhantomData,
        }
    }

    fn active(&self) -> bool {
        self.previous.is_some()
    }
}

impl Drop for Urgent {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.previous.take() {
            // SAFETY: `param` is a valid sched_param read by sched_getparam; pid 0 is the
            // calling thread, the one that raised its priority (Urgent is not Send).
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }
}

/// Why a thread could not be stopped or copied.
#[derive(Debug)]
enum StopError {
    Exited,
    Other(String),
}

/// A thread seized with ptrace and stopped. Dropping it detaches the thread (always).
struct Seized {
    tid: i32,
    /// A signal that was about to be delivered when the thread stopped: handed back on detach.
    deliver: i32,
    since: Instant,
    /// When `waitpid` reported the stop.
    stopped_at: Option<Instant>,
    detached: bool,
    /// Poll `waitpid` for the stop before sleeping in it (see [`Seized::wait_stop`]).
    poll: bool,
}

impl Seized {
    /// `PTRACE_SEIZE` (no options: no `PTRACE_O_EXITKILL`), `PTRACE_INTERRUPT`, and wait for
    /// the stop.
    fn stop(tid: Tid) -> Result<Seized, StopError> {
        Seized::stop_with(tid, true)
    }

    /// [`Seized::stop`]; `poll`: poll for the stop first (pointless when this thread runs with
    /// a real-time priority: its wake-up preempts whatever runs then).
    fn stop_with(tid: Tid, poll: bool) -> Result<Seized, StopError> {
        let tid = tid.0;
        // SAFETY: PTRACE_SEIZE takes no pointers (addr and data are 0: no options).
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ESRCH) => StopError::Exited,
                Some(libc::EPERM) => {
                    StopError::Other(format!("cannot ptrace it: {}", denied_reason(tid)))
                }
                _ => StopError::Other(format!("PTRACE_SEIZE: {e}")),
            });
        }
        // From here on the guard detaches whatever happens.
        let mut s = Seized {
            tid,
            deliver: 0,
            since: Instant::now(),
            stopped_at: None,
            detached: false,
            poll,
        };
        // SAFETY: PTRACE_INTERRUPT takes no pointers.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_INTERRUPT,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return Err(StopError::Other(format!("PTRACE_INTERRUPT: {e}")));
        }
        s.since = Instant::now();
        s.wait_stop()?;
        Ok(s)
    }

    /// Wait for the thread's stop. A signal-delivery stop (a signal was on its way) is a stop
    /// too: the signal is handed back on detach.
    ///
    /// A running thread stops within microseconds of the interrupt: `waitpid` is first polled
    /// (`WNOHANG`, yielding the CPU between polls) for up to [`POLL_STOP`], so that the stop is
    /// seen at once instead of after a wake-up of this thread that the scheduler may delay (the
    /// thread stays stopped until we detach it, so that delay would be part of its stop). A
    /// thread that takes longer (in uninterruptible sleep, or waiting for a CPU) is then waited
    /// for without polling.
    fn wait_stop(&mut self) -> Result<(), StopError> {
        let polling_until = Instant::now() + if self.poll { POLL_STOP } else { Duration::ZERO };
        loop {
            let mut status = 0;
            let polling = Instant::now() < polling_until;
            let flags = libc::__WALL | if polling { libc::WNOHANG } else { 0 };
            // SAFETY: `status` is a valid out pointer for the duration of the call.
            let r = unsafe { libc::waitpid(self.tid, &mut status, flags) };
            if r == 0 {
                std::thread::yield_now(); // WNOHANG: not stopped yet
                continue;
            }
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                if e.raw_os_error() == Some(libc::ECHILD) {
                    self.detached = true; // nothing left to detach
                    return Err(StopError::Exited);
                }
                return Err(StopError::Other(format!("waitpid: {e}")));
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.detached = true;
                return Err(StopError::Exited);
            }
            if libc::WIFSTOPPED(status) {
                let sig = libc::WSTOPSIG(status);
                let event = status >> 16;
                if event == 0 && sig != libc::SIGTRAP {
                    // Signal-delivery stop: the thread stopped on the way to handling `sig`.
                    self.deliver = sig;
                }
                self.stopped_at = Some(Instant::now());
                return Ok(());
            }
        }
    }

    /// Registers and a copy of the stack window into `stack` (allocated by the caller before
    /// the stop: nothing but the two system calls happens while the thread is held).
    fn copy(&mut self, memory: &ProcessMemory, mut stack: Vec<u8>) -> Result<Copy, StopError> {
        let regs = self.regs()?;
        let n = memory.read(regs.sp, &mut stack);
        stack.truncate(n);
        if n < 16 {
            return Err(StopError::Other(format!(
                "its stack at {:#x} is not readable",
                regs.sp
            )));
        }
        Ok(Copy {
            regs,
            stack,
            live: false,
        })
    }

    #[cfg(target_arch = "x86_64")]
    fn regs(&self) -> Result<Regs, StopError> {
        // SAFETY: user_regs_struct is plain old data; all zeroes is a valid value.
        let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        // SAFETY: PTRACE_GETREGS writes one user_regs_struct to `data`, which points at `r`.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_GETREGS,
                self.tid,
                std::ptr::null_mut::<libc::c_void>(),
                &mut r as *mut libc::user_regs_struct as *mut libc::c_void,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ESRCH) => StopError::Exited,
                _ => StopError::Other(format!("PTRACE_GETREGS: {e}")),
            });
        }
        Ok(Regs {
            pc: r.rip,
            sp: r.rsp,
            fp: r.rbp,
            lr: 0,
        })
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn regs(&self) -> Result<Regs, StopError> {
        Err(StopError::Other(
            "reading registers with ptrace is implemented for x86_64 only".into(),
        ))
    }

    /// Let the thread go; returns how long it was stopped (interrupt to detach) and how long
    /// we held it (reported stop to detach).
    fn detach(mut self) -> (Duration, Duration) {
        self.release();
        let now = Instant::now();
        let held = self.stopped_at.map_or(Duration::ZERO, |t| now - t);
        (now - self.since, held)
    }

    fn release(&mut self) {
        if self.detached {
            return;
        }
        self.detached = true;
        // SAFETY: PTRACE_DETACH takes no pointers; `data` is the signal to deliver (or 0).
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_DETACH,
                self.tid,
                std::ptr::null_mut::<libc::c_void>(),
                self.deliver as usize as *mut libc::c_void,
            )
        };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            // Not in a ptrace stop (seized, but the stop was never waited for): stop it, then
            // detach. ESRCH again means the thread is gone.
            // SAFETY: PTRACE_INTERRUPT takes no pointers.
            let r = unsafe {
                libc::ptrace(
                    libc::PTRACE_INTERRUPT,
                    self.tid,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            if r == 0 && self.wait_again().is_ok() {
                // SAFETY: as above.
                unsafe {
                    libc::ptrace(
                        libc::PTRACE_DETACH,
                        self.tid,
                        std::ptr::null_mut::<libc::c_void>(),
                        self.deliver as usize as *mut libc::c_void,
                    );
                }
            }
        }
    }

    fn wait_again(&mut self) -> Result<(), StopError> {
        self.detached = false;
        let r = self.wait_stop();
        self.detached = true;
        r
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::unwind::UnwindEnd;

    /// The real-time priority is taken only when allowed, and the previous policy is back once
    /// the guard is dropped.
    #[test]
    fn urgent_restores_the_scheduling_policy() {
        // SAFETY: sched_getscheduler on the calling thread takes no pointers.
        let policy = || unsafe { libc::sched_getscheduler(0) } & !libc::SCHED_RESET_ON_FORK;
        let before = policy();
        let u = Urgent::enter();
        if u.active() {
            assert_eq!(policy(), libc::SCHED_FIFO);
        } else {
            assert_eq!(policy(), before);
        }
        drop(u);
        assert_eq!(policy(), before);
    }

    /// A thread of ours blocked in `read` on a pipe; each byte written wakes it once (it
    /// answers on `ack`, then blocks in the same call again).
    struct Reader {
        tid: Tid,
        write_fd: i32,
        ack: std::sync::mpsc::Receiver<()>,
    }

    impl Reader {
        fn start() -> Reader {
            let mut fds = [0i32; 2];
            // SAFETY: pipe writes two fds into our array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            let (tx, ack) = std::sync::mpsc::channel();
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let read_fd = fds[0];
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid_tx.send(unsafe { libc::gettid() }).unwrap();
                let mut b = 0u8;
                // SAFETY: reading one byte into our own variable from our own pipe.
                while unsafe { libc::read(read_fd, (&mut b as *mut u8).cast(), 1) } == 1 {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
            let r = Reader {
                tid: Tid(tid_rx.recv().unwrap()),
                write_fd: fds[1],
                ack,
            };
            r.wait_blocked();
            r
        }

        fn wait_blocked(&self) {
            let mut reader = TaskReader::new("/proc/self");
            while !matches!(reader.syscall(self.tid),
                Ok(SyscallState::InSyscall { nr, .. }) if nr == libc::SYS_read)
            {
                std::thread::yield_now();
            }
        }

        /// Wake it once and wait until it is blocked again.
        fn poke(&self) {
            // SAFETY: writing one byte from our own variable to our own pipe.
            let n = unsafe { libc::write(self.write_fd, [1u8].as_ptr().cast(), 1) };
            assert_eq!(n, 1);
            self.ack.recv().unwrap();
            self.wait_blocked();
        }
    }

    impl Drop for Reader {
        fn drop(&mut self) {
            // SAFETY: closing our own write end: the thread's read returns 0 and it exits.
            unsafe { libc::close(self.write_fd) };
        }
    }

    /// The proof that a blocked thread did not move while its stack was copied: a thread that
    /// runs during the copy is not taken from that copy; it is taken from a second one made
    /// from a fresh `syscall` line, or not at all if it runs again; a stack that does not end
    /// within the first window is copied again whole.
    #[test]
    fn a_blocked_copy_is_kept_only_when_the_thread_did_not_run() {
        let t = Reader::start();
        let mut reader = TaskReader::new("/proc/self");
        let Some(counter) = reader.run_counter(t.tid) else {
            println!("skipped: this kernel keeps no schedstat");
            return;
        };
        if counter.read().is_none() {
            println!("skipped: schedstat shows zeros (no CONFIG_SCHED_INFO)");
            return;
        }
        let memory = ProcessMemory {
            // SAFETY: getpid has no preconditions.
            pid: unsafe { libc::getpid() },
        };
        let mut buf = Vec::new();
        let mut take = |pokes: &[bool], unwind_pokes: &[bool], complete: bool| {
            let runs = counter.read();
            let syscall = reader.syscall(t.tid).unwrap();
            let st = reader.status(t.tid).unwrap();
            let seen = Seen {
                syscall: &syscall,
                switches: (st.voluntary_ctxt_switches, st.nonvoluntary_ctxt_switches),
                runs,
            };
            let mut reads = Vec::new();
            let mut unwinds = 0;
            let got = copy_blocked(
                &mut reader,
                t.tid,
                seen,
                Some(&counter),
                (4096, 16384),
                &mut buf,
                &mut |addr, b| {
                    if pokes.get(reads.len()).copied().unwrap_or(false) {
                        t.poke();
                    }
                    reads.push(b.len());
                    memory.read(addr, b)
                },
                &mut |_, _| {
                    if unwind_pokes.get(unwinds).copied().unwrap_or(false) {
                        t.poke();
                    }
                    unwinds += 1;
                    (
                        RawFrames {
                            addrs: vec![(1, false)],
                            end: UnwindEnd::Clean,
                        },
                        complete,
                    )
                },
                &mut |_| None,
                &mut |_| false,
            );
            (got.map(|(_, before)| before), runs, reads, unwinds)
        };
        // Still: taken from the first copy, checked with the reading made before the line.
        let (got, runs, reads, unwinds) = take(&[], &[], true);
        assert_eq!(got, Some(runs));
        assert_eq!((reads, unwinds), (vec![4096], 1));
        // It ran during the first copy: taken from the second, with a fresh reading.
        let (got, runs, reads, unwinds) = take(&[true], &[], true);
        assert!(got.is_some_and(|b| b != runs), "{got:?} {runs:?}");
        assert_eq!((reads, unwinds), (vec![4096, 4096], 1));
        // It ran during both: not taken.
        let (got, _, reads, unwinds) = take(&[true, true], &[], true);
        assert_eq!(got, None);
        assert_eq!((reads, unwinds), (vec![4096, 4096], 0));
        // It ran while the first copy was unwound (whose reads may go beyond the copy): taken
        // from the second.
        let (got, runs, reads, unwinds) = take(&[], &[true], true);
        assert!(got.is_some_and(|b| b != runs), "{got:?} {runs:?}");
        assert_eq!((reads, unwinds), (vec![4096, 4096], 2));
        // Not complete within the first window: copied again whole (and still not complete).
        let (got, _, reads, unwinds) = take(&[], &[], false);
        assert_eq!(got, None);
        assert_eq!((reads, unwinds), (vec![4096, 16384], 2));
    }
}
