//! `stackdump compare FILE|DIR...`: what changed across dumps of one process, and what did not.
//!
//! - **Stuck**: threads that did not move between consecutive dumps up to the last one: the same
//!   native stack, the same system call with the same arguments, stack pointer and program counter, the
//!   same wait channel, and no context switch and no CPU time in between (beyond what the dump
//!   itself caused: a thread that was sent the capture signal wakes once for it, so one such
//!   wake-up is allowed). "Stuck for at least 40 s across 5 dumps".
//! - **CPU**: threads that burned CPU between their first and last dump, like `top -H`.
//! - **Came and went**: threads absent from the first dump (appeared) or from the last (exited).
//!
//! Dumps of several processes are compared per process.

use crate::escape::Esc;
use crate::model::{CaptureMethod, CaptureStatus, Dump, Pid, SyscallState, Thread, Tid};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The comparison of a set of dumps.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Comparison {
    /// One entry per process, in pid order.
    pub processes: Vec<ProcessComparison>,
    /// Things to know about the comparison itself (a single dump, unparsable times).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The comparison of the dumps of one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessComparison {
    pub pid: Pid,
    pub comm: String,
    pub exe: String,
    /// How many dumps, and when the first and the last were taken.
    pub dumps: usize,
    pub first: String,
    pub last: String,
    /// From the first dump to the last.
    pub seconds: f64,
    /// Threads that did not move, grouped by where they are stuck; longest first.
    pub stuck: Vec<StuckGroup>,
    /// Threads present in the last two dumps that moved between them.
    pub moved: usize,
    /// Threads that used CPU, most first.
    pub cpu: Vec<CpuUse>,
    /// Threads not in the first dump.
    pub appeared: Vec<ThreadSeen>,
    /// Threads not in the last dump.
    pub exited: Vec<ThreadSeen>,
}

/// A thread, by tid and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRef {
    pub tid: Tid,
    pub name: String,
}

/// Threads stuck in the same place for the same number of dumps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckGroup {
    pub threads: Vec<ThreadRef>,
    /// Consecutive dumps, ending with the last, in which they did not move.
    pub dumps: usize,
    /// When the first of those dumps was taken.
    pub since: String,
    /// Stuck for at least this long (from the first of those dumps to the last).
    pub seconds: f64,
    /// The system call, in words (from the last dump, first thread).
    pub syscall: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    /// The top of the stack, innermost first (empty for kernel-only dumps).
    #[serde(default)]
    pub stack: String,
}

/// CPU used by a thread between its first and last dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    pub tid: Tid,
    pub name: String,
    /// Clock ticks of user and system time used in the interval.
    pub user_ticks: u64,
    pub system_ticks: u64,
    /// CPU seconds used, and as a share of the interval (100 = one CPU all the time).
    pub cpu_seconds: f64,
    pub percent: f64,
    /// The interval (from the first to the last dump that has the thread).
    pub seconds: f64,
}

/// A thread that came or went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadSeen {
    pub tid: Tid,
    pub name: String,
    /// The first and last dump that have it.
    pub first_seen: String,
    pub last_seen: String,
    pub dumps: usize,
}

/// Why dumps could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", shown(.path))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", shown(.path))]
    NotADump {
        path: PathBuf,
        #[source]
        source: crate::model::DumpParseError,
    },
    #[error("no JSON dumps (stackdump-*.json) in {}", shown(.0))]
    Empty(PathBuf),
    #[error("{}: {}; refused", shown(.path), crate::escape::Esc(.why))]
    Refused { path: PathBuf, why: String },
}

/// A path in a message, escaped (a name in a directory may hold terminal escapes or newlines).
fn shown(p: &Path) -> String {
    crate::escape::field(&p.to_string_lossy()).into_owned()
}

