//! The folded stack format of flame graph tools (`flamegraph.pl`, inferno, speedscope): one line
//! per distinct stack, root first, frames separated by `;`, then a space and how many threads
//! had that stack, summed over every dump given.
//!
//! ```text
//! clone3;start_thread;worker_main;handle_request;_db_execute;write 4
//! ```
//!
//! Frames are function names (inlined functions included, as their own frames), or
//! `module+0xoffset` when there is no name. Kernel frames (when the dump has the thread's kernel
//! stack) follow the user frames with the `_[k]` suffix flame graph tools colour as kernel. A
//! thread without a user stack (e.g. from `stackdump inspect`) has what the kernel shows: its
//! kernel frames, or `[syscall write]` / `[running]` when that is all there is. The dumper's own
//! thread is left out.
//!
//! Python frames are `qualname (file.py)` (py-spy's style without the line, so that stacks
//! in the same function still add up; inferno's python palette colours them). The root can
//! name the thread (`[worker-1]`) or the process (`[server 1234]`), see [`Root`].

use crate::model::{CaptureStatus, Dump, Frame, SyscallState, Thread};
use std::collections::BTreeMap;
use std::fmt::Write;

/// What each stack starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Root {
    /// The outermost frame: stacks of every thread and process add up.
    #[default]
    None,
    /// The thread's name, `[worker-1]`: one tower per kind of thread.
    Thread,
    /// The process's command and pid, `[server 1234]`: one tower per process.
    Process,
}

/// What to put in the stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// What each stack starts with.
    pub root: Root,
    /// Add kernel frames (`_[k]`) when the dump has them.
    pub kernel: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            root: Root::None,
            kernel: true,
        }
    }
}

/// Folded stacks of one dump or many, with the default [`Options`].
pub fn folded(dumps: &[Dump]) -> String {
    folded_with(dumps, &Options::default())
}

/// Folded stacks of one dump or many.
pub fn folded_with(dumps: &[Dump], opts: &Options) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for d in dumps {
        for t in &d.threads {
            if matches!(t.capture, CaptureStatus::Dumper | CaptureStatus::Exited) {
                continue;
            }
            let mut line = match opts.root {
                Root::Process => format!("[{} {}];", clean(&d.comm), d.pid),
                _ => String::new(),
            };
            line.push_str(&stack(t, opts));
            *counts.entry(line).or_default() += 1;
        }
    }
    let mut out = String::new();
    for (stack, n) in counts {
        let _ = writeln!(out, "{stack} {n}");
    }
    out
}

/// A name that cannot break the format (no `;`, no line breaks) nor drive a terminal: control
/// characters are shown escaped ([`crate::escape::field`]).
fn clean(name: &str) -> String {
    crate::escape::field(name).replace(';', ":")
}

fn frame_name(f: &Frame) -> String {
    if let (Some(name), Some(_)) = (&f.function, &f.python) {
        return match &f.file {
            Some(file) => clean(&format!(
                "{name} ({})",
                file.rsplit('/').next().unwrap_or(file)
            )),
            None => clean(&format!("{name} (python)")),
        };
    }
    if let Some(name) = &f.function {
        return clean(name);
    }
    if f.jit.is_some() {
        return "[jit]".into();
    }
    match (&f.module, f.offset) {
        (Some(m), Some(off)) => clean(&format!("{}+{off}", m.rsplit('/').next().unwrap_or(m))),
        (Some(m), None) => clean(&format!("{}@{}", m.rsplit('/').next().unwrap_or(m), f.ip)),
        _ => format!("{}", f.ip),
    }
}

