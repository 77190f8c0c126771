//! Python frames (issue 8): CPython processes dumped with the preload (and read from outside with
//! the core's reader, as `stackdump inspect` does) show every thread's Python frames, with
//! function, file and line, merged into the native stack at the evaluator frames they belong
//! to, and each thread's `threading` name.
//!
//! Every test runs against each CPython found on the machine (pyenv's builds under
//! `$PYENV_ROOT/versions`, shared libpython; Debian's `/usr/bin/python3.X`, a static
//! interpreter), or the ones listed in `STACKDUMP_TEST_PYTHONS` (colon-separated paths). Versions
//! 3.8-3.13 that are missing are skipped with a printed reason. The fixture is
//! `tests/targets/python/stacks.py`; its parking spots are marked `# @name` in the source, and the
//! tests read the line numbers from there.

use crate::util::*;
use stackdump_core::kernel::proc as kproc;
use stackdump_core::model::{CaptureStatus, Dump, Frame, PyMerge, Thread};
use stackdump_core::python;
use stackdump_core::stack::unwind::ProcessMemory;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One CPython on this machine.
#[derive(Debug, Clone)]
struct Python {
    exe: PathBuf,
    major: u32,
    minor: u32,
    micro: u32,
}

impl Python {
    fn label(&self) -> String {
        format!(
            "CPython {}.{}.{} ({})",
            self.major,
            self.minor,
            self.micro,
            self.exe.display()
        )
    }

    fn at_least(&self, minor: u32) -> bool {
        self.major == 3 && self.minor >= minor
    }
}

/// Ask an interpreter its version; None if it does not run.
fn probe(exe: &Path) -> Option<Python> {
    let out = Command::new(exe)
        .args(["-c", "import sys; print('%d %d %d' % sys.version_info[:3])"])
        .env_remove("LD_PRELOAD")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u32> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v.len() == 3).then(|| Python {
        exe: exe.to_path_buf(),
        major: v[0],
        minor: v[1],
        micro: v[2],
    })
}

/// Every CPython interpreter found (all versions, also those older than 3.8).
fn all_pythons() -> &'static [Python] {
    static FOUND: OnceLock<Vec<Python>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Ok(list) = std::env::var("STACKDUMP_TEST_PYTHONS") {
            candidates.extend(list.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
        } else {
            let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into());
            if let Ok(dirs) = std::fs::read_dir(Path::new(&root).join("versions")) {
                let mut dirs: Vec<PathBuf> = dirs.flatten().map(|d| d.path()).collect();
                dirs.sort();
                for d in dirs {
                    for name in ["bin/python3", "bin/python"] {
                        if d.join(name).is_file() {
                            candidates.push(d.join(name));
                            break;
                        }
                    }
                }
            }
            for minor in 6..=14 {
                let p = PathBuf::from(format!("/usr/bin/python3.{minor}"));
                if p.is_file() {
                    candidates.push(p);
                }
            }
        }
        let found: Vec<Python> = candidates.iter().filter_map(|c| probe(c)).collect();
        for minor in 8..=13 {
            if !found.iter().any(|p| p.major == 3 && p.minor == minor) {
                eprintln!(
                    "python tests: no CPython 3.{minor} on this machine (pyenv or /usr/bin): its tests are skipped"
                );
            }
        }
        found
    })
}

/// The interpreters Python frames are supported for (3.8+).
fn pythons() -> Vec<Python> {
    let v: Vec<Python> = all_pythons()
        .iter()
        .filter(|p| p.at_least(8))
        .cloned()
        .collect();
    if v.is_empty() {
        eprintln!("python tests: no CPython 3.8 or later on this machine: skipped");
    }
    v
}

