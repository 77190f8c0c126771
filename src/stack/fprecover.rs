//! Recovering the frame pointer of a thread blocked in a system call, from its copied stack.
//!
//! A blocked thread is captured without a signal (the dumper) and without a ptrace stop
//! (`stackdump inspect`) by unwinding a copy of its stack from the SP and PC of its
//! `/proc/TID/syscall` line ([`crate::stack::blocked::copy_blocked`]). That line has no rbp, so the
//! unwind stops at the first frame whose CFA is `rbp + 16`: code built with
//! `-fno-omit-frame-pointer` (Fedora and Ubuntu build whole archives so), and any function
//! with `alloca`, a VLA or over-aligned locals, even at `-O2`. Without this module such a thread
//! gets the capture signal (EINTR for `poll`, `epoll_wait`, `nanosleep`, `sigtimedwait` in the
//! host) or a ptrace stop.
//!
//! # The method (x86_64)
//!
//! The innermost frames usually do not need rbp: glibc's system call wrappers are leaves
//! whose CFA is `rsp + N`, and they do not touch rbp. So rbp, at the system call, still holds
//! what the first rbp-based frame (F) set it to: `CFA(F) - 16`, the address of F's frame
//! record (saved rbp of F's caller, then F's return address). That record is in the copy,
//! above SP. So:
//!
//! 0. Only a stack whose unwind without rbp stopped in a function with CFI is tried (a frame
//!    whose CFA is `rbp + 16` stops it: framehop ends a frame-pointer step at rbp = 0).
//! 1. **Candidates**: every 8-aligned address A of the copy whose next word `[A + 8]` is a
//!    return address: an address covered by a module's CFI, or in JIT code (executable memory
//!    outside every module: a JVM's interpreter and compiled code, which keep frame records
//!    that the unwinder follows there), and preceded by a `call` instruction (`e8 rel32`, or `ff /2` in
//!    each of its encodings: register, memory, SIB, disp8/disp32, RIP-relative), read from the
//!    module's code in the process's memory. Most stack words fail this at once (small
//!    integers, heap and stack pointers); at most [`MAX_CANDIDATES`] are tried.
//! 2. **Each candidate is a whole unwind**: the same unwinder as always (framehop, DWARF CFI of
//!    every module) from `(pc, sp, rbp = A)`. It is kept only when
//!    - the frames the unwind found without rbp are its first frames, unchanged (rbp changes
//!      nothing before the first frame that needs it);
//!    - from F on, every return address is preceded by a `call` instruction (a signal frame's
//!      trampoline excepted), and every call whose target can be read from the code (`e8
//!      rel32`, `call *slot(%rip)`, either through a PLT entry `jmp *slot(%rip)`) goes to the
//!      start of the function the frame below it is in, as the CFI says: the start of the FDE
//!      covering that frame's address (the search table of the module's `.eh_frame_hdr`,
//!      [`crate::stack::unwind::Modules::function_start`]), or to a wrapper whose first 48
//!      bytes hold a `jmp` to that start (a tail call: PostgreSQL's `LockAcquire` jumps to
//!      `LockAcquireExtended`) or a RIP-relative `lea` of it (a function pointer handed on and
//!      tail-called: HotSpot's `JavaCalls::call` → `call_helper`); return addresses in JIT code
//!      are not checked (HotSpot's interpreter returns to entry points it pushed itself);
//!    - it reaches a thread entry point (the completeness judge of the caller: the same one as
//!      for every stack copied without a signal, [`crate::stack::unwind::THREAD_ROOTS`]); reaching the
//!      frame limit does not count here.
//! 3. **One answer or none**: the candidates kept must agree. Higher frame records of the same
//!    stack are candidates too (the records of F's callers, any slot where a function that
//!    does not keep a frame pointer pushed rbp right below its return address), and their
//!    unwinds can be complete: they take F's CFA to be that higher record's, so they skip the
//!    frames in between and go on correctly from there. The call check of step 2 drops most
//!    of them (the skipped caller's call site names the skipped function, not F), but not when
//!    that call is indirect (`start_thread` calls the thread's function through a pointer). So
//!    the answer is the unwind with the most frames (the lowest candidate among equal ones),
//!    taken only when every other complete unwind is a subsequence of it (the same frames in
//!    the same order, some left out). Two complete unwinds where neither contains the other:
//!    refused, the thread falls back as before (capture signal, ptrace stop).
//!
//! The proof that the thread did not run (its `schedstat` run counter unchanged from before the
//! copy until after the unwinding) covers all of this: [`crate::stack::blocked::copy_blocked`] reads
//! the counter again after `recover` returns.
//!
//! # Why a wrong stack is not reported as complete
//!
//! A stack recovered here is one the ordinary unwinder produced, from the thread's real PC and
//! SP, with one register guessed; each frame follows from the one below by that frame's CFI
//! (framehop walks frame records only where a module has no CFI for an address). A wrong rbp
//! changes the stack only from F on, and the true rbp is always among the candidates when F's
//! record is in the copy. A wrong candidate is one of two kinds:
//!
//! - **Too high** (a record of a caller of F, or a pushed rbp above F): its unwind is the true
//!   one with frames left out, never with frames added. Where the call check does not drop it,
//!   the subsequence rule does not pick it: the true unwind is longer and contains it.
//! - **Too low** (a slot inside F's own frame, between F's SP and its record): stale data of
//!   an earlier, deeper call made at the same depth. Seen in `tests/targets/c/alloca_frames.c`: the
//!   padding of an over-aligned frame still held the frame of `block_trigger` and of the
//!   `pthread_sigmask` call it made, and that stale unwind (F returning into `block_trigger`,
//!   whose CFA is exactly F's) is complete and contains the true one. The call check drops it:
//!   the call before that stale return address goes to `pthread_sigmask` (through its PLT
//!   entry), not to F. It is reported only if every call on its stale part is indirect
//!   (`call *%rax`, `call *8(%rbx)`: their targets are not in the code) and its stale
//!   frames join the true ones exactly, so that it contains the true unwind: a stale frame
//!   called through a pointer, left at the depth of F's frame.
//!
//! When F's record is not in the copy (an rbp-based frame larger than the window), no complete
//! unwind is found and the thread falls back. Also not recovered (they fall back): a system call
//! wrapper that uses rbp for something else before the call, a frame in a function reached by a
//! tail call made past the first 48 bytes of the called function, or in a `.cold` part (its FDE
//! start is not the call's target).
//!
//! # aarch64 (not built)
//!
//! The same design applies to aarch64 with x29 (frame pointer) and x30 (link register): the
//! `syscall` line gives SP and PC only, and glibc's wrappers are leaves that keep the return
//! address in x30 and never store it. There the candidates would be pairs `[A] = x29` (saved
//! frame pointer, pointing higher) and `[A + 8] = x30` (an address preceded by `bl` or `blr`:
//! the 4 bytes before it), since AAPCS64 frame records are exactly such pairs; the leaf's
//! missing caller would be recovered as the return address of the candidate's record, which
//! needs one more guessed register (x30 of the leaf = the caller's PC). That second guess is
//! not built: on aarch64 such threads still get the capture signal.

