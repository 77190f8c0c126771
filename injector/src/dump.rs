//! `stackdump dump PID...`: check → trigger → wait → read → print (or save), once or
//! periodically.

use crate::cli::{DumpArgs, StackFormat};
use crate::exit::{RoundsFailed, Several, UsageError};
use crate::fetch::{self, DumpDir, Fetched};
use crate::interrupt::Interrupt;
use crate::jsoncopy::{self, Layout};
use crate::outdir::OutDir;
use crate::target::{Target, TargetError};
use anyhow::Context;
use stackdump_core::kernel::signals::HostSignal;
use stackdump_core::model::dumpfile::{DumpFileName, DumpFormat};
use stackdump_core::model::duration::format_duration;
use stackdump_core::model::Dump;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A target that passed the checks, ready to be triggered.
struct Armed {
    target: Target,
    signal: HostSignal,
    dir: DumpDir,
    /// What to wait for.
    formats: Vec<DumpFormat>,
}

fn warn(msg: impl std::fmt::Display) {
    // Names and paths in it came from the target.
    eprintln!(
        "stackdump: {}",
        stackdump_core::escape::text(&msg.to_string())
    );
}

/// Inspect and check one target.
fn arm(pid: i32, args: &DumpArgs) -> anyhow::Result<Armed> {
    let target = Target::inspect(pid)?;
    let refuse = |reason: String, todo: &str| TargetError::Refused {
        pid,
        comm: target.comm().to_string(),
        reason,
        todo: todo.to_string(),
    };
    let configured = target.configured_signal();
    let signal = match (&args.signal, &configured) {
        (Some(s), Ok(c)) => {
            if s.number != c.number && target.library.is_some() {
                warn(format_args!(
                    "process {pid}: its library listens for {} (STACKDUMP_SIGNAL); sending {} as asked",
                    c.name, s.name
                ));
            }
            s.clone()
        }
        (Some(s), Err(_)) => s.clone(),
        (None, Ok(c)) => c.clone(),
        (None, Err(e)) => {
            return Err(refuse(
                format!(
                    "its STACKDUMP_SIGNAL={:?} is not valid ({e}), so the library disabled itself",
                    target.env.signal.as_deref().unwrap_or("")
                ),
                "Restart it with STACKDUMP_SIGNAL set to a name such as USR1 (or pass --signal NAME --force)",
            )
            .into())
        }
    };
    // Not even with --force: see Target::init_refusal.
    if let Some((reason, todo)) = target.init_refusal(&signal) {
        return Err(refuse(reason, &todo).into());
    }
    let refusals = target.check(&signal);
    if let Some((reason, todo)) = refusals.first() {
        if !args.force {
            return Err(refuse(reason.clone(), todo).into());
        }
        for (reason, _) in &refusals {
            warn(format_args!(
                "--force: sending {} to process {pid} ({}) although {reason}",
                signal.name,
                target.comm()
            ));
        }
    }
    if args.signal.is_none()
        || args.signal.as_ref().map(|s| s.number) == configured.as_ref().ok().map(|c| c.number)
    {
        if let Some(note) = target.trigger_note(true) {
            // `stackdump dump` sends the trigger to the dump thread, where no handler runs: it
            // works all the same; `kill -s` would not.
            warn(format_args!("process {pid}: {note}"));
        }
    }
    let written = target.env.formats();
    let needs_json = |what: &str| -> anyhow::Result<()> {
        if written.contains(&DumpFormat::Json) {
            return Ok(());
        }
        Err(UsageError(format!(
            "process {pid} writes only text dumps (STACKDUMP_FORMAT={}); {what}",
            target.env.format.as_deref().unwrap_or("")
        ))
        .into())
    };
    let formats = if args.locals {
        // The locals are read here, at the frames the JSON dump records (--out conflicts).
        if args.format == StackFormat::Folded {
            return Err(UsageError(
                "--locals shows nothing in folded stacks; use --format text or json".into(),
            )
            .into());
        }
        needs_json(
            "--locals reads the Python frames of its JSON dumps (STACKDUMP_FORMAT=text,json)",
        )?;
        vec![DumpFormat::Json]
    } else if args.out.is_some() {
        if args.format == StackFormat::Folded {
            needs_json("--format folded needs its JSON dumps; use --format text")?;
        }
        written.clone()
    } else {
        match args.format {
            StackFormat::Json => {
                needs_json("use --format text")?;
                vec![DumpFormat::Json]
            }
            StackFormat::Folded => {
                needs_json("--format folded needs its JSON dumps; use --format text")?;
                vec![DumpFormat::Json]
            }
            // --native-all renders the JSON here (the text file leaves interpreter frames out).
            StackFormat::Text if args.native_all && written.contains(&DumpFormat::Json) => {
                vec![DumpFormat::Json]
            }
            StackFormat::Text if written.contains(&DumpFormat::Text) => vec![DumpFormat::Text],
            // Only JSON is written: render it here.
            StackFormat::Text => vec![DumpFormat::Json],
        }
    };
    let mut dir = DumpDir::open(&target)?;
    // Before the trigger: the file's rename wakes the wait (see the fetch module).
    dir.watch();
    Ok(Armed {
        target,
        signal,
        dir,
        formats,
    })
}

