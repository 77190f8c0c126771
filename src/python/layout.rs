//! Where things are inside CPython's structures, per version.
//!
//! CPython 3.8-3.12: offsets hard-coded per minor version, read with gdb (`ptype/o`) from the
//! debug info of release builds of 3.8.18, 3.9.18, 3.10.13, 3.11.7 and 3.12.1 on x86_64 (the
//! layouts do not change within a minor version); they match py-spy's bindings and CPython's
//! headers (`Include/cpython/pystate.h`, `Include/internal/pycore_frame.h`,
//! `Include/cpython/code.h`). CPython 3.13 and later publish their offsets in
//! `_PyRuntime.debug_offsets` (`Include/internal/pycore_debug_offsets.h`), which we read
//! from the target instead; only the struct of offsets itself is laid out here, per version.
//!
//! All offsets are for 64-bit little-endian targets (x86_64, aarch64).

use std::fmt;

/// A CPython version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    /// Unknown when the version came from a file name.
    pub micro: Option<u8>,
}

impl Version {
    /// From `PY_VERSION_HEX` (`Py_Version`, `_Py_DebugOffsets.version`): 0xMMmmpp…
    pub fn from_hex(hex: u64) -> Version {
        Version {
            major: (hex >> 24) as u8,
            minor: (hex >> 16) as u8,
            micro: Some((hex >> 8) as u8),
        }
    }

    pub fn at_least(&self, major: u8, minor: u8) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(m) = self.micro {
            write!(f, ".{m}")?;
        }
        Ok(())
    }
}

/// How a frame's line number is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// 3.8, 3.9: `co_lnotab`; `f_lasti` is a byte offset.
    Lnotab,
    /// 3.10: `co_linetable` (pairs); `f_lasti` counts code units.
    Linetable310,
    /// 3.11+: PEP 657 location table; offset from the instruction pointer.
    Locations,
}

/// How a thread's frames are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameLayout {
    /// 3.8-3.10: `PyFrameObject`s linked by `f_back`; one evaluator call per frame.
    Object {
        f_back: u64,
        f_code: u64,
        f_lasti: u64,
        f_lineno: u64,
    },
    /// 3.11+: `_PyInterpreterFrame`s linked by `previous`.
    Interpreter {
        previous: u64,
        /// `f_code` (3.11, 3.12) or `f_executable` (3.13+, a tagged reference from 3.14).
        code: u64,
        /// `prev_instr` (3.11, 3.12) or `instr_ptr` (3.13+).
        instr: u64,
        owner: u64,
        /// 3.11: the frame an evaluator call started with. Later versions mark evaluator
        /// entries with a shim frame whose owner is `FRAME_OWNED_BY_CSTACK` (or, from 3.14,
        /// `FRAME_OWNED_BY_INTERPRETER`): any owner >= 3.
        is_entry: Option<u64>,
    },
}

