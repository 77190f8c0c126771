//! Trigger a dump with a request id and wait for the side file that carries it.
//!
//! The trigger goes with `sigqueue` and a random request id; the library names the file
//! `stackdump-<pid>-<time>Z-r<id>.{txt,json}` (a hard link per request when one dump serves
//! several), so each caller finds its own dump even when several `stackdump dump` run at once.
//!
//! # Waiting
//!
//! The dump directory (seen through `/proc/PID/root`) is watched with dnotify from before the
//! trigger is sent ([`DumpDir::watch`]): every file created or renamed into it raises a
//! real-time signal whose handler writes to a pipe, so the library's rename of the finished
//! file wakes the wait at once, which then rescans the directory. The wait also watches the
//! target's pidfd (it ends the moment the target exits) and the Ctrl-C pipe, and rescans every
//! 500 ms in any case. Without dnotify (`fs.dir-notify-enable=0`, or a kernel without it) it
//! rescans every millisecond for the first [`FAST_SCANS_FOR`], when a dump is expected, then
//! with a growing backoff.
//!
//! Why not inotify: closing an inotify instance that had a watch waits for an SRCU grace
//! period (`fsnotify_destroy_group` flushes the mark reaper, which runs `synchronize_srcu`):
//! 5-25 ms measured on Linux 6.18, whether the watch was removed first or not, paid at the exit
//! of every `stackdump dump` (more than the whole dump of a small process). A dnotify mark
//! belongs to the kernel's one dnotify group, which is never destroyed: closing the directory
//! removes it without waiting (measured: nothing).

use crate::interrupt::Interrupt;
use crate::target::{Target, TargetError};
use nix::poll::{PollFd, PollFlags};
use stackdump_core::kernel::rootfs::{self, SafeOpenError};
use stackdump_core::kernel::signals::HostSignal;
use stackdump_core::model::dumpfile::{DumpFileName, DumpFormat, TEMP_PREFIX};
use stackdump_core::model::duration::format_duration;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A dump is a few MB at most (20 MB for 10000 threads); refuse anything larger before
/// reading it (see `stackdump_core::limits`).
const MAX_DUMP_BYTES: u64 = stackdump_core::limits::MAX_DUMP_FILE;

/// A fresh request id: random, non-zero, at most 0x7fffffff.
pub fn request_id() -> u32 {
    let mut buf = [0u8; 4];
    // SAFETY: getrandom writes at most buf.len() bytes into buf, which we own.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    let mut id = if n == 4 {
        u32::from_ne_bytes(buf)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        t ^ std::process::id().rotate_left(16)
    };
    id &= 0x7fff_ffff;
    if id == 0 {
        id = 1;
    }
    id
}

