//! `stackdump watch PID... --stuck DUR`: the watchdog from outside (issue 19), for processes with
//! or without the library. One loop samples every process's threads' run counters through
//! `/proc/PID/task/*/schedstat` (the core's [`Sampler`], the same judgement as the library's
//! `STACKDUMP_WATCH`) every `min(stuck/4, 15s)`. When threads have been stuck (not idle) for
//! the duration, the evidence goes into `--out`:
//!
//! - the library is loaded and ready in the process: the code path of `stackdump dump PID --out
//!   DIR` ([`crate::dump::dump_into`]: a signal-free request to its dump thread). What the
//!   library writes is its own: the watchdog's finding is only printed beside it.
//! - otherwise: the code path of `stackdump inspect PID` ([`crate::inspect_cmd::inspect_one`]),
//!   saved as `stackdump-<pid>-<time>Z.{json,txt}` (the side files' names), with the watchdog's
//!   `trigger.watchdog` and its `stuck_threads` finding first.
//!
//! One line per evidence on stdout; `--exec CMD` runs `sh -c CMD` after each (spawned, reaped
//! later by the loop: sampling never waits for it). A process that exits is dropped (said once
//! on stderr); the run ends (0) when none is left, after `--once`'s first evidence, at the end
//! of `--for`, or on Ctrl-C / SIGTERM (after saying how many episodes were caught).

use crate::cli::WatchArgs;
use crate::exit::Several;
use crate::interrupt::Interrupt;
use crate::outdir::OutDir;
use crate::target::{self, Status, TargetError};
use anyhow::Context;
use stackdump_core::analysis::facts;
use stackdump_core::analysis::watch::{self, Alarm, Sampler, Watch};
use stackdump_core::escape::{self, Esc};
use stackdump_core::model::dumpfile::{DumpFileName, DumpFormat};
use stackdump_core::model::duration::format_duration;
use stackdump_core::model::{Dump, Pid};
use stackdump_core::outside::capture;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One watched process.
struct Watched {
    pid: i32,
    /// Pins the process: a pid reused by another process is never sampled as this one.
    pidfd: Option<OwnedFd>,
    sampler: Sampler,
    next: Instant,
}

/// The evidence taken for one alarm.
struct Evidence {
    /// The JSON dump (or, when the library writes only text, its text dump).
    dump: PathBuf,
    text: Option<PathBuf>,
    /// The watchdog's finding, one line (escaped already: its fields went through `Esc`).
    summary: String,
    /// True when the library took it (`stackdump dump`), false for an inspect.
    library: bool,
}

/// A running `--exec` command.
struct Running {
    child: Child,
    pid: i32,
}

fn warn(msg: impl std::fmt::Display) {
    eprintln!("stackdump: watch: {}", escape::text(&msg.to_string()));
}

/// A path for messages (it may hold anything the user or the target named).
fn shown(p: &Path) -> String {
    escape::bytes(p.as_os_str().as_bytes())
}

/// The checks `inspect` makes, before any sampling: the process exists, is not a zombie, is a
/// process (not a thread id, not a kernel thread), and its threads' system calls may be read
/// (the watchdog's judgement needs them: without that it could never see anything stuck).
fn check(pid: i32) -> Result<Option<OwnedFd>, TargetError> {
    let pidfd = target::pidfd_open(pid)?;
    target::check_pid_is_process(pid, "watch")?;
    let status = target::read_proc(pid, "status")?;
    let status = Status::parse(&String::from_utf8_lossy(&status)).unwrap_or_default();
    if matches!(status.state, 'Z' | 'X') {
        return Err(TargetError::Zombie {
            pid,
            ppid: status.ppid,
        });
    }
    target::read_proc(pid, "syscall").map_err(|e| match e {
        TargetError::PermissionDenied { pid, .. } => TargetError::PermissionDenied {
            pid,
            what: "read the system calls of",
            owner: status.uids.first().copied(),
        },
        other => other,
    })?;
    if !target::alive(pid, pidfd.as_ref()) {
        return Err(TargetError::NoSuchProcess { pid });
    }
    Ok(pidfd)
}

