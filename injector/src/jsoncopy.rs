//! A target's JSON dump, checked and made safe for a terminal in one pass over its bytes.
//!
//! `stackdump dump --format json` prints the file the target's library wrote. That file is
//! hostile input (the CLI may run as root against any user's process): it is printed only when
//! it is one valid JSON document (RFC 8259), and what is printed has no raw control character
//! in it, with the same value:
//!
//! - inside strings, DEL, the C1 controls (U+0080-U+009F) and the Unicode characters that
//!   reorder or break the text after them (U+200E/F, U+2028-U+202E, U+2066-U+2069) become
//!   `\u00XX` / `\uXXXX` escapes, as `stackdump_core::escape::json` does; a raw C0 control there
//!   is not valid JSON and refuses the document;
//! - between tokens, a carriage return becomes a space; with [`Layout::Compact`] all whitespace
//!   between tokens is dropped (one document per line);
//! - bytes that are not UTF-8 (in strings: anywhere else they are not JSON) become U+FFFD, as
//!   `String::from_utf8_lossy` makes them.
//!
//! Nothing is copied when nothing has to change (the library's own dumps): the result borrows
//! the input. Parsing keeps no tree and does not recurse (the open containers are a stack of
//! flags: any depth is accepted, as `serde_json` accepts for `IgnoredAny`), so the pass costs
//! about as much as reading the bytes once.

use std::borrow::Cow;

/// How whitespace between tokens is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// As in the input (a carriage return becomes a space).
    AsIs,
    /// None at all: the document on one line.
    Compact,
}

/// Why a document is refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct Invalid {
    pub at: usize,
    pub what: &'static str,
}

/// `input` checked (one JSON document) and made safe (see the module documentation); borrowed
/// when nothing had to change.
pub fn check_and_escape(input: &[u8], layout: Layout) -> Result<Cow<'_, [u8]>, Invalid> {
    let mut lead = 0;
    let mut input = input;
    if layout == Layout::Compact {
        // Whitespace around the document is simply left out (no copy for a final newline).
        let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        lead = input.iter().take_while(|b| ws(b)).count();
        let trail = input[lead..].iter().rev().take_while(|b| ws(b)).count();
        input = &input[lead..input.len() - trail];
    }
    let mut p = Pass {
        inp: input,
        i: 0,
        out: None,
        copied: 0,
        layout,
    };
    p.document().map_err(|e| Invalid {
        at: e.at + lead,
        ..e
    })?;
    Ok(p.finish())
}

/// Byte classes inside a string: 0 is copied as it is.
const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const BACKSLASH: u8 = 2;
const CONTROL: u8 = 3;
const DEL: u8 = 4;
const NON_ASCII: u8 = 5;

const fn string_classes() -> [u8; 256] {
    let mut t = [PLAIN; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b {
            0x00..=0x1f => CONTROL,
            0x22 => QUOTE,
            0x5c => BACKSLASH,
            0x7f => DEL,
            0x80..=0xff => NON_ASCII,
            _ => PLAIN,
        };
        b += 1;
    }
    t
}

static CLASS: [u8; 256] = string_classes();

/// The bytes of `x` (8 bytes, little-endian) that are not [`PLAIN`] in a string: below 0x20,
/// `"`, `\\`, or 0x7f and above, each flagged by its high bit. A plain byte after a special
/// one may be flagged too (a borrow or a carry moves up from the special byte), never one before
/// it: the lowest flag is the first special byte, exactly.
fn special_bytes(x: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    // 0x7f and above: the high bit is set in x or in x + 1 (a carry comes only from a byte
    // that is 0xff, itself found).
    let high = (x | x.wrapping_add(ONES)) & HIGH;
    below_space | high | zero_in(x ^ (ONES * b'"' as u64)) | zero_in(x ^ (ONES * b'\\' as u64))
}

struct Pass<'a> {
    inp: &'a [u8],
    i: usize,
    /// The output, once something had to change: `inp[..copied]` with the changes.
    out: Option<Vec<u8>>,
    copied: usize,
    layout: Layout,
}

