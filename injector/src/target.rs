//! A target process as the CLI sees it from outside, and the checks made before sending it
//! anything: it exists and is not a zombie, we may signal it, libstackdump.so is mapped in it, its
//! trigger signal is caught (`SigCgt`), and its dump directory exists.
//!
//! The process is pinned with a pidfd first: when the pidfd still says "alive" after the checks,
//! everything read from `/proc/PID` was about that very process, not a successor that got the
//! same pid.

use crate::libstate::StateRead;
use stackdump_core::escape::Esc;
use stackdump_core::kernel::rootfs::{SafeOpenError, TargetRoot};
use stackdump_core::kernel::signals::{self, arch, HostSignal};
use stackdump_core::model::dumpfile::DumpFormat;
use stackdump_core::model::libstate::{LibraryState, TriggerHandler};
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

/// Everything that can go wrong with a target; `exit::kind_of` maps each to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process {pid}")]
    NoSuchProcess { pid: i32 },
    #[error("process {pid} is a zombie: it has exited and waits for its parent (pid {ppid}) to reap it; there is nothing left to dump")]
    Zombie { pid: i32, ppid: i32 },
    #[error("not allowed to {what} process {pid}{}: {}", owner.map(|u| format!(" (owned by uid {u})")).unwrap_or_default(), permission_hint())]
    PermissionDenied {
        pid: i32,
        what: &'static str,
        owner: Option<u32>,
    },
    #[error("refusing to signal process {pid} ({}): {reason}. {todo}", Esc(comm))]
    Refused {
        pid: i32,
        comm: String,
        reason: String,
        todo: String,
    },
    #[error("{tid} is a thread of process {pid} ({}), not a process; {cmd} the process: `stackdump {cmd} {pid}`", Esc(comm))]
    NotAProcess {
        tid: i32,
        pid: i32,
        comm: String,
        cmd: &'static str,
    },
    #[error("process {pid} ({}) is a kernel thread: it has no user-space stack; its kernel stack is in /proc/{pid}/stack", Esc(comm))]
    KernelThread { pid: i32, comm: String },
    #[error("process {pid} exited before its dump was complete")]
    Exited { pid: i32 },
    #[error("no dump from process {pid} within {timeout}. Likely causes:\n{causes}")]
    Timeout {
        pid: i32,
        timeout: String,
        causes: String,
    },
    #[error("process {pid}: {source}")]
    UnsafeFile {
        pid: i32,
        #[source]
        source: SafeOpenError,
    },
    #[error("could not send {signal} to process {pid}: {source}")]
    Trigger {
        pid: i32,
        signal: String,
        #[source]
        source: io::Error,
    },
    #[error("process {pid}: {context}: {source}")]
    Io {
        pid: i32,
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("interrupted")]
    Interrupted,
}

/// What to do about a permission error: as root, say why even root is refused instead of
/// "run as root".
fn permission_hint() -> &'static str {
    if nix::unistd::geteuid().is_root() {
        "even root may not: the process is not dumpable (set-uid or set-gid, or PR_SET_DUMPABLE 0), or a security module, a sandbox or another user namespace protects it"
    } else {
        "run as the same user or with CAP_KILL (root)"
    }
}

/// The fields of `/proc/PID/status` the checks need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub name: String,
    pub state: char,
    pub ppid: i32,
    /// The thread group (process) this task belongs to; differs from the pid for a thread.
    pub tgid: i32,
    /// `Kthread: 1` (kernels ≥ 6.x show it; see [`is_kernel_thread`] for older ones).
    pub kthread: bool,
    /// The pid as the process sees itself (last field of `NSpid`).
    pub ns_pid: i32,
    /// Real, effective, saved and file-system uids.
    pub uids: Vec<u32>,
    pub sig_blocked: u64,
    pub sig_ignored: u64,
    pub sig_caught: u64,
    /// Signals pending for the whole process (`ShdPnd`).
    pub sig_pending: u64,
    pub threads: u32,
}

