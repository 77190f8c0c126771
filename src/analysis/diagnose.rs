//! Findings: what looks wrong, one line each with its evidence, computed from an assembled
//! [`Dump`] and its [`ProcessFacts`]. [`findings`] is a pure function
//! of the dump (tested on synthetic dumps); [`analyze`] gathers the facts first (see
//! [`facts`]) and is what the dumper and `stackdump inspect` call.
//!
//! Most important first: threads blocked on a full pipe, deadlocks, lock waits with their owner,
//! sockets the process forgot (`CLOSE_WAIT`), connections nobody accepts, then threads that share
//! one stack.

use crate::analysis::facts::{self, syscall_fd, waits_in_pipe_write};
use crate::analysis::syscall::syscall_in;
use crate::kernel::fds;
use crate::kernel::syscalls::syscall_name;
use crate::model::{
    CaptureStatus, Dump, Finding, FutexFacts, PipeFacts, ProcessFacts, SyscallState, Thread, Tid,
};
use std::collections::{BTreeMap, HashMap};

/// Gather the process facts (inside the process or from outside), then compute the findings.
/// Facts go to `dump.process`, problems to `dump.errors`, findings to the front of
/// `dump.findings`.
pub fn analyze(dump: &mut Dump, opts: &facts::Options) {
    let (process, errors) = facts::gather(dump, opts);
    dump.process = Some(process);
    dump.errors.extend(errors);
    let mut found = findings(dump);
    found.append(&mut dump.findings);
    dump.findings = found;
}

/// The findings of a dump, most important first.
pub fn findings(dump: &Dump) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(p) = &dump.process {
        full_pipes(dump, p, &mut out);
        lock_waits(dump, p, &mut out);
        close_wait(p, &mut out);
        listen_backlog(p, &mut out);
    }
    gil_contention(dump, &mut out);
    same_stacks(dump, &mut out);
    out
}

/// Threads waiting for the GIL while a thread holds it: who holds it, what it is doing, who
/// waits (CPython; from each thread's `python.gil` and `python.waits_for_gil`).
fn gil_contention(dump: &Dump, out: &mut Vec<Finding>) {
    let waiters: Vec<Tid> = dump
        .threads
        .iter()
        .filter(|t| t.python.as_ref().is_some_and(|p| p.waits_for_gil))
        .map(|t| t.tid)
        .collect();
    if waiters.is_empty() {
        return;
    }
    let holders: Vec<&Thread> = dump
        .threads
        .iter()
        .filter(|t| t.python.as_ref().is_some_and(|p| p.gil == Some(true)))
        .collect();
    let waiting = plural(waiters.len(), "thread waits", "threads wait");
    let mut evidence = Vec::new();
    let summary = match holders[..] {
        [] => format!(
            "{waiting} for the GIL, which no thread held when it was read (it was changing hands)"
        ),
        [h] => {
            let doing = if h.kernel.state == "R" {
                "running".to_string()
            } else {
                format!(
                    "not running: {} (holding the GIL)",
                    syscall_in(&h.kernel.syscall, dump.process.as_ref())
                )
            };
            format!(
                "the GIL is held by '{}' (tid {}), {doing}; {waiting} for it",
                h.display_name(),
                h.tid
            )
        }
        _ => format!(
            "{waiting} for a GIL; {} threads hold one (one GIL per interpreter): {}",
            holders.len(),
            thread_list(dump, &holders.iter().map(|t| t.tid).collect::<Vec<_>>())
        ),
    };
    for h in &holders {
        evidence.push(format!(
            "holder {}: {}",
            who(dump, h.tid),
            stack_preview(h, 4)
        ));
    }
    evidence.push(format!("waiting: {}", thread_list(dump, &waiters)));
    let mut threads: Vec<Tid> = holders.iter().map(|t| t.tid).collect();
    threads.extend(waiters);
    out.push(Finding {
        kind: "gil_contention".into(),
        summary,
        threads,
        evidence,
    });
}

/// `name (tid)` for a thread of the dump.
fn who(dump: &Dump, tid: Tid) -> String {
    match dump.thread(tid) {
        Some(t) if !t.display_name().is_empty() => format!("{} ({})", t.display_name(), tid),
        _ => format!("{tid}"),
    }
}