/// Offsets of the fields we read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub version: Version,
    /// A free-threaded (no GIL) build: 3.13t and later.
    pub free_threaded: bool,
    /// Offsets came from `_PyRuntime.debug_offsets`.
    pub from_debug_offsets: bool,

    pub runtime_interpreters_head: u64,
    pub interp_next: u64,
    pub interp_threads_head: u64,
    /// `interp->modules` (`sys.modules`), for thread names.
    pub interp_modules: Option<u64>,

    pub ts_next: u64,
    pub ts_interp: u64,
    /// `frame` (3.8-3.10), `cframe` (3.11, 3.12) or `current_frame` (3.13+).
    pub ts_frame: u64,
    /// 3.11, 3.12: `_PyCFrame.current_frame` (`ts_frame` points to a `_PyCFrame`).
    pub cframe_current_frame: Option<u64>,
    /// `thread_id`: the `pthread_t`.
    pub ts_thread_id: u64,
    /// `native_thread_id`: the kernel tid (3.11+).
    pub ts_native_thread_id: Option<u64>,

    pub frame: FrameLayout,
    /// Bytes to read for one frame (covers every field above).
    pub frame_size: u64,
    /// Where a frame's local variables start: `f_localsplus` (3.8-3.10) or `localsplus`
    /// (3.11+), an array of object pointers (tagged references from 3.14).
    pub frame_localsplus: u64,

    pub co_filename: u64,
    pub co_name: u64,
    pub co_qualname: Option<u64>,
    pub co_firstlineno: u64,
    pub co_linetable: u64,
    /// The names of the local variables, a tuple of `str`: `co_varnames` (3.8-3.10: the
    /// first `co_nlocals` slots of `f_localsplus`) or `co_localsplusnames` (3.11+: every slot
    /// of `localsplus`, cells and free variables included).
    pub co_localsnames: u64,
    /// 3.8-3.10: `co_code`, a bytes object holding the bytecode.
    pub co_code: Option<u64>,
    /// 3.11+: the bytecode is inline in the code object, from this offset; its length in code
    /// units is the object's `ob_size` (offset 16).
    pub co_code_adaptive: Option<u64>,
    /// Bytes to read for one code object.
    pub code_size: u64,
    pub lines: LineFormat,

    pub ob_type: u64,
    pub var_ob_size: u64,
    pub bytes_sval: u64,
    pub unicode_length: u64,
    pub unicode_state: u64,
    /// `sizeof(PyASCIIObject)`: where the characters of a compact ASCII string start.
    pub unicode_ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where those of another compact string start.
    pub unicode_compact_size: u64,
    /// Bit position of `kind` in `state` (`interned` is 2 bits, or a whole byte in
    /// free-threaded builds).
    pub unicode_kind_shift: u32,

    pub dict: DictLayout,

    /// Where the GIL's state is (`struct _gil_runtime_state`); `None` for free-threaded builds
    /// or when not known.
    pub gil: Option<GilLayout>,
}

/// Where the GIL is, and the fields of `struct _gil_runtime_state` we read: `last_holder` (the
/// thread state that took it last) and `locked` (whether it is held now). The struct is the
/// same in 3.8-3.14 GIL builds: interval, last_holder, locked, switch_number, then the
/// condition variables and mutexes its waiters sleep on (208 bytes on x86_64 and aarch64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilLayout {
    pub at: GilAt,
    pub last_holder: u64,
    pub locked: u64,
    /// `sizeof(struct _gil_runtime_state)`: a futex wait inside it is a wait for the GIL.
    pub size: u64,
}

/// Where a GIL is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GilAt {
    /// 3.8-3.11: one GIL for the whole runtime, `_PyRuntime.ceval.gil`, at this offset.
    Runtime(u64),
    /// 3.12+: each interpreter points to its GIL (its own, or the main interpreter's):
    /// `interp->ceval.gil`, a pointer at this offset.
    InterpPointer(u64),
}

/// `sizeof(struct _gil_runtime_state)` on 64-bit Linux, 3.8-3.14.
const GIL_SIZE: u64 = 208;

const fn gil(at: GilAt) -> Option<GilLayout> {
    Some(GilLayout {
        at,
        last_holder: 8,
        locked: 16,
        size: GIL_SIZE,
    })
}

/// Dictionaries, for `sys.modules["threading"]._active` (thread names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictLayout {
    pub ma_keys: u64,
    pub ma_values: u64,
    /// 3.8-3.10: `dk_size` (i64) at 8, `dk_nentries` at 32, indices from 40; 3.11+:
    /// `dk_log2_size` (u8) at 8, `dk_log2_index_bytes` at 9, `dk_kind` at 10,
    /// `dk_nentries` at 24, indices from 32.
    pub keys_311: bool,
    /// Where instance attributes of a plain class live (`__dict__`, or inline/shared values).
    pub instance: InstanceDict,
}