use crate::stack::unwind::{RawFrames, Regs, UnwindCopy, UnwindEnd};
use std::collections::HashMap;

/// At most this many candidate frame records are unwound for one stack (a stack with more is
/// left to the fallback).
pub const MAX_CANDIDATES: usize = 256;

/// How far into a called function a tail call to the frame above is looked for (see
/// `Code::tail_calls`).
const TAIL_CALL_WINDOW: usize = 48;

/// What the recovery asks its caller.
pub struct Ask<'a, 'u> {
    /// Read the process's memory (code bytes and GOT slots); returns the bytes read.
    pub read: &'a mut dyn FnMut(u64, &mut [u8]) -> usize,
    /// The caller's unwinder and completeness judge.
    pub unwind: &'a mut UnwindCopy<'u>,
    /// The start of the function (FDE) containing an address
    /// ([`crate::stack::unwind::Modules::function_start`]).
    pub function_start: &'a mut dyn FnMut(u64) -> Option<u64>,
    /// True for an address in executable memory outside every module (JIT code, an
    /// interpreter's generated code: [`crate::stack::jit::JitCode::region_of`]).
    pub in_jit: &'a mut dyn FnMut(u64) -> bool,
}

/// When `first` (the unwind of `stack` from `regs` without rbp) is not complete, try the frame
/// records of the copy as rbp (see the module doc). Returns the recovered stack and `true`,
/// or `first` and `false`.
pub fn recover(regs: &Regs, stack: &[u8], first: RawFrames, ask: Ask) -> (RawFrames, bool) {
    let Ask {
        read,
        unwind,
        function_start,
        in_jit,
    } = ask;
    // Only a stack that stopped in a function with CFI (an rbp-based CFA without rbp) is tried.
    let stopped_in_cfi = first
        .addrs
        .last()
        .is_some_and(|&(a, r)| function_start(lookup(a, r)).is_some());
    if !cfg!(target_arch = "x86_64") || regs.fp != 0 || !stopped_in_cfi {
        return (first, false);
    }
    let word = |off: usize| -> Option<u64> {
        stack
            .get(off..off.checked_add(8)?)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let stack_end = regs.sp.saturating_add(stack.len() as u64);
    let mut code = Code::new(read);
    // 1. Candidates: slots A with a return address at A + 8.
    let mut candidates = Vec::new();
    let mut off = (8 - (regs.sp % 8) as usize) % 8;
    while off + 16 <= stack.len() {
        if let Some(ra) = word(off + 8) {
            let in_copy = (regs.sp..stack_end).contains(&ra);
            // In a module's CFI, or in JIT code (no system call), before its code is read.
            let mut in_code =
                || plausible_code(ra) && (function_start(ra - 1).is_some() || in_jit(ra - 1));
            if !in_copy && in_code() && code.after_call(ra) {
                candidates.push(regs.sp + off as u64);
                if candidates.len() > MAX_CANDIDATES {
                    return (first, false);
                }
            }
        }
        off += 8;
    }
    // 2. Each candidate is a whole unwind, kept when complete and consistent.
    let n0 = first.addrs.len();
    let mut kept: Vec<(u64, RawFrames)> = Vec::new();
    for a in candidates {
        let (raw, complete) = unwind(&Regs { fp: a, ..*regs }, stack);
        if !complete
            || raw.end == UnwindEnd::FrameLimit
            || raw.addrs.len() <= n0
            || raw.addrs[..n0] != first.addrs[..]
            || !code.calls_reach_callees(&raw.addrs, n0, function_start, in_jit)
        {
            continue;
        }
        if !kept.iter().any(|(_, k)| k.addrs == raw.addrs) {
            kept.push((a, raw));
        }
    }
    // 3. One answer: the longest (the lowest slot among equal ones), containing every other.
    let Some(best) = (0..kept.len()).max_by(|&i, &j| {
        (kept[i].1.addrs.len(), std::cmp::Reverse(kept[i].0))
            .cmp(&(kept[j].1.addrs.len(), std::cmp::Reverse(kept[j].0)))
    }) else {
        return (first, false);
    };
    let all_inside = kept
        .iter()
        .all(|(_, k)| is_subsequence(&k.addrs, &kept[best].1.addrs));
    if !all_inside {
        return (first, false);
    }
    (kept.swap_remove(best).1, true)
}

/// The address to look a frame up at: the PC itself, or the call instruction before a return
/// address.
fn lookup(addr: u64, is_return: bool) -> u64 {
    if is_return {
        addr.wrapping_sub(1)
    } else {
        addr
    }
}

/// True when `small` is `big` with some elements left out (same order).
fn is_subsequence<T: PartialEq>(small: &[T], big: &[T]) -> bool {
    let mut it = big.iter();
    small.iter().all(|s| it.any(|b| b == s))
}

/// Code of the process around return addresses, read once per address.
struct Code<'r> {
    read: &'r mut dyn FnMut(u64, &mut [u8]) -> usize,
    /// The 8 bytes before each return address looked at (None: not readable).
    before: HashMap<u64, Option<[u8; 8]>>,
}