impl Status {
    pub fn parse(text: &str) -> Option<Status> {
        let mut st = Status::default();
        let mut seen = false;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let hex = || u64::from_str_radix(value, 16).ok();
            match key {
                "Name" => {
                    st.name = value.to_string();
                    seen = true;
                }
                "State" => st.state = value.chars().next().unwrap_or('?'),
                "PPid" => st.ppid = value.parse().unwrap_or(0),
                "Tgid" => st.tgid = value.parse().unwrap_or(0),
                "Kthread" => st.kthread = value == "1",
                "NSpid" => {
                    st.ns_pid = value
                        .split_whitespace()
                        .last()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0)
                }
                "Uid" => {
                    st.uids = value
                        .split_whitespace()
                        .filter_map(|u| u.parse().ok())
                        .collect()
                }
                "SigBlk" => st.sig_blocked = hex()?,
                "SigIgn" => st.sig_ignored = hex()?,
                "SigCgt" => st.sig_caught = hex()?,
                "ShdPnd" => st.sig_pending = hex()?,
                "Threads" => st.threads = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        seen.then_some(st)
    }

    fn bit(mask: u64, signo: i32) -> bool {
        (1..=64).contains(&signo) && mask & (1u64 << (signo - 1)) != 0
    }
    pub fn catches(&self, signo: i32) -> bool {
        Self::bit(self.sig_caught, signo)
    }
    pub fn ignores(&self, signo: i32) -> bool {
        Self::bit(self.sig_ignored, signo)
    }
    pub fn pending(&self, signo: i32) -> bool {
        Self::bit(self.sig_pending, signo)
    }
    pub fn blocks(&self, signo: i32) -> bool {
        Self::bit(self.sig_blocked, signo)
    }
}

/// PF_KTHREAD in the flags of `/proc/PID/stat`: a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// True when `pid` is a kernel thread: `Kthread: 1` in its status, or (kernels without that
/// line) PF_KTHREAD in the flags of its stat.
pub fn is_kernel_thread(pid: i32, status: &Status) -> bool {
    if status.kthread {
        return true;
    }
    stackdump_core::kernel::proc::read_proc_text(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            // After the name: state ppid pgrp session tty_nr tpgid flags.
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Refuse what is not a user process: a thread id that is not its process's
/// (`Tgid:` differs; "dump the process instead", with `cmd` in the advice) and kernel
/// threads. Both are usage errors (exit 2).
pub fn check_is_process(pid: i32, status: &Status, cmd: &'static str) -> Result<(), TargetError> {
    if status.tgid > 0 && status.tgid != pid {
        let comm =
            stackdump_core::kernel::proc::read_proc_text(format!("/proc/{}/comm", status.tgid))
                .map(|c| c.trim_end_matches('\n').to_string())
                .unwrap_or_else(|_| "?".into());
        return Err(TargetError::NotAProcess {
            tid: pid,
            pid: status.tgid,
            comm,
            cmd,
        });
    }
    if is_kernel_thread(pid, status) {
        return Err(TargetError::KernelThread {
            pid,
            comm: status.name.clone(),
        });
    }
    Ok(())
}

/// [`check_is_process`] from `/proc/PID/status`, for commands that do not build a [`Target`].
pub fn check_pid_is_process(pid: i32, cmd: &'static str) -> Result<(), TargetError> {
    let text = read_proc(pid, "status")?;
    match Status::parse(&String::from_utf8_lossy(&text)) {
        Some(st) => check_is_process(pid, &st, cmd),
        None => Ok(()),
    }
}

/// The `STACKDUMP_*` settings of a target, from `/proc/PID/environ` (its environment at exec).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetEnv {
    pub signal: Option<String>,
    pub dir: Option<String>,
    pub format: Option<String>,
    pub disable: Option<String>,
}

impl TargetEnv {
    pub fn parse(environ: &[u8]) -> TargetEnv {
        let mut env = TargetEnv::default();
        for var in environ.split(|b| *b == 0) {
            let Ok(var) = std::str::from_utf8(var) else {
                continue;
            };
            let Some((k, v)) = var.split_once('=') else {
                continue;
            };
            let slot = match k {
                "STACKDUMP_SIGNAL" => &mut env.signal,
                "STACKDUMP_DIR" => &mut env.dir,
                "STACKDUMP_FORMAT" => &mut env.format,
                "STACKDUMP_DISABLE" => &mut env.disable,
                _ => continue,
            };
            *slot = Some(v.to_string());
        }
        env
    }

    /// True when the library was turned off (`STACKDUMP_DISABLE=1`).
    pub fn disabled(&self) -> bool {
        self.disable.as_deref().map(str::trim) == Some("1")
    }

    /// The dump directory as the library sees it.
    pub fn dir_or_default(&self) -> &str {
        match self.dir.as_deref() {
            Some(d) if !d.is_empty() => d,
            _ => "/tmp",
        }
    }

    /// The formats the library writes.
    pub fn formats(&self) -> Vec<DumpFormat> {
        let (known, _) = DumpFormat::parse_list(self.format.as_deref().unwrap_or(""));
        if known.is_empty() {
            vec![DumpFormat::Text, DumpFormat::Json]
        } else {
            known
        }
    }
}

/// What an application's own handler of the trigger is known to do, by program.
fn known_handler(comm: &str, module: Option<&str>) -> String {
    let file = module
        .and_then(|m| m.rsplit('/').next())
        .map(|f| f.strip_suffix(" (deleted)").unwrap_or(f));
    let prog = file.unwrap_or(comm);
    let known = [
        (
            "node",
            "node: starts the inspector, which listens on 127.0.0.1:9229",
        ),
        (
            "postgres",
            "PostgreSQL: its own wake-ups between processes (latches, procsignals)",
        ),
        ("nginx", "nginx: reopens its log files"),
        ("httpd", "Apache: graceful restart"),
        ("apache2", "Apache: graceful restart"),
        ("dd", "dd: prints its transfer statistics"),
    ];
    for (name, what) in known {
        if prog == name || prog.starts_with(&format!("{name}.")) || comm == name {
            return what.to_string();
        }
    }
    match module {
        Some(m) => format!("its handler is in {m}"),
        None => "its own handler".to_string(),
    }
}

/// Open a pidfd (Linux ≥ 5.3). `Ok(None)` where the kernel has none.
pub fn pidfd_open(pid: i32) -> Result<Option<OwnedFd>, TargetError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory is
    // passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }));
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Err(TargetError::NoSuchProcess { pid }),
        _ => Ok(None),
    }
}