/// Where a plain Python object's attributes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceDict {
    /// 3.8-3.10: a `__dict__` pointer at `tp_dictoffset` (of the type, at offset 0x120).
    DictOffset { tp_dictoffset: u64 },
    /// 3.11: `dict` pointer at `obj - 24`, else `values` at `obj - 32` with keys in the
    /// type's `ht_cached_keys`.
    Managed311 { ht_cached_keys: u64 },
    /// 3.12: `_PyDictOrValues` at `obj - 24`: a dict pointer, or, when the low bit is set,
    /// the values array minus one.
    Managed312 { ht_cached_keys: u64 },
    /// 3.13+: `dict` pointer at `obj - 24`, else inline values after the object (at the
    /// type's `tp_basicsize`, offset 0x20), their array 8 bytes into `PyDictValues`.
    Inline313 { ht_cached_keys: u64 },
}

const PTR: u64 = 8;

/// The hard-coded layout of 3.8-3.12, or `None` for other versions.
pub fn builtin(version: Version) -> Option<Layout> {
    let common_old = |f_lasti: u64,
                      f_lineno: u64,
                      f_localsplus: u64,
                      lines: LineFormat,
                      modules: u64,
                      gil_at: u64| Layout {
        version,
        free_threaded: false,
        from_debug_offsets: false,
        runtime_interpreters_head: 0x20,
        interp_next: 0,
        interp_threads_head: 0x8,
        interp_modules: Some(modules),
        ts_next: 0x8,
        ts_interp: 0x10,
        ts_frame: 0x18,
        cframe_current_frame: None,
        ts_thread_id: 0xb0,
        ts_native_thread_id: None,
        frame: FrameLayout::Object {
            f_back: 0x18,
            f_code: 0x20,
            f_lasti,
            f_lineno,
        },
        frame_size: f_lineno + 4,
        frame_localsplus: f_localsplus,
        co_filename: 0x68,
        co_name: 0x70,
        co_qualname: None,
        co_firstlineno: 0x28,
        co_linetable: 0x78,
        co_localsnames: 0x48,
        co_code: Some(0x30),
        co_code_adaptive: None,
        code_size: 0x78 + PTR,
        lines,
        ob_type: 8,
        var_ob_size: 16,
        bytes_sval: 32,
        unicode_length: 16,
        unicode_state: 32,
        unicode_ascii_size: 48,
        unicode_compact_size: 72,
        unicode_kind_shift: 2,
        dict: DictLayout {
            ma_keys: 0x20,
            ma_values: 0x28,
            keys_311: false,
            instance: InstanceDict::DictOffset {
                tp_dictoffset: 0x120,
            },
        },
        gil: gil(GilAt::Runtime(gil_at)),
    };
    match (version.major, version.minor) {
        // `_PyRuntime.ceval.gil`: 1152 (3.8), 352 (3.9, 3.10), 360 (3.11), by gdb; the
        // `gilstate.tstate_current` py-spy reads is 216 bytes further in each.
        // `f_localsplus`: 360 (3.8, 3.9), 352 (3.10); `co_varnames`: 72 (offsetof() with
        // each version's headers).
        (3, 8) => Some(common_old(0x68, 0x6c, 360, LineFormat::Lnotab, 0x38, 1152)),
        (3, 9) => Some(common_old(0x68, 0x6c, 360, LineFormat::Lnotab, 0x358, 352)),
        (3, 10) => Some(common_old(
            0x60,
            0x64,
            352,
            LineFormat::Linetable310,
            0x358,
            352,
        )),
        (3, 11) => Some(Layout {
            version,
            free_threaded: false,
            from_debug_offsets: false,
            runtime_interpreters_head: 0x28,
            interp_next: 0,
            interp_threads_head: 0x10,
            interp_modules: Some(0x378),
            ts_next: 0x8,
            ts_interp: 0x10,
            ts_frame: 0x38,
            cframe_current_frame: Some(0x8),
            ts_thread_id: 0x98,
            ts_native_thread_id: Some(0xa0),
            frame: FrameLayout::Interpreter {
                previous: 0x30,
                code: 0x20,
                instr: 0x38,
                owner: 0x45,
                is_entry: Some(0x44),
            },
            frame_size: 0x48,
            // `localsplus` and `co_localsplusnames`: offsetof() with the 3.11 and 3.12
            // headers (Debian's 3.11 too).
            frame_localsplus: 72,
            co_filename: 0x70,
            co_name: 0x78,
            co_qualname: Some(0x80),
            co_firstlineno: 0x48,
            co_linetable: 0x88,
            co_localsnames: 96,
            co_code: None,
            co_code_adaptive: Some(0xb8),
            code_size: 0xb8,
            lines: LineFormat::Locations,
            ob_type: 8,
            var_ob_size: 16,
            bytes_sval: 32,
            unicode_length: 16,
            unicode_state: 32,
            unicode_ascii_size: 48,
            unicode_compact_size: 72,
            unicode_kind_shift: 2,
            dict: DictLayout {
                ma_keys: 0x20,
                ma_values: 0x28,
                keys_311: true,
                instance: InstanceDict::Managed311 {
                    ht_cached_keys: 0x368,
                },
            },
            gil: gil(GilAt::Runtime(360)),
        }),
        (3, 12) => Some(Layout {
            version,
            free_threaded: false,
            from_debug_offsets: false,
            runtime_interpreters_head: 0x28,
            interp_next: 0,
            interp_threads_head: 0x48,
            interp_modules: Some(0x3b0),
            ts_next: 0x8,
            ts_interp: 0x10,
            ts_frame: 0x38,
            cframe_current_frame: Some(0x0),
            ts_thread_id: 0x88,
            ts_native_thread_id: Some(0x90),
            frame: FrameLayout::Interpreter {
                previous: 0x8,
                code: 0x0,
                instr: 0x38,
                owner: 0x46,
                is_entry: None,
            },
            frame_size: 0x48,
            // `localsplus` and `co_localsplusnames`: offsetof() with the 3.11 and 3.12
            // headers (Debian's 3.11 too).
            frame_localsplus: 72,
            co_filename: 0x70,
            co_name: 0x78,
            co_qualname: Some(0x80),
            co_firstlineno: 0x44,
            co_linetable: 0x88,
            co_localsnames: 96,
            co_code: None,
            co_code_adaptive: Some(0xc0),
            code_size: 0xc0,
            lines: LineFormat::Locations,
            ob_type: 8,
            var_ob_size: 16,
            bytes_sval: 32,
            unicode_length: 16,
            unicode_state: 32,
            unicode_ascii_size: 40,
            unicode_compact_size: 56,
            unicode_kind_shift: 2,
            dict: DictLayout {
                ma_keys: 0x20,
                ma_values: 0x28,
                keys_311: true,
                instance: InstanceDict::Managed312 {
                    ht_cached_keys: 0x370,
                },
            },
            // `interp->ceval.gil` (gdb: offsetof = 384).
            gil: gil(GilAt::InterpPointer(384)),
        }),
        _ => None,
    }
}

