//! The resolved dump: what every consumer (the text renderer, the JSON file, the CLI, `compare`)
//! sees. Raw captured data (registers, stack bytes, unparsed `/proc` text) never appears here; it
//! lives in the dumper as `Raw*` types and is turned into these plain nouns off the signal path.
//!
//! The JSON form of [`Dump`] is the side-file format `stackdump/1`, documented field by field in
//! `docs/FORMAT.md`. Adding an optional field is compatible; renaming or retyping one is not and
//! bumps [`FORMAT`].
//!
//! Also here: [`dumpfile`] (the side files' names), [`timefmt`] (their UTC timestamps) and
//! [`libstate`] (the state page the library publishes for the CLI).

pub mod dumpfile;
pub mod duration;
pub mod libstate;
pub mod timefmt;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The value of the `format` field of every JSON dump.
pub const FORMAT: &str = "stackdump/1";

/// A process id, as the process sees itself (inside its own pid namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pid(pub i32);

/// A thread id (the kernel's `gettid()`), as the process sees itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tid(pub i32);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An address or raw register/argument value. Serialized as a `"0x…"` string so that 64-bit
/// values survive JSON readers that use doubles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Addr(pub u64);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Addr {
    /// `0x…` in lowercase hex, formatted into `buf` without the formatting machinery (a dump
    /// of 1000 threads writes ~50,000 addresses).
    fn hex<'b>(&self, buf: &'b mut [u8; 18]) -> &'b str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut v = self.0;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = DIGITS[(v & 0xf) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        buf[i - 1] = b'x';
        buf[i - 2] = b'0';
        std::str::from_utf8(&buf[i - 2..]).unwrap_or("0x?")
    }
}

impl Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.hex(&mut [0; 18]))
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let hex = s
            .strip_prefix("0x")
            .ok_or_else(|| serde::de::Error::custom(format!("address {s:?} must start with 0x")))?;
        u64::from_str_radix(hex, 16)
            .map(Addr)
            .map_err(|e| serde::de::Error::custom(format!("address {s:?}: {e}")))
    }
}

/// One dump of one process: the content of a side file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dump {
    /// Always [`FORMAT`].
    pub format: String,
    pub pid: Pid,
    /// `/proc/self/comm` of the main thread.
    pub comm: String,
    /// The executable (`/proc/self/exe`).
    pub exe: String,
    /// The command line, arguments separated by spaces (may be cut at 4 KiB).
    #[serde(default)]
    pub cmdline: String,
    /// When the dump started, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Who asked for this dump, and how.
    pub trigger: Trigger,
    /// How the capture went.
    pub capture: CaptureStats,
    /// Every thread of the process at the time of the dump, by tid.
    pub threads: Vec<Thread>,
    /// What looks wrong, most important first. Empty when nothing stands out.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Facts about the process as a whole (its fds, sockets, pipes, the futexes its threads wait
    /// on), the evidence behind the findings. Absent when not gathered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessFacts>,
    /// What went wrong while dumping (never fatal: the rest of the dump is still there).
    #[serde(default)]
    pub errors: Vec<String>,
    /// The machine (and container) the process runs on. Absent in dumps from before it was
    /// added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
}

/// Which machine a dump comes from, so that dumps from a fleet can be told apart.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Host {
    /// `uname -n` where the dump was made: the container's for the library's dumps, the
    /// machine's for `inspect`.
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: the same for every process of one boot of a machine.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel: String,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: String,
    /// The process's cgroup (v2 path, else the first v1 hierarchy's); absent at the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The container id found in the cgroup path (Docker, containerd, CRI-O), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// The signal that triggered a dump and its sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Name of the trigger signal without the `SIG` prefix, e.g. `USR1`, `RTMIN+3`.
    pub signal: String,
    /// Its number on this machine (informational; never use numbers to send signals).
    pub signo: i32,
    /// `si_pid` of the sender, as seen in the target's pid namespace (0 from the kernel or
    /// from another namespace).
    pub sender_pid: Option<i32>,
    pub sender_uid: Option<u32>,
    /// The sigqueue value when the trigger came with one (the CLI's request id).
    pub request: Option<u64>,
    /// Other triggers that arrived while the previous dump ran and were served by this one.
    #[serde(default)]
    pub coalesced: Vec<CoalescedTrigger>,
    /// Set when the library's watchdog (`STACKDUMP_WATCH`) wrote this dump on its own; `signal`
    /// is then `watchdog` and there is no sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<WatchdogTrigger>,
}

