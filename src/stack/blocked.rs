//! The stack of a thread blocked in a system call, copied without stopping or signalling it:
//! SP and PC from its `syscall` line, the stack with `process_vm_readv`, kept only when the
//! thread provably did not run meanwhile. Shared by the dumper (phase 1a) and `stackdump
//! inspect`.

use crate::kernel::proc::{RunCounter, TaskReader};
use crate::model::{SyscallState, Tid};
use crate::stack::unwind::{RawFrames, Regs};

/// What the kernel view saw of a thread, to prove that a stack copied afterwards is the one
/// of that moment.
#[derive(Clone, Copy)]
pub struct Seen<'a> {
    /// Its `syscall` line (SP and PC come from here).
    pub syscall: &'a SyscallState,
    /// Its context-switch counts (`status`), read after `syscall`.
    pub switches: (u64, u64),
    /// Its run counter (`schedstat`), when it was read before `syscall`.
    pub runs: Option<(u64, u64)>,
}

pub use crate::stack::unwind::UnwindCopy;

/// The first copy of a blocked thread's stack (most stacks are a few KiB deep; copying the
/// whole window for every thread cost ~3 ms per 1000 threads); a stack that does not unwind to
/// its end within it is copied again with the whole window.
pub const FIRST_WINDOW: usize = 16 * 1024;

/// Copy and unwind the stack of a thread that `seen` says is blocked in a system call, without
/// stopping it. Used by `stackdump inspect` (during the kernel view) and by the dumper (after
/// its phase 0). Returns the frames, and the run counter's reading the copy was checked with;
/// None when the thread is not blocked, moved, or does not unwind completely from SP and PC
/// alone (`unwind` says whether a stack is complete).
///
/// "Did not move" is proved by the thread's run counter (`schedstat`): equal before and after
/// the copy (and after the unwinding, which may read beyond the copy from live memory) means it
/// was not put on a CPU in between. Both of its numbers matter: a thread that was on a CPU at
/// the first reading and went to sleep since shows the same count of times put on a CPU, but
/// more time on one. When `seen.runs` was read before the
/// `syscall` line, that proves the line still holds; otherwise the line is read again after
/// the copy and must be the same call at the same SP and PC. Where the kernel keeps no run
/// counter, the context-switch counts of `status` are compared with `seen`'s instead. When
/// the thread ran since (or during the copy) but is back in the same call at the same SP and
/// PC, the copy and the check are made once more from a fresh `syscall` line.
#[allow(clippy::too_many_arguments)]
pub fn copy_blocked(
    reader: &mut TaskReader,
    tid: Tid,
    seen: Seen,
    counter: Option<&RunCounter>,
    (first, full): (usize, usize),
    buf: &mut Vec<u8>,
    read: &mut dyn FnMut(u64, &mut [u8]) -> usize,
    unwind: &mut UnwindCopy,
    function_start: &mut dyn FnMut(u64) -> Option<u64>,
    in_jit: &mut dyn FnMut(u64) -> bool,
) -> Option<(RawFrames, Option<(u64, u64)>)> {
    if buf.len() < full {
        buf.resize(full, 0);
    }
    let mut fresh: Option<SyscallState> = None;
    let mut windows = [first.min(full), full].into_iter().peekable();
    let mut retried = false;
    while let Some(&window) = windows.peek() {
        let syscall = fresh.as_ref().unwrap_or(seen.syscall);
        let SyscallState::InSyscall { sp, pc, .. } = *syscall else {
            return None;
        };
        // The first check may use the kernel view's readings; later ones read their own.
        let first_check = fresh.is_none() && window == first.min(full);
        let before = match (first_check, seen.runs) {
            (true, Some(b)) => Some(b),
            _ => counter.and_then(|c| c.read()),
        };
        let n = read(sp.0, &mut buf[..window]);
        let line_holds = (first_check && seen.runs.is_some() && counter.is_some())
            || matches!(reader.syscall(tid), Ok(now) if same_call(&now, syscall));
        let unmoved = match (counter, before) {
            (Some(c), Some(b)) => c.read() == Some(b),
            _ => {
                let switches = if fresh.is_some() {
                    None
                } else {
                    Some(seen.switches)
                };
                matches!((reader.status(tid), switches), (Ok(st), Some(sw))
                    if (st.voluntary_ctxt_switches, st.nonvoluntary_ctxt_switches) == sw)
            }
        };
        let mut taken = None;
        if line_holds && unmoved && n >= 16 {
            let regs = Regs {
                pc: pc.0,
                sp: sp.0,
                fp: 0,
                lr: 0,
            };
            let (raw, complete) = unwind(&regs, &buf[..n]);
            // A frame that needs rbp stopped it: look for rbp's frame record in the copy.
            let (raw, complete) = match complete {
                true => (raw, true),
                false => {
                    let ask = crate::stack::fprecover::Ask {
                        read: &mut *read,
                        unwind: &mut *unwind,
                        function_start: &mut *function_start,
                        in_jit: &mut *in_jit,
                    };
                    crate::stack::fprecover::recover(&regs, &buf[..n], raw, ask)
                }
            };
            // The unwinder may have read beyond the copy, from live memory: the thread must
            // still not have run once it is done (without a run counter, the switch counts
            // were compared after the copy only).
            let still = match (counter, before) {
                (Some(c), Some(b)) => c.read() == Some(b),
                _ => true,
            };
            if still {
                taken = Some((raw, complete));
            }
        }
        let Some((raw, complete)) = taken else {
            if retried || n < 16 || counter.is_none() {
                return None;
            }
            // It ran since the kernel view (or during the copy): once more, from a fresh line,
            // if it is back in the same call at the same place (else the kernel view would
            // describe another moment than the stack).
            retried = true;
            let now = reader.syscall(tid).ok()?;
            if !same_place(&now, seen.syscall, 3) {
                return None;
            }
            fresh = Some(now);
            continue;
        };
        if complete {
            return Some((raw, before));
        }
        if n < window || window == full {
            return None; // the copy reached the end of the stack, or was the whole window
        }
        windows.next();
    }
    None
}

