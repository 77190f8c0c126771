//! The command line: every command, its options and an example for each.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use stackdump_core::kernel::signals::{self, HostSignal};
use stackdump_core::model::duration::parse_duration;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const ABOUT: &str = "What is every thread of this process doing right now? \
Trigger, wait for and print stack dumps of processes running with libstackdump.so, inspect any \
process from outside, and compare dumps.";

const AFTER_HELP: &str = "\
Examples:
  stackdump run -- ./server --port 8080     start a program with the dumper preloaded
  stackdump list                            which processes here can be dumped
  stackdump dump 1234                       dump every thread of process 1234 (text)
  stackdump dump 1234 --every 10s --count 6 --out dumps/
  stackdump inspect 1234                    any process, no preload: stacks, kernel view, findings
  stackdump compare dumps/                  which threads are stuck across those dumps
  stackdump watch 1234 --stuck 1m --out dumps/
                                            take evidence when threads stay stuck for a minute
  stackdump signals 30                      what would `kill -30` do here, and elsewhere?

Exit codes: 0 done; 1 failed at run time (target gone, no dump before the deadline);
2 bad usage (unknown signal, bad duration, unknown arch); 3 refused: the target cannot take a
dump safely (its trigger signal is not caught, or permission). inspect without permission to
ptrace says why and prints the kernel view (exit 0). Each command has its own --help and man
page (man stackdump-dump).";

