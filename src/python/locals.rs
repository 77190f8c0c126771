//! Arguments and local variables of Python frames (`--locals`), as bounded reprs read from the
//! interpreter's memory, the way `py-spy dump --locals` shows them. Never by default: locals
//! can hold secrets.
//!
//! Nothing is computed by the interpreter (no `repr()` is called): the simple types are decoded
//! from their structs, everything else is named by its type.
//!
//! | type | repr |
//! |---|---|
//! | `None`, `bool` | `None`, `True`, `False` |
//! | `int` | its value (up to 40 decimal digits), else `<int of N digits>` |
//! | `float` | as Python writes it (`1.5`, `1e+20`, `inf`) |
//! | `str`, `bytes` | quoted and escaped as Python does, at most 64 characters or bytes, then `… (N chars)` |
//! | `list`, `tuple`, `dict`, `set`, `frozenset` | `<list of 3>` (their length) |
//! | a cell (a variable an inner function uses) | the repr of what it holds |
//! | anything else | `<Widget object at 0x7f…>` |
//!
//! Where the locals are: 3.11+ `_PyInterpreterFrame.localsplus[]`, named by the code object's
//! `co_localsplusnames` (cells and free variables included); 3.8-3.10
//! `PyFrameObject.f_localsplus[]`, whose first `len(co_varnames)` slots are the locals. A slot
//! holding NULL (a local not bound yet) is left out. At most [`MAX_LOCALS`] per frame. Every
//! read is a fault-tolerant read of `Reader`; a value that cannot be read is named by its
//! address, never guessed.

use super::layout::FrameLayout;
use super::read::{le_u64, Reader};
use crate::model::PyLocal;

/// Locals per frame; the others are counted in a last entry `…`.
pub const MAX_LOCALS: usize = 64;
/// Characters of a `str` (bytes of a `bytes`) read.
pub const MAX_TEXT: usize = 64;
/// Characters of a quoted `str`/`bytes` repr, escapes included, before it is cut.
const MAX_QUOTED: usize = 66;
/// Characters of a local's name, and bytes of a type's name, kept.
const MAX_NAME: usize = 64;
/// 30-bit digits of an `int` converted to decimal.
const MAX_INT_DIGITS: usize = 64;
/// Decimal digits of an `int` shown; a longer one is `<int of N digits>`.
const MAX_INT_DECIMALS: usize = 40;
/// Slots of `localsplus` looked at: more than any real function has.
const MAX_SLOTS: i64 = 1 << 16;

/// The code object the frame at `frame` runs now (`None`: not a frame, or not readable). A frame
/// recorded by an earlier read is still the same call only while this is unchanged.
pub fn frame_code(r: &Reader, frame: u64) -> Option<u64> {
    let l = r.l;
    match l.frame {
        FrameLayout::Object { f_code, .. } => {
            let buf = r.read(frame, (f_code.max(l.ob_type) + 8) as usize)?;
            if let Some(t) = r.loc.frame_type {
                if le_u64(&buf, l.ob_type)? != t {
                    return None;
                }
            }
            le_u64(&buf, f_code)
        }
        // 3.14 tags references in their low bits; objects are 8-aligned anyway.
        FrameLayout::Interpreter { code, .. } => r.u64(frame.checked_add(code)?).map(|c| c & !7),
    }
}

