//! The library's published state: what `libstackdump.so` tells the CLI about itself, in a small
//! shared mapping of its own (a memfd named [`MAPPING_NAME`], seen in `/proc/PID/maps` as
//! `/memfd:stackdump-state (deleted)`).
//!
//! Why: the CLI used to read a target's settings from `/proc/PID/environ`, which is the memory
//! the process's environment strings were in at exec. A host may write over it (PostgreSQL does
//! when it sets its process title), and a process forked without exec keeps its parent's. The
//! dump thread writes this page instead: its pid and tid, the trigger signal, who handles that
//! signal now (the library, or an application that installed its own handler), the resolved
//! dump directory and the formats. One page per process: a forked child's new dump thread
//! writes a page of its own (the parent's shared page is unmapped in the child).
//!
//! Layout of the page ([`SIZE`] bytes): [`MAGIC`] (8 bytes), a sequence number (u64, native
//! endian, odd while the writer is changing the page), the text's length (u32), then at
//! [`TEXT_AT`] the text: `key=value` lines. Paths are hex-encoded (any byte may appear in a
//! path). A reader copies the page twice and keeps it only when both copies have the same even
//! sequence number.
//!
//! For the CLI, everything in the page is hostile input: [`LibraryState::parse`] caps and
//! validates every field, and the CLI escapes what it prints.

/// The memfd's name (`memfd_create`); `/proc/PID/maps` shows `/memfd:<name> (deleted)`.
pub const MAPPING_NAME: &str = "stackdump-state";
/// The path column of the mapping in `/proc/PID/maps`.
pub const MAPS_PATH: &str = "/memfd:stackdump-state (deleted)";
/// First bytes of the page.
pub const MAGIC: &[u8; 8] = b"SDSTATE1";
/// Size of the page.
pub const SIZE: usize = 4096;
/// Offset of the sequence number (u64).
pub const SEQ_AT: usize = 8;
/// Offset of the text's length (u32).
pub const LEN_AT: usize = 16;
/// Offset of the text.
pub const TEXT_AT: usize = 32;
/// Longest path accepted in the page (PATH_MAX).
const MAX_PATH: usize = 4096;

/// Who runs when the trigger signal reaches one of the host's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerHandler {
    /// The library's handler: `kill -s SIG` takes a dump.
    Library,
    /// A handler the application installed over the library's: `kill -s SIG` runs it instead.
    Application,
    /// The default action (the application reset it).
    Default,
    /// Ignored (the application set SIG_IGN).
    Ignored,
}

impl TriggerHandler {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerHandler::Library => "library",
            TriggerHandler::Application => "application",
            TriggerHandler::Default => "default",
            TriggerHandler::Ignored => "ignored",
        }
    }

    fn parse(s: &str) -> Option<TriggerHandler> {
        Some(match s {
            "library" => TriggerHandler::Library,
            "application" => TriggerHandler::Application,
            "default" => TriggerHandler::Default,
            "ignored" => TriggerHandler::Ignored,
            _ => return None,
        })
    }
}