/// `stackdump --version`: the version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("STACKDUMP_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "stackdump", version = VERSION, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Each subcommand's arguments are built only when it is the one run (or help, completions and the
// manual ask for them all): building every subcommand's 200 arguments cost each run ~0.1 ms.
#[command(defer = true)]
pub enum Command {
    /// Check processes, trigger a dump in each, wait for it and print it.
    #[command(after_help = DUMP_HELP)]
    Dump(DumpArgs),
    /// Any process, without the library: every thread's stack (read from outside), kernel view
    /// and findings.
    #[command(after_help = INSPECT_HELP)]
    Inspect(InspectArgs),
    /// Watch processes (with or without the library) and take evidence when threads stay stuck
    /// (not idle) for a while: a dump through the library, or an inspect from outside.
    #[command(after_help = WATCH_HELP)]
    Watch(WatchArgs),
    /// Compare dumps of a process: which threads are stuck, which burned CPU, which came and went.
    #[command(after_help = COMPARE_HELP)]
    Compare(CompareArgs),
    /// Run a command with libstackdump.so preloaded (its exit status is passed through).
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// List the processes on this host that have libstackdump.so loaded.
    #[command(after_help = LIST_HELP)]
    List(ListArgs),
    /// Resolve and explain signal names and numbers, for this machine or any Linux architecture.
    #[command(after_help = SIGNALS_HELP)]
    Signals(SignalsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(CompletionsArgs),
    /// Write the man pages (stackdump.1 and one per command) into a directory (packaging).
    #[command(hide = true, after_help = "Example:\n  stackdump man-pages target/man")]
    ManPages(ManPagesArgs),
}

const COMPLETIONS_HELP: &str = "\
The packages install these already (bash, zsh and fish); for a stackdump from cargo install
or the tarball without its share/ directory:

Examples:
  stackdump completions bash > ~/.local/share/bash-completion/completions/stackdump
  stackdump completions zsh > ~/.zfunc/_stackdump      # with fpath+=(~/.zfunc) in .zshrc
  stackdump completions fish > ~/.config/fish/completions/stackdump.fish";

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManPagesArgs {
    /// The directory to write the .1 files into (created if needed).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

const DUMP_HELP: &str = "\
Before sending anything, dump checks that the process exists and is not a zombie, that we may
signal it, that libstackdump.so is loaded in it, and that its trigger signal (its
STACKDUMP_SIGNAL, default USR1) is caught. If sending could kill it or cannot work, dump refuses
(exit 3) and says why; --force sends anyway. The dump is read from the target's STACKDUMP_DIR
through /proc/PID/root (containers, PrivateTmp), never following a symlink.

Examples:
  stackdump dump 1234                            print a dump of every thread of 1234
  stackdump dump 1234 --format json | jq .findings
  stackdump dump 1234 5678 --timeout 30s         two processes, wait up to 30 s each
  stackdump dump 1234 --every 500ms --count 4    four dumps, half a second apart
  stackdump dump 1234 --every 1m --for 1h --out /var/tmp/dumps
                                                 one dump a minute for an hour, kept as files
  stackdump dump 1234 --every 1s --count 10 --format folded > stacks.folded
                                                 ten dumps summed as folded stacks";

const INSPECT_HELP: &str = "\
inspect needs nothing in the target: no library, no signal. Threads blocked in a system call are
read without being stopped (their stack is copied from the SP in /proc/PID/task/TID/syscall and
checked unchanged afterwards); every other thread is stopped alone, only while its registers and
stack are copied (ptrace seize, interrupt, copy, detach; typically well under a millisecond),
and the time each was stopped is reported. --consistent stops every thread first for a coherent
cut (blocked calls may then see EINTR, as under gdb). Without permission to ptrace the process
(another user, Yama ptrace_scope, a non-dumpable process), the reason is given in one line on
stderr and the kernel view is still printed (exit 0).

Examples:
  stackdump inspect 1234                         stacks, kernel view and findings as text
  stackdump inspect 1234 --format json | jq '.threads[] | {name, state}'
  stackdump inspect 1234 --format folded | flamegraph.pl > threads.svg
  stackdump inspect 1234 --consistent            stop all threads at once for a coherent cut";

const WATCH_HELP: &str = "\
watch samples every thread's run counter (/proc/PID/task/TID/schedstat) every quarter of
--stuck (at most every 15 s). A thread that has not run for --stuck is classified from its
system call: a write into a full pipe or socket, an fsync, state D, a lock whose owner is
itself stuck are stuck; epoll_wait, poll, accept, a condition variable, a read with nothing to
read, a sleep are idle and never cause evidence (docs/WATCHDOG.md has the table). When threads
are stuck, the evidence goes into --out: `stackdump dump PID --out DIR` when libstackdump.so is
loaded and ready in the process (no host thread is signalled), otherwise an inspect from
outside, saved as stackdump-<pid>-<time>Z.json and .txt, whose first finding (stuck_threads)
and trigger.watchdog name the stuck threads. One line per evidence on stdout. The same
threads in the same places are reported once; at most one evidence per process per --min-gap.

--exec CMD runs `sh -c CMD` after each evidence (not waited for), with STACKDUMP_PID,
STACKDUMP_DUMP (the JSON file), STACKDUMP_DUMP_TEXT (the text file, if any) and
STACKDUMP_SUMMARY in its environment; its failure is reported, not fatal.

Exit codes: 0 when --once took its evidence, --for ran out, every process exited, or on
Ctrl-C/SIGTERM; 1 no such process or a zombie; 2 bad usage (a thread id, a kernel thread, a
duration without unit, a bad --out); 3 not allowed to read the process's threads.

Examples:
  stackdump watch 1234 --stuck 1m                       evidence in the current directory
  stackdump watch 1234 5678 --stuck 30s --out /var/tmp/stuck --min-gap 1h
  stackdump watch 1234 --stuck 10s --once --out dumps/  stop after the first evidence
  stackdump watch 1234 --stuck 1m --exec 'mail -s \"stuck: $STACKDUMP_SUMMARY\" ops < \"$STACKDUMP_DUMP_TEXT\"'";

const COMPARE_HELP: &str = "\
Give JSON dumps (stackdump-*.json) or directories of them, e.g. the --out directory of periodic
dumps. A thread is stuck when it has the same stack, the same system call with the same
arguments and no context switch from one dump to the next.

Examples:
  stackdump dump 1234 --every 10s --count 3 --out dumps/ && stackdump compare dumps/
  stackdump compare a.json b.json c.json --format json";

const RUN_HELP: &str = "\
The library is taken from STACKDUMP_LIB, or found next to the stackdump executable, in
../lib/stackdump/ or ../lib/ relative to it (the tarball and the package), or in
/usr/lib/stackdump/. The command replaces stackdump (exec), so its exit status, signals and pid are its own.

Examples:
  stackdump run -- python3 app.py
  stackdump run --dir /var/tmp/dumps --signal USR2 -- ./server --port 8080";

const LIST_HELP: &str = "\
For each process: pid, command, trigger signal (and whether it is caught), dump directory and
the newest dump in it. Processes we may not inspect are counted, not shown.

Two ways to ask a listed process for a dump:
  stackdump dump PID      sends the trigger to the library's own thread: no host thread is
                          interrupted (threads blocked in a system call are copied without any
                          signal, frame-pointer code included)
  kill -s USR1 PID        the kernel gives the signal to ONE host thread, which is interrupted
                          as by any signal: SA_RESTART restarts read/write/futex, not poll,
                          epoll_wait, select, nanosleep or sigtimedwait, which return EINTR

Example:
  stackdump list";

const SIGNALS_HELP: &str = "\
Signal numbers differ between architectures: USR1 is 10 on x86 and arm, 30 on alpha and sparc,
16 on mips and parisc, and `kill -30` on x86 sends PWR, which terminates the process. Name
signals, never number them.

Examples:
  stackdump signals                     the table of this machine
  stackdump signals 30                  what 30 means here, and on the other architectures
  stackdump signals USR1 --arch all     the number of USR1 everywhere
  stackdump signals RTMIN+3 --arch mips
  stackdump signals --arch all          every architecture, side by side";

/// How to print a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The text dump, readable in a terminal.
    Text,
    /// The stackdump/1 JSON document.
    Json,
}

/// How to print stacks: a dump, or folded stacks for flame graph tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StackFormat {
    /// The text dump, readable in a terminal.
    Text,
    /// The stackdump/1 JSON document.
    Json,
    /// One line per distinct stack with its thread count (flamegraph.pl, inferno, speedscope),
    /// summed over every dump taken.
    Folded,
}

