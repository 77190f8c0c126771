//! The kernel's view of a thread: pure parsers for the files under `/proc/PID/task/TID/`, and a
//! reader that assembles a [`KernelView`]. The parsers take text and never touch the file system,
//! so they are tested (and fuzzed) on their own; the reader treats a thread that vanished between
//! listing and reading as normal (`ThreadGone`), never as an error.
//!
//! Nothing here is async-signal-safe: this runs on the dump thread or in the CLI.

use crate::kernel::syscalls;
use crate::model::{Addr, FdRef, KernelView, SyscallState, Tid};
use procfs_core::FromBufRead;

use std::io;
use std::path::{Path, PathBuf};

/// Parse `/proc/.../syscall`: `running`, `-1 sp pc`, or `nr a0 a1 a2 a3 a4 a5 sp pc` (hex).
/// Names are added for this machine's architecture; the fd is left for [`resolve_fd`].
pub fn parse_syscall(text: &str) -> SyscallState {
    let text = text.trim();
    if text == "running" {
        return SyscallState::Running;
    }
    let mut words = text.split_ascii_whitespace();
    let Some(nr) = words.next().and_then(|w| w.parse::<i64>().ok()) else {
        return SyscallState::Unknown;
    };
    let hex = |w: &str| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok();
    let rest: Option<Vec<u64>> = words.map(hex).collect();
    let Some(rest) = rest else {
        return SyscallState::Unknown;
    };
    match (nr, rest.as_slice()) {
        (-1, [sp, pc]) => SyscallState::Blocked {
            sp: Addr(*sp),
            pc: Addr(*pc),
        },
        (nr, [a0, a1, a2, a3, a4, a5, sp, pc]) if nr >= 0 => SyscallState::InSyscall {
            nr,
            name: syscalls::host_name(nr).map(str::to_string),
            args: [a0, a1, a2, a3, a4, a5].iter().map(|a| Addr(**a)).collect(),
            fd: None,
            sp: Addr(*sp),
            pc: Addr(*pc),
        },
        _ => SyscallState::Unknown,
    }
}

/// Parse `/proc/.../wchan`: a kernel symbol, or `0` / empty when not sleeping.
pub fn parse_wchan(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty() && t != "0").then(|| t.to_string())
}

/// The wait channel named by the first line of `/proc/.../stack` (`pipe_write+0x1a3/0x4e0` →
/// `pipe_write`), as `wchan` would give it.
pub fn wchan_of_stack_line(line: &str) -> Option<String> {
    parse_wchan(line.split('+').next().unwrap_or(line))
}

/// Parse `/proc/.../stack`: lines `[<0>] pipe_write+0x1a3/0x4e0` → `pipe_write+0x1a3/0x4e0`.
pub fn parse_kernel_stack(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match l.find("] ") {
            Some(i) if l.starts_with('[') => l[i + 2..].trim().to_string(),
            _ => l.trim().to_string(),
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// The state letter in words, as `ps` and `top` say it.
pub fn state_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk sleep",
        'T' => "stopped",
        't' => "tracing stop",
        'Z' => "zombie",
        'X' => "dead",
        'I' => "idle",
        'P' => "parked",
        'W' => "waking",
        'K' => "wakekill",
        _ => "unknown",
    }
}

/// What `stat` gives us about a thread.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskStat {
    pub name: String,
    pub state: char,
    pub utime: u64,
    pub stime: u64,
    pub cpu: i32,
}

/// Parse `/proc/.../stat` (the name may contain spaces and parentheses: it is everything
/// between the first `(` and the last `)`). Written by hand because this must never panic on
/// odd input (procfs-core's parser indexes without checks: found by `tests/fuzz_parsers.rs`).
pub fn parse_stat(text: &[u8]) -> Option<TaskStat> {
    let text = std::str::from_utf8(text).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let name = text.get(open + 1..close)?.to_string();
    // Fields after the name, numbered as in proc(5): 3 state, 14 utime, 15 stime, 39 processor.
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?; // field 3
    let mut rest = rest.skip(10); // fields 4-13
    let utime = rest.next()?.parse().ok()?; // 14
    let stime = rest.next()?.parse().ok()?; // 15
    let cpu = rest.nth(23).and_then(|c| c.parse().ok()).unwrap_or(-1); // 39 = 15 + 24
    Some(TaskStat {
        name,
        state,
        utime,
        stime,
        cpu,
    })
}

/// What `status` gives us about a thread.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskStatus {
    pub name: String,
    /// Signals blocked by this thread (bit `n-1` for signal `n`).
    pub sig_blocked: u64,
    /// Signals the process catches.
    pub sig_caught: u64,
    pub voluntary_ctxt_switches: u64,
    pub nonvoluntary_ctxt_switches: u64,
}

impl TaskStatus {
    /// True when signal `signo` is blocked by this thread.
    pub fn blocks(&self, signo: i32) -> bool {
        (1..=64).contains(&signo) && self.sig_blocked & (1u64 << (signo - 1)) != 0
    }
    /// True when the process has a handler for `signo`.
    pub fn catches(&self, signo: i32) -> bool {
        (1..=64).contains(&signo) && self.sig_caught & (1u64 << (signo - 1)) != 0
    }
}

/// Parse `/proc/.../status` (`Key:\tvalue` lines; only the fields we use, so a kernel that adds
/// or drops other fields does not matter). Works on bytes, line by line, and stops after the
/// last field it needs (the dump reads this file for every thread, twice).
pub fn parse_status(text: &[u8]) -> Option<TaskStatus> {
    fn hex(v: &[u8]) -> Option<u64> {
        u64::from_str_radix(std::str::from_utf8(v).ok()?, 16).ok()
    }
    fn dec(v: &[u8]) -> Option<u64> {
        std::str::from_utf8(v).ok()?.parse().ok()
    }
    let mut st = TaskStatus::default();
    let mut seen_name = false;
    for line in text.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (key, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        match key {
            b"Name" => {
                st.name = String::from_utf8_lossy(value).into_owned();
                seen_name = true;
            }
            b"SigBlk" => st.sig_blocked = hex(value)?,
            b"SigCgt" => st.sig_caught = hex(value)?,
            b"voluntary_ctxt_switches" => st.voluntary_ctxt_switches = dec(value)?,
            b"nonvoluntary_ctxt_switches" => {
                st.nonvoluntary_ctxt_switches = dec(value)?;
                break; // the last line of interest (and of the file, today)
            }
            _ => {}
        }
    }
    seen_name.then_some(st)
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub offset: u64,
    pub inode: u64,
    /// File path, or a pseudo name such as `[stack]`, `[vdso]`; empty for anonymous memory.
    pub path: String,
}

