//! The text form of a dump, in the spirit of a Java thread dump: a header (process, time, who
//! triggered, capture statistics), findings first, the process summary (fds, sockets, pipes),
//! then one block per group of threads that share a stack (the stack is shown once, under the
//! threads that share it). The JSON form is `serde_json` of [`Dump`].

use crate::analysis::syscall::syscall_in;
use crate::escape::{field, Esc};
use crate::model::{CaptureMethod, CaptureStatus, Dump, Frame, ProcessFacts, Thread};
use std::borrow::Cow;
use std::fmt::Write;

/// Render a dump as text. Every string that came from the process (names, paths, symbols,
/// and, when the dump was read back from a file, anything else) is escaped with
/// [`crate::escape`]: the text has no control character but its own line feeds.
pub fn text(dump: &Dump) -> String {
    let out = text_unchecked(dump);
    // The fields are escaped one by one; this catches whatever a hostile dump file put in a
    // field shown raw (all of them came from the target).
    match crate::escape::text(&out) {
        Cow::Borrowed(_) => out,
        Cow::Owned(s) => s,
    }
}

fn text_unchecked(dump: &Dump) -> String {
    let mut out = String::with_capacity(256 + dump.threads.len() * 1024);
    header(&mut out, dump);
    if !dump.findings.is_empty() {
        out.push_str("\nFindings:\n");
        for f in &dump.findings {
            let _ = writeln!(out, "  * {}", Esc(&f.summary));
            for e in &f.evidence {
                let _ = writeln!(out, "      {}", Esc(e));
            }
        }
    }
    if let Some(p) = &dump.process {
        process(&mut out, p);
    }
    if !dump.errors.is_empty() {
        out.push_str("\nErrors while dumping:\n");
        for e in &dump.errors {
            let _ = writeln!(out, "  ! {}", Esc(e));
        }
    }
    let facts = dump.process.as_ref();
    for group in crate::analysis::diagnose::stack_groups(dump) {
        out.push('\n');
        if let [one] = group[..] {
            thread(&mut out, &dump.threads[one], facts);
        } else {
            if dump.threads[group[0]].frames.is_empty() {
                let _ = writeln!(
                    out,
                    "{} threads in the same place (same system call, wait channel and kernel stack):",
                    group.len()
                );
            } else {
                let _ = writeln!(out, "{} threads with the same stack:", group.len());
            }
            for &i in &group {
                thread_header(&mut out, &dump.threads[i], facts);
            }
            thread_stack(&mut out, &dump.threads[group[0]]);
        }
    }
    out
}

/// The process summary: fds by kind, sockets by state, pipes.
fn process(out: &mut String, p: &ProcessFacts) {
    out.push_str("\nProcess:\n");
    let mut kinds: Vec<(&String, &usize)> = p.fds.by_kind.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let kinds: Vec<String> = kinds
        .iter()
        .map(|(k, n)| format!("{n} {}", Esc(k)))
        .collect();
    match &p.fds.unknown {
        Some(why) => {
            let _ = writeln!(out, "  fds: unknown ({})", Esc(why));
        }
        None => {
            let _ = writeln!(out, "  fds: {} open ({})", p.fds.total, kinds.join(", "));
        }
    }
    for g in &p.sockets {
        let _ = write!(
            out,
            "  sockets: {} {} {}",
            g.count,
            Esc(&g.protocol),
            Esc(&g.state)
        );
        if g.state == "LISTEN" {
            if g.rx_queue > 0 {
                let _ = write!(out, ", {} connection(s) waiting to be accepted", g.rx_queue);
            }
        } else {
            if g.rx_queue > 0 {
                let _ = write!(
                    out,
                    ", Recv-Q {} bytes ({} with unread data)",
                    g.rx_queue, g.with_unread
                );
            }
            if g.tx_queue > 0 {
                let _ = write!(out, ", Send-Q {} bytes", g.tx_queue);
            }
        }
        if !g.local.is_empty() {
            let _ = write!(out, "; local {}", field(&g.local.join(", ")));
        }
        out.push('\n');
    }
    for pipe in &p.pipes {
        let fds: Vec<String> = pipe
            .fds
            .iter()
            .map(|f| format!("fd {} ({} end)", f.fd, Esc(&f.end)))
            .collect();
        let _ = write!(out, "  pipe:[{}] {}: ", pipe.inode, fds.join(", "));
        match (pipe.queued, pipe.capacity) {
            (Some(q), Some(c)) => {
                let _ = write!(out, "{q} of {c} bytes queued");
            }
            _ => {
                let _ = write!(
                    out,
                    "fill level unknown ({})",
                    field(pipe.unknown.as_deref().unwrap_or("?"))
                );
            }
        }
        if pipe.full {
            out.push_str(" (FULL)");
        }
        for h in &pipe.others {
            let _ = write!(
                out,
                "; pid {} ({}) fd {} ({} end)",
                h.pid,
                Esc(&h.comm),
                h.fd,
                Esc(&h.end)
            );
            match h.reading {
                Some(true) => out.push_str(" reading"),
                Some(false) => out.push_str(" not reading"),
                None => {}
            }
        }
        if pipe.others_checked && pipe.others.is_empty() {
            out.push_str("; no other process holds it");
        }
        out.push('\n');
    }
}

