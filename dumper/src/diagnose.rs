//! Phase 3b: facts about the process that only the inside can gather cheaply (pipe fill levels
//! through the host's own fd numbers, never reading or writing them; futex owners read from our
//! own memory with `process_vm_readv`), then the findings computed by the shared core from the
//! assembled dump. See `stackdump_core::analysis::facts` and `stackdump_core::analysis::diagnose`.

use stackdump_core::analysis::diagnose;
use stackdump_core::analysis::facts::Options;
use stackdump_core::model::Dump;

/// Add findings (and the facts behind them) to an assembled dump. Never fails the dump: a panic
/// here is caught and reported in the dump's `errors`, and the dump is written with whatever was
/// added before it (`analyze` gathers first and only then touches the dump).
pub fn run(dump: &mut Dump) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        diagnose::analyze(dump, &Options::inside());
    }));
    if result.is_err() {
        dump.errors.push(
            "computing the findings failed (a bug in stackdump); the dump may lack them".into(),
        );
    }
}
