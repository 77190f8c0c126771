//! Showing target-controlled text on a terminal without letting it drive the terminal.
//!
//! Everything a dump says about its process came from that process: thread names, argv, the
//! exe path, file names behind fds, symbol and file names from its debug info, Python frame
//! names, even the text of a side file its library wrote. `stackdump` is often run as root
//! against other users' processes, so all of it is hostile input: `ESC ] 52 ; c ; … BEL` writes
//! the clipboard, `ESC [ 1 A ESC [ 2 K` erases the line above (a finding can be hidden or
//! forged), a newline in a thread name starts a line that looks like ours.
//!
//! One escaper, used by every text output (`render`, `folded`, `compare`, the CLI's `list`,
//! its messages and its copy of a text side file):
//!
//! | shown | for |
//! | --- | --- |
//! | `\e` | ESC (0x1b) |
//! | `\n`, `\t`, `\r` | line feed, tab, carriage return (in a field; see [`text`] for whole texts) |
//! | `\\` | a backslash (in a field), so `\e` in a name is never mistaken for an escape |
//! | `\x07` | any other C0 control (0x00-0x1f), DEL (0x7f), and C1 (U+0080-U+009F, by code point) |
//! | `\xNN` | a byte that is not UTF-8 (in [`bytes`] and [`text`]) |
//! | `\u{202e}` | the Unicode bidi controls (U+200E/F, U+202A-U+202E, U+2066-U+2069) and line/paragraph separators (U+2028/9), which reorder or break what follows |
//!
//! Everything else, ASCII and other Unicode alike, is shown as it is. [`field`] is for one
//! value (a name, a path); [`text`] is for a whole text that is ours line by line but may
//! carry anything (a rendered dump, an error message): it keeps `\n` and `\t` and does not
//! double backslashes, so escaping an already escaped text changes nothing. JSON is not escaped
//! here: `serde_json` writes C0 controls as `\u00XX`; [`json`] does the same for DEL and C1,
//! which it writes raw (the value stays exactly the same).

use std::borrow::Cow;
use std::fmt::{self, Write};

/// True for the characters every form escapes (besides the field-only `\\`, `\n`, `\t`).
fn is_control(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}') || is_invisible_layout(c)
}