/// Trigger one armed target and wait for its dump.
fn take(
    armed: &mut Armed,
    deadline: Instant,
    timeout: Duration,
    interrupt: &Interrupt,
    id: u32,
    sent: std::time::SystemTime,
) -> Result<Fetched, TargetError> {
    let req = fetch::Request {
        signal: &armed.signal,
        id,
        formats: &armed.formats,
        deadline,
        timeout,
        sent,
    };
    fetch::wait_for_dump(&mut armed.target, &armed.dir, &req, Some(interrupt))
}

/// What one round produced for one target.
/// What has been printed so far, and the dumps to fold at the end (`--format folded`).
#[derive(Default)]
pub struct Emitted {
    printed: bool,
    folded: Vec<Dump>,
}

impl Emitted {
    /// With `--format folded` (and no `--out`): print the folded stacks of every dump taken.
    fn finish(&self, args: &DumpArgs) -> anyhow::Result<()> {
        if args.format == StackFormat::Folded && args.out.is_none() && !self.folded.is_empty() {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(
                stackdump_core::output::folded::folded_with(
                    &self.folded,
                    &args.folded_root.options(),
                )
                .as_bytes(),
            )?;
            stdout.flush()?;
        }
        Ok(())
    }
}

fn parse_json(pid: i32, fetched: &Fetched) -> anyhow::Result<Dump> {
    let (_, bytes) = &fetched.files[&DumpFormat::Json];
    Dump::from_json(&String::from_utf8_lossy(bytes))
        .with_context(|| format!("process {pid}: the JSON dump does not parse"))
}

fn emit(
    armed: &Armed,
    fetched: &Fetched,
    args: &DumpArgs,
    multi: bool,
    emitted: &mut Emitted,
) -> anyhow::Result<()> {
    let pid = armed.target.pid;
    if let Some(out) = &args.out {
        for (_, path) in save_all(out, pid, fetched)? {
            println!("{}", path.display());
        }
        if args.format == StackFormat::Folded {
            if let Some((name, _)) = fetched.files.get(&DumpFormat::Json) {
                let folded = stackdump_core::output::folded::folded_with(
                    &[parse_json(pid, fetched)?],
                    &args.folded_root.options(),
                );
                let path = save_as(out, pid, name, "folded", folded.as_bytes())?;
                println!("{}", path.display());
            }
        }
        return Ok(());
    }
    if args.format == StackFormat::Folded {
        emitted.folded.push(parse_json(pid, fetched)?);
        return Ok(());
    }
    if args.locals {
        return emit_with_locals(pid, fetched, args, multi, emitted);
    }
    let first = &mut emitted.printed;
    let mut stdout = std::io::stdout().lock();
    match args.format {
        StackFormat::Folded => {}
        StackFormat::Json => {
            let (_, bytes) = &fetched.files[&DumpFormat::Json];
            // The file is the target's: printed only when it is valid JSON, with no raw control
            // character (DEL, C1 and bidi controls in strings escaped, the value the same), in
            // one pass that copies nothing when there is nothing to change. Several dumps: one
            // compact document per line, so they stay machine-readable.
            let layout = if multi { Layout::Compact } else { Layout::AsIs };
            let safe = jsoncopy::check_and_escape(bytes, layout)
                .with_context(|| format!("process {pid}: the JSON dump does not parse"))?;
            stdout.write_all(&safe)?;
            if multi || !safe.ends_with(b"\n") {
                writeln!(stdout)?;
            }
        }
        StackFormat::Text => {
            if *first {
                writeln!(stdout)?;
            }
            let written = fetched
                .files
                .get(&DumpFormat::Text)
                // --native-all needs the JSON to render from; a target that wrote only text
                // gets its text as it is.
                .filter(|_| !args.native_all || !fetched.files.contains_key(&DumpFormat::Json));
            if let Some((_, bytes)) = written {
                // The target wrote this file (its library, or whatever it loaded instead):
                // every control character but line feeds and tabs is shown escaped.
                let text = stackdump_core::escape::text_bytes(bytes);
                stdout.write_all(text.as_bytes())?;
                if !text.ends_with('\n') {
                    writeln!(stdout)?;
                }
            } else {
                let (_, bytes) = &fetched.files[&DumpFormat::Json];
                let dump = Dump::from_json(&String::from_utf8_lossy(bytes))
                    .with_context(|| format!("process {pid}: the JSON dump does not parse"))?;
                // Rendered here: the target wrote no text file, or --native-all asks for the
                // frames its text leaves out.
                print_text(&mut stdout, &dump, args)?;
            }
        }
    }
    *first = true;
    stdout.flush()?;
    Ok(())
}