/// Run `body` for every interpreter; report every failure, not just the first.
#[track_caller]
fn for_each_python(body: impl Fn(&Python)) {
    let mut failures = Vec::new();
    for py in pythons() {
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&py)));
        match result {
            Ok(()) => eprintln!("  {}: ok in {:.1?}", py.label(), started.elapsed()),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                failures.push(format!("=== {}\n{msg}", py.label()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Line numbers of the `# @name` markers of a fixture.
fn markers(file: &Path) -> HashMap<String, u32> {
    read_to_string(file)
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (_, name) = l.rsplit_once("# @")?;
            Some((name.trim().to_string(), i as u32 + 1))
        })
        .collect()
}

fn stacks_py() -> PathBuf {
    python_target("stacks.py")
}

/// `python stacks.py ARGS...` with the library preloaded (or not).
fn spawn(py: &Python, args: &[&str], preload: Preload, env: &[(&str, &Path)]) -> Target {
    let mut cmd = Command::new(&py.exe);
    cmd.arg(stacks_py()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Target::spawn(cmd, preload)
}

static REQUEST: AtomicU32 = AtomicU32::new(1000);

/// `sigqueue(pid, SIGUSR1, id)`; false when the process is gone.
#[track_caller]
fn trigger(pid: i32, id: u32) -> bool {
    let sv = libc::sigval {
        sival_ptr: id as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue(3) with a valid signal number and a plain value has no memory-safety
    // preconditions (the pointer is never dereferenced, only carried).
    let rc = unsafe { libc::sigqueue(pid, libc::SIGUSR1, sv) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "sigqueue({pid}): {e}");
    }
    rc == 0
}

/// The dump of request `id`, if it appears before `deadline` (or while `alive` holds).
fn wait_request(
    dir: &Path,
    pid: i32,
    id: u32,
    deadline: Instant,
    mut alive: impl FnMut() -> bool,
) -> Option<PathBuf> {
    let suffix = format!("-r{id}.json");
    let mut found = None;
    poll_until(deadline, || {
        found = dump_files(dir, pid, "json")
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(&suffix));
        found.is_some() || !alive()
    });
    found
}

/// stacks.py prints READY before its main thread enters `main_park`, and on its way there it
/// may wait for the GIL (the spinner holds it) with `main` as its innermost Python frame: wait
/// until that frame, read from outside as the core does, is `main_park` at its marker `line`,
/// where it stays.
#[track_caller]
fn wait_main_parked(t: &Target, line: u32) {
    let main = stackdump_core::model::Tid(t.pid);
    let parked = || {
        let Ok(maps) = std::fs::read(t.proc_dir().join("maps")) else {
            return false;
        };
        let maps = kproc::parse_maps(&maps);
        python::threads(
            &ProcessMemory { pid: t.pid },
            &maps,
            &t.proc_dir().join("root"),
            &t.tids(),
        )
        .is_ok_and(|p| {
            p.threads.iter().any(|th| {
                th.tid == Some(main)
                    && th
                        .frames
                        .first()
                        .is_some_and(|f| f.function == "main_park" && f.line == Some(line))
            })
        })
    };
    assert!(
        poll_until(deadline(), parked),
        "MainThread never parked in main_park\n{}",
        t.describe()
    );
}

/// Trigger a dump with a fresh request id and read it.
#[track_caller]
fn dump(t: &mut Target) -> (PathBuf, Dump) {
    let id = REQUEST.fetch_add(1, Ordering::Relaxed);
    assert!(trigger(t.pid, id), "{} is gone\n{}", t.what, t.describe());
    let pid = t.pid;
    let path = wait_request(&t.dump_dir(), pid, id, deadline(), || true).unwrap_or_else(|| {
        panic!(
            "no dump for request {id} of {} before the deadline\n{}",
            t.what,
            t.describe()
        )
    });
    let d = read_dump(&path);
    (path, d)
}

/// The thread whose Python name is `name`.
#[track_caller]
fn py_thread<'a>(d: &'a Dump, name: &str, text: &str) -> &'a Thread {
    let found: Vec<&Thread> = d
        .threads
        .iter()
        .filter(|t| t.python.as_ref().and_then(|p| p.name.as_deref()) == Some(name))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one thread with the Python name {name:?}\n{text}"
    );
    found[0]
}

/// A thread's Python frames, innermost first, wherever they are.
fn py_frames(t: &Thread) -> Vec<&Frame> {
    let merged: Vec<&Frame> = t.frames.iter().filter(|f| f.python.is_some()).collect();
    if merged.is_empty() {
        t.python
            .as_ref()
            .map(|p| p.frames.iter().collect())
            .unwrap_or_default()
    } else {
        merged
    }
}

fn is_eval(f: &Frame) -> bool {
    python::is_eval_frame(f)
}

/// The Python frames sit right inside the evaluator frames that run them: when merged, every
/// entry frame is followed by an evaluator frame, and every evaluator frame follows an entry
/// frame (so the counts agree, pair by pair).
#[track_caller]
fn check_merged_in_place(t: &Thread, text: &str) {
    let py = t.python.as_ref().expect("a Python thread");
    if py.merge != PyMerge::Merged {
        return;
    }
    for (i, f) in t.frames.iter().enumerate() {
        if f.python.as_ref().is_some_and(|p| p.entry) {
            assert!(
                t.frames.get(i + 1).is_some_and(is_eval),
                "thread {}: Python entry frame #{i} ({:?}) is not followed by _PyEval_EvalFrameDefault\n{text}",
                t.tid,
                f.function
            );
        }
        if is_eval(f) {
            let before = i.checked_sub(1).and_then(|j| t.frames.get(j));
            assert!(
                before.is_some_and(|b| b.python.as_ref().is_some_and(|p| p.entry)),
                "thread {}: evaluator frame #{i} has no Python entry frame right before it\n{text}",
                t.tid
            );
        }
    }
}

/// Assert the innermost Python frames of `t` are `expect` (function, line), in order, in the
/// fixture file `file`.
#[track_caller]
fn assert_innermost(t: &Thread, file: &Path, expect: &[(&str, u32)], text: &str) {
    let frames = py_frames(t);
    let got: Vec<(String, Option<u32>, String)> = frames
        .iter()
        .map(|f| {
            (
                f.function.as_deref().unwrap_or_default().to_string(),
                f.line,
                f.file.as_deref().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        got.len() >= expect.len(),
        "thread {}: {} Python frames, expected at least {}: {got:?}\n{text}",
        t.tid,
        got.len(),
        expect.len()
    );
    for (i, (name, line)) in expect.iter().enumerate() {
        let (f, l, path) = &got[i];
        assert!(
            f == name && *l == Some(*line) && Path::new(path) == file,
            "thread {}: Python frame {i} is {f} at {path}:{l:?}, expected {name} at {}:{line}\nall: {got:?}\n{text}",
            t.tid,
            file.display()
        );
    }
}

/// The index in `t.frames` of the first frame whose function is `name` (Python or native,
/// `contains` for native substrings).
fn index_of(t: &Thread, pred: impl Fn(&Frame) -> bool) -> Option<usize> {
    t.frames.iter().position(pred)
}

fn py_named(name: &str) -> impl Fn(&Frame) -> bool + '_ {
    move |f| f.python.is_some() && f.function.as_deref() == Some(name)
}

fn native_containing(part: &str) -> impl Fn(&Frame) -> bool + '_ {
    move |f| f.python.is_none() && f.function.as_deref().is_some_and(|n| n.contains(part))
}

