//! The text form of a dump, in the spirit of a Java thread dump: a header (process, time, who
//! triggered, capture statistics), findings first, then one block per thread. The JSON form is
//! `serde_json` of [`Dump`](crate::model::Dump).

use crate::model::{CaptureStatus, Dump, Frame, SyscallState, Thread};
use std::fmt::Write;

/// Render a dump as text.
pub fn text(dump: &Dump) -> String {
    let mut out = String::with_capacity(256 + dump.threads.len() * 1024);
    header(&mut out, dump);
    if !dump.findings.is_empty() {
        out.push_str("\nFindings:\n");
        for f in &dump.findings {
            let _ = writeln!(out, "  * {}", f.summary);
            for e in &f.evidence {
                let _ = writeln!(out, "      {e}");
            }
        }
    }
    if !dump.errors.is_empty() {
        out.push_str("\nErrors while dumping:\n");
        for e in &dump.errors {
            let _ = writeln!(out, "  ! {e}");
        }
    }
    for t in &dump.threads {
        out.push('\n');
        thread(&mut out, t);
    }
    out
}

fn header(out: &mut String, d: &Dump) {
    let _ = writeln!(out, "stackdump of pid {} ({}) at {}", d.pid, d.comm, d.time);
    let _ = writeln!(out, "exe: {}", d.exe);
    if !d.cmdline.is_empty() {
        let _ = writeln!(out, "cmdline: {}", d.cmdline);
    }
    let tr = &d.trigger;
    let _ = write!(out, "trigger: SIG{}", tr.signal);
    match tr.sender_pid {
        Some(p) if p > 0 => {
            let _ = write!(out, " from pid {p}");
        }
        _ => out.push_str(" from outside this pid namespace or the kernel"),
    }
    if let Some(uid) = tr.sender_uid {
        let _ = write!(out, " (uid {uid})");
    }
    if let Some(r) = tr.request {
        let _ = write!(out, ", request {r}");
    }
    if !tr.coalesced.is_empty() {
        let _ = write!(
            out,
            ", {} more trigger(s) served by this dump",
            tr.coalesced.len()
        );
    }
    out.push('\n');
    let c = &d.capture;
    let _ = writeln!(
        out,
        "capture: {} threads, {} stacks captured ({} without a signal) in {:.1} ms (capture signal SIG{}, deadline {} ms, dump #{})",
        c.threads,
        c.captured,
        c.without_signal,
        c.duration_us as f64 / 1000.0,
        c.capture_signal,
        c.deadline_ms,
        c.sequence
    );
}

fn thread(out: &mut String, t: &Thread) {
    let k = &t.kernel;
    let _ = write!(
        out,
        "\"{}\" tid {}  {} ({})",
        t.name, t.tid, k.state, k.state_name
    );
    if let Some(w) = &k.wchan {
        let _ = write!(out, "  wchan {w}");
    }
    let _ = write!(out, "  cpu user {} sys {} ticks", k.utime, k.stime);
    out.push('\n');
    let _ = writeln!(out, "   syscall: {}", syscall(&k.syscall));
    if t.capture != CaptureStatus::Ok {
        let _ = writeln!(out, "   stack: {}", t.capture.explain());
    }
    for (i, f) in t.frames.iter().enumerate() {
        let _ = writeln!(out, "   #{i:<3} {}", frame(f));
    }
    if t.truncated {
        out.push_str("   ... (truncated: the stack did not end at a thread entry point)\n");
    }
    if let Some(ks) = &k.kernel_stack {
        if !ks.is_empty() {
            out.push_str("   kernel:\n");
            for l in ks {
                let _ = writeln!(out, "      {l}");
            }
        }
    }
}

/// One syscall in words: `write(fd 2 → pipe:[5210641], 0x55d0…, 0x12d, …)` or `running`.
pub fn syscall(s: &SyscallState) -> String {
    match s {
        SyscallState::Running => "running (on a CPU or runnable)".to_string(),
        SyscallState::Unknown => "unknown (not readable)".to_string(),
        SyscallState::Blocked { pc, .. } => format!("none (blocked outside a system call at {pc})"),
        SyscallState::InSyscall {
            nr, name, args, fd, ..
        } => {
            let mut s = match name {
                Some(n) => format!("{n}("),
                None => format!("syscall_{nr}("),
            };
            for (i, a) in args.iter().take(3).enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                match fd {
                    Some(fd) if i == 0 => {
                        let _ = write!(s, "fd {}", fd.fd);
                        if let Some(target) = &fd.target {
                            let _ = write!(s, " → {target}");
                        }
                    }
                    _ => {
                        let _ = write!(s, "{a}");
                    }
                }
            }
            s.push_str(", …)");
            s
        }
    }
}

/// One frame in words: `worker_level_07 at parked.c:45 in parked (0x55d0a1b2)`.
pub fn frame(f: &Frame) -> String {
    let mut s = String::new();
    if f.inlined {
        s.push_str("[inlined] ");
    }
    s.push_str(f.function.as_deref().unwrap_or("??"));
    if let Some(file) = &f.file {
        let _ = write!(s, " at {file}");
        if let Some(line) = f.line {
            let _ = write!(s, ":{line}");
        }
    }
    if let Some(m) = &f.module {
        let base = m.rsplit('/').next().unwrap_or(m);
        let _ = write!(s, " in {base}");
    }
    let _ = write!(s, " ({})", f.ip);
    s
}
