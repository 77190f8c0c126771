//! Gathering [`ProcessFacts`]: the process's fds by kind, its sockets by state, its pipes (how
//! full, who holds the other end), the files behind the threads' fd arguments, and the owners of
//! the futexes its threads wait on. The same code runs inside the dumper ([`Vantage::Inside`]:
//! `/proc/self`, pipe levels through the host's own fd numbers) and in the CLI
//! ([`Vantage::Outside`]: `/proc/PID`, pipe levels through `pidfd_getfd`).
//!
//! Inside the dumper this never reads, writes or closes a host fd: it reads `/proc` (its own
//! fds, opened close-on-exec by std), asks pipes `F_GETPIPE_SZ`/`FIONREAD`, and reads futex
//! words with `process_vm_readv`. Both pipe queries take the pipe's lock for an instant; a pipe
//! a host thread is splicing to or from (which holds that lock while it moves data, possibly
//! waiting on a file system) is not asked.

use crate::kernel::fds::{self, Vantage};
use crate::kernel::futex;
use crate::kernel::net;
use crate::model::{
    Addr, Dump, FdFacts, FdSummary, FutexFacts, Pid, PipeFacts, PipeFd, ProcessFacts, SocketFacts,
    SocketGroup, SyscallState, Thread, Tid,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// How to gather.
#[derive(Debug, Clone)]
pub struct Options {
    pub vantage: Vantage,
    /// Time allowed to look through other processes for the other ends of pipes.
    pub holder_budget: Duration,
    /// At most this many pipes are described (their fill level asked); the rest are counted.
    pub max_pipes: usize,
}

impl Options {
    /// Inside the process (the dumper).
    pub fn inside() -> Options {
        Options {
            vantage: Vantage::Inside,
            holder_budget: Duration::from_millis(250),
            max_pipes: 256,
        }
    }

    /// From another process (the CLI).
    pub fn outside(pid: Pid) -> Options {
        Options {
            vantage: Vantage::Outside(pid),
            holder_budget: Duration::from_secs(3),
            max_pipes: 256,
        }
    }

    fn proc_dir(&self) -> PathBuf {
        match self.vantage {
            Vantage::Inside => PathBuf::from("/proc/self"),
            Vantage::Outside(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// The pid in our pid namespace (for `process_vm_readv`).
    fn pid(&self) -> Pid {
        match self.vantage {
            Vantage::Inside => Pid(std::process::id() as i32),
            Vantage::Outside(pid) => pid,
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// True when a thread sleeps in the kernel waiting for room in a pipe.
pub fn waits_in_pipe_write(t: &Thread) -> bool {
    t.kernel
        .wchan
        .as_deref()
        .is_some_and(|w| w.contains("pipe_write"))
}

/// The fd argument of a thread's current system call, with the syscall's name.
pub fn syscall_fd(t: &Thread) -> Option<(&str, i32, Option<&str>)> {
    match &t.kernel.syscall {
        SyscallState::InSyscall {
            name: Some(name),
            fd: Some(fd),
            ..
        } => Some((name.as_str(), fd.fd, fd.target.as_deref())),
        _ => None,
    }
}

/// Gather the facts about the process of `dump` (whose threads' kernel view is already there).
/// Problems are returned as messages for the dump's `errors`; what could not be learned is
/// absent or marked unknown, never guessed.
pub fn gather(dump: &Dump, opts: &Options) -> (ProcessFacts, Vec<String>) {
    let mut errors = Vec::new();
    let dir = opts.proc_dir();
    let mut facts = ProcessFacts::default();

    let mut fds_unknown = None;
    let fds = fds::list_fds(&dir).unwrap_or_else(|e| {
        errors.push(format!("cannot list {}/fd: {e}", dir.display()));
        fds_unknown = Some(e.to_string());
        BTreeMap::new()
    });

    // Fds by kind.
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for target in fds.values() {
        *by_kind.entry(fds::kind_of(target)).or_default() += 1;
    }
    facts.fds = FdSummary {
        total: fds.len(),
        by_kind,
        unknown: fds_unknown,
    };

    // Sockets: one pass over the tables for every socket we hold.
    let socket_inodes: HashSet<u64> = fds.values().filter_map(|t| fds::socket_inode(t)).collect();
    let sockets = net::read_sockets(&dir, &socket_inodes, &mut errors);
    facts.sockets = group_sockets(&socket_inodes, &sockets);

    // Pipes: our fds on each, and how full it is.
    let mut pipe_fds: BTreeMap<u64, Vec<i32>> = BTreeMap::new();
    for (fd, target) in &fds {
        if let Some(inode) = fds::pipe_inode(target) {
            pipe_fds.entry(inode).or_default().push(*fd);
        }
    }
    let page = page_size();
    // Pipes a thread is splicing to or from, by inode.
    let splicing: HashMap<u64, Tid> = dump
        .threads
        .iter()
        .filter_map(|t| match &t.kernel.syscall {
            SyscallState::InSyscall {
                name: Some(name),
                args,
                ..
            } => {
                let fd_args: &[usize] = match name.as_str() {
                    "splice" => &[0, 2],
                    "tee" => &[0, 1],
                    "vmsplice" => &[0],
                    _ => return None,
                };
                Some(
                    fd_args
                        .iter()
                        .filter_map(|i| args.get(*i))
                        .filter_map(|a| i32::try_from(a.0).ok())
                        .filter_map(|fd| fds.get(&fd).and_then(|t| fds::pipe_inode(t)))
                        .map(|inode| (inode, t.tid))
                        .collect::<Vec<_>>(),
                )
            }
            _ => None,
        })
        .flatten()
        .collect();
    for (inode, fd_list) in pipe_fds.iter().take(opts.max_pipes) {
        let ends: Vec<PipeFd> = fd_list
            .iter()
            .map(|fd| PipeFd {
                fd: *fd,
                end: fds::pipe_end(&dir, *fd),
            })
            .collect();
        let mut p = PipeFacts {
            inode: *inode,
            fds: ends,
            ..PipeFacts::default()
        };
        let mut why = Vec::new();
        if let Some(t) = splicing.get(inode) {
            // splice/tee/vmsplice hold the pipe's lock while they move data, and asking the
            // pipe anything takes that lock: never wait behind a host thread.
            why.push(format!(
                "not asked: thread {t} is in a splice on it (asking would wait for its lock)"
            ));
        }
        for fd in fd_list.iter().filter(|_| !splicing.contains_key(inode)) {
            match fds::pipe_level(opts.vantage, *fd, *inode) {
                Ok(level) => {
                    p.queued = Some(level.queued);
                    p.capacity = Some(level.capacity);
                    break;
                }
                Err(e) => why.push(e),
            }
        }
        if p.queued.is_none() {
            p.unknown = Some(why.join("; "));
        }
        let nearly_full =
            matches!((p.queued, p.capacity), (Some(q), Some(c)) if c > 0 && q + page > c);
        let writer_waits = dump.threads.iter().any(|t| {
            waits_in_pipe_write(t)
                && syscall_fd(t).is_some_and(|(name, _, target)| {
                    fds::writes_fd(name) && target.and_then(fds::pipe_inode) == Some(*inode)
                })
        });
        p.full = nearly_full || writer_waits;
        facts.pipes.push(p);
    }

    // The other ends of the pipes that matter: full ones, and (from outside, where time is
    // not as short) those a thread is blocked on.
    let blocked_on: HashSet<u64> = dump
        .threads
        .iter()
        .filter_map(syscall_fd)
        .filter_map(|(_, _, target)| target.and_then(fds::pipe_inode))
        .collect();
    let outside = matches!(opts.vantage, Vantage::Outside(_));
    let wanted: fds::WantedPipes = facts
        .pipes
        .iter()
        .filter(|p| p.full || (outside && blocked_on.contains(&p.inode)))
        .map(|p| {
            let ours = |end: &str| p.fds.iter().all(|f| f.end == end);
            let look_for = if ours("write") {
                "read"
            } else if ours("read") {
                "write"
            } else {
                "any"
            };
            (p.inode, look_for)
        })
        .collect();
    if !wanted.is_empty() {
        let scan = fds::find_pipe_holders(
            std::path::Path::new("/proc"),
            &wanted,
            opts.pid(),
            opts.holder_budget,
            !outside,
        );
        let mut note = Vec::new();
        if scan.relatives_only {
            note.push(
                "only the process's children and parent were looked at (the other end was there)"
                    .to_string(),
            );
        }
        if scan.unreadable > 0 {
            note.push(format!(
                "{} process(es) could not be looked into (permission)",
                scan.unreadable
            ));
        }
        if scan.incomplete {
            note.push(format!(
                "the search stopped after {} ms",
                opts.holder_budget.as_millis()
            ));
        }
        for p in facts
            .pipes
            .iter_mut()
            .filter(|p| wanted.contains_key(&p.inode))
        {
            p.others_checked = true;
            p.others = scan.holders.get(&p.inode).cloned().unwrap_or_default();
            p.others_note = (!note.is_empty()).then(|| note.join("; "));
        }
    }

    // The files behind the threads' fd arguments.
    let mut seen = HashSet::new();
    for t in &dump.threads {
        let SyscallState::InSyscall { fd: Some(fd), .. } = &t.kernel.syscall else {
            continue;
        };
        if !seen.insert(fd.fd) {
            continue;
        }
        let target = fd.target.clone().or_else(|| fds.get(&fd.fd).cloned());
        let kind = target.as_deref().map_or("closed".to_string(), fds::kind_of);
        let pipe = target.as_deref().and_then(fds::pipe_inode);
        let socket = target.as_deref().and_then(fds::socket_inode).map(|inode| {
            sockets.get(&inode).cloned().unwrap_or(SocketFacts {
                inode,
                protocol: "other".into(),
                state: "-".into(),
                ..SocketFacts::default()
            })
        });
        facts.syscall_fds.push(FdFacts {
            fd: fd.fd,
            end: pipe.map(|_| fds::pipe_end(&dir, fd.fd)),
            target,
            kind,
            pipe,
            socket,
        });
    }

    // Futexes waited on, and their owners.
    let tids: Vec<Tid> = dump.threads.iter().map(|t| t.tid).collect();
    let mut futexes: BTreeMap<u64, FutexFacts> = BTreeMap::new();
    for t in &dump.threads {
        let SyscallState::InSyscall {
            name: Some(name),
            args,
            ..
        } = &t.kernel.syscall
        else {
            continue;
        };
        if name != "futex" || args.len() < 3 || !futex::is_wait(args[1].0) {
            continue;
        }
        let (addr, op, val) = (args[0].0, args[1].0, args[2].0);
        let entry = futexes.entry(addr).or_insert_with(|| {
            let (value, owner) = futex::owner(opts.pid(), addr, op, val, &tids);
            let mut f = FutexFacts {
                addr: Addr(addr),
                op: futex::op_name(op),
                value,
                ..FutexFacts::default()
            };
            match owner {
                futex::Owner::Known { tid, source } => {
                    f.owner = Some(tid);
                    f.owner_name = dump.thread(tid).map(|t| t.display_name().to_string());
                    f.source = Some(source.to_string());
                }
                futex::Owner::Unknown(why) => f.unknown = Some(why),
            }
            f
        });
        entry.waiters.push(t.tid);
    }
    facts.futexes = futexes.into_values().collect();

    (facts, errors)
}

/// Sockets by protocol and state, biggest groups first.
pub fn group_sockets(
    inodes: &HashSet<u64>,
    sockets: &HashMap<u64, SocketFacts>,
) -> Vec<SocketGroup> {
    let mut groups: BTreeMap<(String, String), (SocketGroup, HashMap<String, usize>)> =
        BTreeMap::new();
    for inode in inodes {
        let (protocol, state) = match sockets.get(inode) {
            Some(s) => (s.protocol.clone(), s.state.clone()),
            None => ("other".to_string(), "-".to_string()),
        };
        let (g, locals) = groups
            .entry((protocol.clone(), state.clone()))
            .or_insert_with(|| {
                (
                    SocketGroup {
                        protocol,
                        state,
                        ..SocketGroup::default()
                    },
                    HashMap::new(),
                )
            });
        g.count += 1;
        if let Some(s) = sockets.get(inode) {
            g.rx_queue += s.rx_queue;
            g.tx_queue += s.tx_queue;
            if s.rx_queue > 0 {
                g.with_unread += 1;
            }
            if let Some(l) = &s.local {
                *locals.entry(l.clone()).or_default() += 1;
            }
        }
    }
    let mut out: Vec<SocketGroup> = groups
        .into_values()
        .map(|(mut g, locals)| {
            let mut locals: Vec<(String, usize)> = locals.into_iter().collect();
            locals.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            g.local = locals
                .into_iter()
                .take(3)
                .map(|(addr, n)| format!("{addr} ({n})"))
                .collect();
            g
        })
        .collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.protocol.cmp(&b.protocol))
            .then_with(|| a.state.cmp(&b.state))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diagnose::tests::{dump, in_syscall, thread};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A pipe of ours, filled until a write would block.
    fn full_pipe() -> (OwnedFd, OwnedFd, u64) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new fds into the array.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(rc, 0);
        // SAFETY: both fds are new and owned by nothing else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let chunk = [b'x'; 4096];
        // SAFETY: writes from a valid buffer to our own non-blocking fd, until EAGAIN.
        while unsafe { libc::write(w.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) } > 0 {}
        let link = std::fs::read_link(format!("/proc/self/fd/{}", r.as_raw_fd())).unwrap();
        let inode = fds::pipe_inode(&link.to_string_lossy()).unwrap();
        (r, w, inode)
    }

    #[test]
    fn a_full_pipe_of_our_own_and_a_writer_waiting() {
        let (r, w, inode) = full_pipe();
        let wfd = w.as_raw_fd();
        let target = format!("pipe:[{inode}]");
        let writer = thread(
            1,
            "writer",
            in_syscall("write", [wfd as u64, 0, 100, 0, 0, 0], Some((wfd, &target))),
            Some("anon_pipe_write"),
        );
        let mut d = dump(vec![writer]);
        let (facts, errors) = gather(&d, &Options::inside());
        assert!(errors.is_empty(), "{errors:?}");
        let p = facts.pipe(inode).expect("our pipe");
        assert_eq!(p.queued, p.capacity, "{p:?}");
        assert!(p.full && p.unknown.is_none(), "{p:?}");
        let ends: Vec<(i32, &str)> = p.fds.iter().map(|f| (f.fd, f.end.as_str())).collect();
        assert!(ends.contains(&(r.as_raw_fd(), "read")) && ends.contains(&(wfd, "write")));
        assert!(
            p.others_checked,
            "a full pipe's other holders are looked for"
        );
        let fd = facts.syscall_fd(wfd).expect("the writer's fd");
        assert_eq!(
            (fd.kind.as_str(), fd.end.as_deref(), fd.pipe),
            ("pipe", Some("write"), Some(inode))
        );
        d.process = Some(facts);
        let f = crate::analysis::diagnose::findings(&d);
        assert_eq!(f[0].kind, "full_pipe", "{f:#?}");
        assert!(
            f[0].summary.contains(&format!(
                "its read end is held by this process itself (fd {}), and none of its threads is reading it",
                r.as_raw_fd()
            )),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn a_pipe_being_spliced_is_not_asked() {
        let (r, w, inode) = full_pipe();
        // A thread splicing from our read end: asking the pipe would wait for its lock.
        let splicer = thread(
            7,
            "splicer",
            in_syscall("splice", [r.as_raw_fd() as u64, 0, 99, 0, 4096, 0], None),
            Some("pipe_read"),
        );
        let (facts, _) = gather(&dump(vec![splicer]), &Options::inside());
        let p = facts.pipe(inode).expect("our pipe");
        assert_eq!((p.queued, p.capacity), (None, None), "{p:?}");
        assert!(
            p.unknown.as_deref().is_some_and(|u| u.contains("splice")),
            "{p:?}"
        );
        drop(w);
    }

    fn sock(inode: u64, protocol: &str, state: &str, local: &str, rx: u64) -> SocketFacts {
        SocketFacts {
            inode,
            protocol: protocol.into(),
            state: state.into(),
            local: Some(local.into()),
            remote: None,
            rx_queue: rx,
            tx_queue: 0,
        }
    }

    #[test]
    fn ten_thousand_close_wait_sockets_are_one_group() {
        let mut sockets = HashMap::new();
        let mut inodes = HashSet::new();
        for i in 0..10_000u64 {
            sockets.insert(i, sock(i, "tcp", "CLOSE_WAIT", "127.0.0.1:8080", 300));
            inodes.insert(i);
        }
        sockets.insert(20_000, sock(20_000, "tcp", "LISTEN", "127.0.0.1:8080", 0));
        inodes.insert(20_000);
        inodes.insert(30_000); // a netlink socket: in no table
        let groups = group_sockets(&inodes, &sockets);
        assert_eq!(groups.len(), 3, "{groups:?}");
        let cw = &groups[0];
        assert_eq!(
            (cw.protocol.as_str(), cw.state.as_str()),
            ("tcp", "CLOSE_WAIT")
        );
        assert_eq!(cw.count, 10_000);
        assert_eq!(cw.with_unread, 10_000);
        assert_eq!(cw.rx_queue, 3_000_000);
        assert_eq!(cw.local, vec!["127.0.0.1:8080 (10000)"]);
        assert!(groups
            .iter()
            .any(|g| g.protocol == "other" && g.state == "-" && g.count == 1));
    }
}
