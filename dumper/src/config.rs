//! The library's configuration, read once from the environment by the constructor.
//!
//! Any invalid value disables the library entirely (no handler, no thread): a preload that
//! guesses could take over a signal the host needs. See the README for every variable.

use stackdump_core::kernel::signals::{self, HostSignal, SignalError};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the dumper needs to know, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The signal that asks for a dump (`STACKDUMP_SIGNAL`, default USR1).
    pub trigger: HostSignal,
    /// The signal sent to each thread to copy its stack (`STACKDUMP_CAPTURE_SIGNAL`, default
    /// RTMAX-3; never the trigger).
    pub capture: HostSignal,
    /// Where dumps go (`STACKDUMP_DIR`, default /tmp).
    pub dir: PathBuf,
    /// Which files each dump produces (`STACKDUMP_FORMAT`, default `text,json`).
    pub text: bool,
    pub json: bool,
    /// One deadline for the whole stack capture (`STACKDUMP_DEADLINE_MS`, default 1000).
    pub deadline: Duration,
    /// Bytes of stack copied per thread (`STACKDUMP_STACK_WINDOW`, default 64K).
    pub window: usize,
    /// Frames kept per thread (`STACKDUMP_MAX_FRAMES`, default 512).
    pub max_frames: usize,
    /// Capture slots: how many threads can be answering at once (`STACKDUMP_SLOTS`, default 64).
    pub slots: usize,
    /// Copy the stacks of threads blocked in a system call without signalling them
    /// (`STACKDUMP_CAPTURE=auto`, the default); `signal` signals every thread.
    pub blocked_without_signal: bool,
    /// The watchdog (`STACKDUMP_WATCH`, off by default): write a dump on its own when a thread
    /// has been stuck this long (see `crate::watch`).
    pub watch: Option<Duration>,
    /// At most one watchdog dump per this long (`STACKDUMP_WATCH_MIN_GAP`, default 10m).
    pub watch_min_gap: Duration,
}

/// Why the library disabled itself.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("STACKDUMP_DISABLE=1")]
    Disabled,
    #[error("STACKDUMP_SIGNAL: {0}")]
    Signal(SignalError),
    #[error("STACKDUMP_CAPTURE_SIGNAL: {0}")]
    CaptureSignal(SignalError),
    #[error("STACKDUMP_CAPTURE_SIGNAL must be a real-time signal other than the trigger, got {0}")]
    CaptureNotRealtime(String),
    #[error("{var}: {why} (got {value:?})")]
    Value {
        var: &'static str,
        value: String,
        why: &'static str,
    },
}