/// True while the process behind the pidfd (or the pid) has not exited.
pub fn alive(pid: i32, pidfd: Option<&OwnedFd>) -> bool {
    if let Some(fd) = pidfd {
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        return match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(0) => true,
            Ok(_) => false,
            Err(_) => true,
        };
    }
    match stackdump_core::kernel::proc::read_proc_text(format!("/proc/{pid}/status")) {
        Ok(s) => Status::parse(&s).is_some_and(|st| !matches!(st.state, 'Z' | 'X')),
        Err(_) => false,
    }
}

/// Which C library the target uses, from its mappings (for the real-time numbering).
pub fn target_libc(maps: &str) -> arch::Libc {
    if maps.contains("/ld-musl-") || maps.contains("libc.musl-") {
        arch::Libc::Musl
    } else {
        arch::Libc::Glibc
    }
}

/// The path of the mapped libstackdump, if any: a mapping whose file name is `libstackdump.so`
/// or starts with `libstackdump`.
pub fn find_library(maps: &str) -> Option<String> {
    maps.lines().find_map(|line| {
        let path = line.split_whitespace().nth(5)?;
        let path = line[line.find(path)?..].trim_end();
        let file = path.rsplit('/').next()?;
        let file = file.strip_suffix(" (deleted)").unwrap_or(file);
        file.starts_with("libstackdump").then(|| path.to_string())
    })
}

/// A process, inspected.
#[derive(Debug)]
pub struct Target {
    pub pid: i32,
    pub pidfd: Option<OwnedFd>,
    pub status: Status,
    pub env: TargetEnv,
    /// The mapped library, when it is loaded.
    pub library: Option<String>,
    pub libc: arch::Libc,
    /// The state page the library published (`crate::libstate`). When it is found, [`env`]
    /// holds its settings instead of the environment's.
    ///
    /// [`env`]: Target::env
    pub state: StateRead,
    /// [`Target::dump_thread`], found once (it reads every task's name).
    dump_tid: std::cell::Cell<Option<Option<i32>>>,
}

/// How long [`Target::dump_thread_or_wait`] waits for the dump thread of a process whose library
/// has not published its state yet.
pub const YOUNG_DUMP_THREAD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn read_proc(pid: i32, file: &str) -> Result<Vec<u8>, TargetError> {
    stackdump_core::kernel::proc::read_proc_file(format!("/proc/{pid}/{file}")).map_err(|e| match e
        .kind()
    {
        io::ErrorKind::NotFound => TargetError::NoSuchProcess { pid },
        io::ErrorKind::PermissionDenied => TargetError::PermissionDenied {
            pid,
            what: match file {
                "maps" => "read the memory maps of",
                "environ" => "read the environment of",
                _ => "inspect",
            },
            owner: owner_of(pid),
        },
        // A process that exits while we read gives ESRCH.
        _ if e.raw_os_error() == Some(libc::ESRCH) => TargetError::NoSuchProcess { pid },
        _ => TargetError::Io {
            pid,
            context: format!("reading /proc/{pid}/{file}"),
            source: e,
        },
    })
}

