//! Reading CPython objects out of a process's memory, without the process's help: every read
//! is a `process_vm_readv` that fails instead of faulting, every object's type is checked
//! against the interpreter's type objects, every list is capped and checked for loops.

use super::elf::Located;
use super::layout::{FrameLayout, GilAt, Layout, LineFormat};
use super::lines;
use super::PyFrame;
use crate::stack::unwind::ProcessMemory;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// Characters kept of a string (names, file names).
const MAX_CHARS: usize = 1024;
/// Bytes kept of a line table.
const MAX_LINETABLE: usize = 1 << 20;

/// What we keep of a code object.
#[derive(Debug)]
pub struct Code {
    pub name: String,
    pub qualname: Option<String>,
    pub filename: String,
    pub first_line: i64,
    pub linetable: Vec<u8>,
    /// Address of the first bytecode unit.
    pub bytecode: u64,
    /// Length of the bytecode in bytes, when known.
    pub bytecode_len: Option<u64>,
    /// Words of the code object this was made from: its type, the pointers to its name,
    /// qualified name, file name, line table, bytecode and local names (a tuple made afresh
    /// for each code object), its first line, and its size on 3.11+. Pointers and sizes, not
    /// what they point to: a later read trusts this copy only if the object at the same
    /// address still holds the same words.
    words: Vec<u64>,
}

/// Code objects read by an earlier read of the same dump, for a later one to reuse: a thread
/// taken again (see [`super::Limits::only`]) then costs one read per frame and one per code
/// object instead of a dozen, which keeps the window between its native copy and its Python
/// frames short. An entry is used only after the object at its address was read again and
/// still holds the same [`Code::words`]; a code object freed and another one made at the same
/// address with other names is read afresh.
#[derive(Debug, Default)]
pub struct KnownCodes(HashMap<u64, Arc<Code>>);

/// A thread state as read.
#[derive(Debug, Clone, Copy)]
pub struct RawThreadState {
    pub addr: u64,
    pub next: u64,
    pub thread_id: u64,
    pub native_thread_id: Option<u64>,
    pub frame: u64,
}

pub struct Reader<'a> {
    pub mem: &'a ProcessMemory,
    pub l: &'a Layout,
    pub loc: &'a Located,
    pub deadline: Instant,
    codes: HashMap<u64, Option<Arc<Code>>>,
    earlier: KnownCodes,
}