/// The bytes of a dump file, read safely: opened the one way of [`crate::kernel::rootfs`] (`O_PATH`,
/// then `fstat`: a FIFO or a device is neither waited on nor opened), a regular file, and at most [`crate::limits::MAX_DUMP_FILE`] bytes (checked
/// before reading, and the read stops there whatever `fstat` said).
fn read_dump_file(path: &Path) -> Result<String, LoadError> {
    use std::io::Read;
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let refused = |why: String| LoadError::Refused {
        path: path.to_path_buf(),
        why,
    };
    // The one way to open a file a target may have made (crate::kernel::rootfs): no symlink (a user
    // could plant one to a file only root may read in a directory root then compares), a FIFO,
    // a device or a socket refused before it is opened, and with the directory owner's rights
    // when that is another user.
    use crate::kernel::rootfs::{as_target, open_file, FsCreds, SafeOpenError};
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| refused("not a file name".into()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = nix::fcntl::open(
        parent,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io(std::io::Error::from(e)))?;
    let owner = nix::sys::stat::fstat(&dir).map_err(|e| io(std::io::Error::from(e)))?;
    let creds = FsCreds {
        uid: owner.st_uid,
        gid: owner.st_gid,
        groups: Vec::new(),
    };
    let me = nix::unistd::geteuid().as_raw();
    let creds = (owner.st_uid != 0 && owner.st_uid != me).then_some(creds);
    let shown = path.to_string_lossy();
    let mut opened = None;
    as_target(creds.as_ref(), || {
        opened = Some(open_file(
            std::os::fd::AsFd::as_fd(&dir),
            name,
            None,
            &shown,
        ));
        Ok(())
    })
    .map_err(io)?;
    let f = opened
        .expect("as_target ran the open")
        .map_err(|e| match e {
            SafeOpenError::Io { source, .. } => io(source),
            SafeOpenError::NotFound { .. } => io(std::io::Error::from_raw_os_error(libc::ENOENT)),
            SafeOpenError::Symlink { .. } => {
                refused("a symbolic link, not a dump file (links are not followed)".into())
            }
            SafeOpenError::NotRegular { kind, .. } => {
                refused(format!("{kind}, not a regular file (not a dump)"))
            }
            other => refused(other.to_string()),
        })?;
    let meta = f.metadata().map_err(io)?;
    let limit = crate::limits::MAX_DUMP_FILE;
    if meta.len() > limit {
        return Err(refused(format!(
            "{} bytes, larger than the {} MiB limit for a dump",
            meta.len(),
            limit >> 20
        )));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(refused(format!(
            "grew beyond the {} MiB limit for a dump while read",
            limit >> 20
        )));
    }
    String::from_utf8(buf).map_err(|_| refused("not UTF-8 text, not a dump file".into()))
}

/// Read the dumps named by `paths`: JSON dump files, or directories whose `stackdump-*.json`
/// files are all read. Sorted by process, then time. Each file must be a regular file (no
/// symlink, FIFO or device) of at most [`crate::limits::MAX_DUMP_FILE`] bytes, and all of them
/// together at most [`crate::limits::MAX_COMPARE_TOTAL`]: see `read_dump_file`.
pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Dump>, LoadError> {
    let mut files = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let meta = std::fs::metadata(p).map_err(|source| LoadError::Io {
            path: p.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| LoadError::Io {
                    path: p.to_path_buf(),
                    source,
                })?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("stackdump-") && n.ends_with(".json"))
                })
                .collect();
            if found.is_empty() {
                return Err(LoadError::Empty(p.to_path_buf()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.to_path_buf());
        }
    }
    let mut dumps = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for f in files {
        let text = read_dump_file(&f)?;
        total += text.len() as u64;
        if total > crate::limits::MAX_COMPARE_TOTAL {
            return Err(LoadError::Refused {
                path: f.clone(),
                why: format!(
                    "the dumps read so far and this one exceed the {} MiB limit for one comparison",
                    crate::limits::MAX_COMPARE_TOTAL >> 20
                ),
            });
        }
        let dump = Dump::from_json(&text).map_err(|source| LoadError::NotADump {
            path: f.clone(),
            source,
        })?;
        dumps.push(dump);
    }
    sort(&mut dumps);
    Ok(dumps)
}

fn sort(dumps: &mut [Dump]) {
    dumps.sort_by(|a, b| {
        a.pid
            .cmp(&b.pid)
            .then_with(|| millis(&a.time).cmp(&millis(&b.time)))
            .then_with(|| a.capture.sequence.cmp(&b.capture.sequence))
    });
}

/// Milliseconds since the epoch of `YYYY-mm-ddTHH:MM:SS[.mmm]Z`.
pub fn millis(time: &str) -> Option<i64> {
    let t = time.strip_suffix('Z')?;
    let (date, clock) = t.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut c = hms.splitn(3, ':');
    let h: i64 = c.next()?.parse().ok()?;
    let m: i64 = c.next()?.parse().ok()?;
    let s: i64 = c.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + m * 60 + s) * 1000) + ms)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Compare dumps (in any order; they are sorted by process and time).
