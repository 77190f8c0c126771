//! The one way stackdump opens a file that a target process controls: its modules, their
//! separate debug files, its dump directory and what it wrote there (the CLI), and files named
//! on our command line that a target may have written (`compare`).
//!
//! A process can plant anything on a path we are about to open: a symlink to a file only root
//! may read (an absolute link seen through `/proc/PID/root` resolves against *our* root), a FIFO
//! (an ordinary open blocks until someone writes), a device (opening a tty or a tape has effects),
//! a sparse file of any size. So a file is
//!
//! 1. **resolved inside the target's root**: `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//!    from a descriptor of `/proc/PID/root`, so `..` and absolute symlinks stay inside it
//!    (Fedora's `.build-id/xx/yyyy.debug` are relative symlinks: links are followed, but only
//!    within the root). Where `openat2` does not exist (Linux < 5.6) the path is walked one
//!    component at a time refusing every symlink and `..`;
//! 2. **opened with the target's file-system credentials** when we are root and the target is
//!    not ([`FsCreds`], [`as_target`]): fsuid, fsgid and supplementary groups of this thread only,
//!    for the time of the open, so a file the target's user could not read is not read for it;
//! 3. **opened `O_PATH` first and checked with `fstat`** before anything else: only a regular file
//!    of at most the caller's size limit is then reopened for reading, through
//!    `/proc/thread-self/fd/N` (not `self`: the library's dump thread has an fd table of its own)
//!    with `O_RDONLY | O_NOCTTY | O_NONBLOCK`. A FIFO or a device is never opened for reading or
//!    writing, so it can neither block us nor see an open.
//!
//! A module that is still mapped is best opened through `/proc/PID/map_files/START-END` (that
//! is exactly the mapped file, whatever was renamed over its path since); [`open_untrusted`]
//! accepts those paths too, and applies step 3 to them.
//!
//! The dump directory of `stackdump dump` is stricter still ([`TargetRoot::open_dir`],
//! [`open_file`]): no symlink at all, files owned by the target's user.

use crate::escape::Esc;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

/// Why a path in the target's file system could not be opened safely.
#[derive(Debug, thiserror::Error)]
pub enum SafeOpenError {
    #[error("{} is or goes through a symlink, which stackdump does not follow in a target's file system", Esc(.path))]
    Symlink { path: String },
    #[error("{} does not exist", Esc(.path))]
    NotFound { path: String },
    #[error("{} is not a directory", Esc(.path))]
    NotADirectory { path: String },
    #[error("{} is {kind}, not a regular file", Esc(.path))]
    NotRegular { path: String, kind: &'static str },
    #[error("{} is owned by uid {owner}, not by the target's user: not read", Esc(.path))]
    WrongOwner { path: String, owner: u32 },
    #[error("{}: {what}", Esc(.path))]
    Refused { path: String, what: &'static str },
    #[error("{}: {source}", Esc(.path))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl SafeOpenError {
    fn from_errno(path: &str, e: Errno) -> SafeOpenError {
        let path = path.to_string();
        match e {
            Errno::ELOOP => SafeOpenError::Symlink { path },
            Errno::ENOENT => SafeOpenError::NotFound { path },
            Errno::ENOTDIR => SafeOpenError::NotADirectory { path },
            Errno::EXDEV => SafeOpenError::Refused {
                path,
                what: "leaves the target's root",
            },
            other => SafeOpenError::Io {
                path,
                source: std::io::Error::from(other),
            },
        }
    }
}

/// How paths are resolved; `Walk` is the fallback without `openat2`, selectable for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Openat2,
    Walk,
}

/// A descriptor of a target's root directory.
#[derive(Debug)]
pub struct TargetRoot {
    root: OwnedFd,
    method: Method,
}

impl TargetRoot {
    /// Open `/proc/PID/root` (needs the same permission as reading its memory maps).
    pub fn open(pid: i32) -> Result<TargetRoot, SafeOpenError> {
        Self::open_path(&format!("/proc/{pid}/root"))
    }