impl Config {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read the configuration through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        if get("STACKDUMP_DISABLE").is_some_and(|v| !v.is_empty() && v != "0") {
            return Err(ConfigError::Disabled);
        }
        let trigger = signals::parse_host(get("STACKDUMP_SIGNAL").as_deref().unwrap_or("USR1"))
            .map_err(ConfigError::Signal)?;
        if let Some(why) = signals::trigger_unusable(&trigger.name) {
            return Err(ConfigError::Signal(SignalError::Unusable {
                name: trigger.name,
                why,
            }));
        }
        let capture = match get("STACKDUMP_CAPTURE_SIGNAL") {
            Some(name) => signals::parse_host(&name).map_err(ConfigError::CaptureSignal)?,
            None => {
                let default = if trigger.name == "RTMAX-3" {
                    "RTMAX-4"
                } else {
                    "RTMAX-3"
                };
                signals::parse_host(default).map_err(ConfigError::CaptureSignal)?
            }
        };
        if capture.number < signals::host_rtmin() || capture.number == trigger.number {
            return Err(ConfigError::CaptureNotRealtime(capture.name));
        }
        let dir = PathBuf::from(
            get("STACKDUMP_DIR")
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "/tmp".into()),
        );
        let format = get("STACKDUMP_FORMAT").unwrap_or_else(|| "text,json".into());
        let (mut text, mut json) = (false, false);
        for f in format.split(',').map(str::trim) {
            match f {
                "text" | "txt" => text = true,
                "json" => json = true,
                _ => {
                    return Err(ConfigError::Value {
                        var: "STACKDUMP_FORMAT",
                        value: format.clone(),
                        why: "a comma-separated list of text and json",
                    })
                }
            }
        }
        let deadline_ms = number(&get, "STACKDUMP_DEADLINE_MS", 1000, 1, 600_000)?;
        let window = number(&get, "STACKDUMP_STACK_WINDOW", 64 * 1024, 4096, 16 << 20)?;
        let max_frames = number(&get, "STACKDUMP_MAX_FRAMES", 512, 8, 100_000)?;
        let slots = number(&get, "STACKDUMP_SLOTS", 64, 1, 4096)?;
        let blocked_without_signal = match get("STACKDUMP_CAPTURE").as_deref() {
            None | Some("auto") => true,
            Some("signal") => false,
            Some(other) => {
                return Err(ConfigError::Value {
                    var: "STACKDUMP_CAPTURE",
                    value: other.to_string(),
                    why: "auto or signal",
                })
            }
        };
        let watch = match get("STACKDUMP_WATCH").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) if v == "0" || v == "off" => None,
            Some(v) => Some(duration(&v, "STACKDUMP_WATCH", Duration::from_millis(100))?),
        };
        let watch_min_gap = match get("STACKDUMP_WATCH_MIN_GAP").filter(|v| !v.is_empty()) {
            None => Duration::from_secs(600),
            // 0, 0s, 0m: no gap (a dump for every new episode).
            Some(v)
                if v.starts_with('0') && v.chars().all(|c| c == '0' || c.is_ascii_alphabetic()) =>
            {
                Duration::ZERO
            }
            Some(v) => duration(&v, "STACKDUMP_WATCH_MIN_GAP", Duration::ZERO)?,
        };
        Ok(Config {
            trigger,
            capture,
            dir,
            text,
            json,
            deadline: Duration::from_millis(deadline_ms as u64),
            window: window.next_multiple_of(4096),
            max_frames,
            slots,
            blocked_without_signal,
            watch,
            watch_min_gap,
        })
    }
}

/// Parse a duration with units (`3s`, `5m`, `1m30s`), at least `min` and at most a day.
fn duration(value: &str, var: &'static str, min: Duration) -> Result<Duration, ConfigError> {
    stackdump_core::model::duration::parse_duration(value)
        .ok()
        .filter(|d| *d >= min && *d <= Duration::from_secs(86_400))
        .ok_or(ConfigError::Value {
            var,
            value: value.to_string(),
            why: if min.is_zero() {
                "a duration with a unit, e.g. 10m, at most 24h"
            } else {
                "a duration with a unit, e.g. 60s or 5m, from 100ms to 24h (0 or off: no watchdog)"
            },
        })
}

