//! Signal names and numbers. Signals are chosen **by name**: numbers differ between
//! architectures (USR1 is 10 on x86/arm, 30 on alpha/sparc, 16 on mips/parisc), and `kill -30`
//! on x86 sends PWR, which terminates a process that does not catch it.
//!
//! This module parses names for the host (what the dumper and the CLI send and catch), from
//! the libc constants of this build. [`arch`] has the tables of every Linux architecture (from
//! `data/signals.tsv`), for explaining names and numbers; a test checks that the host's row
//! there agrees with the constants here.

use std::fmt;

pub mod arch;

/// A signal of this machine, resolved from a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSignal {
    /// Canonical name without the `SIG` prefix: `USR1`, `RTMIN+3`.
    pub name: String,
    /// Its number on this machine, for the libc of this process.
    pub number: i32,
}

impl fmt::Display for HostSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Why a signal name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error("signal {0:?} is a number; give a name such as USR1 (numbers differ between architectures: USR1 is 10 on x86, 30 on alpha/sparc, 16 on mips)")]
    Number(String),
    #[error("unknown signal name {0:?}; try USR1, USR2 or RTMIN+N")]
    Unknown(String),
    #[error("signal {name} cannot be used here: {why}")]
    Unusable { name: String, why: &'static str },
}

/// Standard signals of the host, by canonical name (without `SIG`).
const HOST_STANDARD: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    #[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// `SIGRTMIN` as the C library of this process shows it (34 with glibc, 35 with musl).
pub fn host_rtmin() -> i32 {
    libc::SIGRTMIN()
}

/// `SIGRTMAX` as the C library of this process shows it.
pub fn host_rtmax() -> i32 {
    libc::SIGRTMAX()
}

/// Why the signal named `name` (canonical, as in [`HostSignal::name`]) cannot be a trigger, or
/// `None` when it can: KILL and STOP cannot be caught at all (sending one kills or stops the
/// process, no handler runs); the fault signals are never taken over (a handler there would
/// hide real crashes, and their default action dumps core); job-control signals stop or
/// continue the process, or are sent by the kernel itself (CHLD).
pub fn trigger_unusable(name: &str) -> Option<&'static str> {
    match name {
        "KILL" => Some("it cannot be caught: the kernel kills the process, no handler runs"),
        "STOP" => Some("it cannot be caught: the kernel stops the process, no handler runs"),
        "SEGV" | "BUS" | "ILL" | "FPE" | "TRAP" | "SYS" | "ABRT" => Some(
            "it reports a crash: the library never takes it over (a handler would hide real crashes), and its default action kills the process with a core dump",
        ),
        "CHLD" | "CONT" | "TSTP" | "TTIN" | "TTOU" => Some(
            "it is a job-control signal (the kernel and shells send it to stop, continue or notify): the library never takes it over",
        ),
        _ => None,
    }
}

/// [`parse_host`] for a trigger signal: also refuses the signals of [`trigger_unusable`].
pub fn parse_trigger(input: &str) -> Result<HostSignal, SignalError> {
    let sig = parse_host(input)?;
    match trigger_unusable(&sig.name) {
        Some(why) => Err(SignalError::Unusable {
            name: sig.name,
            why,
        }),
        None => Ok(sig),
    }
}

/// Parse a signal name for this machine: `USR1`, `SIGUSR1`, `usr1`, `RTMIN`, `RTMIN+3`,
/// `SIGRTMAX-2`. Numbers are refused.
pub fn parse_host(input: &str) -> Result<HostSignal, SignalError> {
    let trimmed = input.trim();
    if !trimmed.is_empty()
        && trimmed
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return Err(SignalError::Number(input.to_string()));
    }
    let upper = trimmed.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(name, number)) = HOST_STANDARD.iter().find(|(n, _)| *n == bare) {
        let name = match name {
            "IOT" => "ABRT",
            "POLL" => "IO",
            "CLD" => "CHLD",
            other => other,
        };
        return Ok(HostSignal {
            name: name.to_string(),
            number,
        });
    }
    let (rtmin, rtmax) = (host_rtmin(), host_rtmax());
    let rt = |base: &str, rest: &str| -> Result<HostSignal, SignalError> {
        let offset: i32 = if rest.is_empty() {
            0
        } else {
            let (sign, digits) = rest.split_at(1);
            let n: i32 = digits
                .parse()
                .map_err(|_| SignalError::Unknown(input.to_string()))?;
            match (base, sign) {
                ("RTMIN", "+") => n,
                ("RTMAX", "-") => -n,
                _ => return Err(SignalError::Unknown(input.to_string())),
            }
        };
        let number = if base == "RTMIN" {
            rtmin + offset
        } else {
            rtmax + offset
        };
        if number < rtmin || number > rtmax {
            return Err(SignalError::Unusable {
                name: input.to_string(),
                why: "outside the real-time range of this machine",
            });
        }
        Ok(HostSignal {
            name: rt_name(number, rtmin, rtmax),
            number,
        })
    };
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        return rt("RTMIN", rest);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        return rt("RTMAX", rest);
    }
    Err(SignalError::Unknown(input.to_string()))
}

