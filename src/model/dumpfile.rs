//! Names of side files: `stackdump-<pid>-<UTC YYYYmmddTHHMMSS.mmm>Z[-r<request>].{txt,json}`.
//!
//! `<pid>` is the pid as the process sees itself (inside its own pid namespace); `-r<request>` is
//! there when the trigger came with a sigqueue value (the CLI's request id). Files being written
//! start with [`TEMP_PREFIX`] and are renamed into place when complete, so a name that parses
//! here is always a complete file. The timestamp has a fixed width, so names of one process sort
//! by time.

use super::timefmt::UtcTime;
use std::fmt;

/// Files being written start with this; they are never complete dumps.
pub const TEMP_PREFIX: &str = ".stackdump-";

/// Which rendering a side file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DumpFormat {
    /// `.txt`, the text form.
    Text,
    /// `.json`, the `stackdump/1` JSON form.
    Json,
}

impl DumpFormat {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            DumpFormat::Text => "txt",
            DumpFormat::Json => "json",
        }
    }

    /// The name used in `STACKDUMP_FORMAT` and `--format`.
    pub fn name(self) -> &'static str {
        match self {
            DumpFormat::Text => "text",
            DumpFormat::Json => "json",
        }
    }

    /// Parse a `STACKDUMP_FORMAT`-style list (`text,json`). Unknown words are returned apart so
    /// the caller can say so; an empty list means the default (both).
    pub fn parse_list(list: &str) -> (Vec<DumpFormat>, Vec<String>) {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word.to_ascii_lowercase().as_str() {
                "text" | "txt" => known.push(DumpFormat::Text),
                "json" => known.push(DumpFormat::Json),
                _ => unknown.push(word.to_string()),
            }
        }
        known.sort();
        known.dedup();
        (known, unknown)
    }
}

/// A parsed side-file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DumpFileName {
    /// The pid as the process sees itself.
    pub pid: i32,
    /// `YYYYmmddTHHMMSS.mmm` (UTC, without the `Z`).
    pub time: String,
    /// The request id of the trigger, when it came with one.
    pub request: Option<u64>,
    pub format: DumpFormat,
}

impl DumpFileName {
    /// The name of the side file of process `pid` (as it sees itself) for a dump taken at
    /// `millis` (milliseconds since the Unix epoch), serving `request`, in `format`.
    pub fn new(pid: i32, millis: i64, request: Option<u64>, format: DumpFormat) -> DumpFileName {
        let compact = UtcTime::from_unix_millis(millis).compact();
        DumpFileName {
            pid,
            time: compact.trim_end_matches('Z').to_string(),
            request,
            format,
        }
    }

    /// The temporary name the file is written under before it is renamed to its name:
    /// `.<name>.tmp` (it starts with [`TEMP_PREFIX`], so it never parses as a dump).
    pub fn temp_name(&self) -> String {
        format!(".{self}.tmp")
    }

    /// Parse a file name (not a path). `None` for anything else, including temporary files.
    pub fn parse(name: &str) -> Option<DumpFileName> {
        let rest = name.strip_prefix("stackdump-")?;
        let (stem, format) = if let Some(s) = rest.strip_suffix(".json") {
            (s, DumpFormat::Json)
        } else if let Some(s) = rest.strip_suffix(".txt") {
            (s, DumpFormat::Text)
        } else {
            return None;
        };
        let (pid, rest) = stem.split_once('-')?;
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let pid: i32 = pid.parse().ok()?;
        let (time, rest) = rest.split_once('Z')?;
        let t = time.as_bytes();
        let time_ok = t.len() == 19
            && t.iter().enumerate().all(|(i, b)| match i {
                8 => *b == b'T',
                15 => *b == b'.',
                _ => b.is_ascii_digit(),
            });
        if !time_ok {
            return None;
        }
        let request = match rest {
            "" => None,
            r => {
                let digits = r.strip_prefix("-r")?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(digits.parse().ok()?)
            }
        };
        Some(DumpFileName {
            pid,
            time: time.to_string(),
            request,
            format,
        })
    }

