//! Budgets for what is read from files a target controls (module files, debug files, dumps).
//!
//! The CLI often runs as root against processes of other users: the target chooses the bytes
//! of every module it maps (and of their debug files), so every size they state is hostile
//! until checked. A compressed `.debug_info` inflates 30000:1 with zstd; a sparse file of a
//! few KB can claim sections of gigabytes. Every allocation driven by such a size is checked
//! here first, against the file's real size and against the absolute caps below.
//!
//! Why these numbers: the largest real inputs seen are a few hundred MB of DWARF once
//! decompressed (libc's debug file is 8.6 MB; big C++ libraries reach 100-400 MB) and tens of
//! MB of `.eh_frame`. The caps leave those room and keep the sum under what a small machine
//! can spare at incident time:
//!
//! | what | cap |
//! | --- | --- |
//! | DWARF decompressed, one module | [`MAX_INFLATED_PER_MODULE`] (512 MiB) |
//! | DWARF decompressed plus the per-unit copies of `.debug_info`, live at once, one process | [`MAX_INFLATED_PER_RUN`] (1 GiB) |
//! | stated decompressed size / compressed size | [`MAX_INFLATE_RATIO`] (1032, deflate's own bound) |
//! | one DWARF section stored uncompressed (mapped, not copied) | [`MAX_MAPPED_SECTION`] (1 GiB) |
//! | one read from a module file (`.eh_frame`, symbol tables, ...) | [`MAX_READ`] (256 MiB) |
//! | all reads from one module file | [`MAX_READ_PER_FILE`] (512 MiB) |
//! | unwind tables kept, one process | [`MAX_UNWIND_PER_RUN`] (512 MiB) |
//! | a symbol table | [`MAX_SYMTAB`] (128 MiB, ~5.6 million symbols) |
//! | a module or debug file others may rewrite, copied instead of mapped | [`MAX_COPIED_FILE`] (512 MiB) |
//! | a dump file read by `dump` or `compare` | [`MAX_DUMP_FILE`] (64 MiB) |
//! | all dump files of one `compare` | [`MAX_COMPARE_TOTAL`] (256 MiB) |
//!
//! Past a cap the module is read without that section (no unwind data, or names from the
//! symbol table only): the dump still comes out, with the reason in its errors where it can.

use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

const MIB: u64 = 1 << 20;

/// Decompressed DWARF of one module file.
pub const MAX_INFLATED_PER_MODULE: u64 = 512 * MIB;
/// Decompressed DWARF (and the copies of `.debug_info` made from it) alive at once in this
/// process.
pub const MAX_INFLATED_PER_RUN: u64 = 1024 * MIB;
/// The decompressed size a compression header may state per compressed byte (zlib and zstd
/// alike: deflate cannot exceed ~1032:1, and real DWARF compresses 3-10:1; a larger claim is a
/// bomb or a lie).
pub const MAX_INFLATE_RATIO: u64 = 1032;
/// One DWARF section borrowed from a file's mapping (page cache, not copied).
pub const MAX_MAPPED_SECTION: u64 = 1024 * MIB;
/// One read from a module file through `object::ReadCache` (a copy in memory).
pub const MAX_READ: u64 = 256 * MIB;
/// All reads from one module file through `object::ReadCache`.
pub const MAX_READ_PER_FILE: u64 = 512 * MIB;
/// The unwind sections (`.eh_frame`, `.eh_frame_hdr`, `.debug_frame`) kept for all modules of
/// one process.
pub const MAX_UNWIND_PER_RUN: u64 = 512 * MIB;
/// A symbol table (`.symtab` or `.dynsym`) read into a name index.
pub const MAX_SYMTAB: u64 = 128 * MIB;
/// A module or debug file that someone other than root or us may rewrite is copied, not mapped
/// (a truncation under a mapping would kill the CLI with SIGBUS): at most this much of it.
pub const MAX_COPIED_FILE: u64 = 512 * MIB;
/// A dump file (`.json` or `.txt`) read by `stackdump dump` or `stackdump compare`: rendering
/// one takes a few times its size; real dumps of 10000 threads are under 20 MB.
pub const MAX_DUMP_FILE: u64 = 64 * MIB;
/// The part of a perf map (`/tmp/perf-PID.map`, names of JIT-compiled code) that is read: its
/// last bytes, where the newest code is (a long-running `node --perf-basic-prof` appends
/// without end). About 100 bytes a line: half a million functions.
pub const MAX_PERF_MAP: u64 = 48 * MIB;
/// The same, read by the dump thread inside the process (its memory is the host's): about
/// 80,000 of the newest functions.
pub const MAX_PERF_MAP_INSIDE: u64 = 8 * MIB;
/// All the dump files one `stackdump compare` reads (they are all kept parsed at once).
pub const MAX_COMPARE_TOTAL: u64 = 256 * MIB;