/// Between frames `inner` and `outer` (a Python callback and the Python code that called the C
/// function calling it back), the C function's native frames: one whose name contains `part`
/// (`sort`, `reduce`) when the interpreter has symbols for its static functions (a stripped
/// distribution build shows `??`), and in any case a native frame that is not the evaluator.
#[track_caller]
fn assert_native_between(t: &Thread, inner: usize, outer: usize, part: &str, text: &str) {
    assert!(
        inner < outer,
        "thread {}: #{inner} not inside #{outer}\n{text}",
        t.tid
    );
    let between = &t.frames[inner + 1..outer];
    assert!(
        between.iter().any(|f| f.python.is_none() && !is_eval(f)),
        "thread {}: no C frames between #{inner} and #{outer}\n{text}",
        t.tid
    );
    let named = t.frames.iter().any(native_containing(part));
    if named {
        assert!(
            between.iter().any(native_containing(part)),
            "thread {}: the native {part} frame is not between #{inner} and #{outer}\n{text}",
            t.tid
        );
    }
}

/// The thread's outermost Python frames are threading's bootstrap.
#[track_caller]
fn assert_thread_bootstrap(t: &Thread, text: &str) {
    let frames = py_frames(t);
    let last = frames.last().expect("Python frames");
    assert!(
        last.function.as_deref().is_some_and(|f| f.ends_with("_bootstrap"))
            && last
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("threading.py")),
        "thread {}: outermost Python frame is {:?} at {:?}, expected threading's _bootstrap\n{text}",
        t.tid,
        last.function,
        last.file
    );
}

#[test]
fn parked_threads_show_python_frames_merged_at_the_evaluator_frames() {
    let file = stacks_py();
    let m = markers(&file);
    for_each_python(|py| {
        let mut t = spawn(
            py,
            &["lock", "sleep", "spin", "callback", "reduce"],
            Preload::Yes,
            &[],
        );
        t.wait_ready(deadline());
        wait_main_parked(&t, m["main_park"]);
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        let interp = format!("CPython {}.{}", py.major, py.minor);

        let locker = py_thread(&d, "locker", &text);
        assert_innermost(
            locker,
            &file,
            &[
                ("lock_inner", m["lock_inner"]),
                ("lock_outer", m["lock_outer"]),
            ],
            &text,
        );
        assert_thread_bootstrap(locker, &text);
        let info = locker.python.as_ref().unwrap();
        assert!(
            info.interpreter.starts_with(&interp),
            "interpreter {:?}, expected {interp}\n{text}",
            info.interpreter
        );
        assert_eq!(info.merge, PyMerge::Merged, "locker not merged\n{text}");
        check_merged_in_place(locker, &text);
        // The native lock wait is inside (before) the Python frame that called it.
        let acquire = index_of(locker, native_containing("acquire")).unwrap_or_else(|| {
            panic!("locker: no native frame with 'acquire'\n{text}");
        });
        let inner = index_of(locker, py_named("lock_inner")).unwrap();
        assert!(
            acquire < inner,
            "locker: lock wait not inside lock_inner\n{text}"
        );

        let sleeper = py_thread(&d, "sleeper", &text);
        assert_innermost(
            sleeper,
            &file,
            &[
                ("sleep_inner", m["sleep_inner"]),
                ("sleep_outer", m["sleep_outer"]),
            ],
            &text,
        );
        assert_eq!(
            sleeper.python.as_ref().unwrap().merge,
            PyMerge::Merged,
            "{text}"
        );
        check_merged_in_place(sleeper, &text);

        // A C function calling back into Python: blocking_key runs in its own evaluator call,
        // under sorted()'s native frames, under callback_outer.
        let cb = py_thread(&d, "callback", &text);
        assert_innermost(
            cb,
            &file,
            &[
                ("blocking_key", m["blocking_key"]),
                ("callback_outer", m["callback_outer"]),
            ],
            &text,
        );
        assert_eq!(cb.python.as_ref().unwrap().merge, PyMerge::Merged, "{text}");
        check_merged_in_place(cb, &text);
        let key = index_of(cb, py_named("blocking_key")).unwrap();
        let outer = index_of(cb, py_named("callback_outer")).unwrap();
        assert_native_between(cb, key, outer, "sort", &text);

        let reducer = py_thread(&d, "reducer", &text);
        assert_innermost(
            reducer,
            &file,
            &[
                ("blocking_add", m["blocking_add"]),
                ("reduce_outer", m["reduce_outer"]),
            ],
            &text,
        );
        check_merged_in_place(reducer, &text);
        let add = index_of(reducer, py_named("blocking_add")).unwrap();
        let outer = index_of(reducer, py_named("reduce_outer")).unwrap();
        assert_native_between(reducer, add, outer, "reduce", &text);

        // Spinning in pure Python: spin_inner somewhere in its loop, under spin_outer.
        let spinner = py_thread(&d, "spinner", &text);
        let frames = py_frames(spinner);
        assert!(
            frames.len() >= 2,
            "spinner: {} Python frames\n{text}",
            frames.len()
        );
        assert_eq!(frames[0].function.as_deref(), Some("spin_inner"), "{text}");
        let line = frames[0].line.unwrap_or(0);
        assert!(
            (m["spin_first"]..=m["spin_last"]).contains(&line),
            "spinner at line {line}, expected {}..={}\n{text}",
            m["spin_first"],
            m["spin_last"]
        );
        assert_eq!(frames[1].function.as_deref(), Some("spin_outer"), "{text}");
        assert_eq!(frames[1].line, Some(m["spin_outer"]), "{text}");

        let main = py_thread(&d, "MainThread", &text);
        assert_eq!(
            main.tid.0, t.pid,
            "MainThread is not the main thread\n{text}"
        );
        assert_innermost(main, &file, &[("main_park", m["main_park"])], &text);
        assert_eq!(
            py_frames(main).last().and_then(|f| f.function.as_deref()),
            Some("<module>"),
            "{text}"
        );
        check_merged_in_place(main, &text);

        // The text form shows them.
        let needle = format!("[py] lock_inner at {}:{}", file.display(), m["lock_inner"]);
        assert!(text.contains(&needle), "text lacks {needle:?}\n{text}");
        assert!(
            text.contains("python \"locker\""),
            "text lacks the Python name\n{text}"
        );
        assert!(
            !d.errors.iter().any(|e| e.starts_with("python:")),
            "python errors: {:?}\n{text}",
            d.errors
        );
        // The dumper's own thread and non-Python threads carry no Python part.
        for th in &d.threads {
            if th.capture == CaptureStatus::Dumper {
                assert!(th.python.is_none(), "{text}");
            }
        }
    });
}