/// Parse `/proc/PID/maps`. Lines that do not parse are skipped.
pub fn parse_maps(text: &[u8]) -> Vec<Mapping> {
    use procfs_core::process::{MMPermissions, MMapPath, MemoryMaps};
    let Ok(maps) = MemoryMaps::from_buf_read(text) else {
        return Vec::new();
    };
    maps.into_iter()
        .map(|m| Mapping {
            start: m.address.0,
            end: m.address.1,
            readable: m.perms.contains(MMPermissions::READ),
            writable: m.perms.contains(MMPermissions::WRITE),
            executable: m.perms.contains(MMPermissions::EXECUTE),
            offset: m.offset,
            inode: m.inode,
            path: match m.pathname {
                MMapPath::Path(p) => p.to_string_lossy().into_owned(),
                MMapPath::Heap => "[heap]".into(),
                MMapPath::Stack => "[stack]".into(),
                MMapPath::TStack(t) => format!("[stack:{t}]"),
                MMapPath::Vdso => "[vdso]".into(),
                MMapPath::Vvar => "[vvar]".into(),
                MMapPath::Vsyscall => "[vsyscall]".into(),
                MMapPath::Rollup => "[rollup]".into(),
                MMapPath::Anonymous => String::new(),
                MMapPath::Vsys(k) => format!("/SYSV{k:08x}"),
                MMapPath::Other(o) => o,
            },
        })
        .collect()
}

/// A thread whose directory disappeared while we read it: it exited. Normal, not an error.
#[derive(Debug)]
pub struct ThreadGone;

/// What [`TaskReader::kernel_view_counted`] read of one thread.
pub struct TaskView {
    pub name: String,
    pub kernel: KernelView,
    pub status: TaskStatus,
    /// Its run counter, when the reader keeps it, read before its `syscall` line.
    pub counted: Option<Counted>,
}

/// A thread's run counter and its reading (None: unreadable) before the thread's `syscall`
/// line was read.
pub struct Counted {
    pub counter: RunCounter,
    pub before: Option<(u64, u64)>,
}

/// Reads `/proc/<pid>/task/<tid>/*` with one reusable buffer.
pub struct TaskReader {
    root: PathBuf,
    buf: Vec<u8>,
    /// Scratch for the task directory's path.
    path: Vec<u8>,
    /// The directory of the task read last (`task/<tid>`), for openat: one path walk per
    /// thread instead of one per file.
    dir: Option<(Tid, std::os::fd::OwnedFd)>,
    /// Whether to try `/proc/.../stack` (root only; skipped after the first EACCES).
    pub kernel_stacks: bool,
    /// Files kept open from one use of the reader to the next ([`TaskReader::keeping`]).
    kept: Option<KeptFiles>,
    /// With kept files: [`TaskReader::kernel_view`] also opens the `schedstat` of a thread
    /// blocked in a system call (and keeps it), while the thread's directory is open: the
    /// [`TaskReader::run_counter`] asked for next (a copy without a signal) then needs no
    /// second walk to the directory. Set by the reader whose caller copies blocked threads.
    pub open_run_counters: bool,
    /// Views made from the last whole view of a thread that had not run since
    /// ([`TaskReader::kernel_view_counted`]).
    reused: u64,
}

/// The task files a long-lived reader keeps open, read again with `pread` at offset 0: a
/// `/proc` task file costs an `openat` and a `close` besides its read (5-15 µs against 1-6 µs
/// for the read alone, measured in `BENCHMARKS.md`), and the kernel regenerates its text on
/// every read from the start. At most `budget` fds are kept (each also holds the kernel's
/// 4 KiB text buffer, charged to the process's memory cgroup); beyond it, files are opened and
/// closed as without the cache. A kept fd of a thread that has exited fails with `ESRCH`: the
/// thread's files are dropped then and opened afresh (its tid may have been reused).
struct KeptFiles {
    budget: usize,
    open: usize,
    /// Shared with the [`RunCounter`]s handed out (no `dup` per copy of a blocked thread).
    tasks:
        std::collections::HashMap<Tid, [Option<std::sync::Arc<std::os::fd::OwnedFd>>; KEPT_KINDS]>,
    /// Each blocked thread's last whole view, with its run counter read before it (see
    /// [`TaskReader::kernel_view_counted`]).
    views: std::collections::HashMap<Tid, LastView>,
}

/// What a thread's last whole view read that cannot change while the thread does not run.
struct LastView {
    /// Its run counter, read before anything else of that view.
    runs: (u64, u64),
    state: char,
    syscall: SyscallState,
    kernel_stack: Option<Vec<String>>,
    wchan: Option<String>,
    status: TaskStatus,
}

/// The task files a [`KeptFiles`] may keep, by index.
const KEPT: [&std::ffi::CStr; KEPT_KINDS] =
    [c"syscall", c"stack", c"stat", c"status", c"schedstat"];
const KEPT_KINDS: usize = 5;
/// `schedstat`'s index in [`KEPT`].
const SCHEDSTAT: usize = 4;

impl TaskReader {
    /// A reader for the tasks of `proc_pid_dir`, e.g. `/proc/self` or `/proc/1234`.
    pub fn new(proc_pid_dir: impl Into<PathBuf>) -> TaskReader {
        TaskReader {
            root: proc_pid_dir.into(),
            buf: Vec::with_capacity(4096),
            path: Vec::new(),
            dir: None,
            kernel_stacks: true,
            kept: None,
            open_run_counters: false,
            reused: 0,
        }
    }