/// Why the watchdog wrote a dump: the threads it found stuck and for how long.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WatchdogTrigger {
    /// `STACKDUMP_WATCH` in milliseconds: how long a thread must be stuck.
    pub watch_ms: u64,
    /// The stuck threads, with how long each had not run when the watchdog decided: from the
    /// first sample that saw its run counter at its current value, so at least `watch_ms`, and
    /// it may have been still up to one sampling period longer.
    pub threads: Vec<StuckThread>,
}

/// A thread the watchdog found stuck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckThread {
    pub tid: Tid,
    /// How long it had not run, in milliseconds.
    pub stuck_ms: u64,
    /// Why its wait counts as stuck (e.g. `pipe full (65536 of 65536 bytes queued)`).
    pub reason: String,
}

/// A trigger that was served by a dump it did not start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoalescedTrigger {
    pub sender_pid: Option<i32>,
    pub request: Option<u64>,
}

/// How user stacks were taken: `capture.method` in the JSON form, written as one of the
/// strings below (`docs/FORMAT.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum CaptureMethod {
    /// `signal`: the in-process capture handler, for every thread.
    Signal,
    /// `syscall+signal`: threads blocked in a system call copied without a signal, the others
    /// signalled.
    SyscallSignal,
    /// `kernel`: `stackdump inspect`'s kernel view only, no user stacks.
    Kernel,
    /// `outside`: `stackdump inspect`, blocked threads copied without a stop, the others
    /// stopped one at a time with ptrace.
    Outside,
    /// `outside+consistent`: `stackdump inspect --consistent`, every thread stopped at once.
    OutsideConsistent,
    /// Any other string (a dump from another version, or none: empty), kept as it was.
    Other(String),
}

impl Default for CaptureMethod {
    /// No method: the empty string (a dump without the field).
    fn default() -> CaptureMethod {
        CaptureMethod::Other(String::new())
    }
}

impl CaptureMethod {
    /// The string of the JSON form.
    pub fn as_str(&self) -> &str {
        match self {
            CaptureMethod::Signal => "signal",
            CaptureMethod::SyscallSignal => "syscall+signal",
            CaptureMethod::Kernel => "kernel",
            CaptureMethod::Outside => "outside",
            CaptureMethod::OutsideConsistent => "outside+consistent",
            CaptureMethod::Other(s) => s,
        }
    }

    /// Taken from outside by `stackdump inspect` with user stacks.
    pub fn is_outside(&self) -> bool {
        matches!(
            self,
            CaptureMethod::Outside | CaptureMethod::OutsideConsistent
        )
    }
}

impl From<String> for CaptureMethod {
    fn from(s: String) -> CaptureMethod {
        match s.as_str() {
            "signal" => CaptureMethod::Signal,
            "syscall+signal" => CaptureMethod::SyscallSignal,
            "kernel" => CaptureMethod::Kernel,
            "outside" => CaptureMethod::Outside,
            "outside+consistent" => CaptureMethod::OutsideConsistent,
            _ => CaptureMethod::Other(s),
        }
    }
}

impl From<CaptureMethod> for String {
    fn from(m: CaptureMethod) -> String {
        match m {
            CaptureMethod::Other(s) => s,
            m => m.as_str().to_string(),
        }
    }
}