/// The locals of the frame at `frame`, which runs the code object at `code`, in the order of
/// their slots (arguments first). `None` when the names or the slots cannot be read.
pub fn frame_locals(r: &Reader, frame: u64, code: u64) -> Option<Vec<PyLocal>> {
    let l = r.l;
    let names = r.u64(code.checked_add(l.co_localsnames)?)?;
    if type_name(r, names).as_deref() != Some("tuple") {
        return None;
    }
    let size = le_u64(&r.read(names.checked_add(l.var_ob_size)?, 8)?, 0)? as i64;
    if !(0..=MAX_SLOTS).contains(&size) {
        return None;
    }
    let n = (size as usize).min(MAX_LOCALS);
    if n == 0 {
        return Some(Vec::new());
    }
    let items = r.read(names.checked_add(l.var_ob_size + 8)?, n * 8)?;
    let slots = r.read(frame.checked_add(l.frame_localsplus)?, n * 8)?;
    let mut out = Vec::with_capacity(n + 1);
    for i in 0..n {
        if r.late() {
            break;
        }
        // 3.14 tags stack references in their low bits.
        let value = le_u64(&slots, 8 * i as u64)? & !7;
        if value == 0 {
            continue;
        }
        let name = le_u64(&items, 8 * i as u64)
            .and_then(|p| r.string_prefix(p, MAX_NAME))
            .map(|(mut s, len)| {
                if len > MAX_NAME as u64 {
                    s.push('…');
                }
                s
            })
            .unwrap_or_else(|| format!("<local {i}>"));
        if let Some(repr) = value_repr(r, value, 1) {
            out.push(PyLocal { name, repr });
        }
    }
    if size as usize > n {
        out.push(PyLocal {
            name: "…".into(),
            repr: format!("<{} more slots not read>", size as usize - n),
        });
    }
    Some(out)
}

/// `tp_name` of the object's type, at most `MAX_NAME` bytes (`…` after a longer one).
pub fn type_name(r: &Reader, obj: u64) -> Option<String> {
    let ty = r.type_of(obj)?;
    // PyTypeObject: PyObject_VAR_HEAD, then tp_name.
    let name = r.u64(ty.checked_add(r.l.var_ob_size + 8)?)?;
    let mut buf = [0u8; MAX_NAME + 1];
    let n = r.mem.read(name, &mut buf);
    if n == 0 || name < 4096 {
        return None;
    }
    let bytes = &buf[..n];
    let (name, cut) = match bytes.iter().position(|&b| b == 0) {
        Some(end) => (String::from_utf8_lossy(&bytes[..end]), false),
        None => (String::from_utf8_lossy(&bytes[..n.min(MAX_NAME)]), true),
    };
    // The target chose these bytes: no control character goes into a repr.
    let mut out: String = name
        .chars()
        .map(|c| escape_char(c).unwrap_or_else(|| c.to_string()))
        .collect();
    if cut {
        out.push('…');
    }
    Some(out)
}

/// How Python's `repr` writes a character it does not show as it is: the controls, format
/// characters and separators (`None`: shown as it is; quotes and backslashes are the caller's).
fn escape_char(c: char) -> Option<String> {
    Some(match c {
        '\n' => "\\n".to_string(),
        '\r' => "\\r".to_string(),
        '\t' => "\\t".to_string(),
        c if (c as u32) < 0x100 && c.is_control() => format!("\\x{:02x}", c as u32),
        c if c.is_control() || invisible(c) => format!("\\u{:04x}", c as u32),
        _ => return None,
    })
}

/// The repr of the object at `obj`; `None` for an empty cell (a variable not bound yet).
/// `depth`: how many cells may still be looked into.
pub fn value_repr(r: &Reader, obj: u64, depth: u32) -> Option<String> {
    let l = r.l;
    let Some(ty) = type_name(r, obj) else {
        return Some(format!("<unreadable object at {obj:#x}>"));
    };
    // The end of PyObject_HEAD: where a float's value, a dict's `ma_used`, a cell's
    // reference are.
    let head = l.ob_type + 8;
    let other = || format!("<{ty} object at {obj:#x}>");
    let word = |off: u64| r.u64(obj.checked_add(off)?);
    let is = |want: Option<u64>| want.is_none() || r.type_of(obj) == want;
    let repr = match ty.as_str() {
        "NoneType" => Some("None".to_string()),
        "bool" => read_long(r, obj).map(|(neg, digits, _)| {
            if neg || digits.iter().any(|&d| d != 0) {
                "True".to_string()
            } else {
                "False".to_string()
            }
        }),
        "int" if is(r.loc.long_type) => {
            read_long(r, obj).map(|(neg, digits, n)| long_repr(neg, &digits, n))
        }
        "float" => word(head).map(|bits| float_repr(f64::from_bits(bits))),
        "str" => r
            .string_prefix(obj, MAX_TEXT)
            .map(|(s, len)| str_repr(&s, len)),
        "bytes" => r
            .bytes_prefix(obj, MAX_TEXT)
            .map(|(b, len)| bytes_repr(&b, len)),
        "list" | "tuple" => word(l.var_ob_size)
            .map(|n| n as i64)
            .filter(|n| *n >= 0)
            .map(|n| format!("<{ty} of {n}>")),
        "dict" if is(r.loc.dict_type) => word(head)
            .map(|n| n as i64)
            .filter(|n| *n >= 0)
            .map(|n| format!("<dict of {n}>")),
        // PySetObject: fill, then used.
        "set" | "frozenset" => word(head + 8)
            .map(|n| n as i64)
            .filter(|n| *n >= 0)
            .map(|n| format!("<{ty} of {n}>")),
        "cell" if depth > 0 => {
            return match word(head) {
                Some(0) => None,
                Some(inner) => value_repr(r, inner & !7, depth - 1),
                None => Some(other()),
            }
        }
        _ => None,
    };
    Some(repr.unwrap_or_else(other))
}

