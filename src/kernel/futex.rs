//! Futex waits: the operation in words, and the thread that holds the lock where the lock
//! records it.
//!
//! - PI futexes (`FUTEX_LOCK_PI`, `FUTEX_LOCK_PI2`, `FUTEX_WAIT_REQUEUE_PI`) and glibc's robust
//!   mutexes keep the owner's tid in the low 30 bits of the futex word (`FUTEX_TID_MASK`).
//! - A plain glibc `pthread_mutex_t` waits with `FUTEX_WAIT(addr, 2)` on its `__lock` (offset 0)
//!   and keeps the owner in `__owner`, the `int` at offset 8; its `__kind` is the `int` at
//!   offset 16 (64-bit Linux: x86_64 and aarch64 alike).
//!
//! The memory is read with `process_vm_readv` (our own pid inside the dumper: a bad address is
//! an error, never a fault), and an owner is only reported when it is a live thread of the
//! process: any other value means the word was not what we took it for.

use crate::model::{Pid, Tid};

/// `FUTEX_TID_MASK`: the owner's tid in a PI or robust futex word.
pub const TID_MASK: u32 = 0x3fff_ffff;

const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;

/// The command of a futex `op` argument (without the private and clock flags).
pub fn command(op: u64) -> u64 {
    op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
}

/// `FUTEX_WAIT_PRIVATE`, `FUTEX_LOCK_PI`, `FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME`, ...
pub fn op_name(op: u64) -> String {
    let base = match command(op) {
        0 => "FUTEX_WAIT",
        1 => "FUTEX_WAKE",
        2 => "FUTEX_FD",
        3 => "FUTEX_REQUEUE",
        4 => "FUTEX_CMP_REQUEUE",
        5 => "FUTEX_WAKE_OP",
        6 => "FUTEX_LOCK_PI",
        7 => "FUTEX_UNLOCK_PI",
        8 => "FUTEX_TRYLOCK_PI",
        9 => "FUTEX_WAIT_BITSET",
        10 => "FUTEX_WAKE_BITSET",
        11 => "FUTEX_WAIT_REQUEUE_PI",
        12 => "FUTEX_CMP_REQUEUE_PI",
        13 => "FUTEX_LOCK_PI2",
        other => return format!("FUTEX_{other:#x}"),
    };
    let mut s = base.to_string();
    if op & FUTEX_PRIVATE_FLAG != 0 {
        s.push_str("_PRIVATE");
    }
    if op & FUTEX_CLOCK_REALTIME != 0 {
        s.push_str("|FUTEX_CLOCK_REALTIME");
    }
    s
}

/// True for the operations that wait (as opposed to wake or requeue).
pub fn is_wait(op: u64) -> bool {
    matches!(command(op), 0 | 6 | 9 | 11 | 13)
}

fn is_pi(op: u64) -> bool {
    matches!(command(op), 6 | 11 | 13)
}