impl fmt::Display for CaptureMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Statistics of one capture.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CaptureStats {
    /// From the moment the dump thread woke up to the moment the file was complete (µs).
    pub duration_us: u64,
    /// Threads listed.
    pub threads: usize,
    /// Threads whose user stack was captured.
    pub captured: usize,
    /// How user stacks were taken (see [`CaptureMethod`]).
    #[serde(default)]
    pub method: CaptureMethod,
    /// Threads whose stack was copied while they sat blocked in a system call, without any
    /// signal (they never see EINTR because of the dump).
    #[serde(default)]
    pub without_signal: usize,
    /// Threads that were sent the capture signal.
    #[serde(default)]
    pub signalled: usize,
    /// The capture signal's name (never the trigger signal).
    #[serde(default)]
    pub capture_signal: String,
    /// The deadline for the whole capture (ms).
    #[serde(default)]
    pub deadline_ms: u64,
    /// Time spent in each phase (µs): kernel view, stack capture, unwinding, symbolization.
    #[serde(default)]
    pub phases_us: PhaseTimes,
    /// Dumps this process has written so far, this one included.
    #[serde(default)]
    pub sequence: u64,
}

/// Time per phase of the pipeline, in microseconds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseTimes {
    pub kernel_view: u64,
    pub capture: u64,
    pub unwind: u64,
    pub symbolize: u64,
}

/// One thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    pub tid: Tid,
    /// The thread's name (`comm`, at most 15 bytes).
    pub name: String,
    /// What the kernel says about the thread, read before it was interrupted.
    #[serde(flatten)]
    pub kernel: KernelView,
    /// Whether its user stack was captured, and if not, why.
    pub capture: CaptureStatus,
    /// User-space frames, innermost first. Empty unless `capture` is `ok`.
    pub frames: Vec<Frame>,
    /// True when the stack did not end at a thread entry point (window too small, frame limit,
    /// unwind data missing): the outermost frames are missing.
    #[serde(default)]
    pub truncated: bool,
    /// True when this thread was sent the capture signal (a blocking call it was in may have
    /// returned EINTR); false when it was captured without interruption or not at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signalled: bool,
    /// For a thread of a CPython interpreter: its Python name and how its Python frames
    /// relate to `frames`. Absent for threads without a Python thread state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PyThreadInfo>,
}

/// The Python side of a thread (CPython), read from the interpreter's structures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PyThreadInfo {
    /// The interpreter, e.g. `CPython 3.11.7` (`CPython 3.13.0 free-threaded`).
    pub interpreter: String,
    /// `threading.Thread.name`, when the thread is known to `threading` and it was readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the Python frames are: `merged` into `frames`, next to the evaluator frames
    /// they belong to; `partial` (merged from the innermost frame outwards as far as the
    /// native stack goes, the rest appended at its end: the native stack is truncated); or
    /// `separate` (in `python.frames` below: the native stack does not have as many
    /// evaluator frames as the Python stack has evaluator entries, or was not captured).
    pub merge: PyMerge,
    /// Python frames read (all of them are either in `frames` or in `python.frames`).
    pub depth: usize,
    /// `_PyEval_EvalFrameDefault` frames in the native stack.
    pub eval_frames: usize,
    /// Evaluator entries in the Python stack (each native evaluator frame runs one).
    pub entries: usize,
    /// The Python frames, innermost first, when `merge` is `separate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<Frame>,
    /// The Python stack was not read to its end (frame limit, a loop, unreadable memory, the
    /// time budget): `note` says why.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Why the frames are not merged, or why the Python stack is incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// This thread holds the GIL of its interpreter (`_gil_runtime_state.locked` and
    /// `last_holder` is its thread state). Absent when not known (free-threaded build, GIL
    /// not readable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gil: Option<bool>,
    /// The thread waits for the GIL: it sleeps on a futex inside the GIL's struct, or its
    /// native stack is in `take_gil`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waits_for_gil: bool,
    /// The thread is active, as py-spy means it: on a CPU or runnable (state `R`) and not
    /// waiting for the GIL. Absent when its kernel state is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

impl PyThreadInfo {
    /// py-spy's label of the thread: `active+gil`, `active` or `idle` (`None` when not known).
    pub fn activity(&self) -> Option<&'static str> {
        match (self.active?, self.gil.unwrap_or(false)) {
            (false, _) => Some("idle"),
            (true, true) => Some("active+gil"),
            (true, false) => Some("active"),
        }
    }
}

