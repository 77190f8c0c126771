//! File descriptors: what `/proc/PID/fd/N` points to, which end of a pipe an fd is
//! (`/proc/PID/fdinfo/N`), how full a pipe is, and which other processes hold it.
//!
//! How full a pipe is can only be asked through an fd on it:
//!
//! - from **inside** the process (the dumper), on the host's own fd number, with exactly two
//!   queries that neither read, write nor close it: `fcntl(F_GETPIPE_SZ)` (which also proves the
//!   fd is still a pipe: it fails with `EBADF` on anything else) and `ioctl(FIONREAD)`; the link
//!   is read again afterwards to make sure the fd was not closed and reused in between;
//! - from **outside** (`stackdump inspect`), on a duplicate taken with `pidfd_getfd(2)` (Linux
//!   5.6; needs ptrace permission over the target), closed right after. When that is not
//!   possible the fill level is "unknown", with the reason.
//!
//! Directories are listed with `getdents64`, never `opendir` (which calls the C library's
//! `malloc`: a host wedged inside `malloc` must not stall a dump).

use crate::kernel::syscalls;
use crate::model::{Pid, PipeHolder, SyscallState};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

/// The kind of an fd from its link target: `pipe`, `socket`, `file` (a path),
/// `anon_inode:<name>`, `other`.
pub fn kind_of(target: &str) -> String {
    if target.starts_with("pipe:[") {
        "pipe".into()
    } else if target.starts_with("socket:[") {
        "socket".into()
    } else if let Some(name) = target.strip_prefix("anon_inode:") {
        let name = name.trim_start_matches('[').trim_end_matches(']');
        format!("anon_inode:{name}")
    } else if target.starts_with('/') {
        "file".into()
    } else {
        "other".into()
    }
}

/// The inode of `pipe:[N]`.
pub fn pipe_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("pipe:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The inode of `socket:[N]`.
pub fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// What `/proc/PID/fdinfo/N` says (the fields we use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdInfo {
    pub pos: u64,
    /// The open flags (octal in the file).
    pub flags: u32,
    pub ino: Option<u64>,
}

impl FdInfo {
    /// `read`, `write` or `read+write`, from the access mode in `flags`.
    pub fn end(&self) -> &'static str {
        match self.flags & libc::O_ACCMODE as u32 {
            x if x == libc::O_RDONLY as u32 => "read",
            x if x == libc::O_WRONLY as u32 => "write",
            _ => "read+write",
        }
    }
}

/// Parse `/proc/PID/fdinfo/N`: `pos:\t0\nflags:\t0100001\nmnt_id:\t15\nino:\t68199\n…`.
pub fn parse_fdinfo(text: &str) -> Option<FdInfo> {
    let mut info = FdInfo::default();
    let mut seen_flags = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "pos" => info.pos = value.parse().ok()?,
            "flags" => {
                info.flags = u32::from_str_radix(value, 8).ok()?;
                seen_flags = true;
            }
            "ino" => info.ino = value.parse().ok(),
            _ => {}
        }
    }
    seen_flags.then_some(info)
}

/// The end of the pipe fd `fd` of the process at `proc_pid_dir`, or `unknown`.
pub fn pipe_end(proc_pid_dir: &Path, fd: i32) -> String {
    std::fs::read_to_string(proc_pid_dir.join("fdinfo").join(fd.to_string()))
        .ok()
        .and_then(|t| parse_fdinfo(&t))
        .map_or("unknown", |i| i.end())
        .to_string()
}

/// Every open fd of the process at `proc_pid_dir` and what it points to, by fd number. Fds that
/// close while we look are skipped.
pub fn list_fds(proc_pid_dir: &Path) -> std::io::Result<BTreeMap<i32, String>> {
    Ok(fd_links(&proc_pid_dir.join("fd"))?.into_iter().collect())
}