/// The same system call at the same place (the fd's description, filled in by the kernel
/// view, is not compared): what a thread still blocked in one call shows every time.
fn same_call(a: &SyscallState, b: &SyscallState) -> bool {
    same_place(a, b, 6)
}

/// System call `nr` at the same SP and PC with the same first `args` arguments. Another call
/// made from the same place shows the same first arguments when it is the same request (fd,
/// buffer, count; futex address and operation), but not the same values in the argument
/// registers the call does not use (the kernel shows six whatever the call takes).
fn same_place(a: &SyscallState, b: &SyscallState, args: usize) -> bool {
    match (a, b) {
        (
            SyscallState::InSyscall {
                nr,
                args: a1,
                sp,
                pc,
                ..
            },
            SyscallState::InSyscall {
                nr: nr2,
                args: a2,
                sp: sp2,
                pc: pc2,
                ..
            },
        ) => nr == nr2 && sp == sp2 && pc == pc2 && a1.iter().take(args).eq(a2.iter().take(args)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Addr;

    /// The same system call at the same place, whatever the kernel view added about its fd;
    /// another place or another call is not the same.
    #[test]
    fn same_call_ignores_the_fd_description() {
        let call = |sp: u64, fd: Option<crate::model::FdRef>| SyscallState::InSyscall {
            nr: 0,
            name: Some("read".into()),
            args: vec![Addr(3), Addr(0x1000), Addr(1)],
            fd,
            sp: Addr(sp),
            pc: Addr(0x7000),
        };
        let described = Some(crate::model::FdRef {
            fd: 3,
            target: Some("pipe:[1]".into()),
        });
        assert!(same_call(&call(0x10, described), &call(0x10, None)));
        assert!(!same_call(&call(0x10, None), &call(0x18, None)));
        assert!(!same_call(&SyscallState::Running, &SyscallState::Running));
    }
}