    /// Use any directory as the root (tests; `/` for our own file system).
    pub fn open_path(path: &str) -> Result<TargetRoot, SafeOpenError> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SafeOpenError::from_errno(path, e))?;
        let method = match std::env::var("STACKDUMP_TEST_NO_OPENAT2").as_deref() {
            Ok("1") => Method::Walk,
            _ => Method::Openat2,
        };
        Ok(TargetRoot { root, method })
    }

    #[cfg(test)]
    pub fn with_method(mut self, method: Method) -> TargetRoot {
        self.method = method;
        self
    }

    /// Open a directory given as an absolute path inside the target's root, for listing.
    pub fn open_dir(&self, path: &str) -> Result<OwnedFd, SafeOpenError> {
        if self.method == Method::Openat2 {
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
            match openat2(self.root.as_fd(), path, how) {
                Ok(fd) => return Ok(fd),
                // No openat2 here (or a flag it does not know): walk instead.
                Err(Errno::ENOSYS) | Err(Errno::EINVAL) | Err(Errno::E2BIG) | Err(Errno::EPERM) => {
                }
                Err(e) => return Err(SafeOpenError::from_errno(path, e)),
            }
        }
        self.walk_dir(path)
    }

    /// The fallback: one component at a time, never following a symlink, refusing `..`.
    fn walk_dir(&self, path: &str) -> Result<OwnedFd, SafeOpenError> {
        let mut cur: OwnedFd = self.root.try_clone().map_err(|e| SafeOpenError::Io {
            path: path.to_string(),
            source: e,
        })?;
        let mut walked = String::new();
        for comp in Path::new(path).components() {
            let name = match comp {
                Component::RootDir | Component::CurDir => continue,
                Component::ParentDir => {
                    return Err(SafeOpenError::Refused {
                        path: path.to_string(),
                        what: "contains `..`",
                    })
                }
                Component::Normal(n) => n,
                Component::Prefix(_) => unreachable!("no prefixes on Linux"),
            };
            walked.push('/');
            walked.push_str(&name.to_string_lossy());
            let fd = openat(
                cur.as_fd(),
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SafeOpenError::from_errno(&walked, e))?;
            let st = fstat(&fd).map_err(|e| SafeOpenError::from_errno(&walked, e))?;
            match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFDIR => cur = fd,
                SFlag::S_IFLNK => return Err(SafeOpenError::Symlink { path: walked }),
                _ => return Err(SafeOpenError::NotADirectory { path: walked }),
            }
        }
        openat(
            cur.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SafeOpenError::from_errno(path, e))
    }
}

/// List the names in a directory opened with [`TargetRoot::open_dir`].
pub fn list_dir(dir: BorrowedFd<'_>) -> std::io::Result<Vec<String>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy();
        if name != "." && name != ".." {
            names.push(name.into_owned());
        }
    }
    Ok(names)
}

/// Open `name` (a single component) in `dir` for reading: no symlink, must be a regular file,
/// owned by one of `owners` when given. `shown` is the path to name in messages.
pub fn open_file(
    dir: BorrowedFd<'_>,
    name: &str,
    owners: Option<&[u32]>,
    shown: &str,
) -> Result<File, SafeOpenError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(SafeOpenError::Refused {
            path: shown.to_string(),
            what: "not a plain file name",
        });
    }
    // O_PATH first: a FIFO or a device planted under a dump's name is never opened.
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = match openat2(dir, name, how) {
        Ok(fd) => fd,
        Err(Errno::ENOSYS) | Err(Errno::EINVAL) | Err(Errno::E2BIG) | Err(Errno::EPERM) => {
            openat(dir, name, flags, Mode::empty())
                .map_err(|e| SafeOpenError::from_errno(shown, e))?
        }
        Err(e) => return Err(SafeOpenError::from_errno(shown, e)),
    };
    let st = fstat(&fd).map_err(|e| SafeOpenError::from_errno(shown, e))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
        return Err(SafeOpenError::Symlink {
            path: shown.to_string(),
        });
    }
    if let Some(owners) = owners {
        if !owners.contains(&st.st_uid) {
            return Err(SafeOpenError::WrongOwner {
                path: shown.to_string(),
                owner: st.st_uid,
            });
        }
    }
    let file = reopen_regular(fd, u64::MAX, shown)?;
    // Back to blocking reads: it is a regular file.
    let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_RDONLY));
    Ok(file)
}