/// An `int` (or `bool`): its sign, its first 30-bit digits (at most [`MAX_INT_DIGITS`]) and
/// how many it has.
fn read_long(r: &Reader, obj: u64) -> Option<(bool, Vec<u32>, usize)> {
    let l = r.l;
    let tag = r.u64(obj.checked_add(l.var_ob_size)?)?;
    let (negative, n) = long_sign_digits(tag, l.version.at_least(3, 12))?;
    let take = n.min(MAX_INT_DIGITS);
    let digits = if take == 0 {
        Vec::new()
    } else {
        let buf = r.read(obj.checked_add(l.var_ob_size + 8)?, take * 4)?;
        buf.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    Some((negative, digits, n))
}

/// The sign and number of digits of an `int` from its `ob_size` (3.8-3.11: the signed number
/// of digits) or its `lv_tag` (3.12+: digits << 3, sign in the low 2 bits: 0 positive, 1 zero,
/// 2 negative).
pub fn long_sign_digits(tag: u64, lv_tag: bool) -> Option<(bool, usize)> {
    if lv_tag {
        let sign = tag & 3;
        let n = tag >> 3;
        match sign {
            0 | 2 if n <= 1 << 40 => Some((sign == 2, n as usize)),
            1 => Some((false, 0)),
            _ => None,
        }
    } else {
        let size = tag as i64;
        (size.unsigned_abs() <= 1 << 40).then(|| (size < 0, size.unsigned_abs() as usize))
    }
}

/// An `int` in decimal from its 30-bit digits (least significant first; `total`: how many it
/// has, of which `digits` holds the first ones).
pub fn long_repr(negative: bool, digits: &[u32], total: usize) -> String {
    if total > digits.len() || total > MAX_INT_DIGITS {
        // 30 bits are 9.03 decimal digits.
        return format!(
            "<{}int of about {} digits>",
            if negative { "negative " } else { "" },
            (total as u64 * 30 * 30103 / 100_000) + 1
        );
    }
    // Repeated division by 10^9 of the base-2^30 magnitude.
    let mut mag: Vec<u32> = digits.iter().map(|d| d & 0x3fff_ffff).collect();
    while mag.last() == Some(&0) {
        mag.pop();
    }
    if mag.is_empty() {
        return "0".into();
    }
    let mut chunks: Vec<u32> = Vec::new();
    while !mag.is_empty() {
        let mut rem: u64 = 0;
        for d in mag.iter_mut().rev() {
            let cur = (rem << 30) | u64::from(*d);
            *d = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while mag.last() == Some(&0) {
            mag.pop();
        }
    }
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    let mut it = chunks.iter().rev();
    if let Some(first) = it.next() {
        s.push_str(&first.to_string());
    }
    for c in it {
        s.push_str(&format!("{c:09}"));
    }
    let decimals = s.len() - usize::from(negative);
    if decimals > MAX_INT_DECIMALS {
        return format!(
            "<{}int of {decimals} digits>",
            if negative { "negative " } else { "" }
        );
    }
    s
}

/// A `float` as Python's `repr` writes it: the shortest digits that read back the same value,
/// in positional notation for exponents -4 to 15 (`0.0001`, `1e+16`, `1.5e-05`, `3.0`).
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `-1.2345e-7`, `1e20`, `0e0`.
    let sci = format!("{:e}", x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let s = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if (point as usize) >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{s}")
    } else {
        let (a, b) = digits.split_at(1);
        let m = if b.is_empty() {
            a.to_string()
        } else {
            format!("{a}.{b}")
        };
        format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        )
    }
}

