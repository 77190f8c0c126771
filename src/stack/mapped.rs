//! A module or debug file mapped read-only into memory, shared by the symbols and the DWARF
//! cache.

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
    pub fn of_file(f: &std::fs::File) -> Option<Mapped> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(f.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: a private read-only mapping of a file we opened, of its current length; the
        // fd may be closed afterwards (the mapping keeps the file). A file truncated while
        // mapped would fault on access (SIGBUS): module and debug files are not rewritten in
        // place (package managers and linkers write new files and rename them).
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
        (ptr != libc::MAP_FAILED).then_some(Mapped { ptr, len })
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
