//! The text form of a dump, in the spirit of a Java thread dump: a header (process, time, who
//! triggered, capture statistics), findings first, the process summary (fds, sockets, pipes),
//! then one block per group of threads that share a stack (the stack is shown once, under the
//! threads that share it). The JSON form is `serde_json` of [`Dump`].

use crate::analysis::syscall::syscall_in;
use crate::escape::{self, field, Esc};
use crate::model::{CaptureMethod, CaptureStatus, Dump, Frame, ProcessFacts, Thread};
use std::borrow::Cow;
use std::fmt::Write;

/// Render a dump as text. Every string that came from the process (names, paths, symbols,
/// and, when the dump was read back from a file, anything else) is escaped with
/// [`crate::escape`]: the text has no control character but its own line feeds.
pub fn text(dump: &Dump) -> String {
    text_with(dump, &TextOptions::default())
}

/// How [`text_with`] shows a dump.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// Show every native frame. By default a run of the Python interpreter's own frames
    /// between two Python frames (`_PyEval_EvalFrameDefault`, `?? in python3.11`), and a run of
    /// a stripped interpreter's unnamed frames anywhere, is one line saying how many were left
    /// out, so the stack reads like `py-spy dump --native`.
    pub native_all: bool,
}

/// The dump in words, as [`text`], with options.
pub fn text_with(dump: &Dump, opts: &TextOptions) -> String {
    let out = text_unchecked(dump, opts);
    // The fields are escaped one by one; this catches whatever a hostile dump file put in a
    // field shown raw (all of them came from the target).
    match crate::escape::text(&out) {
        Cow::Borrowed(_) => out,
        Cow::Owned(s) => s,
    }
}

fn text_unchecked(dump: &Dump, opts: &TextOptions) -> String {
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
            thread(&mut out, &dump.threads[one], facts, opts);
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
            thread_stack(&mut out, &dump.threads[group[0]], opts);
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
        // What limited the search for other holders (permissions, the time budget, relatives
        // only), whether or not it found any.
        match (
            pipe.others_checked,
            pipe.others.is_empty(),
            &pipe.others_note,
        ) {
            (true, true, None) => out.push_str("; no other process holds it"),
            (true, true, Some(note)) => {
                let _ = write!(out, "; no other holder found ({})", Esc(note));
            }
            (true, false, Some(note)) => {
                let _ = write!(out, "; search: {}", Esc(note));
            }
            _ => {}
        }
        out.push('\n');
    }
}