/// Read a file opened with [`open_file`], at most `limit` bytes.
pub fn read_limited(file: File, limit: u64, shown: &str) -> Result<Vec<u8>, SafeOpenError> {
    // Room for the size the file states (one byte more, to see it end): `Take` gives
    // `read_to_end` no size hint, which then started with 32 bytes and grew by doubling,
    // copying what it had each time (a 4.5 MB dump: 4 ms instead of 1).
    let stated = file.metadata().map_or(0, |m| m.len()).min(limit);
    let mut buf = Vec::with_capacity(usize::try_from(stated).unwrap_or(0).saturating_add(1));
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| SafeOpenError::Io {
            path: shown.to_string(),
            source: e,
        })?;
    if buf.len() as u64 > limit {
        return Err(SafeOpenError::Refused {
            path: shown.to_string(),
            what: "larger than the size limit for a dump",
        });
    }
    Ok(buf)
}

/// `/proc/thread-self/fd/N` for a descriptor (to watch it with inotify, or name it in messages).
pub fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/thread-self/fd/{}", fd.as_raw_fd())
}

/// The largest module or debug file opened for a target (they are mapped, and only the sections
/// that are needed are read; the limit bounds what a sparse file can claim).
pub const MAX_MODULE_BYTES: u64 = 8 << 30;

/// The file-system credentials of a process: whom the kernel checks file access for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsCreds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl FsCreds {
    /// The credentials of process `pid` (its `Uid:`/`Gid:` fs fields and `Groups:`).
    pub fn of_process(pid: i32) -> Option<FsCreds> {
        let text = crate::kernel::proc::read_proc_text(format!("/proc/{pid}/status")).ok()?;
        FsCreds::parse_status(&text)
    }

    /// Parse the `Uid:`, `Gid:` and `Groups:` lines of a `/proc/PID/status`.
    pub fn parse_status(text: &str) -> Option<FsCreds> {
        let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key));
        // Real, effective, saved, file system: the last is what file access is checked for.
        let fs = |key: &str| -> Option<u32> { field(key)?.split_whitespace().nth(3)?.parse().ok() };
        let groups = field("Groups:")
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect();
        Some(FsCreds {
            uid: fs("Uid:")?,
            gid: fs("Gid:")?,
            groups,
        })
    }
}

/// The credentials each process had when we first looked at it (see [`remember_creds`]).
static SEEN: std::sync::Mutex<Vec<(i32, FsCreds)>> = std::sync::Mutex::new(Vec::new());

/// Remember the credentials of process `pid` now, before its memory maps are read: every later
/// open on its behalf uses them, and is refused if the process has changed them since (it
/// exec'ed a setuid program, or another process got its pid), so paths taken from its maps
/// are never opened with rights it did not have then.
pub fn remember_creds(pid: i32) -> Option<FsCreds> {
    let now = FsCreds::of_process(pid)?;
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    seen.retain(|(p, _)| *p != pid);
    seen.push((pid, now.clone()));
    Some(now)
}

/// The credentials to open files of process `pid` with: the remembered ones, if it still has
/// them (remembered now when it was never looked at).
fn creds_for(pid: i32, shown: &str) -> Result<FsCreds, SafeOpenError> {
    let gone = || SafeOpenError::Refused {
        path: shown.to_string(),
        what: "the process's credentials cannot be read (it is gone?)",
    };
    let now = FsCreds::of_process(pid).ok_or_else(gone)?;
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    match seen.iter().find(|(p, _)| *p == pid) {
        Some((_, then)) if *then != now => Err(SafeOpenError::Refused {
            path: shown.to_string(),
            what: "the process changed its credentials since it was first looked at: not opened",
        }),
        Some(_) => Ok(now),
        None => {
            seen.push((pid, now.clone()));
            Ok(now)
        }
    }
}

/// Our own effective uid.
fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Restores this thread's file-system credentials when dropped.
struct CredGuard {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<libc::gid_t>,
}

impl Drop for CredGuard {
    fn drop(&mut self) {
        // SAFETY: raw setfsuid/setfsgid/setgroups change the credentials of this thread only
        // (glibc's setgroups would change every thread's: the raw call is what we want); the
        // group list is a valid array of `len` gids that outlives the call.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, self.fsuid);
            libc::syscall(libc::SYS_setfsgid, self.fsgid);
            libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr());
        }
    }
}