/// `_Py_DebugOffsets` as an array of u64 (after the 8-byte cookie): the index of each field we
/// use, per version.
struct DebugIndex {
    runtime_interpreters_head: usize,
    interp_next: usize,
    interp_threads_head: usize,
    interp_modules: usize,
    /// `ceval.gil` (a pointer), `_gil`, `_gil.locked`, `_gil.last_holder`.
    interp_ceval_gil: usize,
    interp_gil: usize,
    interp_gil_locked: usize,
    interp_gil_holder: usize,
    ts_next: usize,
    ts_interp: usize,
    ts_current_frame: usize,
    ts_thread_id: usize,
    ts_native_thread_id: usize,
    frame_size: usize,
    frame_previous: usize,
    frame_executable: usize,
    frame_instr_ptr: usize,
    frame_owner: usize,
    frame_localsplus: usize,
    code_size: usize,
    code_filename: usize,
    code_name: usize,
    code_qualname: usize,
    code_linetable: usize,
    code_firstlineno: usize,
    code_localsplusnames: usize,
    code_co_code_adaptive: usize,
    pyobject_ob_type: usize,
    dict_ma_keys: usize,
    dict_ma_values: usize,
    bytes_ob_size: usize,
    bytes_ob_sval: usize,
    unicode_state: usize,
    unicode_length: usize,
    unicode_asciiobject_size: usize,
    /// Number of u64 words to read (after the cookie).
    words: usize,
}