    /// A reader that keeps up to `budget` task files open between reads, for a process read
    /// again and again (the library's dump thread): see [`TaskReader::forget_others`].
    pub fn keeping(proc_pid_dir: impl Into<PathBuf>, budget: usize) -> TaskReader {
        let mut r = TaskReader::new(proc_pid_dir);
        r.kept = Some(KeptFiles {
            budget,
            open: 0,
            tasks: std::collections::HashMap::new(),
            views: std::collections::HashMap::new(),
        });
        r
    }

    /// How many views were made from an earlier one, the thread not having run since.
    pub fn views_reused(&self) -> u64 {
        self.reused
    }

    /// How many task files are kept open now.
    pub fn kept_open(&self) -> usize {
        self.kept.as_ref().map_or(0, |k| k.open)
    }

    /// Close the kept files of every task not in `live` (sorted): threads that have exited.
    pub fn forget_others(&mut self, live: &[Tid]) {
        if let Some(k) = &mut self.kept {
            k.tasks.retain(|tid, _| live.binary_search(tid).is_ok());
            k.views.retain(|tid, _| live.binary_search(tid).is_ok());
            k.open = k.tasks.values().flatten().filter(|f| f.is_some()).count();
        }
    }

    /// Close the kept files of the tasks `which` selects (another reader now reads them).
    pub fn forget_where(&mut self, which: impl Fn(Tid) -> bool) {
        if let Some(k) = &mut self.kept {
            k.tasks.retain(|tid, _| !which(*tid));
            k.views.retain(|tid, _| !which(*tid));
            k.open = k.tasks.values().flatten().filter(|f| f.is_some()).count();
        }
    }

    /// Close every kept file.
    pub fn forget_all(&mut self) {
        self.forget_others(&[]);
    }

    /// The tids of the process, sorted. A process that exited gives an error.
    pub fn tids(&self) -> io::Result<Vec<Tid>> {
        let mut tids: Vec<Tid> = numeric_entries(&self.root.join("task"))?
            .into_iter()
            .map(Tid)
            .collect();
        tids.sort();
        Ok(tids)
    }