/// Run `f` with the file-system credentials `creds` on this thread, then restore ours.
///
/// Only root changes anything: a user other than root cannot take another user's fsuid, and
/// reads with no more than its own rights anyway. When `creds` are root's too, nothing
/// changes. If the change cannot be made, `f` is not run (the file is not opened as root).
pub fn as_target<T>(
    creds: Option<&FsCreds>,
    f: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let Some(c) = creds else { return f() };
    if euid() != 0 || (c.uid == 0 && c.gid == 0) {
        return f();
    }
    // SAFETY: getgroups with size 0 only returns the count; the second call writes at most
    // `n` gids into a buffer of that many.
    let groups = unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        let mut g = vec![0 as libc::gid_t; n.max(0) as usize];
        let got = libc::getgroups(g.len() as libc::c_int, g.as_mut_ptr());
        g.truncate(got.max(0) as usize);
        g
    };
    // SAFETY: setfsuid/setfsgid(-1) fail on purpose and only return the current value.
    let (fsuid, fsgid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
            libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
        )
    };
    let guard = CredGuard {
        fsuid,
        fsgid,
        groups,
    };
    let refused = || {
        std::io::Error::other(
            "cannot take the target user's rights to open its files (setgroups/setfsgid/setfsuid \
             refused: no CAP_SETGID/CAP_SETUID here?), so they are not opened as root",
        )
    };
    // SAFETY: as in CredGuard::drop: this thread's credentials only; `c.groups` is a valid
    // array of its length. Groups first, then the fs gid and uid (the fs uid change drops
    // the file capabilities, CAP_DAC_OVERRIDE and the like, until it is restored).
    unsafe {
        if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) != 0 {
            return Err(refused());
        }
        libc::syscall(libc::SYS_setfsgid, c.gid);
        libc::syscall(libc::SYS_setfsuid, c.uid);
        if libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 != c.gid
            || libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 != c.uid
        {
            return Err(refused());
        }
    }
    let out = f();
    drop(guard);
    out
}

/// Reopen an `O_PATH` descriptor for reading if, and only if, it is a regular file of at most
/// `limit` bytes: a FIFO, a device, a socket or a directory is never opened.
fn reopen_regular(fd: OwnedFd, limit: u64, shown: &str) -> Result<File, SafeOpenError> {
    let st = fstat(&fd).map_err(|e| SafeOpenError::from_errno(shown, e))?;
    let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => None,
        SFlag::S_IFIFO => Some("a FIFO"),
        SFlag::S_IFCHR | SFlag::S_IFBLK => Some("a device"),
        SFlag::S_IFSOCK => Some("a socket"),
        SFlag::S_IFDIR => Some("a directory"),
        SFlag::S_IFLNK => Some("a symbolic link"),
        _ => Some("a special file"),
    };
    if let Some(kind) = kind {
        return Err(SafeOpenError::NotRegular {
            path: shown.to_string(),
            kind,
        });
    }
    if st.st_size as u64 > limit {
        return Err(SafeOpenError::Refused {
            path: shown.to_string(),
            what: "larger than stackdump reads for a target",
        });
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match nix::fcntl::open(fd_path(fd.as_fd()).as_str(), flags, Mode::empty()) {
        Ok(f) => f,
        // No /proc (inside a host that has none): a regular file cannot turn into anything
        // else, but its path might have been swapped since; the fstat below says.
        Err(Errno::ENOENT) => return Err(SafeOpenError::from_errno(shown, Errno::ENOENT)),
        Err(e) => return Err(SafeOpenError::from_errno(shown, e)),
    };
    let again = fstat(&file).map_err(|e| SafeOpenError::from_errno(shown, e))?;
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
        return Err(SafeOpenError::Refused {
            path: shown.to_string(),
            what: "changed while it was opened",
        });
    }
    Ok(File::from(file))
}

impl TargetRoot {
    /// Open the regular file at `path` (absolute, inside this root) for reading, at most
    /// `limit` bytes, with `creds` (see the module doc). Symlinks are followed inside the root.
    pub fn open_regular(
        &self,
        path: &str,
        limit: u64,
        creds: Option<&FsCreds>,
    ) -> Result<File, SafeOpenError> {
        let io = |e: std::io::Error| match e.raw_os_error() {
            Some(n) => SafeOpenError::from_errno(path, Errno::from_raw(n)),
            None => SafeOpenError::Io {
                path: path.to_string(),
                source: e,
            },
        };
        let mut out = None;
        as_target(creds, || {
            out = Some(
                self.resolve(path)
                    .and_then(|fd| reopen_regular(fd, limit, path)),
            );
            Ok(())
        })
        .map_err(io)?;
        out.expect("as_target ran the open")
    }