/// What each folded stack starts with (`--folded-root`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FoldedRoot {
    /// The outermost frame: every thread's stacks add up.
    None,
    /// The thread's name, `[worker-1]`.
    Thread,
    /// The process's command and pid, `[server 1234]`.
    Process,
}

impl FoldedRoot {
    pub fn options(self) -> stackdump_core::output::folded::Options {
        use stackdump_core::output::folded::{Options, Root};
        Options {
            root: match self {
                FoldedRoot::None => Root::None,
                FoldedRoot::Thread => Root::Thread,
                FoldedRoot::Process => Root::Process,
            },
            ..Options::default()
        }
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("targets").args(["pids", "pid_opts"]).required(true).multiple(true)))]
pub struct InspectArgs {
    /// The processes to inspect, one after the other.
    #[arg(value_name = "PID", value_parser = parse_pid)]
    pub pids: Vec<i32>,
    /// A process to inspect (the same as a PID argument; may be repeated).
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pid_opts: Vec<i32>,
    /// Also inspect every process under each PID (its children, their children, ...): a
    /// prefork server's master and workers in one command. Zombies are left out.
    #[arg(long)]
    pub subprocesses: bool,
    /// Print the dump as text, JSON or folded stacks.
    #[arg(long, value_enum, default_value_t = StackFormat::Text)]
    pub format: StackFormat,
    /// Text: show every native frame (by default a run of the Python interpreter's own frames
    /// between two Python frames is one line).
    #[arg(long)]
    pub native_all: bool,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// With --format folded: what each stack starts with.
    #[arg(long, value_enum, value_name = "ROOT", default_value_t = FoldedRoot::None)]
    pub folded_root: FoldedRoot,
    /// Stop every thread first (a coherent cut), copy all, then let all go.
    #[arg(long)]
    pub consistent: bool,
    /// Python: show each frame's arguments and local variables (bounded reprs of None, bool,
    /// int, float, str and bytes; containers by type and length), read from the process's
    /// memory. Off by default: locals can hold secrets.
    #[arg(long)]
    pub locals: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("targets").args(["pids", "pid_opts"]).required(true).multiple(true)))]