pub fn le_u64(buf: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

pub fn le_i32(buf: &[u8], at: u64) -> Option<i32> {
    let at = usize::try_from(at).ok()?;
    Some(i32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Reader<'a> {
    pub fn new(mem: &'a ProcessMemory, l: &'a Layout, loc: &'a Located, deadline: Instant) -> Self {
        Reader {
            mem,
            l,
            loc,
            deadline,
            codes: HashMap::new(),
            earlier: KnownCodes::default(),
        }
    }

    /// Reuse the code objects an earlier read of the same dump found (after a check each).
    pub fn set_earlier(&mut self, earlier: KnownCodes) {
        self.earlier = earlier;
    }

    /// The code objects known after this read: the earlier ones and those read now.
    pub fn into_known(self) -> KnownCodes {
        let mut known = self.earlier;
        known
            .0
            .extend(self.codes.into_iter().filter_map(|(a, c)| Some((a, c?))));
        known
    }

    pub fn late(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Exactly `len` bytes at `addr`, or None.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        if addr < 4096 || addr.checked_add(len as u64).is_none() {
            return None;
        }
        let mut buf = vec![0u8; len];
        (self.mem.read(addr, &mut buf) == len).then_some(buf)
    }

    /// Up to `len` bytes at `addr` (at least `min`).
    fn read_some(&self, addr: u64, len: usize, min: usize) -> Option<Vec<u8>> {
        if addr < 4096 || addr.checked_add(len as u64).is_none() {
            return None;
        }
        let mut buf = vec![0u8; len];
        let n = self.mem.read(addr, &mut buf);
        if n >= min {
            buf.truncate(n);
            return Some(buf);
        }
        // process_vm_readv stops at the first unmapped page; a short read of a small object
        // near the end of a mapping comes back as 0 when the request spans it. Try exactly.
        self.read(addr, min)
    }

    pub fn u64(&self, addr: u64) -> Option<u64> {
        if addr < 4096 {
            return None;
        }
        self.mem.read_u64(addr)
    }

    /// The GIL of the interpreter at `interp`: where it is, whether it is held, by whom.
    pub fn gil(&self, interp: u64) -> Option<super::GilState> {
        let g = self.l.gil?;
        let addr = match g.at {
            GilAt::Runtime(off) => self.loc.runtime.checked_add(off)?,
            GilAt::InterpPointer(off) => self.u64(interp.checked_add(off)?)?,
        };
        let end = g.locked.max(g.last_holder) + 8;
        let buf = self.read(addr, end as usize)?;
        let locked = le_i32(&buf, g.locked)?;
        let last_holder = le_u64(&buf, g.last_holder)?;
        Some(super::GilState {
            addr,
            size: g.size,
            locked: locked != 0,
            last_holder,
        })
    }

    pub fn type_of(&self, obj: u64) -> Option<u64> {
        self.u64(obj.checked_add(self.l.ob_type)?)
    }

    /// Whether `obj`'s type is `ty` (true when the type's address is unknown).
    pub fn has_type(&self, obj: u64, ty: Option<u64>) -> bool {
        match ty {
            Some(t) => self.type_of(obj) == Some(t),
            None => obj >= 4096,
        }
    }

    /// A `str` object's text (at most [`MAX_CHARS`] characters, then `…`).
    pub fn string(&self, obj: u64) -> Option<String> {
        let (mut s, length) = self.string_prefix(obj, MAX_CHARS)?;
        if length > MAX_CHARS as u64 {
            s.push('…');
        }
        Some(s)
    }

    /// The first `max` characters of a `str` object, and its length in characters.
    pub fn string_prefix(&self, obj: u64, max: usize) -> Option<(String, u64)> {
        let l = self.l;
        let head = l.unicode_compact_size as usize;
        let buf = self.read_some(obj, head + 128, head)?;
        if let Some(t) = self.loc.unicode_type {
            if le_u64(&buf, l.ob_type)? != t {
                return None;
            }
        }
        let length = le_u64(&buf, l.unicode_length)? as i64;
        if !(0..=(1 << 30)).contains(&length) {
            return None;
        }
        let state = u32::from_le_bytes(
            buf.get(l.unicode_state as usize..l.unicode_state as usize + 4)?
                .try_into()
                .ok()?,
        );
        let shift = l.unicode_kind_shift;
        let kind = (state >> shift) & 7;
        let compact = (state >> (shift + 3)) & 1 == 1;
        let ascii = (state >> (shift + 4)) & 1 == 1;
        let (data_at, width) = match (compact, ascii) {
            (true, true) => (obj.wrapping_add(l.unicode_ascii_size), 1),
            (true, false) => (obj.wrapping_add(l.unicode_compact_size), kind as usize),
            (false, _) => (le_u64(&buf, l.unicode_compact_size)?, kind as usize),
        };
        if !matches!(width, 1 | 2 | 4) {
            return None;
        }
        let chars = (length as usize).min(max);
        let n = chars * width;
        let local = data_at
            .checked_sub(obj)
            .map(|o| o as usize)
            .filter(|&o| compact && o + n <= buf.len());
        let owned;
        let data: &[u8] = match local {
            Some(o) => &buf[o..o + n],
            None => {
                owned = self.read(data_at, n)?;
                &owned
            }
        };
        let mut s = String::with_capacity(n);
        match width {
            1 if ascii => {
                if !data.is_ascii() {
                    return None;
                }
                s.push_str(std::str::from_utf8(data).ok()?);
            }
            1 => s.extend(data.iter().map(|&b| char::from(b))),
            2 => {
                for c in data.chunks_exact(2) {
                    s.push(char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]])))?);
                }
            }
            _ => {
                for c in data.chunks_exact(4) {
                    s.push(char::from_u32(u32::from_le_bytes([
                        c[0], c[1], c[2], c[3],
                    ]))?);
                }
            }
        }
        Some((s, length as u64))
    }

    /// The first `max` bytes of a `bytes` object, and its length.
    pub fn bytes_prefix(&self, obj: u64, max: usize) -> Option<(Vec<u8>, u64)> {
        let l = self.l;
        let head = self.read(obj, l.bytes_sval as usize)?;
        if let Some(t) = self.loc.bytes_type {
            if le_u64(&head, l.ob_type)? != t {
                return None;
            }
        }
        let len = le_u64(&head, l.var_ob_size)? as i64;
        if len < 0 {
            return None;
        }
        let n = (len as u64).min(max as u64) as usize;
        if n == 0 {
            return Some((Vec::new(), len as u64));
        }
        Some((self.read(obj.wrapping_add(l.bytes_sval), n)?, len as u64))
    }

    /// A `bytes` object's content (at most `max` bytes; None if longer).
    pub fn bytes(&self, obj: u64, max: usize) -> Option<Vec<u8>> {
        let l = self.l;
        let head = self.read(obj, l.bytes_sval as usize)?;
        if let Some(t) = self.loc.bytes_type {
            if le_u64(&head, l.ob_type)? != t {
                return None;
            }
        }
        let len = le_u64(&head, l.var_ob_size)? as i64;
        if len < 0 || len as usize > max {
            return None;
        }
        if len == 0 {
            return Some(Vec::new());
        }
        self.read(obj.wrapping_add(l.bytes_sval), len as usize)
    }

    /// A code object (cached for the duration of this reader: one dump).
    pub fn code(&mut self, addr: u64) -> Option<Arc<Code>> {
        if let Some(c) = self.codes.get(&addr) {
            return c.clone();
        }
        let c = self.read_code(addr);
        self.codes.insert(addr, c.clone());
        c
    }

    /// The words of the code object in `buf` that [`Code::words`] keeps.
    fn code_words(&self, buf: &[u8]) -> Option<Vec<u64>> {
        let l = self.l;
        let word = |o: u64| le_u64(buf, o);
        let mut words = vec![
            word(l.ob_type)?,
            word(l.co_name)?,
            word(l.co_filename)?,
            word(l.co_linetable)?,
            word(l.co_localsnames)?,
            u64::from(le_i32(buf, l.co_firstlineno)? as u32),
        ];
        let more = [
            l.co_qualname,
            l.co_code,
            l.co_code_adaptive.map(|_| l.var_ob_size),
        ];
        for o in more.into_iter().flatten() {
            words.push(word(o)?);
        }
        Some(words)
    }

    fn read_code(&self, addr: u64) -> Option<Arc<Code>> {
        let l = self.l;
        let buf = self.read(addr, l.code_size as usize + 8)?;
        if let Some(t) = self.loc.code_type {
            if le_u64(&buf, l.ob_type)? != t {
                return None;
            }
        }
        let words = self.code_words(&buf)?;
        if let Some(c) = self.earlier.0.get(&addr).filter(|c| c.words == words) {
            return Some(c.clone());
        }
        let name = self.string(le_u64(&buf, l.co_name)?)?;
        let filename = self.string(le_u64(&buf, l.co_filename)?)?;
        let qualname = l
            .co_qualname
            .and_then(|o| le_u64(&buf, o))
            .and_then(|p| self.string(p));
        let first_line = i64::from(le_i32(&buf, l.co_firstlineno)?);
        let linetable = le_u64(&buf, l.co_linetable)
            .and_then(|p| self.bytes(p, MAX_LINETABLE))
            .unwrap_or_default();
        let (bytecode, bytecode_len) = match (l.co_code_adaptive, l.co_code) {
            (Some(off), _) => {
                let units = le_u64(&buf, l.var_ob_size)? as i64;
                (
                    addr.wrapping_add(off),
                    (units >= 0).then(|| (units as u64).wrapping_mul(2)),
                )
            }
            (None, Some(off)) => {
                let bytes = le_u64(&buf, off)?;
                let len = self
                    .read(bytes, l.bytes_sval as usize)
                    .and_then(|h| le_u64(&h, l.var_ob_size));
                (bytes.wrapping_add(l.bytes_sval), len)
            }
            (None, None) => (0, None),
        };
        Some(Arc::new(Code {
            name,
            qualname,
            filename,
            first_line,
            linetable,
            bytecode,
            bytecode_len,
            words,
        }))
    }

    /// Read the thread state at `addr`, checking that it belongs to `interp`.
    pub fn thread_state(&self, addr: u64, interp: u64) -> Option<RawThreadState> {
        let l = self.l;
        let len = [
            l.ts_next,
            l.ts_interp,
            l.ts_frame,
            l.ts_thread_id,
            l.ts_native_thread_id.unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            + 8;
        let buf = self.read(addr, len as usize)?;
        if le_u64(&buf, l.ts_interp)? != interp {
            return None;
        }
        let mut frame = le_u64(&buf, l.ts_frame)?;
        if let Some(off) = l.cframe_current_frame {
            frame = if frame == 0 {
                0
            } else {
                self.u64(frame.wrapping_add(off))?
            };
        }
        Some(RawThreadState {
            addr,
            next: le_u64(&buf, l.ts_next)?,
            thread_id: le_u64(&buf, l.ts_thread_id)?,
            native_thread_id: l.ts_native_thread_id.and_then(|o| le_u64(&buf, o)),
            frame,
        })
    }

    /// The Python frames from `first` outwards, innermost first; `Err` carries the frames read
    /// so far and why the walk stopped early.
    pub fn frames(
        &mut self,
        first: u64,
        max: usize,
    ) -> Result<Vec<PyFrame>, (Vec<PyFrame>, String)> {
        let mut out: Vec<PyFrame> = Vec::new();
        let mut seen = HashSet::new();
        let mut f = first;
        let l = self.l;
        let mut skipped = 0usize;
        while f != 0 {
            if out.len() >= max {
                return Err((out, format!("more than {max} Python frames")));
            }
            if !seen.insert(f) || seen.len() > 4 * max {
                return Err((out, "the frame list loops".into()));
            }
            if self.late() {
                return Err((out, "the time budget ran out".into()));
            }
            let Some(buf) = self.read(f, l.frame_size as usize) else {
                return Err((out, format!("frame at {f:#x} is not readable")));
            };
            match l.frame {
                FrameLayout::Object {
                    f_back,
                    f_code,
                    f_lasti,
                    f_lineno,
                } => {
                    if let Some(t) = self.loc.frame_type {
                        if le_u64(&buf, l.ob_type) != Some(t) {
                            return Err((out, format!("{f:#x} is not a frame object")));
                        }
                    }
                    let code_addr = le_u64(&buf, f_code).unwrap_or(0);
                    let Some(code) = self.code(code_addr) else {
                        return Err((out, format!("unreadable code object at {code_addr:#x}")));
                    };
                    let lasti = i64::from(le_i32(&buf, f_lasti).unwrap_or(-1));
                    let lineno = le_i32(&buf, f_lineno).unwrap_or(0);
                    let (offset, line) = match l.lines {
                        LineFormat::Linetable310 => {
                            let offset = lasti.saturating_mul(2);
                            let line = if lineno > 0 {
                                Some(lineno as u32)
                            } else {
                                lines::linetable_310(&code.linetable, code.first_line, offset)
                            };
                            (offset, line)
                        }
                        _ => (
                            lasti,
                            lines::lnotab(&code.linetable, code.first_line, lasti),
                        ),
                    };
                    out.push(frame(
                        f,
                        code_addr,
                        &code,
                        code.bytecode.wrapping_add(offset.max(0) as u64),
                        line,
                        true,
                    ));
                    f = le_u64(&buf, f_back).unwrap_or(0);
                }
                FrameLayout::Interpreter {
                    previous,
                    code: code_off,
                    instr,
                    owner,
                    is_entry,
                } => {
                    let owner = buf.get(owner as usize).copied().unwrap_or(0);
                    let next = le_u64(&buf, previous).unwrap_or(0);
                    if is_entry.is_none() && owner >= 3 {
                        // The shim frame an evaluator call starts with: the frame inside it
                        // is that call's first frame.
                        if let Some(last) = out.last_mut() {
                            last.entry = true;
                        }
                        f = next;
                        continue;
                    }
                    // 3.14 tags references in their low bits; objects are 8-aligned anyway.
                    let code_addr = le_u64(&buf, code_off).unwrap_or(0) & !7;
                    let Some(code) = self.code(code_addr) else {
                        // Not a code object (a frame being set up, or not a Python frame):
                        // skip it, but not forever.
                        skipped += 1;
                        if skipped > 16 {
                            return Err((out, "too many frames without a code object".into()));
                        }
                        f = next;
                        continue;
                    };
                    let ip = le_u64(&buf, instr).unwrap_or(0);
                    let offset = ip.wrapping_sub(code.bytecode) as i64;
                    let line = match code.bytecode_len {
                        Some(len) if offset >= len as i64 => None,
                        _ => lines::locations(&code.linetable, code.first_line, offset),
                    };
                    let entry = is_entry
                        .and_then(|o| buf.get(o as usize))
                        .is_some_and(|&b| b != 0);
                    out.push(frame(f, code_addr, &code, ip, line, entry));
                    f = next;
                }
            }
        }
        // Every stack starts with an evaluator call.
        if let Some(last) = out.last_mut() {
            last.entry = true;
        }
        Ok(out)
    }
}