/// `(fd, link)` for every entry of a `/proc/PID/fd` directory. The names are read with
/// `getdents64` ([`crate::kernel::proc::numeric_entries`]: `opendir` would call the C library's
/// `malloc`, which a wedged host may hold) and the links with `readlinkat` on one directory fd
/// (no path walk per fd: thousands of fds are listed in a few milliseconds).
fn fd_links(fd_dir: &Path) -> std::io::Result<Vec<(i32, String)>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(fd_dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `c` is a NUL-terminated path; the fd returned is owned by `dir` below.
    let raw = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` was just opened by us and nothing else owns it.
    let mut dir = unsafe { OwnedFd::from_raw_fd(raw) };
    if raw <= 2 {
        // The host closed one of 0-2: do not sit there while we list thousands of fds (a host
        // thread reading its stdin would read our directory). Move above 2; the low one closes.
        // SAFETY: F_DUPFD_CLOEXEC duplicates our own fd to the lowest free number >= 3.
        let moved = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3) };
        if moved >= 0 {
            // SAFETY: `moved` is a new fd owned by nothing else.
            dir = unsafe { OwnedFd::from_raw_fd(moved) };
        }
    }
    // One open for both the listing and the links.
    let names = crate::kernel::proc::numeric_entries_of(dir.as_fd())?;
    let mut out = Vec::with_capacity(names.len());
    let mut buf = [0u8; 4096];
    for fd in names {
        let mut name = [0u8; 16];
        let digits = fd.to_string();
        name[..digits.len()].copy_from_slice(digits.as_bytes());
        // SAFETY: `name` is NUL-terminated (an i32 has at most 11 characters); readlinkat writes
        // at most `buf.len()` bytes into `buf`; `dir` is an open directory fd.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr().cast(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n > 0 {
            out.push((fd, String::from_utf8_lossy(&buf[..n as usize]).into_owned()));
        } else if n < 0 {
            let e = std::io::Error::last_os_error();
            // Reading a link needs ptrace access to the process, the same for each of its fds:
            // the listing works (root, or the same user) but no link will, e.g. root without
            // a capability the process has. Say so rather than read hundreds of denials as
            // "no fds".
            if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Bytes queued in a pipe and its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeLevel {
    pub queued: u64,
    pub capacity: u64,
}

/// Where we stand when asking about a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vantage {
    /// Inside the process (the dumper): the fd numbers are ours.
    Inside,
    /// Outside, in another process (the CLI): fds are duplicated with `pidfd_getfd`.
    Outside(Pid),
}

/// `F_GETPIPE_SZ` then `FIONREAD` on an fd of our own.
fn query_pipe(fd: i32) -> Result<PipeLevel, std::io::Error> {
    // SAFETY: fcntl(F_GETPIPE_SZ) only reads the pipe's size; on an fd that is not a pipe (or not
    // open) it fails with EBADF. No memory is passed.
    let capacity = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if capacity < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: the fd was a pipe an instant ago (F_GETPIPE_SZ succeeded); FIONREAD on a pipe
    // writes one c_int, the number of bytes queued, into `queued`, which lives across the call.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued as *mut libc::c_int) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PipeLevel {
        queued: queued.max(0) as u64,
        capacity: capacity as u64,
    })
}

/// How full the pipe `inode` behind fd `fd` of the process is. `Err` is the reason in words.
pub fn pipe_level(vantage: Vantage, fd: i32, inode: u64) -> Result<PipeLevel, String> {
    match vantage {
        // Inside, the dumper's thread has a file-descriptor table of its own (so the host never
        // sees our fds and we never hold the host's): the host's fd is reached the same way as
        // from outside, by a duplicate taken with pidfd_getfd on our own pid.
        Vantage::Inside => pipe_level(Vantage::Outside(Pid(std::process::id() as i32)), fd, inode),
        Vantage::Outside(pid) => {
            let dup = pidfd_getfd(pid, fd)?;
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            // SAFETY: fstat writes one `struct stat` into `st`, which is large enough; `dup` is
            // our own open fd.
            let rc = unsafe { libc::fstat(dup.as_raw_fd(), st.as_mut_ptr()) };
            if rc != 0 {
                return Err(format!("fstat: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: fstat succeeded, so it initialized `st`.
            let st = unsafe { st.assume_init() };
            if st.st_ino != inode {
                return Err(format!("fd {fd} was closed and reused"));
            }
            query_pipe(dup.as_raw_fd()).map_err(|e| format!("F_GETPIPE_SZ/FIONREAD: {e}"))
        }
    }
}

/// A duplicate of fd `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`), close-on-exec.
fn pidfd_getfd(pid: Pid, fd: i32) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.0, 0) };
    if pidfd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pidfd_open returned a new fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags (must be 0) and returns a new
    // close-on-exec fd or -1; no memory is passed.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => format!(
                "pidfd_getfd: {e} (needs ptrace permission over pid {pid}: same user and \
                 kernel.yama.ptrace_scope 0, or CAP_SYS_PTRACE)"
            ),
            Some(libc::ENOSYS) => format!("pidfd_getfd: {e} (Linux 5.6 or later needed)"),
            _ => format!("pidfd_getfd: {e}"),
        });
    }
    // SAFETY: pidfd_getfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

/// System calls that read from their first argument.
const READS: &[&str] = &[
    "read", "readv", "preadv", "preadv2", "pread64", "recvfrom", "recvmsg", "recvmmsg", "splice",
    "tee",
];

/// System calls that wait for any of several fds.
const POLLS: &[&str] = &[
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "io_uring_enter",
];

/// What the threads of another process are doing (their system calls, or wait channels when
/// the system call is not readable), and whether one of them reads fd `fd`.
pub fn activity(proc_pid_dir: &Path, fd: i32) -> (Option<bool>, Option<String>) {
    let mut reading = false;
    let mut polling = false;
    let mut unreadable = false;
    let mut doing: BTreeMap<String, usize> = BTreeMap::new();
    let Ok(tasks) = crate::kernel::proc::numeric_entries(&proc_pid_dir.join("task")) else {
        return (None, None);
    };
    for tid in tasks.into_iter().take(256) {
        let dir = proc_pid_dir.join("task").join(tid.to_string());
        let what = match std::fs::read_to_string(dir.join("syscall")) {
            Ok(text) => match crate::kernel::proc::parse_syscall(&text) {
                SyscallState::InSyscall { name, args, nr, .. } => {
                    let name = name.unwrap_or_else(|| format!("syscall_{nr}"));
                    if READS.contains(&name.as_str())
                        && args.first().map(|a| a.0 as i64) == Some(i64::from(fd))
                    {
                        reading = true;
                    }
                    if POLLS.contains(&name.as_str()) {
                        polling = true;
                    }
                    name
                }
                SyscallState::Running => "running".to_string(),
                SyscallState::Blocked { .. } => "blocked (page fault?)".to_string(),
                SyscallState::Unknown => {
                    unreadable = true;
                    wchan_of(&dir)
                }
            },
            Err(_) => {
                unreadable = true;
                wchan_of(&dir)
            }
        };
        *doing.entry(what).or_default() += 1;
    }
    let doing = (!doing.is_empty()).then(|| {
        doing
            .iter()
            .map(|(what, n)| {
                if *n > 1 {
                    format!("{n}× {what}")
                } else {
                    what.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    });
    let reading = if reading {
        Some(true)
    } else if polling || unreadable {
        None
    } else {
        Some(false)
    };
    (reading, doing)
}

fn wchan_of(task_dir: &Path) -> String {
    std::fs::read_to_string(task_dir.join("wchan"))
        .ok()
        .and_then(|w| crate::kernel::proc::parse_wchan(&w))
        .map_or_else(|| "unknown".to_string(), |w| format!("wchan {w}"))
}

/// The result of looking for other holders of some pipes.
#[derive(Debug, Default)]
pub struct HolderScan {
    /// By pipe inode.
    pub holders: HashMap<u64, Vec<PipeHolder>>,
    /// Processes whose fds we may not list.
    pub unreadable: usize,
    /// The time budget ran out before every process was looked at.
    pub incomplete: bool,
    /// The search stopped after the process's children and parent, where the other end of
    /// every pipe was found.
    pub relatives_only: bool,
}

/// What to look for: pipes by inode, with the end we want to find (`read`, `write`, or `any`).
pub type WantedPipes = HashMap<u64, &'static str>;

/// The children (of every thread) and the parent of `pid`: where the other end of a pipe
/// usually is.
pub fn relatives(proc_root: &Path, pid: Pid) -> Vec<i32> {
    let dir = proc_root.join(pid.0.to_string());
    let mut out = Vec::new();
    if let Ok(tasks) = crate::kernel::proc::numeric_entries(&dir.join("task")) {
        for tid in tasks {
            let children = dir.join("task").join(tid.to_string()).join("children");
            if let Ok(text) = std::fs::read_to_string(children) {
                out.extend(
                    text.split_ascii_whitespace()
                        .filter_map(|c| c.parse::<i32>().ok()),
                );
            }
        }
    }
    if let Some(ppid) = std::fs::read(dir.join("stat"))
        .ok()
        .and_then(|s| procfs_core::FromRead::from_read(&s[..]).ok())
        .map(|s: procfs_core::process::Stat| s.ppid)
    {
        if ppid > 0 {
            out.push(ppid);
        }
    }
    out.sort_unstable();
    out.dedup();
    out.retain(|p| *p != pid.0);
    out
}

fn satisfied(wanted: &WantedPipes, holders: &HashMap<u64, Vec<PipeHolder>>) -> bool {
    wanted.iter().all(|(inode, end)| {
        holders.get(inode).is_some_and(|hs| {
            hs.iter()
                .any(|h| *end == "any" || h.end == *end || h.end == "read+write")
        })
    })
}

/// Look through `/proc/*/fd` of every process but `skip` for fds on the pipes `wanted`, within
/// `budget`. The threads of each holder are looked at (what they do, whether they read the fd).
/// With `relatives_first`, the children and parent of `skip` are looked at first, and the search
/// stops there when they hold the wanted end of every pipe (the usual case, and cheap).
pub fn find_pipe_holders(
    proc_root: &Path,
    wanted: &WantedPipes,
    skip: Pid,
    budget: std::time::Duration,
    relatives_first: bool,
) -> HolderScan {
    let mut scan = HolderScan::default();
    if wanted.is_empty() {
        return scan;
    }
    let start = Instant::now();
    let near = if relatives_first {
        relatives(proc_root, skip)
    } else {
        Vec::new()
    };
    for &pid in &near {
        look_into(proc_root, pid, wanted, &mut scan);
    }
    if !near.is_empty() && satisfied(wanted, &scan.holders) {
        scan.relatives_only = true;
        return scan;
    }
    let Ok(entries) = crate::kernel::proc::numeric_entries(proc_root) else {
        scan.incomplete = true;
        return scan;
    };
    let mut pids: Vec<i32> = entries
        .into_iter()
        .filter(|p| *p != skip.0 && !near.contains(p))
        .collect();
    pids.sort_unstable();
    for pid in pids {
        if start.elapsed() > budget {
            scan.incomplete = true;
            break;
        }
        look_into(proc_root, pid, wanted, &mut scan);
    }
    scan
}

/// Add the fds of process `pid` on the `wanted` pipes to the scan.
fn look_into(proc_root: &Path, pid: i32, wanted: &WantedPipes, scan: &mut HolderScan) {
    let dir = proc_root.join(pid.to_string());
    // Its `exe` first, one system call that needs the same permission as its fds' links: a
    // kernel thread (most of /proc: no files) has none, and a process we may not look into
    // is known before its fds are listed (hundreds, each costing the kernel a lookup).
    match exe_readable(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            scan.unreadable += 1;
            return;
        }
        Err(_) => return, // a kernel thread, or gone
    }
    let fds = match fd_links(&dir.join("fd")) {
        Ok(fds) => fds,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            scan.unreadable += 1;
            return;
        }
        Err(_) => return, // gone, or a kernel thread
    };
    for (fd, link) in fds {
        let Some(inode) = pipe_inode(&link) else {
            continue;
        };
        if !wanted.contains_key(&inode) {
            continue;
        }
        let comm = std::fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default();
        let end = pipe_end(&dir, fd);
        let (reading, doing) = activity(&dir, fd);
        scan.holders.entry(inode).or_default().push(PipeHolder {
            pid: Pid(pid),
            comm,
            fd,
            end,
            reading,
            doing,
        });
    }
}

/// Whether the `exe` link of the process at `proc_pid_dir` can be read (not its target: one
/// byte of it).
fn exe_readable(proc_pid_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = proc_pid_dir.join("exe");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut byte = 0u8;
    // SAFETY: `c` is NUL-terminated; readlink writes at most 1 byte into `byte`.
    let n = unsafe { libc::readlink(c.as_ptr(), (&mut byte as *mut u8).cast(), 1) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// True when `name` writes to its first argument.
pub fn writes_fd(name: &str) -> bool {
    matches!(
        name,
        "write"
            | "writev"
            | "pwrite64"
            | "pwritev"
            | "pwritev2"
            | "sendto"
            | "sendmsg"
            | "sendmmsg"
    )
}

/// True when `name` reads from its first argument.
pub fn reads_fd(name: &str) -> bool {
    READS.contains(&name) && syscalls::first_arg_is_fd(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of("pipe:[5210641]"), "pipe");
        assert_eq!(kind_of("socket:[123]"), "socket");
        assert_eq!(kind_of("anon_inode:[eventpoll]"), "anon_inode:eventpoll");
        assert_eq!(kind_of("anon_inode:inotify"), "anon_inode:inotify");
        assert_eq!(kind_of("/var/log/app.log"), "file");
        assert_eq!(kind_of("/memfd:x (deleted)"), "file");
        assert_eq!(kind_of("net:[4026531840]"), "other");
        assert_eq!(pipe_inode("pipe:[5210641]"), Some(5210641));
        assert_eq!(pipe_inode("pipe:[x]"), None);
        assert_eq!(pipe_inode("socket:[1]"), None);
        assert_eq!(socket_inode("socket:[77]"), Some(77));
    }

    #[test]
    fn fdinfo() {
        let w = parse_fdinfo("pos:\t0\nflags:\t01\nmnt_id:\t16\nino:\t68199\n").unwrap();
        assert_eq!(w.end(), "write");
        assert_eq!(w.ino, Some(68199));
        let r = parse_fdinfo("pos:\t0\nflags:\t02000000\nmnt_id:\t16\nino:\t68199\n").unwrap();
        assert_eq!(r.end(), "read");
        let rw = parse_fdinfo("pos:\t12\nflags:\t0100002\nmnt_id:\t16\n").unwrap();
        assert_eq!(rw.end(), "read+write");
        assert_eq!(rw.pos, 12);
        assert_eq!(rw.ino, None);
        // eventfd and epoll fdinfo have extra lines; they do not matter.
        let e = parse_fdinfo("pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1057\neventfd-count:                0\neventfd-id: 3\n").unwrap();
        assert_eq!(e.end(), "read+write");
        assert!(parse_fdinfo("pos:\t0\n").is_none());
        assert!(parse_fdinfo("flags:\t9\n").is_none()); // not octal
    }

    /// [`find_pipe_holders`] through /proc for the `wanted` pipes, this process skipped, with
    /// time enough.
    fn look_for_holders(wanted: &WantedPipes, relatives_first: bool) -> HolderScan {
        find_pipe_holders(
            Path::new("/proc"),
            wanted,
            Pid(std::process::id() as i32),
            std::time::Duration::from_secs(10),
            relatives_first,
        )
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are new and owned by nothing else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn inode_of(fd: &OwnedFd) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        pipe_inode(&link.to_string_lossy()).unwrap()
    }

    #[test]
    fn pipe_level_from_inside_and_ends() {
        let (r, w) = pipe();
        let inode = inode_of(&r);
        let wrote = nix_write(&w, &[7u8; 1000]);
        assert_eq!(wrote, 1000);
        for fd in [&r, &w] {
            let level = pipe_level(Vantage::Inside, fd.as_raw_fd(), inode).unwrap();
            assert_eq!(level.queued, 1000);
            assert!(level.capacity >= 4096, "{level:?}");
        }
        // The wrong inode is refused, not reported.
        assert!(pipe_level(Vantage::Inside, r.as_raw_fd(), inode + 1).is_err());
        let me = Path::new("/proc/self");
        assert_eq!(pipe_end(me, r.as_raw_fd()), "read");
        assert_eq!(pipe_end(me, w.as_raw_fd()), "write");
        let fds = list_fds(me).unwrap();
        assert_eq!(fds[&r.as_raw_fd()], format!("pipe:[{inode}]"));
    }

    #[test]
    fn pipe_level_from_outside_of_a_child() {
        // A child holding the write end of a pipe we fill; we look at it from outside.
        let (r, w) = pipe();
        let inode = inode_of(&r);
        assert_eq!(nix_write(&w, &[1u8; 300]), 300);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::from(w))
            .spawn()
            .unwrap();
        let pid = Pid(child.id() as i32);
        let dir = Path::new("/proc").join(pid.0.to_string());
        // A handshake on /proc, not a sleep: the child has exec'd `sleep` (its comm says so) and
        // its fd 0 is the pipe.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let ready = || {
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let fd0 = std::fs::read_link(dir.join("fd/0"))
                .ok()
                .and_then(|l| pipe_inode(&l.to_string_lossy()));
            comm.trim_end() == "sleep" && fd0 == Some(inode)
        };
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "the child never became `sleep` with the pipe on fd 0"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let level = pipe_level(Vantage::Outside(pid), 0, inode);
        let me = Pid(std::process::id() as i32);
        let wanted: WantedPipes = [(inode, "write")].into_iter().collect();
        let scan = look_for_holders(&wanted, false);
        // Our child is where the other end is: found without looking at anything else.
        let near = look_for_holders(&wanted, true);
        assert!(relatives(Path::new("/proc"), me).contains(&pid.0));
        let _ = child.kill();
        let _ = child.wait();
        match level {
            Ok(level) => assert_eq!(level.queued, 300),
            // Without ptrace permission the reason is given.
            Err(why) => assert!(why.contains("pidfd"), "{why}"),
        }
        let holders = &scan.holders[&inode];
        assert_eq!(holders.len(), 1, "{holders:?}");
        assert_eq!(holders[0].pid, pid);
        assert_eq!(holders[0].fd, 0);
        assert_eq!(holders[0].end, "write");
        assert_eq!(holders[0].comm, "sleep");
        assert!(near.relatives_only);
        // (What its threads do may change in between: it was just exec'd.)
        let key = |hs: &[PipeHolder]| -> Vec<(Pid, i32, String)> {
            hs.iter().map(|h| (h.pid, h.fd, h.end.clone())).collect()
        };
        assert_eq!(key(&near.holders[&inode]), key(holders));
        drop(r);
    }

    #[test]
    fn a_holder_beyond_the_relatives_is_found_unless_they_hold_the_wanted_end() {
        // Our pipe's write end on fd 0 of a child (`sleep 31`, exec'd by `sh`) and of its own
        // child (`sleep 30`, our grandchild, as a forkserver's workers or a daemon's children
        // are): a look through every process finds both; one that starts with our relatives
        // goes on to every process unless they hold the end wanted.
        use std::os::unix::process::CommandExt;
        let (r, w) = pipe();
        let inode = inode_of(&r);
        let mut child = std::process::Command::new("sh")
            // (A background command's stdin is /dev/null unless redirected: through fd 3.)
            .args(["-c", "exec 3<&0; sleep 30 <&3 3<&- & exec sleep 31 3<&-"])
            .stdin(std::process::Stdio::from(w))
            .process_group(0)
            .spawn()
            .unwrap();
        let group = child.id() as i32;
        struct KillGroup(i32);
        impl Drop for KillGroup {
            fn drop(&mut self) {
                // SAFETY: kill(2) of our child's process group (the child and the grandchild).
                unsafe { libc::kill(-self.0, libc::SIGKILL) };
            }
        }
        let _group = KillGroup(group);
        let look = |end: &'static str, relatives_first: bool| {
            let wanted: WantedPipes = [(inode, end)].into_iter().collect();
            let scan = look_for_holders(&wanted, relatives_first);
            let mut pids: Vec<i32> = scan
                .holders
                .get(&inode)
                .map(|hs| hs.iter().map(|h| h.pid.0).collect())
                .unwrap_or_default();
            pids.sort_unstable();
            (pids, scan.relatives_only)
        };
        // Until the child is `sleep 31` (sh exec'd it) and its `sleep 30` holds the pipe too.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let everywhere = loop {
            let comm = std::fs::read_to_string(format!("/proc/{group}/comm")).unwrap_or_default();
            let (pids, _) = look("read", false);
            if comm.trim_end() == "sleep" && pids.len() == 2 {
                break pids;
            }
            assert!(
                Instant::now() < deadline,
                "never two holders: {pids:?}, child {comm:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        assert!(everywhere.contains(&group), "{everywhere:?}");
        // A read end, which neither holds: past the relatives, to the grandchild.
        let (first, relatives_only) = look("read", true);
        assert_eq!(first, everywhere);
        assert!(!relatives_only);
        // The write end, which the child holds: found there, the search stops.
        let (near, relatives_only) = look("write", true);
        assert_eq!(near, vec![group], "only the child");
        assert!(relatives_only);
        let _ = child.kill();
        let _ = child.wait();
        drop(r);
    }

    #[test]
    fn a_process_whose_links_are_denied_is_counted_unreadable_not_as_holding_nothing() {
        // Root may list the fds of a process with capabilities it lacks, but not read one of
        // their links (that needs ptrace access). A thread of ours drops CAP_SYS_PTRACE from its
        // effective set (capabilities are per thread; the thread ends with the test) and looks
        // at a child `sleep` holding our pipe's read end.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let (r, w) = pipe();
        let inode = inode_of(&w);
        // `spawn` returns once the child has exec'd `sleep`.
        let child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::from(r))
            .spawn()
            .unwrap();
        struct Reap(std::process::Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Reap(child);
        let pid = child.0.id() as i32;
        let look = move || {
            let wanted: WantedPipes = [(inode, "read")].into_iter().collect();
            let scan = look_for_holders(&wanted, false);
            let found = scan
                .holders
                .get(&inode)
                .is_some_and(|hs| hs.iter().any(|h| h.pid.0 == pid));
            let links = fd_links(Path::new(&format!("/proc/{pid}/fd"))).map(|l| l.len());
            (found, scan.unreadable, links.map_err(|e| e.raw_os_error()))
        };
        let (found, _, links) = look();
        assert!(found, "the child holds the read end");
        assert!(links.unwrap() >= 3);
        let (found, unreadable, links) = std::thread::spawn(move || {
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Default, Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let mut header = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let mut data = [Data::default(); 2];
            // SAFETY: capget writes two `Data` (version 3) for the calling thread.
            let got = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
            assert_eq!(got, 0, "capget: {}", std::io::Error::last_os_error());
            data[0].effective &= !(1 << 19); // CAP_SYS_PTRACE
                                             // SAFETY: capset reads the header and two `Data`; it changes this thread only.
            let set = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
            assert_eq!(set, 0, "capset: {}", std::io::Error::last_os_error());
            look()
        })
        .join()
        .unwrap();
        assert_eq!(links, Err(Some(libc::EACCES)));
        assert!(!found);
        assert!(unreadable >= 1, "the child is counted as not looked into");
    }

    fn nix_write(fd: &OwnedFd, bytes: &[u8]) -> isize {
        // SAFETY: writes from a valid buffer of that length to our own fd.
        unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) }
    }
}
