//! A module or debug file mapped read-only into memory, shared by the symbols and the DWARF
//! cache; and the bytes of the process's own executable where the loader mapped them
//! ([`Executable`], [`InPlace`]: for its unwind tables).

use crate::kernel::rootfs::{open_untrusted, MAX_MODULE_BYTES};
use std::path::Path;

/// A file mapped read-only into memory (what `addr2line`'s loader does too): its pages are read
/// by the kernel as they are touched, so a large file costs only what is looked at.
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; sharing or sending the pointer
// between threads is as safe as sharing an immutable byte slice.
unsafe impl Send for Mapped {}
// SAFETY: as above: only ever read.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Map the file at `path` (None when it cannot be opened or is empty).
    pub fn open(path: &Path) -> Option<Mapped> {
        Mapped::of_file(&open_untrusted(path, MAX_MODULE_BYTES).ok()?)
    }

    /// Map the open file `f` (None when it is empty or cannot be mapped).
    ///
    /// A file truncated while mapped faults on access (SIGBUS, which would kill the CLI). Files
    /// that only root or we can write are mapped: package managers and linkers write new files
    /// and rename them, they do not rewrite them in place. A file someone else may rewrite
    /// (a target's own library, owned by its user) is copied instead, at most
    /// [`crate::limits::MAX_COPIED_FILE`] bytes: a hostile target cannot truncate it under us.
    pub fn of_file(f: &std::fs::File) -> Option<Mapped> {
        match Mapped::shared(f) {
            Ok(mapped) => Some(mapped),
            Err(Some(len)) => Mapped::copy_of(f, len),
            Err(None) => None,
        }
    }

    /// [`Mapped::of_file`] without the copy: the file mapped when nobody but root or we may
    /// write it; `Err(Some(len))` when someone else may (the caller reads what it needs
    /// instead), `Err(None)` when it is empty or cannot be mapped.
    pub fn map_if_safe(f: &std::fs::File) -> Result<Mapped, Option<usize>> {
        Mapped::shared(f)
    }

    fn shared(f: &std::fs::File) -> Result<Mapped, Option<usize>> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let meta = f.metadata().map_err(|_| None)?;
        let len = usize::try_from(meta.len()).map_err(|_| None)?;
        if len == 0 {
            return Err(None);
        }
        let me = nix::unistd::geteuid().as_raw();
        if !((meta.uid() == 0 || meta.uid() == me) && meta.mode() & 0o022 == 0) {
            return Err(Some(len));
        }
        // SAFETY: a private read-only mapping of a file we opened, of its current length; the
        // fd may be closed afterwards (the mapping keeps the file). Only files that nobody but
        // root or we may write (see above), so none is truncated under us.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(None);
        }
        Ok(Mapped { ptr, len })
    }

    /// A private anonymous mapping holding a copy of the first `len` bytes of `f`.
    fn copy_of(f: &std::fs::File, len: usize) -> Option<Mapped> {
        use std::os::unix::fs::FileExt;
        if len as u64 > crate::limits::MAX_COPIED_FILE {
            return None;
        }
        // SAFETY: a fresh private anonymous mapping of `len` bytes, owned by the value returned
        // (unmapped by its Drop); nothing else refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let mapped = Mapped { ptr, len };
        // SAFETY: the mapping is ours, writable and `len` bytes long; no other reference to it
        // exists yet.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
        // A file that shrank meanwhile reads short: the rest stays zero, parsed as damaged.
        let mut at = 0;
        while at < len {
            match f.read_at(&mut buf[at..], at as u64) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        // SAFETY: the same mapping, now read-only.
        unsafe { libc::mprotect(ptr, len, libc::PROT_READ) };
        Some(mapped)
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live read-only mapping of `len` bytes until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping this value owns, once; no slice of it outlives `self`
        // (slices borrow `self`, or are held by a context dropped first: see `ModuleDebug`).
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The process's own main executable, as it is mapped now: where [`InPlace`] views come from.
/// Built only from `/proc/self/exe` and `/proc/self/maps`, read here.
pub struct Executable {
    ino: u64,
    size: u64,
    /// Its mappings (of that path and inode).
    maps: Vec<crate::kernel::proc::Mapping>,
}

impl Executable {
    /// `file`, opened from `path` (the path the maps show), when it is this process's main
    /// executable (the same device and inode as `/proc/self/exe`) on a local file system:
    /// it is never unloaded, so its mappings stay for the life of the process. Not on a
    /// network or FUSE file system, where a page evicted since the process started could fail
    /// to read back (the fault would end the process).
    pub fn of(file: &std::fs::File, path: &str) -> Option<Executable> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let (me, exe) = (
            file.metadata().ok()?,
            std::fs::metadata("/proc/self/exe").ok()?,
        );
        if (me.dev(), me.ino()) != (exe.dev(), exe.ino()) {
            return None;
        }
        // SAFETY: fstatfs on a descriptor we own writes only into the zeroed struct we pass.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
            return None;
        }
        // NFS, SMB/CIFS (two magics), FUSE, 9P, Ceph, AFS, Coda.
        const REMOTE: &[i64] = &[
            0x6969,
            0xFE53_4D42,
            0xFF53_4D42,
            0x6573_5546,
            0x0102_1997,
            0x00C3_6400,
            0x5346_414F,
            0x7375_7245,
        ];
        #[allow(clippy::unnecessary_cast)] // the field's type differs between architectures
        if REMOTE.contains(&(fs.f_type as i64)) {
            return None;
        }
        let maps = std::fs::read("/proc/self/maps").ok()?;
        let maps = crate::kernel::proc::parse_maps(&maps)
            .into_iter()
            .filter(|m| m.inode == me.ino() && m.path == path)
            .collect();
        Some(Executable {
            ino: me.ino(),
            size: me.len(),
            maps,
        })
    }

    /// Its `len` bytes at `file_offset`, where this process has them at `addr`: when they are
    /// within the file and one mapping covers them, readable, not writable, at the matching
    /// offset, so that it shows the file's own pages. `unchanged` is the caller's word, from the
    /// file's headers, that the loader never wrote them (a read-only loadable segment holds
    /// them within its file size, and the file has no text relocations). None otherwise: the
    /// caller copies them from the file.
    pub fn in_place(
        &self,
        (addr, file_offset, len): (u64, u64, u64),
        unchanged: bool,
    ) -> Option<InPlace> {
        if !unchanged || len == 0 || file_offset.checked_add(len)? > self.size {
            return None;
        }
        let view = InPlace {
            ptr: usize::try_from(addr).ok()? as *const u8,
            len: usize::try_from(len).ok()?,
            file_offset,
            ino: self.ino,
        };
        view.still_mapped(&self.maps).then_some(view)
    }
}