fn owner_of(pid: i32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

impl Target {
    /// Inspect `pid`: pin it, read its status, check we may signal it, read its maps and
    /// environment. Fails with NoSuchProcess, Zombie or PermissionDenied; the readiness
    /// checks are in [`Target::check`].
    pub fn inspect(pid: i32) -> Result<Target, TargetError> {
        let pidfd = pidfd_open(pid)?;
        let status = read_proc(pid, "status")?;
        let status =
            Status::parse(&String::from_utf8_lossy(&status)).ok_or_else(|| TargetError::Io {
                pid,
                context: format!("parsing /proc/{pid}/status"),
                source: io::Error::from(io::ErrorKind::InvalidData),
            })?;
        if matches!(status.state, 'Z' | 'X') {
            return Err(TargetError::Zombie {
                pid,
                ppid: status.ppid,
            });
        }
        check_is_process(pid, &status, "dump")?;
        // May we signal it? Signal 0 checks without sending anything.
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            return Err(match e {
                nix::errno::Errno::ESRCH => TargetError::NoSuchProcess { pid },
                nix::errno::Errno::EPERM => TargetError::PermissionDenied {
                    pid,
                    what: "signal",
                    owner: status.uids.first().copied(),
                },
                other => TargetError::Io {
                    pid,
                    context: "checking with kill(pid, 0)".into(),
                    source: other.into(),
                },
            });
        }
        let maps = String::from_utf8_lossy(&read_proc(pid, "maps")?).into_owned();
        let mut env = TargetEnv::parse(&read_proc(pid, "environ")?);
        let library = find_library(&maps);
        let ns_pid = if status.ns_pid > 0 {
            status.ns_pid
        } else {
            pid
        };
        let state = match library {
            Some(_) => crate::libstate::read(pid, ns_pid, &maps),
            None => StateRead::Missing,
        };
        if let StateRead::Found(st) = &state {
            // What the library itself says wins over the environment (which the host may have
            // overwritten, and which says nothing of a forked child).
            env = TargetEnv {
                signal: Some(st.trigger.clone()),
                dir: Some(st.dir.clone()),
                format: Some(st.formats.clone()),
                disable: None,
            };
        }
        let target = Target {
            pid,
            library,
            state,
            libc: target_libc(&maps),
            pidfd,
            status,
            env,
            dump_tid: std::cell::Cell::new(None),
        };
        if !target.alive() {
            return Err(TargetError::NoSuchProcess { pid });
        }
        Ok(target)
    }

    pub fn alive(&self) -> bool {
        alive(self.pid, self.pidfd.as_ref())
    }

    /// True when `signo` is pending for the process right now (sent, not yet delivered).
    pub fn signal_pending(&self, signo: i32) -> bool {
        stackdump_core::kernel::proc::read_proc_text(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|t| Status::parse(&t))
            .is_some_and(|st| st.pending(signo))
    }

    /// Fresh `/proc/PID/status` (the signal masks change over time).
    pub fn refresh_status(&mut self) -> Result<(), TargetError> {
        let text = read_proc(self.pid, "status")?;
        if let Some(st) = Status::parse(&String::from_utf8_lossy(&text)) {
            if matches!(st.state, 'Z' | 'X') {
                return Err(TargetError::Exited { pid: self.pid });
            }
            self.status = st;
        }
        Ok(())
    }

    /// The trigger signal the library installed, from the target's `STACKDUMP_SIGNAL`
    /// (default USR1), in the target's libc numbering.
    pub fn configured_signal(&self) -> Result<HostSignal, signals::SignalError> {
        let name = self.env.signal.as_deref().unwrap_or("USR1");
        let mut sig = signals::parse_host(name)?;
        if let Some(st) = self.lib_state() {
            // The number the library resolved in its own process.
            sig.number = st.trigger_number;
            return Ok(sig);
        }
        // A musl target seen from a glibc stackdump (or the reverse): RTMIN differs.
        if arch::Libc::host() != self.libc && sig.name.starts_with("RT") {
            if let Some(host) = arch::host() {
                if let Ok(spec) = arch::parse_name(name) {
                    if let Some(r) = host.resolve(&spec, self.libc) {
                        sig.number = r.number;
                    }
                }
            }
        }
        Ok(sig)
    }

    pub fn comm(&self) -> &str {
        &self.status.name
    }

    /// True when every thread blocks `signo` (then a process-directed signal stays pending).
    pub fn all_threads_block(&self, signo: i32) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        let mut any = false;
        for t in tasks.flatten() {
            let Ok(text) = stackdump_core::kernel::proc::read_proc_text(t.path().join("status"))
            else {
                continue;
            };
            let Some(st) = Status::parse(&text) else {
                continue;
            };
            any = true;
            if !st.blocks(signo) {
                return false;
            }
        }
        any
    }

    /// The library's dump thread: the task named `stackdump`, in a process that has the library
    /// mapped. It keeps every asynchronous signal blocked, the trigger included, and takes the
    /// trigger with `sigwaitinfo`, so a trigger sent to it directly reaches the library whatever
    /// handler the application installed and however its threads mask the signal. When several
    /// tasks have that name, the one that blocks the most signals is ours (it blocks all but
    /// the synchronous ones; while it waits in `sigwaitinfo`, `SigBlk` shows all but those and
    /// the two it waits for).
    pub fn dump_thread(&self) -> Option<i32> {
        if let Some(known) = self.dump_tid.get() {
            return known;
        }
        let found = self.find_dump_thread();
        self.dump_tid.set(Some(found));
        found
    }

    /// [`Target::dump_thread`]; when there is none yet and the library has not published its
    /// state page either, wait for it (at most [`YOUNG_DUMP_THREAD_PATIENCE`], while the
    /// process lives): in a process started a moment ago the library's constructor has created
    /// the thread, which names itself and publishes its page when it first runs, milliseconds
    /// later on a loaded machine. A process whose thread ran once and is gone (or a child made
    /// without fork()'s handlers, which sees its parent's page) is answered at once.
    pub fn dump_thread_or_wait(&self) -> Option<i32> {
        if let Some(tid) = self.dump_thread() {
            return Some(tid);
        }
        if self.library.is_none() || self.lib_state().is_some() {
            return None;
        }
        let until = std::time::Instant::now() + YOUNG_DUMP_THREAD_PATIENCE;
        let mut pause = std::time::Duration::from_millis(1);
        while std::time::Instant::now() < until && self.alive() {
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
            if let Some(tid) = self.find_dump_thread() {
                self.dump_tid.set(Some(Some(tid)));
                return Some(tid);
            }
        }
        None
    }

    fn find_dump_thread(&self) -> Option<i32> {
        self.library.as_ref()?;
        // The tid the library published, when we see the target's pids as it does.
        if let Some(st) = self.lib_state() {
            let same_ns = self.status.ns_pid == 0 || self.status.ns_pid == self.pid;
            if same_ns
                && stackdump_core::kernel::proc::read_proc_text(format!(
                    "/proc/{}/task/{}/comm",
                    self.pid, st.tid
                ))
                .is_ok_and(|c| c.trim_end() == "stackdump")
            {
                return Some(st.tid);
            }
        }
        let tids = stackdump_core::kernel::proc::numeric_entries(std::path::Path::new(&format!(
            "/proc/{}/task",
            self.pid
        )))
        .ok()?;
        let mut best: Option<(i32, u32)> = None;
        for tid in tids {
            let dir = format!("/proc/{}/task/{tid}", self.pid);
            let Ok(comm) = stackdump_core::kernel::proc::read_proc_text(format!("{dir}/comm"))
            else {
                continue;
            };
            if comm.trim_end() != "stackdump" {
                continue;
            }
            let blocked = stackdump_core::kernel::proc::read_proc_text(format!("{dir}/status"))
                .ok()
                .and_then(|t| Status::parse(&t))
                .map_or(0, |st| st.sig_blocked.count_ones());
            if !matches!(best, Some((_, most)) if most >= blocked) {
                best = Some((tid, blocked));
            }
        }
        best.map(|(tid, _)| tid)
    }

    /// The library's state page, when it was found.
    pub fn lib_state(&self) -> Option<&LibraryState> {
        match &self.state {
            StateRead::Found(st) => Some(st),
            _ => None,
        }
    }

    /// When the application handles the trigger signal itself (it installed its own handler
    /// over the library's): what to say, for `list` and (`in_dump`) for `dump`, which works all
    /// the same and says only why `kill -s` would not. `None` when the library's handler is in
    /// place, or nobody knows (no state page).
    pub fn trigger_note(&self, in_dump: bool) -> Option<String> {
        let st = self.lib_state()?;
        let sig = &st.trigger;
        let what = match st.handler {
            TriggerHandler::Library => return None,
            TriggerHandler::Application => format!(
                "{sig} is handled by the application ({})",
                known_handler(self.comm(), st.handler_module.as_deref())
            ),
            TriggerHandler::Default => format!(
                "the application reset {sig} to its default action (`kill -s {sig}` would do that, not take a dump)"
            ),
            TriggerHandler::Ignored => format!(
                "the application ignores {sig} (`kill -s {sig}` does nothing)"
            ),
        };
        let other = ["USR2", "RTMIN+5"]
            .into_iter()
            .filter(|n| *n != sig)
            .find(|n| {
                signals::parse_host(n)
                    .is_ok_and(|s| !self.status.catches(s.number) && !self.status.ignores(s.number))
            })
            .unwrap_or("RTMIN+5");
        if in_dump {
            return Some(format!(
                "{what}: `kill -s {sig}` would not take a dump (this command signals the dump \
                 thread, which works); to make `kill` work, start it with STACKDUMP_SIGNAL={other}"
            ));
        }
        Some(format!(
            "{what}; use `stackdump dump {}`, or start it with STACKDUMP_SIGNAL={other}",
            self.pid
        ))
    }

    /// Signals pending for one thread of the target (`SigPnd` of its task), as a mask.
    pub fn thread_pending(&self, tid: i32) -> Option<u64> {
        let text = stackdump_core::kernel::proc::read_proc_text(format!(
            "/proc/{}/task/{tid}/status",
            self.pid
        ))
        .ok()?;
        let line = text.lines().find(|l| l.starts_with("SigPnd:"))?;
        u64::from_str_radix(line["SigPnd:".len()..].trim(), 16).ok()
    }

    /// The dump directory as an absolute path in the target's file system.
    pub fn dump_dir(&self) -> String {
        let d = self.env.dir_or_default();
        if d.starts_with('/') {
            return d.to_string();
        }
        // A relative STACKDUMP_DIR is relative to the working directory the process had when
        // the library started; its current one is the best guess we have.
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.pid))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/".into());
        format!("{}/{d}", cwd.trim_end_matches('/'))
    }

    /// Open the target's root (for the dump directory).
    pub fn root(&self) -> Result<TargetRoot, TargetError> {
        TargetRoot::open(self.pid).map_err(|e| match e {
            SafeOpenError::NotFound { .. } => TargetError::NoSuchProcess { pid: self.pid },
            SafeOpenError::Io { ref source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                TargetError::PermissionDenied {
                    pid: self.pid,
                    what: "read the file system of",
                    owner: self.status.uids.first().copied(),
                }
            }
            other => TargetError::UnsafeFile {
                pid: self.pid,
                source: other,
            },
        })
    }

    /// True when the process is the init process of its pid namespace (pid 1 there).
    pub fn is_init(&self) -> bool {
        self.pid == 1 || self.status.ns_pid == 1
    }

    /// A refusal that `--force` does not override: `signal` to an init process (pid 1 of its
    /// namespace) that does not have the library loaded, or does not catch it. The kernel
    /// drops a signal init does not catch, and an init's own handlers do real work with
    /// signals (systemd re-executes or shuts down on some; tini and dumb-init forward them to
    /// their child, which may not catch them): never send one there.
    pub fn init_refusal(&self, signal: &HostSignal) -> Option<(String, String)> {
        if !self.is_init() {
            return None;
        }
        let who = if self.pid == 1 {
            "it is pid 1, the init process".to_string()
        } else {
            "it is the init process of its pid namespace (pid 1 there)".to_string()
        };
        let todo = format!(
            "Its stacks from outside, without a signal: `stackdump inspect {}`. --force does not override this for an init process",
            self.pid
        );
        if self.library.is_none() {
            return Some((
                format!(
                    "{who}, and libstackdump.so is not loaded in it: {} would go to init's own handler, or be dropped by the kernel if it has none",
                    signal.name
                ),
                todo,
            ));
        }
        if !self.status.catches(signal.number) {
            return Some((
                format!(
                    "{who}, and it does not catch {} (not in SigCgt of /proc/{}/status): the kernel drops such signals for init, so nothing would happen",
                    signal.name, self.pid
                ),
                todo,
            ));
        }
        None
    }

    /// The checks before sending `signal`. Returns the reasons to refuse (empty when it is
    /// safe); with `--force` the caller turns them into warnings.
    pub fn check(&self, signal: &HostSignal) -> Vec<(String, String)> {
        let mut refusals = Vec::new();
        let how_to_prepare = format!(
            "Its stacks without the library, from outside: `stackdump inspect {}`. To dump it with the library, start it with `stackdump run -- CMD` (or LD_PRELOAD=/path/to/libstackdump.so CMD); --force sends anyway",
            self.pid
        );
        let action = arch::host()
            .and_then(|a| a.lookup(&signal.name))
            .map(|d| d.action)
            .unwrap_or(arch::Action::Term);
        let fate = if self.status.ignores(signal.number) {
            format!("{} is ignored by it, so nothing would happen", signal.name)
        } else if action.is_fatal() {
            format!(
                "sending {} would {} (its default action)",
                signal.name,
                action
                    .describe()
                    .replace("terminates", "terminate")
                    .replace("dumps", "dump")
            )
        } else {
            format!(
                "{} {} by default, so nothing would happen",
                signal.name,
                action.describe()
            )
        };
        if self.library.is_none() {
            refusals.push((
                format!("libstackdump.so is not loaded in it, and {fate}"),
                how_to_prepare.clone(),
            ));
        } else if self.env.disabled() {
            refusals.push((
                format!("libstackdump.so is loaded but disabled (STACKDUMP_DISABLE=1), and {fate}"),
                "Restart it without STACKDUMP_DISABLE; --force sends anyway".to_string(),
            ));
        } else if !self.status.catches(signal.number) {
            refusals.push((
                format!("it does not catch {} (not in SigCgt of /proc/{}/status), so {fate}", signal.name, self.pid),
                "The library may have disabled itself (check its STACKDUMP_* settings), or the application reset the handler; `stackdump list` shows the trigger signals; --force sends anyway".to_string(),
            ));
        } else if matches!(self.status.state, 'T' | 't') {
            refusals.push((
                format!(
                    "it is stopped (state {}{}), so its dump thread cannot run",
                    self.status.state,
                    if self.status.state == 't' { ", by a debugger" } else { "" }
                ),
                format!("Continue it first (kill -s CONT {}, or detach the debugger); --force sends anyway", self.pid),
            ));
        } else if self.dump_thread_or_wait().is_none() {
            // Nothing in the process serves a trigger: a host thread would record it in the
            // library's handler and wake nobody (or run the application's handler).
            let why = if self.all_threads_block(signal.number) {
                format!(" (and every thread blocks {})", signal.name)
            } else {
                String::new()
            };
            refusals.push((
                format!(
                    "libstackdump.so is loaded but its dump thread is not running (no thread named `stackdump`){why}, so nothing would take the dump"
                ),
                format!(
                    "A child made without fork()'s handlers (_Fork, clone, a raw fork system call) has none, nor one whose thread could not be created (RLIMIT_NPROC, pids.max); a child forked while its parent's library was busy may not either. Dump its parent, or see its stacks from outside: `stackdump inspect {}`; --force sends anyway",
                    self.pid
                ),
            ));
        }
        refusals
    }
}

