//! `stackdump dump --out DIR`: a private directory for copies of dumps, made and used without
//! following links planted by someone else.
//!
//! `stackdump` often runs as root, and a dump shows everything a process was doing (argv, file
//! names, addresses): its copies must not be readable by others, and a symlink planted at DIR
//! (or at a missing component of it, in a directory others can write, such as `/tmp`) must not
//! make root create or write files elsewhere.
//!
//! - Each missing component is created with `mkdirat(…, 0700)` and opened with
//!   `O_NOFOLLOW | O_DIRECTORY`; an existing component that is a symlink is followed only when
//!   the directory holding it is trusted (owned by root or by us, writable by nobody else), and
//!   never for the last component.
//! - The directory itself must be ours (owned by our effective uid) and writable by nobody else
//!   (no group or other write bit; a sticky bit does not make it private). Anything else is
//!   refused (exit 2, [`UsageError`]): choose another `--out`, or fix the directory.
//! - Files are written through the directory's fd: created `O_CREAT | O_EXCL | O_NOFOLLOW`
//!   with mode 0600 under a temporary name, fsync'd, then renamed with `renameat2(…,
//!   RENAME_NOREPLACE)`: a swap of the directory after the check does not redirect them, and
//!   nothing that is there already is replaced.

use crate::exit::UsageError;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

fn open_at(dir: libc::c_int, name: &CString, follow: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: name is NUL-terminated; dir is an open directory fd or AT_FDCWD.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid, writable stat.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn lstat_at(dir: libc::c_int, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated; dir is an open directory fd; st is writable.
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Owned by root or by us, writable by nobody else.
fn trusted(st: &libc::stat) -> bool {
    (st.st_uid == 0 || st.st_uid == euid()) && st.st_mode & 0o022 == 0
}

fn refuse(msg: String) -> anyhow::Error {
    UsageError(msg).into()
}

/// The output directory, open.
pub struct OutDir {
    fd: OwnedFd,
    shown: String,
}

impl OutDir {
    /// Open `out` (creating what is missing, 0700), and check that it is private.
    pub fn open(out: &Path) -> anyhow::Result<OutDir> {
        let shown = stackdump_core::escape::bytes(out.as_os_str().as_bytes());
        let io_err = |what: &str, e: io::Error| {
            anyhow::Error::new(e).context(format!("{what} the output directory {shown}"))
        };
        let comps: Vec<Component<'_>> = out.components().collect();
        if comps.is_empty() {
            return Err(refuse("--out: an empty path".into()));
        }
        let dot = cstr(b".").map_err(|e| io_err("opening", e))?;
        let mut dir = match comps[0] {
            Component::RootDir => open_at(libc::AT_FDCWD, &cstr(b"/")?, true),
            _ => open_at(libc::AT_FDCWD, &dot, true),
        }
        .map_err(|e| io_err("opening", e))?;
        let last = comps
            .iter()
            .rposition(|c| matches!(c, Component::Normal(_)));
        for (i, comp) in comps.iter().enumerate() {
            let name = match comp {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
                Component::ParentDir => cstr(b"..")?,
                Component::Normal(n) => cstr(n.as_bytes())?,
            };
            let is_last = Some(i) == last;
            let next = match open_at(dir.as_raw_fd(), &name, false) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // SAFETY: name is NUL-terminated; dir is an open directory fd.
                    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) } < 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(io_err("creating", e));
                        }
                    }
                    open_at(dir.as_raw_fd(), &name, false).map_err(|e| io_err("opening", e))?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    let st = lstat_at(dir.as_raw_fd(), &name).map_err(|e| io_err("opening", e))?;
                    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                        return Err(refuse(format!(
                            "--out {shown}: {} is not a directory",
                            stackdump_core::escape::bytes(name.as_bytes())
                        )));
                    }
                    let parent = fstat(dir.as_raw_fd()).map_err(|e| io_err("opening", e))?;
                    if is_last || !trusted(&parent) {
                        return Err(refuse(format!(
                            "--out {shown}: {} is a symbolic link{}, and stackdump does not follow links into its output directory (someone else may have planted it); give the real path, or another directory",
                            stackdump_core::escape::bytes(name.as_bytes()),
                            if is_last { "" } else { " in a directory others can write" }
                        )));
                    }
                    // A link an administrator made in a directory only they can change.
                    open_at(dir.as_raw_fd(), &name, true).map_err(|e| io_err("opening", e))?
                }
                Err(e) => return Err(io_err("opening", e)),
            };
            dir = next;
        }
        let st = fstat(dir.as_raw_fd()).map_err(|e| io_err("checking", e))?;
        let me = euid();
        if st.st_uid != me {
            return Err(refuse(format!(
                "--out {shown} is owned by uid {}, not by us (uid {me}): dumps are written only into a directory of our own; choose another --out (a missing one is created, mode 0700)",
                st.st_uid
            )));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(refuse(format!(
                "--out {shown} is writable by {} (mode {:04o}): dumps are written only into a private directory; run `chmod go-w {shown}` or choose another --out",
                if st.st_mode & 0o002 != 0 { "everyone" } else { "its group" },
                st.st_mode & 0o7777
            )));
        }
        Ok(OutDir { fd: dir, shown })
    }

    /// The directory as given (escaped), for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// True when `name` exists in the directory (as anything, links included).
    pub fn exists(&self, name: &str) -> bool {
        cstr(name.as_bytes()).is_ok_and(|c| lstat_at(self.fd.as_raw_fd(), &c).is_ok())
    }

    /// Write `bytes` as `name`: a new file, mode 0600, under a temporary name first, renamed
    /// without replacing anything. Fails with `AlreadyExists` when `name` is taken.
    pub fn write_new(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let tmp = cstr(format!(".{name}.tmp{}", std::process::id()).as_bytes())?;
        let dest = cstr(name.as_bytes())?;
        let dir = self.fd.as_raw_fd();
        // SAFETY: tmp is NUL-terminated; dir is our open directory fd.
        let fd = unsafe {
            libc::openat(
                dir,
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us; File owns it from here.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let unlink_tmp = || {
            // SAFETY: tmp is NUL-terminated; dir is our open directory fd.
            unsafe { libc::unlinkat(dir, tmp.as_ptr(), 0) };
        };
        // SAFETY: fchmod on our own fd: exactly 0600 whatever the umask.
        let written = if unsafe { libc::fchmod(f.as_raw_fd(), 0o600) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            f.write_all(bytes).and_then(|()| f.sync_all())
        };
        drop(f);
        if let Err(e) = written {
            unlink_tmp();
            return Err(e);
        }
        // The system call, not glibc's wrapper (2.28): the release binaries run on older
        // glibc (docs/DEPLOY.md); ENOSYS from an old kernel is handled below.
        // SAFETY: both names are NUL-terminated; dir is our open directory fd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                dir,
                tmp.as_ptr(),
                dir,
                dest.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r < 0 {
            let mut e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
                // A file system without RENAME_NOREPLACE: a hard link fails on EEXIST too.
                // SAFETY: both names are NUL-terminated; dir is our open directory fd; flags
                // 0: the temporary file itself, not a link it could be.
                if unsafe { libc::linkat(dir, tmp.as_ptr(), dir, dest.as_ptr(), 0) } == 0 {
                    unlink_tmp();
                    return Ok(());
                }
                e = io::Error::last_os_error();
            }
            unlink_tmp();
            return Err(e);
        }
        Ok(())
    }
}