/// Read `buf.len()` bytes at `addr` in process `pid` (`process_vm_readv`). Inside the dumper,
/// `pid` is our own: an unmapped address is an error, not a fault.
pub fn read_memory(pid: Pid, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf` (the local iovec) and only
    // reads the remote range, checking it against the target's mappings (EFAULT when unmapped).
    let n = unsafe { libc::process_vm_readv(pid.0, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("short read: {n} of {} bytes", buf.len()),
        ));
    }
    Ok(())
}

/// The first 20 bytes of a glibc `pthread_mutex_t` (64-bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MutexWords {
    pub lock: u32,
    pub count: u32,
    pub owner: i32,
    pub nusers: u32,
    pub kind: i32,
}

impl MutexWords {
    pub fn from_bytes(b: &[u8; 20]) -> MutexWords {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        MutexWords {
            lock: u32::from_ne_bytes(word(0)),
            count: u32::from_ne_bytes(word(4)),
            owner: i32::from_ne_bytes(word(8)),
            nusers: u32::from_ne_bytes(word(12)),
            kind: i32::from_ne_bytes(word(16)),
        }
    }
}

/// glibc's `__kind` bits: the type (0..=3), robust (16), priority inherit (32), priority protect
/// (64), process-shared (128), elision (256, 512).
const KIND_BITS: i32 = 3 | 16 | 32 | 64 | 128 | 256 | 512;
const KIND_ROBUST: i32 = 16;

/// Who holds the lock behind a futex wait, from the words at the futex address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The owner's tid and where it was read.
    Known { tid: Tid, source: &'static str },
    /// Why not.
    Unknown(String),
}

/// Decide the owner of the lock a thread waits on with `futex(addr, op, val)`, given the words
/// read at `addr` and the tids of the process. Pure: tested on synthetic words.
pub fn owner_from_words(op: u64, val: u64, words: &MutexWords, tids: &[Tid]) -> Owner {
    let (candidate, source) = if is_pi(op) {
        (
            (words.lock & TID_MASK) as i32,
            "futex word (priority-inheritance lock)",
        )
    } else if matches!(command(op), 0 | 9) {
        if words.kind & !KIND_BITS != 0 {
            return Owner::Unknown(
                "not a glibc mutex (a condition variable, semaphore, or another kind of lock)"
                    .into(),
            );
        }
        if words.kind & KIND_ROBUST != 0 && words.lock & TID_MASK != 0 {
            ((words.lock & TID_MASK) as i32, "futex word (robust mutex)")
        } else if val == 2 && words.lock != 0 {
            (words.owner, "pthread_mutex_t.__owner")
        } else {
            return Owner::Unknown(
                "not a glibc mutex (a condition variable, semaphore, or another kind of lock)"
                    .into(),
            );
        }
    } else {
        return Owner::Unknown(format!("{} is not a lock wait", op_name(op)));
    };
    if candidate == 0 {
        return Owner::Unknown("the lock records no owner".into());
    }
    if tids.contains(&Tid(candidate)) {
        Owner::Known {
            tid: Tid(candidate),
            source,
        }
    } else {
        Owner::Unknown(format!(
            "the owner field holds {candidate}, which is not a thread of this process (the \
             owner exited, or this is not a mutex)"
        ))
    }
}

/// The owner of the lock at `addr` in process `pid`, reading its memory. Returns the futex word
/// (when readable) and the owner.
pub fn owner(pid: Pid, addr: u64, op: u64, val: u64, tids: &[Tid]) -> (Option<u32>, Owner) {
    if !is_wait(op) {
        return (
            None,
            Owner::Unknown(format!("{} is not a wait", op_name(op))),
        );
    }
    let mut bytes = [0u8; 20];
    if let Err(e) = read_memory(pid, addr, &mut bytes) {
        // The words past the futex may be unmapped (a futex at the end of a page): try the word.
        let mut word = [0u8; 4];
        let value = read_memory(pid, addr, &mut word)
            .ok()
            .map(|_| u32::from_ne_bytes(word));
        let why = match e.raw_os_error() {
            Some(libc::EPERM) => {
                format!("cannot read its memory: {e} (needs ptrace permission over pid {pid})")
            }
            _ => format!("cannot read its memory: {e}"),
        };
        if let Some(v) = value {
            if is_pi(op) {
                let words = MutexWords {
                    lock: v,
                    ..MutexWords::default()
                };
                return (Some(v), owner_from_words(op, val, &words, tids));
            }
        }
        return (value, Owner::Unknown(why));
    }
    let words = MutexWords::from_bytes(&bytes);
    (Some(words.lock), owner_from_words(op, val, &words, tids))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIDS: &[Tid] = &[Tid(100), Tid(101), Tid(102)];

    #[test]
    fn op_names() {
        assert_eq!(op_name(0), "FUTEX_WAIT");
        assert_eq!(op_name(128), "FUTEX_WAIT_PRIVATE");
        assert_eq!(
            op_name(9 | 128 | 256),
            "FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME"
        );
        assert_eq!(op_name(6 | 128), "FUTEX_LOCK_PI_PRIVATE");
        assert_eq!(op_name(99), "FUTEX_0x63");
        assert!(is_wait(128) && is_wait(6) && is_wait(9 | 128) && !is_wait(1));
    }

    #[test]
    fn glibc_normal_mutex() {
        let w = MutexWords {
            lock: 2,
            count: 0,
            owner: 101,
            nusers: 1,
            kind: 0,
        };
        assert_eq!(
            owner_from_words(128, 2, &w, TIDS),
            Owner::Known {
                tid: Tid(101),
                source: "pthread_mutex_t.__owner"
            }
        );
        // An owner that is not a thread of ours is not believed.
        let w2 = MutexWords { owner: 555, ..w };
        assert!(matches!(
            owner_from_words(128, 2, &w2, TIDS),
            Owner::Unknown(_)
        ));
        // A wait for another value is not a mutex lock wait (condition variable, semaphore).
        assert!(matches!(
            owner_from_words(128, 0, &w, TIDS),
            Owner::Unknown(_)
        ));
        // Garbage in __kind: not a mutex.
        let w3 = MutexWords {
            kind: 0x7fff_0000,
            ..w
        };
        assert!(matches!(
            owner_from_words(128, 2, &w3, TIDS),
            Owner::Unknown(_)
        ));
        // Unlocked: no owner.
        let w4 = MutexWords { lock: 0, ..w };
        assert!(matches!(
            owner_from_words(128, 2, &w4, TIDS),
            Owner::Unknown(_)
        ));
    }

    #[test]
    fn pi_and_robust_words_hold_the_owner() {
        let w = MutexWords {
            lock: 0x8000_0000 | 102,
            kind: 32,
            ..MutexWords::default()
        };
        assert_eq!(
            owner_from_words(6 | 128, 0, &w, TIDS),
            Owner::Known {
                tid: Tid(102),
                source: "futex word (priority-inheritance lock)"
            }
        );
        let robust = MutexWords {
            lock: 0x8000_0000 | 100,
            kind: 16,
            ..MutexWords::default()
        };
        assert!(matches!(
            owner_from_words(0, 0x8000_0000 | 100, &robust, TIDS),
            Owner::Known { tid: Tid(100), .. }
        ));
    }

    #[test]
    fn reads_our_own_mutex() {
        // A real glibc mutex held by this thread: the owner read from memory is our tid.
        let mut m: libc::pthread_mutex_t = libc::PTHREAD_MUTEX_INITIALIZER;
        // SAFETY: a statically initialized mutex, locked and unlocked by this thread only.
        assert_eq!(unsafe { libc::pthread_mutex_lock(&mut m) }, 0);
        // SAFETY: gettid has no preconditions.
        let me = Tid(unsafe { libc::gettid() });
        let addr = &m as *const libc::pthread_mutex_t as u64;
        let pid = Pid(std::process::id() as i32);
        let mut bytes = [0u8; 20];
        read_memory(pid, addr, &mut bytes).unwrap();
        let words = MutexWords::from_bytes(&bytes);
        // SAFETY: we hold it.
        assert_eq!(unsafe { libc::pthread_mutex_unlock(&mut m) }, 0);
        if cfg!(target_env = "gnu") {
            assert_eq!(words.lock, 1);
            assert_eq!(words.owner, me.0);
            // As a waiter would see it (the word is 2 once somebody waits).
            let waiting = MutexWords { lock: 2, ..words };
            assert_eq!(
                owner_from_words(128, 2, &waiting, &[me, Tid(1)]),
                Owner::Known {
                    tid: me,
                    source: "pthread_mutex_t.__owner"
                }
            );
        }
        // An unmapped address is an error, not a crash.
        assert!(read_memory(pid, 8, &mut bytes).is_err());
    }
}
