//! `stackdump list`: the processes on this host that have libstackdump.so loaded.

use crate::cli::{ListArgs, OutputFormat};
use crate::fetch::DumpDir;
use crate::target::{find_library, Target, TargetError};
use stackdump_core::escape::field;
use stackdump_core::model::dumpfile::DumpFileName;
use stackdump_core::model::duration::format_duration;

/// One process with the library.
#[derive(Debug)]
pub struct Entry {
    pub pid: i32,
    pub comm: String,
    pub signal: String,
    /// `ready`, `no dump thread`, `not caught`, `disabled`, `bad STACKDUMP_SIGNAL`.
    pub state: String,
    pub dir: String,
    /// The library's dump thread.
    pub dump_thread: Option<i32>,
    /// Who handles the trigger when a host thread takes it (from the state page).
    pub handler: Option<&'static str>,
    /// Where the signal and directory came from: `library` (its state page) or `environ`.
    pub source: &'static str,
    /// Why the state page could not be used, when it is there but unreadable.
    pub state_error: Option<String>,
    /// What `kill -s SIGNAL` does instead of a dump, and what to do (see
    /// `Target::trigger_note`).
    pub note: Option<String>,
    /// The newest dump of this process in its directory (file name), if any.
    pub newest: Option<DumpFileName>,
    /// `STACKDUMP_WATCH` when the library's watchdog is on (from its state page).
    pub watch_ms: Option<u64>,
}

fn entry(pid: i32) -> Result<Option<Entry>, TargetError> {
    // The maps first: only a process with the library is inspected any further.
    match stackdump_core::kernel::proc::read_proc_file(format!("/proc/{pid}/maps")) {
        Ok(maps) if find_library(&String::from_utf8_lossy(&maps)).is_some() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(TargetError::PermissionDenied {
                pid,
                what: "read the memory maps of",
                owner: None,
            })
        }
        Err(_) => return Ok(None),
    }
    let target = Target::inspect(pid)?;
    if target.library.is_none() {
        return Ok(None);
    }
    let dump_thread = target.dump_thread();
    let (signal, state) = match target.configured_signal() {
        Ok(sig) => {
            let state = if target.env.disabled() {
                "disabled"
            } else if !target.status.catches(sig.number) {
                "not caught"
            } else if dump_thread.is_none() {
                "no dump thread"
            } else {
                "ready"
            };
            (sig.name, state.to_string())
        }
        Err(_) => (
            target.env.signal.clone().unwrap_or_default(),
            "bad STACKDUMP_SIGNAL".to_string(),
        ),
    };
    let dir = target.dump_dir();
    let ns_pid = if target.status.ns_pid > 0 {
        target.status.ns_pid
    } else {
        pid
    };
    let newest = DumpDir::open(&target)
        .ok()
        .and_then(|d| d.list().ok())
        .and_then(|names| {
            names
                .iter()
                .filter_map(|n| DumpFileName::parse(n))
                .filter(|n| n.pid == ns_pid)
                .max_by(|a, b| a.time.cmp(&b.time).then(a.format.cmp(&b.format)))
        });
    let (source, state_error) = match &target.state {
        crate::libstate::StateRead::Found(_) => ("library", None),
        crate::libstate::StateRead::Missing => ("environ", None),
        crate::libstate::StateRead::Unreadable(e) => ("environ", Some(e.clone())),
    };
    Ok(Some(Entry {
        pid,
        comm: target.comm().to_string(),
        signal,
        state,
        dir,
        newest,
        dump_thread,
        handler: target.lib_state().map(|st| st.handler.as_str()),
        source,
        state_error,
        note: dump_thread.and(target.trigger_note(false)),
        watch_ms: target.lib_state().and_then(|st| st.watch_ms),
    }))
}

