//! Thin wrappers over the raw system calls the dump thread needs and std does not offer.
//! Dump thread only: nothing here is called from a signal handler (that code is in `sigctx`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Sleep on `word` while it equals `expected`, at most `timeout` (spurious wakeups allowed).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word` and sleeps; `tsp` is null or points
    // to a timespec that outlives the call. Errors (EAGAIN: value changed, ETIMEDOUT, EINTR) all
    // mean "go and look again", so the result is ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        );
    }
}

/// The kernel's `sigset_t` size (64 signals), which `rt_sigtimedwait` insists on.
const KERNEL_SIGSET_SIZE: usize = 8;

/// Wait, without a timeout, for one of the signals in `set` (all blocked by the calling thread)
/// and take it: `rt_sigtimedwait(set, &info, NULL, 8)`. Nothing runs a handler for it.
///
/// `note` goes in the system call's fifth argument register, which `rt_sigtimedwait` (four
/// arguments) ignores; `/proc/PID/task/TID/syscall` shows all six argument registers, so a
/// sleeping caller can be seen from outside together with the number it passed. The dump
/// thread passes the number of triggers it has served: the tests' handshake.
pub fn sigwait(
    set: &libc::sigset_t,
    note: u64,
    timeout: Option<Duration>,
) -> io::Result<libc::siginfo_t> {
    // SAFETY: an all-zero siginfo_t is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the kernel reads KERNEL_SIGSET_SIZE bytes of `set` (a libc sigset_t is at least
    // that large), reads the timespec when there is one, and writes one siginfo_t into `info`;
    // all outlive the call. A null timeout means wait forever (EAGAIN when a timeout expires).
    // The fifth argument is not read by the kernel.
    check(unsafe {
        libc::syscall(
            libc::SYS_rt_sigtimedwait,
            set as *const libc::sigset_t,
            &mut info as *mut libc::siginfo_t,
            ts_ptr,
            KERNEL_SIGSET_SIZE,
            note,
        )
    })?;
    Ok(info)
}

/// Send `signo` to thread `tid` of process `tgid` with an SI_QUEUE value (`rt_tgsigqueueinfo`).
pub fn tg_sigqueue(tgid: i32, tid: i32, signo: i32, value: u64) -> io::Result<()> {
    stackdump_core::kernel::signals::tg_sigqueue(tgid, tid, signo, tgid, value)
}

