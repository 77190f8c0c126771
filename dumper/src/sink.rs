//! Phase 3c: write the side files, atomically.
//!
//! Each file is created as `.stackdump-<pid>-<time>Z-<n>.<ext>.tmp` with O_CREAT|O_EXCL|
//! O_NOFOLLOW and mode 0600 (never on fds 0-2), written, fsync'd, then renamed to
//! `stackdump-<pid>-<time>Z[-r<request>].<ext>` without replacing anything. A reader sees a
//! complete file or none. When one dump serves several requests, each extra request gets a hard
//! link with its own `-r<id>` name. Nothing here touches a host fd.

use crate::sys;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// One file to write: extension (`json`, `txt`) and content.
pub struct Output<'a> {
    pub ext: &'static str,
    pub bytes: &'a [u8],
}

/// The final names, as written.
pub type Written = Vec<String>;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in file name"))
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid slice to our own fd.
        let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

fn fsync(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fsync on our own fd.
    if unsafe { libc::fsync(fd.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Write every output for one dump. `stem` is `stackdump-<pid>-<time>Z`; `requests` are the
/// request ids this dump serves (the first names the files, the others get links).
pub fn write(
    dir: &Path,
    stem: &str,
    requests: &[u32],
    outputs: &[Output<'_>],
) -> io::Result<Written> {
    let dirc = cstr(&dir.to_string_lossy())?;
    let dirfd = sys::open_dir(&dirc)?;
    let mut written = Vec::new();
    let primary = match requests.first() {
        Some(r) => format!("{stem}-r{r}"),
        None => stem.to_string(),
    };
    for out in outputs {
        let tmp = cstr(&format!(".{primary}.{}.tmp", out.ext))?;
        let fd = match sys::create_exclusive(&dirfd, &tmp) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A leftover of a dump that died mid-write (or a planted file): remove our
                // own temp name (unlinkat never follows symlinks) and try once more.
                sys::unlink(&dirfd, &tmp)?;
                sys::create_exclusive(&dirfd, &tmp)?
            }
            Err(e) => return Err(e),
        };
        let result = write_all(&fd, out.bytes).and_then(|()| fsync(&fd));
        drop(fd);
        let final_name = format!("{primary}.{}", out.ext);
        let finalc = cstr(&final_name)?;
        if let Err(e) = result.and_then(|()| sys::rename_noreplace(&dirfd, &tmp, &finalc)) {
            let _ = sys::unlink(&dirfd, &tmp);
            return Err(e);
        }
        written.push(final_name.clone());
        for r in requests.iter().skip(1) {
            let link = format!("{stem}-r{r}.{}", out.ext);
            if sys::link(&dirfd, &finalc, &cstr(&link)?).is_ok() {
                written.push(link);
            }
        }
    }
    // Make the renames durable too.
    let _ = fsync(&dirfd);
    Ok(written)
}