#[test]
fn incident_workers_show_db_execute_inside_write() {
    let file = python_target("incident.py");
    let source = read_to_string(&file);
    let line_of = |needle: &str| -> u32 {
        source
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("incident.py has no line with {needle:?}")) as u32
            + 1
    };
    let print_line = line_of("print(\"DEBUG sql: \"");
    let db_call = line_of("    _db_execute(worker, request)");
    let handle_call = line_of("        handle_request(worker, request)");
    for_each_python(|py| {
        let mut cmd = Command::new(&py.exe);
        cmd.arg(&file).arg("2");
        let mut t = Target::spawn(cmd, Preload::Yes);
        t.wait_ready(deadline());
        // READY does not prove every worker stuck for good (see `wait_workers_stuck`).
        crate::findings::wait_n_workers_stuck(&t, 2);
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        for name in ["worker-0", "worker-1"] {
            let w = py_thread(&d, name, &text);
            assert_innermost(
                w,
                &file,
                &[
                    ("_db_execute", print_line),
                    ("handle_request", db_call),
                    ("worker_main", handle_call),
                ],
                &text,
            );
            assert_eq!(w.python.as_ref().unwrap().merge, PyMerge::Merged, "{text}");
            check_merged_in_place(w, &text);
            // write(2) is inside _db_execute.
            let write = index_of(w, native_containing("write")).unwrap_or_else(|| {
                panic!("{name}: no native write frame\n{text}");
            });
            let db = index_of(w, py_named("_db_execute")).unwrap();
            assert!(write < db, "{name}: write not inside _db_execute\n{text}");
        }
        let needle = format!("[py] _db_execute at {}:{print_line}", file.display());
        assert!(text.contains(&needle), "text lacks {needle:?}\n{text}");
    });
}

#[test]
fn deep_recursion_is_read_whole_and_very_deep_recursion_is_capped_and_flagged() {
    let file = stacks_py();
    let m = markers(&file);
    for_each_python(|py| {
        // 500 levels: every Python frame is read; on 3.8-3.10 (one C evaluator call per
        // Python call) the native stack is truncated and the merge is partial.
        let mut t = spawn(py, &["recurse:500"], Preload::Yes, &[]);
        t.wait_ready(deadline());
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        let r = py_thread(&d, "recurser", &text);
        let frames = py_frames(r);
        let recurse = frames
            .iter()
            .filter(|f| f.function.as_deref() == Some("recurse"))
            .count();
        assert_eq!(recurse, 501, "recurse frames\n{text}");
        assert_eq!(frames[0].line, Some(m["recurse_bottom"]), "{text}");
        assert!(
            frames[1..501]
                .iter()
                .all(|f| f.line == Some(m["recurse_call"])),
            "{text}"
        );
        assert_thread_bootstrap(r, &text);
        let info = r.python.as_ref().unwrap();
        assert!(!info.truncated, "500 levels flagged truncated\n{text}");
        if r.truncated {
            assert_eq!(info.merge, PyMerge::Partial, "{text}");
            assert!(
                info.note
                    .as_deref()
                    .is_some_and(|n| n.contains("native stack is truncated")),
                "{text}"
            );
        } else {
            assert_eq!(info.merge, PyMerge::Merged, "{text}");
        }
        check_merged_in_place(r, &text);
        drop(t);

        // 1500 levels: more than the 1024 Python frames read per thread: capped, flagged.
        let mut t = spawn(py, &["recurse:1500"], Preload::Yes, &[]);
        t.wait_ready(deadline());
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        let r = py_thread(&d, "recurser", &text);
        let info = r.python.as_ref().unwrap();
        assert!(info.truncated, "1500 levels not flagged truncated\n{text}");
        assert_eq!(info.depth, 1024, "{text}");
        assert!(
            info.note
                .as_deref()
                .is_some_and(|n| n.contains("more than 1024 Python frames")),
            "note {:?}\n{text}",
            info.note
        );
        assert_eq!(py_frames(r)[0].line, Some(m["recurse_bottom"]), "{text}");
    });
}