/// User-space addresses of x86_64 (47 bits), above the first pages.
fn plausible_code(addr: u64) -> bool {
    (0x10000..(1u64 << 47)).contains(&addr)
}

impl<'r> Code<'r> {
    fn new(read: &'r mut dyn FnMut(u64, &mut [u8]) -> usize) -> Self {
        Code {
            read,
            before: HashMap::new(),
        }
    }

    fn read_u64(&mut self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        ((self.read)(addr, &mut b) == 8).then(|| u64::from_ne_bytes(b))
    }

    fn bytes_before(&mut self, ra: u64) -> Option<[u8; 8]> {
        if !plausible_code(ra) {
            return None;
        }
        if let Some(&b) = self.before.get(&ra) {
            return b;
        }
        let mut code = [0u8; 8];
        let got = ((self.read)(ra - 8, &mut code) == 8).then_some(code);
        self.before.insert(ra, got);
        got
    }

    /// True when the bytes before `ra` (in the process's memory) end with a call instruction.
    fn after_call(&mut self, ra: u64) -> bool {
        self.bytes_before(ra).is_some_and(|c| ends_with_call(&c))
    }

    /// Where the call before `ra` goes, when that can be known: `e8 rel32`, or `ff 15`
    /// (`call *slot(%rip)`: the slot's value). None for other indirect calls, and when the bytes
    /// could be read as more than one kind of call.
    fn call_target(&mut self, ra: u64) -> Option<u64> {
        let c = self.bytes_before(ra)?;
        let direct = c[3] == 0xe8;
        let rip_slot = c[2] == 0xff && c[3] == 0x15;
        let rel = i32::from_ne_bytes([c[4], c[5], c[6], c[7]]) as i64;
        let other_indirect = (2..=7).any(|len| len != 6 && ends_with_call_of_len(&c, len));
        match (direct, rip_slot, other_indirect) {
            (true, false, false) => Some(ra.wrapping_add_signed(rel)),
            (false, true, false) => self.read_u64(ra.wrapping_add_signed(rel)),
            _ => None,
        }
    }

