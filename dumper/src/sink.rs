//! Phase 3c: write the side files, atomically.
//!
//! Each file is created under its temporary name (`.stackdump-<pid>-<time>Z[-r<request>].<ext>.tmp`,
//! [`DumpFileName::temp_name`]) with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600 (never on fds
//! 0-2), written (its writeback started at once, so that the next file is written meanwhile),
//! fsync'd, then renamed to its name (`stackdump-<pid>-<time>Z[-r<request>].<ext>`,
//! [`DumpFileName`]) without replacing anything. A reader sees a
//! complete file or none. When one dump serves several requests, each extra request gets a hard
//! link with its own `-r<id>` name. Nothing here touches a host fd.
//!
//! A dump that never finished (the host died, or was killed, mid-write) leaves its temporary
//! file behind. [`clean_leftovers`] removes those: only names of our temporary form
//! (`.stackdump-<pid>-….tmp`), of a pid that no longer exists, regular files (never
//! following a link) owned by our uid and untouched for [`LEFTOVER_AGE`]. The dump thread calls
//! it before its first dump and after a failed write (one directory scan then, none on the
//! usual dump), never from a signal handler.

use crate::sys;
use stackdump_core::model::dumpfile::{DumpFileName, DumpFormat};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// One file to write: its format (which names its extension) and what writes its content. The content is
/// streamed through a buffer into the temporary file: a dump of thousands of threads is never
/// held whole in memory as bytes.
pub struct Output<'a> {
    pub format: DumpFormat,
    pub content: &'a dyn Fn(&mut FileWriter<'_>) -> io::Result<()>,
}

/// What an [`Output`] writes into: a concrete type (not `dyn Write`), so that the serializer's
/// many small writes are inlined into the buffer.
pub type FileWriter<'a> = io::BufWriter<FdWriter<'a>>;

/// Buffer between the serializers and `write(2)`.
const WRITE_BUFFER: usize = 256 * 1024;

/// `io::Write` straight onto our fd (`write(2)`, retried on EINTR): no C library stdio, no
/// host allocator.
pub struct FdWriter<'a>(&'a OwnedFd);