pub fn compare(dumps: &[Dump]) -> Comparison {
    let mut sorted = dumps.to_vec();
    sort(&mut sorted);
    let mut out = Comparison::default();
    if sorted.is_empty() {
        out.warnings.push("no dumps to compare".into());
        return out;
    }
    let mut by_pid: BTreeMap<Pid, Vec<&Dump>> = BTreeMap::new();
    for d in &sorted {
        by_pid.entry(d.pid).or_default().push(d);
    }
    let hz = clock_ticks_per_second();
    for (pid, ds) in by_pid {
        if ds.iter().any(|d| millis(&d.time).is_none()) {
            out.warnings.push(format!(
                "pid {pid}: some dump times are not RFC 3339 UTC; durations are unknown (0)"
            ));
        }
        if ds.len() < 2 {
            out.warnings.push(format!(
                "pid {pid}: only one dump; at least two are needed to see what moved"
            ));
        }
        let exes: BTreeSet<&str> = ds.iter().map(|d| d.exe.as_str()).collect();
        if exes.len() > 1 {
            out.warnings.push(format!(
                "pid {pid}: the dumps come from different programs ({}): the pid was reused?",
                exes.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        out.processes.push(compare_process(pid, &ds, hz));
    }
    out
}

fn seconds_between(a: &Dump, b: &Dump) -> f64 {
    match (millis(&a.time), millis(&b.time)) {
        (Some(x), Some(y)) => (y - x) as f64 / 1000.0,
        _ => 0.0,
    }
}

/// Whether the dump that contains `t` sent it a signal (its wake-up shows in the next dump's
/// context switch counts).
fn was_signalled(d: &Dump, t: &Thread) -> bool {
    t.signalled
        || (d.capture.method == CaptureMethod::Signal
            && matches!(
                t.capture,
                CaptureStatus::Ok | CaptureStatus::NoResponse | CaptureStatus::Failed
            ))
}

/// Did thread `a` (in dump `da`) stay exactly where it was until `b` (the next dump)?
pub fn unmoved(da: &Dump, a: &Thread, b: &Thread) -> bool {
    let same_place = match (&a.kernel.syscall, &b.kernel.syscall) {
        (
            SyscallState::InSyscall {
                nr: n1,
                args: a1,
                sp: s1,
                pc: p1,
                ..
            },
            SyscallState::InSyscall {
                nr: n2,
                args: a2,
                sp: s2,
                pc: p2,
                ..
            },
        ) => n1 == n2 && a1 == a2 && s1 == s2 && p1 == p2,
        (SyscallState::Blocked { sp: s1, pc: p1 }, SyscallState::Blocked { sp: s2, pc: p2 }) => {
            s1 == s2 && p1 == p2
        }
        _ => false,
    };
    if !same_place || a.kernel.wchan != b.kernel.wchan {
        return false;
    }
    // The native stacks (interpreter frames such as Python's are left out: whether they could
    // be read may vary from dump to dump).
    let ips = |t: &Thread| {
        t.frames
            .iter()
            .filter(|f| f.python.is_none())
            .map(|f| f.ip)
            .collect::<Vec<_>>()
    };
    let (sa, sb) = (ips(a), ips(b));
    if !sa.is_empty() && !sb.is_empty() && sa != sb {
        return false;
    }
    let switches =
        |t: &Thread| t.kernel.voluntary_ctxt_switches + t.kernel.nonvoluntary_ctxt_switches;
    let cpu = |t: &Thread| t.kernel.utime + t.kernel.stime;
    let (switch_allowance, cpu_allowance) = if was_signalled(da, a) { (2, 1) } else { (0, 0) };
    switches(b) >= switches(a)
        && switches(b) - switches(a) <= switch_allowance
        && cpu(b) >= cpu(a)
        && cpu(b) - cpu(a) <= cpu_allowance
}

fn compare_process(pid: Pid, ds: &[&Dump], hz: f64) -> ProcessComparison {
    let first = ds[0];
    let last = ds[ds.len() - 1];
    let mut pc = ProcessComparison {
        pid,
        comm: last.comm.clone(),
        exe: last.exe.clone(),
        dumps: ds.len(),
        first: first.time.clone(),
        last: last.time.clone(),
        seconds: seconds_between(first, last),
        stuck: Vec::new(),
        moved: 0,
        cpu: Vec::new(),
        appeared: Vec::new(),
        exited: Vec::new(),
    };
    let is_ours = |t: &Thread| t.capture == CaptureStatus::Dumper;
    // Every tid, with the index of each dump that has it.
    let mut seen: BTreeMap<Tid, Vec<usize>> = BTreeMap::new();
    for (i, d) in ds.iter().enumerate() {
        for t in &d.threads {
            if !is_ours(t) && t.capture != CaptureStatus::Exited {
                seen.entry(t.tid).or_default().push(i);
            }
        }
    }
    let n = ds.len();
    // Stuck: runs of unmoved pairs ending at the last dump.
    struct Stuck<'a> {
        tid: Tid,
        start: usize,
        thread: &'a Thread,
    }
    let mut stuck: Vec<Stuck> = Vec::new();
    for (tid, idx) in &seen {
        if idx.last() != Some(&(n - 1)) || n < 2 {
            continue;
        }
        let mut start = n - 1;
        while start > 0 && idx.contains(&(start - 1)) {
            let (Some(a), Some(b)) = (ds[start - 1].thread(*tid), ds[start].thread(*tid)) else {
                break;
            };
            if !unmoved(ds[start - 1], a, b) {
                break;
            }
            start -= 1;
        }
        let thread = last.thread(*tid).expect("present in the last dump");
        if start < n - 1 {
            stuck.push(Stuck {
                tid: *tid,
                start,
                thread,
            });
        } else if idx.contains(&(n - 2)) {
            pc.moved += 1;
        }
    }
    // Group: same run, same place.
    let mut groups: BTreeMap<(usize, String, Option<String>, String), Vec<&Stuck>> =
        BTreeMap::new();
    for s in &stuck {
        let key = (
            s.start,
            crate::kernel::syscalls::syscall_name(&s.thread.kernel.syscall),
            s.thread.kernel.wchan.clone(),
            crate::analysis::diagnose::stack_preview(s.thread, 6),
        );
        groups.entry(key).or_default().push(s);
    }
    for ((start, _, wchan, stack), members) in groups {
        let t = members[0].thread;
        pc.stuck.push(StuckGroup {
            threads: members
                .iter()
                .map(|s| ThreadRef {
                    tid: s.tid,
                    name: s.thread.display_name().to_string(),
                })
                .collect(),
            dumps: n - start,
            since: ds[start].time.clone(),
            seconds: seconds_between(ds[start], last),
            syscall: crate::analysis::syscall::syscall_in(&t.kernel.syscall, last.process.as_ref()),
            wchan,
            stack,
        });
    }
    pc.stuck.sort_by(|a, b| {
        b.dumps
            .cmp(&a.dumps)
            .then_with(|| b.threads.len().cmp(&a.threads.len()))
            .then_with(|| a.threads[0].tid.cmp(&b.threads[0].tid))
    });
    // CPU between the first and last dump of each thread.
    for (tid, idx) in &seen {
        let (f, l) = (idx[0], idx[idx.len() - 1]);
        if f == l {
            continue;
        }
        let (Some(a), Some(b)) = (ds[f].thread(*tid), ds[l].thread(*tid)) else {
            continue;
        };
        let user = b.kernel.utime.saturating_sub(a.kernel.utime);
        let system = b.kernel.stime.saturating_sub(a.kernel.stime);
        if user + system == 0 {
            continue;
        }
        let seconds = seconds_between(ds[f], ds[l]);
        let cpu_seconds = (user + system) as f64 / hz;
        pc.cpu.push(CpuUse {
            tid: *tid,
            name: b.display_name().to_string(),
            user_ticks: user,
            system_ticks: system,
            cpu_seconds,
            percent: if seconds > 0.0 {
                cpu_seconds / seconds * 100.0
            } else {
                0.0
            },
            seconds,
        });
    }
    pc.cpu.sort_by(|a, b| {
        (b.user_ticks + b.system_ticks)
            .cmp(&(a.user_ticks + a.system_ticks))
            .then_with(|| a.tid.cmp(&b.tid))
    });
    // Came and went.
    for (tid, idx) in &seen {
        let (f, l) = (idx[0], idx[idx.len() - 1]);
        let name = ds[l]
            .thread(*tid)
            .map(|t| t.display_name().to_string())
            .unwrap_or_default();
        let entry = ThreadSeen {
            tid: *tid,
            name,
            first_seen: ds[f].time.clone(),
            last_seen: ds[l].time.clone(),
            dumps: idx.len(),
        };
        if f > 0 {
            pc.appeared.push(entry.clone());
        }
        if l < n - 1 {
            pc.exited.push(entry);
        }
    }
    pc
}

/// The `format` of the comparison's JSON document.
pub const COMPARE_FORMAT: &str = "stackdump-compare/1";

/// The comparison as JSON: `{"format": "stackdump-compare/1", "processes": [...], ...}`.
pub fn json(c: &Comparison) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        format: &'static str,
        #[serde(flatten)]
        comparison: &'a Comparison,
    }
    let doc = Doc {
        format: COMPARE_FORMAT,
        comparison: c,
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn names(threads: &[ThreadRef]) -> String {
    const SHOWN: usize = 12;
    let mut s = threads
        .iter()
        .take(SHOWN)
        .map(|t| format!("{} ({})", Esc(&t.name), t.tid))
        .collect::<Vec<_>>()
        .join(", ");
    if threads.len() > SHOWN {
        let _ = write!(s, " and {} more", threads.len() - SHOWN);
    }
    s
}

/// The comparison in words. Names and stacks from the dumps are escaped
/// ([`crate::escape`]): the text has no control character but its own line feeds.
pub fn text(c: &Comparison) -> String {
    let out = text_unchecked(c);
    crate::escape::text(&out).into_owned()
}

fn text_unchecked(c: &Comparison) -> String {
    let mut out = String::new();
    for w in &c.warnings {
        let _ = writeln!(out, "warning: {}", Esc(w));
    }
    for p in &c.processes {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "pid {} ({}): {} dumps from {} to {} ({:.1} s)",
            p.pid,
            Esc(&p.comm),
            p.dumps,
            Esc(&p.first),
            Esc(&p.last),
            p.seconds
        );
        if p.stuck.is_empty() {
            out.push_str("\nStuck: none (every thread moved between the last two dumps)\n");
        } else {
            out.push_str(
                "\nStuck (same stack, same system call, no context switch between dumps):\n",
            );
            for g in &p.stuck {
                let _ = writeln!(
                    out,
                    "  * {} stuck for at least {:.1} s across {} dumps: {}",
                    if g.threads.len() == 1 {
                        "1 thread".to_string()
                    } else {
                        format!("{} threads", g.threads.len())
                    },
                    g.seconds,
                    g.dumps,
                    names(&g.threads)
                );
                let _ = write!(out, "      in {}", Esc(&g.syscall));
                if let Some(w) = &g.wchan {
                    let _ = write!(out, ", wchan {}", Esc(w));
                }
                out.push('\n');
                if !g.stack.is_empty() {
                    let _ = writeln!(out, "      stack: {}", Esc(&g.stack));
                }
            }
        }
        if p.moved > 0 {
            let _ = writeln!(
                out,
                "  ({} thread(s) moved between the last two dumps)",
                p.moved
            );
        }
        if !p.cpu.is_empty() {
            out.push_str("\nCPU (user+system, like top -H):\n");
            for u in p.cpu.iter().take(20) {
                let _ = writeln!(
                    out,
                    "  {:>6.1}%  {:.2} s in {:.1} s  {} ({})  user {} sys {} ticks",
                    u.percent,
                    u.cpu_seconds,
                    u.seconds,
                    Esc(&u.name),
                    u.tid,
                    u.user_ticks,
                    u.system_ticks
                );
            }
            if p.cpu.len() > 20 {
                let _ = writeln!(out, "  … and {} more", p.cpu.len() - 20);
            }
        }
        if !p.appeared.is_empty() || !p.exited.is_empty() {
            out.push_str("\nThreads that came and went:\n");
            for t in &p.appeared {
                let _ = writeln!(
                    out,
                    "  + {} ({}) appeared: first seen {}, in {} dump(s)",
                    Esc(&t.name),
                    t.tid,
                    Esc(&t.first_seen),
                    t.dumps
                );
            }
            for t in &p.exited {
                let _ = writeln!(
                    out,
                    "  - {} ({}) exited: last seen {}, in {} dump(s)",
                    Esc(&t.name),
                    t.tid,
                    Esc(&t.last_seen),
                    t.dumps
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diagnose::tests::{dump, frames, in_syscall, thread};

    fn at(mut d: Dump, time: &str, seq: u64) -> Dump {
        d.time = time.into();
        d.capture.sequence = seq;
        d
    }

    fn worker(tid: i32, switches: u64, ticks: u64) -> Thread {
        let mut t = thread(
            tid,
            &format!("worker-{tid}"),
            in_syscall("write", [2, 0x5500, 301, 0, 0, 0], Some((2, "pipe:[9]"))),
            Some("pipe_write"),
        );
        t.frames = frames(&["write", "print", "worker_main"]);
        t.kernel.voluntary_ctxt_switches = switches;
        t.kernel.utime = ticks;
        t
    }

    fn spinner(ticks: u64) -> Thread {
        let mut t = thread(50, "spinner", SyscallState::Running, None);
        t.kernel.state = "R".into();
        t.kernel.utime = ticks;
        t
    }

    #[test]
    fn time_parsing() {
        assert_eq!(millis("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(millis("2026-11-25T16:47:37.123Z"), Some(1_795_625_257_123));
        assert_eq!(millis("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(millis("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
        assert_eq!(millis("2000-13-29T00:00:00Z"), None);
        assert_eq!(millis("yesterday"), None);
        assert_eq!(millis("2000-01-01T00:00:00.éZ"), None);
    }

    #[test]
    fn stuck_cpu_and_churn() {
        let times = [
            "2026-11-25T17:00:00.000Z",
            "2026-11-25T17:00:10.000Z",
            "2026-11-25T17:00:20.000Z",
            "2026-11-25T17:00:30.000Z",
            "2026-11-25T17:00:40.000Z",
        ];
        let mut dumps = Vec::new();
        for (i, time) in times.iter().enumerate() {
            let i = i as u64;
            let mut threads = vec![worker(101, 7, 3), worker(102, 9, 3), spinner(100 + 250 * i)];
            // worker 103 moves in the middle (a context switch), then stays.
            threads.push(worker(103, if i < 2 { 1 } else { 2 }, 1));
            // worker 104 moves every time.
            threads.push(worker(104, i, 1));
            if i == 0 {
                threads.push(thread(60, "gone", in_syscall("read", [0; 6], None), None));
            }
            if i >= 3 {
                threads.push(thread(70, "new", in_syscall("read", [0; 6], None), None));
            }
            threads.sort_by_key(|t| t.tid);
            dumps.push(at(dump(threads), time, i + 1));
        }
        dumps.reverse(); // any order
        let c = compare(&dumps);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.processes.len(), 1);
        let p = &c.processes[0];
        assert_eq!(p.dumps, 5);
        assert_eq!(p.seconds, 40.0);
        let g = &p.stuck[0];
        let tids: Vec<i32> = g.threads.iter().map(|t| t.tid.0).collect();
        assert_eq!(tids, [101, 102]);
        assert_eq!((g.dumps, g.seconds), (5, 40.0));
        assert!(
            g.syscall.starts_with("write(fd 2 → pipe:[9]"),
            "{}",
            g.syscall
        );
        // 103 stuck since the third dump, 70 since it appeared in the fourth.
        let rest: Vec<(Vec<i32>, usize)> = p.stuck[1..]
            .iter()
            .map(|g| (g.threads.iter().map(|t| t.tid.0).collect(), g.dumps))
            .collect();
        assert_eq!(rest, vec![(vec![103], 3), (vec![70], 2)]);
        assert_eq!(p.moved, 2, "104 and the spinner moved"); // running is never "stuck"
        assert_eq!(p.cpu[0].tid, Tid(50));
        assert_eq!(p.cpu[0].user_ticks, 1000);
        let hz = clock_ticks_per_second();
        assert!((p.cpu[0].percent - 1000.0 / hz / 40.0 * 100.0).abs() < 1e-6);
        assert_eq!(p.cpu.len(), 1, "{:?}", p.cpu);
        assert_eq!(p.appeared.iter().map(|t| t.tid.0).collect::<Vec<_>>(), [70]);
        assert_eq!(p.exited.iter().map(|t| t.tid.0).collect::<Vec<_>>(), [60]);
        let text = text(&c);
        assert!(
            text.contains("2 threads stuck for at least 40.0 s across 5 dumps: worker-101 (101), worker-102 (102)"),
            "{text}"
        );
        assert!(text.contains("+ new (70) appeared"), "{text}");
        assert!(text.contains("- gone (60) exited"), "{text}");
        // JSON round trip.
        let back: Comparison = serde_json::from_str(&json(&c)).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn threads_are_called_by_their_python_names() {
        let times = ["2026-11-25T17:00:00.000Z", "2026-11-25T17:00:10.000Z"];
        let dumps: Vec<Dump> = times
            .iter()
            .enumerate()
            .map(|(i, time)| {
                let mut threads = vec![worker(101, 7, 3), spinner(100 + 250 * i as u64)];
                threads[0].name = "python3".into();
                threads[0].python = Some(crate::analysis::diagnose::gil_tests::py(
                    "db-writer",
                    false,
                    false,
                    false,
                ));
                threads[1].name = "python3".into();
                threads[1].python = Some(crate::analysis::diagnose::gil_tests::py(
                    "cruncher", true, false, true,
                ));
                if i == 1 {
                    let mut t = thread(70, "python3", in_syscall("read", [0; 6], None), None);
                    t.python = Some(crate::analysis::diagnose::gil_tests::py(
                        "late", false, false, false,
                    ));
                    threads.push(t);
                }
                at(dump(threads), time, i as u64 + 1)
            })
            .collect();
        let c = compare(&dumps);
        let p = &c.processes[0];
        assert_eq!(p.stuck[0].threads[0].name, "db-writer", "{:?}", p.stuck);
        assert_eq!(p.cpu[0].name, "cruncher", "{:?}", p.cpu);
        assert_eq!(p.appeared[0].name, "late", "{:?}", p.appeared);
        let out = text(&c);
        assert!(out.contains("db-writer (101)"), "{out}");
        assert!(!out.contains("python3 ("), "{out}");
    }

    #[test]
    fn the_dumps_own_signal_is_allowed_once() {
        let a = worker(1, 10, 0);
        let mut b = worker(1, 11, 0);
        let d = dump(vec![a.clone()]);
        assert!(
            !unmoved(&d, &a, &b),
            "a context switch without a signal is movement"
        );
        let mut signalled = a.clone();
        signalled.signalled = true;
        assert!(unmoved(&d, &signalled, &b));
        b.kernel.voluntary_ctxt_switches = 20;
        assert!(!unmoved(&d, &signalled, &b));
        // Same counters, different stack.
        let mut c = worker(1, 10, 0);
        c.frames.pop();
        assert!(!unmoved(&d, &a, &c));
        // Interpreter frames present in one dump only: the native stack is what counts.
        let mut p = worker(1, 10, 0);
        let mut py = p.frames[0].clone();
        py.module = None;
        py.ip = crate::model::Addr(0xdead);
        py.python = Some(crate::model::PyFrameInfo {
            code: crate::model::Addr(0xc0de),
            name: "handler".into(),
            first_line: Some(3),
            entry: true,
            frame: None,
            locals: Vec::new(),
        });
        p.frames.insert(1, py);
        assert!(unmoved(&d, &a, &p));
        // Same stack, different arguments (another write).
        let mut e = worker(1, 10, 0);
        if let SyscallState::InSyscall { args, .. } = &mut e.kernel.syscall {
            args[1] = crate::model::Addr(0x6600);
        }
        assert!(!unmoved(&d, &a, &e));
    }

    #[test]
    fn one_dump_and_two_processes() {
        let mut other = dump(vec![worker(5, 0, 0)]);
        other.pid = Pid(7);
        let c = compare(&[dump(vec![worker(1, 0, 0)]), other]);
        assert_eq!(c.processes.len(), 2);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.processes.iter().all(|p| p.stuck.is_empty()));
        assert!(compare(&[]).processes.is_empty());
    }

    #[test]
    fn load_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let d1 = at(dump(vec![worker(1, 0, 0)]), "2026-11-25T17:00:10.000Z", 2);
        let d0 = at(dump(vec![worker(1, 0, 0)]), "2026-11-25T17:00:00.000Z", 1);
        for (name, d) in [
            ("stackdump-4242-b.json", &d1),
            ("stackdump-4242-a.json", &d0),
        ] {
            std::fs::write(dir.path().join(name), serde_json::to_vec(d).unwrap()).unwrap();
        }
        std::fs::write(dir.path().join("stackdump-4242-a.txt"), "text").unwrap();
        let loaded = load(&[dir.path()]).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].time, d0.time);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{}").unwrap();
        assert!(matches!(load(&[&bad]), Err(LoadError::NotADump { .. })));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(load(&[empty.path()]), Err(LoadError::Empty(_))));
        assert!(matches!(
            load(&[dir.path().join("missing.json")]),
            Err(LoadError::Io { .. })
        ));
    }
}