/// Each of `roots`, each followed by the processes under it (depth first, children in pid
/// order), each process once. Zombies below a root are left out (there is nothing to inspect);
/// a root is kept whatever it is, so that its error is reported.
pub fn with_subprocesses(roots: &[i32]) -> Vec<i32> {
    // Every process's parent, from one pass over /proc (a process that exits meanwhile is
    // simply missing).
    let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some((state, parent)) = state_and_ppid(pid) {
                if state != 'Z' {
                    children.entry(parent).or_default().push(pid);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &root in roots {
        let mut stack = vec![root];
        while let Some(pid) = stack.pop() {
            if !seen.insert(pid) {
                continue;
            }
            out.push(pid);
            if let Some(kids) = children.get_mut(&pid) {
                kids.sort_unstable();
                stack.extend(kids.iter().rev());
            }
        }
    }
    out
}

/// State and parent pid from `/proc/PID/stat` (after the last `)`: the command name in
/// parentheses is the process's own and may contain anything).
fn state_and_ppid(pid: i32) -> Option<(char, i32)> {
    let stat = stackdump_core::kernel::proc::read_proc_file(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let text = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nKthread:\t0\nNgid:\t0\nPid:\t42\nPPid:\t1\nUid:\t1000\t1000\t1000\t1000\nNSpid:\t42\t7\nThreads:\t3\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000000200\nShdPnd:\t0000000000000200\n";
        let st = Status::parse(text).unwrap();
        assert_eq!(st.name, "sleep");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.tgid, 42);
        assert!(!st.kthread);
        assert!(
            Status::parse("Name:\tkthreadd\nKthread:\t1\n")
                .unwrap()
                .kthread
        );
        assert_eq!(st.ns_pid, 7);
        assert_eq!(st.uids, [1000; 4]);
        assert_eq!(st.threads, 3);
        assert!(st.catches(10));
        assert!(!st.catches(12));
        assert!(st.ignores(13));
        assert!(!st.blocks(10));
        assert!(st.pending(10));
    }

    #[test]
    fn environment() {
        let env = TargetEnv::parse(
            b"PATH=/bin\0STACKDUMP_SIGNAL=USR2\0STACKDUMP_DIR=/var/tmp\0STACKDUMP_FORMAT=json\0X=STACKDUMP_DISABLE=1\0",
        );
        assert_eq!(env.signal.as_deref(), Some("USR2"));
        assert_eq!(env.dir_or_default(), "/var/tmp");
        assert_eq!(env.formats(), [DumpFormat::Json]);
        assert!(!env.disabled());
        let env = TargetEnv::parse(b"STACKDUMP_DISABLE=1\0");
        assert!(env.disabled());
        assert_eq!(env.dir_or_default(), "/tmp");
        assert_eq!(env.formats(), [DumpFormat::Text, DumpFormat::Json]);
    }

    #[test]
    fn library_in_maps() {
        let maps = "7f0000000000-7f0000001000 r--p 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n7f0000002000-7f0000003000 r-xp 00001000 08:01 456 /work/my dir/target/release/libstackdump.so\n";
        assert_eq!(
            find_library(maps).as_deref(),
            Some("/work/my dir/target/release/libstackdump.so")
        );
        assert_eq!(
            find_library("7f-7f r--p 0 0:0 1 /lib/libstackdumpx.so (deleted)\n").as_deref(),
            Some("/lib/libstackdumpx.so (deleted)")
        );
        assert_eq!(
            find_library("7f-7f r--p 0 0:0 1 /lib/notstackdump.so\n"),
            None
        );
        assert_eq!(
            target_libc("7f-7f r-xp 0 0:0 1 /lib/ld-musl-x86_64.so.1\n"),
            arch::Libc::Musl
        );
        assert_eq!(target_libc(maps), arch::Libc::Glibc);
    }

    #[test]
    fn init_is_never_sent_what_it_does_not_catch() {
        let usr1 = signals::parse_host("USR1").unwrap();
        let mut init = Target {
            pid: 1,
            pidfd: None,
            status: Status::parse("Name:\tinit\nState:\tS\nSigCgt:\t0000000000000000\n").unwrap(),
            env: TargetEnv::default(),
            library: None,
            libc: arch::Libc::Glibc,
            state: StateRead::Missing,
            dump_tid: std::cell::Cell::new(None),
        };
        let (reason, todo) = init.init_refusal(&usr1).unwrap();
        assert!(
            reason.starts_with("it is pid 1, the init process, and libstackdump.so is not loaded"),
            "{reason}"
        );
        assert!(todo.contains("--force does not override this"), "{todo}");
        init.library = Some("/lib/libstackdump.so".into());
        let (reason, _) = init.init_refusal(&usr1).unwrap();
        assert!(reason.contains("it does not catch USR1"), "{reason}");
        init.status.sig_caught = 1 << (usr1.number - 1);
        assert_eq!(init.init_refusal(&usr1), None);
        // A container's init: pid 1 in its namespace.
        init.pid = 4242;
        init.status.ns_pid = 1;
        init.library = None;
        let (reason, _) = init.init_refusal(&usr1).unwrap();
        assert!(
            reason.starts_with("it is the init process of its pid namespace"),
            "{reason}"
        );
        init.status.ns_pid = 7;
        assert_eq!(init.init_refusal(&usr1), None);
    }

    #[test]
    fn ourselves() {
        let me = Target::inspect(std::process::id() as i32).unwrap();
        assert!(me.alive());
        assert!(me.library.is_none());
        assert!(!me.comm().is_empty());
        let usr1 = signals::parse_host("USR1").unwrap();
        assert_eq!(me.check(&usr1).len(), 1);
    }
}
