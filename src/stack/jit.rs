//! Code outside every module: JIT-compiled code (V8, the JVM, .NET, LuaJIT, ...) in anonymous
//! executable memory. Such a frame is labelled with the mapping it lies in
//! ([`crate::model::Frame::jit`]), and named from the process's perf map when it writes one.
//!
//! A perf map is the ecosystem's convention for naming JIT code (`node --perf-basic-prof`, JVM
//! `jcmd PID Compiler.perfmap`, `DOTNET_PerfMapEnabled=1`, LuaJIT): `/tmp/perf-PID.map`, one
//! line per function, `START SIZE NAME` with START and SIZE in hex, appended as code is made
//! (a later line for the same address wins). PID is the process id as the process sees it (its
//! own PID namespace), and `/tmp` its own: the file is read through `/proc/PID/root` with
//! [`crate::kernel::rootfs`] (no symlink followed anywhere on the path, a regular file only, owned
//! by the process's user), and only its last [`crate::limits::MAX_PERF_MAP`] bytes (8 MiB inside
//! the process, whose memory is the host's).

use crate::kernel::proc::Mapping;
use crate::model::{Addr, Frame, JitRegion};
use crate::stack::unwind::Modules;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

/// The longest function name kept from a perf map (longer ones are cut).
const MAX_NAME: usize = 1024;

/// The names of a perf map, by address.
#[derive(Debug, Default, Clone)]
pub struct PerfMap {
    /// (start, end, start of the name in `names`, its length), sorted by start; one entry per
    /// start (the last line for it).
    entries: Vec<(u64, u64, u32, u32)>,
    names: String,
}

impl PerfMap {
    /// Parse the text of a perf map; lines that do not parse are skipped.
    pub fn parse(text: &[u8]) -> PerfMap {
        let text = String::from_utf8_lossy(text);
        let hex = |s: &str| {
            let s = s.strip_prefix("0x").unwrap_or(s);
            u64::from_str_radix(s, 16).ok()
        };
        // (start, end, line number, name range)
        let mut raw: Vec<(u64, u64, usize, u32, u32)> = Vec::new();
        let mut names = String::new();
        for (n, line) in text.lines().enumerate() {
            let mut parts = line.trim_end().splitn(3, ' ');
            let (Some(start), Some(size), Some(name)) = (
                parts.next().and_then(hex),
                parts.next().and_then(hex),
                parts.next(),
            ) else {
                continue;
            };
            let Some(end) = start.checked_add(size).filter(|_| size > 0) else {
                continue;
            };
            let mut cut = name.len().min(MAX_NAME);
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            let (Ok(at), Ok(len)) = (u32::try_from(names.len()), u32::try_from(cut)) else {
                break;
            };
            names.push_str(&name[..cut]);
            raw.push((start, end, n, at, len));
        }
        // The last line for a start wins (code replaced at the same address).
        raw.sort_unstable_by_key(|e| (e.0, e.2));
        let mut entries: Vec<(u64, u64, u32, u32)> = Vec::with_capacity(raw.len());
        for (start, end, _, at, len) in raw {
            match entries.last_mut() {
                Some(last) if last.0 == start => *last = (start, end, at, len),
                _ => entries.push((start, end, at, len)),
            }
        }
        PerfMap { entries, names }
    }

    /// The name of the function containing `addr`.
    pub fn name_of(&self, addr: u64) -> Option<&str> {
        let i = self.entries.partition_point(|e| e.0 <= addr);
        // The nearest start below holds it, unless functions overlap: look a little further.
        self.entries[..i]
            .iter()
            .rev()
            .take(8)
            .find(|e| addr < e.1)
            .and_then(|e| self.names.get(e.2 as usize..(e.2 + e.3) as usize))
    }

    /// The number of functions it names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it names nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Where a process's perf map is: its root, its PID as it sees it, the user it runs as.
#[derive(Debug, Clone)]
pub struct PerfMapSource {
    /// `/` for our own process, `/proc/PID/root` for another.
    pub root: String,
    /// The process id in the process's own PID namespace (the file is named after it).
    pub pid: i32,
    /// The file must belong to this user (anyone may create files in `/tmp`).
    pub owner: u32,
    /// At most this much of its end is read ([`crate::limits::MAX_PERF_MAP`], or
    /// [`crate::limits::MAX_PERF_MAP_INSIDE`] inside the process).
    pub cap: u64,
}

impl PerfMapSource {
    /// Our own process (the dumper).
    pub fn this_process() -> PerfMapSource {
        PerfMapSource {
            root: "/".into(),
            pid: std::process::id() as i32,
            owner: nix::unistd::geteuid().as_raw(),
            cap: crate::limits::MAX_PERF_MAP_INSIDE,
        }
    }

    /// Process `pid`, seen from outside: its PID in its namespace is the last of `NSpid:` in
    /// its status, its user the file-system one. None when its status is unreadable.
    pub fn process(pid: i32) -> Option<PerfMapSource> {
        let status = crate::kernel::proc::read_proc_text(format!("/proc/{pid}/status")).ok()?;
        let owner = crate::kernel::rootfs::FsCreds::parse_status(&status)?.uid;
        let inner = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|v| v.split_whitespace().last()?.parse().ok())
            .unwrap_or(pid);
        Some(PerfMapSource {
            root: format!("/proc/{pid}/root"),
            pid: inner,
            owner,
            cap: crate::limits::MAX_PERF_MAP,
        })
    }