/// Parse a number with an optional K/M suffix (powers of 1024), within [min, max].
fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let Some(value) = get(var) else {
        return Ok(default);
    };
    let v = value.trim();
    let (digits, mult) = match v.char_indices().last() {
        Some((i, 'K' | 'k')) => (&v[..i], 1024),
        Some((i, 'M' | 'm')) => (&v[..i], 1024 * 1024),
        _ => (v, 1),
    };
    let n = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| (min..=max).contains(n));
    n.ok_or(ConfigError::Value {
        var,
        value,
        why: "not a number in the allowed range",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.trigger.number, libc::SIGUSR1);
        assert_eq!(c.capture.number, libc::SIGRTMAX() - 3);
        assert_eq!(c.dir, PathBuf::from("/tmp"));
        assert!(c.text && c.json);
        assert_eq!(c.deadline, Duration::from_secs(1));
        assert_eq!(c.window, 65536);
    }

    #[test]
    fn signal_names_only() {
        assert_eq!(
            cfg(&[("STACKDUMP_SIGNAL", "SIGUSR2")])
                .unwrap()
                .trigger
                .number,
            libc::SIGUSR2
        );
        assert_eq!(
            cfg(&[("STACKDUMP_SIGNAL", "RTMIN+3")])
                .unwrap()
                .trigger
                .number,
            libc::SIGRTMIN() + 3
        );
        assert!(matches!(
            cfg(&[("STACKDUMP_SIGNAL", "10")]),
            Err(ConfigError::Signal(SignalError::Number(_)))
        ));
        assert!(matches!(
            cfg(&[("STACKDUMP_SIGNAL", "USR9")]),
            Err(ConfigError::Signal(_))
        ));
        assert!(matches!(
            cfg(&[("STACKDUMP_SIGNAL", "KILL")]),
            Err(ConfigError::Signal(_))
        ));
        assert!(matches!(
            cfg(&[("STACKDUMP_SIGNAL", "SEGV")]),
            Err(ConfigError::Signal(_))
        ));
        // the trigger taking the default capture signal moves the capture signal
        let c = cfg(&[("STACKDUMP_SIGNAL", "RTMAX-3")]).unwrap();
        assert_ne!(c.capture.number, c.trigger.number);
        assert!(matches!(
            cfg(&[("STACKDUMP_CAPTURE_SIGNAL", "USR2")]),
            Err(ConfigError::CaptureNotRealtime(_))
        ));
    }

    #[test]
    fn values() {
        assert!(matches!(
            cfg(&[("STACKDUMP_DISABLE", "1")]),
            Err(ConfigError::Disabled)
        ));
        assert!(cfg(&[("STACKDUMP_DISABLE", "0")]).is_ok());
        let c = cfg(&[
            ("STACKDUMP_FORMAT", "json"),
            ("STACKDUMP_STACK_WINDOW", "128K"),
            ("STACKDUMP_DEADLINE_MS", "250"),
        ])
        .unwrap();
        assert!(c.json && !c.text);
        assert_eq!(c.window, 128 * 1024);
        assert_eq!(c.deadline, Duration::from_millis(250));
        assert!(cfg(&[("STACKDUMP_FORMAT", "xml")]).is_err());
        assert!(cfg(&[]).unwrap().blocked_without_signal);
        assert!(
            !cfg(&[("STACKDUMP_CAPTURE", "signal")])
                .unwrap()
                .blocked_without_signal
        );
        assert!(cfg(&[("STACKDUMP_CAPTURE", "ptrace")]).is_err());
        assert!(cfg(&[("STACKDUMP_DEADLINE_MS", "0")]).is_err());
        assert!(cfg(&[("STACKDUMP_STACK_WINDOW", "lots")]).is_err());
    }

    #[test]
    fn watchdog() {
        let off = cfg(&[]).unwrap();
        assert_eq!(off.watch, None);
        assert_eq!(off.watch_min_gap, Duration::from_secs(600));
        assert_eq!(cfg(&[("STACKDUMP_WATCH", "off")]).unwrap().watch, None);
        assert_eq!(cfg(&[("STACKDUMP_WATCH", "0")]).unwrap().watch, None);
        let on = cfg(&[
            ("STACKDUMP_WATCH", "1m30s"),
            ("STACKDUMP_WATCH_MIN_GAP", "0s"),
        ])
        .unwrap();
        assert_eq!(on.watch, Some(Duration::from_secs(90)));
        assert_eq!(on.watch_min_gap, Duration::ZERO);
        // A bare number has no unit; too short a duration would sample all the time.
        for bad in ["60", "10ms", "2d", "soon"] {
            assert!(cfg(&[("STACKDUMP_WATCH", bad)]).is_err(), "{bad}");
        }
        assert!(cfg(&[("STACKDUMP_WATCH_MIN_GAP", "10")]).is_err());
    }
}