#[test]
fn more_than_a_hundred_threads_are_all_named_and_merged() {
    let file = stacks_py();
    let m = markers(&file);
    for_each_python(|py| {
        let mut t = spawn(py, &["many:150"], Preload::Yes, &[]);
        t.wait_ready(deadline());
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        for i in 0..150 {
            let w = py_thread(&d, &format!("many-{i}"), &text);
            assert_innermost(w, &file, &[("many_worker", m["many_worker"])], &text);
            assert_thread_bootstrap(w, &text);
            assert_eq!(w.python.as_ref().unwrap().merge, PyMerge::Merged, "{text}");
        }
        let python_threads = d.threads.iter().filter(|t| t.python.is_some()).count();
        assert_eq!(python_threads, 151, "{text}");
    });
}

#[test]
fn five_hundred_dumps_under_thread_churn() {
    for_each_python(|py| {
        let mut t = spawn(py, &["churn", "lock"], Preload::Yes, &[]);
        t.wait_ready(deadline());
        let until = Instant::now() + Duration::from_secs(120);
        let mut with_churner = 0;
        let mut python_errors: HashMap<String, usize> = HashMap::new();
        for i in 0..500 {
            assert!(
                Instant::now() < until,
                "500 dumps took more than 120 s (at {i})\n{}",
                t.describe()
            );
            let (_, d) = dump(&mut t);
            t.assert_alive();
            for e in d.errors.iter().filter(|e| e.starts_with("python:")) {
                // Without addresses and counts, to group them.
                let kind: String = e
                    .split_whitespace()
                    .filter(|w| !w.starts_with("0x") && !w.chars().all(|c| c.is_ascii_digit()))
                    .take(8)
                    .collect::<Vec<_>>()
                    .join(" ");
                *python_errors.entry(kind).or_insert(0usize) += 1;
            }
            if d.threads
                .iter()
                .any(|th| th.python.as_ref().and_then(|p| p.name.as_deref()) == Some("churner"))
            {
                with_churner += 1;
            }
            // The parked thread is always there, whole.
            let locker = d
                .threads
                .iter()
                .find(|th| th.python.as_ref().and_then(|p| p.name.as_deref()) == Some("locker"));
            if let Some(l) = locker {
                assert_eq!(
                    py_frames(l).first().and_then(|f| f.function.as_deref()),
                    Some("lock_inner"),
                    "dump {i}: {}",
                    stackdump_core::output::render::text(&d)
                );
            }
        }
        t.assert_alive();
        eprintln!(
            "  {}: churner named in {with_churner} of 500 dumps; python errors: {python_errors:?}",
            py.label()
        );
        assert!(
            with_churner >= 450,
            "the churner thread was named in only {with_churner} of 500 dumps"
        );
    });
}

/// How many dumps must find the napper asleep (each is checked).
const NAPS_CAUGHT: usize = 50;

/// A thread that naps 0.5 ms at a time wakes up all through a dump: its Python frames (read after
/// every native stack was copied) must still be those of the moment its native stack shows (in
/// `time.sleep`, at the line of the call), never the line after: the dump takes such a thread
/// again, or says it could not. How often a dump finds it asleep depends on the machine's load
/// (a napper waiting for a CPU is running, not asleep), so the test dumps until
/// [`NAPS_CAUGHT`] dumps have caught it asleep, whatever that takes before the deadline. The
/// same for `inspect` (from outside, of the same process), which takes such a thread again the
/// same way.
#[test]
fn a_napping_thread_shows_python_frames_of_the_same_moment_as_its_native_stack() {
    let file = stacks_py();
    let m = markers(&file);
    for_each_python(|py| {
        let mut t = spawn(py, &["nap"], Preload::Yes, &[]);
        t.wait_ready(deadline());
        for how in ["dump", "inspect"] {
            napper_dumps(py, &mut t, how, m["nap"]);
        }
        t.assert_alive();
    });
}

