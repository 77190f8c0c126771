//! The state page: what the library tells the CLI about itself (format and reasons:
//! `stackdump_core::model::libstate`).
//!
//! The dump thread creates a one-page memfd named `stackdump-state` in its own file-descriptor
//! table, maps it shared, and closes the descriptor: the host never sees an fd of ours, and
//! `/proc/PID/maps` shows the mapping. It writes the page when it starts, and re-checks who
//! handles the trigger signal (the host may install its own handler over ours at any time: node
//! for its inspector, PostgreSQL for its own wake-ups) 10 ms, 100 ms, 1 s and 10 s after it
//! starts, then once a minute, and after every dump: one `sigaction` query each time (a few
//! microseconds), the page rewritten only when something changed.
//!
//! In a forked child the parent's page is still mapped, shared with the parent: the fork
//! handler unmaps it ([`unmap_in_child`]) and the child's dump thread maps its own.

use crate::config::Config;
use stackdump_core::model::libstate::{self, LibraryState, TriggerHandler};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The page, once mapped (null before, and in a forked child until its dump thread maps one).
static PAGE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// The address of the library's trigger handler (the one signal-hook-registry installed), set
/// by `crate::install`.
pub static OUR_TRIGGER_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Unmap the page inherited from the parent (fork child handler).
///
/// Async-signal-safe: an atomic swap and one `munmap` system call.
pub fn unmap_in_child() {
    let p = PAGE.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: `p` is the start of the SIZE-byte mapping we made; nothing else refers to it
        // in this (single-threaded) child.
        unsafe { libc::munmap(p.cast(), libstate::SIZE) };
    }
}

fn map_page() -> Option<*mut u8> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor lives in the dump
    // thread's private fd table and is closed below; the mapping is fresh.
    unsafe {
        let fd = libc::memfd_create(
            c"stackdump-state".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        );
        if fd < 0 {
            return None;
        }
        let mut page = None;
        if libc::ftruncate(fd, libstate::SIZE as libc::off_t) == 0 {
            libc::fcntl(
                fd,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            );
            let p = libc::mmap(
                std::ptr::null_mut(),
                libstate::SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if p != libc::MAP_FAILED {
                page = Some(p as *mut u8);
            }
        }
        libc::close(fd);
        page
    }
}

/// Who handles `signo` now, and the address of its handler.
fn trigger_handler(signo: i32) -> (TriggerHandler, usize) {
    // SAFETY: a zeroed sigaction is a valid out-parameter; a null `act` only queries.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::sigaction(signo, std::ptr::null(), &mut old) } != 0 {
        return (TriggerHandler::Library, 0);
    }
    let h = old.sa_sigaction;
    let who = if h == libc::SIG_DFL {
        TriggerHandler::Default
    } else if h == libc::SIG_IGN {
        TriggerHandler::Ignored
    } else if matches!(OUR_TRIGGER_HANDLER.load(Ordering::Relaxed), 0) {
        // The constructor has not installed it yet (the dump thread starts first): ours soon.
        TriggerHandler::Library
    } else if h == OUR_TRIGGER_HANDLER.load(Ordering::Relaxed) {
        TriggerHandler::Library
    } else {
        TriggerHandler::Application
    };
    (who, h)
}

/// The file mapped at `addr` in this process (from /proc/self/maps).
fn module_of(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let (range, rest) = l.split_once(' ')?;
        let (lo, hi) = range.split_once('-')?;
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        );
        if !(lo..hi).contains(&addr) {
            return None;
        }
        let path = rest.splitn(5, ' ').nth(4)?.trim_start();
        path.starts_with('/').then(|| path.to_string())
    })
}

fn now_ms() -> i64 {
    crate::sys::now_unix_millis()
}

/// The dump thread's side: the page, what it last said, and when to look again.
pub struct Watch {
    page: Option<*mut u8>,
    state: LibraryState,
    handler_addr: usize,
    started: Instant,
    next: Instant,
    seq: u64,
}