fn thread_list(dump: &Dump, tids: &[Tid]) -> String {
    const SHOWN: usize = 12;
    let mut s = tids
        .iter()
        .take(SHOWN)
        .map(|t| who(dump, *t))
        .collect::<Vec<_>>()
        .join(", ");
    if tids.len() > SHOWN {
        s.push_str(&format!(" and {} more", tids.len() - SHOWN));
    }
    s
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn is_read_end(end: &str) -> bool {
    end == "read" || end == "read+write"
}

/// Threads blocked writing to a full pipe, with who holds its read end and whether they read.
fn full_pipes(dump: &Dump, p: &ProcessFacts, out: &mut Vec<Finding>) {
    // Writers by pipe inode.
    let mut writers: BTreeMap<u64, Vec<&Thread>> = BTreeMap::new();
    for t in &dump.threads {
        let Some((name, _, Some(target))) = syscall_fd(t) else {
            continue;
        };
        if !fds::writes_fd(name) {
            continue;
        }
        if let Some(inode) = fds::pipe_inode(target) {
            writers.entry(inode).or_default().push(t);
        }
    }
    for (inode, threads) in writers {
        let pipe = p.pipe(inode);
        let full = pipe.is_some_and(|p| p.full) || threads.iter().any(|t| waits_in_pipe_write(t));
        if !full {
            continue;
        }
        let mut names: Vec<&str> = threads
            .iter()
            .filter_map(|t| syscall_fd(t))
            .map(|s| s.0)
            .collect();
        names.dedup();
        let mut fd_list: Vec<i32> = threads
            .iter()
            .filter_map(|t| syscall_fd(t))
            .map(|s| s.1)
            .collect();
        fd_list.sort_unstable();
        fd_list.dedup();
        let fd_text = fd_list
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let call = if names.len() == 1 {
            names[0].to_string()
        } else {
            names.join("/")
        };
        let mut summary = format!(
            "{} blocked in {call}(fd {fd_text} → pipe:[{inode}]){}: the pipe is full",
            plural(threads.len(), "thread", "threads"),
            python_origin(&threads)
        );
        let mut evidence = Vec::new();
        match pipe {
            Some(PipeFacts {
                queued: Some(q),
                capacity: Some(c),
                ..
            }) => {
                summary.push_str(&format!(" ({q} of {c} bytes)"));
                evidence.push(format!(
                    "pipe:[{inode}]: {q} of {c} bytes queued, no room for the next write"
                ));
            }
            Some(PipeFacts {
                unknown: Some(why), ..
            }) => {
                summary.push_str(" (its writers sleep in pipe_write)");
                evidence.push(format!("pipe:[{inode}]: fill level unknown: {why}"));
            }
            _ => summary.push_str(" (its writers sleep in pipe_write)"),
        }
        if let Some(pipe) = pipe {
            summary.push_str(&reader_clause(dump, pipe, &mut evidence));
        }
        evidence.push(format!(
            "threads: {}",
            thread_list(dump, &tids_of(&threads))
        ));
        out.push(Finding {
            kind: "full_pipe".into(),
            summary,
            threads: tids_of(&threads),
            evidence,
        });
    }
}

fn tids_of(threads: &[&Thread]) -> Vec<Tid> {
    threads.iter().map(|t| t.tid).collect()
}

/// `; its read end is held by pid 24185 (sleep) fd 0, which is not reading`
fn reader_clause(dump: &Dump, pipe: &PipeFacts, evidence: &mut Vec<String>) -> String {
    let inode = pipe.inode;
    for f in &pipe.fds {
        evidence.push(format!("this process: fd {} ({} end)", f.fd, f.end));
    }
    for h in &pipe.others {
        let mut line = format!(
            "pid {} ({}) holds fd {} ({} end)",
            h.pid, h.comm, h.fd, h.end
        );
        if let Some(doing) = &h.doing {
            line.push_str(&format!("; its threads: {doing}"));
        }
        evidence.push(line);
    }
    if let Some(note) = &pipe.others_note {
        evidence.push(format!(
            "search for other holders of pipe:[{inode}]: {note}"
        ));
    }
    let other_readers: Vec<_> = pipe.others.iter().filter(|h| is_read_end(&h.end)).collect();
    let own_readers: Vec<i32> = pipe
        .fds
        .iter()
        .filter(|f| is_read_end(&f.end))
        .map(|f| f.fd)
        .collect();
    let mut parts = Vec::new();
    if !other_readers.is_empty() {
        let shown: Vec<String> = other_readers
            .iter()
            .take(3)
            .map(|h| format!("pid {} ({}) fd {}", h.pid, h.comm, h.fd))
            .collect();
        let mut s = format!("its read end is held by {}", shown.join(", "));
        if other_readers.len() > 3 {
            s.push_str(&format!(" and {} more", other_readers.len() - 3));
        }
        let one = other_readers.len() == 1;
        if other_readers.iter().all(|h| h.reading == Some(false)) {
            s.push_str(if one {
                ", which is not reading"
            } else {
                ", none of which is reading"
            });
        } else if other_readers.iter().any(|h| h.reading == Some(true)) {
            s.push_str(if one {
                ", which is reading it (a slow reader)"
            } else {
                ", one of which is reading it (a slow reader)"
            });
        }
        parts.push(s);
    }
    if !own_readers.is_empty() {
        let fds_text = own_readers
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let reading = dump.threads.iter().any(|t| {
            syscall_fd(t)
                .is_some_and(|(name, fd, _)| fds::reads_fd(name) && own_readers.contains(&fd))
        });
        parts.push(format!(
            "its read end is held by this process itself (fd {fds_text}){}",
            if reading {
                ""
            } else {
                ", and none of its threads is reading it"
            }
        ));
    }
    if parts.is_empty() {
        if pipe.others_checked {
            return "; no process we could look into holds its read end".into();
        }
        return String::new();
    }
    format!("; {}", parts.join("; "))
}

/// Lock waits whose owner is known, and deadlocks among them.
fn lock_waits(dump: &Dump, p: &ProcessFacts, out: &mut Vec<Finding>) {
    // waits_for: waiter → (futex, owner)
    let mut waits_for: HashMap<Tid, (&FutexFacts, Tid)> = HashMap::new();
    for f in &p.futexes {
        if let Some(owner) = f.owner {
            for w in &f.waiters {
                waits_for.insert(*w, (f, owner));
            }
        }
    }
    // Deadlocks: cycles in the waits-for graph (each reported once, from its smallest tid).
    let mut reported: Vec<Tid> = Vec::new();
    let mut starts: Vec<Tid> = waits_for.keys().copied().collect();
    starts.sort();
    for start in starts {
        let mut path = vec![start];
        let mut cur = start;
        while let Some((_, owner)) = waits_for.get(&cur) {
            if *owner == start {
                // A cycle back to where we began.
                if path.iter().any(|t| reported.contains(t)) {
                    break;
                }
                reported.extend(path.iter().copied());
                let mut steps = Vec::new();
                for t in &path {
                    let (f, owner) = waits_for[t];
                    steps.push(format!(
                        "thread {} waits for futex {} held by thread {}",
                        who(dump, *t),
                        f.addr,
                        who(dump, owner)
                    ));
                }
                let summary = if path.len() == 1 {
                    format!(
                        "deadlock: thread {} waits for a lock it holds itself (futex {})",
                        who(dump, start),
                        waits_for[&start].0.addr
                    )
                } else {
                    format!("deadlock: {}", steps.join(", "))
                };
                out.push(Finding {
                    kind: "deadlock".into(),
                    summary,
                    threads: path.clone(),
                    evidence: steps,
                });
                break;
            }
            if path.contains(owner) {
                break; // a cycle that does not include `start`: found from its own start
            }
            path.push(*owner);
            cur = *owner;
        }
    }
    for f in &p.futexes {
        let Some(owner) = f.owner else { continue };
        if f.waiters.iter().all(|w| reported.contains(w)) {
            continue; // said by the deadlock
        }
        let n = f.waiters.len();
        let summary = format!(
            "{} on futex {} owned by thread {}",
            if n == 1 {
                "1 thread waits".to_string()
            } else {
                format!("{n} threads wait")
            },
            f.addr,
            who(dump, owner)
        );
        let mut evidence = Vec::new();
        if let Some(o) = dump.thread(owner) {
            evidence.push(format!(
                "the owner {} is {} ({}){} in {}",
                who(dump, owner),
                o.kernel.state,
                o.kernel.state_name,
                o.kernel
                    .wchan
                    .as_deref()
                    .map(|w| format!(", wchan {w},"))
                    .unwrap_or_default(),
                syscall_in(&o.kernel.syscall, dump.process.as_ref())
            ));
            if let Some((f2, o2)) = waits_for.get(&owner) {
                evidence.push(format!(
                    "it waits itself for futex {} owned by thread {}",
                    f2.addr,
                    who(dump, *o2)
                ));
            }
        }
        if let Some(src) = &f.source {
            evidence.push(format!("owner read from {src} ({})", f.op));
        }
        evidence.push(format!("waiters: {}", thread_list(dump, &f.waiters)));
        out.push(Finding {
            kind: "lock_wait".into(),
            summary,
            threads: f.waiters.clone(),
            evidence,
        });
    }
}

/// TCP sockets in `CLOSE_WAIT`: the peer closed, this process did not.
fn close_wait(p: &ProcessFacts, out: &mut Vec<Finding>) {
    let groups: Vec<_> = p
        .sockets
        .iter()
        .filter(|g| g.protocol.starts_with("tcp") && g.state == "CLOSE_WAIT")
        .collect();
    let count: usize = groups.iter().map(|g| g.count).sum();
    if count == 0 {
        return;
    }
    let unread: usize = groups.iter().map(|g| g.with_unread).sum();
    let bytes: u64 = groups.iter().map(|g| g.rx_queue).sum();
    let summary = if unread == count {
        format!(
            "{} in CLOSE_WAIT with unread data: the peers closed, this process never read or closed them",
            plural(count, "socket", "sockets")
        )
    } else if unread > 0 {
        format!(
            "{} in CLOSE_WAIT ({unread} with unread data): the peers closed, this process has not closed them",
            plural(count, "socket", "sockets")
        )
    } else {
        format!(
            "{} in CLOSE_WAIT: the peers closed, this process has not closed them",
            plural(count, "socket", "sockets")
        )
    };
    let mut evidence = vec![format!(
        "Recv-Q: {bytes} bytes unread in total{}",
        if unread > 0 {
            format!(", {} per socket on average", bytes / unread as u64)
        } else {
            String::new()
        }
    )];
    for g in &groups {
        if !g.local.is_empty() {
            evidence.push(format!(
                "{} local addresses: {}",
                g.protocol,
                g.local.join(", ")
            ));
        }
    }
    out.push(Finding {
        kind: "close_wait".into(),
        summary,
        threads: Vec::new(),
        evidence,
    });
}

/// Listening sockets with connections waiting to be accepted.
fn listen_backlog(p: &ProcessFacts, out: &mut Vec<Finding>) {
    for g in p
        .sockets
        .iter()
        .filter(|g| g.protocol.starts_with("tcp") && g.state == "LISTEN" && g.rx_queue > 0)
    {
        out.push(Finding {
            kind: "accept_backlog".into(),
            summary: format!(
                "{} waiting to be accepted on {} listening {} socket(s)",
                plural(g.rx_queue as usize, "connection", "connections"),
                g.count,
                g.protocol
            ),
            threads: Vec::new(),
            evidence: vec![format!(
                "backlog limit {} in total; local addresses: {}",
                g.tx_queue,
                g.local.join(", ")
            )],
        });
    }
}

/// What makes two threads "the same": the captured stack (or, without one, the kernel's view
/// of where the thread waits), the system call and the wait channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    frames: Vec<u64>,
    captured: bool,
    truncated: bool,
    state: String,
    syscall: Option<String>,
    wchan: Option<String>,
    kernel_stack: Option<Vec<String>>,
}

