//! `stackdump inspect PID`: a dump of any process, built from outside through `/proc/PID`, with
//! nothing loaded into it and no signal sent. Every thread's kernel view (state, wait channel,
//! system call with the file behind its fd, kernel stack when readable), the process facts and
//! the findings; no user stacks (`capture` is `skipped` for every thread, `capture.method` is
//! [`CaptureMethod::Kernel`]).
//!
//! Reading another process's `syscall` files, duplicating its pipe fds (`pidfd_getfd`) and
//! reading its futex words (`process_vm_readv`) need ptrace permission over it; without it those
//! facts are reported as unknown, with the reason, and the rest of the dump is still there.

use crate::analysis::diagnose;
use crate::analysis::facts;
use crate::kernel::proc::{self, TaskReader};
use crate::model::timefmt::UtcTime;
use crate::model::{
    CaptureMethod, CaptureStats, Dump, Pid, SyscallState, Thread, Tid, Trigger, FORMAT,
};
use std::path::PathBuf;
use std::time::Instant;

/// Why a process cannot be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no process {0}")]
    NoSuchProcess(Pid),
    #[error("process {0} is a zombie (it exited; its parent has not reaped it)")]
    Zombie(Pid),
    #[error("cannot read /proc/{pid}: {source}")]
    Io {
        pid: Pid,
        #[source]
        source: std::io::Error,
    },
}

/// Work done on each thread in the same visit as its kernel view (the outside capture copies the
/// stack of a thread blocked in a system call there, microseconds after its `syscall` file gave
/// SP and PC: [`crate::outside::capture::Capture`]).
pub trait Visit {
    /// Before the kernel view of `tid` is read (`reader` has the task's directory open).
    fn before(&mut self, reader: &mut TaskReader, tid: Tid);
    /// Right after it; `index` is the thread's place in `Dump::threads`.
    fn after(&mut self, reader: &mut TaskReader, index: usize, thread: &Thread);
}

/// Nothing besides the kernel view.
struct KernelOnly;

impl Visit for KernelOnly {
    fn before(&mut self, _: &mut TaskReader, _: Tid) {}
    fn after(&mut self, _: &mut TaskReader, _: usize, _: &Thread) {}
}

/// Inspect process `pid` from outside: its threads' kernel view, process facts and findings.
pub fn inspect(pid: Pid) -> Result<Dump, InspectError> {
    inspect_visiting(pid, &mut KernelOnly)
}

/// [`inspect`], calling `visit` around each thread's kernel view.
pub fn inspect_visiting(pid: Pid, visit: &mut dyn Visit) -> Result<Dump, InspectError> {
    let start = Instant::now();
    let mut dump = visit_threads(pid, visit)?;
    diagnose::analyze(&mut dump, &facts::Options::outside(pid));
    dump.capture.duration_us = start.elapsed().as_micros() as u64;
    Ok(dump)
}

/// The dump of [`inspect_visiting`] before its analysis: every thread's kernel view (`visit`
/// called around each), the process's name, command line and host; no process facts, no
/// findings, no duration.
pub fn visit_threads(pid: Pid, visit: &mut dyn Visit) -> Result<Dump, InspectError> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            InspectError::NoSuchProcess(pid)
        } else {
            InspectError::Io { pid, source }
        }
    };
    if pid.0 <= 0 {
        return Err(InspectError::NoSuchProcess(pid));
    }
    let stat = std::fs::read(dir.join("stat")).map_err(io)?;
    if proc::parse_stat(&stat).is_some_and(|s| matches!(s.state, 'Z' | 'X')) {
        return Err(InspectError::Zombie(pid));
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut errors = Vec::new();

    let mut reader = TaskReader::new(&dir);
    let tids = reader.tids().map_err(io)?;
    let mut threads = Vec::with_capacity(tids.len());
    let mut unreadable_syscalls = 0;
    for tid in tids {
        visit.before(&mut reader, tid);
        let Ok((name, kernel, _status)) = reader.kernel_view(tid) else {
            continue; // exited while we looked
        };
        if kernel.syscall == SyscallState::Unknown {
            unreadable_syscalls += 1;
        }
        threads.push(Thread::kernel_only(tid, name, kernel));
        visit.after(&mut reader, threads.len() - 1, &threads[threads.len() - 1]);
    }
    for t in &mut threads {
        reader.resolve_fd(&mut t.kernel.syscall);
    }
    if unreadable_syscalls > 0 {
        errors.push(format!(
            "the system call of {unreadable_syscalls} thread(s) is not readable (/proc/{pid}/task/*/syscall needs ptrace permission: the same user, or root)"
        ));
    }
    let read_text = |name: &str| {
        std::fs::read(dir.join(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let exe = match std::fs::read_link(dir.join("exe")) {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(e) => {
            errors.push(format!("cannot read /proc/{pid}/exe: {e}"));
            String::new()
        }
    };
    let mut cmdline = read_text("cmdline")
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if cmdline.len() > 4096 {
        let mut cut = 4096;
        while !cmdline.is_char_boundary(cut) {
            cut -= 1;
        }
        cmdline.truncate(cut);
        cmdline.push('…');
    }
    let dump = Dump {
        format: FORMAT.to_string(),
        pid,
        comm: read_text("comm").trim_end().to_string(),
        exe,
        cmdline,
        time: UtcTime::from_unix_millis(millis).rfc3339(),
        trigger: Trigger {
            signal: "none".into(),
            signo: 0,
            sender_pid: Some(std::process::id() as i32),
            // SAFETY: getuid cannot fail and has no preconditions.
            sender_uid: Some(unsafe { libc::getuid() }),
            request: None,
            coalesced: Vec::new(),
            watchdog: None,
        },
        capture: CaptureStats {
            threads: threads.len(),
            captured: 0,
            method: CaptureMethod::Kernel,
            ..CaptureStats::default()
        },
        threads,
        findings: Vec::new(),
        process: None,
        errors,
        host: Some(crate::kernel::host::host(Some(pid.0))),
    };
    Ok(dump)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CaptureStatus;

    #[test]
    fn inspects_itself_and_refuses_what_is_not_there() {
        let me = Pid(std::process::id() as i32);
        let d = inspect(me).unwrap();
        assert_eq!(d.pid, me);
        assert_eq!(d.capture.method, CaptureMethod::Kernel);
        assert!(d.threads.iter().any(|t| t.tid.0 == me.0));
        assert!(d
            .threads
            .iter()
            .all(|t| t.capture == CaptureStatus::Skipped));
        let p = d.process.as_ref().unwrap();
        assert!(p.fds.total >= 3, "{p:?}");
        assert!(crate::output::render::text(&d).contains("inspected from outside"));
        assert!(matches!(
            inspect(Pid(i32::MAX)),
            Err(InspectError::NoSuchProcess(_))
        ));
        assert!(matches!(
            inspect(Pid(0)),
            Err(InspectError::NoSuchProcess(_))
        ));
    }
}