/// One thread's stack, root first.
fn stack(t: &Thread, opts: &Options) -> String {
    let mut parts: Vec<String> = Vec::new();
    if opts.root == Root::Thread {
        parts.push(format!("[{}]", clean(t.display_name())));
    }
    // Root first. An inlined frame that names the function it is inlined into (the symbolizer
    // says so for some libc entry points) is one frame, not two.
    let mut previous: Option<&Frame> = None;
    for f in t.frames.iter().rev() {
        if let Some(outer) = previous {
            if f.inlined && f.ip == outer.ip && f.function == outer.function {
                continue;
            }
        }
        parts.push(frame_name(f));
        previous = Some(f);
    }
    let kernel: Vec<String> = match (&t.kernel.kernel_stack, opts.kernel) {
        (Some(ks), true) => ks
            .iter()
            .rev()
            .map(|f| {
                // `pipe_write+0x1a3/0x4e0` → `pipe_write_[k]`
                let name = f.split('+').next().unwrap_or(f);
                format!("{}_[k]", clean(name))
            })
            .collect(),
        _ => Vec::new(),
    };
    if t.frames.is_empty() && kernel.is_empty() {
        parts.push(match &t.kernel.syscall {
            SyscallState::InSyscall { .. } => {
                format!(
                    "[syscall {}]",
                    crate::kernel::syscalls::syscall_name(&t.kernel.syscall)
                )
            }
            SyscallState::Running => "[running]".into(),
            SyscallState::Blocked { .. } => "[blocked]".into(),
            SyscallState::Unknown => "[unknown]".into(),
        });
    }
    parts.extend(kernel);
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::diagnose::tests::{dump, frames, in_syscall, incident, thread};

    #[test]
    fn one_line_per_distinct_stack_root_first() {
        let d = incident();
        let out = folded(std::slice::from_ref(&d));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "[syscall accept4] 1",
                "clone3;worker_main;_db_execute;print;_Py_write;write 4",
            ],
            "{out}"
        );
        // Across dumps the counts add up.
        let twice = folded(&[d.clone(), d]);
        assert!(twice.contains("_Py_write;write 8\n"), "{twice}");
    }

    #[test]
    fn names_kernel_frames_and_odd_characters() {
        let mut t = thread(1, "w;1", in_syscall("read", [0; 6], None), None);
        t.frames = frames(&["<[u8; 4] as Foo>::bar", "main"]);
        t.frames.push(Frame {
            ip: crate::model::Addr(0x1234),
            module: Some("/lib/libc.so.6".into()),
            offset: Some(crate::model::Addr(0x29d90)),
            function: None,
            file: None,
            line: None,
            inlined: false,
            python: None,
            jit: None,
        });
        // The same function inlined into itself is one frame.
        let mut inner = t.frames[1].clone();
        inner.inlined = true;
        t.frames.insert(1, inner);
        t.kernel.kernel_stack = Some(vec![
            "pipe_read+0x1a3/0x4e0".into(),
            "vfs_read+0x2/0x3".into(),
        ]);
        let mut dumper = thread(2, "stackdump", SyscallState::Running, None);
        dumper.capture = CaptureStatus::Dumper;
        let d = dump(vec![t, dumper]);
        let out = folded_with(
            std::slice::from_ref(&d),
            &Options {
                root: Root::Thread,
                kernel: true,
            },
        );
        assert_eq!(
            out,
            "[w:1];libc.so.6+0x29d90;main;<[u8: 4] as Foo>::bar;vfs_read_[k];pipe_read_[k] 1\n"
        );
        let out = folded_with(
            &[d],
            &Options {
                root: Root::None,
                kernel: false,
            },
        );
        assert_eq!(out, "libc.so.6+0x29d90;main;<[u8: 4] as Foo>::bar 1\n");
    }

    #[test]
    fn python_frames_are_marked_and_the_root_can_be_the_process() {
        let mut t = thread(1, "worker", SyscallState::Running, None);
        t.frames = frames(&["handle", "main"]);
        t.frames[0].file = Some("/srv/app/handlers.py".into());
        t.frames[0].line = Some(12);
        t.frames[0].python = Some(crate::model::PyFrameInfo {
            code: crate::model::Addr(0x10),
            name: "handle".into(),
            first_line: Some(10),
            entry: true,
            frame: None,
            locals: Vec::new(),
        });
        let d = dump(vec![t]);
        let opts = |root| Options {
            root,
            kernel: false,
        };
        let one = std::slice::from_ref(&d);
        assert_eq!(
            folded_with(one, &opts(Root::None)),
            "main;handle (handlers.py) 1\n"
        );
        assert_eq!(
            folded_with(one, &opts(Root::Thread)),
            "[worker];main;handle (handlers.py) 1\n"
        );
        assert_eq!(
            folded_with(one, &opts(Root::Process)),
            format!("[{} {}];main;handle (handlers.py) 1\n", d.comm, d.pid)
        );
    }

    #[test]
    fn a_python_thread_is_rooted_at_its_python_name() {
        let mut t = thread(1, "python3", SyscallState::Running, None);
        t.frames = frames(&["main"]);
        t.python = Some(crate::analysis::diagnose::gil_tests::py(
            "worker-0", false, false, false,
        ));
        let out = folded_with(
            &[dump(vec![t])],
            &Options {
                root: Root::Thread,
                kernel: false,
            },
        );
        assert_eq!(out, "[worker-0];main 1\n");
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        let mut t = thread(1, "\x1b[2K;x\n", SyscallState::Running, None);
        t.frames = frames(&["main", "evil\x1b]52;c;eA==\x07"]);
        let out = folded_with(
            &[dump(vec![t])],
            &Options {
                root: Root::Thread,
                kernel: false,
            },
        );
        assert_eq!(out, "[\\e[2K:x\\n];evil\\e]52:c:eA==\\x07;main 1\n");
    }
}