    /// Where a PLT entry at `at` jumps (`[endbr64] [bnd] jmp *slot(%rip)`: the slot's value).
    fn plt_target(&mut self, at: u64) -> Option<u64> {
        let mut b = [0u8; 16];
        if (self.read)(at, &mut b) != 16 {
            return None;
        }
        let mut i = if b[..4] == [0xf3, 0x0f, 0x1e, 0xfa] {
            4
        } else {
            0
        };
        if b[i] == 0xf2 {
            i += 1;
        }
        if b[i] != 0xff || b[i + 1] != 0x25 {
            return None;
        }
        let rel = i32::from_ne_bytes(b[i + 2..i + 6].try_into().ok()?) as i64;
        let next = at.wrapping_add(i as u64 + 6);
        self.read_u64(next.wrapping_add_signed(rel))
    }

    /// True when the function at `f` is a wrapper that tail-calls `dest`: within its first
    /// [`TAIL_CALL_WINDOW`] bytes, a `jmp rel32` (`e9`) or `jmp rel8` (`eb`) that lands exactly
    /// on `dest`, or a RIP-relative `lea` of exactly `dest` (a function pointer passed on to be
    /// called in its place) (e.g. PostgreSQL's `LockAcquire`, which sets one more argument and jumps to
    /// `LockAcquireExtended`: the frame above the call to `LockAcquire` is in
    /// `LockAcquireExtended`). Bytes are scanned, not decoded: a byte that is only part of
    /// another instruction would also have to encode a jump to exactly `dest`.
    fn tail_calls(&mut self, f: u64, dest: u64) -> bool {
        let mut b = [0u8; TAIL_CALL_WINDOW];
        if !plausible_code(f) || (self.read)(f, &mut b) != TAIL_CALL_WINDOW {
            return false;
        }
        (0..TAIL_CALL_WINDOW).any(|i| match b[i] {
            0xe9 if i + 5 <= TAIL_CALL_WINDOW => {
                let rel = i32::from_ne_bytes([b[i + 1], b[i + 2], b[i + 3], b[i + 4]]) as i64;
                f.wrapping_add(i as u64 + 5).wrapping_add_signed(rel) == dest
            }
            0xeb if i + 2 <= TAIL_CALL_WINDOW => {
                f.wrapping_add(i as u64 + 2)
                    .wrapping_add_signed(i64::from(b[i + 1] as i8))
                    == dest
            }
            // `lea dest(%rip), %reg`: the wrapper passes `dest` on as a function pointer, to
            // be called by a function it jumps to (HotSpot's `JavaCalls::call` hands
            // `call_helper` to `os::os_exception_wrapper`, which tail-calls it).
            0x8d if i + 6 <= TAIL_CALL_WINDOW && b[i + 1] & 0xc7 == 0x05 => {
                let disp = i32::from_ne_bytes([b[i + 2], b[i + 3], b[i + 4], b[i + 5]]) as i64;
                f.wrapping_add(i as u64 + 6).wrapping_add_signed(disp) == dest
            }
            _ => false,
        })
    }

