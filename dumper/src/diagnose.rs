//! Phase 3b: facts about the process that only the inside can gather cheaply (pipe fill levels
//! through the host's own fd numbers, never reading or writing them), then the findings computed
//! by the shared core from the assembled dump.

use stackdump_core::model::Dump;

/// Add findings (and the facts behind them) to an assembled dump.
pub fn run(dump: &mut Dump) {
    let _ = dump;
}
