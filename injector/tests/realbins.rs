//! Real binaries, named and unwound alike in the preloaded library's dump and in `stackdump
//! inspect` (issue 13): C++ names demangled the same on both paths; a non-PIE executable; a
//! function run from a second mapping of its executable (as V8 remaps its builtins); JIT code in
//! anonymous memory, named from a perf map or labelled `[jit]`; and, when they are installed,
//! node (non-PIE, JIT, `--perf-basic-prof`) and rustc (a BOLT-optimized `librustc_driver` whose
//! code lies after its `.bss`). Real processes, READY lines and /proc state as handshakes, a
//! deadline per test, children killed and reaped on drop.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const USR1: i32 = 10;

/// Compile `tests/targets/c/NAME` (C or C++ by its extension) with `compiler` and `flags`.
fn build(name: &str, compiler: &str, flags: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/targets/c/{name}"));
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("realbins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stem = name.split('.').next().unwrap();
    let out = dir.join(format!("{stem}{}", flags.join("").replace(['-', ' '], "")));
    let o = Command::new(compiler)
        .args(["-O1", "-g", "-pthread", "-Wall", "-Wextra"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running {compiler} (install it: apt-get install g++): {e}"));
    assert!(
        o.status.success(),
        "compiling {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The thread ids of `pid` whose name is `name`.
fn tids_named(pid: i32, name: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|c| c.trim_end() == name)
        })
        .collect()
}

/// Wait until thread `tid` of `pid` sits in system call `nr`.
fn wait_in_syscall(dl: &Deadline, pid: i32, tid: i32, nr: u32) {
    wait_until(dl, &format!("thread {tid} is in system call {nr}"), || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some(&nr.to_string()))
    });
}

/// Wait until the threads named `names` of `pid` all sit in system call `nr`.
fn wait_threads_in(dl: &Deadline, pid: i32, names: &[&str], nr: u32) {
    for name in names {
        wait_until(dl, &format!("a thread named {name}"), || {
            !tids_named(pid, name).is_empty()
        });
        for tid in tids_named(pid, name) {
            wait_in_syscall(dl, pid, tid, nr);
        }
    }
}

fn dump_json(dl: &Deadline, pid: i32) -> Value {
    let out = stackdump(dl, &["dump", &pid.to_string(), "--format", "json"]);
    out.assert_code(0);
    json(&out)
}

fn inspect_json(dl: &Deadline, pid: i32) -> Value {
    let out = stackdump(dl, &["inspect", &pid.to_string(), "--format", "json"]);
    out.assert_code(0);
    json(&out)
}

fn thread<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no thread {name} in {d}"))
}

fn frames(t: &Value) -> &Vec<Value> {
    t["frames"].as_array().unwrap()
}

/// The function of every frame (`??` when unnamed), innermost first.
fn functions(t: &Value) -> Vec<String> {
    frames(t)
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("??").to_string())
        .collect()
}

/// `want` appears in `have` in this order (other frames may sit between).
fn in_order(have: &[String], want: &[&str]) -> bool {
    let mut it = have.iter();
    want.iter().all(|w| it.any(|h| h == w))
}

/// Every frame of the thread lies in a module (or is JIT code) and, with `all_named`, is named
/// (libstdc++'s thread entry is a local symbol of a stripped library: eu-stack cannot name it
/// either); the stack reaches its thread's entry point.
fn assert_complete_as(t: &Value, what: &str, all_named: bool) {
    for f in frames(t) {
        assert!(
            !all_named || f["function"].is_string(),
            "{what}: unnamed frame {f} in {t}"
        );
        assert!(
            f["module"].is_string() || f["jit"].is_object() || f["python"].is_object(),
            "{what}: frame without a module {f}"
        );
    }
    assert_ne!(t["truncated"], true, "{what}: truncated {t}");
}

fn assert_complete(t: &Value, what: &str) {
    assert_complete_as(t, what, true);
}

/// The preloaded `cmd` once READY, its library ready to dump.
fn spawn_preloaded(dl: &Deadline, mut cmd: Command, dumps: &Scratch) -> (Proc, Vec<String>) {
    cmd.env("LD_PRELOAD", real_lib())
        .env("STACKDUMP_DIR", dumps.str());
    let (p, words) = spawn_ready(dl, cmd);
    wait_ready(dl, p.pid, USR1);
    (p, words)
}