/// `trigger: watchdog (STACKDUMP_WATCH=60000 ms): 4 thread(s) stuck: 12 for 63 s, ...`.
fn watchdog_line(out: &mut String, setting: &str, w: &crate::model::WatchdogTrigger) {
    let _ = writeln!(
        out,
        "trigger: watchdog ({setting}{} ms): {} thread(s) stuck: {}",
        w.watch_ms,
        w.threads.len(),
        w.threads
            .iter()
            .take(12)
            .map(|t| format!("{} for {} s", t.tid, t.stuck_ms / 1000))
            .collect::<Vec<_>>()
            .join(", ")
    );
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
        if let Some(w) = &d.trigger.watchdog {
            // `stackdump watch` took this inspect.
            watchdog_line(out, "stackdump watch --stuck ", w);
        }
        return;
    }
    let tr = &d.trigger;
    if let Some(w) = &tr.watchdog {
        watchdog_line(out, "STACKDUMP_WATCH=", w);
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

fn thread(out: &mut String, t: &Thread, facts: Option<&ProcessFacts>, opts: &TextOptions) {
    thread_header(out, t, facts);
    thread_stack(out, t, opts);
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
fn thread_stack(out: &mut String, t: &Thread, opts: &TextOptions) {
    let k = &t.kernel;
    if t.capture != CaptureStatus::Ok {
        let _ = writeln!(out, "   stack: {}", t.capture.explain());
    }
    let hidden = if opts.native_all {
        Vec::new()
    } else {
        interpreter_runs(&t.frames)
    };
    let mut i = 0;
    while i < t.frames.len() {
        if let Some(&(start, end)) = hidden.iter().find(|r| r.0 == i) {
            let f = &t.frames[start];
            let module = f.module.as_deref().unwrap_or("");
            let base = module.rsplit('/').next().unwrap_or(module);
            let _ = writeln!(
                out,
                "   #{start}-#{} {} frame{} of the interpreter in {} (--native-all shows them)",
                end - 1,
                end - start,
                if end - start == 1 { "" } else { "s" },
                Esc(base)
            );
            i = end;
            continue;
        }
        let _ = writeln!(out, "   #{i:<3} {}", frame(&t.frames[i]));
        locals(out, &t.frames[i]);
        i += 1;
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
            locals(out, f);
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

/// The runs `[start, end)` of frames left out by default: the interpreter's own frames (native
/// frames of a module whose file name says it is Python: `python3.11`, `libpython3.11.so.1.0`),
/// at least two in a row (one line for one frame would save nothing):
///
/// - between two Python frames, named or not: they only say how CPython calls a Python
///   function (`_PyEval_EvalFrameDefault`, `_PyFunction_Vectorcall`, `?? in python3.11`);
/// - anywhere, when none of them is named (a stripped interpreter, e.g. Debian's
///   `/usr/bin/python3.11`): a run of `??` says nothing a reader can use, wherever it is.
///
/// Named frames inside the innermost Python frame (what the Python code called, down to the
/// system call) and outside the outermost one (the thread's start) are all shown, as are frames
/// of any other module (a C extension, libc).
fn interpreter_runs(frames: &[Frame]) -> Vec<(usize, usize)> {
    let interpreter = |f: &Frame| {
        f.python.is_none()
            && f.jit.is_none()
            && f.module.as_deref().is_some_and(|m| {
                m.rsplit('/')
                    .next()
                    .is_some_and(|b| b.starts_with("python") || b.starts_with("libpython"))
            })
    };
    let innermost_py = frames.iter().position(|f| f.python.is_some());
    let outermost_py = frames.iter().rposition(|f| f.python.is_some());
    let between_py =
        |i: usize| matches!((innermost_py, outermost_py), (Some(a), Some(b)) if a < i && i < b);
    let mut runs = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        if !interpreter(&frames[i]) {
            i += 1;
            continue;
        }
        // A run of interpreter frames, all between Python frames or all unnamed.
        let start = i;
        let inside = between_py(i);
        while i < frames.len()
            && interpreter(&frames[i])
            && between_py(i) == inside
            && (inside || frames[i].function.is_none())
        {
            i += 1;
        }
        if i == start {
            // A named interpreter frame outside the Python frames: shown.
            i += 1;
        } else if i - start >= 2 {
            runs.push((start, i));
        }
    }
    runs
}

/// A Python frame's locals (`--locals`), one per line under the frame: `      name = repr`.
fn locals(out: &mut String, f: &Frame) {
    for l in f.python.iter().flat_map(|p| &p.locals) {
        // The repr's backslashes are Python's escapes: kept, controls escaped.
        let _ = writeln!(
            out,
            "         {} = {}",
            Esc(&l.name),
            escape::quoted(&l.repr)
        );
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
    fn locals_are_listed_under_their_frame_escaped() {
        use crate::analysis::diagnose::tests::{dump, frames, thread};
        use crate::model::{Addr, PyFrameInfo, PyLocal, SyscallState};
        let mut t = thread(1, "python3", SyscallState::Running, None);
        let local = |name: &str, repr: &str| PyLocal {
            name: name.into(),
            repr: repr.into(),
        };
        t.frames = vec![Frame {
            python: Some(PyFrameInfo {
                code: Addr(0x7000),
                name: "work".into(),
                first_line: None,
                entry: true,
                frame: Some(Addr(0x9000)),
                locals: vec![local("n", "42"), local("s\u{1b}[2J", "'x\u{1b}'")],
            }),
            module: None,
            file: Some("app.py".into()),
            line: Some(3),
            ..frames(&["work"]).remove(0)
        }];
        let out = text(&dump(vec![t.clone()]));
        assert!(
            out.contains(
                "   #0   [py] work at app.py:3\n         n = 42\n         s\\e[2J = 'x\\e'\n"
            ),
            "{out}"
        );
        // Without locals, nothing more than the frame line.
        t.frames[0].python.as_mut().unwrap().locals.clear();
        let out = text(&dump(vec![t]));
        assert!(out.contains("   #0   [py] work at app.py:3\n"), "{out}");
        assert!(!out.contains(" = "), "{out}");
    }

    #[test]
    fn the_interpreters_frames_between_python_frames_are_one_line() {
        use crate::analysis::diagnose::tests::{dump, frames, thread};
        use crate::model::{Addr, PyFrameInfo, SyscallState};
        let py = |name: &str| Frame {
            python: Some(PyFrameInfo {
                code: Addr(0x7000),
                name: name.into(),
                first_line: None,
                entry: false,
                frame: None,
                locals: Vec::new(),
            }),
            module: None,
            file: Some("app.py".into()),
            line: Some(3),
            ..frames(&[name]).remove(0)
        };
        let unnamed = |ip: u64| Frame {
            ip: Addr(ip),
            module: Some("/usr/bin/python3.11".into()),
            function: None,
            ..frames(&["x"]).remove(0)
        };
        let mut t = thread(1, "python3", SyscallState::Running, None);
        t.frames = vec![
            frames(&["select"]).remove(0),
            py("inner"),
            unnamed(0x51),
            Frame {
                function: Some("_PyEval_EvalFrameDefault".into()),
                ..unnamed(0x52)
            },
            unnamed(0x53),
            py("outer"),
            unnamed(0x54),
            unnamed(0x55),
            frames(&["start_thread"]).remove(0),
        ];
        let d = dump(vec![t]);
        let folded = text(&d);
        assert!(
            folded.contains(
                "   #2-#4 3 frames of the interpreter in python3.11 (--native-all shows them)\n   #5   [py] outer"
            ),
            "{folded}"
        );
        // Outside the Python frames (the thread's start), a run of unnamed frames is one line
        // too; named ones are shown.
        assert!(
            folded.contains("   #6-#7 2 frames of the interpreter in python3.11 (--native-all shows them)\n   #8   start_thread"),
            "{folded}"
        );
        assert!(!folded.contains("(0x52)"), "{folded}");
        assert!(!folded.contains("_PyEval_EvalFrameDefault"), "{folded}");
        let all = text_with(&d, &TextOptions { native_all: true });
        for ip in [0x51, 0x53, 0x54, 0x55] {
            assert!(
                all.contains(&format!("?? in python3.11 ({ip:#x})")),
                "{all}"
            );
        }
        assert!(
            all.contains("_PyEval_EvalFrameDefault in python3.11 (0x52)"),
            "{all}"
        );
        assert!(!all.contains("frames of the interpreter"), "{all}");
    }

    #[test]
    fn a_stripped_interpreters_unnamed_runs_are_one_line_anywhere() {
        use crate::analysis::diagnose::tests::{dump, frames, thread};
        use crate::model::{Addr, SyscallState};
        let unnamed = |ip: u64| Frame {
            ip: Addr(ip),
            module: Some("/usr/bin/python3.11".into()),
            function: None,
            ..frames(&["x"]).remove(0)
        };
        let named = |ip: u64, name: &str| Frame {
            function: Some(name.into()),
            ..unnamed(ip)
        };
        // No Python frames at all (an interpreter we cannot read): the native stack only.
        let mut t = thread(1, "python3", SyscallState::Running, None);
        t.frames = vec![
            frames(&["select"]).remove(0),
            unnamed(0x61),
            unnamed(0x62),
            unnamed(0x63),
            named(0x64, "Py_BytesMain"),
            unnamed(0x65),
            frames(&["__libc_start_main"]).remove(0),
        ];
        let out = text(&dump(vec![t]));
        assert!(
            out.contains("   #1-#3 3 frames of the interpreter in python3.11 (--native-all shows them)\n   #4   Py_BytesMain in python3.11 (0x64)\n   #5   ?? in python3.11 (0x65)\n"),
            "{out}"
        );
    }

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
