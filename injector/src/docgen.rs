//! `stackdump completions SHELL` and the hidden `stackdump man-pages DIR`: both generated from
//! the clap definitions in [`crate::cli`], so they always match the binary that prints them.

use crate::cli::{Cli, CompletionsArgs, ManPagesArgs};
use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "stackdump", &mut out);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

/// `stackdump.1` and `stackdump-<command>.1` for every visible command.
pub fn man_pages(args: ManPagesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cmd = Cli::command().version(crate::cli::VERSION);
    clap_mangen::generate_to(cmd, &args.dir)
        .with_context(|| format!("writing man pages into {}", args.dir.display()))?;
    Ok(())
}