/// How a thread's Python frames relate to its native frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PyMerge {
    Merged,
    Partial,
    Separate,
}

/// The kernel's view of a thread, from `/proc/PID/task/TID/*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KernelView {
    /// One-letter state (`R`, `S`, `D`, `T`, `t`, `Z`, `X`, `I`).
    pub state: String,
    /// The state in words (`running`, `sleeping`, `disk sleep`, ...).
    #[serde(default)]
    pub state_name: String,
    /// Kernel function the thread sleeps in (`/proc/.../wchan`); absent when running or `0`.
    pub wchan: Option<String>,
    /// The current system call.
    pub syscall: SyscallState,
    /// Kernel stack (`/proc/.../stack`), innermost first; absent when not readable (needs root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_stack: Option<Vec<String>>,
    /// CPU time in clock ticks (user, system).
    #[serde(default)]
    pub utime: u64,
    #[serde(default)]
    pub stime: u64,
    #[serde(default)]
    pub voluntary_ctxt_switches: u64,
    #[serde(default)]
    pub nonvoluntary_ctxt_switches: u64,
    /// The CPU it last ran on.
    #[serde(default)]
    pub cpu: i32,
}

/// What `/proc/.../syscall` says.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SyscallState {
    /// Blocked in a system call.
    InSyscall {
        nr: i64,
        /// Its name on this architecture, when known.
        name: Option<String>,
        /// The six raw argument registers.
        args: Vec<Addr>,
        /// The file behind the first argument, when that argument is a file descriptor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fd: Option<FdRef>,
        sp: Addr,
        pc: Addr,
    },
    /// Blocked but not in a system call (e.g. a page fault): `-1 sp pc`.
    Blocked { sp: Addr, pc: Addr },
    /// On a CPU or runnable.
    Running,
    /// Not readable (thread gone, permission).
    #[default]
    Unknown,
}

/// A file descriptor argument and what it refers to (`readlink /proc/PID/fd/N`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdRef {
    pub fd: i32,
    /// e.g. `/var/log/app.log`, `pipe:[5210641]`, `socket:[123]`, `anon_inode:[eventpoll]`.
    pub target: Option<String>,
}

/// Why a thread's user stack is or is not in the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureStatus {
    /// Captured and unwound.
    Ok,
    /// The thread blocks the capture signal (its `SigBlk` has the bit): not interrupted.
    SignalBlocked,
    /// Signalled but did not answer before the dump's deadline.
    NoResponse,
    /// The thread exited during the dump.
    Exited,
    /// The capture signal's handler was replaced or reset by the host; no signal was sent.
    HandlerReplaced,
    /// The dumper's own thread (it is the one writing the dump).
    Dumper,
    /// Not attempted (capture disabled, or too many threads for the configured limit).
    Skipped,
    /// The signal could not be sent, or the captured registers were unusable.
    Failed,
}

impl CaptureStatus {
    /// A short explanation for humans.
    pub fn explain(self) -> &'static str {
        match self {
            CaptureStatus::Ok => "captured",
            CaptureStatus::SignalBlocked => {
                "not captured: the thread blocks the capture signal (kernel view only)"
            }
            CaptureStatus::NoResponse => {
                "not captured: no answer to the capture signal before the deadline"
            }
            CaptureStatus::Exited => "exited during the dump",
            CaptureStatus::HandlerReplaced => {
                "not captured: the capture signal's handler was replaced by the host"
            }
            CaptureStatus::Dumper => "the dumper's own thread",
            CaptureStatus::Skipped => "not captured: skipped",
            CaptureStatus::Failed => "not captured: capture failed",
        }
    }
}

