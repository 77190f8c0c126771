//! UTC timestamps from a `CLOCK_REALTIME` reading, computed by hand so that the dump path never
//! calls `localtime`/`gmtime` (they take locks and may read `/etc/localtime`).

/// A broken-down UTC time with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl UtcTime {
    /// From milliseconds since the Unix epoch.
    pub fn from_unix_millis(ms: i64) -> UtcTime {
        let secs = ms.div_euclid(1000);
        let millis = ms.rem_euclid(1000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        UtcTime {
            year,
            month,
            day,
            hour: (sod / 3600) as u32,
            minute: (sod % 3600 / 60) as u32,
            second: (sod % 60) as u32,
            millis,
        }
    }

    /// `YYYYmmddTHHMMSS.mmmZ`, the form used in side-file names.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }

    /// RFC 3339 with milliseconds: `YYYY-mm-ddTHH:MM:SS.mmmZ`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let t = UtcTime::from_unix_millis(0);
        assert_eq!(t.compact(), "19700101T000000.000Z");
        // 2026-11-25T16:47:37.123Z
        let t = UtcTime::from_unix_millis(1_795_625_257_123);
        assert_eq!(t.rfc3339(), "2026-11-25T16:47:37.123Z");
        // leap day
        let t = UtcTime::from_unix_millis(951_782_400_000);
        assert_eq!(t.rfc3339(), "2000-02-29T00:00:00.000Z");
        let t = UtcTime::from_unix_millis(-1);
        assert_eq!(t.rfc3339(), "1969-12-31T23:59:59.999Z");
    }
}