/// Save every file of a fetched dump in `out` ([`save`]); their paths, by format.
fn save_all(out: &Path, pid: i32, fetched: &Fetched) -> anyhow::Result<Vec<(DumpFormat, PathBuf)>> {
    let mut saved = Vec::new();
    for (format, (name, bytes)) in &fetched.files {
        saved.push((*format, save(out, pid, name, bytes)?));
    }
    Ok(saved)
}

/// What [`dump_into`] saved: each file's path, and the JSON dump when the target writes one.
pub struct Saved {
    pub files: Vec<(DumpFormat, PathBuf)>,
    pub json: Option<Dump>,
}

/// `stackdump dump PID --out DIR` for one process, as `stackdump watch` takes its evidence: the
/// same checks, the same signal-free request to the dump thread, the same copies in `out`;
/// nothing printed. `Ok(None)` when the checks refuse (the library is not loaded, not ready,
/// or may not be signalled): the caller inspects from outside instead.
pub fn dump_into(
    pid: i32,
    out: &Path,
    timeout: Duration,
    interrupt: &Interrupt,
) -> anyhow::Result<Option<Saved>> {
    let args = DumpArgs {
        pids: vec![pid],
        pid_opts: Vec::new(),
        subprocesses: false,
        format: StackFormat::Text,
        native_all: false,
        locals: false,
        json: false,
        folded_root: crate::cli::FoldedRoot::None,
        out: Some(out.to_path_buf()),
        timeout,
        signal: None,
        force: false,
        every: None,
        count: None,
        for_: None,
    };
    let mut armed = match arm(pid, &args) {
        Ok(a) => a,
        Err(e)
            if matches!(
                e.downcast_ref::<TargetError>(),
                Some(TargetError::Refused { .. } | TargetError::PermissionDenied { .. })
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let id = fetch::request_id();
    let at = std::time::SystemTime::now();
    fetch::trigger(&armed.target, &armed.signal, id)?;
    let fetched = take(
        &mut armed,
        Instant::now() + timeout,
        timeout,
        interrupt,
        id,
        at,
    )?;
    let files = save_all(out, pid, &fetched)?;
    let json = fetched
        .files
        .contains_key(&DumpFormat::Json)
        .then(|| parse_json(pid, &fetched))
        .transpose()?;
    Ok(Some(Saved { files, json }))
}

/// A dump rendered as text here (not the target's own text file), as `args` ask.
fn print_text(out: &mut impl Write, dump: &Dump, args: &DumpArgs) -> std::io::Result<()> {
    let text = stackdump_core::output::render::text_with(
        dump,
        &stackdump_core::output::render::TextOptions {
            native_all: args.native_all,
        },
    );
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}

/// `--locals`: the JSON dump with the locals of its Python frames, read here from outside
/// (`stackdump_core::outside::locals`), printed as text or JSON. When they cannot be read (no
/// permission to read the target's memory), the dump is printed without them and stderr and
/// the dump's `errors` say why.
fn emit_with_locals(
    pid: i32,
    fetched: &Fetched,
    args: &DumpArgs,
    multi: bool,
    emitted: &mut Emitted,
) -> anyhow::Result<()> {
    let mut dump = parse_json(pid, fetched)?;
    if let Err(why) = stackdump_core::outside::locals::add_locals(pid, &mut dump) {
        warn(format_args!("process {pid}: {why}"));
        dump.errors.push(format!("python: {why}"));
    }
    let mut stdout = std::io::stdout().lock();
    match args.format {
        StackFormat::Json => {
            let json = if multi {
                serde_json::to_string(&dump)?
            } else {
                serde_json::to_string_pretty(&dump)?
            };
            // DEL and C1 characters in names, which serde_json writes raw, escaped too.
            stdout.write_all(stackdump_core::escape::json(&json).as_bytes())?;
            writeln!(stdout)?;
        }
        _ => {
            if emitted.printed {
                writeln!(stdout)?;
            }
            print_text(&mut stdout, &dump, args)?;
        }
    }
    emitted.printed = true;
    stdout.flush()?;
    Ok(())
}

/// Save a dump in `out` as `stackdump-<pid>-<time>Z.<ext>` (pid as seen from here), atomically.
fn save(out: &Path, pid: i32, name: &DumpFileName, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    save_as(out, pid, name, name.format.extension(), bytes)
}

/// [`save`] with another extension (`folded`) than the dump's own. The file is created 0600
/// in a private directory, without following links ([`OutDir`]).
fn save_as(
    out: &Path,
    pid: i32,
    name: &DumpFileName,
    ext: &str,
    bytes: &[u8],
) -> anyhow::Result<PathBuf> {
    let dir = OutDir::open(out)?;
    let mut local = DumpFileName {
        pid,
        time: name.time.clone(),
        request: None,
        format: name.format,
    };
    let file = |local: &DumpFileName| {
        let s = local.to_string();
        match s.rsplit_once('.') {
            Some((stem, _)) => format!("{stem}.{ext}"),
            None => format!("{s}.{ext}"),
        }
    };
    if dir.exists(&file(&local)) {
        // Two dumps in one millisecond: keep both.
        local.request = name.request;
    }
    let file = file(&local);
    dir.write_new(&file, bytes)
        .with_context(|| format!("writing {file} in {}", dir.shown()))?;
    Ok(out.join(file))
}

pub fn run(mut args: DumpArgs) -> anyhow::Result<()> {
    if args.subprocesses {
        args.pids = crate::target::with_subprocesses(&args.pids);
    }
    if let Some(out) = &args.out {
        // Refuse an unsafe --out before any target is signalled.
        OutDir::open(out)?;
    }
    let interrupt = Interrupt::install().context("installing the Ctrl-C handler")?;
    match args.every {
        None => once(&args, &interrupt),
        Some(every) => periodic(&args, every, &interrupt),
    }
}

/// One dump of each pid. With one pid its error is returned as is; with several, each failure
/// is reported as it happens and the others are still dumped.
fn once(args: &DumpArgs, interrupt: &Interrupt) -> anyhow::Result<()> {
    let multi = args.pids.len() > 1;
    let mut errors: Vec<anyhow::Error> = Vec::new();
    let fail = |e: anyhow::Error, errors: &mut Vec<anyhow::Error>| -> anyhow::Result<()> {
        if !multi {
            return Err(e);
        }
        crate::exit::report(&e);
        errors.push(e);
        Ok(())
    };
    // Check everything first, then trigger everything, then wait: the dumps are taken at
    // (nearly) the same moment.
    let mut armed: Vec<(Armed, u32)> = Vec::new();
    for &pid in &args.pids {
        match arm(pid, args) {
            Ok(a) => armed.push((a, fetch::request_id())),
            Err(e) => fail(e, &mut errors)?,
        }
    }
    let mut sent: Vec<(Armed, u32, std::time::SystemTime)> = Vec::new();
    for (a, id) in armed {
        let at = std::time::SystemTime::now();
        match fetch::trigger(&a.target, &a.signal, id) {
            Ok(()) => sent.push((a, id, at)),
            Err(e) => fail(e.into(), &mut errors)?,
        }
    }
    let deadline = Instant::now() + args.timeout;
    let mut emitted = Emitted::default();
    for (mut a, id, at) in sent {
        let result = take(&mut a, deadline, args.timeout, interrupt, id, at)
            .map_err(anyhow::Error::from)
            .and_then(|f| emit(&a, &f, args, multi, &mut emitted));
        if let Err(e) = result {
            fail(e, &mut errors)?;
        }
    }
    emitted.finish(args)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Several {
            done: "dumped",
            total: args.pids.len(),
            errors,
        }
        .into())
    }
}

