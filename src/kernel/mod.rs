//! The kernel's view of a process, read before any thread is interrupted: `/proc` parsers and
//! readers, system call names and arguments, signals, fds, pipes and sockets, futex owners, and
//! [`rootfs`], the one way to open a file a target controls.

pub mod fds;
pub mod futex;
pub mod host;
pub mod net;
pub mod proc;
pub mod rootfs;
pub mod signals;
pub mod syscalls;