/// True when thread `tid` of `tgid` still exists (`tgkill(tgid, tid, 0)`).
pub fn thread_alive(tgid: i32, tid: i32) -> bool {
    // SAFETY: signal 0 performs only the existence and permission checks.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The handler currently installed for `signo` (its `sa_sigaction`), or None for SIG_DFL/IGN.
pub fn current_handler(signo: i32) -> Option<usize> {
    // SAFETY: a zeroed sigaction is a valid out-parameter; a null `act` only queries.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    let r = unsafe { libc::sigaction(signo, std::ptr::null(), &mut old) };
    (r == 0 && old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN)
        .then_some(old.sa_sigaction)
}

/// Milliseconds since the Unix epoch (CLOCK_REALTIME).
pub fn now_unix_millis() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// Move `fd` to a number above 2 (a host that closed 0-2 must not find our files there).
fn above_stdio(fd: RawFd) -> io::Result<OwnedFd> {
    if fd > 2 {
        // SAFETY: fd was just returned by the kernel to us and is owned by nobody else.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates our own fd to the lowest free number >= 3.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    // SAFETY: closing the low-numbered fd we own.
    unsafe { libc::close(fd) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup is a fresh fd owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Open a directory for *at calls (O_DIRECTORY | O_CLOEXEC, never on fds 0-2).
pub fn open_dir(path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: path is NUL-terminated.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    above_stdio(fd)
}

/// Create a new file `name` in `dir`: O_CREAT|O_EXCL|O_NOFOLLOW, mode exactly 0600.
pub fn create_exclusive(dir: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; dir is an open directory fd.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = above_stdio(fd)?;
    // SAFETY: fchmod on our own fd; sets exactly 0600 whatever the umask.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Rename `from` to `to` inside `dir`, failing with EEXIST instead of replacing.
pub fn rename_noreplace(dir: &OwnedFd, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; dir is an open directory fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dir.as_raw_fd(),
            from.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    match check(r) {
        Ok(_) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) =>
        {
            // File systems without RENAME_NOREPLACE: link (fails on EEXIST) then unlink.
            link(dir, from, to)?;
            unlink(dir, from)
        }
        Err(e) => Err(e),
    }
}

/// Hard-link `from` to `to` inside `dir` (fails with EEXIST).
pub fn link(dir: &OwnedFd, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; dir is an open directory fd; flags 0: no follow.
    let r = unsafe {
        libc::linkat(
            dir.as_raw_fd(),
            from.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            0,
        )
    };
    check(r as libc::c_long).map(|_| ())
}

/// Remove `name` from `dir`.
pub fn unlink(dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; dir is an open directory fd.
    let r = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    check(r as libc::c_long).map(|_| ())
}

/// True unless `kill(pid, 0)` says there is no such process (EPERM: it exists).
pub fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks the pid.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() != libc::ESRCH }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstat_at(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated; dir is an open directory fd; st is writable.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(r as libc::c_long).map(|_| st)
}

/// The names in a directory, with `getdents64` on our own fd (no `opendir`: the C library's
/// allocator may be the one the host is wedged in). `.` and `..` are left out.
pub fn list_dir(dir: &OwnedFd) -> io::Result<Vec<std::ffi::CString>> {
    // A duplicate: its own file position, read from the start.
    let path = std::ffi::CString::new(".").expect("no NUL");
    // SAFETY: "." is NUL-terminated; dir is an open directory fd.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            path.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = above_stdio(fd)?;
    let mut names = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: getdents64 writes at most buf.len() bytes into buf, which we own.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        let n = check(n)? as usize;
        if n == 0 {
            break;
        }
        let mut off = 0;
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        while off + 19 <= n {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 || off + reclen > n {
                break;
            }
            let name = &buf[off + 19..off + reclen];
            let len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            let name = &name[..len];
            if name != b"." && name != b".." {
                if let Ok(c) = std::ffi::CString::new(name) {
                    names.push(c);
                }
            }
            off += reclen;
        }
    }
    Ok(names)
}

/// The soft limit on open files (RLIMIT_NOFILE), which bounds our private fd table too.
pub fn nofile_soft_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Drop this process's mappings of the library's read-only, file-backed pages (its code,
/// read-only data, symbol and unwind tables) with `MADV_DONTNEED`, so that an idle dump thread
/// does not keep in the host's RSS the code its start-up, a state check or a dump ran (each
/// page touched maps a whole 64-128 KiB around it: about 1.7 MiB after start-up). The pages stay
/// in the page cache, shared with every other process that maps the library, and the next use
/// faults them back in (a minor fault per window, microseconds).
///
/// Only pages that are never written are dropped: those of `PT_LOAD` segments without write
/// permission (the relocated ones, `PT_GNU_RELRO` included, are all in writable segments), and
/// nothing when the library has text relocations. For a private file mapping never written,
/// `MADV_DONTNEED` only unmaps: the page reads back the same bytes from the file. (A library
/// file rewritten in place would corrupt it, but so it would the pages not touched yet. A page
/// a debugger or a uprobe wrote a breakpoint into, copied on write, would lose it: the caller
/// does this only while the process is young, before its first dump.)
/// Another thread running our code meanwhile (a signal handler) just faults the page back.
/// Reads the library's own program headers through `__ehdr_start`: no lock, no system call
/// besides the `madvise` calls.
pub fn release_clean_library_pages() {
    extern "C" {
        /// The ELF header of the object this code is linked into (defined by the linker).
        static __ehdr_start: libc::Elf64_Ehdr;
    }
    // SAFETY: __ehdr_start is the start of our own object's first PT_LOAD segment (at file
    // offset 0, mapped read-only for as long as the library is loaded); its program headers,
    // at e_phoff, lie in the same segment (GNU ld and lld both put them there).
    let (base, phdrs) = unsafe {
        let eh = &raw const __ehdr_start;
        let base = eh as usize;
        let phoff = (*eh).e_phoff as usize;
        let phnum = (*eh).e_phnum as usize;
        let phdrs = std::slice::from_raw_parts((base + phoff) as *const libc::Elf64_Phdr, phnum);
        (base, phdrs)
    };
    // The load bias: the segment that maps file offset 0 (holding the ELF header) is at `base`.
    let Some(first) = phdrs
        .iter()
        .find(|p| p.p_type == libc::PT_LOAD && p.p_offset == 0)
    else {
        return;
    };
    let bias = base.wrapping_sub(first.p_vaddr as usize);
    if has_text_relocations(phdrs, bias) {
        return;
    }
    // The kernel's page size (4 KiB on x86_64; 4, 16 or 64 KiB on aarch64): with a smaller
    // one assumed, a range rounded to it could end inside a page that also maps the writable
    // segment, which madvise would then drop (losing its writes). From the auxiliary vector:
    // no system call, no lock.
    // SAFETY: getauxval reads the auxiliary vector the kernel gave the process; no side effect.
    let page = unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize;
    if !page.is_power_of_two() {
        return;
    }
    for p in phdrs {
        if p.p_type != libc::PT_LOAD || p.p_flags & libc::PF_W != 0 {
            continue;
        }
        // Whole pages inside the segment only (a page shared with a neighbour is kept).
        let start = (bias + p.p_vaddr as usize).next_multiple_of(page);
        let end = (bias + (p.p_vaddr + p.p_filesz) as usize) & !(page - 1);
        if end > start {
            // SAFETY: [start, end) lies inside one of our read-only PT_LOAD segments, a private
            // file mapping never written (see above): dropping its pages only unmaps them.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

/// True when the dynamic section asks for text relocations (`DT_TEXTREL`, `DF_TEXTREL`): the
/// code pages were then written by the loader and must not be dropped.
fn has_text_relocations(phdrs: &[libc::Elf64_Phdr], bias: usize) -> bool {
    const DT_NULL: i64 = 0;
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 4;
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
        return true;
    };
    #[repr(C)]
    struct Elf64Dyn {
        d_tag: i64,
        d_un: u64,
    }
    let n = dynamic.p_memsz as usize / std::mem::size_of::<Elf64Dyn>();
    // SAFETY: PT_DYNAMIC of our own loaded object: `n` entries, mapped for the library's life.
    let entries = unsafe {
        std::slice::from_raw_parts((bias + dynamic.p_vaddr as usize) as *const Elf64Dyn, n)
    };
    for d in entries {
        match d.d_tag {
            DT_NULL => break,
            DT_TEXTREL => return true,
            DT_FLAGS if d.d_un & DF_TEXTREL != 0 => return true,
            _ => {}
        }
    }
    false
}

/// Map back the first page of each of these functions of ours (after
/// [`release_clean_library_pages`]): one read each. Zero addresses are skipped.
pub fn prefault_code(addrs: &[usize]) {
    for &a in addrs {
        if a != 0 {
            // SAFETY: `a` is the address of a function of this library, mapped readable and
            // executable for as long as the library is loaded; one byte is read.
            unsafe { std::ptr::read_volatile(a as *const u8) };
        }
    }
}

/// A thread's start routine, as `pthread_create` takes it.
pub type StartRoutine = extern "C" fn(*mut libc::c_void) -> *mut libc::c_void;

/// Start a detached thread running `start(arg)` on a stack of `stack` bytes: a bare
/// `pthread_create`, not `std::thread` (whose start registers a thread-local destructor, which
/// takes the loader's lock). The thread inherits the caller's signal mask and fd table. The
/// error number of `pthread_create` on failure (then `arg` was not handed over).
///
/// # Safety
/// `arg` must stay valid for as long as `start` uses it, and `start` must not unwind.
pub unsafe fn spawn_detached(stack: usize, start: StartRoutine, arg: *mut libc::c_void) -> i32 {
    // SAFETY: pthread_attr_t and pthread_t out-parameters initialized by the calls that take
    // them; `arg`'s validity is the caller's promise.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let mut r = libc::pthread_attr_init(&mut attr);
        if r == 0 {
            libc::pthread_attr_setstacksize(&mut attr, stack);
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            let mut thread: libc::pthread_t = 0;
            r = libc::pthread_create(&mut thread, &attr, start, arg);
            libc::pthread_attr_destroy(&mut attr);
        }
        r
    }
}