fn gone(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<TargetError>(),
        Some(
            TargetError::Exited { .. }
                | TargetError::NoSuchProcess { .. }
                | TargetError::Zombie { .. }
        )
    )
}

/// Dumps every `every`, `count` times or for a while. A failed round is reported and the run
/// goes on; a target that exits leaves the run (that is not a failure), which stops when none is
/// left; Ctrl-C stops it cleanly. Exit 1 when any round failed.
fn periodic(args: &DumpArgs, every: Duration, interrupt: &Interrupt) -> anyhow::Result<()> {
    // Ctrl-C is how a periodic run normally ends: if the watchdog has to end it, exit 0 too.
    crate::interrupt::set_exit_code(0);
    let start = Instant::now();
    let end = args.for_.map(|d| start + d);
    let multi = args.pids.len() > 1;
    let mut live: Vec<i32> = args.pids.clone();
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut emitted = Emitted::default();
    let mut round: u64 = 0;
    loop {
        if args.count.is_some_and(|c| round >= c) {
            break;
        }
        let scheduled = start + every * u32::try_from(round).unwrap_or(u32::MAX);
        if end.is_some_and(|e| scheduled >= e) {
            break;
        }
        if !interrupt.sleep_until(scheduled) {
            warn(format_args!("interrupted after {round} rounds"));
            break;
        }
        let late = Instant::now().saturating_duration_since(scheduled);
        if round > 0 && late > (every / 10).max(Duration::from_millis(50)) {
            warn(format_args!(
                "round {} starts {} behind schedule (a round takes longer than --every {})",
                round + 1,
                format_duration(late),
                format_duration(every)
            ));
        }
        round += 1;
        let label = match args.count {
            Some(c) => format!("round {round}/{c}"),
            None => format!("round {round}"),
        };
        // Check and trigger every live target, then wait for each.
        let mut sent: Vec<(Armed, u32, std::time::SystemTime)> = Vec::new();
        for &pid in &live.clone() {
            let id = fetch::request_id();
            let at = std::time::SystemTime::now();
            let result = arm(pid, args).and_then(|a| {
                fetch::trigger(&a.target, &a.signal, id)?;
                Ok(a)
            });
            match result {
                Ok(a) => sent.push((a, id, at)),
                Err(e) => {
                    failed += usize::from(!gone(&e));
                    report_round(&label, &e, &mut live, pid);
                }
            }
        }
        let deadline = Instant::now() + args.timeout;
        for (mut a, id, at) in sent {
            let pid = a.target.pid;
            let result = take(&mut a, deadline, args.timeout, interrupt, id, at)
                .map_err(anyhow::Error::from)
                .and_then(|f| emit(&a, &f, args, multi, &mut emitted));
            match result {
                Ok(()) => ok += 1,
                Err(e)
                    if matches!(
                        e.downcast_ref::<TargetError>(),
                        Some(TargetError::Interrupted)
                    ) => {}
                Err(e) => {
                    failed += usize::from(!gone(&e));
                    report_round(&label, &e, &mut live, pid);
                }
            }
        }
        if interrupt.fired() {
            warn(format_args!("interrupted during {label}; stopping"));
            break;
        }
        if live.is_empty() {
            warn("no target left; stopping");
            break;
        }
    }
    emitted.finish(args)?;
    if failed > 0 {
        return Err(RoundsFailed {
            failed,
            total: ok + failed,
        }
        .into());
    }
    Ok(())
}

fn report_round(label: &str, e: &anyhow::Error, live: &mut Vec<i32>, pid: i32) {
    if gone(e) {
        live.retain(|&p| p != pid);
        warn(format_args!("{label}: {e}; no more dumps of it"));
    } else {
        let mut msg = e.to_string();
        if let Some(src) = e.source() {
            msg.push_str(&format!(": {src}"));
        }
        warn(format_args!("{label}: {msg}"));
    }
}