    /// Open `file` of task `tid` (relative to the task's directory, opened once per task).
    fn open(&mut self, tid: Tid, file: &std::ffi::CStr) -> io::Result<std::os::fd::OwnedFd> {
        // A long-lived reader (the watchdog's sampler) may still hold the directory of a thread
        // that has exited since and whose tid a new thread now has: that directory is the old
        // thread's, and every open through it fails. Retried once through a fresh directory.
        let cached = self.dir.as_ref().is_some_and(|(t, _)| *t == tid);
        match self.open_once(tid, file) {
            Err(e) if cached && matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                self.dir = None;
                self.open_once(tid, file)
            }
            r => r,
        }
    }

    /// [`TaskReader::open`] through the directory opened last, when it is `tid`'s.
    fn open_once(&mut self, tid: Tid, file: &std::ffi::CStr) -> io::Result<std::os::fd::OwnedFd> {
        use std::io::Write;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        if self.dir.as_ref().map(|(t, _)| *t) != Some(tid) {
            self.dir = None;
            let mut path = std::mem::take(&mut self.path);
            path.clear();
            path.extend_from_slice(self.root.as_os_str().as_bytes());
            let _ = write!(path, "/task/{}\0", tid.0);
            let c = std::ffi::CStr::from_bytes_with_nul(&path)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
            // SAFETY: `c` is NUL-terminated; the fd returned is owned by the OwnedFd below.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            self.path = path;
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh fd that nothing else owns.
            self.dir = Some((tid, unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let Some((_, dir)) = &self.dir else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        // SAFETY: openat on our directory fd with a NUL-terminated relative name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                file.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `file` of `tid` through its kept fd only: None when it is not kept or does not answer
    /// (then the thread's kept files are dropped, as [`TaskReader::read`] does).
    fn read_kept(&mut self, tid: Tid, file: &std::ffi::CStr) -> Option<&[u8]> {
        use std::os::fd::AsRawFd;
        let kind = KEPT.iter().position(|k| *k == file)?;
        let kept = self.kept.as_mut()?;
        let fd = kept.tasks.get(&tid)?[kind].as_ref()?.as_raw_fd();
        match read_all(fd, &mut self.buf, true) {
            Ok(()) if !self.buf.is_empty() => Some(&self.buf),
            _ => {
                kept.forget(tid);
                None
            }
        }
    }

    fn read(&mut self, tid: Tid, file: &std::ffi::CStr) -> io::Result<&[u8]> {
        use std::os::fd::AsRawFd;
        let kind = KEPT.iter().position(|k| *k == file);
        if let (Some(kept), Some(kind)) = (&mut self.kept, kind) {
            if let Some(fd) = kept.tasks.get(&tid).and_then(|f| f[kind].as_ref()) {
                match read_all(fd.as_raw_fd(), &mut self.buf, true) {
                    Ok(()) if !self.buf.is_empty() => return Ok(&self.buf),
                    // Exited (ESRCH), or its tid now another thread's: open afresh.
                    _ => kept.forget(tid),
                }
            }
        }
        let f = self.open(tid, file)?;
        read_all(f.as_raw_fd(), &mut self.buf, false)?;
        if let (Some(kept), Some(kind)) = (&mut self.kept, kind) {
            kept.keep(tid, kind, std::sync::Arc::new(f));
        }
        Ok(&self.buf)
    }

    /// The current system call of a thread (`syscall`), or `ThreadGone`.
    pub fn syscall(&mut self, tid: Tid) -> Result<SyscallState, ThreadGone> {
        let bytes = self.read(tid, c"syscall").map_err(|_| ThreadGone)?;
        Ok(parse_syscall(&String::from_utf8_lossy(bytes)))
    }

    /// The thread's `schedstat`, opened to be read more than once (see [`RunCounter`]).
    pub fn run_counter(&mut self, tid: Tid) -> Option<RunCounter> {
        if let Some(kept) = &mut self.kept {
            if let Some(counter) = kept.run_counter(tid) {
                if counter.read().is_some() {
                    return Some(counter);
                }
                kept.forget(tid);
            }
        }
        let fd = std::sync::Arc::new(self.open(tid, c"schedstat").ok()?);
        if let Some(kept) = &mut self.kept {
            kept.keep(tid, SCHEDSTAT, std::sync::Arc::clone(&fd));
        }
        Some(RunCounter(fd))
    }

    /// Open and keep `tid`'s `schedstat` unless it is kept already (see
    /// [`TaskReader::open_run_counters`]).
    fn open_run_counter(&mut self, tid: Tid) {
        let Some(k) = &self.kept else { return };
        let kept = k.tasks.get(&tid).is_some_and(|f| f[SCHEDSTAT].is_some());
        if kept || k.open >= k.budget {
            return;
        }
        if let Ok(fd) = self.open(tid, c"schedstat") {
            if let Some(k) = &mut self.kept {
                k.keep(tid, SCHEDSTAT, std::sync::Arc::new(fd));
            }
        }
    }

    /// The status of a thread (for its signal mask), or `ThreadGone`.
    pub fn status(&mut self, tid: Tid) -> Result<TaskStatus, ThreadGone> {
        let bytes = self.read(tid, c"status").map_err(|_| ThreadGone)?;
        parse_status(bytes).ok_or(ThreadGone)
    }

    /// The kernel view of one thread plus its status. `syscall` is read first: it and the wait
    /// channel are what a signal would change. The wait channel is the first function of the
    /// kernel stack when that is readable (both skip the scheduler's own functions: the kernel
    /// computes `wchan` the same way), so `wchan` is read only when `stack` is not. A thread
    /// that `stat` shows running has neither (the kernel reports no wait channel for it, and
    /// its kernel stack changes under the reader), so neither is read: 4 files per blocked
    /// thread, 3 per running one.
    pub fn kernel_view(
        &mut self,
        tid: Tid,
    ) -> Result<(String, KernelView, TaskStatus), ThreadGone> {
        self.kernel_view_counted(tid)
            .map(|v| (v.name, v.kernel, v.status))
    }

    /// [`TaskReader::kernel_view`], and the thread's run counter read before anything else
    /// when this reader keeps it (a thread seen blocked in a system call by an earlier view,
    /// see [`TaskReader::open_run_counters`]): then a copy of its stack is proved to be of the
    /// moment of this view by one more reading, without reading its `syscall` line again
    /// (`stack::blocked::copy_blocked`). One `pread` more here, two fewer there.
    ///
    /// A thread whose run counter has not moved since this reader's last whole view of it
    /// (read before that view: it has not been on a CPU since that view began) and whose state
    /// (`stat`, always read: a thread woken but not yet run shows R, and another thread may
    /// rename it) is the same one asleep in the kernel (S, D or I) is still in the same system
    /// call at the same place,
    /// with the same kernel stack, signal mask and context-switch counts: those come from that
    /// view, and only `stat` is read (1 file instead of 4: most threads of a stuck process, dump
    /// after dump). Its `status`'s `SigCgt` (the process's, which another thread may change)
    /// is that view's too. A thread in a ptrace or group stop (t, T) is never seen through an
    /// earlier view and its view carries no counter (a tracer may change its registers and
    /// signal mask while it does not run).
    ///
    /// The counter comes with the view only when it answered and the thread is asleep. A
    /// thread gone (even one whose kept files still answered for part of the view) has its
    /// kept files closed.
    pub fn kernel_view_counted(&mut self, tid: Tid) -> Result<TaskView, ThreadGone> {
        let view = self.view_counted(tid);
        if view.is_err() {
            if let Some(k) = &mut self.kept {
                k.forget(tid);
            }
        }
        view
    }

    fn view_counted(&mut self, tid: Tid) -> Result<TaskView, ThreadGone> {
        let counted = self
            .kept
            .as_ref()
            .and_then(|k| k.run_counter(tid))
            .map(|counter| {
                let before = counter.read();
                Counted { counter, before }
            });
        let before = counted.as_ref().and_then(|c| c.before);
        // A counter that does not answer (the thread exited, or its tid is another thread's
        // now: the whole view below opens its files afresh) proves nothing: the caller opens
        // a live one if it needs one.
        let mut counted = counted.filter(|_| before.is_some());
        if let Some(runs) = before {
            let last = self
                .kept
                .as_mut()
                .and_then(|k| k.views.remove(&tid))
                .filter(|l| l.runs == runs);
            // `stat` through the file kept for this very thread (the one the counter was read
            // from a moment ago): if it fails, the thread is gone and its tid may be another's,
            // whose state must not be paired with this view; the whole view below tells.
            let stat = last
                .as_ref()
                .and_then(|_| self.read_kept(tid, c"stat"))
                .and_then(parse_stat);
            if let (Some(last), Some(stat)) = (last, stat) {
                if stat.state == last.state {
                    let mut status = last.status.clone();
                    status.name.clone_from(&stat.name);
                    let view = KernelView {
                        state: stat.state.to_string(),
                        state_name: state_name(stat.state).to_string(),
                        wchan: last.wchan.clone(),
                        syscall: last.syscall.clone(),
                        kernel_stack: last.kernel_stack.clone(),
                        utime: stat.utime,
                        stime: stat.stime,
                        voluntary_ctxt_switches: status.voluntary_ctxt_switches,
                        nonvoluntary_ctxt_switches: status.nonvoluntary_ctxt_switches,
                        cpu: stat.cpu,
                    };
                    if let Some(k) = &mut self.kept {
                        k.views.insert(tid, last);
                    }
                    self.reused += 1;
                    return Ok(TaskView {
                        name: stat.name,
                        kernel: view,
                        status,
                        counted,
                    });
                }
            }
        }
        let syscall = match self.read(tid, c"syscall") {
            Ok(b) => parse_syscall(&String::from_utf8_lossy(b)),
            Err(e) if gone(&e) => return Err(ThreadGone),
            Err(_) => SyscallState::Unknown,
        };
        let stat = self
            .read(tid, c"stat")
            .ok()
            .and_then(parse_stat)
            .ok_or(ThreadGone)?;
        let running = stat.state == 'R';
        // Only a thread asleep in the kernel (S, D, I) is left as it was while it does not
        // run. One in a ptrace stop (t) or a group stop (T) does not run either, but a tracer
        // may change its registers and signal mask meanwhile: no counter proof for it, its
        // `syscall` line is read again after a copy (and its view is never reused).
        let asleep = matches!(stat.state, 'S' | 'D' | 'I');
        if !asleep {
            counted = None;
        }
        let kernel_stack = if self.kernel_stacks && !running {
            match self.read(tid, c"stack") {
                Ok(b) => Some(parse_kernel_stack(&String::from_utf8_lossy(b))),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    self.kernel_stacks = false;
                    None
                }
                Err(e) if gone(&e) => return Err(ThreadGone),
                Err(_) => None,
            }
        } else {
            None
        };
        let wchan = match &kernel_stack {
            _ if running => None,
            Some(stack) => stack.first().and_then(|l| wchan_of_stack_line(l)),
            None => match self.read(tid, c"wchan") {
                Ok(b) => parse_wchan(&String::from_utf8_lossy(b)),
                Err(e) if gone(&e) => return Err(ThreadGone),
                Err(_) => None,
            },
        };
        let status = self
            .read(tid, c"status")
            .ok()
            .and_then(parse_status)
            .ok_or(ThreadGone)?;
        if self.open_run_counters && matches!(syscall, SyscallState::InSyscall { .. }) {
            self.open_run_counter(tid);
        }
        // Kept for the next view when it proves something: read after a counter reading, of a
        // thread blocked in a call (a running one is read whole every time).
        if let (Some(runs), Some(k)) = (before, &mut self.kept) {
            if asleep && matches!(syscall, SyscallState::InSyscall { .. }) {
                k.views.insert(
                    tid,
                    LastView {
                        runs,
                        state: stat.state,
                        syscall: syscall.clone(),
                        kernel_stack: kernel_stack.clone(),
                        wchan: wchan.clone(),
                        status: status.clone(),
                    },
                );
            }
        }
        let view = KernelView {
            state: stat.state.to_string(),
            state_name: state_name(stat.state).to_string(),
            wchan,
            syscall,
            kernel_stack,
            utime: stat.utime,
            stime: stat.stime,
            voluntary_ctxt_switches: status.voluntary_ctxt_switches,
            nonvoluntary_ctxt_switches: status.nonvoluntary_ctxt_switches,
            cpu: stat.cpu,
        };
        Ok(TaskView {
            name: stat.name,
            kernel: view,
            status,
            counted,
        })
    }

    /// Fill in the file behind a syscall's fd argument (`readlink /proc/PID/fd/N`).
    pub fn resolve_fd(&self, syscall: &mut SyscallState) {
        resolve_fd(&self.root, syscall)
    }
}

impl KeptFiles {
    /// Keep `fd` as `tid`'s file `kind`, when the budget allows.
    fn keep(&mut self, tid: Tid, kind: usize, fd: std::sync::Arc<std::os::fd::OwnedFd>) {
        if self.open >= self.budget {
            return;
        }
        let files = self.tasks.entry(tid).or_default();
        if files[kind].is_none() {
            self.open += 1;
        }
        files[kind] = Some(fd);
    }

    /// `tid`'s kept `schedstat`, shared.
    fn run_counter(&self, tid: Tid) -> Option<RunCounter> {
        let fd = self.tasks.get(&tid)?[SCHEDSTAT].as_ref()?;
        Some(RunCounter(std::sync::Arc::clone(fd)))
    }

    /// Close `tid`'s kept files.
    fn forget(&mut self, tid: Tid) {
        self.views.remove(&tid);
        if let Some(files) = self.tasks.remove(&tid) {
            self.open -= files.iter().filter(|f| f.is_some()).count();
        }
    }
}

/// The whole of a small `/proc` file (`status`, `stat`, `maps`, `environ`...), read into a
/// 4 KiB buffer first: `std::fs::read` sees the size 0 that `/proc` states and starts with a
/// 32-byte read, doubling it, so a 1.5 KiB `status` took 8 system calls instead of 2. Read to
/// the end (a short read does not end a `seq_file` such as `maps`).
pub fn read_proc_file(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(4096);
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// [`read_proc_file`] as text (an error when it is not UTF-8, as `std::fs::read_to_string`).
pub fn read_proc_text(path: impl AsRef<Path>) -> io::Result<String> {
    String::from_utf8(read_proc_file(path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Read all of `fd` into `buf` (cleared first); from offset 0 with `pread` when `again` (a
/// kept file), else from the file's position. A short read is the end: every file read here
/// is a `/proc` task file made of one record (`single_open`), which the kernel gives whole
/// as far as the buffer allows (this saves the read that would return 0).
fn read_all(fd: std::os::fd::RawFd, buf: &mut Vec<u8>, again: bool) -> io::Result<()> {
    buf.clear();
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let spare = buf.capacity() - buf.len();
        let at = buf.len();
        // SAFETY: reading at most `spare` bytes into the vector's unused capacity.
        let n = unsafe {
            let dst = buf.as_mut_ptr().add(at).cast();
            if again {
                libc::pread(fd, dst, spare, at as libc::off_t)
            } else {
                libc::read(fd, dst, spare)
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel initialised `n` more bytes.
        unsafe { buf.set_len(at + n as usize) };
        if (n as usize) < spare {
            return Ok(());
        }
    }
}

/// A thread's `/proc/.../schedstat` kept open: `read` gives its time on a CPU (ns) and the
/// number of times it was put on a CPU. Both change whenever the thread runs at all, so two
/// equal readings prove it did not run in between: the cheapest such proof /proc offers
/// (one `pread` of three numbers, against ~60 formatted lines for the context-switch counts of
/// `status`).
pub struct RunCounter(std::sync::Arc<std::os::fd::OwnedFd>);

impl RunCounter {
    /// `(time on a CPU in ns, times put on a CPU)`, or None when unreadable or when the kernel
    /// does not keep these numbers (it then shows zeros).
    pub fn read(&self) -> Option<(u64, u64)> {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 96];
        // SAFETY: pread into our own stack buffer of the given length, on our own fd.
        let n = unsafe { libc::pread(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let text = std::str::from_utf8(buf.get(..usize::try_from(n).ok()?)?).ok()?;
        let mut words = text.split_ascii_whitespace();
        let run_ns: u64 = words.next()?.parse().ok()?;
        let timeslices: u64 = words.nth(1)?.parse().ok()?;
        (timeslices != 0 || run_ns != 0).then_some((run_ns, timeslices))
    }
}

/// The numeric entries of a directory (pids, tids, fds), read with `getdents64` directly:
/// unlike `opendir`/`readdir` (and so `std::fs::read_dir`), this never calls the C library's
/// `malloc`, so the dumper can list threads while a host thread is wedged inside `malloc`.
pub fn numeric_entries(dir: &Path) -> io::Result<Vec<i32>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `c` is a NUL-terminated path; the returned fd is owned by `_guard` below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened by us and is closed exactly once, by this OwnedFd.
    let guard = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    numeric_entries_of(std::os::fd::AsFd::as_fd(&guard))
}

/// [`numeric_entries`] of a directory already open as `dir` (read from its current offset: a
/// freshly opened one lists everything).
pub fn numeric_entries_of(dir: std::os::fd::BorrowedFd<'_>) -> io::Result<Vec<i32>> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: getdents64 writes at most buf.len() bytes into buf, which we own.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        let n = n as usize;
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        while off + 19 <= n {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 || off + reclen > n {
                break;
            }
            let name = &buf[off + 19..off + reclen];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            if let Some(v) = std::str::from_utf8(name)
                .ok()
                .and_then(|s| s.parse::<i32>().ok())
            {
                out.push(v);
            }
            off += reclen;
        }
    }
    Ok(out)
}

fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

/// Fill in the `fd` of a syscall whose first argument is a file descriptor, from
/// `<proc_pid_dir>/fd/N`. Never opens the fd itself.
pub fn resolve_fd(proc_pid_dir: &Path, syscall: &mut SyscallState) {
    if let SyscallState::InSyscall {
        name: Some(name),
        args,
        fd,
        ..
    } = syscall
    {
        if syscalls::first_arg_is_fd(name) {
            if let Some(n) = args
                .first()
                .and_then(|a| i32::try_from(a.0 as i64).ok())
                .filter(|n| *n >= 0)
            {
                let target = std::fs::read_link(proc_pid_dir.join("fd").join(n.to_string()))
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned());
                *fd = Some(FdRef { fd: n, target });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that has not run since the last whole view of it is seen through that view (its
    /// `stat` read afresh); one that ran is read whole again, in its new system call.
    #[test]
    fn an_unmoved_thread_is_seen_through_its_last_view_and_a_moved_one_afresh() {
        let mut fds = [0i32; 2];
        // SAFETY: pipe writes two fds into our array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (rfd, wfd) = (fds[0], fds[1]);
        let (tid_tx, tid_rx) = std::sync::mpsc::channel::<i32>();
        let worker = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            let mut b = [0u8; 1];
            // SAFETY: reading one byte into our buffer from the pipe we own.
            unsafe { libc::read(rfd, b.as_mut_ptr().cast(), 1) };
            std::thread::sleep(std::time::Duration::from_secs(3600));
        });
        let tid = Tid(tid_rx.recv().unwrap());
        let nr = |r: &mut TaskReader| match r.kernel_view(tid).map(|v| v.1.syscall) {
            Ok(SyscallState::InSyscall { nr, .. }) => nr,
            _ => -1,
        };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut fresh = TaskReader::new("/proc/self");
        while nr(&mut fresh) != libc::SYS_read {
            assert!(
                std::time::Instant::now() < end,
                "the worker never blocked in read"
            );
            std::thread::yield_now();
        }
        let mut kept = TaskReader::keeping("/proc/self", 20);
        kept.open_run_counters = true;
        let first = kept.kernel_view_counted(tid).expect("alive");
        assert!(
            first.counted.is_none(),
            "no counter kept before the first view"
        );
        let whole = kept.kernel_view_counted(tid).expect("alive");
        assert!(whole.counted.as_ref().is_some_and(|c| c.before.is_some()));
        assert_eq!(kept.views_reused(), 0);
        let again = kept.kernel_view_counted(tid).expect("alive");
        assert_eq!(
            kept.views_reused(),
            1,
            "it did not run: its last view serves"
        );
        assert_eq!(again.kernel.syscall, whole.kernel.syscall);
        assert_eq!(again.kernel.kernel_stack, whole.kernel.kernel_stack);
        assert_eq!(again.kernel.state, "S");
        assert_eq!(again.name, whole.name);
        // It runs: out of the read, into a sleep.
        // SAFETY: writing one byte from a static buffer to the pipe we own.
        unsafe { libc::write(wfd, b"x".as_ptr().cast(), 1) };
        while nr(&mut fresh) != libc::SYS_clock_nanosleep {
            assert!(
                std::time::Instant::now() < end,
                "the worker never went to sleep"
            );
            std::thread::yield_now();
        }
        let moved = kept.kernel_view_counted(tid).expect("alive");
        assert_eq!(kept.views_reused(), 1, "it ran: read whole");
        assert!(
            matches!(moved.kernel.syscall, SyscallState::InSyscall { nr, .. } if nr == libc::SYS_clock_nanosleep),
            "{:?}",
            moved.kernel.syscall
        );
        // SAFETY: closing the pipe's two ends, which we own; the worker sleeps, detached.
        unsafe {
            libc::close(rfd);
            libc::close(wfd);
        }
        drop(worker);
    }

    /// A thread in a ptrace stop does not run, but its tracer may change its registers and
    /// signal mask: its view is never reused and carries no counter reading to prove a copy
    /// with.
    #[test]
    fn a_ptrace_stopped_thread_is_never_seen_through_an_earlier_view() {
        struct Child(std::process::Child);
        impl Drop for Child {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Child(
            std::process::Command::new("sleep")
                .arg("1000")
                .spawn()
                .expect("sleep"),
        );
        let pid = child.0.id() as i32;
        let tid = Tid(pid);
        let mut kept = TaskReader::keeping(format!("/proc/{pid}"), 20);
        kept.open_run_counters = true;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // Asleep in its nanosleep: a whole view, then one that reuses it.
        loop {
            let v = kept.kernel_view_counted(tid).expect("alive");
            if v.kernel.state == "S" && v.counted.is_some() {
                break;
            }
            assert!(std::time::Instant::now() < end, "sleep never slept");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let before = kept.views_reused();
        kept.kernel_view_counted(tid).expect("alive");
        assert_eq!(
            kept.views_reused(),
            before + 1,
            "asleep and unmoved: reused"
        );
        // SAFETY: PTRACE_SEIZE and PTRACE_INTERRUPT take no pointers (addr and data 0).
        let seized = unsafe {
            libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) == 0
                && libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize) == 0
        };
        if !seized {
            eprintln!(
                "skipped: cannot ptrace a child here ({})",
                std::io::Error::last_os_error()
            );
            return;
        }
        let mut status = 0;
        // SAFETY: waitpid for our own tracee with a valid out-pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        assert_eq!(waited, pid);
        let stopped = kept.kernel_view_counted(tid).expect("alive");
        assert_eq!(stopped.kernel.state, "t", "in a ptrace stop");
        assert!(
            stopped.counted.is_none(),
            "no counter proof for a traced thread"
        );
        let again = kept.kernel_view_counted(tid).expect("alive");
        assert!(again.counted.is_none());
        assert_eq!(
            kept.views_reused(),
            before + 1,
            "a stopped thread is read whole"
        );
        // SAFETY: PTRACE_DETACH of our tracee, no signal.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize) };
    }

    /// A reader that keeps files open reads what a fresh one reads, within its budget; a
    /// thread that has exited since is gone (its kept files do not answer for it) and its
    /// files are closed with `forget_others`.
    #[test]
    fn kept_files_read_again_and_are_dropped_with_their_thread() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel::<i32>();
        let worker = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            rx.recv().unwrap();
        });
        let tid = Tid(tid_rx.recv().unwrap());
        let mut kept = TaskReader::keeping("/proc/self", 3);
        let mut fresh = TaskReader::new("/proc/self");
        for _ in 0..3 {
            let (name, view, status) = kept.kernel_view(tid).expect("alive");
            let (name2, view2, status2) = fresh.kernel_view(tid).expect("alive");
            assert_eq!(name, name2);
            assert_eq!(view.utime, view2.utime);
            assert_eq!(status.sig_blocked, status2.sig_blocked);
            assert_eq!(kept.kept_open(), 3, "the budget caps what is kept");
        }
        let counter = kept.run_counter(tid).expect("schedstat");
        assert!(counter.read().is_some());
        tx.send(()).unwrap();
        worker.join().unwrap();
        assert!(kept.kernel_view(tid).is_err(), "an exited thread is gone");
        assert_eq!(kept.kept_open(), 0, "its kept files went with it");
        let mut again = TaskReader::keeping("/proc/self", 10);
        // SAFETY: gettid has no preconditions.
        let me = Tid(unsafe { libc::gettid() });
        again.kernel_view(me).expect("this thread");
        assert!(again.kept_open() >= 3);
        again.forget_others(&[]);
        assert_eq!(again.kept_open(), 0);
    }

    #[test]
    fn syscall_forms() {
        assert_eq!(parse_syscall("running\n"), SyscallState::Running);
        assert_eq!(
            parse_syscall("-1 0x7ffc1000 0x401000\n"),
            SyscallState::Blocked {
                sp: Addr(0x7ffc1000),
                pc: Addr(0x401000)
            }
        );
        let s = parse_syscall("1 0x2 0x55d0 0x12d 0x0 0x0 0x0 0x7ffd00 0x7f0001\n");
        match s {
            SyscallState::InSyscall {
                nr,
                name,
                args,
                sp,
                pc,
                ..
            } => {
                assert_eq!(nr, 1);
                if cfg!(target_arch = "x86_64") {
                    assert_eq!(name.as_deref(), Some("write"));
                }
                assert_eq!(args[0], Addr(2));
                assert_eq!(args[2], Addr(0x12d));
                assert_eq!(sp, Addr(0x7ffd00));
                assert_eq!(pc, Addr(0x7f0001));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_syscall(""), SyscallState::Unknown);
        assert_eq!(parse_syscall("1 0x2"), SyscallState::Unknown);
        assert_eq!(parse_syscall("x y z"), SyscallState::Unknown);
    }

    #[test]
    fn wchan_and_stack() {
        assert_eq!(parse_wchan("0"), None);
        assert_eq!(parse_wchan(""), None);
        assert_eq!(parse_wchan("pipe_write"), Some("pipe_write".into()));
        assert_eq!(
            parse_kernel_stack("[<0>] pipe_write+0x1a3/0x4e0\n[<0>] vfs_write+0x2/0x3\n"),
            vec!["pipe_write+0x1a3/0x4e0", "vfs_write+0x2/0x3"]
        );
        assert_eq!(
            wchan_of_stack_line("pipe_write+0x1a3/0x4e0"),
            Some("pipe_write".into())
        );
        assert_eq!(wchan_of_stack_line("0x0"), Some("0x0".into()));
        assert_eq!(wchan_of_stack_line(""), None);
    }

    #[test]
    fn stat_with_hostile_name() {
        let line = b"1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 2 0 100 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.name, "a) b (c");
        assert_eq!(s.state, 'S');
        assert_eq!(s.utime, 7);
        assert_eq!(s.stime, 3);
        assert_eq!(s.cpu, 1);
    }

    #[test]
    fn status_signal_bits() {
        let text = b"Name:\tworker\nState:\tS (sleeping)\nTgid:\t1\nNgid:\t0\nPid:\t1\nPPid:\t0\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t\nSigQ:\t0/1000\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\tfffffffe7ffbfeff\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000000200\nvoluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches:\t2\n";
        let s = parse_status(text).unwrap();
        assert_eq!(s.name, "worker");
        assert!(s.catches(libc::SIGUSR1));
        assert!(!s.catches(libc::SIGUSR2));
        assert!(s.blocks(libc::SIGUSR1));
        assert!(!s.blocks(libc::SIGKILL) || s.sig_blocked & (1 << 8) != 0);
        assert_eq!(s.voluntary_ctxt_switches, 5);
    }

    #[test]
    fn maps_lines() {
        let text = b"55d0a0000000-55d0a0001000 r--p 00000000 08:01 1234 /usr/bin/x y\n7ffc0000-7ffc1000 rw-p 00000000 00:00 0 [stack]\n7f0000000000-7f0000001000 r-xp 00000000 00:00 0 \n";
        let m = parse_maps(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, "/usr/bin/x y");
        assert!(m[0].readable && !m[0].writable && !m[0].executable);
        assert_eq!(m[1].path, "[stack]");
        assert!(m[2].executable);
        assert_eq!(m[2].path, "");
    }

    #[test]
    fn reads_own_threads() {
        let mut r = TaskReader::new("/proc/self");
        let tids = r.tids().unwrap();
        assert!(!tids.is_empty());
        let me = Tid(std::process::id() as i32);
        assert!(tids.contains(&me));
        let (_, view, _) = r.kernel_view(me).unwrap();
        assert!(!view.state.is_empty());
        assert!(r.kernel_view(Tid(i32::MAX)).is_err());
    }

    /// A thread's run counter moves once it has woken up and run (what `copy_blocked` relies
    /// on: a blocked thread that leaves its system call must be put on a CPU).
    #[test]
    fn run_counter_moves_when_a_sleeping_thread_runs() {
        use std::sync::mpsc::channel;
        let (to_thread, rx) = channel::<()>();
        let (tx, from_thread) = channel::<i32>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            while rx.recv().is_ok() {
                tx.send(0).unwrap();
            }
        });
        let tid = Tid(from_thread.recv().unwrap());
        let mut r = TaskReader::new("/proc/self");
        let Some(counter) = r.run_counter(tid) else {
            println!("skipped: this kernel keeps no schedstat");
            return;
        };
        let Some(first) = counter.read() else {
            println!("skipped: schedstat shows zeros (no CONFIG_SCHED_INFO)");
            return;
        };
        to_thread.send(()).unwrap();
        from_thread.recv().unwrap(); // it ran: it answered
        assert_ne!(counter.read(), Some(first));
        drop(to_thread);
        t.join().unwrap();
        assert!(r.run_counter(Tid(i32::MAX)).is_none());
    }

    /// The wait channel taken from the kernel stack is what `wchan` says (when the stack is
    /// readable: root), and falls back to `wchan` otherwise.
    #[test]
    fn wait_channel_matches_the_wchan_file() {
        let (tx, rx) = std::sync::mpsc::channel::<i32>();
        let mut fds = [0; 2];
        // SAFETY: pipe with a valid two-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let reader = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let mut b = [0u8; 1];
            // SAFETY: reading one byte into a local buffer from our pipe.
            unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
        });
        let tid = Tid(rx.recv().unwrap());
        let wchan_file = format!("/proc/self/task/{}/wchan", tid.0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Handshake: the thread is asleep in read once its wchan names a pipe read.
        let expected = loop {
            let w = std::fs::read_to_string(&wchan_file).unwrap_or_default();
            if w.contains("pipe_read") {
                break w;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "reader never slept: {w:?}"
            );
            std::thread::yield_now();
        };
        let mut r = TaskReader::new("/proc/self");
        let (_, view, _) = r.kernel_view(tid).unwrap();
        println!("stacks readable: {}; {view:?}", r.kernel_stacks);
        assert_eq!(view.wchan.as_deref(), Some(expected.trim()));
        // SAFETY: writing one byte from a local buffer to our pipe, then closing our fds.
        unsafe {
            libc::write(fds[1], b"x".as_ptr().cast(), 1);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        reader.join().unwrap();
    }

    #[test]
    fn numeric_entries_match_read_dir() {
        // A directory nothing else changes (the tests running beside this one open and close
        // fds, so /proc/self/fd is not one): numeric names only, as read_dir lists them.
        let dir = tempfile::tempdir().unwrap();
        for name in ["1", "2", "10", "0x3", "x", "99999999999"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let mut ours = numeric_entries(dir.path()).unwrap();
        let mut std_: Vec<i32> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        ours.sort();
        std_.sort();
        assert_eq!(ours, std_);
        assert_eq!(ours, vec![1, 2, 10]);
        let procs = numeric_entries(Path::new("/proc")).unwrap();
        assert!(procs.contains(&(std::process::id() as i32)));
        assert!(numeric_entries(Path::new("/nonexistent")).is_err());
    }

    /// A thread started with the tid `want` (root: through `ns_last_pid`), parked until the
    /// sender is dropped; None when another process took that tid first.
    fn thread_with_tid(
        want: i32,
    ) -> Option<(std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>)> {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        std::fs::write("/proc/sys/kernel/ns_last_pid", (want - 1).to_string()).ok()?;
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::syscall(libc::SYS_gettid) } as i32);
            let _ = stop_rx.recv();
        });
        let got = tid_rx.recv().unwrap();
        if got == want {
            return Some((h, stop_tx));
        }
        drop(stop_tx);
        h.join().unwrap();
        None
    }

    #[test]
    #[ignore = "needs root"]
    fn a_reused_tid_is_read_through_its_own_directory() {
        test_support::needs_root(); // ns_last_pid
        let mut reader = TaskReader::new("/proc/self");
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::syscall(libc::SYS_gettid) } as i32);
            let _ = stop_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        // The reader keeps its directory; then the thread exits.
        assert!(reader.run_counter(Tid(tid)).is_some());
        drop(stop_tx);
        h.join().unwrap();
        let task = format!("/proc/self/task/{tid}");
        let t0 = std::time::Instant::now();
        while std::path::Path::new(&task).exists() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "{task} stays"
            );
            std::thread::yield_now();
        }
        // A new thread with that tid (another process may take it first: try again).
        let (h, stop) = (0..50)
            .find_map(|_| thread_with_tid(tid))
            .expect("no thread got the tid back");
        assert!(
            reader
                .run_counter(Tid(tid))
                .and_then(|c| c.read())
                .is_some(),
            "the new thread {tid} is read through its own directory"
        );
        drop(stop);
        h.join().unwrap();
    }
}
