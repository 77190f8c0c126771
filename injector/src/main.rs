//! `stackdump`: the CLI. It runs outside the target and never links the dumper.
//!
//! - `dump`: check → trigger → wait → read → print, once or periodically ([`dump`]).
//! - `inspect`: any process, from outside: stacks, kernel view, findings ([`inspect_cmd`]).
//! - `watch`: the watchdog from outside: evidence when threads stay stuck ([`watch`]).
//! - `compare`: what is stuck across dumps ([`compare_cmd`]).
//! - `run`: exec a command with libstackdump.so preloaded ([`run`]).
//! - `list`: processes with the library loaded ([`list`]).
//! - `signals`: signal names and numbers of every Linux architecture ([`signals_cmd`]).
//! - `completions`, `man-pages` (hidden): shell completions and man pages from the clap
//!   definitions ([`docgen`]), for the packages and for users of `cargo install`.
//!
//! Exit codes come from one place, [`exit`].

mod cli;
mod compare_cmd;
mod docgen;
mod dump;
mod exit;
mod fetch;
mod inspect_cmd;
mod interrupt;
mod jsoncopy;
mod libstate;
mod list;
mod outdir;
mod run;
mod signals_cmd;
mod target;
mod watch;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly of SIGPIPE like other Unix tools (`stackdump signals | head`), instead of
    // panicking on a failed write to stdout.
    // SAFETY: setting a signal disposition to SIG_DFL at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli.normalized(),
        Err(e) => return exit::report_clap(e),
    };
    // Ctrl-C and SIGTERM end every subcommand within ~50 ms, whatever it is doing (`run`
    // execs its command, which gets the default dispositions back).
    if !matches!(cli.command, cli::Command::Run(_)) {
        if let Err(e) = interrupt::install_watchdog() {
            eprintln!("stackdump: cannot install the Ctrl-C handler: {e}");
            return ExitCode::from(exit::ExitKind::Failed.code());
        }
    }
    let result = match cli.command {
        cli::Command::Dump(args) => dump::run(args),
        cli::Command::Inspect(args) => inspect_cmd::run(args),
        cli::Command::Watch(args) => watch::run(args),
        cli::Command::Compare(args) => compare_cmd::run(args),
        cli::Command::Run(args) => run::run(args),
        cli::Command::List(args) => list::run(args),
        cli::Command::Signals(args) => signals_cmd::run(args),
        cli::Command::Completions(args) => docgen::completions(args),
        cli::Command::ManPages(args) => docgen::man_pages(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}