impl io::Write for FdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: writing from a valid slice to our own fd.
            let n = unsafe { libc::write(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_content(fd: &OwnedFd, out: &Output<'_>) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(WRITE_BUFFER, FdWriter(fd));
    (out.content)(&mut w)?;
    io::Write::flush(&mut w)
}

/// The final names, as written.
pub type Written = Vec<String>;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in file name"))
}

/// Start writing `fd`'s pages to the disk without waiting (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`): the next file is serialized while this one's data travels, and the
/// `fsync` that follows finds it done. Advisory: an error changes nothing (the `fsync` does it).
fn start_writeback(fd: &OwnedFd) {
    // SAFETY: sync_file_range on our own fd, with integer arguments only.
    unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

fn fsync(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fsync on our own fd.
    if unsafe { libc::fsync(fd.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A temporary file is a leftover only when untouched for this long: a process in another pid
/// namespace that shares the directory may have the same pid number as a dead one of ours, and
/// a dump being written is written without pause.
pub const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// The pid in a temporary file name of ours (`.stackdump-<pid>-<time>Z….<ext>.tmp`), or None
/// for any other name.
pub fn leftover_pid(name: &[u8]) -> Option<i32> {
    let rest = name.strip_prefix(stackdump_core::model::dumpfile::TEMP_PREFIX.as_bytes())?;
    if !name.ends_with(b".tmp") {
        return None;
    }
    let end = rest.iter().position(|b| *b == b'-')?;
    let digits = &rest[..end];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Remove the temporary files that dumps of dead processes left in `dir` (see the module
/// documentation). Returns how many were removed.
pub fn clean_leftovers(dir: &Path, own_pid: i32) -> io::Result<usize> {
    let dirc = cstr(&dir.to_string_lossy())?;
    let dirfd = sys::open_dir(&dirc)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let now = sys::now_unix_millis() / 1000;
    let mut removed = 0;
    for name in sys::list_dir(&dirfd)? {
        let Some(pid) = leftover_pid(name.as_bytes()) else {
            continue;
        };
        if pid == own_pid || pid <= 0 || sys::process_exists(pid) {
            continue;
        }
        let Ok(st) = sys::lstat_at(&dirfd, &name) else {
            continue;
        };
        let old = now.saturating_sub(st.st_mtime) >= LEFTOVER_AGE.as_secs() as i64;
        if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == me && old {
            // unlinkat never follows a link; in a sticky directory only the owner (we) can
            // swap the file between the check and here.
            if sys::unlink(&dirfd, &name).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// `ENOSPC: No space left on device` for an OS error, else its text.
pub fn describe(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ENOSPC) => "ENOSPC",
        Some(libc::EDQUOT) => "EDQUOT",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EPERM) => "EPERM",
        Some(libc::EROFS) => "EROFS",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ENOTDIR) => "ENOTDIR",
        Some(libc::EIO) => "EIO",
        Some(libc::EFBIG) => "EFBIG",
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::ELOOP) => "ELOOP",
        Some(libc::EEXIST) => "EEXIST",
        _ => return e.to_string(),
    };
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    format!("{name}: {text}")
}

/// How many later names (one millisecond apart) are tried when a final name is taken.
const NAME_ATTEMPTS: u32 = 10_000;

/// Write every output for one dump of process `pid` (as it sees itself), taken at `millis`
/// (milliseconds since the Unix epoch). The names are [`DumpFileName`]s; the n-th candidate
/// name is `n` milliseconds later (names already taken, e.g. planted, are skipped: the next
/// candidate is tried). `requests` are the request ids this dump serves (the first names the
/// files, the others get links). Returns the names written and the candidate used.
pub fn write(
    dir: &Path,
    pid: i32,
    millis: i64,
    requests: &[u32],
    outputs: &[Output<'_>],
) -> io::Result<(Written, u32)> {
    let dirc = cstr(&dir.to_string_lossy())?;
    let dirfd = sys::open_dir(&dirc)?;
    let request = requests.first().map(|r| u64::from(*r));
    let name = |candidate: u32, request: Option<u64>, format: DumpFormat| {
        DumpFileName::new(pid, millis + i64::from(candidate), request, format)
    };
    // 1. Every file complete under a temporary name: each written and its writeback started,
    //    then each fsync'd (its data went to the disk while the next file was written).
    let mut tmps: Vec<CString> = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    for out in outputs {
        let tmp = cstr(&name(0, request, out.format).temp_name())?;
        let fd = match sys::create_exclusive(&dirfd, &tmp) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A leftover of a dump that died mid-write (or a planted file): remove our
                // own temp name (unlinkat never follows symlinks) and try once more.
                sys::unlink(&dirfd, &tmp)?;
                sys::create_exclusive(&dirfd, &tmp)?
            }
            Err(e) => {
                for t in &tmps {
                    let _ = sys::unlink(&dirfd, t);
                }
                return Err(e);
            }
        };
        let result = write_content(&fd, out);
        tmps.push(tmp);
        if let Err(e) = result {
            for t in &tmps {
                let _ = sys::unlink(&dirfd, t);
            }
            return Err(e);
        }
        start_writeback(&fd);
        fds.push(fd);
    }
    for fd in fds {
        if let Err(e) = fsync(&fd) {
            for t in &tmps {
                let _ = sys::unlink(&dirfd, t);
            }
            return Err(e);
        }
    }
    // 2. Rename them all to the first candidate name that is free for every format.
    let mut written = Vec::new();
    let mut used = None;
    'candidates: for attempt in 0..NAME_ATTEMPTS {
        let mut done: Vec<(CString, &CString)> = Vec::new();
        for (out, tmp) in outputs.iter().zip(&tmps) {
            let finalc = cstr(&name(attempt, request, out.format).to_string())?;
            match sys::rename_noreplace(&dirfd, tmp, &finalc) {
                Ok(()) => done.push((finalc, tmp)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Taken: put back what this candidate already renamed, try the next one.
                    for (f, t) in done.iter().rev() {
                        let _ = sys::rename_noreplace(&dirfd, f, t);
                    }
                    continue 'candidates;
                }
                Err(e) => {
                    for t in &tmps {
                        let _ = sys::unlink(&dirfd, t);
                    }
                    return Err(e);
                }
            }
        }
        used = Some(attempt);
        for (out, (finalc, _)) in outputs.iter().zip(&done) {
            written.push(finalc.to_string_lossy().into_owned());
            for r in requests.iter().skip(1) {
                let link = name(attempt, Some(u64::from(*r)), out.format).to_string();
                if sys::link(&dirfd, finalc, &cstr(&link)?).is_ok() {
                    written.push(link);
                }
            }
        }
        break;
    }
    let Some(used) = used else {
        for t in &tmps {
            let _ = sys::unlink(&dirfd, t);
        }
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "every candidate name is taken",
        ));
    };
    // Make the renames durable too.
    let _ = fsync(&dirfd);
    Ok((written, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn leftover_names() {
        assert_eq!(
            leftover_pid(b".stackdump-1234-20261125T164737.123Z-r5.json.tmp"),
            Some(1234)
        );
        assert_eq!(
            leftover_pid(b".stackdump-1234-20261125T164737.123Z.txt.tmp"),
            Some(1234)
        );
        for other in [
            &b"stackdump-1234-20261125T164737.123Z.txt"[..],
            b".stackdump-1234-20261125T164737.123Z.txt",
            b".stackdump--x.tmp",
            b".stackdump-12a-x.tmp",
            b".stackdump-99999999999-x.tmp",
            b"notes.tmp",
        ] {
            assert_eq!(
                leftover_pid(other),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    /// Set a file's times (without following links) to `secs` ago.
    fn age(path: &Path, secs: i64) {
        let t = libc::timespec {
            tv_sec: sys::now_unix_millis() / 1000 - secs,
            tv_nsec: 0,
        };
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: c is NUL-terminated; times points to two valid timespecs.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                [t, t].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
    }

    #[test]
    fn leftovers_of_dead_processes_only_are_removed() {
        let dir = std::env::temp_dir().join(format!("sink-leftovers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        // A pid that is gone: a child that exited and was reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id() as i32;
        child.wait().unwrap();
        let me = std::process::id() as i32;
        let name = |pid: i32, ext: &str| format!(".stackdump-{pid}-20260101T000000.000Z.{ext}.tmp");
        let dead_old = dir.join(name(dead, "txt"));
        let dead_fresh = dir.join(name(dead, "json"));
        let alive_old = dir.join(name(me, "txt"));
        let link = dir.join(format!(".stackdump-{dead}-20260101T000000.001Z.txt.tmp"));
        let other = dir.join(format!("notes-{dead}.tmp"));
        for f in [&dead_old, &dead_fresh, &alive_old, &other] {
            std::fs::write(f, b"partial").unwrap();
        }
        std::os::unix::fs::symlink(&other, &link).unwrap();
        for f in [&dead_old, &alive_old, &link, &other] {
            age(f, 3600);
        }
        // Our own pid is skipped whatever its age; use another live one for "alive".
        assert_eq!(clean_leftovers(&dir, 1).unwrap(), 1);
        assert!(!dead_old.exists(), "the old leftover of a dead pid goes");
        assert!(
            dead_fresh.exists(),
            "a recent one stays (another namespace may write it)"
        );
        assert!(alive_old.exists(), "a live process's file stays");
        assert!(link.symlink_metadata().is_ok(), "a link is never removed");
        assert!(other.exists(), "other names stay");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
