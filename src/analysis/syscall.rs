//! A thread's system call in words, with what the process facts say about its fd (a pipe's fill
//! level and its other end, a socket's state and queues) or its futex (the owner): the phrases
//! the findings, the text form and `compare` share.

use crate::escape::{field, Esc};
use crate::model::{ProcessFacts, SyscallState};
use std::fmt::Write;

/// One syscall in words: `write(fd 2 → pipe:[5210641], 0x55d0…, 301 bytes, …)` or `running`.
pub fn syscall(s: &SyscallState) -> String {
    syscall_in(s, None)
}

/// One syscall in words, with what the process facts say about its fd (the pipe's fill level
/// and its other end, the socket's state and queues) or its futex (the owner):
/// `write(fd 2 → pipe:[5210641] (write end; 65104 of 65536 bytes queued, full; read end: pid
/// 24185 (sleep) fd 0, not reading), 0x55d0…, 301 bytes, …)`.
pub fn syscall_in(s: &SyscallState, facts: Option<&ProcessFacts>) -> String {
    match s {
        SyscallState::Running => "running (on a CPU or runnable)".to_string(),
        SyscallState::Unknown => "unknown (not readable)".to_string(),
        SyscallState::Blocked { pc, .. } => format!("none (blocked outside a system call at {pc})"),
        SyscallState::InSyscall {
            nr, name, args, fd, ..
        } => {
            let name_str = name
                .as_deref()
                .map(|n| field(n).into_owned())
                .unwrap_or_else(|| format!("syscall_{nr}"));
            let mut s = format!("{name_str}(");
            let counts = matches!(
                name_str.as_str(),
                "read" | "write" | "pread64" | "pwrite64" | "recvfrom" | "sendto"
            );
            for (i, a) in args.iter().take(3).enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                match (i, fd) {
                    (0, Some(fd)) => {
                        let _ = write!(s, "fd {}", fd.fd);
                        if let Some(target) = &fd.target {
                            let _ = write!(s, " → {}", Esc(target));
                        }
                        if let Some(more) = facts.and_then(|p| fd_details(p, fd.fd)) {
                            let _ = write!(s, " ({more})");
                        }
                    }
                    (0, None) if name_str == "futex" => {
                        let _ = write!(s, "{a}");
                        if let Some(f) = facts.and_then(|p| p.futex(*a)) {
                            match (f.owner, &f.owner_name) {
                                (Some(o), Some(n)) => {
                                    let _ = write!(s, " (owned by thread {o} \"{}\")", Esc(n));
                                }
                                (Some(o), None) => {
                                    let _ = write!(s, " (owned by thread {o})");
                                }
                                _ => {}
                            }
                        }
                    }
                    (1, _) if name_str == "futex" => {
                        s.push_str(&crate::kernel::futex::op_name(a.0));
                    }
                    (2, _) if name_str == "futex" => {
                        let _ = write!(s, "{}", a.0 as u32);
                    }
                    (2, _) if counts => {
                        let _ = write!(s, "{} bytes", a.0);
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

/// What the process facts say about fd `fd` of a system call, in a few words.
fn fd_details(p: &ProcessFacts, fd: i32) -> Option<String> {
    let f = p.syscall_fd(fd)?;
    if let Some(inode) = f.pipe {
        let mut parts = Vec::new();
        if let Some(end) = &f.end {
            parts.push(format!("{} end", Esc(end)));
        }
        if let Some(pipe) = p.pipe(inode) {
            match (pipe.queued, pipe.capacity) {
                (Some(q), Some(c)) => parts.push(format!(
                    "{q} of {c} bytes queued{}",
                    if pipe.full { ", full" } else { "" }
                )),
                _ if pipe.full => parts.push("full".into()),
                _ => {}
            }
            let readers: Vec<String> = pipe
                .others
                .iter()
                .filter(|h| h.end.starts_with("read"))
                .take(3)
                .map(|h| {
                    let doing = match h.reading {
                        Some(true) => ", reading",
                        Some(false) => ", not reading",
                        None => "",
                    };
                    format!("pid {} ({}) fd {}{doing}", h.pid, Esc(&h.comm), h.fd)
                })
                .collect();
            if !readers.is_empty() {
                parts.push(format!("read end: {}", readers.join("; ")));
            }
        }
        return (!parts.is_empty()).then(|| parts.join("; "));
    }
    if let Some(sock) = &f.socket {
        let mut s = format!("{} {}", Esc(&sock.protocol), Esc(&sock.state));
        if let Some(l) = &sock.local {
            let _ = write!(s, " {}", Esc(l));
        }
        if let Some(r) = &sock.remote {
            let _ = write!(s, " ↔ {}", Esc(r));
        }
        if sock.rx_queue > 0 {
            let _ = write!(s, ", Recv-Q {}", sock.rx_queue);
        }
        if sock.tx_queue > 0 {
            let _ = write!(s, ", Send-Q {}", sock.tx_queue);
        }
        return Some(s);
    }
    None
}