fn rt_name(number: i32, rtmin: i32, rtmax: i32) -> String {
    let from_min = number - rtmin;
    let from_max = rtmax - number;
    match (from_min, from_max) {
        (0, _) => "RTMIN".to_string(),
        (_, 0) => "RTMAX".to_string(),
        (m, x) if m <= x => format!("RTMIN+{m}"),
        (_, x) => format!("RTMAX-{x}"),
    }
}

/// The canonical name of a host signal number (`10` → `USR1` on x86_64), for display only.
pub fn host_name(number: i32) -> Option<String> {
    if let Some((name, _)) = HOST_STANDARD
        .iter()
        .find(|(n, num)| *num == number && !matches!(*n, "IOT" | "POLL" | "CLD"))
    {
        return Some((*name).to_string());
    }
    let (rtmin, rtmax) = (host_rtmin(), host_rtmax());
    (rtmin..=rtmax)
        .contains(&number)
        .then(|| rt_name(number, rtmin, rtmax))
}

/// The kernel layout of a `siginfo_t` for `SI_QUEUE` on 64-bit Linux (the `_rt` union member).
#[repr(C)]
struct QueueInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    pid: i32,
    uid: u32,
    value: u64,
    _rest: [u64; 12],
}

const _: () = assert!(std::mem::size_of::<QueueInfo>() == 128);