/// What the library publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryState {
    /// The process's pid as it sees itself.
    pub pid: i32,
    /// The dump thread's tid as the process sees it.
    pub tid: i32,
    /// The trigger signal's name (`USR1`, `RTMIN+5`) and number in the process.
    pub trigger: String,
    pub trigger_number: i32,
    /// Who handles the trigger when a host thread takes it, as last checked.
    pub handler: TriggerHandler,
    /// The file the application's handler lives in, when it is the application's.
    pub handler_module: Option<String>,
    /// When the handler was last checked (Unix milliseconds).
    pub checked_ms: i64,
    /// The dump directory (absolute).
    pub dir: String,
    /// The formats each dump produces (`text,json`).
    pub formats: String,
    /// The parent's pid when this dump thread was started in a forked child.
    pub forked_from: Option<i32>,
    /// True when the child was forked while the parent's dump thread was reading symbols: its
    /// dumps name functions from the module files only.
    pub symbols_limited: bool,
    /// `STACKDUMP_WATCH` in milliseconds, when the watchdog is on.
    pub watch_ms: Option<u64>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 || s.len() > 2 * MAX_PATH {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

impl LibraryState {
    /// The text of the page (after [`TEXT_AT`]); `None` when it does not fit.
    pub fn to_text(&self) -> Option<String> {
        let mut t = format!(
            "pid={}\ntid={}\ntrigger={}\ntrigger_number={}\nhandler={}\nchecked_ms={}\ndir_hex={}\nformats={}\n",
            self.pid,
            self.tid,
            self.trigger,
            self.trigger_number,
            self.handler.as_str(),
            self.checked_ms,
            hex(&self.dir),
            self.formats
        );
        if let Some(m) = &self.handler_module {
            t.push_str(&format!("handler_module_hex={}\n", hex(m)));
        }
        if let Some(p) = self.forked_from {
            t.push_str(&format!("forked_from={p}\n"));
        }
        if self.symbols_limited {
            t.push_str("symbols=files\n");
        }
        if let Some(ms) = self.watch_ms {
            t.push_str(&format!("watch_ms={ms}\n"));
        }
        (t.len() <= SIZE - TEXT_AT).then_some(t)
    }

    /// Read a page copied from a target. `Err` says what is wrong with it (for the CLI's
    /// messages; it is not escaped). Unknown keys are ignored (a newer library).
    pub fn parse(page: &[u8]) -> Result<LibraryState, String> {
        if page.len() < TEXT_AT || &page[..8] != MAGIC {
            return Err("not a stackdump state page".into());
        }
        let seq = u64::from_ne_bytes(page[SEQ_AT..SEQ_AT + 8].try_into().unwrap());
        if seq % 2 == 1 {
            return Err("the page is being written".into());
        }
        let len = u32::from_ne_bytes(page[LEN_AT..LEN_AT + 4].try_into().unwrap()) as usize;
        let text = page
            .get(TEXT_AT..TEXT_AT.saturating_add(len))
            .filter(|_| len <= SIZE - TEXT_AT)
            .ok_or("the text's length is out of bounds")?;
        let text = std::str::from_utf8(text).map_err(|_| "the text is not UTF-8")?;
        let (mut pid, mut tid, mut trigger, mut number, mut handler, mut dir) =
            (None, None, None, None, None, None);
        let mut st = LibraryState {
            pid: 0,
            tid: 0,
            trigger: String::new(),
            trigger_number: 0,
            handler: TriggerHandler::Library,
            handler_module: None,
            checked_ms: 0,
            dir: String::new(),
            formats: "text,json".into(),
            forked_from: None,
            symbols_limited: false,
            watch_ms: None,
        };
        let positive = |v: &str| v.parse::<i32>().ok().filter(|n| *n > 0);
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                return Err("a line without '='".into());
            };
            match k {
                "pid" => pid = positive(v),
                "tid" => tid = positive(v),
                "trigger" => {
                    trigger = Some(v).filter(|v| {
                        !v.is_empty()
                            && v.len() <= 16
                            && v.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
                    })
                }
                "trigger_number" => number = v.parse::<i32>().ok().filter(|n| (1..=64).contains(n)),
                "handler" => handler = TriggerHandler::parse(v),
                "checked_ms" => st.checked_ms = v.parse().unwrap_or(0),
                "dir_hex" => dir = unhex(v).filter(|d| d.starts_with('/') && !d.contains('\0')),
                "formats" if v.split(',').all(|f| f == "text" || f == "json") => {
                    st.formats = v.to_string();
                }
                "handler_module_hex" => st.handler_module = unhex(v).filter(|m| !m.contains('\0')),
                "forked_from" => st.forked_from = positive(v),
                "symbols" => st.symbols_limited = v == "files",
                "watch_ms" => st.watch_ms = v.parse().ok().filter(|ms| *ms > 0),
                _ => {}
            }
        }
        st.pid = pid.ok_or("no valid pid")?;
        st.tid = tid.ok_or("no valid tid")?;
        st.trigger = trigger.ok_or("no valid trigger name")?.to_string();
        st.trigger_number = number.ok_or("no valid trigger number")?;
        st.handler = handler.ok_or("no valid handler")?;
        st.dir = dir.ok_or("no valid dump directory")?;
        Ok(st)
    }

    /// The whole page for `text` with sequence number `seq` (tests and the writer's layout).
    pub fn page(text: &str, seq: u64) -> Vec<u8> {
        let mut page = vec![0u8; SIZE];
        page[..8].copy_from_slice(MAGIC);
        page[SEQ_AT..SEQ_AT + 8].copy_from_slice(&seq.to_ne_bytes());
        let n = text.len().min(SIZE - TEXT_AT);
        page[LEN_AT..LEN_AT + 4].copy_from_slice(&(n as u32).to_ne_bytes());
        page[TEXT_AT..TEXT_AT + n].copy_from_slice(&text.as_bytes()[..n]);
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LibraryState {
        LibraryState {
            pid: 42,
            tid: 43,
            trigger: "USR1".into(),
            trigger_number: 10,
            handler: TriggerHandler::Application,
            handler_module: Some("/usr/bin/node".into()),
            checked_ms: 1_700_000_000_000,
            dir: "/tmp/dumps\nwith newline".into(),
            formats: "text,json".into(),
            forked_from: Some(7),
            symbols_limited: true,
            watch_ms: Some(60_000),
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let page = LibraryState::page(&s.to_text().unwrap(), 4);
        assert_eq!(LibraryState::parse(&page).unwrap(), s);
    }

    #[test]
    fn hostile_pages_are_refused() {
        let text = sample().to_text().unwrap();
        assert!(
            LibraryState::parse(&LibraryState::page(&text, 3)).is_err(),
            "odd seq"
        );
        let mut bad = LibraryState::page(&text, 2);
        bad[0] = b'X';
        assert!(LibraryState::parse(&bad).is_err(), "magic");
        let mut long = LibraryState::page(&text, 2);
        long[LEN_AT..LEN_AT + 4].copy_from_slice(&(SIZE as u32).to_ne_bytes());
        assert!(LibraryState::parse(&long).is_err(), "length");
        for (from, to) in [
            ("pid=42", "pid=-1"),
            ("trigger=USR1", "trigger=USR1\x1b[2J"),
            ("trigger_number=10", "trigger_number=99"),
            ("handler=application", "handler=mine"),
        ] {
            let t = text.replace(from, to);
            assert!(
                LibraryState::parse(&LibraryState::page(&t, 2)).is_err(),
                "{to}"
            );
        }
        // A relative or NUL-carrying directory.
        let t = text.replace(&hex("/tmp/dumps\nwith newline"), &hex("tmp"));
        assert!(LibraryState::parse(&LibraryState::page(&t, 2)).is_err());
        let t = text.replace(&hex("/tmp/dumps\nwith newline"), &hex("/a\0b"));
        assert!(LibraryState::parse(&LibraryState::page(&t, 2)).is_err());
        // Unknown keys are fine.
        let t = format!("{text}future=1\n");
        assert!(LibraryState::parse(&LibraryState::page(&t, 2)).is_ok());
        assert!(LibraryState::parse(&[0u8; 10]).is_err());
    }
}