impl<'a> Pass<'a> {
    fn err<T>(&self, what: &'static str) -> Result<T, Invalid> {
        Err(Invalid { at: self.i, what })
    }

    /// Replace `inp[start..end]` by `with` in the output.
    fn edit(&mut self, start: usize, end: usize, with: &[u8]) {
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(self.inp.len() + 64));
        out.extend_from_slice(&self.inp[self.copied..start]);
        out.extend_from_slice(with);
        self.copied = end;
    }

    fn finish(mut self) -> Cow<'a, [u8]> {
        match self.out.take() {
            None => Cow::Borrowed(self.inp),
            Some(mut out) => {
                out.extend_from_slice(&self.inp[self.copied..]);
                Cow::Owned(out)
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.inp.get(self.i).copied()
    }

    /// Whitespace between tokens (usually none: the library writes compact JSON).
    #[inline(always)]
    fn space(&mut self) {
        if matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.some_space();
        }
    }

    fn some_space(&mut self) {
        let start = self.i;
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\n' => {}
                b'\r' if self.layout == Layout::AsIs => self.edit(self.i, self.i + 1, b" "),
                b'\r' => {}
                _ => break,
            }
            self.i += 1;
        }
        if self.layout == Layout::Compact && self.i > start {
            self.edit(start, self.i, b"");
        }
    }

    fn document(&mut self) -> Result<(), Invalid> {
        // The open containers, innermost last: true for an object.
        let mut stack: Vec<bool> = Vec::new();
        self.space();
        'value: loop {
            // A value.
            match self.peek() {
                Some(b'{') | Some(b'[') => {
                    let object = self.peek() == Some(b'{');
                    stack.push(object);
                    self.i += 1;
                    self.space();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        stack.pop();
                    } else if object {
                        self.key()?;
                        continue 'value;
                    } else {
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return self.err("expected a value"),
                None => return self.err("unexpected end (expected a value)"),
            }
            // After a value: the next one in its container, or the container's end.
            loop {
                self.space();
                let Some(&object) = stack.last() else {
                    if self.i != self.inp.len() {
                        return self.err("trailing characters after the document");
                    }
                    return Ok(());
                };
                match (self.peek(), object) {
                    (Some(b','), _) => {
                        self.i += 1;
                        self.space();
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.i += 1;
                        stack.pop();
                    }
                    (None, _) => return self.err("unexpected end (an unclosed container)"),
                    (Some(_), true) => return self.err("expected `,` or `}`"),
                    (Some(_), false) => return self.err("expected `,` or `]`"),
                }
            }
        }
    }

    /// An object's key and its colon, up to its value.
    fn key(&mut self) -> Result<(), Invalid> {
        if self.peek() != Some(b'"') {
            return self.err("expected a string key");
        }
        self.string()?;
        self.space();
        if self.peek() != Some(b':') {
            return self.err("expected `:`");
        }
        self.i += 1;
        self.space();
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), Invalid> {
        if self.inp[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("expected `true`, `false` or `null`")
        }
    }

    fn digits(&mut self) -> Result<(), Invalid> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return self.err("expected a digit");
        }
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<(), Invalid> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            _ => self.digits()?,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    /// A string, from its opening quote to after its closing one.
    fn string(&mut self) -> Result<(), Invalid> {
        let inp = self.inp;
        self.i += 1;
        loop {
            // The common case, ASCII text: eight bytes at a time while none is special, then
            // straight to the first special one (the lowest flag), not byte by byte.
            let mut i = self.i;
            while let Some(chunk) = inp.get(i..i + 8) {
                let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                let special = special_bytes(x);
                if special != 0 {
                    i += (special.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            while let Some(&b) = inp.get(i) {
                if CLASS[usize::from(b)] != PLAIN {
                    break;
                }
                i += 1;
            }
            self.i = i;
            let Some(&b) = inp.get(i) else {
                return self.err("unexpected end (an unterminated string)");
            };
            match CLASS[usize::from(b)] {
                QUOTE => {
                    self.i += 1;
                    return Ok(());
                }
                BACKSLASH => self.escape()?,
                CONTROL => return self.err("a raw control character in a string"),
                DEL => {
                    self.edit(i, i + 1, b"\\u007f");
                    self.i += 1;
                }
                _ => self.non_ascii()?,
            }
        }
    }

    /// A backslash escape in a string (kept as it is: it is ASCII).
    fn escape(&mut self) -> Result<(), Invalid> {
        match self.inp.get(self.i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
            Some(b'u') => {
                let hex = self.inp.get(self.i + 2..self.i + 6);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return self.err("a bad \\u escape");
                }
                self.i += 6;
            }
            Some(_) => return self.err("a bad escape"),
            None => return self.err("unexpected end (an unterminated string)"),
        }
        Ok(())
    }

    /// One character (or one invalid sequence) starting with a byte ≥ 0x80, in a string.
    fn non_ascii(&mut self) -> Result<(), Invalid> {
        let at = self.i;
        let window = &self.inp[at..self.inp.len().min(at + 4)];
        let len = match std::str::from_utf8(window) {
            Ok(_) => None,
            Err(e) if e.valid_up_to() > 0 => None,
            // Not UTF-8: what `from_utf8_lossy` replaces with one U+FFFD. An incomplete
            // sequence can only be cut by the end of the input, so the string is unterminated.
            Err(e) => match e.error_len() {
                Some(n) => Some(n),
                None => {
                    self.i = self.inp.len();
                    return self.err("unexpected end (an unterminated string)");
                }
            },
        };
        if let Some(n) = len {
            self.edit(at, at + n, "\u{fffd}".as_bytes());
            self.i += n;
            return Ok(());
        }
        let n = match window[0] {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        };
        let c = std::str::from_utf8(&window[..n])
            .ok()
            .and_then(|s| s.chars().next())
            .unwrap_or('\u{fffd}');
        if is_escaped(c) {
            let mut esc = [0u8; 6];
            write_u_escape(&mut esc, c as u32);
            self.edit(at, at + n, &esc);
        }
        self.i += n;
        Ok(())
    }
}

/// The characters at or above U+0080 that are escaped in strings: C1 controls and the layout
/// characters of `stackdump_core::escape` (the same set as `escape::json`; a test checks it).
fn is_escaped(c: char) -> bool {
    matches!(
        c,
        '\u{80}'..='\u{9f}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// `\uXXXX` (lower-case hex) for a code point below U+10000.
fn write_u_escape(out: &mut [u8; 6], cp: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out[0] = b'\\';
    out[1] = b'u';
    for k in 0..4 {
        out[2 + k] = HEX[((cp >> (12 - 4 * k)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lowest flag of `special_bytes` is the first byte that is not plain in a string,
    /// whatever follows it: every value at every position, after plain bytes, before bytes
    /// that could carry or borrow into it.
    #[test]
    fn the_lowest_special_flag_is_the_first_special_byte() {
        for pos in 0..8 {
            for v in 0..=255u8 {
                for after in [0x00u8, 0x1f, b'"', b'\\', 0x7f, 0x80, 0xff, b'a'] {
                    let mut chunk = [b'a'; 8];
                    chunk[pos] = v;
                    for b in chunk.iter_mut().skip(pos + 1) {
                        *b = after;
                    }
                    let flags = special_bytes(u64::from_le_bytes(chunk));
                    let first = chunk.iter().position(|b| CLASS[usize::from(*b)] != PLAIN);
                    let found = (flags != 0).then(|| (flags.trailing_zeros() / 8) as usize);
                    assert_eq!(found, first, "{chunk:02x?}");
                }
            }
        }
    }

    fn ok(s: &[u8], layout: Layout) -> Vec<u8> {
        check_and_escape(s, layout)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(s)))
            .into_owned()
    }

    fn refused(s: &[u8]) -> Invalid {
        let e = check_and_escape(s, Layout::AsIs)
            .expect_err(&format!("{:?} is accepted", String::from_utf8_lossy(s)));
        // serde_json agrees that it is not JSON.
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(s).is_err()
                || std::str::from_utf8(s).is_err(),
            "serde_json accepts {:?}",
            String::from_utf8_lossy(s)
        );
        e
    }

    #[test]
    fn valid_json_without_anything_to_escape_is_borrowed_unchanged() {
        for s in [
            &b"{}"[..],
            b"[]",
            b"0",
            b"-0.5e+10",
            b"\"\"",
            b"true",
            b" null \n",
            b"{\"a\":[1,2.5,-3e7,true,false,null,{\"b\":\"c\\\"\\\\\\/\\b\\f\\n\\r\\t\\u001b\\uD83D\\ude00\"}],\"\xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80\":\"\xc2\xa0\"}\n",
            b"{\n  \"pretty\": [\n\t1,\n    2\n  ]\n}\n",
        ] {
            let out = check_and_escape(s, Layout::AsIs).unwrap();
            assert!(matches!(out, Cow::Borrowed(_)), "{s:?}");
            assert_eq!(&*out, s);
        }
        // The library's own dumps are compact already.
        let compact = br#"{"a":{"b":[1,"x y"]}}"#;
        assert!(matches!(
            check_and_escape(compact, Layout::Compact).unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn malformed_documents_are_refused() {
        for s in [
            &b""[..],
            b"   ",
            b"{",
            b"}",
            b"[1,]",
            b"[,1]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{1:2}",
            b"{\"a\":1 \"b\":2}",
            b"[1 2]",
            b"[1}",
            b"{\"a\":1]",
            b"01",
            b"1.",
            b".5",
            b"1e",
            b"-",
            b"+1",
            b"0x10",
            b"tru",
            b"nul",
            b"True",
            b"NaN",
            b"\"abc",
            b"\"a\\x\"",
            b"\"a\\u12g4\"",
            b"\"a\\u12\"",
            b"\"a\x01b\"",
            b"\"tab\there\"",
            b"\"new\nline\"",
            b"{} {}",
            b"{}x",
            b"[1]]",
            b"\xef\xbb\xbf{}",
            b"'single'",
            b"\"\xff",
            b"[\"\xe2\x80",
            b"\x7f",
            b"{\"a\":1}\x00",
        ] {
            refused(s);
        }
        let deep = |n: usize| {
            let mut v = vec![b'['; n];
            v.extend(vec![b']'; n]);
            v
        };
        // No recursion, so no depth limit (serde_json has none for IgnoredAny either).
        assert!(check_and_escape(&deep(100_000), Layout::AsIs).is_ok());
        let mut unclosed = deep(1000);
        unclosed.pop();
        refused(&unclosed);
        assert_eq!(refused(b"[1,]").at, 3);
    }

    #[test]
    fn control_characters_are_escaped_and_the_value_kept() {
        let doc = "{\"n\":\"a\u{7f}b\u{9b}31m\u{85}\u{202e}x\u{2028}\u{2069}\u{200e}\",\r\n\"ok\":\"\u{a0}é\u{2030}\"}";
        let out = ok(doc.as_bytes(), Layout::AsIs);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "{\"n\":\"a\\u007fb\\u009b31m\\u0085\\u202ex\\u2028\\u2069\\u200e\", \n\"ok\":\"\u{a0}é\u{2030}\"}"
        );
        let a: serde_json::Value = serde_json::from_str(doc).unwrap();
        let b: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(a, b);
        assert!(!out
            .chars()
            .any(|c| c != '\n' && (c.is_control() || ('\u{80}'..='\u{9f}').contains(&c))));
    }

    #[test]
    fn invalid_utf8_in_strings_becomes_the_replacement_character() {
        let out = ok(
            b"[\"a\xffb\xc3\",\"\xe2\x80\xae\xed\xa0\x80\"]",
            Layout::AsIs,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[\"a\u{fffd}b\u{fffd}\",\"\\u202e\u{fffd}\u{fffd}\u{fffd}\"]"
        );
        // As `String::from_utf8_lossy` does.
        let s = b"\"x\xf0\x9f\x98y\xc0\xafz\"";
        assert_eq!(ok(s, Layout::AsIs), String::from_utf8_lossy(s).as_bytes());
    }

    #[test]
    fn compact_drops_the_whitespace_between_tokens_only() {
        let v =
            serde_json::json!({"a b": "x \" y\\ ", "n": [1, 2, {"t": "\n\t {"}], "e": {}, "l": []});
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        let mut crlf = pretty.clone();
        crlf.splice(1..1, b"\r\n  ".iter().copied());
        for input in [&pretty, &crlf] {
            assert_eq!(ok(input, Layout::Compact), serde_json::to_vec(&v).unwrap());
        }
        assert_eq!(ok(b" \r\n[ 1 , 2 ]\r\n", Layout::Compact), b"[1,2]");
        assert_eq!(ok(b" \r\n[ 1 , 2 ]\r\n", Layout::AsIs), b"  \n[ 1 , 2 ] \n");
    }

    /// The same characters as `stackdump_core::escape::json`, which the rest of the CLI's JSON
    /// goes through.
    #[test]
    fn escapes_what_escape_json_escapes() {
        for cp in (0x20..0x3000u32).chain([0xfeff, 0xfffd, 0x1f600, 0x10ffff]) {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            if c == '"' || c == '\\' {
                continue;
            }
            let doc = format!("{{\"k\":\"a{c}b\"}}");
            let ours = ok(doc.as_bytes(), Layout::AsIs);
            let theirs = stackdump_core::escape::json(&doc);
            assert_eq!(String::from_utf8(ours).unwrap(), theirs, "U+{cp:04X}");
        }
    }

    /// Mutated documents (bytes replaced, inserted, removed): accepted exactly when serde_json
    /// accepts them, and what is printed is valid JSON with no raw control character.
    #[test]
    fn agrees_with_serde_json_on_mutated_documents() {
        let base = concat!(
            r#"{"format":"stackdump/1","pid":42,"n":-1.5e3,"t":[true,false,null],"#,
            r#""s":"a\"b\\c\u001bd\u00e9","e":{},"l":[[],[1,{"k":"v"}]],"u":""#,
            "\u{e9}\u{202e}\"}"
        )
        .as_bytes();
        let alphabet = b"{}[]:,\"\\ \t\r\n0123456789-+.eEtrufalsn\x00\x1b\x7f\xc2\x9b\xff\xe2\x80";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut doc = base.to_vec();
            for _ in 0..1 + next(3) {
                let at = next(doc.len());
                let b = alphabet[next(alphabet.len())];
                match next(3) {
                    0 => doc[at] = b,
                    1 => doc.insert(at, b),
                    _ => {
                        doc.remove(at);
                    }
                }
            }
            let ours = check_and_escape(&doc, Layout::AsIs);
            let theirs = serde_json::from_slice::<serde::de::IgnoredAny>(&doc);
            // serde_json does not look at the bytes inside strings it ignores: compare on
            // UTF-8 documents only.
            if std::str::from_utf8(&doc).is_ok() {
                assert_eq!(
                    ours.is_ok(),
                    theirs.is_ok(),
                    "{:?}: ours {ours:?}, serde_json {theirs:?}",
                    String::from_utf8_lossy(&doc)
                );
            }
            let Ok(out) = ours else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let text = std::str::from_utf8(&out).expect("UTF-8 out");
            serde_json::from_str::<serde_json::Value>(text).expect("valid JSON out");
            assert!(
                !text
                    .chars()
                    .any(|c| !matches!(c, '\n' | '\t') && (c.is_control() || is_escaped(c))),
                "{text:?}"
            );
        }
        assert!(accepted > 1000 && refused > 1000, "{accepted} {refused}");
    }
}