/// How many run counters each process's sampler may keep open: half the RLIMIT_NOFILE soft
/// limit, shared between the processes.
fn max_open(processes: usize) -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let budget = (soft / 2).min(65_536) as usize;
    (budget / processes.max(1)).max(1)
}

pub fn run(mut args: WatchArgs) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    args.pids.retain(|p| seen.insert(*p));
    // Every process checked first: bad input ends the run before any watching starts (each
    // reported as `inspect` reports it, the most serious deciding the exit code).
    let multi = args.pids.len() > 1;
    let mut errors = Vec::new();
    let mut pinned = Vec::new();
    for &pid in &args.pids {
        match check(pid) {
            Ok(fd) => pinned.push((pid, fd)),
            Err(e) if multi => {
                let e = anyhow::Error::new(e);
                crate::exit::report(&e);
                errors.push(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !errors.is_empty() {
        return Err(Several {
            done: "watched",
            total: args.pids.len(),
            errors,
        }
        .into());
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        None => PathBuf::from("."),
    };
    // Refuse an unsafe --out (exit 2) before watching; paths shown absolute.
    OutDir::open(&out)?;
    let out = if out.is_absolute() {
        out
    } else {
        std::env::current_dir()
            .context("reading the current directory")?
            .join(&out)
    }
    .components()
    .collect::<PathBuf>();
    let interrupt = Interrupt::install().context("installing the Ctrl-C handler")?;
    // Ctrl-C and SIGTERM are how a watch normally ends: 0, also when the interrupt watchdog
    // has to end it.
    crate::interrupt::set_exit_code(0);
    let per_process = max_open(pinned.len());
    let start = Instant::now();
    let mut watched: Vec<Watched> = pinned
        .into_iter()
        .map(|(pid, pidfd)| Watched {
            pid,
            pidfd,
            sampler: Sampler::new(
                Watch::new(args.stuck, args.min_gap),
                facts::Options::outside(Pid(pid)),
                per_process,
                None,
            ),
            next: start,
        })
        .collect();
    let end = args.for_.map(|d| start + d);
    let mut running: Vec<Running> = Vec::new();
    let mut episodes = 0usize;
    let mut interrupted = false;
    'watch: loop {
        reap(&mut running);
        if watched.is_empty() {
            warn("no process left to watch; stopping");
            break;
        }
        let due = watched.iter().map(|w| w.next).min().unwrap_or(start);
        let wake = end.map_or(due, |e| e.min(due));
        if !interrupt.sleep_until(wake) {
            interrupted = true;
            break;
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let mut i = 0;
        while i < watched.len() {
            if interrupt.fired() {
                interrupted = true;
                break 'watch;
            }
            let now = Instant::now();
            let w = &mut watched[i];
            if w.next > now {
                i += 1;
                continue;
            }
            let period = w.sampler.watch.period();
            w.next = (w.next + period).max(now);
            let pid = w.pid;
            let sample = if target::alive(pid, w.pidfd.as_ref()) {
                w.sampler.sample()
            } else {
                Err(std::io::ErrorKind::NotFound.into())
            };
            let alarm = match sample {
                Ok(a) => a,
                Err(e) => {
                    if target::alive(pid, w.pidfd.as_ref()) {
                        warn(format_args!(
                            "pid {pid}: cannot read its threads ({e}); no longer watched"
                        ));
                    } else {
                        warn(format_args!("pid {pid} exited"));
                    }
                    watched.remove(i);
                    continue;
                }
            };
            i += 1;
            let Some(alarm) = alarm else { continue };
            let taken = take_evidence(pid, &alarm, &args, &out, &interrupt);
            if let Some(w) = watched.iter_mut().find(|w| w.pid == pid) {
                // A dump that signalled or stopped the stuck threads is not them running.
                w.sampler.after_dump(&alarm);
            }
            match taken {
                Ok(ev) => {
                    episodes += 1;
                    println!(
                        "stackdump: watch: pid {pid}: {}; evidence: {}",
                        escape::text(&ev.summary),
                        shown(&ev.dump)
                    );
                    if ev.library {
                        // The library's dump is its own: the watchdog's finding is not in it.
                        warn(format_args!(
                            "pid {pid}: dump taken by its libstackdump.so ({}); the watchdog's finding, not in that file: {}",
                            shown(&ev.dump),
                            ev.summary
                        ));
                    }
                    if let Some(cmd) = &args.exec {
                        if let Some(r) = exec(cmd, pid, &ev) {
                            running.push(r);
                        }
                    }
                    if args.once {
                        break 'watch;
                    }
                }
                Err(e) if is_gone(&e) => {
                    warn(format_args!("pid {pid} exited"));
                    if let Some(j) = watched.iter().position(|w| w.pid == pid) {
                        watched.remove(j);
                        i = j;
                    }
                }
                Err(_) if interrupt.fired() => {
                    interrupted = true;
                    break 'watch;
                }
                Err(e) => warn(format_args!(
                    "pid {pid}: threads stuck, but the evidence could not be taken: {}",
                    crate::exit::with_causes(&e)
                )),
            }
        }
    }
    if interrupted {
        warn(format_args!(
            "interrupted after {}; {episodes} episode{} caught",
            format_duration(start.elapsed()),
            if episodes == 1 { "" } else { "s" }
        ));
        // The commands started by --exec run on (a Ctrl-C in a terminal reached them too);
        // the ones that ended are reaped.
        reap(&mut running);
    } else {
        if let (Some(d), false) = (args.for_, args.once && episodes > 0) {
            if end.is_some_and(|e| Instant::now() >= e) {
                warn(format_args!(
                    "--for {} is over; {episodes} episode{} caught",
                    format_duration(d),
                    if episodes == 1 { "" } else { "s" }
                ));
            }
        }
        // Wait for the --exec commands still running (Ctrl-C ends the wait).
        while !running.is_empty() && !interrupt.fired() {
            reap(&mut running);
            interrupt.sleep_until(Instant::now() + Duration::from_millis(20));
        }
        reap(&mut running);
    }
    Ok(())
}

fn is_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<TargetError>(),
            Some(
                TargetError::Exited { .. }
                    | TargetError::NoSuchProcess { .. }
                    | TargetError::Zombie { .. }
            )
        )
    })
}