// Word 0 is `version`, word 1 `free_threaded`; the sections follow, each starting with `size`.
const DEBUG_313: DebugIndex = DebugIndex {
    // runtime_state: size 2, finalizing 3, interpreters_head 4
    runtime_interpreters_head: 4,
    // interpreter_state: size 5, id 6, next 7, threads_head 8, gc 9, imports_modules 10, ...
    interp_next: 7,
    interp_threads_head: 8,
    interp_modules: 10,
    // sysdict 11, builtins 12, ceval_gil 13, gil_runtime_state 14, gil_runtime_state_enabled
    // 15, gil_runtime_state_locked 16, gil_runtime_state_holder 17
    interp_ceval_gil: 13,
    interp_gil: 14,
    interp_gil_locked: 16,
    interp_gil_holder: 17,
    // thread_state: size 18, prev 19, next 20, interp 21, current_frame 22, thread_id 23,
    // native_thread_id 24, datastack_chunk 25, status 26
    ts_next: 20,
    ts_interp: 21,
    ts_current_frame: 22,
    ts_thread_id: 23,
    ts_native_thread_id: 24,
    // interpreter_frame: size 27, previous 28, executable 29, instr_ptr 30, localsplus 31,
    // owner 32
    frame_size: 27,
    frame_previous: 28,
    frame_executable: 29,
    frame_instr_ptr: 30,
    frame_owner: 32,
    frame_localsplus: 31,
    // code_object: size 33, filename 34, name 35, qualname 36, linetable 37, firstlineno 38,
    // argcount 39, localsplusnames 40, localspluskinds 41, co_code_adaptive 42
    code_size: 33,
    code_filename: 34,
    code_name: 35,
    code_qualname: 36,
    code_linetable: 37,
    code_firstlineno: 38,
    code_localsplusnames: 40,
    code_co_code_adaptive: 42,
    // pyobject: size 43, ob_type 44; type_object 45-48; tuple 49-51; list 52-54;
    // dict: size 55, ma_keys 56, ma_values 57; float 58-59; long 60-62;
    // bytes: size 63, ob_size 64, ob_sval 65; unicode: size 66, state 67, length 68,
    // asciiobject_size 69; gc 70-71
    pyobject_ob_type: 44,
    dict_ma_keys: 56,
    dict_ma_values: 57,
    bytes_ob_size: 64,
    bytes_ob_sval: 65,
    unicode_state: 67,
    unicode_length: 68,
    unicode_asciiobject_size: 69,
    words: 72,
};

// 3.14 adds interpreter_state.threads_main (after threads_head), code_object_generation and
// tlbc_generation (at its end), interpreter_frame.stackpointer and tlbc_index, code_object.co_tlbc,
// and a set_object section before dict_object.
const DEBUG_314: DebugIndex = DebugIndex {
    runtime_interpreters_head: 4,
    // interpreter_state: size 5, id 6, next 7, threads_head 8, threads_main 9, gc 10,
    // imports_modules 11, sysdict 12, builtins 13, ceval_gil 14, gil 15-18, code_gen 19,
    // tlbc_gen 20
    interp_next: 7,
    interp_threads_head: 8,
    interp_modules: 11,
    interp_ceval_gil: 14,
    interp_gil: 15,
    interp_gil_locked: 17,
    interp_gil_holder: 18,
    // thread_state: size 21, prev 22, next 23, interp 24, current_frame 25, thread_id 26,
    // native_thread_id 27, datastack_chunk 28, status 29
    ts_next: 23,
    ts_interp: 24,
    ts_current_frame: 25,
    ts_thread_id: 26,
    ts_native_thread_id: 27,
    // interpreter_frame: size 30, previous 31, executable 32, instr_ptr 33, localsplus 34,
    // owner 35, stackpointer 36, tlbc_index 37
    frame_size: 30,
    frame_previous: 31,
    frame_executable: 32,
    frame_instr_ptr: 33,
    frame_owner: 35,
    frame_localsplus: 34,
    // code_object: size 38, filename 39, name 40, qualname 41, linetable 42, firstlineno 43,
    // argcount 44, localsplusnames 45, localspluskinds 46, co_code_adaptive 47, co_tlbc 48
    code_size: 38,
    code_filename: 39,
    code_name: 40,
    code_qualname: 41,
    code_linetable: 42,
    code_firstlineno: 43,
    code_localsplusnames: 45,
    code_co_code_adaptive: 47,
    // pyobject: size 49, ob_type 50; type_object 51-54; tuple 55-57; list 58-60;
    // set 61-64; dict: size 65, ma_keys 66, ma_values 67; float 68-69; long 70-72;
    // bytes: size 73, ob_size 74, ob_sval 75; unicode: size 76, state 77, length 78,
    // asciiobject_size 79
    pyobject_ob_type: 50,
    dict_ma_keys: 66,
    dict_ma_values: 67,
    bytes_ob_size: 74,
    bytes_ob_sval: 75,
    unicode_state: 77,
    unicode_length: 78,
    unicode_asciiobject_size: 79,
    words: 80,
};