fn frame(
    addr: u64,
    code_addr: u64,
    code: &Code,
    ip: u64,
    line: Option<u32>,
    entry: bool,
) -> PyFrame {
    PyFrame {
        frame: addr,
        locals: Vec::new(),
        function: code.qualname.clone().unwrap_or_else(|| code.name.clone()),
        name: code.name.clone(),
        file: code.filename.clone(),
        line,
        first_line: u32::try_from(code.first_line).ok().filter(|&l| l > 0),
        code: code_addr,
        ip,
        entry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::layout::{builtin, Version};
    use std::time::Duration;

    fn put(buf: &mut [u8], at: u64, v: u64) {
        buf[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// A code object known from an earlier read is reused while the object at its address
    /// holds the same words, and read afresh as soon as one of them differs.
    #[test]
    fn a_known_code_object_is_reused_only_while_its_words_hold() {
        let l = builtin(Version {
            major: 3,
            minor: 11,
            micro: None,
        })
        .unwrap();
        let loc = Located {
            module: String::new(),
            runtime: 0,
            py_version: None,
            code_type: None,
            frame_type: None,
            unicode_type: None,
            bytes_type: None,
            dict_type: None,
            long_type: None,
            module_type: None,
            name_version: None,
        };
        // A code object in this process's memory whose name and file name point at nothing
        // readable: reading it afresh fails, so a success can only be the known copy.
        let mut obj = vec![0u8; l.code_size as usize + 8];
        put(&mut obj, l.ob_type, 0x5000);
        put(&mut obj, l.co_name, 8);
        put(&mut obj, l.co_filename, 16);
        let addr = obj.as_ptr() as u64;
        let mem = ProcessMemory {
            pid: std::process::id() as i32,
        };
        let deadline = Instant::now() + Duration::from_secs(600);

        let mut fresh = Reader::new(&mem, &l, &loc, deadline);
        assert!(fresh.code(addr).is_none(), "unreadable names must fail");

        let known = Arc::new(Code {
            name: "handle".into(),
            qualname: None,
            filename: "app.py".into(),
            first_line: 7,
            linetable: Vec::new(),
            bytecode: 0,
            bytecode_len: None,
            words: fresh.code_words(&obj).unwrap(),
        });
        let earlier = || KnownCodes(HashMap::from([(addr, known.clone())]));
        let mut r = Reader::new(&mem, &l, &loc, deadline);
        r.set_earlier(earlier());
        let got = r.code(addr).expect("the known copy");
        assert!(Arc::ptr_eq(&got, &known));
        assert_eq!(r.into_known().0.len(), 1);

        // Another object at the same address (another name): not the known copy.
        put(&mut obj, l.co_name, 24);
        let mut r = Reader::new(&mem, &l, &loc, deadline);
        r.set_earlier(earlier());
        assert!(r.code(std::hint::black_box(addr)).is_none());
        // The same names, but another tuple of local names: another code object.
        put(&mut obj, l.co_name, 8);
        put(&mut obj, l.co_localsnames, 0x7000);
        let mut r = Reader::new(&mem, &l, &loc, deadline);
        r.set_earlier(earlier());
        assert!(r.code(addr).is_none());
        // Back as it was: the known copy again, and into_known keeps it.
        put(&mut obj, l.co_localsnames, 0);
        let mut r = Reader::new(&mem, &l, &loc, deadline);
        r.set_earlier(earlier());
        assert!(r.code(addr).is_some_and(|c| Arc::ptr_eq(&c, &known)));
        assert!(r
            .into_known()
            .0
            .get(&addr)
            .is_some_and(|c| Arc::ptr_eq(c, &known)));
        drop(obj);
    }
}