/// The quote Python's `repr` uses: `'`, unless the text has one and no `"`.
fn quote_for(has_single: bool, has_double: bool) -> char {
    if has_single && !has_double {
        '"'
    } else {
        '\''
    }
}

/// Characters Python's `repr` escapes besides the controls: format characters and separators
/// (which would reorder or hide text on a terminal).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// Close `out` (a quoted text opened with `q`) and say how long the value is when it was cut.
fn close(mut out: String, q: char, cut: bool, length: u64, unit: &str) -> String {
    out.push(q);
    if cut {
        out.push_str(&format!("… ({length} {unit})"));
    }
    out
}

/// A `str` as Python's `repr` writes it, from its first characters `s` and its `length`;
/// cut after about `MAX_QUOTED` characters.
pub fn str_repr(s: &str, length: u64) -> String {
    let q = quote_for(s.contains('\''), s.contains('"'));
    let mut out = String::new();
    out.push(q);
    let mut shown = 1usize;
    let mut taken = 0u64;
    for c in s.chars() {
        let piece = match c {
            '\\' => "\\\\".to_string(),
            c if c == q => format!("\\{c}"),
            c => escape_char(c).unwrap_or_else(|| c.to_string()),
        };
        let width = piece.chars().count();
        if shown + width > MAX_QUOTED {
            break;
        }
        out.push_str(&piece);
        shown += width;
        taken += 1;
    }
    close(out, q, taken < length, length, "chars")
}

