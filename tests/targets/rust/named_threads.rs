//! Named Rust threads parked in distinct, never-inlined functions: a target for stackdump's
//! end-to-end tests (and a quick thing to try `stackdump dump` on).
//!
//! | thread        | parked in                | on                                         |
//! | ------------- | ------------------------ | ------------------------------------------ |
//! | `db-writer`   | `blocked_in_pipe_read`   | `read()` on a pipe nobody writes           |
//! | `sleeper`     | `sleeping_in_nanosleep`  | `std::thread::sleep` loop (`nanosleep`)    |
//! | `lock-waiter` | `waiting_for_mutex`      | a `Mutex` the main thread holds (`futex`)  |
//! | `cond-waiter` | `waiting_on_condvar`     | a `Condvar` nobody notifies (`futex`)      |
//!
//! Prints exactly `READY <pid>` to stdout once every thread has reached its parking call and the
//! kernel shows it asleep (state `S`), then the main thread parks forever, still holding the
//! mutex. Nothing else is written to stdout or stderr.
//!
//! ```text
//! cargo build --release --examples && target/release/examples/named_threads
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Threads that reached their parking call.
static PARKED: AtomicUsize = AtomicUsize::new(0);

#[inline(never)]
fn blocked_in_pipe_read(mut pipe: File) {
    let mut byte = [0u8; 1];
    PARKED.fetch_add(1, Ordering::SeqCst);
    loop {
        // Nobody writes: read() sleeps forever. (EINTR is retried by `read`'s callers; loop anyway.)
        let n = pipe.read(&mut byte).unwrap_or(0);
        std::hint::black_box(n);
    }
}

#[inline(never)]
fn sleeping_in_nanosleep() {
    PARKED.fetch_add(1, Ordering::SeqCst);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[inline(never)]
fn waiting_for_mutex(lock: &Mutex<()>) {
    PARKED.fetch_add(1, Ordering::SeqCst);
    let guard = lock.lock();
    // Only reached if main ever let go of the lock.
    std::hint::black_box(&guard);
    drop(guard);
    loop {
        std::thread::park();
    }
}

#[inline(never)]
fn waiting_on_condvar(pair: &(Mutex<bool>, Condvar)) {
    let (released, cond) = pair;
    let mut released = released.lock().unwrap_or_else(|e| e.into_inner());
    PARKED.fetch_add(1, Ordering::SeqCst);
    while !*released {
        // Spurious wakeups go back to waiting.
        released = cond.wait(released).unwrap_or_else(|e| e.into_inner());
    }
    drop(released);
    loop {
        std::thread::park();
    }
}

/// True when every thread of this process but the main one is asleep (`S` in its `stat`).
fn others_asleep() -> bool {
    let me = std::process::id().to_string();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks.filter_map(Result::ok).all(|task| {
        if task.file_name().to_str() == Some(me.as_str()) {
            return true;
        }
        match std::fs::read_to_string(task.path().join("stat")) {
            // The name may contain ") ": the state is right after the last one.
            Ok(stat) => {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('S'))
                    == Some(true)
            }
            Err(_) => false,
        }
    })
}

fn pipe_nobody_writes() -> File {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new file descriptors; we own them from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        std::process::exit(3);
    }
    // The write end is leaked on purpose: open but never written, so reads block (not EOF).
    // SAFETY: fds[0] is a fresh fd owned by nobody else.
    unsafe { File::from_raw_fd(fds[0]) }
}

fn main() {
    let held = Arc::new(Mutex::new(()));
    let guard = held.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Arc::new((Mutex::new(false), Condvar::new()));

    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(body)
            .unwrap_or_else(|_| std::process::exit(3))
    };
    let pipe = pipe_nobody_writes();
    let threads = [
        spawn("db-writer", Box::new(move || blocked_in_pipe_read(pipe))),
        spawn("sleeper", Box::new(sleeping_in_nanosleep)),
        spawn("lock-waiter", {
            let held = Arc::clone(&held);
            Box::new(move || waiting_for_mutex(&held))
        }),
        spawn("cond-waiter", {
            let pair = Arc::clone(&pair);
            Box::new(move || waiting_on_condvar(&pair))
        }),
    ];

    // Handshake: every thread reached its parking call and the kernel shows it asleep.
    let mut delay = Duration::from_millis(1);
    while PARKED.load(Ordering::SeqCst) < threads.len() || !others_asleep() {
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }

    let mut out = std::io::stdout().lock();
    if writeln!(out, "READY {}", std::process::id())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(3);
    }
    drop(out);

    loop {
        // Main keeps the mutex for ever; `lock-waiter` never gets it.
        std::hint::black_box(&guard);
        std::thread::park();
    }
}