/// When to look at the handler again after the start.
const SCHEDULE: [Duration; 4] = [
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(10),
];
const EVERY: Duration = Duration::from_secs(60);

impl Watch {
    /// Map the page and publish (dump thread, at its start).
    pub fn start(cfg: &Config) -> Watch {
        let page = map_page();
        if let Some(p) = page {
            PAGE.store(p, Ordering::SeqCst);
        }
        let mut formats = Vec::new();
        if cfg.text {
            formats.push("text");
        }
        if cfg.json {
            formats.push("json");
        }
        let now = Instant::now();
        let mut w = Watch {
            page,
            state: LibraryState {
                pid: crate::sigctx::getpid(),
                tid: crate::sigctx::gettid(),
                trigger: cfg.trigger.name.clone(),
                trigger_number: cfg.trigger.number,
                handler: TriggerHandler::Library,
                handler_module: None,
                checked_ms: 0,
                dir: absolute(&cfg.dir),
                formats: formats.join(","),
                forked_from: crate::fork::forked_from(),
                symbols_limited: crate::fork::backtrace_unusable(),
                watch_ms: cfg.watch.map(|d| d.as_millis() as u64),
            },
            handler_addr: usize::MAX,
            started: now,
            next: now,
            seq: 0,
        };
        w.check(&cfg.dir);
        w
    }

    /// How long the dump thread may sleep before the next check.
    pub fn timeout(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    /// Check now if a check is due (or `force`), and publish what changed. True when it checked.
    pub fn check_if_due(&mut self, dir: &std::path::Path, force: bool) -> bool {
        let due = force || Instant::now() >= self.next;
        if due {
            self.check(dir);
        }
        due
    }

    fn check(&mut self, dir: &std::path::Path) {
        let (who, addr) = trigger_handler(self.state.trigger_number);
        let mut next = self.state.clone();
        next.handler = who;
        if addr != self.handler_addr {
            next.handler_module = (who == TriggerHandler::Application)
                .then(|| module_of(addr))
                .flatten();
            self.handler_addr = addr;
        }
        next.dir = absolute(dir);
        let elapsed = self.started.elapsed();
        let step = SCHEDULE
            .iter()
            .find(|s| **s > elapsed)
            .map_or(EVERY, |s| *s - elapsed);
        self.next = Instant::now() + step.max(Duration::from_millis(1));
        let changed = next != self.state || self.state.checked_ms == 0;
        next.checked_ms = now_ms();
        self.state = next;
        if changed {
            self.write();
        }
    }

    fn write(&mut self) {
        let Some(page) = self.page else { return };
        let Some(text) = self.state.to_text() else {
            return;
        };
        // SAFETY: `page` is our SIZE-byte shared mapping, 4096-aligned; the sequence number at
        // SEQ_AT is 8-aligned and only this thread writes the page. Readers (the CLI, through
        // process_vm_readv) copy it and check the sequence number: odd while we write.
        unsafe {
            let seq = &*(page.add(libstate::SEQ_AT) as *const AtomicU64);
            self.seq += 1;
            seq.store(self.seq, Ordering::SeqCst);
            std::ptr::copy_nonoverlapping(libstate::MAGIC.as_ptr(), page, 8);
            let len = (text.len() as u32).to_ne_bytes();
            std::ptr::copy_nonoverlapping(len.as_ptr(), page.add(libstate::LEN_AT), 4);
            std::ptr::copy_nonoverlapping(text.as_ptr(), page.add(libstate::TEXT_AT), text.len());
            self.seq += 1;
            seq.store(self.seq, Ordering::SeqCst);
        }
    }
}

/// The dump directory as an absolute path (a relative `STACKDUMP_DIR` is relative to the
/// working directory, which the library's files are written from).
fn absolute(dir: &std::path::Path) -> String {
    if dir.is_absolute() {
        return dir.to_string_lossy().into_owned();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(dir).to_string_lossy().into_owned(),
        Err(_) => dir.to_string_lossy().into_owned(),
    }
}