/// One user-space frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// Frame 0: the exact program counter; later frames: the return address.
    pub ip: Addr,
    /// Path of the loaded object containing `ip`. Shared (`Arc<str>`): the frames of threads
    /// with the same stack hold the same names, and a dump of thousands of threads would
    /// otherwise allocate (and free) three strings per frame.
    pub module: Option<Arc<str>>,
    /// `ip` relative to the module's load base (what `addr2line -e module` takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<Addr>,
    /// Demangled function name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// True for a function inlined into the next frame (which has the same `ip`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
    /// Present for a Python frame (CPython): `function` is its qualified name, `file` and
    /// `line` where it is, `ip` the address of its current bytecode instruction (so stacks
    /// that differ only in Python code still differ), `module` and `offset` absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PyFrameInfo>,
    /// Present for a frame in executable memory outside every module (JIT-compiled code: V8,
    /// the JVM, LuaJIT, ...): the mapping it lies in. `function` is its name from the process's
    /// perf map (`/tmp/perf-PID.map`) when it writes one, else absent; `module` is absent and
    /// `offset` is `ip` minus the region's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jit: Option<JitRegion>,
}

/// The anonymous executable mapping a JIT frame lies in ([`Frame::jit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JitRegion {
    pub start: Addr,
    pub end: Addr,
}

/// What a Python frame adds to [`Frame`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PyFrameInfo {
    /// The address of its code object.
    pub code: Addr,
    /// `co_name` (the plain name; `function` is `co_qualname` from 3.11 on).
    pub name: String,
    /// `co_firstlineno`: the line of the `def`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u32>,
    /// The first frame of an evaluator call (the outermost Python frame of its native
    /// `_PyEval_EvalFrameDefault` frame).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub entry: bool,
    /// The address of the frame in the interpreter: its `_PyInterpreterFrame` (3.11+) or
    /// `PyFrameObject` (3.8-3.10). `stackdump dump --locals` reads the locals there, from
    /// outside, after the dump (the library never writes locals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<Addr>,
    /// The frame's arguments and local variables, as bounded reprs read from the
    /// interpreter's memory (`--locals` only: never by default, locals can hold secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locals: Vec<PyLocal>,
}

/// One argument or local variable of a Python frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PyLocal {
    /// Its name (`co_varnames`, or `co_localsplusnames` from 3.11 on).
    pub name: String,
    /// Its value in words, bounded: `42`, `'text'`, `b'\x00'`, `None`, `<list of 3>`,
    /// `<Widget object at 0x7f…>`; read, never computed by the interpreter.
    pub repr: String,
}

/// Something that looks wrong, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// A stable identifier of the kind of finding, e.g. `same_stack`, `full_pipe`.
    pub kind: String,
    /// One line for humans.
    pub summary: String,
    /// The threads concerned.
    #[serde(default)]
    pub threads: Vec<Tid>,
    /// Supporting facts, one per line.
    #[serde(default)]
    pub evidence: Vec<String>,
}

/// Facts about the whole process, gathered after the threads' kernel view: what its fds are,
/// how its sockets are doing, how full its pipes are and who holds their other ends, and who
/// owns the futexes its threads wait on. The findings are computed from these.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessFacts {
    /// Open file descriptors by kind.
    #[serde(default)]
    pub fds: FdSummary,
    /// Sockets grouped by protocol and state (10,000 sockets in `CLOSE_WAIT` are one entry).
    #[serde(default)]
    pub sockets: Vec<SocketGroup>,
    /// The pipes this process holds, by inode (at most a few hundred; the rest are counted in
    /// `fds`).
    #[serde(default)]
    pub pipes: Vec<PipeFacts>,
    /// The files behind the fd arguments of the threads' current system calls.
    #[serde(default)]
    pub syscall_fds: Vec<FdFacts>,
    /// The futexes threads wait on, by address, with their owner where it can be read.
    #[serde(default)]
    pub futexes: Vec<FutexFacts>,
}

