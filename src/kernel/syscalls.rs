//! System call names per architecture (from the `syscalls` crate's tables, generated from the
//! kernel's), and which system calls take a file descriptor as their first argument.

use crate::escape::field;
use crate::model::SyscallState;

/// The name of the system call, or what the thread does instead (`running`, `blocked`,
/// `unknown`).
pub fn syscall_name(s: &SyscallState) -> String {
    match s {
        SyscallState::InSyscall { name: Some(n), .. } => field(n).into_owned(),
        SyscallState::InSyscall { nr, .. } => format!("syscall_{nr}"),
        SyscallState::Blocked { .. } => "blocked outside a system call".into(),
        SyscallState::Running => "running".into(),
        SyscallState::Unknown => "unknown".into(),
    }
}

/// An architecture whose syscall numbers we can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this program was built for, when supported.
    pub fn host() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }
}

/// The name of syscall `nr` on `arch` (`1` → `write` on x86_64).
pub fn name(arch: Arch, nr: i64) -> Option<&'static str> {
    let nr = usize::try_from(nr).ok()?;
    match arch {
        Arch::X86_64 => syscalls::x86_64::Sysno::new(nr).map(|s| s.name()),
        Arch::Aarch64 => syscalls::aarch64::Sysno::new(nr).map(|s| s.name()),
    }
}

/// The name of syscall `nr` on this machine.
pub fn host_name(nr: i64) -> Option<&'static str> {
    name(Arch::host()?, nr)
}

/// System calls whose first argument is a file descriptor.
const FD_FIRST: &[&str] = &[
    "read",
    "write",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "ftruncate",
    "fallocate",
    "lseek",
    "getdents64",
    "ioctl",
    "fcntl",
    "flock",
    "fstat",
    "newfstatat",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "accept",
    "accept4",
    "connect",
    "bind",
    "listen",
    "shutdown",
    "getsockopt",
    "setsockopt",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "sendfile",
    "splice",
    "tee",
    "copy_file_range",
    "fstatfs",
    "io_uring_enter",
    "close",
];

/// True when the first argument of the syscall called `name` is a file descriptor.
pub fn first_arg_is_fd(name: &str) -> bool {
    FD_FIRST.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_per_arch() {
        assert_eq!(name(Arch::X86_64, 0), Some("read"));
        assert_eq!(name(Arch::X86_64, 1), Some("write"));
        assert_eq!(name(Arch::X86_64, 202), Some("futex"));
        assert_eq!(name(Arch::Aarch64, 63), Some("read"));
        assert_eq!(name(Arch::Aarch64, 64), Some("write"));
        assert_eq!(name(Arch::Aarch64, 98), Some("futex"));
        assert_eq!(name(Arch::X86_64, -1), None);
        assert_eq!(name(Arch::X86_64, 100_000), None);
    }

    #[test]
    fn host_matches_libc() {
        assert_eq!(host_name(libc::SYS_write), Some("write"));
        assert_eq!(host_name(libc::SYS_futex), Some("futex"));
        assert!(first_arg_is_fd("write"));
        assert!(!first_arg_is_fd("futex"));
    }
}
