//! Proves that the signal handlers never allocate: the library's global allocator counts every
//! allocation made on one watched thread (`stackdump::alloc::watch`), the handlers run on that
//! thread for a real capture signal and a real trigger signal, and the count stays zero.

use stackdump::sigctx::{capture, trigger};
use stackdump::slots;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

extern "C" fn trigger_handler(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers.
    trigger::on_trigger(unsafe { &*info });
}

fn install(signo: i32, handler: usize) {
    // SAFETY: installing an SA_SIGINFO handler with an empty mask.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(signo, &act, std::ptr::null_mut()), 0);
    }
}

/// The library's constructor runs in every binary that links it, this one included; its dump
/// thread would consume our trigger and write a dump. So the test body runs in a child process
/// of this test binary started with `STACKDUMP_DISABLE=1`, where the constructor stays inert.
#[test]
fn handlers_do_not_allocate() {
    if std::env::var_os("STACKDUMP_NO_ALLOC_CHILD").is_some() {
        return body();
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "handlers_do_not_allocate",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STACKDUMP_DISABLE", "1")
        .env("STACKDUMP_NO_ALLOC_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the no-allocation child did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child failed: {status}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn body() {
    let deadline = Instant::now() + Duration::from_secs(20);
    let capture_sig = libc::SIGRTMAX() - 5;
    let trigger_sig = libc::SIGRTMAX() - 6;
    install(capture_sig, capture::handler as *const () as usize);
    install(trigger_sig, trigger_handler as *const () as usize);
    let table = slots::table(8, 64 * 1024).expect("slot table");

    // The watched thread parks in read() on a socket until we tell it to go on.
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        tid_tx.send(stackdump::sigctx::gettid()).unwrap();
        let mut b = [0u8; 1];
        theirs.read_exact(&mut b).unwrap(); // parked here during both signals
                                            // Prove the counter works: this allocation on the watched thread must be seen.
        let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(1000));
        drop(v);
        theirs.write_all(b"x").unwrap();
    });
    let tid = tid_rx.recv().unwrap();
    // Wait until it sleeps in read (a handshake through /proc, not a fixed sleep).
    let pid = std::process::id() as i32;
    while !std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .unwrap()
        .rsplit(')')
        .next()
        .unwrap()
        .trim_start()
        .starts_with('S')
    {
        assert!(Instant::now() < deadline, "worker never parked");
        std::thread::yield_now();
    }
    // The library's constructor must not have run in this test binary (it would install
    // handlers and a dump thread of its own); if it did, this test would race with it.
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .collect();
    assert!(
        !names.iter().any(|n| n.trim() == "stackdump"),
        "constructor ran in the test binary: {names:?}"
    );
    stackdump::alloc::watch(tid);

    // Capture signal, exactly as the dump thread sends it.
    let generation = 0x5a5a;
    let slot = &table.slots[3];
    assert!(slots::arm(slot, generation));
    stackdump::sys::tg_sigqueue(pid, tid, capture_sig, capture::cookie(generation, 3)).unwrap();
    while !slots::is_done(slot, generation) {
        assert!(Instant::now() < deadline, "capture handler never published");
        std::thread::yield_now();
    }
    let cap = slots::captured(slot);
    assert_eq!(cap.tid, tid, "the handler ran on the signalled thread");
    assert!(
        cap.stack.len() >= 4096,
        "a stack window was copied: {} bytes",
        cap.stack.len()
    );
    assert!(cap.regs.sp != 0 && cap.regs.pc != 0);
    slots::release(slot);

    // Trigger signal.
    let before = trigger::HEAD.load(Ordering::SeqCst);
    stackdump::sys::tg_sigqueue(pid, tid, trigger_sig, 7).unwrap();
    while trigger::HEAD.load(Ordering::SeqCst) == before {
        assert!(Instant::now() < deadline, "trigger handler never ran");
        std::thread::yield_now();
    }
    let rec = &trigger::RECORDS[(before % trigger::RING as u64) as usize];
    while rec.seq.load(Ordering::SeqCst) != before + 1 {
        assert!(Instant::now() < deadline, "trigger record never completed");
        std::thread::yield_now();
    }
    assert_eq!(rec.value.load(Ordering::SeqCst), 7);
    assert_eq!(rec.code.load(Ordering::SeqCst), libc::SI_QUEUE);

    assert_eq!(
        stackdump::alloc::watched_allocations(),
        0,
        "a signal handler allocated on the thread it interrupted"
    );

    // Let the worker allocate, and check that the counter sees it.
    ours.write_all(b"g").unwrap();
    let mut b = [0u8; 1];
    ours.read_exact(&mut b).unwrap();
    assert!(
        stackdump::alloc::watched_allocations() > 0,
        "the counting allocator must see the worker's allocation"
    );
    stackdump::alloc::watch(-1);
    worker.join().unwrap();
}