/// Send `signo` to thread `tid` of process `tgid` with an `SI_QUEUE` value
/// (`rt_tgsigqueueinfo`): what `sigqueue(3)` does, aimed at one thread. `sender_pid` is the pid
/// the receiver should see (ours in its pid namespace, or 0). Used by the dumper (on its own
/// process) and by the CLI (on its target's dump thread).
pub fn tg_sigqueue(
    tgid: i32,
    tid: i32,
    signo: i32,
    sender_pid: i32,
    value: u64,
) -> std::io::Result<()> {
    let info = QueueInfo {
        signo,
        errno: 0,
        code: libc::SI_QUEUE,
        _pad: 0,
        pid: sender_pid,
        // SAFETY: getuid cannot fail and takes no pointer.
        uid: unsafe { libc::getuid() },
        value,
        _rest: [0; 12],
    };
    // SAFETY: the kernel copies 128 bytes from `info`, which is exactly that size and lives
    // across the call; SI_QUEUE is a code user space may send (to itself or another process).
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            tgid,
            tid,
            signo,
            &info as *const QueueInfo,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_every_spelling() {
        for s in ["USR1", "SIGUSR1", "usr1", "SigUsr1", " USR1 "] {
            assert_eq!(parse_host(s).unwrap().number, libc::SIGUSR1, "{s}");
        }
        assert_eq!(parse_host("SIGUSR2").unwrap().number, libc::SIGUSR2);
        assert_eq!(parse_host("RTMIN+3").unwrap().number, libc::SIGRTMIN() + 3);
        assert_eq!(parse_host("RTMIN+3").unwrap().name, "RTMIN+3");
        assert_eq!(
            parse_host("SIGRTMAX-2").unwrap().number,
            libc::SIGRTMAX() - 2
        );
        assert_eq!(parse_host("rtmin").unwrap().name, "RTMIN");
        assert_eq!(parse_host("IOT").unwrap().name, "ABRT");
    }

    #[test]
    fn numbers_and_unknown_names_are_refused() {
        assert!(matches!(parse_host("10"), Err(SignalError::Number(_))));
        assert!(matches!(parse_host("30"), Err(SignalError::Number(_))));
        assert!(matches!(parse_host("-10"), Err(SignalError::Number(_))));
        assert!(matches!(parse_host("USR3"), Err(SignalError::Unknown(_))));
        assert!(matches!(parse_host(""), Err(SignalError::Unknown(_))));
        assert!(matches!(
            parse_host("RTMIN-1"),
            Err(SignalError::Unknown(_))
        ));
        assert!(matches!(
            parse_host("RTMIN+99"),
            Err(SignalError::Unusable { .. })
        ));
    }

    #[test]
    fn triggers_that_cannot_work_are_refused() {
        for name in [
            "KILL", "sigkill", "STOP", "SEGV", "CHLD", "CONT", "TSTP", "ABRT",
        ] {
            assert!(
                matches!(parse_trigger(name), Err(SignalError::Unusable { .. })),
                "{name}"
            );
        }
        for name in ["USR1", "USR2", "RTMIN+3", "HUP", "PWR"] {
            assert!(parse_trigger(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn numbers_back_to_names() {
        assert_eq!(host_name(libc::SIGUSR1).as_deref(), Some("USR1"));
        assert_eq!(host_name(libc::SIGABRT).as_deref(), Some("ABRT"));
        assert_eq!(host_name(libc::SIGRTMIN() + 1).as_deref(), Some("RTMIN+1"));
        assert_eq!(host_name(libc::SIGRTMAX()).as_deref(), Some("RTMAX"));
        assert_eq!(host_name(libc::SIGCHLD).as_deref(), Some("CHLD"));
    }

    /// The host's row of the per-arch tables (from the TSV) agrees with the libc constants of
    /// this build, in both directions.
    #[test]
    fn host_table_matches_libc_constants() {
        let host = arch::host().expect("the host architecture is in data/signals.tsv");
        // Every libc constant is in the table with the same number.
        for &(name, number) in HOST_STANDARD {
            let def = host
                .lookup(name)
                .unwrap_or_else(|| panic!("SIG{name} is not in the {} table", host.name));
            assert_eq!(def.number, number, "SIG{name} on {}", host.name);
        }
        // A few constants spelled out, so a broken HOST_STANDARD cannot hide a broken table.
        for (name, number) in [
            ("HUP", libc::SIGHUP),
            ("KILL", libc::SIGKILL),
            ("USR1", libc::SIGUSR1),
            ("USR2", libc::SIGUSR2),
            ("PWR", libc::SIGPWR),
            ("SYS", libc::SIGSYS),
            ("CHLD", libc::SIGCHLD),
            ("STOP", libc::SIGSTOP),
            ("CONT", libc::SIGCONT),
            ("BUS", libc::SIGBUS),
            ("URG", libc::SIGURG),
            ("WINCH", libc::SIGWINCH),
        ] {
            assert_eq!(host.lookup(name).map(|d| d.number), Some(number), "{name}");
        }
        // Every name of the table is accepted on the host with the same number, except the one
        // that glibc does not define.
        for def in &host.signals {
            let not_in_libc = def
                .aliases
                .iter()
                .any(|p| p.alias == def.name && p.tag == Some("not-in-glibc"));
            if not_in_libc {
                assert!(parse_host(def.name).is_err(), "{}", def.name);
                continue;
            }
            let parsed = parse_host(def.name).unwrap_or_else(|e| panic!("{}: {e}", def.name));
            assert_eq!(parsed.number, def.number, "{}", def.name);
            assert_eq!(parsed.name, def.canonical(), "{}", def.name);
            assert_eq!(host_name(def.number).as_deref(), Some(def.canonical()));
        }
        // The real-time range as this libc shows it.
        let (lo, hi, _) = host.rt.for_libc(arch::Libc::host());
        assert_eq!((lo, hi), (host_rtmin(), host_rtmax()));
        assert!(host.max_signal() >= host_rtmax());
    }

    /// A signal sent with `tg_sigqueue` reaches exactly that thread, with the value and the
    /// sender pid given.
    #[test]
    fn tg_sigqueue_reaches_one_thread_with_its_value() {
        let signo = libc::SIGRTMIN() + 5;
        let (tx, rx) = std::sync::mpsc::channel::<i32>();
        // SAFETY: sigset_t out-parameters; pthread_sigmask on the calling thread only. The signal
        // is blocked before the thread starts (inherited), so it can only be taken by sigwait.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signo);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        let waiter = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            // SAFETY: an all-zero siginfo_t is a valid out-parameter; the timeout bounds the wait.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let timeout = libc::timespec {
                    tv_sec: 30,
                    tv_nsec: 0,
                };
                let got = libc::sigtimedwait(&set, &mut info, &timeout);
                (
                    got,
                    info.si_code,
                    info.si_pid(),
                    info.si_value().sival_ptr as u64,
                )
            }
        });
        let tid = rx.recv().unwrap();
        let pid = std::process::id() as i32;
        tg_sigqueue(pid, tid, signo, 4321, 42).unwrap();
        let (got, code, sender, value) = waiter.join().unwrap();
        assert_eq!(
            (got, code, sender, value),
            (signo, libc::SI_QUEUE, 4321, 42)
        );
        // No such thread in this process: an error, nothing sent.
        assert!(tg_sigqueue(pid, i32::MAX, signo, pid, 1).is_err());
        // SAFETY: restore this thread's mask.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}