/// Send `signal` to the target with `id` as its sigqueue value.
///
/// The trigger goes to the library's own thread (the task named `stackdump`, see
/// [`Target::dump_thread`]) with `rt_tgsigqueueinfo`. That thread keeps the trigger blocked and
/// takes it with `sigwaitinfo`: asking for a dump interrupts no host thread at all, and works
/// even when the application installed its own handler for the signal over the library's (no
/// handler runs for it) or blocks the signal in all its threads. A process-directed `sigqueue`
/// is the fallback when there is no such thread (it went away, or the library never started
/// it): one of the application's threads then takes it, with whatever handler is installed.
///
/// Standard signals do not queue: a second USR1 sent while one is still pending is merged
/// into it, and its sigqueue value (our request id) is lost, although the send succeeds. A
/// trigger sent to the dump thread stays pending while it finishes a dump. So first wait
/// (briefly) until the signal is not pending; and [`wait_for_dump`] sends again when a dump that
/// started after ours was sent does not carry our id.
pub fn trigger(target: &Target, signal: &HostSignal, id: u32) -> Result<(), TargetError> {
    let until = Instant::now() + Duration::from_secs(1);
    let mut pause = Duration::from_micros(200);
    while pending(target, signal.number) && Instant::now() < until {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    send(target, signal, id)
}

/// True when `signo` is pending for the process or for its dump thread.
fn pending(target: &Target, signo: i32) -> bool {
    if target.signal_pending(signo) {
        return true;
    }
    target
        .dump_thread()
        .and_then(|tid| target.thread_pending(tid))
        .is_some_and(|bits| (1..=64).contains(&signo) && bits & (1u64 << (signo - 1)) != 0)
}

/// Our pid as the target sees it: ours when we share its pid namespace, else 0 (what the
/// kernel reports for a sender it cannot name).
fn sender_pid_for(pid: i32) -> i32 {
    let ns = |p: &str| {
        std::fs::metadata(format!("/proc/{p}/ns/pid"))
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    };
    match (ns("self"), ns(&pid.to_string())) {
        (Some(a), Some(b)) if a == b => std::process::id() as i32,
        _ => 0,
    }
}

fn send(target: &Target, signal: &HostSignal, id: u32) -> Result<(), TargetError> {
    let pid = target.pid;
    let sent = match target.dump_thread() {
        Some(tid) => match stackdump_core::kernel::signals::tg_sigqueue(
            pid,
            tid,
            signal.number,
            sender_pid_for(pid),
            u64::from(id),
        ) {
            // The thread went away between the lookup and the send: fall back.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => sigqueue(pid, signal, id),
            other => other,
        },
        None => sigqueue(pid, signal, id),
    };
    let Err(err) = sent else {
        return Ok(());
    };
    Err(match err.raw_os_error() {
        Some(libc::ESRCH) => TargetError::Exited { pid },
        Some(libc::EPERM) => TargetError::PermissionDenied {
            pid,
            what: "signal",
            owner: None,
        },
        _ => TargetError::Trigger {
            pid,
            signal: signal.name.clone(),
            source: err,
        },
    })
}

fn sigqueue(pid: i32, signal: &HostSignal, id: u32) -> std::io::Result<()> {
    let value = libc::sigval {
        sival_ptr: id as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue takes plain values; the pointer member only carries the integer id and is
    // never dereferenced by anyone.
    if unsafe { libc::sigqueue(pid, signal.number, value) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The current time as in side-file names (`YYYYmmddTHHMMSS.mmm`, UTC).
pub fn name_time(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut s = stackdump_core::model::timefmt::UtcTime::from_unix_millis(ms).compact();
    s.pop(); // the Z
    s
}

/// The target's dump directory, opened through its root.
pub struct DumpDir {
    pub fd: OwnedFd,
    /// The path in the target's file system.
    pub path: String,
    /// Watched with dnotify ([`DumpDir::watch`]); closing `fd` ends it.
    watched: bool,
    /// [`Wake::drains`] when the watch began: unchanged, no wake-up was taken away since
    /// (one wait drains the pipe that every watched directory of the run writes to).
    drains_at_watch: u64,
    /// The target's file-system credentials: the directory and its files are opened with its
    /// rights (the library writes there as its user), never with root's.
    creds: Option<rootfs::FsCreds>,
}

/// `fcntl` commands and flags of dnotify (`<linux/fcntl.h>`; the `libc` crate has only
/// `F_NOTIFY`). The values of `asm-generic`, which x86 and Arm use.
const F_SETSIG: libc::c_int = 10;
const DN_CREATE: libc::c_int = 0x4;
const DN_MULTISHOT: libc::c_int = 0x8000_0000_u32 as libc::c_int;

/// Where dnotify's signals land: a pipe that their handler writes to (see the module doc).
struct Wake {
    read: UnixStream,
    /// The real-time signal dnotify raises.
    signal: libc::c_int,
}

/// How many times [`Wake::drain`] took bytes out of the pipe.
static DRAINS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Wake {
    /// Empty the pipe after a wake-up.
    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {
            DRAINS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn drains() -> u64 {
        DRAINS.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The pipe and its handlers, set up on first use; `None` when they could not be.
fn wake() -> Option<&'static Wake> {
    static WAKE: OnceLock<Option<Wake>> = OnceLock::new();
    WAKE.get_or_init(|| {
        let (read, write) = UnixStream::pair().ok()?;
        read.set_nonblocking(true).ok()?;
        let signal = libc::SIGRTMIN() + 4;
        // SIGIO too: the kernel sends it instead when it cannot queue the real-time signal,
        // and its default action would end the CLI.
        for sig in [signal, libc::SIGIO] {
            signal_hook::low_level::pipe::register(sig, write.try_clone().ok()?).ok()?;
        }
        Some(Wake { read, signal })
    })
    .as_ref()
}

/// `f` run with `creds` (see [`rootfs::as_target`]); an error switching them is `Io`.
fn with_creds<T>(
    creds: Option<&rootfs::FsCreds>,
    shown: &str,
    f: impl FnOnce() -> Result<T, SafeOpenError>,
) -> Result<T, SafeOpenError> {
    let mut out = None;
    rootfs::as_target(creds, || {
        out = Some(f());
        Ok(())
    })
    .map_err(|source| SafeOpenError::Io {
        path: shown.to_string(),
        source,
    })?;
    out.expect("as_target ran it")
}

/// Without dnotify: how long the wait rescans the directory every millisecond before it
/// backs off.
const FAST_SCANS_FOR: Duration = Duration::from_millis(300);

impl DumpDir {
    pub fn open(target: &Target) -> Result<DumpDir, TargetError> {
        let path = target.dump_dir();
        let root = target.root()?;
        let creds = rootfs::FsCreds::of_process(target.pid);
        let fd = with_creds(creds.as_ref(), &path, || root.open_dir(&path))
            .map_err(|e| dir_error(target, &path, e))?;
        Ok(DumpDir {
            fd,
            path,
            watched: false,
            drains_at_watch: 0,
            creds,
        })
    }

    /// Watch the directory for new files, before the trigger is sent (see the module doc).
    /// Without dnotify the wait polls instead.
    pub fn watch(&mut self) {
        if self.watched {
            return;
        }
        let Some(wake) = wake() else {
            return;
        };
        let fd = self.fd.as_raw_fd();
        self.drains_at_watch = Wake::drains();
        // SAFETY: fcntl on a descriptor we own, with integer arguments only. The signal's
        // handler is installed (wake) before any event can raise it.
        self.watched = unsafe {
            libc::fcntl(fd, F_SETSIG, wake.signal) == 0
                && libc::fcntl(fd, libc::F_NOTIFY, DN_CREATE | DN_MULTISHOT) == 0
        };
    }

    /// Names in the directory.
    pub fn list(&self) -> std::io::Result<Vec<String>> {
        rootfs::list_dir(self.fd.as_fd())
    }

    /// Read one file of the directory, safely (no symlink, regular, owned by the target).
    pub fn read(&self, name: &str, owners: &[u32]) -> Result<Vec<u8>, SafeOpenError> {
        let shown = format!("{}/{name}", self.path.trim_end_matches('/'));
        let owners = (!owners.is_empty()).then_some(owners);
        let f = with_creds(self.creds.as_ref(), &shown, || {
            rootfs::open_file(self.fd.as_fd(), name, owners, &shown)
        })?;
        // Its size first (a target-made file can be anything): refused by name and size
        // before a byte is read; the read below still stops at the limit.
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        if size > MAX_DUMP_BYTES {
            return Err(SafeOpenError::Refused {
                path: format!("{shown} ({size} bytes)"),
                what: "larger than the 64 MiB limit for a dump",
            });
        }
        rootfs::read_limited(f, MAX_DUMP_BYTES, &shown)
    }
}

fn dir_error(target: &Target, path: &str, e: SafeOpenError) -> TargetError {
    let path = stackdump_core::escape::field(path);
    let refuse = |reason: String, todo: &str| TargetError::Refused {
        pid: target.pid,
        comm: target.comm().to_string(),
        reason,
        todo: todo.to_string(),
    };
    let var = if target.env.dir.is_some() {
        "its STACKDUMP_DIR"
    } else {
        "its dump directory (STACKDUMP_DIR unset: /tmp)"
    };
    match e {
        SafeOpenError::NotFound { .. } => refuse(
            format!("{var} {path} does not exist in its file system, so no dump could be written"),
            "Create the directory, or restart the process with STACKDUMP_DIR set to one that exists",
        ),
        SafeOpenError::NotADirectory { .. } => refuse(
            format!("{var} {path} is not a directory in its file system"),
            "Restart the process with STACKDUMP_DIR set to a directory",
        ),
        SafeOpenError::Symlink { .. } => refuse(
            format!("{var} {path} goes through a symlink, and stackdump does not follow symlinks in a target's file system"),
            "Restart the process with STACKDUMP_DIR set to the real path",
        ),
        SafeOpenError::Io { ref source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            TargetError::PermissionDenied {
                pid: target.pid,
                what: "read the dump directory of",
                owner: target.status.uids.first().copied(),
            }
        }
        other => TargetError::UnsafeFile {
            pid: target.pid,
            source: other,
        },
    }
}

/// A dump, read: its file name and content per format.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub files: BTreeMap<DumpFormat, (DumpFileName, Vec<u8>)>,
}

/// One trigger that was sent, and what to wait for.
pub struct Request<'a> {
    pub signal: &'a HostSignal,
    pub id: u32,
    /// The formats to wait for.
    pub formats: &'a [DumpFormat],
    pub deadline: Instant,
    /// The `--timeout` (for messages).
    pub timeout: Duration,
    /// When the trigger was sent.
    pub sent: std::time::SystemTime,
}

/// How long a dump that overtook ours may take to show our id (as a hard link) before we send
/// the trigger again.
const OVERTAKEN_GRACE: Duration = Duration::from_millis(300);
/// At most this many re-sends per request.
const MAX_RESENDS: u32 = 5;

/// Wait for the files of a request, until its deadline.
pub fn wait_for_dump(
    target: &mut Target,
    dir: &DumpDir,
    req: &Request<'_>,
    interrupt: Option<&Interrupt>,
) -> Result<Fetched, TargetError> {
    let Request {
        signal,
        id,
        formats,
        deadline,
        timeout,
        sent,
    } = *req;
    let mut sent_time = name_time(sent);
    let mut overtaken_since: Option<Instant> = None;
    let mut resent = 0u32;
    let ns_pid = if target.status.ns_pid > 0 {
        target.status.ns_pid
    } else {
        target.pid
    };
    let owners = target.status.uids.clone();
    let mut found: BTreeMap<DumpFormat, (DumpFileName, Vec<u8>)> = BTreeMap::new();
    let mut unsafe_seen: Option<SafeOpenError> = None;
    let mut backoff = Duration::from_millis(5);
    let mut exited = false;
    let req_start = Instant::now();
    let wake = if dir.watched { wake() } else { None };
    // Watched since before the trigger was sent: no file of this request can be there before
    // the first wake-up, and a scan now would only take the CPU the dump thread needs (a
    // small machine may have no other one free). Unless the wait for another target of the
    // same run has drained the shared pipe since this watch began: its wake-up may have
    // been for this directory.
    let mut skip_scan = wake.is_some() && Wake::drains() == dir.drains_at_watch;
    loop {
        // Scan: the files of our request that we do not have yet.
        let names = if std::mem::take(&mut skip_scan) {
            Vec::new()
        } else {
            dir.list().map_err(|e| TargetError::Io {
                pid: target.pid,
                context: format!("listing {}", stackdump_core::escape::Esc(&dir.path)),
                source: e,
            })?
        };
        let mut overtaken = false;
        for name in &names {
            let Some(parsed) = DumpFileName::parse(name) else {
                continue;
            };
            if parsed.pid == ns_pid
                && parsed.request != Some(u64::from(id))
                && parsed.time >= sent_time
            {
                overtaken = true;
            }
            if parsed.request != Some(u64::from(id))
                || parsed.pid != ns_pid
                || !formats.contains(&parsed.format)
                || found.contains_key(&parsed.format)
            {
                continue;
            }
            match dir.read(name, &owners) {
                Ok(bytes) => {
                    found.insert(parsed.format, (parsed, bytes));
                }
                // The file may still be replaced by the real one: keep waiting, and report
                // this if nothing better shows up.
                Err(e) => unsafe_seen = Some(e),
            }
        }
        if formats.iter().all(|f| found.contains_key(f)) {
            return Ok(Fetched { files: found });
        }
        // A dump that started after our trigger was sent, without our id: our signal was
        // merged into another pending one and its id lost. Send again (same id).
        if overtaken && found.is_empty() && resent < MAX_RESENDS {
            let since = *overtaken_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= OVERTAKEN_GRACE && !pending(target, signal.number) {
                let now = std::time::SystemTime::now();
                send(target, signal, id)?;
                resent += 1;
                sent_time = name_time(now);
                overtaken_since = None;
                continue;
            }
        }
        if exited {
            return Err(TargetError::Exited { pid: target.pid });
        }
        if interrupt.is_some_and(Interrupt::fired) {
            return Err(TargetError::Interrupted);
        }
        if !target.alive() {
            // One more scan: the dump may have been completed just before the exit.
            exited = true;
            continue;
        }
        let now = Instant::now();
        if now >= deadline {
            if let Some(e) = unsafe_seen {
                return Err(TargetError::UnsafeFile {
                    pid: target.pid,
                    source: e,
                });
            }
            let causes = diagnose(target, dir, signal, &names, ns_pid, timeout);
            return Err(TargetError::Timeout {
                pid: target.pid,
                timeout: format_duration(timeout),
                causes,
            });
        }
        let wait = if wake.is_some() {
            (deadline - now).min(Duration::from_millis(500))
        } else if req_start.elapsed() < FAST_SCANS_FOR {
            (deadline - now).min(Duration::from_millis(1))
        } else {
            let w = (deadline - now).min(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(250));
            w
        };
        let mut fds: Vec<PollFd> = Vec::new();
        if let Some(w) = wake {
            fds.push(PollFd::new(w.read.as_fd(), PollFlags::POLLIN));
        }
        if let Some(p) = &target.pidfd {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if let Some(i) = interrupt {
            fds.push(PollFd::new(i.fd(), PollFlags::POLLIN));
        }
        let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
        // EINTR (a handler ran in this thread) is a wake-up like any other.
        let _ = nix::poll::poll(&mut fds, ms);
        drop(fds);
        if let Some(w) = wake {
            w.drain();
        }
        if let Some(i) = interrupt {
            i.drain();
        }
    }
}

/// The likely causes of a missing dump, most specific first.
fn diagnose(
    target: &mut Target,
    dir: &DumpDir,
    signal: &HostSignal,
    names: &[String],
    ns_pid: i32,
    timeout: Duration,
) -> String {
    let mut causes: Vec<String> = Vec::new();
    let _ = target.refresh_status();
    let st = &target.status;
    if matches!(st.state, 'T' | 't') {
        causes.push(format!(
            "the process is stopped (state {}): its dump thread cannot run until it is continued (kill -s CONT {})",
            st.state, target.pid
        ));
    }
    if target.library.is_none() {
        causes
            .push("libstackdump.so is not loaded in it (the trigger was sent with --force)".into());
    }
    if !st.catches(signal.number) {
        causes.push(format!(
            "it does not catch {} (any more): the application reset the handler, or the library disabled itself",
            signal.name
        ));
    }
    let dump_thread = target.dump_thread();
    if target.library.is_some() && dump_thread.is_none() {
        causes.push("there is no thread named `stackdump` in it: the library's dump thread is not running (it disables itself on a bad STACKDUMP_* setting)".into());
    }
    if let Some(tid) = dump_thread {
        if target.thread_pending(tid).is_some_and(|bits| {
            (1..=64).contains(&signal.number) && bits & (1u64 << (signal.number - 1)) != 0
        }) {
            causes.push(format!(
                "the trigger is still pending on the library's dump thread (tid {tid}): it has not come back to wait for triggers (a dump still running, or stuck)"
            ));
        }
    }
    let shown = stackdump_core::escape::field(&dir.path);
    let temp_prefix = format!("{TEMP_PREFIX}{ns_pid}-");
    if names.iter().any(|n| n.starts_with(&temp_prefix)) {
        causes.push(format!(
            "a dump is being written ({}{ns_pid}-… in {shown}): it takes longer than {}; try a longer --timeout",
            TEMP_PREFIX,
            format_duration(timeout)
        ));
    }
    if let Ok(vfs) = nix::sys::statvfs::fstatvfs(&dir.fd) {
        if vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            causes.push(format!("{shown} is on a read-only file system"));
        }
        // Root's processes may use the blocks reserved for root; others may not.
        let root = st.uids.get(1) == Some(&0);
        let blocks = if root {
            vfs.blocks_free()
        } else {
            vfs.blocks_available()
        };
        let free = blocks.saturating_mul(vfs.fragment_size());
        let inodes = if root {
            vfs.files_free()
        } else {
            vfs.files_available()
        };
        // A dump is at least a few KiB; the library writes it under a temporary name first.
        if free < 64 * 1024 {
            causes.push(format!(
                "the dump directory {shown} is full ({free} bytes free): the library could not write the dump; free some space (the next dump that is written says so in its errors)"
            ));
        } else if inodes == 0 && vfs.files() > 0 {
            causes.push(format!(
                "the dump directory {shown} has no free inodes: the library could not create the dump file; free some (the next dump that is written says so in its errors)"
            ));
        }
    }
    if let Ok(stat) = nix::sys::stat::fstat(&dir.fd) {
        let euid = st.uids.get(1).copied().unwrap_or(u32::MAX);
        let mode = stat.st_mode & 0o7777;
        let writable = euid == 0
            || (stat.st_uid == euid && mode & 0o200 != 0)
            || (stat.st_uid != euid && mode & 0o022 != 0);
        if !writable {
            causes.push(format!(
                "the dump directory {shown} may not be writable by uid {euid} (the process's; the directory is owned by uid {} with mode {mode:04o})",
                stat.st_uid
            ));
        }
    }
    if target.library.is_some() && dump_thread.is_none() {
        // Only then did the trigger go to the process as a whole: with a dump thread, it went
        // there, and no handler (the library's or the application's) runs for it.
        causes.push(format!(
            "the trigger went to the process as a whole (no dump thread to send it to), so one of the application's threads took it: if the application installed its own {} handler over the library's, that handler ran instead (SigCgt only shows that something catches it)",
            signal.name
        ));
    }
    if causes.is_empty() {
        causes.push(format!(
            "nothing seen from outside explains it: the process catches {}, its dump thread waits for triggers and {shown} looks writable. The dump may take longer than {} (try a longer --timeout), or the library's dump thread may be stuck: `stackdump inspect {}` shows its stack (the thread named stackdump)",
            signal.name,
            format_duration(timeout),
            target.pid
        ));
    }
    causes
        .iter()
        .map(|c| format!("  - {c}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_positive_and_vary() {
        let ids: Vec<u32> = (0..16).map(|_| request_id()).collect();
        assert!(ids.iter().all(|&i| (1..=0x7fff_ffff).contains(&i)));
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert!(sorted.len() > 1);
    }
}