pub struct WatchArgs {
    /// The processes to watch, all in one loop.
    #[arg(value_name = "PID", value_parser = parse_pid)]
    pub pids: Vec<i32>,
    /// A process to watch (the same as a PID argument; may be repeated).
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pid_opts: Vec<i32>,
    /// How long threads must stay stuck (not run, in a call that waits for something that
    /// should finish) before evidence is taken (e.g. 30s, 5m). Sampled every quarter of it, at
    /// most every 15 s.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub stuck: Duration,
    /// Where to write the evidence (created 0700 if missing; default: the current directory).
    #[arg(short = 'o', long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// After each evidence, run `sh -c CMD` with STACKDUMP_PID, STACKDUMP_DUMP,
    /// STACKDUMP_DUMP_TEXT and STACKDUMP_SUMMARY set (not waited for).
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// At most one evidence per process per this long (the same threads in the same places
    /// are reported once whatever the gap).
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = parse_duration_or_zero)]
    pub min_gap: Duration,
    /// Exit (0) after the first evidence.
    #[arg(long)]
    pub once: bool,
    /// Stop watching after this long (exit 0).
    #[arg(long = "for", value_name = "DUR", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// How long to wait for a dump from the library (when it takes the evidence).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// JSON dump files, or directories of them.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub paths: Vec<PathBuf>,
    /// Print the comparison as text, or as one stackdump-compare/1 JSON document.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("period_end").args(["count", "for_"])))]
#[command(group(ArgGroup::new("targets").args(["pids", "pid_opts"]).required(true).multiple(true)))]
pub struct DumpArgs {
    /// Process ids to dump.
    #[arg(value_name = "PID", value_parser = parse_pid)]
    pub pids: Vec<i32>,
    /// A process to dump (the same as a PID argument; may be repeated).
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pid_opts: Vec<i32>,
    /// Also dump every process under each PID (its children, their children, ...; found once,
    /// at the start): a preloaded prefork server's master and workers. Zombies are left out.
    #[arg(long)]
    pub subprocesses: bool,
    /// Print the dump as text, JSON, or folded stacks (summed over every dump taken, printed
    /// at the end; with --out, a .folded file is saved next to each dump).
    #[arg(long, value_enum, default_value_t = StackFormat::Text)]
    pub format: StackFormat,
    /// Text: show every native frame (by default a run of the Python interpreter's own frames
    /// between two Python frames is one line).
    #[arg(long)]
    pub native_all: bool,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// With --format folded: what each stack starts with.
    #[arg(long, value_enum, value_name = "ROOT", default_value_t = FoldedRoot::None)]
    pub folded_root: FoldedRoot,
    /// Save every dump (all the formats the target writes) in DIR instead of printing it; the
    /// files are named stackdump-<pid>-<UTC time>Z.{txt,json}, so they sort by time.
    // The text above is the --help text, not HTML: `<pid>` stays as it is.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(short = 'o', long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How long to wait for each dump (e.g. 500ms, 10s, 2m).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Send this signal instead of the target's STACKDUMP_SIGNAL (a name: USR2, RTMIN+3).
    /// KILL, STOP, the fault and job-control signals are refused (exit 2).
    #[arg(long, value_name = "NAME", value_parser = parse_trigger)]
    pub signal: Option<HostSignal>,
    /// Send the trigger even when the checks say it is unsafe or cannot work (and say so).
    #[arg(long)]
    pub force: bool,
    /// Take a dump every DUR (needs --count or --for).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "period_end")]
    pub every: Option<Duration>,
    /// With --every: how many dumps to take.
    #[arg(long, value_name = "N", requires = "every", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// With --every: for how long to take dumps.
    #[arg(long = "for", value_name = "DUR", requires = "every", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// Python: show each frame's arguments and local variables (bounded reprs of None, bool,
    /// int, float, str and bytes; containers by type and length). Read by stackdump itself from
    /// outside, at the frames the dump recorded (needs the right to ptrace the process); the
    /// library never writes them, so they are never in a dump file. Off by default: locals
    /// can hold secrets.
    #[arg(long, conflicts_with = "out")]
    pub locals: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where the program writes its dumps (STACKDUMP_DIR; default /tmp).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The trigger signal, by name (STACKDUMP_SIGNAL; default USR1). KILL, STOP, the fault and
    /// job-control signals are refused (exit 2).
    #[arg(long, value_name = "NAME", value_parser = parse_trigger)]
    pub signal: Option<HostSignal>,
    /// The command and its arguments (after --).
    #[arg(
        required = true,
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a table, or one JSON object per line and process (format stackdump-list/1).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

impl Cli {
    /// The command line with its synonyms resolved: `-p PID` joins the PID arguments and
    /// `--json` becomes `--format json`, so the commands see one way of saying each thing.
    pub fn normalized(mut self) -> Cli {
        match &mut self.command {
            Command::Dump(a) => {
                a.pids.append(&mut a.pid_opts);
                if a.json {
                    a.format = StackFormat::Json;
                }
            }
            Command::Inspect(a) => {
                a.pids.append(&mut a.pid_opts);
                if a.json {
                    a.format = StackFormat::Json;
                }
            }
            Command::Watch(a) => a.pids.append(&mut a.pid_opts),
            Command::Compare(a) if a.json => a.format = OutputFormat::Json,
            Command::List(a) if a.json => a.format = OutputFormat::Json,
            _ => {}
        }
        self
    }
}

/// Whose numbering of real-time signals to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LibcArg {
    /// glibc programs: SIGRTMIN is 34.
    Glibc,
    /// musl programs: SIGRTMIN is 35.
    Musl,
    /// The kernel's own numbering: SIGRTMIN is 32.
    Kernel,
}