/// Dump `t` (preloaded `dump`, or `inspect`) until [`NAPS_CAUGHT`] dumps caught its napper
/// asleep, checking each: consistent, or said not to be; and no more said than settled (the
/// retakes work: before they read only the retaken thread, a third of the dumps said so).
/// Once found, the napper is looked up by its tid: a dump that lost its Python frames or name
/// (a retake that dropped them) fails.
fn napper_dumps(py: &Python, t: &mut Target, how: &str, nap_line: u32) {
    let (mut asleep, mut said, mut dumps) = (0, 0, 0);
    let mut napper_tid = None;
    let dl = Deadline::after(Duration::from_secs(240));
    while asleep < NAPS_CAUGHT {
        assert!(
                !dl.passed(),
                "{} ({how}): only {asleep} of {dumps} dumps caught the napper asleep before the deadline",
                py.label()
            );
        let i = dumps;
        dumps += 1;
        let d = if how == "dump" {
            dump(t).1
        } else {
            stackdump_core::outside::inspect_stacks(
                stackdump_core::model::Pid(t.pid),
                &Default::default(),
            )
            .expect("inspect")
            .0
        };
        let named =
            |th: &&Thread| th.python.as_ref().and_then(|p| p.name.as_deref()) == Some("napper");
        let napper = match napper_tid {
            None => match d.threads.iter().find(named) {
                Some(th) => th,
                None => continue, // the names are read with a time budget
            },
            Some(tid) => {
                let th = d
                    .threads
                    .iter()
                    .find(|th| th.tid == tid)
                    .unwrap_or_else(|| panic!("{how} {i}: the napper {tid} is not in the dump"));
                assert!(
                    named(&th),
                    "{how} {i}: the napper {tid} has no Python name (python: {:?})\n{}",
                    th.python,
                    stackdump_core::output::render::text(&d)
                );
                th
            }
        };
        napper_tid = Some(napper.tid);
        // Asleep in time.sleep's system call (clock_nanosleep, or select before 3.11):
        // copied without a signal, and that copy checked against this very syscall line.
        let in_sleep = matches!(&napper.kernel.syscall,
                stackdump_core::model::SyscallState::InSyscall { name: Some(n), .. }
                    if ["clock_nanosleep", "select", "pselect6", "nanosleep"].contains(&n.as_str()));
        if !in_sleep || napper.signalled {
            continue; // running, or interrupted by the capture signal (read at once)
        }
        if d.errors.iter().any(|e| {
            e.starts_with(&format!(
                "thread {} ran while its Python frames",
                napper.tid
            ))
        }) {
            said += 1;
            continue;
        }
        asleep += 1;
        let innermost = py_frames(napper)
            .first()
            .map(|f| (f.function.as_deref().map(str::to_string), f.line));
        assert_eq!(
            innermost,
            Some((Some("nap_loop".to_string()), Some(nap_line))),
            "{how} {i}: native stack in time.sleep, Python frame elsewhere\n{}",
            stackdump_core::output::render::text(&d)
        );
    }
    println!(
            "{} ({how}): {asleep} of {dumps} dumps caught the napper asleep, {said} said it kept running",
            py.label()
        );
    assert!(
        said <= asleep,
        "{} ({how}): {said} dumps said the napper kept running, {asleep} settled it",
        py.label()
    );
}

/// The pid's trigger signal is caught (the library's handler is installed).
fn catches_usr1(pid: i32) -> bool {
    status_mask(pid, "SigCgt").is_some_and(|m| mask_has(m, libc::SIGUSR1))
}

/// Open the FIFO `path` for writing and close it: a reader waiting in `open()` then reads EOF.
/// Non-blocking, retried until the reader is there (or the test's deadline).
#[track_caller]
fn release_fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let opened = poll_until(deadline(), || {
        // SAFETY: open with a NUL-terminated path; the fd is closed right away.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
        }
        fd >= 0
    });
    assert!(
        opened,
        "nobody ever opened the FIFO {} to read",
        path.display()
    );
}