    /// The time as RFC 3339 (`2026-11-25T16:47:37.123Z`).
    pub fn rfc3339(&self) -> String {
        let t = &self.time;
        format!(
            "{}-{}-{}T{}:{}:{}Z",
            &t[0..4],
            &t[4..6],
            &t[6..8],
            &t[9..11],
            &t[11..13],
            &t[13..19]
        )
    }
}

impl fmt::Display for DumpFileName {
    /// The file name this parses from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stackdump-{}-{}Z", self.pid, self.time)?;
        if let Some(r) = self.request {
            write!(f, "-r{r}")?;
        }
        write!(f, ".{}", self.format.extension())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_names_the_file_that_parses_back() {
        // 2026-11-25T16:47:37.123Z
        let millis = 1_795_625_257_123;
        let n = DumpFileName::new(1234, millis, Some(5), DumpFormat::Json);
        assert_eq!(n.to_string(), "stackdump-1234-20261125T164737.123Z-r5.json");
        assert_eq!(DumpFileName::parse(&n.to_string()), Some(n.clone()));
        assert_eq!(n.rfc3339(), "2026-11-25T16:47:37.123Z");
        assert_eq!(
            n.temp_name(),
            ".stackdump-1234-20261125T164737.123Z-r5.json.tmp"
        );
        assert!(n.temp_name().starts_with(TEMP_PREFIX));
        assert_eq!(DumpFileName::parse(&n.temp_name()), None);
        let plain = DumpFileName::new(7, millis, None, DumpFormat::Text);
        assert_eq!(plain.to_string(), "stackdump-7-20261125T164737.123Z.txt");
    }

    #[test]
    fn names_round_trip() {
        for name in [
            "stackdump-1234-20261125T164737.123Z.txt",
            "stackdump-1-20261125T164737.123Z-r42.json",
            "stackdump-99999-19700101T000000.000Z-r2147483647.txt",
        ] {
            let parsed = DumpFileName::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(parsed.to_string(), name);
        }
        let p = DumpFileName::parse("stackdump-7-20261125T164737.123Z-r42.json").unwrap();
        assert_eq!(p.pid, 7);
        assert_eq!(p.request, Some(42));
        assert_eq!(p.format, DumpFormat::Json);
        assert_eq!(p.rfc3339(), "2026-11-25T16:47:37.123Z");
    }

    #[test]
    fn other_names_are_refused() {
        for name in [
            ".stackdump-1234-20261125T164737.123Z.txt",
            "stackdump-1234-20261125T164737.123Z.txt.tmp",
            "stackdump-1234-20261125T164737.123Z",
            "stackdump--20261125T164737.123Z.txt",
            "stackdump-12a-20261125T164737.123Z.txt",
            "stackdump-1234-20261125T1647.123Z.txt",
            "stackdump-1234-20261125X164737.123Z.txt",
            "stackdump-1234-20261125T164737.123Z-r.txt",
            "stackdump-1234-20261125T164737.123Z-x1.txt",
            "stackdump-1234-20261125T164737.123Z-r-1.txt",
            "stackdump-1234-20261125T164737.123Z.csv",
        ] {
            assert_eq!(DumpFileName::parse(name), None, "{name}");
        }
    }

    #[test]
    fn format_lists() {
        use DumpFormat::*;
        assert_eq!(
            DumpFormat::parse_list("text,json"),
            (vec![Text, Json], vec![])
        );
        assert_eq!(DumpFormat::parse_list(" json "), (vec![Json], vec![]));
        assert_eq!(
            DumpFormat::parse_list("json,folded"),
            (vec![Json], vec!["folded".to_string()])
        );
        assert_eq!(DumpFormat::parse_list(""), (vec![], vec![]));
    }
}
