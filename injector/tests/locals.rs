//! `--locals` (issue 20 point 3): the arguments and locals of Python frames, as bounded reprs
//! read from the interpreter's memory, for `inspect` (read with the frames) and `dump` (read by
//! the CLI from outside at the frame addresses the library's dump recorded; the library never
//! writes them). Never shown without `--locals`.
//!
//! Every test runs against each CPython 3.8+ found on the machine: pyenv's builds under
//! `$PYENV_ROOT/versions` (or `~/.pyenv/versions`) and Debian's `/usr/bin/python3.X` (a static,
//! stripped interpreter), or the ones listed in `STACKDUMP_TEST_PYTHONS` (colon-separated). The
//! fixture is `tests/targets/python/locals.py`: `hold(42, "x")` binds one local of each kind
//! and blocks in `GO.wait()` after printing READY.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Every CPython 3.8+ on this machine (see the module documentation), saying which minor
/// versions are missing.
fn pythons_here() -> Vec<Python> {
    let found = pythons();
    for minor in 8..=13 {
        if !found.iter().any(|p| p.number.1 == minor) {
            eprintln!("locals tests: no CPython 3.{minor} on this machine: skipped");
        }
    }
    found
}

/// Run `body` for every interpreter; report every failure, not just the first.
fn for_each_python(body: impl Fn(&Python)) {
    let all = pythons_here();
    assert!(!all.is_empty(), "no CPython 3.8+ on this machine");
    let mut failures = Vec::new();
    for py in &all {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(py))) {
            Ok(()) => eprintln!("  CPython {}: ok", py.version),
            Err(e) => {
                let msg = panic_message(&*e);
                failures.push(format!("=== CPython {}\n{msg}", py.version));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `python locals.py`, once it printed READY (with the library preloaded when `dir` is given,
/// dumping there).
fn spawn_locals(dl: &Deadline, py: &Python, dir: Option<&Path>) -> Proc {
    let mut cmd = Command::new(&py.exe);
    cmd.arg(python_target("locals.py"))
        .env_remove("LD_PRELOAD")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(dir) = dir {
        cmd.env("LD_PRELOAD", real_lib())
            .env("STACKDUMP_DIR", dir)
            .env("STACKDUMP_FORMAT", "text,json");
    }
    let (p, words) = spawn_ready(dl, cmd);
    assert_eq!(words, vec![p.pid.to_string()], "READY {words:?}");
    p
}

/// The `python` object of the frame of `hold`, merged or kept apart.
#[track_caller]
fn hold_frame(d: &Value) -> Value {
    let threads = d["threads"].as_array().expect("threads");
    for t in threads {
        let merged = t["frames"].as_array().into_iter().flatten();
        let apart = t["python"]["frames"].as_array().into_iter().flatten();
        if let Some(f) = merged.chain(apart).find(|f| f["python"]["name"] == "hold") {
            return f["python"].clone();
        }
    }
    panic!("no Python frame `hold` in {d}");
}

/// What `hold` binds, as `--locals` must show it (`captured`, a cell, from 3.11 on).
fn expected(py: &Python) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("count", "42"),
        ("name", "'x'"),
        ("big", "-1267650600228229401496703217721"),
        ("text", "'héllo wörld ✓'"),
        ("data", "b'\\x00ab\\xff'"),
        ("ratio", "1.5"),
        ("nothing", "None"),
        ("flag", "True"),
        ("off", "False"),
        ("zero", "0"),
        ("items", "<list of 3>"),
        ("table", "<dict of 2>"),
        ("widget", "<Widget object at 0x"),
        (
            "long",
            "'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz'… (100 chars)",
        ),
        ("inner", "<function object at 0x"),
    ];
    if py.number.1 >= 11 {
        v.push(("captured", "7"));
    }
    v
}

/// The locals of `hold` in a JSON dump are exactly the expected ones, in order (`later`,
/// bound after the wait, is not there).
#[track_caller]
fn assert_locals(py: &Python, d: &Value) {
    let frame = hold_frame(d);
    let locals: Vec<(String, String)> = frame["locals"]
        .as_array()
        .unwrap_or_else(|| panic!("no locals in {frame}"))
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["repr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = expected(py);
    assert_eq!(
        locals.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        want.iter().map(|w| w.0).collect::<Vec<_>>(),
        "{locals:?}"
    );
    for ((name, repr), (_, w)) in locals.iter().zip(&want) {
        if w.ends_with("0x") {
            assert!(
                repr.starts_with(w) && repr.ends_with('>'),
                "{name} = {repr}"
            );
        } else {
            assert_eq!(repr, w, "{name}");
        }
    }
}

/// The text form shows each local on its own line under `[py] hold`, its repr as is.
#[track_caller]
fn assert_text_locals(py: &Python, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("[py] hold at "))
        .unwrap_or_else(|| panic!("no [py] hold in\n{text}"));
    for (i, (name, repr)) in expected(py).iter().enumerate() {
        let line = lines[at + 1 + i];
        let prefix = format!("         {name} = {repr}");
        assert!(line.starts_with(&prefix), "{line:?} vs {prefix:?}\n{text}");
    }
}

/// Without `--locals`, no local anywhere.
#[track_caller]
fn assert_no_locals(text_or_json: &str) {
    for needle in [
        "\"locals\"",
        "count = 42",
        "héllo",
        "1267650600228229401496703217721",
    ] {
        assert!(
            !text_or_json.contains(needle),
            "{needle} without --locals:\n{text_or_json}"
        );
    }
}

#[test]
fn inspect_locals_on_every_interpreter() {
    for_each_python(|py| {
        let dl = Deadline::new(120);
        let target = spawn_locals(&dl, py, None);
        let pid = target.pid.to_string();

        let out = stackdump(&dl, &["inspect", &pid, "--locals", "--format", "json"]);
        out.assert_code(0);
        let d = json(&out);
        assert_locals(py, &d);
        assert!(hold_frame(&d)["frame"].is_string(), "{}", hold_frame(&d));

        let out = stackdump(&dl, &["inspect", &pid, "--locals"]);
        out.assert_code(0);
        assert_text_locals(py, &out.stdout);

        for args in [
            vec!["inspect", &pid],
            vec!["inspect", &pid, "--format", "json"],
        ] {
            let out = stackdump(&dl, &args);
            out.assert_code(0);
            assert!(out.stdout.contains("hold"), "{}", out.stdout);
            assert_no_locals(&out.stdout);
        }
        assert!(target.alive());
    });
}

#[test]
fn dump_locals_read_from_outside_never_written_by_the_library() {
    for_each_python(|py| {
        let dl = Deadline::new(120);
        let dir = Scratch::new(&format!("locals-{}", py.number.1));
        let target = spawn_locals(&dl, py, Some(&dir.path));
        let pid = target.pid.to_string();

        // Without --locals: none, in what is printed and in what the library wrote.
        let out = stackdump(&dl, &["dump", &pid]);
        out.assert_code(0);
        assert!(out.stdout.contains("[py] hold"), "{}", out.stdout);
        assert_no_locals(&out.stdout);
        let out = stackdump(&dl, &["dump", &pid, "--format", "json"]);
        out.assert_code(0);
        let d = json(&out);
        assert!(hold_frame(&d)["frame"].is_string(), "{}", hold_frame(&d));
        assert_no_locals(&out.stdout);

        let out = stackdump(&dl, &["dump", &pid, "--locals", "--format", "json"]);
        out.assert_code(0);
        assert_locals(py, &json(&out));
        let out = stackdump(&dl, &["dump", &pid, "--locals"]);
        out.assert_code(0);
        assert_text_locals(py, &out.stdout);

        // The side files (four dumps, text and JSON) hold frame addresses, never a local.
        let mut files = 0;
        // (The library's cache of inflated debug sections, .stackdump-cache-<uid>, lives
        // there too: side files only.)
        for e in std::fs::read_dir(&dir.path).unwrap().flatten() {
            if !e.file_name().to_string_lossy().starts_with("stackdump-") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap();
            assert_no_locals(&text);
            files += 1;
        }
        assert!(files >= 8, "{files} side files");
        assert!(target.alive());
    });
}

#[test]
fn locals_usage_errors() {
    let dl = Deadline::new(60);
    let scratch = Scratch::new("locals-out");
    // Locals are never saved: --out conflicts (clap: exit 2), and folded stacks cannot show them.
    stackdump(&dl, &["dump", "1", "--locals", "--out", scratch.str()]).assert_code(2);
    let py = pythons_here().into_iter().next().expect("a CPython 3.8+");
    let dir = Scratch::new("locals-folded");
    let target = spawn_locals(&dl, &py, Some(&dir.path));
    stackdump(
        &dl,
        &[
            "dump",
            &target.pid.to_string(),
            "--locals",
            "--format",
            "folded",
        ],
    )
    .assert_code(2)
    .stderr_has("--locals");
}
