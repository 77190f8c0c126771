//! Ctrl-C and SIGTERM while waiting: a flag plus a self-pipe, so a `poll` wakes at once.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Interrupt {
    read: UnixStream,
    flag: Arc<AtomicBool>,
}

impl Interrupt {
    /// Catch SIGINT and SIGTERM from now on (the process then no longer dies of them).
    pub fn install() -> std::io::Result<Interrupt> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGINT, libc::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        Ok(Interrupt { read, flag })
    }

    pub fn fired(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empty the pipe after a wake-up.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Sleep until `until`; false when interrupted first.
    pub fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if self.fired() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            let wait = (until - now).min(Duration::from_secs(1));
            let mut fds = [nix::poll::PollFd::new(
                self.fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut fds, ms);
            self.drain();
        }
    }
}