/// A `bytes` as Python's `repr` writes it (`b'\x00ab'`), from its first bytes `b` and its
/// `length`; cut after about `MAX_QUOTED` characters.
pub fn bytes_repr(b: &[u8], length: u64) -> String {
    let q = quote_for(b.contains(&b'\''), b.contains(&b'"'));
    let mut out = String::from("b");
    out.push(q);
    let mut shown = 2usize;
    let mut taken = 0u64;
    for &c in b {
        let piece = match c {
            b'\\' => "\\\\".to_string(),
            b'\n' => "\\n".to_string(),
            b'\r' => "\\r".to_string(),
            b'\t' => "\\t".to_string(),
            c if char::from(c) == q => format!("\\{}", char::from(c)),
            0x20..=0x7e => char::from(c).to_string(),
            c => format!("\\x{c:02x}"),
        };
        if shown + piece.len() > MAX_QUOTED {
            break;
        }
        out.push_str(&piece);
        shown += piece.len();
        taken += 1;
    }
    close(out, q, taken < length, length, "bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30-bit digits of `v`, least significant first, as CPython stores them.
    fn digits_of(mut v: u128) -> Vec<u32> {
        let mut d = Vec::new();
        while v != 0 {
            d.push((v & 0x3fff_ffff) as u32);
            v >>= 30;
        }
        d
    }

    /// A PyLongObject's bytes after the object header: `ob_size`/`lv_tag`, then the digits.
    fn long_bytes(v: i128, lv_tag: bool) -> Vec<u8> {
        let d = digits_of(v.unsigned_abs());
        let tag: u64 = if lv_tag {
            let sign = match v.signum() {
                0 => 1,
                1 => 0,
                _ => 2,
            };
            ((d.len() as u64) << 3) | sign
        } else if v < 0 {
            (-(d.len() as i64)) as u64
        } else {
            d.len() as u64
        };
        let mut b = tag.to_le_bytes().to_vec();
        for x in &d {
            b.extend_from_slice(&x.to_le_bytes());
        }
        if d.is_empty() {
            b.extend_from_slice(&0u32.to_le_bytes()); // CPython keeps one zero digit
        }
        b
    }

    fn decode(buf: &[u8], lv_tag: bool) -> String {
        let (neg, n) = long_sign_digits(le_u64(buf, 0).unwrap(), lv_tag).unwrap();
        let digits: Vec<u32> = buf[8..8 + 4 * n]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        long_repr(neg, &digits, n)
    }

    #[test]
    fn ints_from_their_bytes_in_both_layouts() {
        let big = -(1i128 << 100) - 12345;
        for v in [
            0i128,
            1,
            -1,
            42,
            (1 << 30) - 1,
            1 << 30,
            -(1 << 62),
            i64::MAX as i128,
            u64::MAX as i128 + 1,
            big,
            i128::MAX,
            i128::MIN + 1,
        ] {
            for lv_tag in [false, true] {
                assert_eq!(decode(&long_bytes(v, lv_tag), lv_tag), v.to_string(), "{v}");
            }
        }
        assert_eq!(big.to_string(), "-1267650600228229401496703217721");
        // 3.12: zero is sign 1 with no digit; True is one digit 1.
        assert_eq!(long_sign_digits(1, true), Some((false, 0)));
        assert_eq!(long_sign_digits(8, true), Some((false, 1)));
        assert_eq!(long_sign_digits(3, true), None);
    }

    /// The 30-bit digits of 10**k.
    fn pow10(k: usize) -> Vec<u32> {
        let mut digits = vec![1u32];
        for _ in 0..k {
            let mut carry = 0u64;
            for d in digits.iter_mut() {
                let v = u64::from(*d) * 10 + carry;
                *d = (v & 0x3fff_ffff) as u32;
                carry = v >> 30;
            }
            if carry > 0 {
                digits.push(carry as u32);
            }
        }
        digits
    }

    #[test]
    fn big_ints_are_counted_not_printed() {
        // 10**50: 51 decimal digits.
        let ten50 = pow10(50);
        let n = ten50.len();
        assert_eq!(long_repr(false, &ten50, n), "<int of 51 digits>");
        assert_eq!(long_repr(true, &ten50, n), "<negative int of 51 digits>");
        // 1000 digits: not even read.
        assert_eq!(long_repr(false, &[], 1000), "<int of about 9031 digits>");
        // 10**39 (40 digits) is still shown.
        let ten39 = pow10(39);
        let n = ten39.len();
        assert_eq!(long_repr(true, &ten39, n), format!("-1{}", "0".repeat(39)));
    }

    #[test]
    fn floats_as_python_writes_them() {
        for (x, want) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.5, "1.5"),
            (3.0, "3.0"),
            (-2.25, "-2.25"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e20, "1.2345e+20"),
            (1e-300, "1e-300"),
            (123456.789, "123456.789"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ] {
            assert_eq!(float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn strings_are_quoted_escaped_and_cut() {
        assert_eq!(str_repr("héllo wörld ✓", 13), "'héllo wörld ✓'");
        assert_eq!(str_repr("it's", 4), "\"it's\"");
        assert_eq!(str_repr("a'b\"c", 5), "'a\\'b\"c'");
        assert_eq!(str_repr("a\nb\t\\\u{1b}", 6), "'a\\nb\\t\\\\\\x1b'");
        assert_eq!(str_repr("x\u{202e}y", 3), "'x\\u202ey'");
        let long: String = "a".repeat(64);
        assert_eq!(
            str_repr(&long, 1000),
            format!("'{}'… (1000 chars)", "a".repeat(64))
        );
        let ctl: String = "\u{1}".repeat(64);
        let r = str_repr(&ctl, 64);
        assert!(r.ends_with("'… (64 chars)"), "{r}");
        assert!(r.chars().count() <= 90, "{r}");
        assert_eq!(str_repr("", 0), "''");
    }

    #[test]
    fn bytes_are_quoted_escaped_and_cut() {
        assert_eq!(bytes_repr(b"\x00ab\xff'", 5), "b\"\\x00ab\\xff'\"");
        assert_eq!(bytes_repr(b"a\nb", 3), "b'a\\nb'");
        assert_eq!(bytes_repr(b"", 0), "b''");
        let r = bytes_repr(&[0u8; 64], 100);
        assert!(r.ends_with("'… (100 bytes)"), "{r}");
        assert!(r.len() <= 90, "{r}");
    }
}
