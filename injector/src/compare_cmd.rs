//! `stackdump compare FILE|DIR...`: what is stuck, what burned CPU, what came and went across
//! dumps (`stackdump_core::output::compare`). Files that cannot be read or are no dumps: exit 2.

use crate::cli::{CompareArgs, OutputFormat};
use crate::exit::UsageError;
use std::io::Write;

pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let dumps = stackdump_core::output::compare::load(&args.paths)
        .map_err(|e| UsageError(e.to_string()))?;
    let c = stackdump_core::output::compare::compare(&dumps);
    let out = match args.format {
        OutputFormat::Text => stackdump_core::output::compare::text(&c),
        OutputFormat::Json => {
            stackdump_core::escape::json(&stackdump_core::output::compare::json(&c)).into_owned()
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    if !out.ends_with('\n') {
        writeln!(stdout)?;
    }
    stdout.flush()?;
    Ok(())
}