#[test]
fn dumps_during_start_up() {
    let startup = repo_root().join("tests/targets/python/startup");
    let site = startup.join("sitecustomize.py");
    let hold_line = markers(&site)["startup_hold"];
    let file = stacks_py();
    let m = markers(&file);
    for_each_python(|py| {
        let flag_dir = tempfile::tempdir().unwrap();
        let flag = flag_dir.path().join("go");
        // A FIFO: sitecustomize's hold() blocks in open() until we open it for writing.
        let c = std::ffi::CString::new(flag.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path of our own temporary directory.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let mut cmd = Command::new(&py.exe);
        cmd.arg(&file)
            .arg("lock")
            .env("PYTHONPATH", &startup)
            .env("STACKS_STARTUP_FILE", &flag);
        let mut t = Target::spawn(cmd, Preload::Yes);
        // As soon as the library catches the trigger: dumps while the interpreter starts.
        assert!(
            poll_until(deadline(), || catches_usr1(t.pid)),
            "the library never installed its handler\n{}",
            t.describe()
        );
        for _ in 0..3 {
            let (_, d) = dump(&mut t);
            assert!(!d.threads.is_empty());
        }
        let starting = format!("STARTING {}", t.pid);
        assert!(
            poll_until(deadline(), || t.stdout().contains(&starting)),
            "no STARTING line\n{}",
            t.describe()
        );
        // Held in sitecustomize, imported by site during initialization.
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        let main = d.thread(stackdump_core::model::Tid(t.pid)).unwrap();
        let frames = py_frames(main);
        assert!(
            frames.iter().any(|f| f.function.as_deref() == Some("hold")
                && f.line == Some(hold_line)
                && f.file.as_deref().is_some_and(|p| Path::new(p) == site)),
            "main thread during start-up: no hold at sitecustomize.py:{hold_line}\n{text}"
        );
        // Release hold(): its reader is waiting in open().
        release_fifo(&flag);
        let ready = format!("READY {}", t.pid);
        assert!(
            poll_until(deadline(), || t.stdout().contains(&ready)),
            "no READY\n{}",
            t.describe()
        );
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        let locker = py_thread(&d, "locker", &text);
        assert_innermost(locker, &file, &[("lock_inner", m["lock_inner"])], &text);
        t.assert_alive();
    });
}

#[test]
fn dumps_at_exit() {
    let file = stacks_py();
    let m = markers(&file);
    for_each_python(|py| {
        let flags = tempfile::tempdir().unwrap();
        let go = flags.path().join("go");
        let exit = flags.path().join("exit");
        // FIFOs: the script waits on each in one blocking open() until we open it for writing.
        for fifo in [&go, &exit] {
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: mkfifo with a NUL-terminated path of our own temporary directory.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        }
        let mut t = spawn(
            py,
            &["exit", "lock", "sleep"],
            Preload::Yes,
            &[("STACKS_GO", &go), ("STACKS_EXIT_FILE", &exit)],
        );
        t.wait_ready(deadline());
        release_fifo(&go);
        assert!(
            poll_until(deadline(), || t.stdout().iter().any(|l| l == "EXITING")),
            "no EXITING line\n{}",
            t.describe()
        );
        // In the atexit handler, inside Py_FinalizeEx.
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        let main = d.thread(stackdump_core::model::Tid(t.pid)).unwrap();
        let frames = py_frames(main);
        let names: Vec<&str> = frames
            .iter()
            .filter_map(|f| f.function.as_deref())
            .collect();
        assert!(
            names.starts_with(&["wait_for_file", "at_exit"]),
            "main thread at exit: {names:?}\n{text}"
        );
        assert_eq!(frames[1].line, Some(m["at_exit"]), "{text}");
        // Then dump again and again while the interpreter finalizes and the process exits.
        release_fifo(&exit);
        let pid = t.pid;
        let dir = t.dump_dir();
        let mut dumps = 0;
        let end = deadline();
        loop {
            if t.exited().is_some() || Instant::now() > end {
                break;
            }
            let id = REQUEST.fetch_add(1, Ordering::Relaxed);
            if !trigger(pid, id) {
                break;
            }
            let mut gone = false;
            if let Some(p) = wait_request(&dir, pid, id, end, || {
                gone = t.exited().is_some();
                !gone
            }) {
                read_dump(&p);
                dumps += 1;
            }
        }
        let status = t
            .exited()
            .or_else(|| {
                let mut s = None;
                poll_until(deadline(), || {
                    s = t.exited();
                    s.is_some()
                });
                s
            })
            .unwrap_or_else(|| panic!("did not exit\n{}", t.describe()));
        assert!(
            status.success(),
            "exited with {status} after {dumps} dumps during exit\n{}",
            t.describe()
        );
    });
}

/// Kills a process on drop.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn a_forked_child_survives_the_trigger() {
    let file = stacks_py();
    let m = markers(&file);
    for_each_python(|py| {
        let mut t = spawn(py, &["fork", "lock"], Preload::Yes, &[]);
        t.wait_ready(deadline());
        let mut child = None;
        poll_until(deadline(), || {
            child = t
                .stdout()
                .iter()
                .find_map(|l| l.strip_prefix("CHILD ")?.parse::<i32>().ok());
            child.is_some()
        });
        let child = child.unwrap_or_else(|| panic!("no CHILD line\n{}", t.describe()));
        let _guard = KillOnDrop(child);
        // The child inherited the handler (not the dump thread): the trigger must be harmless.
        send_signal(child, "USR1");
        let pending =
            |field: &str| status_mask(child, field).is_some_and(|m| mask_has(m, libc::SIGUSR1));
        assert!(
            poll_until(deadline(), || !pending("SigPnd") && !pending("ShdPnd")),
            "the child never took the trigger"
        );
        let stat = std::fs::read(format!("/proc/{child}/stat")).expect("the child is gone");
        let state = kproc::parse_stat(&stat).expect("stat").state;
        assert!(
            !matches!(state, 'Z' | 'X'),
            "the child died (state {state})"
        );
        // The parent still dumps, with its Python frames.
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        let locker = py_thread(&d, "locker", &text);
        assert_innermost(locker, &file, &[("lock_inner", m["lock_inner"])], &text);
        t.assert_alive();
    });
}

#[test]
fn the_core_reads_python_stacks_from_outside_without_the_preload() {
    let file = stacks_py();
    let m = markers(&file);
    for_each_python(|py| {
        let mut t = spawn(py, &["lock", "callback"], Preload::No, &[]);
        t.wait_ready(deadline());
        let maps = kproc::parse_maps(&std::fs::read(t.proc_dir().join("maps")).unwrap());
        let tids = t.tids();
        let p = python::threads(
            &ProcessMemory { pid: t.pid },
            &maps,
            &t.proc_dir().join("root"),
            &tids,
        )
        .unwrap_or_else(|e| panic!("python::threads: {e}\n{}", t.describe()));
        assert!(
            p.interpreter
                .starts_with(&format!("CPython {}.{}", py.major, py.minor)),
            "{}",
            p.interpreter
        );
        let locker = p
            .threads
            .iter()
            .find(|th| th.name.as_deref() == Some("locker"))
            .unwrap_or_else(|| panic!("no locker in {:#?}", p.threads));
        assert!(
            locker.tid.is_some_and(|tid| tids.contains(&tid)),
            "{locker:#?}"
        );
        let f: Vec<(&str, Option<u32>)> = locker
            .frames
            .iter()
            .map(|f| (f.function.as_str(), f.line))
            .collect();
        assert_eq!(
            &f[..2],
            &[
                ("lock_inner", Some(m["lock_inner"])),
                ("lock_outer", Some(m["lock_outer"]))
            ],
            "{f:?}"
        );
        let main = p
            .threads
            .iter()
            .find(|th| th.name.as_deref() == Some("MainThread"))
            .expect("MainThread");
        assert_eq!(main.tid, Some(stackdump_core::model::Tid(t.pid)));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    });
}