#[derive(Debug, Args)]
pub struct SignalsArgs {
    /// A signal name (USR1, SIGUSR1, usr1, RTMIN+3) or number (30) to explain.
    #[arg(value_name = "NAME|NUMBER", allow_hyphen_values = true)]
    pub signal: Option<String>,
    /// The architecture (x86_64, aarch64, mips, ... or `all`); default: this machine's.
    #[arg(long, value_name = "ARCH|all")]
    pub arch: Option<String>,
    /// Real-time numbering (default: the C library of this build).
    #[arg(long, value_enum)]
    pub libc: Option<LibcArg>,
}

/// A duration, or `0` / `0s` for none (`--min-gap 0`: only the one-evidence-per-episode rule).
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    match parse_duration(s) {
        Err(e) if e.contains("more than zero") => Ok(Duration::ZERO),
        r => r,
    }
}

fn parse_pid(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a process id (a positive number)")),
    }
}

/// A trigger signal: a name, and one that a handler can take (not KILL, STOP, ...).
fn parse_trigger(s: &str) -> Result<HostSignal, String> {
    let sig = parse_signal(s)?;
    match signals::trigger_unusable(&sig.name) {
        Some(why) => Err(format!(
            "{} cannot be a trigger: {why}; use USR1, USR2 or a real-time signal (RTMIN+3)",
            sig.name
        )),
        None => Ok(sig),
    }
}