#[test]
fn cpp_names_are_demangled_and_the_same_in_the_dump_and_in_inspect() {
    let dl = Deadline::new(120);
    let exe = build("cxx_names.cpp", "g++", &[]);
    let dumps = Scratch::new("cxx-names");
    let (p, _) = spawn_preloaded(&dl, Command::new(&exe), &dumps);
    wait_threads_in(&dl, p.pid, &["server", "drainer"], 0);
    let dump = dump_json(&dl, p.pid);
    let inspect = inspect_json(&dl, p.pid);
    for (name, want) in [
        (
            "server",
            &["shop::store::Queue<int>::pop(int)", "start_thread"][..],
        ),
        (
            "drainer",
            &["shop::store::Queue<long>::pop(int)", "start_thread"][..],
        ),
    ] {
        let in_dump = functions(thread(&dump, name));
        let in_inspect = functions(thread(&inspect, name));
        assert_eq!(in_dump, in_inspect, "{name}: the two paths differ");
        assert!(in_order(&in_dump, want), "{name}: {in_dump:?}");
        assert!(
            in_dump.iter().all(|f| !f.starts_with("_Z")),
            "{name}: a mangled name in {in_dump:?}"
        );
        let modules = |d: &Value| -> Vec<Value> {
            frames(thread(d, name))
                .iter()
                .map(|f| f["module"].clone())
                .collect()
        };
        assert_eq!(modules(&dump), modules(&inspect), "{name}: modules differ");
        assert_complete_as(thread(&dump, name), "dump", false);
    }
    let serve = functions(thread(&dump, "server"));
    assert!(
        serve
            .iter()
            .any(|f| f.starts_with("shop::serve(std::vector<int")),
        "{serve:?}"
    );
}