/// Take the evidence of `alarm` in `pid` into `out`: by the library when it is loaded and
/// ready, else from outside.
fn take_evidence(
    pid: i32,
    alarm: &Alarm,
    args: &WatchArgs,
    out: &Path,
    interrupt: &Interrupt,
) -> anyhow::Result<Evidence> {
    let by_library = match crate::dump::dump_into(pid, out, args.timeout, interrupt) {
        Ok(saved) => saved,
        Err(e) if is_gone(&e) || interrupt.fired() => return Err(e),
        Err(e) => {
            // The library was ready but gave no dump (its dump thread busy or wedged, its
            // directory full): the evidence is taken from outside all the same.
            warn(format_args!(
                "pid {pid}: no dump from its libstackdump.so ({}); inspecting it from outside",
                crate::exit::with_causes(&e)
            ));
            None
        }
    };
    if let Some(saved) = by_library {
        let path_of = |f: DumpFormat| {
            saved
                .files
                .iter()
                .find(|(g, _)| *g == f)
                .map(|(_, p)| p.clone())
        };
        let text = path_of(DumpFormat::Text);
        let dump = path_of(DumpFormat::Json)
            .or_else(|| text.clone())
            .context("the library's dump has no file")?;
        let summary = match &saved.json {
            Some(d) => watch::finding(d, &alarm.episode, &alarm.reasons).summary,
            None => fallback_summary(alarm),
        };
        return Ok(Evidence {
            dump,
            text,
            summary,
            library: true,
        });
    }
    let cancel = || interrupt.fired();
    let opts = capture::Options {
        cancel: &cancel,
        cache: stackdump_core::stack::dwarfcache::DwarfCache::from_env(),
        ..capture::Options::default()
    };
    let (mut dump, outcome) = crate::inspect_cmd::inspect_one(pid, &opts)?;
    if let Some(why) = &outcome.denied {
        warn(format_args!(
            "pid {pid}: no stacks, kernel view only: {why}"
        ));
    }
    if outcome.cancelled {
        return Err(crate::exit::Interrupted.into());
    }
    let stuck = watch::finding(&dump, &alarm.episode, &alarm.reasons);
    let summary = stuck.summary.clone();
    dump.trigger.watchdog = Some(watch::trigger_of(alarm, args.stuck));
    // Nobody sent a signal: the watchdog took this dump on its own (as the library says).
    dump.trigger.signal = "watchdog".into();
    dump.trigger.signo = 0;
    dump.findings.insert(0, stuck);
    let (json, text) = save_inspect(out, pid, &dump)?;
    Ok(Evidence {
        dump: json,
        text: Some(text),
        summary,
        library: false,
    })
}