fn group_key(t: &Thread) -> GroupKey {
    let syscall = match &t.kernel.syscall {
        SyscallState::InSyscall { name, nr, .. } => {
            Some(name.clone().unwrap_or_else(|| format!("syscall_{nr}")))
        }
        SyscallState::Blocked { .. } => Some("(blocked)".into()),
        SyscallState::Running => Some("(running)".into()),
        SyscallState::Unknown => None,
    };
    GroupKey {
        frames: t.frames.iter().map(|f| f.ip.0).collect(),
        captured: t.capture == CaptureStatus::Ok,
        truncated: t.truncated,
        state: t.kernel.state.clone(),
        syscall,
        wchan: t.kernel.wchan.clone(),
        kernel_stack: t.kernel.kernel_stack.clone(),
    }
}

/// Every thread of the dump in exactly one group of threads that share their stack (indices
/// into `dump.threads`), groups in the order of their first thread. The dumper's own thread is
/// always alone.
pub fn stack_groups(dump: &Dump) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    for (i, t) in dump.threads.iter().enumerate() {
        // The dumper's own thread, threads that exited, and threads of which we know neither
        // the stack nor the system call are alone: nothing says they are in the same place.
        let unknown = t.frames.is_empty() && t.kernel.syscall == SyscallState::Unknown;
        if unknown || matches!(t.capture, CaptureStatus::Dumper | CaptureStatus::Exited) {
            groups.push(vec![i]);
            continue;
        }
        let key = group_key(t);
        match index.get(&key) {
            Some(&g) => groups[g].push(i),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// ` from `_db_execute` (db.py:623)` when every thread's innermost interpreted (Python) frame
/// is the same function; empty otherwise. Findings speak the language of the code that called.
fn python_origin(threads: &[&Thread]) -> String {
    let innermost = |t: &Thread| t.frames.iter().find(|f| is_interpreted(f)).cloned();
    let Some(first) = threads.first().and_then(|t| innermost(t)) else {
        return String::new();
    };
    let same = threads.iter().all(|t| {
        innermost(t).is_some_and(|f| f.function == first.function && f.file == first.file)
    });
    let Some(name) = first.function.as_deref().filter(|_| same) else {
        return String::new();
    };
    let file = first
        .file
        .as_deref()
        .map(|f| f.rsplit('/').next().unwrap_or(f).to_string());
    match (file, first.line) {
        (Some(file), Some(line)) => format!(" from `{name}` ({file}:{line})"),
        (Some(file), None) => format!(" from `{name}` ({file})"),
        _ => format!(" from `{name}`"),
    }
}

/// A frame of interpreted code (a Python frame merged into the native stack).
fn is_interpreted(f: &crate::model::Frame) -> bool {
    f.python.is_some()
}

/// Up to `n` function names of a stack, innermost first, joined with ` ← `. For a thread of an
/// interpreter whose frames are merged in, the innermost native frame and then the interpreted
/// frames: `__GI___libc_write ← _db_execute ← handle_request ← worker_main`.
pub fn stack_preview(t: &Thread, n: usize) -> String {
    let mut names: Vec<String> = Vec::new();
    let interpreted = t.frames.iter().any(is_interpreted);
    for (i, f) in t.frames.iter().enumerate() {
        if interpreted && i > 0 && !is_interpreted(f) {
            continue;
        }
        let name = f
            .function
            .as_deref()
            .map(str::to_string)
            .unwrap_or_else(|| match (&f.module, f.offset) {
                (Some(m), Some(off)) => format!("{}+{off}", m.rsplit('/').next().unwrap_or(m)),
                _ => format!("{}", f.ip),
            });
        if names.last() != Some(&name) {
            names.push(name);
        }
    }
    let total = names.len();
    let mut s = names.into_iter().take(n).collect::<Vec<_>>().join(" ← ");
    if total > n {
        s.push_str(&format!(" ← … ({total} frames)"));
    }
    s
}

/// Threads that share one stack.
fn same_stacks(dump: &Dump, out: &mut Vec<Finding>) {
    let mut groups: Vec<Vec<usize>> = stack_groups(dump)
        .into_iter()
        .filter(|g| g.len() > 1)
        .collect();
    groups.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a[0].cmp(&b[0])));
    for g in groups {
        let first = &dump.threads[g[0]];
        let tids: Vec<Tid> = g.iter().map(|i| dump.threads[*i].tid).collect();
        let call = syscall_name(&first.kernel.syscall);
        let wchan = first
            .kernel
            .wchan
            .as_deref()
            .map(|w| format!(", wchan {w}"))
            .unwrap_or_default();
        let summary = if first.frames.is_empty() {
            format!(
                "{} threads in the same place (kernel view): {call}{wchan}",
                g.len()
            )
        } else {
            format!(
                "{} threads share one stack: {} ({call}{wchan})",
                g.len(),
                stack_preview(first, 5)
            )
        };
        out.push(Finding {
            kind: "same_stack".into(),
            summary,
            threads: tids.clone(),
            evidence: vec![format!("threads: {}", thread_list(dump, &tids))],
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::*;

    pub fn thread(tid: i32, name: &str, syscall: SyscallState, wchan: Option<&str>) -> Thread {
        Thread {
            tid: Tid(tid),
            name: name.into(),
            kernel: KernelView {
                state: "S".into(),
                state_name: "sleeping".into(),
                wchan: wchan.map(str::to_string),
                syscall,
                ..KernelView::default()
            },
            capture: CaptureStatus::Ok,
            frames: Vec::new(),
            truncated: false,
            signalled: false,
            python: None,
        }
    }

    pub fn in_syscall(name: &str, args: [u64; 6], fd: Option<(i32, &str)>) -> SyscallState {
        SyscallState::InSyscall {
            nr: 0,
            name: Some(name.into()),
            args: args.iter().map(|a| Addr(*a)).collect(),
            fd: fd.map(|(fd, t)| FdRef {
                fd,
                target: Some(t.into()),
            }),
            sp: Addr(0x7ffd_0000),
            pc: Addr(0x7f00_0000),
        }
    }

    pub fn frames(fns: &[&str]) -> Vec<Frame> {
        fns.iter()
            .enumerate()
            .map(|(i, f)| Frame {
                ip: Addr(0x1000 + i as u64 * 0x10 + f.len() as u64),
                module: Some("/usr/bin/app".into()),
                offset: None,
                function: Some((*f).into()),
                file: None,
                line: None,
                inlined: false,
                python: None,
                jit: None,
            })
            .collect()
    }

    pub fn dump(threads: Vec<Thread>) -> Dump {
        Dump {
            format: FORMAT.into(),
            pid: Pid(4242),
            comm: "app".into(),
            exe: "/usr/bin/app".into(),
            cmdline: String::new(),
            time: "2026-11-25T17:00:00.000Z".into(),
            trigger: Trigger {
                signal: "USR1".into(),
                signo: 10,
                sender_pid: None,
                sender_uid: None,
                request: None,
                coalesced: Vec::new(),
                watchdog: None,
            },
            capture: CaptureStats::default(),
            threads,
            findings: Vec::new(),
            process: None,
            errors: Vec::new(),
            host: None,
        }
    }

    /// The incident: 4 workers in write(2) on a full pipe whose reader (`sleep`) does not read,
    /// 20 CLOSE_WAIT sockets with ~300 bytes each, a listener.
    pub fn incident() -> Dump {
        let stack = [
            "write",
            "_Py_write",
            "print",
            "_db_execute",
            "worker_main",
            "clone3",
        ];
        let mut threads = vec![thread(
            100,
            "python3",
            in_syscall("accept4", [3, 0, 0, 0, 0, 0], Some((3, "socket:[500]"))),
            Some("inet_csk_accept"),
        )];
        for i in 0..4 {
            let mut t = thread(
                101 + i,
                &format!("worker-{i}"),
                in_syscall(
                    "write",
                    [2, 0x5500 + i as u64, 301, 0, 0, 0],
                    Some((2, "pipe:[182067]")),
                ),
                Some("anon_pipe_write"),
            );
            t.frames = frames(&stack);
            threads.push(t);
        }
        let mut d = dump(threads);
        d.process = Some(ProcessFacts {
            fds: FdSummary {
                total: 27,
                by_kind: [
                    ("file".to_string(), 3),
                    ("pipe".to_string(), 1),
                    ("socket".to_string(), 21),
                ]
                .into_iter()
                .collect(),
                unknown: None,
            },
            sockets: vec![
                SocketGroup {
                    protocol: "tcp".into(),
                    state: "CLOSE_WAIT".into(),
                    count: 20,
                    rx_queue: 6020,
                    tx_queue: 0,
                    with_unread: 20,
                    local: vec!["127.0.0.1:40001 (20)".into()],
                },
                SocketGroup {
                    protocol: "tcp".into(),
                    state: "LISTEN".into(),
                    count: 1,
                    rx_queue: 0,
                    tx_queue: 128,
                    with_unread: 0,
                    local: vec!["127.0.0.1:40001 (1)".into()],
                },
            ],
            pipes: vec![PipeFacts {
                inode: 182067,
                fds: vec![PipeFd {
                    fd: 2,
                    end: "write".into(),
                }],
                queued: Some(65104),
                capacity: Some(65536),
                unknown: None,
                full: true,
                others: vec![PipeHolder {
                    pid: Pid(24185),
                    comm: "sleep".into(),
                    fd: 0,
                    end: "read".into(),
                    reading: Some(false),
                    doing: Some("clock_nanosleep".into()),
                }],
                others_checked: true,
                others_note: None,
            }],
            syscall_fds: vec![FdFacts {
                fd: 2,
                target: Some("pipe:[182067]".into()),
                kind: "pipe".into(),
                end: Some("write".into()),
                pipe: Some(182067),
                socket: None,
            }],
            futexes: Vec::new(),
        });
        d
    }

    #[test]
    fn incident_findings() {
        let d = incident();
        let f = findings(&d);
        let kinds: Vec<&str> = f.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(kinds, ["full_pipe", "close_wait", "same_stack"], "{f:#?}");
        assert_eq!(
            f[0].summary,
            "4 threads blocked in write(fd 2 → pipe:[182067]): the pipe is full (65104 of 65536 bytes); its read end is held by pid 24185 (sleep) fd 0, which is not reading"
        );
        assert_eq!(f[0].threads, vec![Tid(101), Tid(102), Tid(103), Tid(104)]);
        assert!(
            f[0].evidence.iter().any(|e| e.contains("clock_nanosleep")),
            "{:?}",
            f[0].evidence
        );
        assert_eq!(
            f[1].summary,
            "20 sockets in CLOSE_WAIT with unread data: the peers closed, this process never read or closed them"
        );
        assert!(
            f[2].summary
                .starts_with("4 threads share one stack: write ← _Py_write ← print"),
            "{}",
            f[2].summary
        );
    }

    #[test]
    fn a_reader_that_reads_is_said_so_and_no_full_pipe_no_finding() {
        let mut d = incident();
        let p = d.process.as_mut().unwrap();
        p.pipes[0].others[0].reading = Some(true);
        let f = findings(&d);
        assert!(
            f[0].summary
                .ends_with("which is reading it (a slow reader)"),
            "{}",
            f[0].summary
        );
        // Not full, nobody waits for room: nothing to say about the pipe.
        let p = d.process.as_mut().unwrap();
        p.pipes[0].full = false;
        p.pipes[0].queued = Some(10);
        for t in &mut d.threads {
            t.kernel.wchan = None;
        }
        assert!(findings(&d).iter().all(|f| f.kind != "full_pipe"));
    }

    #[test]
    fn a_pipe_whose_reader_is_the_process_itself() {
        let mut d = incident();
        let p = d.process.as_mut().unwrap();
        p.pipes[0].others.clear();
        p.pipes[0].fds.push(PipeFd {
            fd: 7,
            end: "read".into(),
        });
        let f = findings(&d);
        assert!(
            f[0].summary.ends_with(
                "its read end is held by this process itself (fd 7), and none of its threads is reading it"
            ),
            "{}",
            f[0].summary
        );
        // Nobody at all, after looking: said so.
        d.process.as_mut().unwrap().pipes[0].fds.pop();
        let f = findings(&d);
        assert!(
            f[0].summary
                .ends_with("no process we could look into holds its read end"),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn connections_waiting_to_be_accepted() {
        let mut d = incident();
        let p = d.process.as_mut().unwrap();
        p.sockets[1].rx_queue = 12;
        let f = findings(&d);
        let b: Vec<_> = f.iter().filter(|f| f.kind == "accept_backlog").collect();
        assert_eq!(b.len(), 1, "{f:#?}");
        assert_eq!(
            b[0].summary,
            "12 connections waiting to be accepted on 1 listening tcp socket(s)"
        );
    }

    #[test]
    fn lock_wait_and_deadlock() {
        let futex = |addr: u64| in_syscall("futex", [addr, 128, 2, 0, 0, 0], None);
        let mut threads = vec![thread(
            10,
            "holder",
            in_syscall("clock_nanosleep", [0; 6], None),
            Some("hrtimer_nanosleep"),
        )];
        for i in 0..3 {
            threads.push(thread(
                11 + i,
                &format!("waiter-{i}"),
                futex(0x7f00),
                Some("futex_wait_queue"),
            ));
        }
        threads.push(thread(20, "dl-a", futex(0xa0), None));
        threads.push(thread(21, "dl-b", futex(0xb0), None));
        let mut d = dump(threads);
        let ff = |addr: u64, waiters: Vec<i32>, owner: i32, name: &str| FutexFacts {
            addr: Addr(addr),
            op: "FUTEX_WAIT_PRIVATE".into(),
            waiters: waiters.into_iter().map(Tid).collect(),
            value: Some(2),
            owner: Some(Tid(owner)),
            owner_name: Some(name.into()),
            source: Some("pthread_mutex_t.__owner".into()),
            unknown: None,
        };
        d.process = Some(ProcessFacts {
            futexes: vec![
                ff(0xa0, vec![20], 21, "dl-b"),
                ff(0xb0, vec![21], 20, "dl-a"),
                ff(0x7f00, vec![11, 12, 13], 10, "holder"),
            ],
            ..ProcessFacts::default()
        });
        let f = findings(&d);
        let deadlocks: Vec<_> = f.iter().filter(|f| f.kind == "deadlock").collect();
        assert_eq!(deadlocks.len(), 1, "{f:#?}");
        assert_eq!(deadlocks[0].threads, vec![Tid(20), Tid(21)]);
        assert!(deadlocks[0]
            .summary
            .contains("dl-a (20) waits for futex 0xa0 held by thread dl-b (21)"));
        let waits: Vec<_> = f.iter().filter(|f| f.kind == "lock_wait").collect();
        assert_eq!(
            waits.len(),
            1,
            "the deadlocked threads are told once: {waits:#?}"
        );
        let w = waits.iter().find(|f| f.threads.len() == 3).unwrap();
        assert_eq!(
            w.summary,
            "3 threads wait on futex 0x7f00 owned by thread holder (10)"
        );
        assert!(
            w.evidence[0].contains("clock_nanosleep"),
            "{:?}",
            w.evidence
        );
        // deadlock first
        assert_eq!(f[0].kind, "deadlock");
    }

    #[test]
    fn previews_show_interpreted_frames_after_the_innermost_native_one() {
        let mut t = thread(1, "w", in_syscall("write", [0; 6], None), None);
        t.frames = frames(&[
            "write",
            "_Py_write",
            "_PyEval_EvalFrameDefault",
            "_db_execute",
            "handle_request",
            "clone3",
        ]);
        for f in &mut t.frames[3..5] {
            f.module = None;
            f.file = Some("/srv/app.py".into());
            f.python = Some(PyFrameInfo {
                code: Addr(0x1000),
                name: f.function.as_deref().unwrap_or_default().to_string(),
                first_line: None,
                entry: false,
                frame: None,
                locals: Vec::new(),
            });
        }
        assert_eq!(stack_preview(&t, 5), "write ← _db_execute ← handle_request");
        t.frames[3].python = None;
        t.frames[4].python = None;
        assert_eq!(
            stack_preview(&t, 3),
            "write ← _Py_write ← _PyEval_EvalFrameDefault ← … (6 frames)"
        );
    }

    #[test]
    fn groups_cover_every_thread_once() {
        let d = incident();
        let groups = stack_groups(&d);
        assert_eq!(groups, vec![vec![0], vec![1, 2, 3, 4]]);
        let mut d2 = d.clone();
        d2.threads[3].frames.pop(); // a different stack
        let groups = stack_groups(&d2);
        assert_eq!(groups, vec![vec![0], vec![1, 2, 4], vec![3]]);
        // Unknown is not "the same".
        let mut d3 = d.clone();
        for t in &mut d3.threads {
            t.frames.clear();
            t.kernel.syscall = SyscallState::Unknown;
            t.kernel.wchan = None;
        }
        assert_eq!(stack_groups(&d3).len(), 5);
        assert!(findings(&d3).iter().all(|f| f.kind != "same_stack"));
    }
}

#[cfg(test)]
pub(crate) mod gil_tests {
    use super::tests::{in_syscall, thread};
    use super::*;
    use crate::model::*;

    pub(crate) fn py(name: &str, gil: bool, waits: bool, active: bool) -> PyThreadInfo {
        PyThreadInfo {
            interpreter: "CPython 3.11.7".into(),
            name: Some(name.into()),
            merge: PyMerge::Merged,
            depth: 0,
            eval_frames: 0,
            entries: 0,
            frames: Vec::new(),
            truncated: false,
            note: None,
            gil: Some(gil),
            waits_for_gil: waits,
            active: Some(active),
        }
    }

    #[test]
    fn gil_contention_names_the_holder_and_the_waiters_by_python_name() {
        let mut threads = Vec::new();
        let mut c = thread(10, "python3", SyscallState::Running, None);
        c.kernel.state = "R".into();
        c.python = Some(py("cruncher", true, false, true));
        threads.push(c);
        for i in 0..6 {
            let mut w = thread(
                11 + i,
                "python3",
                in_syscall("futex", [0x1000, 0x89, 0, 0, 0, 0], None),
                Some("futex_do_wait"),
            );
            w.python = Some(py(&format!("waiter-{i}"), false, true, false));
            threads.push(w);
        }
        let mut s = thread(20, "python3", SyscallState::Running, None);
        s.python = Some(py("sleeper", false, false, false));
        threads.push(s);
        let mut d = super::tests::incident();
        d.threads = threads;
        d.process = None;
        let f = findings(&d);
        let g = f
            .iter()
            .find(|f| f.kind == "gil_contention")
            .expect("a gil_contention finding");
        assert_eq!(
            g.summary,
            "the GIL is held by 'cruncher' (tid 10), running; 6 threads wait for it"
        );
        assert!(
            g.evidence.iter().any(|e| e.contains("waiter-5 (16)")),
            "{:?}",
            g.evidence
        );
        assert_eq!(g.threads.len(), 7);
        assert_eq!(
            d.threads[0].python.as_ref().unwrap().activity(),
            Some("active+gil")
        );
        assert_eq!(
            d.threads[1].python.as_ref().unwrap().activity(),
            Some("idle")
        );
        // No waiter, no finding.
        for t in &mut d.threads {
            if let Some(p) = &mut t.python {
                p.waits_for_gil = false;
            }
        }
        assert!(!findings(&d).iter().any(|f| f.kind == "gil_contention"));
    }
}
