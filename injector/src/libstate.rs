//! Read the state page a target's library publishes (`stackdump_core::model::libstate`): its
//! dump thread, trigger signal and who handles it, dump directory and formats, without
//! `/proc/PID/environ` (which a host may overwrite, and a forked child inherits).
//!
//! The page is found in `/proc/PID/maps` (`/memfd:stackdump-state (deleted)`, one page) and
//! copied with `process_vm_readv` (the CLI needs the same right to dump a process's threads
//! anyway). Everything in it is hostile input: the copy is one page, read twice and kept only
//! when both copies agree on an even sequence number, parsed by `LibraryState::parse`, which
//! validates every field; the CLI escapes what it prints. A page that names another pid is the
//! parent's (a child made without `fork()`'s handlers still maps it) and is ignored.

use stackdump_core::model::libstate::{self, LibraryState};
use stackdump_core::stack::unwind::ProcessMemory;

/// What was found.
#[derive(Debug, Clone)]
pub enum StateRead {
    /// The page of this process.
    Found(LibraryState),
    /// No page of this process (no dump thread ever started here, or an old library).
    Missing,
    /// A page is there but could not be read or is not valid: why.
    Unreadable(String),
}

/// At most this many candidate mappings are looked at.
const MAX_CANDIDATES: usize = 8;

/// The state of process `pid` (`ns_pid`: its pid as it sees itself), from its `maps`.
pub fn read(pid: i32, ns_pid: i32, maps: &str) -> StateRead {
    let mem = ProcessMemory { pid };
    let mut why = None;
    for line in maps
        .lines()
        .filter(|l| l.trim_end().ends_with(libstate::MAPS_PATH))
        .take(MAX_CANDIDATES)
    {
        let Some((lo, hi)) = line
            .split_whitespace()
            .next()
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
        else {
            continue;
        };
        if hi.checked_sub(lo) != Some(libstate::SIZE as u64) {
            continue;
        }
        match read_page(&mem, lo) {
            Ok(st) if st.pid == ns_pid => return StateRead::Found(st),
            Ok(_) => {} // the parent's page
            Err(e) => why = Some(e),
        }
    }
    match why {
        Some(e) => StateRead::Unreadable(e),
        None => StateRead::Missing,
    }
}

fn read_page(mem: &ProcessMemory, addr: u64) -> Result<LibraryState, String> {
    let mut last = None;
    for _ in 0..4 {
        let mut a = vec![0u8; libstate::SIZE];
        let mut b = vec![0u8; libstate::SIZE];
        if mem.read(addr, &mut a) != libstate::SIZE {
            return Err(format!(
                "its memory could not be read ({})",
                std::io::Error::last_os_error()
            ));
        }
        mem.read(addr, &mut b);
        let seq = |p: &[u8]| p[libstate::SEQ_AT..libstate::SEQ_AT + 8].to_vec();
        if seq(&a) == seq(&b) {
            match LibraryState::parse(&a) {
                Ok(st) => return Ok(st),
                Err(e) => last = Some(e),
            }
        }
        std::thread::yield_now();
    }
    Err(format!(
        "its state page is not valid: {}",
        last.unwrap_or_else(|| "it kept changing".into())
    ))
}