    /// True when, from frame `from` on, every return address follows a call (a signal
    /// trampoline excepted: a return address followed by a frame restored from a signal
    /// context; and return addresses in JIT code), and every call whose target can be known goes to the function the frame
    /// below it is in (directly, or through a PLT entry), per the CFI's function starts.
    fn calls_reach_callees(
        &mut self,
        frames: &[(u64, bool)],
        from: usize,
        function_start: &mut dyn FnMut(u64) -> Option<u64>,
        in_jit: &mut dyn FnMut(u64) -> bool,
    ) -> bool {
        for i in from.max(1)..frames.len() {
            let (ra, is_return) = frames[i];
            let before_signal_frame = frames.get(i + 1).is_some_and(|&(_, r)| !r);
            // JIT code keeps frame records but not always calls before its return addresses
            // (HotSpot's interpreter returns to entry points it pushed itself): not checked.
            if !is_return || before_signal_frame || in_jit(ra.wrapping_sub(1)) {
                continue;
            }
            if !self.after_call(ra) {
                return false;
            }
            let (callee, callee_is_return) = frames[i - 1];
            let Some(start) = function_start(lookup(callee, callee_is_return)) else {
                continue; // no CFI for the callee: nothing to compare with
            };
            let Some(target) = self.call_target(ra) else {
                continue; // an indirect call
            };
            if target != start
                && self.plt_target(target) != Some(start)
                && !self.tail_calls(target, start)
            {
                return false;
            }
        }
        true
    }
}

/// True when the 8 bytes `code` (those just before a return address) end with an x86_64
/// `call`: `e8 rel32`, or `ff /2` with any ModRM/SIB/displacement form (a REX prefix before
/// `ff` changes nothing here).
pub fn ends_with_call(code: &[u8; 8]) -> bool {
    code[3] == 0xe8 || (2..=7).any(|len| ends_with_call_of_len(code, len))
}