    /// The path shown in messages.
    pub fn shown(&self) -> String {
        let name = format!("tmp/perf-{}.map", self.pid);
        if self.root == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.root)
        }
    }

    /// Read the perf map: None when there is none; an error when there is one that may not be
    /// read (a symlink, not a regular file, another user's, unreadable).
    pub fn read(&self) -> Result<Option<PerfMap>, String> {
        use crate::kernel::rootfs::{open_file, SafeOpenError, TargetRoot};
        let shown = self.shown();
        let err = |e: SafeOpenError| e.to_string();
        let root = TargetRoot::open_path(&self.root).map_err(err)?;
        let dir = match root.open_dir("/tmp") {
            Ok(d) => d,
            Err(SafeOpenError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let name = format!("perf-{}.map", self.pid);
        let mut file = match open_file(
            std::os::fd::AsFd::as_fd(&dir),
            &name,
            Some(&[self.owner]),
            &shown,
        ) {
            Ok(f) => f,
            Err(SafeOpenError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let len = file.metadata().map_err(|e| format!("{shown}: {e}"))?.len();
        let cap = self.cap;
        let skip = len.saturating_sub(cap);
        if skip > 0 {
            file.seek(SeekFrom::Start(skip))
                .map_err(|e| format!("{shown}: {e}"))?;
        }
        let mut buf = Vec::new();
        file.take(cap)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{shown}: {e}"))?;
        // Started mid-file: the first line is a part of one.
        let text = if skip > 0 {
            buf.iter()
                .position(|&b| b == b'\n')
                .map_or(&buf[..0], |i| &buf[i + 1..])
        } else {
            &buf[..]
        };
        Ok(Some(PerfMap::parse(text)))
    }
}

/// True for a mapping that may hold JIT code: executable and not a file's (anonymous, named
/// anonymous, or a memfd).
fn may_hold_jit(m: &Mapping) -> bool {
    m.executable
        && (m.path.is_empty() || m.path.starts_with("[anon:") || m.path.starts_with("/memfd:"))
}

/// The executable memory of a process outside its modules, and the names its perf map gives.
#[derive(Default)]
pub struct JitCode {
    regions: Vec<Range<u64>>,
    source: Option<PerfMapSource>,
    /// The perf map, read on the first lookup (None inside: not read yet; Some(None): none).
    perf: Option<Option<PerfMap>>,
    /// Why the perf map could not be read, if it could not (for the dump's errors).
    pub problem: Option<String>,
}

impl JitCode {
    /// The regions of `maps` that may hold JIT code and lie outside every module of `modules`;
    /// names from the perf map that `source` locates (none when None).
    pub fn new(maps: &[Mapping], modules: &Modules, source: Option<PerfMapSource>) -> JitCode {
        let mut regions: Vec<Range<u64>> = maps
            .iter()
            .filter(|m| may_hold_jit(m) && modules.module_of(m.start).is_none())
            .map(|m| m.start..m.end)
            .collect();
        regions.sort_by_key(|r| r.start);
        JitCode {
            regions,
            source,
            perf: None,
            problem: None,
        }
    }

    /// The region holding `addr`.
    pub fn region_of(&self, addr: u64) -> Option<Range<u64>> {
        let i = self.regions.partition_point(|r| r.start <= addr);
        let r = self.regions.get(i.checked_sub(1)?)?;
        (addr < r.end).then(|| r.clone())
    }

    /// The frame of `ip` when it lies in JIT code (`is_return`: a return address, looked up at
    /// the byte before it).
    pub fn frame(&mut self, ip: u64, is_return: bool) -> Option<Frame> {
        let region = self.region_of(ip)?;
        let lookup = if is_return { ip.wrapping_sub(1) } else { ip };
        let function = self
            .perf_map()
            .and_then(|p| p.name_of(lookup).map(std::sync::Arc::from));
        Some(Frame {
            ip: Addr(ip),
            module: None,
            offset: Some(Addr(ip - region.start)),
            function,
            file: None,
            line: None,
            inlined: false,
            python: None,
            jit: Some(JitRegion {
                start: Addr(region.start),
                end: Addr(region.end),
            }),
        })
    }

    fn perf_map(&mut self) -> Option<&PerfMap> {
        if self.perf.is_none() {
            let read = match &self.source {
                Some(s) => s.read(),
                None => Ok(None),
            };
            self.perf = Some(match read {
                Ok(p) => p,
                Err(why) => {
                    self.problem = Some(format!("perf map not read: {why}"));
                    None
                }
            });
        }
        self.perf.as_ref().and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_map_lines_later_ones_win_and_bad_ones_are_skipped() {
        let text = b"1000 20 first\n0x2000 10 LazyCompile:*wait file.js:1\nzz 10 bad\n3000 0 empty\n1000 8 replaced\n4000 10";
        let p = PerfMap::parse(text);
        assert_eq!(p.len(), 2);
        assert_eq!(p.name_of(0x1004), Some("replaced"));
        assert_eq!(p.name_of(0x1010), None, "the replacement is shorter");
        assert_eq!(p.name_of(0x2000), Some("LazyCompile:*wait file.js:1"));
        assert_eq!(p.name_of(0x200f), Some("LazyCompile:*wait file.js:1"));
        assert_eq!(p.name_of(0x2010), None);
        assert_eq!(p.name_of(0xfff), None);
        assert_eq!(p.name_of(0x3000), None);
    }

    #[test]
    fn perf_map_names_are_cut_and_huge_sizes_do_not_wrap() {
        let long = "x".repeat(5000);
        let text = format!("10 10 {long}\nffffffffffffff00 1000 wraps\n");
        let p = PerfMap::parse(text.as_bytes());
        assert_eq!(p.name_of(0x10).map(str::len), Some(MAX_NAME));
        assert_eq!(p.name_of(u64::MAX - 1), None);
    }
}