/// Scan `/proc`. Returns the entries and how many processes could not be inspected.
pub fn scan() -> (Vec<Entry>, usize) {
    let me = std::process::id() as i32;
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    let mut entries = Vec::new();
    let mut hidden = 0;
    for pid in pids.into_iter().filter(|&p| p != me) {
        match entry(pid) {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => {}
            Err(TargetError::PermissionDenied { .. }) => hidden += 1,
            // Gone, zombie, kernel thread: not a candidate.
            Err(_) => {}
        }
    }
    (entries, hidden)
}

/// The `format` of each line of `list --format json`.
pub const LIST_FORMAT: &str = "stackdump-list/1";

pub fn run(args: ListArgs) -> anyhow::Result<()> {
    let (entries, hidden) = scan();
    match args.format {
        OutputFormat::Json => {
            for e in &entries {
                let v = serde_json::json!({
                    "format": LIST_FORMAT,
                    "pid": e.pid,
                    "comm": e.comm,
                    "signal": e.signal,
                    "state": e.state,
                    "dir": e.dir,
                    "dump_thread": e.dump_thread,
                    "handler": e.handler,
                    "source": e.source,
                    "state_error": e.state_error,
                    "note": e.note,
                    "watch_ms": e.watch_ms,
                    "newest": e.newest.as_ref().map(|n| serde_json::json!({
                        "file": n.to_string(),
                        "time": n.rfc3339(),
                    })),
                });
                println!("{}", stackdump_core::escape::json(&v.to_string()));
            }
        }
        OutputFormat::Text => {
            if entries.is_empty() {
                println!("no process here has libstackdump.so loaded (start one with `stackdump run -- CMD`)");
            } else {
                let rows: Vec<[String; 5]> = entries
                    .iter()
                    .map(|e| {
                        [
                            e.pid.to_string(),
                            // Names from the target, escaped (no control characters).
                            field(&e.comm).into_owned(),
                            match e.watch_ms {
                                Some(ms) => format!(
                                    "{} ({}, watchdog {})",
                                    field(&e.signal),
                                    e.state,
                                    format_duration(std::time::Duration::from_millis(ms))
                                ),
                                None => format!("{} ({})", field(&e.signal), e.state),
                            },
                            field(&e.dir).into_owned(),
                            e.newest
                                .as_ref()
                                .map(|n| format!("{}  {}", n.rfc3339(), n))
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                let head = ["PID", "COMMAND", "SIGNAL", "DIR", "NEWEST DUMP"];
                let mut w = [0usize; 5];
                for r in rows
                    .iter()
                    .map(|r| r.each_ref().map(String::as_str))
                    .chain([head])
                {
                    for (i, c) in r.iter().enumerate() {
                        w[i] = w[i].max(c.chars().count());
                    }
                }
                let line = |r: [&str; 5]| {
                    format!(
                        "{:>w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                        r[0],
                        r[1],
                        r[2],
                        r[3],
                        r[4],
                        w0 = w[0],
                        w1 = w[1],
                        w2 = w[2],
                        w3 = w[3]
                    )
                    .trim_end()
                    .to_string()
                };
                println!("{}", line(head));
                for r in &rows {
                    println!("{}", line(r.each_ref().map(String::as_str)));
                }
                for e in &entries {
                    if let Some(note) = &e.note {
                        println!("{}: {}", e.pid, stackdump_core::escape::text(note));
                    }
                    if let Some(why) = &e.state_error {
                        println!(
                            "{}: the library's state could not be read ({}); its signal and directory are from its environment, which the application may have changed",
                            e.pid,
                            stackdump_core::escape::text(why)
                        );
                    }
                }
            }
            if hidden > 0 {
                let hint = if nix::unistd::geteuid().is_root() {
                    "not dumpable, or in a sandbox"
                } else {
                    "other users' processes; run as root to see them"
                };
                let what = if hidden == 1 { "process" } else { "processes" };
                eprintln!("stackdump: {hidden} {what} could not be inspected ({hint})");
            }
        }
    }
    Ok(())
}