/// True when `code` ends with an `ff /2` call of `len` bytes (opcode, ModRM, SIB,
/// displacement).
fn ends_with_call_of_len(code: &[u8; 8], len: usize) -> bool {
    let at = 8 - len;
    if code[at] != 0xff {
        return false;
    }
    let modrm = code[at + 1];
    if (modrm >> 3) & 7 != 2 {
        return false;
    }
    let rm = modrm & 7;
    let sib_base = code.get(at + 2).map(|s| s & 7);
    let expected = match modrm >> 6 {
        3 => 2,
        0 if rm == 4 => {
            if sib_base == Some(5) {
                7
            } else {
                3
            }
        }
        0 if rm == 5 => 6,
        0 => 2,
        1 if rm == 4 => 4,
        1 => 3,
        _ if rm == 4 => 7,
        _ => 6,
    };
    expected == len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(bytes: &[u8]) -> [u8; 8] {
        let mut c = [0x90u8; 8];
        c[8 - bytes.len()..].copy_from_slice(bytes);
        c
    }

    #[test]
    fn call_encodings_are_recognised() {
        assert!(ends_with_call(&tail(&[0xe8, 1, 2, 3, 4]))); // call rel32
        assert!(ends_with_call(&tail(&[0xff, 0xd0]))); // call *%rax
        assert!(ends_with_call(&tail(&[0x41, 0xff, 0xd3]))); // call *%r11
        assert!(ends_with_call(&tail(&[0xff, 0x10]))); // call *(%rax)
        assert!(ends_with_call(&tail(&[0xff, 0x50, 0x08]))); // call *8(%rax)
        assert!(ends_with_call(&tail(&[0xff, 0x15, 1, 2, 3, 4]))); // call *x(%rip)
        assert!(ends_with_call(&tail(&[0xff, 0x14, 0x24]))); // call *(%rsp)
        assert!(ends_with_call(&tail(&[0xff, 0x54, 0x24, 0x08]))); // call *8(%rsp)
        assert!(ends_with_call(&tail(&[0xff, 0x94, 0xc3, 1, 2, 3, 4]))); // disp32+SIB
    }

    #[test]
    fn a_wrapper_that_jumps_to_the_callee_is_a_tail_call() {
        // At 0x101000: mov $1,%r8d (41 b8 01 00 00 00); xor %r9d,%r9d (45 31 c9); jmp rel32 to
        // 0x102000; then at 0x101100 a short jmp to 0x101180.
        let mut mem = vec![0x90u8; 0x200];
        mem[..9].copy_from_slice(&[0x41, 0xb8, 1, 0, 0, 0, 0x45, 0x31, 0xc9]);
        let rel = (0x102000i64 - (0x101000 + 9 + 5)) as i32;
        mem[9] = 0xe9;
        mem[10..14].copy_from_slice(&rel.to_ne_bytes());
        mem[0x100] = 0xeb;
        mem[0x101] = 0x7e;
        let mut read = |addr: u64, buf: &mut [u8]| {
            let at = (addr - 0x101000) as usize;
            let n = buf.len().min(mem.len().saturating_sub(at));
            buf[..n].copy_from_slice(&mem[at..at + n]);
            n
        };
        let mut code = Code::new(&mut read);
        assert!(code.tail_calls(0x101000, 0x102000));
        assert!(!code.tail_calls(0x101000, 0x102001));
        assert!(code.tail_calls(0x101100, 0x101180));
        // Past the window, or unreadable: no.
        assert!(!code.tail_calls(0x101180, 0x102000));
    }

    #[test]
    fn a_wrapper_that_passes_the_callee_on_as_a_pointer_is_a_tail_call() {
        // At 0x101000: mov %rdx,%rcx (48 89 d1); lea 0x54d(%rip),%rdi (48 8d 3d 4d 05 00 00):
        // 0x101000 + 10 + 0x54d = 0x101557; jmp elsewhere.
        let mut mem = vec![0x90u8; 0x100];
        mem[..10].copy_from_slice(&[0x48, 0x89, 0xd1, 0x48, 0x8d, 0x3d, 0x4d, 0x05, 0, 0]);
        mem[10] = 0xe9;
        let mut read = |addr: u64, buf: &mut [u8]| {
            let at = (addr - 0x101000) as usize;
            let n = buf.len().min(mem.len().saturating_sub(at));
            buf[..n].copy_from_slice(&mem[at..at + n]);
            n
        };
        let mut code = Code::new(&mut read);
        assert!(code.tail_calls(0x101000, 0x101557));
        assert!(!code.tail_calls(0x101000, 0x101558));
    }

    #[test]
    fn other_bytes_are_not_calls() {
        assert!(!ends_with_call(&[0x90; 8]));
        assert!(!ends_with_call(&tail(&[0xff, 0xe0]))); // jmp *%rax (/4)
        assert!(!ends_with_call(&tail(&[0xff, 0x50]))); // ModRM needs a disp8 it lacks
        assert!(!ends_with_call(&[0; 8]));
    }

    #[inline(never)]
    extern "C" fn a_function(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(3).rotate_left(7)
    }

    #[test]
    fn function_starts_come_from_the_cfi() {
        use crate::stack::unwind::{ModuleSource, Modules};
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let mut modules = Modules::new(ModuleSource::this_process());
        modules.sync(&maps);
        let f = a_function as *const () as u64;
        assert_eq!(a_function(1), 3u64.rotate_left(7));
        assert_eq!(modules.function_start(f), Some(f));
        assert_eq!(modules.function_start(f + 3), Some(f));
    }

    #[test]
    fn subsequences() {
        assert!(is_subsequence(&[1, 3, 5], &[1, 2, 3, 4, 5]));
        assert!(is_subsequence::<u8>(&[], &[1]));
        assert!(!is_subsequence(&[1, 6], &[1, 2, 3]));
        assert!(!is_subsequence(&[3, 1], &[1, 2, 3]));
    }
}