/// Whether a compressed section whose header states `uncompressed` bytes from `compressed`
/// bytes may be inflated into memory of that size.
pub fn plausible_inflate(compressed: usize, uncompressed: u64) -> bool {
    uncompressed <= MAX_INFLATED_PER_MODULE
        && uncompressed <= (compressed as u64).saturating_mul(MAX_INFLATE_RATIO) + 4096
}

/// Bytes of decompressed DWARF alive in this process (see [`Reservation`]).
static INFLATED: AtomicU64 = AtomicU64::new(0);

/// A share of [`MAX_INFLATED_PER_RUN`], given back when dropped (keep it next to the buffer it
/// pays for).
#[derive(Debug, Default)]
pub struct Reservation(u64);

impl Reservation {
    /// `bytes` more of the run's budget, or None when that would exceed it.
    pub fn take(bytes: u64) -> Option<Reservation> {
        INFLATED
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= MAX_INFLATED_PER_RUN)
            })
            .ok()
            .map(|_| Reservation(bytes))
    }

    /// Add `other` to this reservation.
    pub fn merge(&mut self, mut other: Reservation) {
        self.0 += std::mem::take(&mut other.0);
    }

    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.0
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.0 != 0 {
            INFLATED.fetch_sub(self.0, Ordering::AcqRel);
        }
    }
}

/// The bytes of decompressed DWARF alive in this process now (tests).
pub fn inflated_now() -> u64 {
    INFLATED.load(Ordering::Acquire)
}

/// A module file read at offsets (`pread`) for `object::ReadCache`: one system call a read,
/// where `File`'s `Read + Seek` take two (an `lseek` before each). `len` is the file's size as
/// `fstat` gave it.
///
/// An ELF file is parsed in dozens of small reads close together (its header, program
/// headers, notes, section headers, and each section's name in 256-byte steps), so a small
/// read fills a window of the file around it (16 KiB), aligned to 4 KiB, and the reads that follow
/// inside it are copies: `inspect` of a 20-thread process made 466 `pread`s, ~100 of them for
/// one executable's section names. Larger reads (unwind tables, symbol tables) go straight to
/// the caller's buffer.
pub struct Pread<'a> {
    file: &'a std::fs::File,
    pos: u64,
    len: u64,
    window: Vec<u8>,
    window_at: u64,
    /// A window could not be filled (the file is shorter than `fstat` said): every read goes
    /// straight to the file from then on.
    no_window: bool,
}

/// How much of the file a small read brings in.
const WINDOW: usize = 16 << 10;

/// Reads up to this size go through the window (their end is inside it: the window starts at
/// most 4 KiB before the read, aligned down).
const SMALL_READ: usize = 4 << 10;

/// A `ReadCache` over `file` read with [`Pread`]; wrap it in [`Capped`] before parsing.
pub fn read_cache(file: &std::fs::File, len: u64) -> object::ReadCache<Pread<'_>> {
    object::ReadCache::new(Pread {
        file,
        pos: 0,
        len,
        window: Vec::new(),
        window_at: 0,
        no_window: false,
    })
}