fn parse_signal(s: &str) -> Result<HostSignal, String> {
    signals::parse_host(s).map_err(|e| {
        let near = signals::arch::suggest_name(s);
        if near.is_empty() || matches!(e, signals::SignalError::Number(_)) {
            e.to_string()
        } else {
            format!("{e}; did you mean {}?", near.join(" or "))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Example"),
                "{} has no example",
                sub.get_name()
            );
            assert!(help.contains("stackdump "), "{}", sub.get_name());
        }
    }

    #[test]
    fn periodic_options_go_together() {
        let p = |args: &[&str]| Cli::try_parse_from(["stackdump"].iter().chain(args));
        assert!(p(&["dump", "1", "--every", "1s", "--count", "3"]).is_ok());
        assert!(p(&["dump", "1", "--every", "1s", "--for", "1m"]).is_ok());
        assert!(p(&["dump", "1", "--every", "1s"]).is_err());
        assert!(p(&["dump", "1", "--count", "3"]).is_err());
        assert!(p(&["dump", "1", "--every", "1s", "--count", "3", "--for", "1m"]).is_err());
        assert!(p(&["dump", "1", "--every", "1s", "--count", "0"]).is_err());
        assert!(p(&["dump", "0"]).is_err());
        assert!(p(&["dump", "x"]).is_err());
        assert!(p(&["dump"]).is_err());
        assert!(p(&["dump", "1", "--signal", "30"]).is_err());
        assert!(p(&["dump", "1", "--timeout", "10"]).is_err());
        assert!(p(&["run", "--", "sleep", "-x"]).is_ok());
        assert!(p(&["run"]).is_err());
        assert!(p(&["signals", "-5"]).is_ok());
        assert!(p(&["inspect", "1", "--format", "folded", "--consistent"]).is_ok());
        // Several processes (issue 20): one after the other.
        assert!(p(&["inspect", "1", "2"]).is_ok());
        assert!(p(&["inspect"]).is_err());
        assert!(p(&["dump", "1", "--format", "folded"]).is_ok());
        assert!(p(&["compare"]).is_err());
        assert!(p(&["compare", "a", "b", "--format", "json"]).is_ok());
        assert!(p(&["compare", "a", "--format", "folded"]).is_err());
    }

    #[test]
    fn watch_options() {
        let p = |args: &[&str]| {
            Cli::try_parse_from(["stackdump"].iter().chain(args)).map(Cli::normalized)
        };
        let Command::Watch(w) = p(&["watch", "1", "-p", "2", "--stuck", "30s"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(w.pids, [1, 2]);
        assert_eq!(w.stuck, Duration::from_secs(30));
        assert_eq!(w.min_gap, Duration::from_secs(600));
        assert!(!w.once && w.for_.is_none() && w.out.is_none() && w.exec.is_none());
        let Command::Watch(w) = p(&["watch", "1", "--stuck", "1s", "--min-gap", "0"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(w.min_gap, Duration::ZERO);
        assert!(p(&["watch", "1"]).is_err()); // --stuck is required
        assert!(p(&["watch", "--stuck", "1s"]).is_err()); // a pid is
        assert!(p(&["watch", "1", "--stuck", "10"]).is_err()); // units are
        assert!(p(&["watch", "1", "--stuck", "0s"]).is_err());
        assert!(p(&["watch", "1", "--stuck", "1s", "--min-gap", "5"]).is_err());
        assert!(p(&[
            "watch", "1", "--stuck", "1s", "--once", "--for", "1m", "--exec", "true", "-o", "d"
        ])
        .is_ok());
    }

    #[test]
    fn the_habits_of_other_tools_work() {
        let p = |args: &[&str]| {
            Cli::try_parse_from(["stackdump"].iter().chain(args)).map(Cli::normalized)
        };
        let Command::Dump(d) = p(&["dump", "-p", "1", "--pid", "2", "3", "--json", "-o", "x"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(d.pids, [3, 1, 2]);
        assert_eq!(d.format, StackFormat::Json);
        assert_eq!(d.out.as_deref(), Some(std::path::Path::new("x")));
        let Command::Inspect(i) = p(&["inspect", "-p", "7", "--json"]).unwrap().command else {
            panic!()
        };
        assert_eq!((i.pids, i.format), (vec![7], StackFormat::Json));
        let Command::Inspect(i) = p(&["inspect", "7", "-p", "8", "9", "--subprocesses"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!((i.pids, i.subprocesses), (vec![7, 9, 8], true));
        assert!(p(&["inspect", "--json"]).is_err());
        assert!(p(&["dump", "--json"]).is_err());
        assert!(p(&["dump", "1", "--json", "--format", "text"]).is_err());
        assert!(p(&[
            "dump",
            "1",
            "--format",
            "folded",
            "--folded-root",
            "process"
        ])
        .is_ok());
        let Command::List(l) = p(&["list", "--json"]).unwrap().command else {
            panic!()
        };
        assert_eq!(l.format, OutputFormat::Json);
        assert!(p(&["completions", "zsh"]).is_ok());
        assert!(p(&["completions", "tcsh"]).is_err());
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
    }
}