    /// An `O_PATH` descriptor of `path` inside the root.
    fn resolve(&self, path: &str) -> Result<OwnedFd, SafeOpenError> {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            return Err(SafeOpenError::NotRegular {
                path: path.to_string(),
                kind: "the root directory",
            });
        }
        if self.method == Method::Openat2 {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match openat2(self.root.as_fd(), rel, how) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOSYS) | Err(Errno::EINVAL) | Err(Errno::E2BIG) | Err(Errno::EPERM) => {
                }
                Err(e) => return Err(SafeOpenError::from_errno(path, e)),
            }
        }
        // The walk: every directory without following a link, then the file itself O_NOFOLLOW.
        let (dir, name) = match rel.rsplit_once('/') {
            Some((d, n)) => (self.walk_dir(&format!("/{d}"))?, n),
            None => (self.walk_dir("/")?, rel),
        };
        if name == ".." || name == "." {
            return Err(SafeOpenError::Refused {
                path: path.to_string(),
                what: "contains `..`",
            });
        }
        openat(
            dir.as_fd(),
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SafeOpenError::from_errno(path, e))
    }
}

/// Open a file a target controls, for reading, at most `limit` bytes, by the path the
/// symbolizer and the unwinder name it with:
///
/// - `/proc/PID/root/REST`: REST inside PID's root, with PID's file-system credentials;
/// - `/proc/PID/map_files/START-END` (or `/proc/self/...`): the file mapped there;
/// - any other absolute path: from our own root, magic links refused (the library inside its
///   own process; files named on our command line).
///
/// In every case only a regular file is opened (see the module doc).
pub fn open_untrusted(path: &Path, limit: u64) -> std::io::Result<File> {
    open_untrusted_why(path, limit).map_err(|e| match e {
        SafeOpenError::Io { source, .. } => source,
        SafeOpenError::NotFound { .. } => std::io::Error::from_raw_os_error(libc::ENOENT),
        other => std::io::Error::other(other.to_string()),
    })
}

/// [`open_untrusted`], saying why a file was refused.
pub fn open_untrusted_why(path: &Path, limit: u64) -> Result<File, SafeOpenError> {
    let shown = path.to_string_lossy();
    if let Some((proc_dir, rest)) = split_proc(&shown) {
        if let Some(inner) = rest.strip_prefix("root/") {
            let root = TargetRoot::open_path(&format!("{proc_dir}/root"))?;
            let pid = proc_dir
                .strip_prefix("/proc/")
                .and_then(|p| p.parse::<i32>().ok());
            let creds = match pid {
                Some(p) => Some(creds_for(p, &shown)?),
                None => None, // /proc/self: ourselves
            };
            return root.open_regular(&format!("/{inner}"), limit, creds.as_ref());
        }
        if rest.starts_with("map_files/") {
            let fd = nix::fcntl::open(
                shown.as_ref(),
                OFlag::O_PATH | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SafeOpenError::from_errno(&shown, e))?;
            return reopen_regular(fd, limit, &shown);
        }
    }
    let root = TargetRoot::open_path("/")?;
    let absolute = if path.is_absolute() {
        shown.into_owned()
    } else {
        let cwd = std::env::current_dir().map_err(|source| SafeOpenError::Io {
            path: shown.to_string(),
            source,
        })?;
        cwd.join(path).to_string_lossy().into_owned()
    };
    root.open_regular(&absolute, limit, None)
}

