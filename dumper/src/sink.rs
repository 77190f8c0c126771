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

/// One file to write: extension (`json`, `txt`) and what writes its content. The content is
/// streamed through a buffer into the temporary file: a dump of thousands of threads is never
/// held whole in memory as bytes.
pub struct Output<'a> {
    pub ext: &'static str,
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

fn fsync(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fsync on our own fd.
    if unsafe { libc::fsync(fd.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many later names (one millisecond apart) are tried when a final name is taken.
const NAME_ATTEMPTS: u32 = 10_000;

/// Write every output for one dump. `stem(n)` is `stackdump-<pid>-<time>Z` for the n-th
/// candidate time (names already taken, e.g. planted, are skipped: the next candidate is
/// tried); `requests` are the request ids this dump serves (the first names the files, the
/// others get links). Returns the names written and the candidate used.
pub fn write(
    dir: &Path,
    stem: impl Fn(u32) -> String,
    requests: &[u32],
    outputs: &[Output<'_>],
) -> io::Result<(Written, u32)> {
    let dirc = cstr(&dir.to_string_lossy())?;
    let dirfd = sys::open_dir(&dirc)?;
    let with_request = |stem: &str| match requests.first() {
        Some(r) => format!("{stem}-r{r}"),
        None => stem.to_string(),
    };
    // 1. Every file complete under a temporary name.
    let first = with_request(&stem(0));
    let mut tmps: Vec<CString> = Vec::new();
    for out in outputs {
        let tmp = cstr(&format!(".{first}.{}.tmp", out.ext))?;
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
        let result = write_content(&fd, out).and_then(|()| fsync(&fd));
        drop(fd);
        tmps.push(tmp);
        if let Err(e) = result {
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
        let primary = with_request(&stem(attempt));
        let mut done: Vec<(CString, &CString)> = Vec::new();
        for (out, tmp) in outputs.iter().zip(&tmps) {
            let finalc = cstr(&format!("{primary}.{}", out.ext))?;
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
                let link = format!("{}-r{r}.{}", stem(attempt), out.ext);
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