/// The first line of an `inspect` capture: who looked, and that nothing was done to the process.
fn inspected_by(out: &mut String, d: &Dump) {
    let _ = write!(out, "inspected from outside");
    if let Some(p) = d.trigger.sender_pid {
        let _ = write!(out, " by pid {p}");
    }
    if let Some(uid) = d.trigger.sender_uid {
        let _ = write!(out, " (uid {uid})");
    }
    out.push_str(": no signal sent, nothing loaded into the process\n");
}

fn header(out: &mut String, d: &Dump) {
    let _ = writeln!(
        out,
        "stackdump of pid {} ({}) at {}",
        d.pid,
        Esc(&d.comm),
        Esc(&d.time)
    );
    let _ = writeln!(out, "exe: {}", Esc(&d.exe));
    if !d.cmdline.is_empty() {
        let _ = writeln!(out, "cmdline: {}", Esc(&d.cmdline));
    }
    if d.capture.method == CaptureMethod::Kernel {
        inspected_by(out, d);
        let _ = writeln!(
            out,
            "capture: {} threads, kernel view only (no user stacks) in {:.1} ms",
            d.capture.threads,
            d.capture.duration_us as f64 / 1000.0
        );
        return;
    }
    if d.capture.method.is_outside() {
        inspected_by(out, d);
        let c = &d.capture;
        let _ = writeln!(
            out,
            "capture: {} threads, {} stacks captured from outside ({} read without a stop, {} stopped with ptrace{}) in {:.1} ms",
            c.threads,
            c.captured,
            c.without_signal,
            c.captured.saturating_sub(c.without_signal),
            if c.method == CaptureMethod::OutsideConsistent { ", all at once" } else { ", one at a time" },
            c.duration_us as f64 / 1000.0
        );
        return;
    }
    let tr = &d.trigger;
    if let Some(w) = &tr.watchdog {
        let _ = writeln!(
            out,
            "trigger: watchdog (STACKDUMP_WATCH={} ms): {} thread(s) stuck: {}",
            w.watch_ms,
            w.threads.len(),
            w.threads
                .iter()
                .take(12)
                .map(|t| format!("{} for {} s", t.tid, t.stuck_ms / 1000))
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        let _ = write!(out, "trigger: SIG{}", Esc(&tr.signal));
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
    }
    let c = &d.capture;
    let _ = writeln!(
        out,
        "capture: {} threads, {} stacks captured ({} without a signal) in {:.1} ms (capture signal SIG{}, deadline {} ms, dump #{})",
        c.threads,
        c.captured,
        c.without_signal,
        c.duration_us as f64 / 1000.0,
        Esc(&c.capture_signal),
        c.deadline_ms,
        c.sequence
    );
}

fn thread(out: &mut String, t: &Thread, facts: Option<&ProcessFacts>) {
    thread_header(out, t, facts);
    thread_stack(out, t);
}

/// The thread's line and its system call.
fn thread_header(out: &mut String, t: &Thread, facts: Option<&ProcessFacts>) {
    let k = &t.kernel;
    let _ = write!(
        out,
        "\"{}\" tid {}  {} ({})",
        Esc(&t.name),
        t.tid,
        k.state,
        Esc(&k.state_name)
    );
    if let Some(py) = &t.python {
        match &py.name {
            Some(n) => {
                let _ = write!(out, "  python \"{}\"", Esc(n));
            }
            None if py.activity().is_some() => out.push_str("  python"),
            None => {}
        }
        if let Some(a) = py.activity() {
            let _ = write!(out, " ({a})");
        }
        if py.waits_for_gil {
            out.push_str(" waits for the GIL");
        }
    }
    if let Some(w) = &k.wchan {
        let _ = write!(out, "  wchan {}", Esc(w));
    }
    let _ = write!(out, "  cpu user {} sys {} ticks", k.utime, k.stime);
    out.push('\n');
    let _ = writeln!(out, "   syscall: {}", syscall_in(&k.syscall, facts));
}

/// The thread's capture status, frames and kernel stack.
fn thread_stack(out: &mut String, t: &Thread) {
    let k = &t.kernel;
    if t.capture != CaptureStatus::Ok {
        let _ = writeln!(out, "   stack: {}", t.capture.explain());
    }
    for (i, f) in t.frames.iter().enumerate() {
        let _ = writeln!(out, "   #{i:<3} {}", frame(f));
    }
    if t.truncated {
        out.push_str("   ... (truncated: the stack did not end at a thread entry point)\n");
    }
    if let Some(py) = &t.python {
        if let Some(note) = &py.note {
            let _ = writeln!(out, "   python ({}): {}", Esc(&py.interpreter), Esc(note));
        }
        for (i, f) in py.frames.iter().enumerate() {
            let _ = writeln!(out, "   py#{i:<3} {}", frame(f));
        }
    }
    if let Some(ks) = &k.kernel_stack {
        if !ks.is_empty() {
            out.push_str("   kernel:\n");
            for l in ks {
                let _ = writeln!(out, "      {}", Esc(l));
            }
        }
    }
}

/// One frame in words: `worker_level_07 at parked.c:45 in parked (0x55d0a1b2)`.
pub fn frame(f: &Frame) -> String {
    let mut s = String::new();
    if f.inlined {
        s.push_str("[inlined] ");
    }
    if f.python.is_some() {
        s.push_str("[py] ");
    }
    match (&f.jit, &f.function) {
        // Code outside every module: named by the process's perf map, or by its region.
        (Some(_), Some(name)) => {
            let _ = write!(s, "{} [jit]", field(name));
        }
        (Some(r), None) => {
            let _ = write!(s, "[jit {}-{}]", r.start, r.end);
        }
        (None, name) => s.push_str(&field(name.as_deref().unwrap_or("??"))),
    }
    if let Some(file) = &f.file {
        let _ = write!(s, " at {}", Esc(file));
        if let Some(line) = f.line {
            let _ = write!(s, ":{line}");
        }
    }
    if let Some(m) = &f.module {
        let base = m.rsplit('/').next().unwrap_or(m);
        let _ = write!(s, " in {}", Esc(base));
    }
    if f.python.is_none() {
        let _ = write!(s, " ({})", f.ip);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diagnose::{findings, tests::incident};
    use crate::analysis::syscall::syscall;

    #[test]
    fn findings_first_process_summary_and_shared_stacks_once() {
        let mut d = incident();
        d.findings = findings(&d);
        let t = text(&d);
        let at = |needle: &str| {
            t.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from\n{t}"))
        };
        assert!(at("Findings:") < at("Process:"));
        assert!(at("Process:") < at("\"python3\" tid 100"));
        assert!(
            t.contains("  fds: 27 open (21 socket, 3 file, 1 pipe)\n"),
            "{t}"
        );
        assert!(t.contains("  sockets: 20 tcp CLOSE_WAIT, Recv-Q 6020 bytes (20 with unread data); local 127.0.0.1:40001 (20)\n"), "{t}");
        assert!(t.contains("  pipe:[182067] fd 2 (write end): 65104 of 65536 bytes queued (FULL); pid 24185 (sleep) fd 0 (read end) not reading\n"), "{t}");
        // The four workers: one block, four thread lines, one stack.
        assert!(
            t.contains("4 threads with the same stack:\n\"worker-0\" tid 101"),
            "{t}"
        );
        assert_eq!(t.matches("#0   write").count(), 1, "{t}");
        assert_eq!(t.matches("   syscall: write(fd 2 → pipe:[182067] (write end; 65104 of 65536 bytes queued, full; read end: pid 24185 (sleep) fd 0, not reading), ").count(), 4, "{t}");
        // Without the facts, the plain form.
        assert_eq!(
            syscall(&d.threads[1].kernel.syscall),
            "write(fd 2 → pipe:[182067], 0x5500, 301 bytes, …)"
        );
    }

    #[test]
    fn target_strings_are_escaped() {
        let mut d = incident();
        d.comm = "\x1b]52;c;ZXZpbA==\x07".into();
        d.exe = "/tmp/evil\x1b[2K\nFindings: none".into();
        d.cmdline = "run \u{9b}31m\\e".into();
        d.threads[0].name = "\x1b[1A\x1b[2K".into();
        let with_frames = d.threads.iter().position(|t| !t.frames.is_empty()).unwrap();
        d.threads[with_frames].frames[0].function = Some("f\x07".into());
        d.errors.push("bad\rline".into());
        let t = text(&d);
        assert!(
            !t.chars()
                .any(|c| c != '\n' && (c.is_control() || ('\u{80}'..='\u{9f}').contains(&c))),
            "{t:?}"
        );
        assert!(t.contains("(\\e]52;c;ZXZpbA==\\x07)"), "{t}");
        assert!(t.contains("exe: /tmp/evil\\e[2K\\nFindings: none\n"), "{t}");
        assert!(t.contains("cmdline: run \\x9b31m\\\\e\n"), "{t}");
        assert!(t.contains("\"\\e[1A\\e[2K\" tid"), "{t}");
        assert!(t.contains("f\\x07"), "{t}");
        assert!(t.contains("  ! bad\\rline\n"), "{t}");
    }
}