/// The frames of the `remapped` and `jitted` threads of tests/targets/c/jit_remap.c, in one dump.
fn check_jit_remap(d: &Value, exe: &Path, jit_start: &str, perf_map: bool, what: &str) {
    let exe = exe.to_str().unwrap();
    // A function of the executable run from a second mapping of its file.
    let remapped = thread(d, "remapped");
    assert!(
        in_order(
            &functions(remapped),
            &[
                "remapped_wait",
                "remapped_caller",
                "remapped_thread",
                "start_thread"
            ]
        ),
        "{what}: {remapped}"
    );
    assert_eq!(frames(remapped)[0]["module"], exe, "{what}: {remapped}");
    assert_complete(remapped, what);
    // JIT code: the region it lies in, named from the perf map when there is one, and the
    // unwind goes on through its caller to the thread's root.
    let jitted = thread(d, "jitted");
    let top = &frames(jitted)[0];
    let start = u64::from_str_radix(jit_start.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(top["jit"]["start"], format!("{start:#x}"), "{what}: {top}");
    assert_eq!(top["module"], Value::Null, "{what}: {top}");
    if perf_map {
        assert_eq!(top["function"], "jit_blocking_read", "{what}: {top}");
    } else {
        assert_eq!(top["function"], Value::Null, "{what}: {top}");
    }
    let names = functions(jitted);
    assert!(
        in_order(&names, &["jit_caller", "jitted_thread", "start_thread"]),
        "{what}: {names:?}"
    );
    // The main thread of the non-PIE executable: in its module, down to _start.
    let main = &d["threads"][0];
    assert!(
        in_order(&functions(main), &["main", "_start"]),
        "{what}: {main}"
    );
    let main_frame = frames(main)
        .iter()
        .find(|f| f["function"] == "main")
        .unwrap();
    assert_eq!(main_frame["module"], exe, "{what}: {main_frame}");
    assert_complete(main, what);
}

#[test]
fn non_pie_remapped_text_and_jit_code_in_the_dump_and_in_inspect() {
    let dl = Deadline::new(120);
    let exe = build("jit_remap.c", "cc", &["-no-pie"]);
    let dumps = Scratch::new("jit-remap");
    for perf_map in [false, true] {
        let mut cmd = Command::new(&exe);
        if perf_map {
            cmd.arg("--perf-map");
        }
        let (p, words) = spawn_preloaded(&dl, cmd, &dumps);
        let map = PathBuf::from(format!("/tmp/perf-{}.map", p.pid));
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let _remove = Remove(map.clone());
        assert_eq!(map.exists(), perf_map);
        wait_threads_in(&dl, p.pid, &["remapped", "jitted"], 0);
        // main prints READY before it waits in pthread_join (futex): its stack is checked too.
        wait_in_syscall(&dl, p.pid, p.pid, 202);
        let jit_start = &words[1];
        let dump = dump_json(&dl, p.pid);
        check_jit_remap(&dump, &exe, jit_start, perf_map, "dump");
        let inspect = inspect_json(&dl, p.pid);
        check_jit_remap(&inspect, &exe, jit_start, perf_map, "inspect");
        // The text form says what the frame is.
        let text = stackdump(&dl, &["inspect", &p.pid.to_string()]);
        text.assert_code(0);
        if perf_map {
            text.stdout_has("jit_blocking_read [jit]");
        } else {
            text.stdout_has(&format!(
                "[jit {}-",
                dump["threads"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["name"] == "jitted")
                    .unwrap()["frames"][0]["jit"]["start"]
                    .as_str()
                    .unwrap()
            ));
        }
    }
}

#[test]
fn a_perf_map_that_is_a_symlink_is_not_followed() {
    let dl = Deadline::new(60);
    let exe = build("jit_remap.c", "cc", &[]);
    let (p, _) = spawn_ready(&dl, Command::new(&exe));
    let map = PathBuf::from(format!("/tmp/perf-{}.map", p.pid));
    let target = Scratch::new("perf-link");
    let real = target.join("real.map");
    std::fs::write(&real, "0 ffffffffffffffff planted\n").unwrap();
    std::os::unix::fs::symlink(&real, &map).unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(map);
    wait_threads_in(&dl, p.pid, &["jitted"], 0);
    let d = inspect_json(&dl, p.pid);
    let top = &frames(thread(&d, "jitted"))[0];
    assert!(top["jit"].is_object(), "{top}");
    assert_eq!(top["function"], Value::Null, "{top}");
    let errors = d["errors"].to_string();
    assert!(errors.contains("perf map not read"), "{errors}");
}

/// `which PROGRAM`, or None (the test then says loudly that it did not run).
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// How many frames of process `pid`'s main thread `eu-stack -p` names; None without eu-stack.
fn eu_stack_named(pid: i32) -> Option<usize> {
    let out = Command::new("eu-stack")
        .args(["-p", &pid.to_string()])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let main = text.split(&format!("TID {pid}:")).nth(1)?;
    let main = main.split("TID ").next()?;
    Some(
        main.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .filter(|l| {
                let name = l.split_whitespace().nth(2);
                name.is_some_and(|n| n != "??")
            })
            .count(),
    )
}

#[test]
fn node_frames_are_named_in_their_module_and_js_from_its_perf_map() {
    let Some(node) = program("node") else {
        eprintln!("SKIPPED: node is not installed (CI installs nodejs from .ci/run)");
        return;
    };
    // The module path is the file's (node may be a link to it).
    let node = std::fs::canonicalize(&node).unwrap_or(node);
    let dl = Deadline::new(180);
    let dumps = Scratch::new("node");
    let script = "function waitHere(){ console.log('READY ' + process.pid); \
                  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0) }; waitHere()";
    // Preloaded: the dump, then inspect of the same process; once more with its text remapped
    // to anonymous huge pages at the same addresses (--use-largepages=on).
    for flags in [&[][..], &["--use-largepages=on"][..]] {
        let mut cmd = Command::new(&node);
        cmd.args(flags).args(["-e", script]);
        let (p, _) = spawn_preloaded(&dl, cmd, &dumps);
        wait_in_syscall(&dl, p.pid, p.pid, 202);
        let dump = dump_json(&dl, p.pid);
        let inspect = inspect_json(&dl, p.pid);
        // eu-stack's names of the main thread, when it is installed.
        let eu = eu_stack_named(p.pid);
        for (d, what) in [(&dump, "dump"), (&inspect, "inspect")] {
            let main = &d["threads"][0];
            // Distribution builds (Debian's node links libnode.so, stripped to its exported
            // symbols) leave internal functions unnamed for every tool: named where eu-stack
            // names them, and in a module everywhere.
            assert_complete_as(main, what, false);
            let names = functions(main);
            let named = names.iter().filter(|n| *n != "??").count();
            if let Some(eu) = eu {
                assert!(
                    named >= eu,
                    "{what} {flags:?}: {named} named, eu-stack {eu}: {names:?}"
                );
            }
            // A node that carries its symbol table (nodesource's): V8's functions by name.
            let has_symtab = frames(main)
                .iter()
                .any(|f| f["module"] == node.to_str().unwrap() && f["function"].is_string());
            assert!(
                !has_symtab || names.iter().any(|n| n.contains("Builtin_AtomicsWait")),
                "{what} {flags:?}: {names:?}"
            );
            assert!(
                in_order(&names, &["_start"]) || in_order(&names, &["__libc_start_main_impl"]),
                "{what} {flags:?}: {names:?}"
            );
            let in_node = frames(main)
                .iter()
                .filter(|f| {
                    f["module"] == node.to_str().unwrap()
                        || f["module"].as_str().is_some_and(|m| m.contains("libnode"))
                })
                .count();
            assert!(
                in_node > 10,
                "{what}: {in_node} frames in {} or libnode",
                node.display()
            );
        }
        assert_eq!(
            functions(&dump["threads"][0]),
            functions(&inspect["threads"][0])
        );
        drop(p);
    }

    // With --perf-basic-prof, the JavaScript functions by name, in the dump and in inspect.
    let mut cmd = Command::new(&node);
    // It writes its V8 log (isolate-*.log) where it runs.
    cmd.current_dir(&dumps.path);
    cmd.args([
        "--perf-basic-prof",
        "--interpreted-frames-native-stack",
        "-e",
        script,
    ]);
    let (p, _) = spawn_preloaded(&dl, cmd, &dumps);
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(PathBuf::from(format!("/tmp/perf-{}.map", p.pid)));
    wait_in_syscall(&dl, p.pid, p.pid, 202);
    let dump = dump_json(&dl, p.pid);
    let inspect = inspect_json(&dl, p.pid);
    for (d, what) in [(&dump, "dump"), (&inspect, "inspect")] {
        let main = &d["threads"][0];
        let js: Vec<&Value> = frames(main)
            .iter()
            .filter(|f| f["jit"].is_object())
            .collect();
        assert!(
            js.iter().any(|f| f["function"]
                .as_str()
                .is_some_and(|n| n.contains("waitHere"))),
            "{what}: {main}"
        );
        assert_complete(main, what);
    }
    assert_eq!(
        functions(&dump["threads"][0]),
        functions(&inspect["threads"][0])
    );
}

#[test]
fn rustc_frames_in_librustc_driver_are_named_and_unwound_to_the_root() {
    let Some(rustc) = program("rustc") else {
        eprintln!("SKIPPED: rustc is not on PATH");
        return;
    };
    let dl = Deadline::new(180);
    let dumps = Scratch::new("rustc");
    // rustc - reads its source from stdin: a pipe nobody writes.
    let mut cmd = Command::new(&rustc);
    cmd.args([
        "-",
        "--crate-type",
        "lib",
        "--emit",
        "metadata",
        "-o",
        "/dev/null",
    ])
    .env("LD_PRELOAD", real_lib())
    .env("STACKDUMP_DIR", dumps.str())
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = cmd.spawn().expect("spawning rustc");
    let pid = child.id() as i32;
    let _p = Proc { child, pid };
    wait_ready(&dl, pid, USR1);
    wait_in_syscall(&dl, pid, pid, 0);
    let dump = dump_json(&dl, pid);
    let inspect = inspect_json(&dl, pid);
    for (d, what) in [(&dump, "dump"), (&inspect, "inspect")] {
        let main = &d["threads"][0];
        assert_complete(main, what);
        let in_driver: Vec<&Value> = frames(main)
            .iter()
            .filter(|f| {
                f["module"]
                    .as_str()
                    .is_some_and(|m| m.contains("librustc_driver"))
            })
            .collect();
        assert!(in_driver.len() >= 3, "{what}: {main}");
        assert!(
            in_driver.iter().any(|f| f["function"]
                .as_str()
                .is_some_and(|n| n.starts_with("rustc_"))),
            "{what}: {main}"
        );
    }
    assert_eq!(
        functions(&dump["threads"][0]),
        functions(&inspect["threads"][0])
    );
}