#[test]
fn an_interpreter_older_than_3_8_is_reported_not_read() {
    let old: Vec<&Python> = all_pythons()
        .iter()
        .filter(|p| (p.major, p.minor) == (3, 7) || (p.major, p.minor) == (2, 7))
        .collect();
    if old.is_empty() {
        eprintln!(
            "python tests: no CPython 3.7 or 2.7 on this machine: the unsupported-version test is skipped"
        );
        return;
    }
    for py in old {
        // `kill -s USR1` interrupts the main thread's sleep: Python 2.7's `time.sleep` then
        // returns early (no PEP 475), so the sleep is in a loop.
        let mut cmd = Command::new(&py.exe);
        cmd.args([
            "-c",
            "import os, sys, time\nsys.stdout.write('READY %d\\n' % os.getpid())\nsys.stdout.flush()\nwhile True:\n    time.sleep(3600)",
        ]);
        let mut t = Target::spawn(cmd, Preload::Yes);
        t.wait_ready(deadline());
        let (path, d) = dump(&mut t);
        let text = dump_text(&path, &d);
        assert!(
            d.errors.iter().any(|e| e
                .starts_with(&format!("python: CPython {}.{}", py.major, py.minor))
                && e.contains("3.8 or later")),
            "{}: errors {:?}\n{text}",
            py.label(),
            d.errors
        );
        assert!(d.threads.iter().all(|th| th.python.is_none()));
        t.assert_alive();
    }
}

/// What both the preloaded dump and `inspect` must say about `gil.py`: the cruncher holds the
/// GIL and runs, the waiters wait for it, the sleeper is idle, and the finding names the holder
/// by its Python name. `None` when the waiters are not all waiting yet (the caller retries).
fn gil_facts_problem(d: &Dump, waiters: usize) -> Option<String> {
    let text = stackdump_core::output::render::text(d);
    let named = |name: &str| {
        d.threads
            .iter()
            .find(|t| t.python.as_ref().and_then(|p| p.name.as_deref()) == Some(name))
    };
    let waiting = (0..waiters)
        .filter(|i| {
            named(&format!("waiter-{i}"))
                .and_then(|t| t.python.as_ref())
                .is_some_and(|p| p.waits_for_gil)
        })
        .count();
    if waiting < waiters {
        return Some(format!(
            "{waiting} of {waiters} waiters wait for the GIL\n{text}"
        ));
    }
    let cruncher = named("cruncher")?.python.as_ref()?;
    if cruncher.gil != Some(true) || cruncher.active != Some(true) || cruncher.waits_for_gil {
        return Some(format!("cruncher: {cruncher:?}\n{text}"));
    }
    let sleeper = named("sleeper")?.python.as_ref()?;
    if sleeper.gil != Some(false) || sleeper.active != Some(false) || sleeper.waits_for_gil {
        return Some(format!("sleeper: {sleeper:?}\n{text}"));
    }
    for i in 0..waiters {
        let p = named(&format!("waiter-{i}"))?.python.as_ref()?;
        if p.gil != Some(false) || p.activity() != Some("idle") {
            return Some(format!("waiter-{i}: {p:?}\n{text}"));
        }
    }
    let Some(f) = d.findings.iter().find(|f| f.kind == "gil_contention") else {
        return Some(format!("no gil_contention finding\n{text}"));
    };
    // MainThread may wait for the GIL too: if the cruncher takes it before MainThread reaches
    // `join` (a lock wait that releases it), MainThread never gets it back.
    let all_waiting = d
        .threads
        .iter()
        .filter(|t| t.python.as_ref().is_some_and(|p| p.waits_for_gil))
        .count();
    let expect = "the GIL is held by 'cruncher' (tid ";
    if !f.summary.starts_with(expect)
        || !f
            .summary
            .contains(&format!("{all_waiting} threads wait for it"))
    {
        return Some(format!("finding: {}\n{text}", f.summary));
    }
    if !text.contains("(active+gil)") || !text.contains("(idle)") {
        return Some(format!("no (active+gil)/(idle) labels in the text\n{text}"));
    }
    None
}

#[test]
fn the_gil_holder_and_its_waiters_are_named_in_the_dump_and_in_inspect() {
    const WAITERS: usize = 4;
    let file = python_target("gil.py");
    for_each_python(|py| {
        let mut cmd = Command::new(&py.exe);
        cmd.arg(&file).arg(WAITERS.to_string());
        let mut t = Target::spawn(cmd, Preload::Yes);
        t.wait_ready(deadline());
        // The waiters are waiting for the GIL a few milliseconds after READY: dump until they
        // all are (or the deadline), then every fact must hold in that dump.
        let mut problem = String::new();
        let ok = poll_until(deadline(), || {
            let (_, d) = dump(&mut t);
            match gil_facts_problem(&d, WAITERS) {
                None => true,
                Some(p) => {
                    problem = p;
                    false
                }
            }
        });
        assert!(ok, "preloaded dump of {}:\n{problem}", t.what);
        let ok = poll_until(deadline(), || {
            let d = stackdump_core::outside::inspect_stacks(
                stackdump_core::model::Pid(t.pid),
                &Default::default(),
            )
            .expect("inspect")
            .0;
            match gil_facts_problem(&d, WAITERS) {
                None => true,
                Some(p) => {
                    problem = p;
                    false
                }
            }
        });
        assert!(ok, "inspect of {}:\n{problem}", t.what);
    });
}