/// Open file descriptors by kind.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FdSummary {
    /// All open fds.
    pub total: usize,
    /// `file` (a path), `pipe`, `socket`, `anon_inode:<name>` (`anon_inode:[eventpoll]` counts as
    /// `anon_inode:eventpoll`), `other`.
    pub by_kind: std::collections::BTreeMap<String, usize>,
    /// Why the fds could not be listed (then `total` is 0 and means nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// Sockets of one protocol in one state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SocketGroup {
    /// `tcp`, `tcp6`, `udp`, `udp6`, `unix`, or `other` (not in any table we read: netlink,
    /// packet, another network namespace, ...).
    pub protocol: String,
    /// `ESTABLISHED`, `CLOSE_WAIT`, `LISTEN`, ... (TCP); `UNCONNECTED`, `CONNECTED` (UDP, unix);
    /// `LISTEN` for listening unix sockets; `-` when unknown.
    pub state: String,
    pub count: usize,
    /// Sum of the receive queues (bytes not yet read by this process; for `LISTEN`:
    /// connections waiting to be accepted).
    pub rx_queue: u64,
    /// Sum of the send queues (bytes not yet acknowledged by the peers; for `LISTEN`: the
    /// backlog).
    pub tx_queue: u64,
    /// Sockets with a non-empty receive queue.
    pub with_unread: usize,
    /// The most common local addresses, `addr (count)`, at most three.
    #[serde(default)]
    pub local: Vec<String>,
}

/// One pipe held by the process.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PipeFacts {
    /// The pipe's inode (`pipe:[inode]`).
    pub inode: u64,
    /// This process's fds on the pipe.
    pub fds: Vec<PipeFd>,
    /// Bytes queued in the pipe (`FIONREAD`), when known.
    pub queued: Option<u64>,
    /// The pipe's capacity (`F_GETPIPE_SZ`), when known.
    pub capacity: Option<u64>,
    /// Why `queued`/`capacity` are unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
    /// No room for another write: more than capacity minus one page is queued (every buffer
    /// slot is in use), or a writer sleeps in `pipe_write`.
    pub full: bool,
    /// Other processes holding the pipe (their fd and which end).
    #[serde(default)]
    pub others: Vec<PipeHolder>,
    /// Whether other processes were searched for this pipe (done only for pipes that matter:
    /// full, or a thread is blocked on them).
    #[serde(default)]
    pub others_checked: bool,
    /// What limited the search (processes we may not look into, time budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others_note: Option<String>,
}

/// One fd on a pipe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PipeFd {
    pub fd: i32,
    /// `read`, `write`, `read+write` (a FIFO opened O_RDWR), or `unknown` (from the fd's
    /// `/proc/.../fdinfo` flags).
    pub end: String,
}

/// Another process holding a pipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipeHolder {
    pub pid: Pid,
    pub comm: String,
    pub fd: i32,
    /// `read`, `write`, `read+write` or `unknown`.
    pub end: String,
    /// Whether one of its threads is in a read of this fd right now (`false`: none is, and
    /// none waits in poll/select/epoll either); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<bool>,
    /// What its threads are doing: system calls (or wait channels), e.g. `clock_nanosleep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doing: Option<String>,
}

/// The file behind an fd argument.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FdFacts {
    pub fd: i32,
    /// What `/proc/PID/fd/N` points to.
    pub target: Option<String>,
    /// As in [`FdSummary::by_kind`].
    pub kind: String,
    /// For pipes: which end this fd is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// For pipes: the inode, described in [`ProcessFacts::pipes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipe: Option<u64>,
    /// For sockets: protocol, addresses, state and queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<SocketFacts>,
}

/// One socket, from `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SocketFacts {
    pub inode: u64,
    /// `tcp`, `tcp6`, `udp`, `udp6`, `unix`, `other`.
    pub protocol: String,
    /// As in [`SocketGroup::state`].
    pub state: String,
    /// `127.0.0.1:8080`, `[::1]:443`, a unix path (`@name` for the abstract namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    pub rx_queue: u64,
    pub tx_queue: u64,
}

/// A futex some threads wait on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FutexFacts {
    /// The futex word's address (the first argument of `futex(2)`).
    pub addr: Addr,
    /// The operation, e.g. `FUTEX_WAIT_PRIVATE`, `FUTEX_LOCK_PI`.
    pub op: String,
    /// The threads waiting on it.
    pub waiters: Vec<Tid>,
    /// The futex word when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u32>,
    /// The thread holding the lock, when it can be read and is a thread of this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Tid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_name: Option<String>,
    /// Where the owner was read: `pthread_mutex_t.__owner` (glibc), `futex word` (PI futex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why there is no owner (not a lock we recognize, memory not readable, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