/// The summary when the library wrote no JSON to compute the finding from.
fn fallback_summary(alarm: &Alarm) -> String {
    let n = alarm.episode.threads.len();
    let still = alarm
        .episode
        .threads
        .iter()
        .map(|(_, d)| *d)
        .min()
        .unwrap_or_default();
    let why = alarm
        .reasons
        .values()
        .next()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!(
        "{n} thread{} stuck for {} s{why}",
        if n == 1 { "" } else { "s" },
        still.as_secs()
    )
}

/// Write an inspect's dump as `stackdump-<pid>-<time>Z.json` and `.txt` in `out` (0600, never
/// replacing a file: a second evidence in the same millisecond gets `-r<n>`).
fn save_inspect(out: &Path, pid: i32, dump: &Dump) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = OutDir::open(out)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut request = None;
    let mut n = 0u64;
    let names = loop {
        let json = DumpFileName::new(pid, millis, request, DumpFormat::Json).to_string();
        let text = DumpFileName::new(pid, millis, request, DumpFormat::Text).to_string();
        if !dir.exists(&json) && !dir.exists(&text) {
            break (json, text);
        }
        n += 1;
        request = Some(n);
    };
    let mut json = serde_json::to_string_pretty(dump)?;
    json.push('\n');
    let json = escape::json(&json);
    let text = stackdump_core::output::render::text_with(
        dump,
        &stackdump_core::output::render::TextOptions { native_all: false },
    );
    dir.write_new(&names.0, json.as_bytes())
        .with_context(|| format!("writing {} in {}", names.0, dir.shown()))?;
    dir.write_new(&names.1, text.as_bytes())
        .with_context(|| format!("writing {} in {}", names.1, dir.shown()))?;
    Ok((out.join(&names.0), out.join(&names.1)))
}

/// Start `sh -c CMD` for one evidence; `None` (said on stderr) when it cannot start.
fn exec(cmd: &str, pid: i32, ev: &Evidence) -> Option<Running> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .env("STACKDUMP_PID", pid.to_string())
        .env("STACKDUMP_DUMP", &ev.dump)
        .env("STACKDUMP_SUMMARY", escape::text(&ev.summary).as_ref());
    match &ev.text {
        Some(t) => c.env("STACKDUMP_DUMP_TEXT", t),
        None => c.env_remove("STACKDUMP_DUMP_TEXT"),
    };
    match c.spawn() {
        Ok(child) => Some(Running { child, pid }),
        Err(e) => {
            warn(format_args!(
                "pid {pid}: --exec {}: cannot start sh: {e}",
                Esc(cmd)
            ));
            None
        }
    }
}

/// Reap the `--exec` commands that ended, reporting failures.
fn reap(running: &mut Vec<Running>) {
    running.retain_mut(|r| match r.child.try_wait() {
        Ok(None) => true,
        Ok(Some(st)) => {
            if !st.success() {
                warn(format_args!(
                    "pid {}: the --exec command failed ({st})",
                    r.pid
                ));
            }
            false
        }
        Err(e) => {
            warn(format_args!(
                "pid {}: waiting for the --exec command: {e}",
                r.pid
            ));
            false
        }
    });
}