/// `("/proc/PID", "rest")` for `/proc/PID/rest` and `/proc/self/rest`.
fn split_proc(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/proc/")?;
    let (who, rest) = after.split_once('/')?;
    (who == "self" || who.bytes().all(|b| b.is_ascii_digit()))
        .then(|| (&path[..6 + who.len()], rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("stackdump-rootfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root/tmp/real")).unwrap();
        d
    }

    fn check(method: Method) {
        let d = scratch(&format!("{method:?}"));
        let rootp = d.join("root");
        std::fs::write(d.join("secret"), "secret").unwrap();
        std::fs::write(rootp.join("tmp/real/dump.txt"), "dump").unwrap();
        symlink(d.join("secret"), rootp.join("tmp/real/planted.txt")).unwrap();
        symlink("/tmp/real", rootp.join("tmp/link")).unwrap();
        symlink("real", rootp.join("tmp/rel")).unwrap();
        std::os::unix::net::UnixListener::bind(rootp.join("tmp/real/sock")).unwrap();
        let root = TargetRoot::open_path(rootp.to_str().unwrap())
            .unwrap()
            .with_method(method);

        let dir = root.open_dir("/tmp/real").unwrap();
        let mut names = list_dir(dir.as_fd()).unwrap();
        names.sort();
        assert_eq!(names, ["dump.txt", "planted.txt", "sock"]);
        let f = open_file(dir.as_fd(), "dump.txt", None, "dump.txt").unwrap();
        assert_eq!(read_limited(f, 100, "x").unwrap(), b"dump");
        // The planted symlink is not followed.
        assert!(matches!(
            open_file(dir.as_fd(), "planted.txt", None, "p"),
            Err(SafeOpenError::Symlink { .. })
        ));
        assert!(matches!(
            open_file(dir.as_fd(), "sock", None, "s"),
            Err(SafeOpenError::NotRegular { .. }) | Err(SafeOpenError::Io { .. })
        ));
        assert!(matches!(
            open_file(dir.as_fd(), "../secret", None, "s"),
            Err(SafeOpenError::Refused { .. })
        ));
        // Owner check.
        let me = nix::unistd::geteuid().as_raw();
        assert!(open_file(dir.as_fd(), "dump.txt", Some(&[me]), "d").is_ok());
        assert!(matches!(
            open_file(dir.as_fd(), "dump.txt", Some(&[me + 1]), "d"),
            Err(SafeOpenError::WrongOwner { .. })
        ));
        // Symlinked directories, absolute or relative, are not followed.
        for p in ["/tmp/link", "/tmp/rel", "/tmp/link/", "/tmp/rel/x"] {
            assert!(
                matches!(root.open_dir(p), Err(SafeOpenError::Symlink { .. })),
                "{p}: {:?}",
                root.open_dir(p)
            );
        }
        assert!(matches!(
            root.open_dir("/tmp/none"),
            Err(SafeOpenError::NotFound { .. })
        ));
        assert!(matches!(
            root.open_dir("/tmp/real/dump.txt"),
            Err(SafeOpenError::NotADirectory { .. })
        ));
        // `..` cannot leave the root.
        match root.open_dir("/../../..") {
            Ok(fd) => {
                let mut n = list_dir(fd.as_fd()).unwrap();
                n.sort();
                assert_eq!(n, ["tmp"], "resolved inside the root");
            }
            Err(SafeOpenError::Refused { .. }) => assert_eq!(method, Method::Walk),
            Err(e) => panic!("{e}"),
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A target's file: resolved inside its root (absolute and relative links too), a regular
    /// file only (a FIFO does not block, a device is not opened), size-capped.
    fn check_regular(method: Method) {
        let d = scratch(&format!("regular-{method:?}"));
        let rootp = d.join("root");
        std::fs::write(d.join("secret"), "outside").unwrap();
        std::fs::write(rootp.join("secret"), "inside").unwrap();
        std::fs::write(rootp.join("tmp/real/lib.so"), "library").unwrap();
        symlink(d.join("secret"), rootp.join("tmp/host")).unwrap();
        symlink("/secret", rootp.join("tmp/abs")).unwrap();
        symlink("../../../../../../secret", rootp.join("tmp/rel")).unwrap();
        symlink("/proc/self/root/etc/hostname", rootp.join("tmp/magic")).unwrap();
        let fifo = rootp.join("tmp/fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let root = TargetRoot::open_path(rootp.to_str().unwrap())
            .unwrap()
            .with_method(method);
        let read = |p: &str, limit: u64| -> Result<String, SafeOpenError> {
            let mut s = String::new();
            root.open_regular(p, limit, None)?
                .read_to_string(&mut s)
                .unwrap();
            Ok(s)
        };
        assert_eq!(read("/tmp/real/lib.so", 100).unwrap(), "library");
        assert!(matches!(
            read("/tmp/real/lib.so", 3),
            Err(SafeOpenError::Refused { .. })
        ));
        assert!(matches!(
            read("/tmp/fifo", 100),
            Err(SafeOpenError::NotRegular { .. })
        ));
        assert!(matches!(
            read("/tmp/real", 100),
            Err(SafeOpenError::NotRegular { .. })
        ));
        match method {
            // Links are followed, inside the root only.
            Method::Openat2 => {
                assert_eq!(read("/tmp/abs", 100).unwrap(), "inside");
                assert!(matches!(
                    read("/tmp/host", 100),
                    Err(SafeOpenError::NotFound { .. })
                ));
                assert_eq!(read("/tmp/rel", 100).unwrap(), "inside");
                assert!(read("/tmp/magic", 100).is_err(), "magic links are refused");
                assert_eq!(read("/../../secret", 100).unwrap(), "inside");
            }
            // Without openat2, no link at all.
            Method::Walk => {
                for p in ["/tmp/abs", "/tmp/rel", "/tmp/magic", "/tmp/host"] {
                    assert!(read(p, 100).is_err(), "{p}");
                }
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_targets_file_is_a_regular_file_inside_its_root() {
        check_regular(Method::Openat2);
        check_regular(Method::Walk);
    }

    #[test]
    fn devices_and_fifos_are_never_opened_by_path_form() {
        // A device: refused before it is opened for reading (O_PATH, then fstat).
        assert!(open_untrusted(Path::new("/dev/null"), 100).is_err());
        assert!(open_untrusted(Path::new("/proc/self/root/dev/null"), 100).is_err());
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let inside = format!("/proc/{}/root{}", std::process::id(), me.display());
        assert!(open_untrusted(Path::new(&inside), MAX_MODULE_BYTES).is_ok());
        assert!(open_untrusted(&me, MAX_MODULE_BYTES).is_ok());
    }

    #[test]
    fn fs_credentials_come_from_the_status_file() {
        let status =
            "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nGroups:\t4 24 27 \n";
        assert_eq!(
            FsCreds::parse_status(status),
            Some(FsCreds {
                uid: 1003,
                gid: 53,
                groups: vec![4, 24, 27]
            })
        );
        assert_eq!(FsCreds::parse_status("Name:\tx\n"), None);
    }

    /// As root, a file only root may read is not opened with another user's credentials, and
    /// ours are back afterwards.
    #[test]
    fn a_root_only_file_is_not_read_for_another_user() {
        if euid() != 0 {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let d = scratch("creds");
        let secret = d.join("root/secret");
        std::fs::write(&secret, "secret").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let root = TargetRoot::open_path(d.join("root").to_str().unwrap()).unwrap();
        let nobody = FsCreds {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        assert!(root.open_regular("/secret", 100, Some(&nobody)).is_err());
        assert!(root.open_regular("/secret", 100, None).is_ok());
        let root_creds = FsCreds {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        assert!(root.open_regular("/secret", 100, Some(&root_creds)).is_ok());
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(root.open_regular("/secret", 100, Some(&nobody)).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Files of a process are opened with the rights it had when first looked at; once it has
    /// others (an exec of a setuid program, its pid reused), not at all.
    #[test]
    fn a_process_that_changed_its_credentials_gets_nothing_opened() {
        let me = std::process::id() as i32;
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let inside = format!("/proc/{me}/root{}", exe.display());
        remember_creds(me).unwrap();
        assert!(open_untrusted_why(Path::new(&inside), MAX_MODULE_BYTES).is_ok());
        {
            let mut seen = SEEN.lock().unwrap();
            let entry = seen.iter_mut().find(|(p, _)| *p == me).unwrap();
            entry.1.uid = entry.1.uid.wrapping_add(1);
        }
        let e = open_untrusted_why(Path::new(&inside), MAX_MODULE_BYTES).unwrap_err();
        assert!(e.to_string().contains("changed its credentials"), "{e}");
        remember_creds(me).unwrap();
        assert!(open_untrusted_why(Path::new(&inside), MAX_MODULE_BYTES).is_ok());
    }

    #[test]
    fn messages_show_target_paths_escaped() {
        let e = SafeOpenError::NotFound {
            path: "/tmp/\nstackdump: FORGED\x1b[2K".into(),
        };
        let shown = e.to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\x1b'),
            "{shown:?}"
        );
        assert!(shown.contains("\\nstackdump: FORGED\\e[2K"), "{shown:?}");
    }

    #[test]
    fn openat2_never_follows_symlinks() {
        check(Method::Openat2);
    }

    #[test]
    fn the_component_walk_never_follows_symlinks() {
        check(Method::Walk);
    }
}