/// Bytes of the process's own main executable, read where the loader mapped them
/// ([`Executable::in_place`]): its unwind tables need no copy (node's are 3.3 MB) and add
/// nothing to the process's memory or to its maps.
pub struct InPlace {
    ptr: *const u8,
    len: usize,
    file_offset: u64,
    ino: u64,
}

// SAFETY: a read-only view of memory that stays mapped and unchanged for the life of the
// process (see `Executable`); sharing it between threads is as safe as sharing a
// `&'static [u8]`.
unsafe impl Send for InPlace {}
// SAFETY: as above: only ever read.
unsafe impl Sync for InPlace {}

impl InPlace {
    /// Whether `maps` (this process's, current) still show the bytes viewed as they were
    /// when the view was made: one readable, non-writable mapping of the same inode at the
    /// matching offset covers them. The executable is never unloaded, but a process may
    /// unmap or protect any of its pages: a module whose view is gone is loaded again (copied).
    pub fn still_mapped(&self, maps: &[crate::kernel::proc::Mapping]) -> bool {
        let (addr, len) = (self.ptr as u64, self.len as u64);
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        maps.iter().any(|m| {
            m.start <= addr
                && end <= m.end
                && m.readable
                && !m.writable
                && m.inode == self.ino
                && m.offset.checked_add(addr - m.start) == Some(self.file_offset)
        })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `Executable::in_place` checked, against the process's own maps read when
        // the `Executable` was made, that these `len` bytes at `ptr` are a read-only mapping of
        // the main executable within the file (no SIGBUS); it is never unloaded, and a module
        // whose view a later dump's maps no longer show is dropped (`still_mapped`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file another user may rewrite is copied, not mapped: truncating it afterwards cannot
    /// fault (SIGBUS) in the reader.
    #[test]
    fn a_file_others_may_rewrite_is_copied_not_mapped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lib.so");
        std::fs::write(&p, vec![7u8; 3 * 4096 + 5]).unwrap();
        // Writable by others (or, as root, owned by another user): copied.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        }
        let m = Mapped::of_file(&std::fs::File::open(&p).unwrap()).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(m.bytes().len(), 3 * 4096 + 5);
        assert!(m.bytes().iter().all(|&b| b == 7), "the copy is whole");
    }
}