impl Pread<'_> {
    /// The bytes of the window from `self.pos` on, after filling it around `self.pos` when it
    /// does not hold `want` bytes from there (fewer at the end of the file). `None` when the
    /// window cannot serve (the file was shorter than `fstat` said: the caller reads directly
    /// and gets the real error or count).
    fn windowed(&mut self, want: usize) -> Option<&[u8]> {
        if self.no_window {
            return None;
        }
        let inside = |w: &Self| {
            w.pos >= w.window_at && w.pos - w.window_at <= w.window.len() as u64 && {
                let from = (w.pos - w.window_at) as usize;
                w.window.len() - from >= want || w.window_at + w.window.len() as u64 >= w.len
            }
        };
        if !inside(self) {
            let at = self.pos & !4095;
            let size = (self.len.saturating_sub(at)).min(WINDOW as u64) as usize;
            self.window.resize(size, 0);
            self.window_at = at;
            let filled = std::os::unix::fs::FileExt::read_exact_at(self.file, &mut self.window, at);
            if filled.is_err() || !inside(self) {
                self.window = Vec::new();
                self.no_window = true;
                return None;
            }
        }
        let from = (self.pos - self.window_at) as usize;
        Some(&self.window[from..])
    }
}

impl object::ReadCacheOps for Pread<'_> {
    fn len(&mut self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn seek(&mut self, pos: u64) -> Result<u64, ()> {
        self.pos = pos;
        Ok(pos)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        if buf.len() <= SMALL_READ {
            if let Some(w) = self.windowed(buf.len()) {
                let n = w.len().min(buf.len());
                buf[..n].copy_from_slice(&w[..n]);
                self.pos += n as u64;
                return Ok(n);
            }
        }
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos).map_err(|_| ())?;
        self.pos += n as u64;
        Ok(n)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ()> {
        if buf.len() <= SMALL_READ {
            if let Some(w) = self.windowed(buf.len()) {
                if w.len() >= buf.len() {
                    buf.copy_from_slice(&w[..buf.len()]);
                    self.pos += buf.len() as u64;
                    return Ok(());
                }
            }
        }
        std::os::unix::fs::FileExt::read_exact_at(self.file, buf, self.pos).map_err(|_| ())?;
        self.pos += buf.len() as u64;
        Ok(())
    }
}

/// An `object::ReadRef` over a `ReadCache` that refuses any read larger than [`MAX_READ`],
/// any range beyond the file's size as `fstat` gave it (`len`), and more than
/// [`MAX_READ_PER_FILE`] in all: the cache allocates (and zero-fills) what a read asks for
/// before it reads, so a sparse file claiming a section of gigabytes would cost that much.
pub struct Capped<'a, R: object::ReadCacheOps> {
    cache: &'a object::ReadCache<R>,
    len: u64,
    used: &'a Cell<u64>,
}

impl<R: object::ReadCacheOps> Clone for Capped<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: object::ReadCacheOps> Copy for Capped<'_, R> {}

impl<'a, R: object::ReadCacheOps> Capped<'a, R> {
    /// Reads of `cache`, a file of `len` bytes (its `fstat` size); `used` counts the bytes read.
    pub fn new(cache: &'a object::ReadCache<R>, len: u64, used: &'a Cell<u64>) -> Self {
        Capped { cache, len, used }
    }

    fn allow(&self, offset: u64, size: u64) -> Result<(), ()> {
        let end = offset.checked_add(size).ok_or(())?;
        let total = self.used.get().saturating_add(size);
        if end > self.len || size > MAX_READ || total > MAX_READ_PER_FILE {
            return Err(());
        }
        self.used.set(total);
        Ok(())
    }
}