/// Unicode characters that reorder or break the text after them.
fn is_invisible_layout(c: char) -> bool {
    matches!(
        c,
        '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether `s` has anything to escape, byte by byte (a whole rendered dump is scanned once per
/// dump: this is several times faster than going through its `char`s). The same set as
/// [`is_control`] (UTF-8 continuation bytes are never below 0x80 nor equal 0xC2 or 0xE2, so
/// looking at every byte is exact): C0, DEL, C1 (`C2 80`-`C2 9F`), and U+200E/F,
/// U+2028-U+202E (`E2 80 8E`/`8F`, `E2 80 A8`-`AE`), U+2066-U+2069 (`E2 81 A6`-`A9`);
/// `\n` and `\t` only unless `keep_lines`, the backslash only with `backslash`.
fn needs_escape(s: &str, keep_lines: bool, backslash: bool) -> bool {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let hit = match c {
            b'\n' | b'\t' => !keep_lines,
            0..=0x1f | 0x7f => true,
            b'\\' => backslash,
            0xc2 => matches!(b.get(i + 1), Some(0x80..=0x9f)),
            0xe2 => matches!(
                (b.get(i + 1), b.get(i + 2)),
                (Some(0x80), Some(0x8e | 0x8f | 0xa8..=0xae)) | (Some(0x81), Some(0xa6..=0xa9))
            ),
            _ => false,
        };
        if hit {
            return true;
        }
    }
    false
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\x1b' => out.push_str("\\e"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\\' => out.push_str("\\\\"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// One target-controlled value (a name, a path, a line of its text), escaped: no control
/// character, no line break, backslashes doubled. Borrowed when there is nothing to escape.
pub fn field(s: &str) -> Cow<'_, str> {
    if !needs_escape(s, false, true) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(escaped(s, |c| c == '\\' || is_control(c)))
}

/// [`field`] of bytes that may not be UTF-8: invalid bytes are shown as `\xNN`.
pub fn bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&field(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A whole text for a terminal (a rendered dump, a side file, a message): every control
/// character but `\n` and `\t` escaped, bytes that are not UTF-8 shown as `\xNN`, backslashes
/// left alone (the fields in it were escaped with [`field`] already, or it is not ours and
/// only must not reach the terminal raw). Borrowed when there is nothing to escape.
pub fn text(s: &str) -> Cow<'_, str> {
    if !needs_escape(s, true, false) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(escaped(s, |c| c != '\n' && c != '\t' && is_control(c)))
}

/// `s` with every character that `needs` escaped.
fn escaped(s: &str, needs: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if needs(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// A value already written in a quoting of its own (a Python repr, whose `\\` and `\\n` are
/// Python's escapes): every control character escaped, line breaks and tabs too, backslashes
/// left alone (doubling them would change the repr). Borrowed when there is nothing to escape.
pub fn quoted(s: &str) -> Cow<'_, str> {
    if !needs_escape(s, false, false) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(escaped(s, is_control))
}

/// [`text`] of bytes that may not be UTF-8 (a side file written by the target).
pub fn text_bytes(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return text(s);
    }
    let mut out = String::with_capacity(b.len() + 16);
    for chunk in b.utf8_chunks() {
        out.push_str(&text(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    Cow::Owned(out)
}

/// Serialized JSON made safe for a terminal without changing its value: DEL, C1 and the
/// characters of `is_invisible_layout`, which `serde_json` writes raw, become `\u00XX`
/// escapes (in valid JSON they can only be inside strings, where the escape means the same
/// character). C0 controls are escaped by `serde_json` already; a raw one (only whitespace
/// outside strings can be: `\r`) is escaped too.
pub fn json(s: &str) -> Cow<'_, str> {
    let needs = |c: char| is_control(c) && c != '\n' && c != '\t';
    if !needs_escape(s, true, false) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c == '\r' {
            // Outside a string (the only place valid JSON has it raw) it is whitespace.
            out.push(' ');
        } else if needs(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `format!("{}", Esc(name))`: [`field`] for format strings.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&field(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_show_every_control_character() {
        assert_eq!(field("worker-1"), "worker-1");
        assert!(matches!(field("plain ünïcode ✓"), Cow::Borrowed(_)));
        assert_eq!(field("\x1b]52;c;ZXZpbA==\x07"), "\\e]52;c;ZXZpbA==\\x07");
        assert_eq!(field("\x1b[1A\x1b[2K"), "\\e[1A\\e[2K");
        assert_eq!(field("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(field("back\\slash \\e"), "back\\\\slash \\\\e");
        assert_eq!(field("\0\x01\x1f\x7f"), "\\x00\\x01\\x1f\\x7f");
        assert_eq!(field("\u{9b}31m \u{85}"), "\\x9b31m \\x85");
        assert_eq!(field("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(field("\u{a0}é"), "\u{a0}é");
        assert_eq!(format!("[{}]", Esc("x\x1by")), "[x\\ey]");
        assert_eq!(
            quoted("'a\\nb' \x1b[2J\n\u{202e}"),
            "'a\\nb' \\e[2J\\n\\u{202e}"
        );
        assert!(matches!(quoted("b'\\x00'"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_byte_scan_finds_exactly_the_characters_escaped() {
        for cp in (0..0x3000u32).chain([0xfeff, 0x1f600]) {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let s = format!("a{c}b");
            let field_needs = c == '\\' || is_control(c);
            assert_eq!(needs_escape(&s, false, true), field_needs, "U+{cp:04X}");
            let text_needs = c != '\n' && c != '\t' && is_control(c);
            assert_eq!(needs_escape(&s, true, false), text_needs, "U+{cp:04X}");
        }
    }

    #[test]
    fn bytes_show_invalid_utf8_as_hex() {
        assert_eq!(bytes(b"ok\xff\xfe\x1b"), "ok\\xff\\xfe\\e");
        assert_eq!(bytes("é".as_bytes()), "é");
        assert_eq!(bytes(b"\xc3"), "\\xc3");
    }

    #[test]
    fn texts_keep_their_lines_and_are_idempotent() {
        let t = "line 1\n\tline 2 \x1b[2K\x07 back\\slash\r\n";
        let once = text(t).into_owned();
        assert_eq!(once, "line 1\n\tline 2 \\e[2K\\x07 back\\slash\\r\n");
        assert_eq!(text(&once), once);
        assert!(matches!(text("a\nb\\e\n"), Cow::Borrowed(_)));
        assert_eq!(text_bytes(b"a\xff\n\x1b"), "a\\xff\n\\e");
        // A rendered field survives the text pass unchanged.
        let f = field("x\x1b\\y\n").into_owned();
        assert_eq!(text(&f), f);
    }

    #[test]
    fn json_keeps_its_value() {
        let v = serde_json::json!({"name": "\x1b]52;c;x\x07\x7f\u{9b}\u{202e}", "n": 1});
        let s = serde_json::to_string(&v).unwrap();
        // serde_json escapes C0 itself, not DEL or C1.
        assert!(!s.contains('\x1b') && !s.contains('\x07'), "{s}");
        assert!(s.contains('\x7f') && s.contains('\u{9b}'), "{s}");
        let safe = json(&s).into_owned();
        assert!(!safe.chars().any(is_control), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v);
        assert_eq!(json("{\r\n\"a\": 1}"), "{ \n\"a\": 1}");
    }
}