/// The cookie at the start of `_PyRuntime` from 3.13 on.
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// How many bytes of `_Py_DebugOffsets` to read (cookie included) for any version we know.
pub const DEBUG_OFFSETS_BYTES: usize = 8 + 8 * 80;

/// The layout from `_PyRuntime.debug_offsets` (`bytes`: the cookie and what follows). `Err`
/// says why it cannot be used.
pub fn from_debug_offsets(bytes: &[u8]) -> Result<Layout, String> {
    if bytes.len() < 24 || &bytes[..8] != DEBUG_COOKIE {
        return Err("no debug offsets (cookie missing)".into());
    }
    let word = |i: usize| -> u64 {
        let at = 8 + i * 8;
        bytes.get(at..at + 8).map_or(u64::MAX, |b| {
            u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]))
        })
    };
    let version = Version::from_hex(word(0));
    let free_threaded = word(1) != 0;
    let index = match (version.major, version.minor) {
        (3, 13) => &DEBUG_313,
        (3, 14) => &DEBUG_314,
        _ => {
            return Err(format!(
                "CPython {version}: the layout of its debug offsets is not known to this build"
            ))
        }
    };
    if bytes.len() < 8 + index.words * 8 {
        return Err("debug offsets not fully readable".into());
    }
    let w = |i: usize| word(i);
    // Sanity: every offset we use must lie inside its struct.
    let frame_size = w(index.frame_size);
    let code_size = w(index.code_size);
    let offsets_ok = [
        index.frame_previous,
        index.frame_executable,
        index.frame_instr_ptr,
        index.frame_owner,
    ]
    .iter()
    .all(|&i| w(i) < frame_size)
        && w(index.frame_localsplus) <= frame_size
        && frame_size <= 4096
        && code_size <= 4096
        && [
            index.code_filename,
            index.code_name,
            index.code_qualname,
            index.code_linetable,
            index.code_firstlineno,
            index.code_localsplusnames,
            index.code_co_code_adaptive,
        ]
        .iter()
        .all(|&i| w(i) <= code_size);
    if !offsets_ok {
        return Err(format!(
            "CPython {version}: its debug offsets are implausible (frame size {frame_size}, code size {code_size})"
        ));
    }
    // Offsets inside thread states and objects are small; interpreters and the runtime are
    // big structs, but not that big. (Bounds keep every read we size from them small.)
    let small = [
        index.ts_next,
        index.ts_interp,
        index.ts_current_frame,
        index.ts_thread_id,
        index.ts_native_thread_id,
        index.pyobject_ob_type,
        index.dict_ma_keys,
        index.dict_ma_values,
        index.bytes_ob_size,
        index.bytes_ob_sval,
        index.unicode_state,
        index.unicode_length,
        index.unicode_asciiobject_size,
    ];
    let large = [
        index.runtime_interpreters_head,
        index.interp_next,
        index.interp_threads_head,
        index.interp_modules,
    ];
    if small.iter().any(|&i| w(i) > 4096) || large.iter().any(|&i| w(i) > 1 << 20) {
        return Err(format!(
            "CPython {version}: its debug offsets are implausible (out of range)"
        ));
    }
    let ascii = w(index.unicode_asciiobject_size);
    // The GIL's fields, relative to the struct (the interpreter's `ceval.gil` may point to
    // another interpreter's `_gil`); none in a free-threaded build.
    let gil_base = w(index.interp_gil);
    let gil_field = |i: usize| w(i).checked_sub(gil_base).filter(|&o| o + 8 <= GIL_SIZE);
    let gil = match (
        free_threaded,
        gil_field(index.interp_gil_holder),
        gil_field(index.interp_gil_locked),
    ) {
        (false, Some(last_holder), Some(locked)) if w(index.interp_ceval_gil) <= 1 << 20 => {
            Some(GilLayout {
                at: GilAt::InterpPointer(w(index.interp_ceval_gil)),
                last_holder,
                locked,
                size: GIL_SIZE,
            })
        }
        _ => None,
    };
    Ok(Layout {
        version,
        free_threaded,
        from_debug_offsets: true,
        runtime_interpreters_head: w(index.runtime_interpreters_head),
        interp_next: w(index.interp_next),
        interp_threads_head: w(index.interp_threads_head),
        interp_modules: Some(w(index.interp_modules)),
        ts_next: w(index.ts_next),
        ts_interp: w(index.ts_interp),
        ts_frame: w(index.ts_current_frame),
        cframe_current_frame: None,
        ts_thread_id: w(index.ts_thread_id),
        ts_native_thread_id: Some(w(index.ts_native_thread_id)),
        frame: FrameLayout::Interpreter {
            previous: w(index.frame_previous),
            code: w(index.frame_executable),
            instr: w(index.frame_instr_ptr),
            owner: w(index.frame_owner),
            is_entry: None,
        },
        frame_size: w(index.frame_owner)
            .saturating_add(8)
            .min(frame_size.max(8)),
        frame_localsplus: w(index.frame_localsplus),
        co_filename: w(index.code_filename),
        co_name: w(index.code_name),
        co_qualname: Some(w(index.code_qualname)),
        co_firstlineno: w(index.code_firstlineno),
        co_linetable: w(index.code_linetable),
        co_localsnames: w(index.code_localsplusnames),
        co_code: None,
        co_code_adaptive: Some(w(index.code_co_code_adaptive)),
        code_size: w(index.code_co_code_adaptive),
        lines: LineFormat::Locations,
        ob_type: w(index.pyobject_ob_type),
        var_ob_size: w(index.bytes_ob_size),
        bytes_sval: w(index.bytes_ob_sval),
        unicode_length: w(index.unicode_length),
        unicode_state: w(index.unicode_state),
        unicode_ascii_size: ascii,
        // PyCompactUnicodeObject = PyASCIIObject + utf8_length + utf8
        unicode_compact_size: ascii.saturating_add(16),
        unicode_kind_shift: if free_threaded { 8 } else { 2 },
        dict: DictLayout {
            ma_keys: w(index.dict_ma_keys),
            ma_values: w(index.dict_ma_values),
            keys_311: true,
            instance: InstanceDict::Inline313 {
                ht_cached_keys: 0x370,
            },
        },
        gil,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of `_PyRuntime` in libpython3.13.so.1.0 of CPython 3.13.0 (x86_64, GIL build):
    /// `x/81gx &_PyRuntime` in gdb.
    const RUNTIME_3_13_0: [u64; 81] = [
        0x7970677562656478,
        0x030d00f0,
        0,
        0x452b8,
        0x260,
        0x278,
        0x2f998,
        0x1c68,
        0x1c60,
        0x1cb0,
        0x1ce8,
        0x1de8,
        0x1dd8,
        0x1de0,
        0x10,
        0x1e48,
        0,
        0x1e58,
        0x1e50,
        0x130,
        0,
        0x8,
        0x10,
        0x48,
        0x98,
        0xa0,
        0xe8,
        0x20,
        0x50,
        0x8,
        0,
        0x38,
        0x48,
        0x46,
        0xd0,
        0x70,
        0x78,
        0x80,
        0x88,
        0x44,
        0x34,
        0x60,
        0x68,
        0xc8,
        0x10,
        0x8,
        0x1a0,
        0x18,
        0x58,
        0xa8,
        0x20,
        0x18,
        0x10,
        0x28,
        0x18,
        0x10,
        0x30,
        0x20,
        0x28,
        0x18,
        0x10,
        0x20,
        0x10,
        0x18,
        0x28,
        0x10,
        0x20,
        0x40,
        0x20,
        0x10,
        0x28,
        0xf0,
        0xc8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];

    #[test]
    fn debug_offsets_of_3_13_0() {
        let bytes: Vec<u8> = RUNTIME_3_13_0
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let l = from_debug_offsets(&bytes).unwrap();
        assert_eq!(
            (l.version.major, l.version.minor, l.version.micro),
            (3, 13, Some(0))
        );
        assert!(!l.free_threaded);
        // The values gdb gives for offsetof() in the same build.
        assert_eq!(l.runtime_interpreters_head, 0x278);
        assert_eq!(l.interp_next, 0x1c60);
        assert_eq!(l.interp_threads_head, 0x1cb0);
        assert_eq!(l.interp_modules, Some(0x1de8));
        assert_eq!((l.ts_next, l.ts_interp, l.ts_frame), (0x8, 0x10, 0x48));
        assert_eq!((l.ts_thread_id, l.ts_native_thread_id), (0x98, Some(0xa0)));
        assert_eq!(
            l.frame,
            FrameLayout::Interpreter {
                previous: 0x8,
                code: 0x0,
                instr: 0x38,
                owner: 0x46,
                is_entry: None
            }
        );
        assert_eq!(
            (l.co_filename, l.co_name, l.co_qualname),
            (0x70, 0x78, Some(0x80))
        );
        assert_eq!((l.co_firstlineno, l.co_linetable), (0x44, 0x88));
        assert_eq!(l.co_code_adaptive, Some(0xc8));
        // offsetof() with the 3.13.0 headers: localsplus 72, co_localsplusnames 96.
        assert_eq!((l.frame_localsplus, l.co_localsnames), (72, 96));
        assert_eq!((l.unicode_ascii_size, l.unicode_compact_size), (40, 56));
        assert_eq!((l.bytes_sval, l.var_ob_size, l.ob_type), (32, 16, 8));
        assert_eq!((l.dict.ma_keys, l.dict.ma_values), (0x20, 0x28));
        // gdb: offsetof(PyInterpreterState, ceval.gil) = 16; _gil.last_holder at 8, locked
        // at 16 of struct _gil_runtime_state.
        assert_eq!(
            l.gil,
            Some(GilLayout {
                at: GilAt::InterpPointer(0x10),
                last_holder: 8,
                locked: 16,
                size: 208
            })
        );
    }

    #[test]
    fn debug_offsets_are_checked() {
        let mut bytes: Vec<u8> = RUNTIME_3_13_0
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert!(from_debug_offsets(&bytes[..100]).is_err());
        bytes[0] = b'X';
        assert!(from_debug_offsets(&bytes).is_err());
        bytes[0] = b'x';
        // An absurd thread-state offset is refused, not used to size a read.
        bytes[8 + 20 * 8..8 + 21 * 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(from_debug_offsets(&bytes).is_err());
        // A version whose layout we do not know.
        let mut other: Vec<u8> = RUNTIME_3_13_0
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        other[8..16].copy_from_slice(&0x030f00f0u64.to_le_bytes());
        assert!(from_debug_offsets(&other).unwrap_err().contains("3.15"));
    }

    #[test]
    fn builtin_layouts() {
        for minor in 8..=12 {
            let v = Version {
                major: 3,
                minor,
                micro: None,
            };
            let l = builtin(v).unwrap();
            assert_eq!(l.version, v);
            assert!(l.frame_size <= 0x100 && l.code_size <= 0x100);
        }
        let v = |minor| Version {
            major: 3,
            minor,
            micro: None,
        };
        assert!(builtin(v(7)).is_none());
        assert!(builtin(v(13)).is_none());
        assert_eq!(Version::from_hex(0x030b07f0).to_string(), "3.11.7");
    }
}