impl<'a, R: object::ReadCacheOps> object::ReadRef<'a> for Capped<'a, R> {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        self.allow(offset, size)?;
        self.cache.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        // Strings: at most 64 KiB each (symbol names; a longer one is cut short, which only
        // makes it fail to match).
        let end = range
            .end
            .min(self.len)
            .min(range.start.saturating_add(64 << 10));
        if range.start > end {
            return Err(());
        }
        let bytes = self
            .cache
            .read_bytes_at_until(range.start..end, delimiter)?;
        self.allow(range.start, bytes.len() as u64)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::ReadRef;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        // Other tests of this process reserve too: only what holds whatever they do.
        assert!(Reservation::take(MAX_INFLATED_PER_RUN + 1).is_none());
        let mut a = Reservation::take(1 << 20).unwrap();
        a.merge(Reservation::take(1 << 20).unwrap());
        assert_eq!(a.bytes(), 2 << 20);
        assert!(inflated_now() >= 2 << 20);
    }

    #[test]
    fn ratios_beyond_deflate_are_refused() {
        assert!(plausible_inflate(1000, 10_000));
        assert!(!plausible_inflate(65 << 10, 2100 * MIB));
        assert!(!plausible_inflate(usize::MAX, MAX_INFLATED_PER_MODULE + 1));
    }

    #[test]
    fn windowed_preads_give_the_file_bytes_wherever_they_fall() {
        // 50 000 bytes, each one a function of its offset, with a NUL every 300 bytes.
        let data: Vec<u8> = (0..50_000u32)
            .map(|i| {
                if i % 300 == 299 {
                    0
                } else {
                    (i % 251) as u8 + 1
                }
            })
            .collect();
        let f = tempfile_with(&data);
        let len = data.len() as u64;
        let cache = read_cache(&f, len);
        let used = Cell::new(0);
        let r = Capped::new(&cache, len, &used);
        // Small reads inside one window, across its end, at 4 KiB boundaries, the file's last
        // bytes, one large read, and reads before the window after it moved on.
        for (at, size) in [
            (0, 16),
            (64, 728),
            (16_380, 10),
            (16_384, 4096),
            (20_000, 3),
            (49_990, 10),
            (49_999, 1),
            (100, 30_000),
            (5, 7),
            (33_000, 4096),
        ] {
            assert_eq!(
                r.read_bytes_at(at, size).unwrap(),
                &data[at as usize..][..size as usize],
                "{at}+{size}"
            );
        }
        // Strings to the next NUL, in the window and across its end.
        for at in [1u64, 16_300, 16_383, 49_500] {
            let got = r.read_bytes_at_until(at..len, 0).unwrap();
            let end = data[at as usize..].iter().position(|b| *b == 0).unwrap();
            assert_eq!(got, &data[at as usize..][..end], "string at {at}");
        }
        assert!(r.read_bytes_at(49_999, 2).is_err());
        assert!(
            r.read_bytes_at_until(49_800..len, 0).is_err(),
            "no NUL before the end"
        );
        // A file shorter than its fstat size said: a read beyond its real end fails, as it
        // would without the window.
        f.set_len(40_000).unwrap();
        let cache = read_cache(&f, len);
        let used = Cell::new(0);
        let r = Capped::new(&cache, len, &used);
        assert_eq!(r.read_bytes_at(30_000, 100).unwrap(), &data[30_000..30_100]);
        assert!(r.read_bytes_at(39_990, 100).is_err());
        assert!(r.read_bytes_at(45_000, 16).is_err());
    }

    /// An unnamed temporary file holding `data`.
    fn tempfile_with(data: &[u8]) -> std::fs::File {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    #[test]
    fn capped_reads_refuse_ranges_beyond_the_file_and_the_caps() {
        let data = vec![7u8; 4096];
        let cache = object::ReadCache::new(std::io::Cursor::new(data));
        let used = Cell::new(0);
        let r = Capped::new(&cache, 4096, &used);
        assert_eq!(r.read_bytes_at(0, 16).unwrap(), &[7u8; 16]);
        assert!(r.read_bytes_at(4000, 200).is_err());
        assert!(r.read_bytes_at(u64::MAX, 2).is_err());
        let big = Capped::new(&cache, u64::MAX, &used);
        assert!(big.read_bytes_at(0, MAX_READ + 1).is_err());
    }
}