impl ProcessFacts {
    /// The pipe with this inode.
    pub fn pipe(&self, inode: u64) -> Option<&PipeFacts> {
        self.pipes.iter().find(|p| p.inode == inode)
    }

    /// What is known about fd `fd` from the threads' system calls.
    pub fn syscall_fd(&self, fd: i32) -> Option<&FdFacts> {
        self.syscall_fds.iter().find(|f| f.fd == fd)
    }

    /// The futex at `addr`.
    pub fn futex(&self, addr: Addr) -> Option<&FutexFacts> {
        self.futexes.iter().find(|f| f.addr == addr)
    }
}

impl Thread {
    /// A thread known by its kernel view only (no stack taken): what `inspect` starts from and
    /// what the watchdog classifies.
    pub fn kernel_only(tid: Tid, name: String, kernel: KernelView) -> Thread {
        Thread {
            tid,
            name,
            kernel,
            capture: CaptureStatus::Skipped,
            frames: Vec::new(),
            truncated: false,
            signalled: false,
            python: None,
        }
    }

    /// The name to call the thread by: its Python `threading` name when it has one (e.g.
    /// `worker-0`), else its kernel name (`comm`).
    pub fn display_name(&self) -> &str {
        self.python
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.name)
    }
}

impl Dump {
    /// Parse a JSON dump, checking its format marker.
    pub fn from_json(text: &str) -> Result<Dump, DumpParseError> {
        // The format first, skipping everything else (no allocation), then the dump straight
        // into the model: no `serde_json::Value` of the whole file next to it (that doubled
        // the peak memory of reading a dump).
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
        }
        let head: Head = serde_json::from_str(text)?;
        match head.format.as_deref() {
            Some(FORMAT) => {}
            Some(other) => return Err(DumpParseError::Format(other.to_string())),
            None => return Err(DumpParseError::Format("<missing>".to_string())),
        }
        Ok(serde_json::from_str(text)?)
    }

    /// The thread with this tid.
    pub fn thread(&self, tid: Tid) -> Option<&Thread> {
        self.threads.iter().find(|t| t.tid == tid)
    }
}

/// Why a file is not a readable dump.
#[derive(Debug, thiserror::Error)]
pub enum DumpParseError {
    #[error("not JSON or not a dump: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported dump format {0:?} (this build reads {FORMAT:?})")]
    Format(String),
}

#[cfg(test)]
mod tests {
    use super::Addr;

    #[test]
    fn addresses_serialize_as_display_does() {
        for v in [0, 1, 0xf, 0x10, 0x7f12_3456_789a, u64::MAX, 1 << 63] {
            let a = Addr(v);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{a}\""), "{v:#x}");
            assert_eq!(serde_json::from_str::<Addr>(&json).unwrap(), a);
        }
    }

    /// `capture.method` is written as the strings of `docs/FORMAT.md` and read back as the same
    /// method; a string of another version is kept as it was, and a dump without it reads as "".
    #[test]
    fn capture_methods_serialize_as_their_strings() {
        use super::{CaptureMethod, CaptureStats};
        for (m, s) in [
            (CaptureMethod::Signal, "signal"),
            (CaptureMethod::SyscallSignal, "syscall+signal"),
            (CaptureMethod::Kernel, "kernel"),
            (CaptureMethod::Outside, "outside"),
            (CaptureMethod::OutsideConsistent, "outside+consistent"),
            (CaptureMethod::Other("ptrace+x".into()), "ptrace+x"),
        ] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<CaptureMethod>(&json).unwrap(), m);
            assert_eq!(m.to_string(), s);
        }
        let mut v = serde_json::to_value(CaptureStats::default()).unwrap();
        v.as_object_mut().unwrap().remove("method");
        let none: CaptureStats = serde_json::from_value(v).unwrap();
        assert_eq!(none.method.as_str(), "");
        assert_eq!(serde_json::to_value(&none).unwrap()["method"], "");
    }
}
