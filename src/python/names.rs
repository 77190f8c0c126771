//! Python thread names: `sys.modules["threading"]._active` maps each thread's ident (its
//! `pthread_t`, the thread state's `thread_id`) to its `threading.Thread`, whose `_name` is
//! the name. Best effort: every step is validated, and any surprise gives no names.

use super::layout::InstanceDict;
use super::read::{le_u64, Reader};
use std::collections::HashMap;

/// Entries of one dictionary we are willing to look at.
const MAX_ENTRIES: usize = 8192;

/// ident → name, for the interpreter at `interp`.
pub fn thread_names(r: &Reader, interp: u64) -> HashMap<u64, String> {
    let mut names = HashMap::new();
    let _ = fill(r, interp, &mut names);
    names
}

fn fill(r: &Reader, interp: u64, names: &mut HashMap<u64, String>) -> Option<()> {
    let modules = r.u64(interp.wrapping_add(r.l.interp_modules?))?;
    let threading = dict_get(r, modules, "threading")?;
    if !r.has_type(threading, r.loc.module_type) {
        return None;
    }
    // PyModuleObject: md_dict right after the object header.
    let md_dict = r.u64(threading.wrapping_add(16))?;
    let active = dict_get(r, md_dict, "_active")?;
    for (key, thread) in dict_entries(r, active)? {
        if r.late() {
            break;
        }
        let Some(ident) = long_value(r, key) else {
            continue;
        };
        if let Some(name) = attr(r, thread, "_name").and_then(|n| r.string(n)) {
            names.insert(ident, name);
        }
    }
    Some(())
}

/// A non-negative `int` that fits in 64 bits.
fn long_value(r: &Reader, obj: u64) -> Option<u64> {
    if !r.has_type(obj, r.loc.long_type) {
        return None;
    }
    let buf = r.read(obj, 24 + 12)?;
    let tag = le_u64(&buf, 16)?;
    let digits = if r.l.version.at_least(3, 12) {
        if tag & 3 == 2 {
            return None; // negative
        }
        tag >> 3
    } else {
        let size = tag as i64;
        if size < 0 {
            return None;
        }
        size as u64
    };
    if digits > 3 {
        return None;
    }
    let mut v: u64 = 0;
    for i in 0..digits as usize {
        let d = u32::from_le_bytes(buf[24 + 4 * i..28 + 4 * i].try_into().ok()?);
        v |= u64::from(d & 0x3fff_ffff).checked_shl(30 * i as u32)?;
    }
    Some(v)
}

/// The value for a `str` key.
fn dict_get(r: &Reader, dict: u64, key: &str) -> Option<u64> {
    dict_entries(r, dict)?
        .into_iter()
        .find(|&(k, _)| string_is(r, k, key))
        .map(|(_, v)| v)
}

fn string_is(r: &Reader, obj: u64, want: &str) -> bool {
    r.string(obj).is_some_and(|s| s == want)
}

/// (key, value) pairs of a dict object.
fn dict_entries(r: &Reader, dict: u64) -> Option<Vec<(u64, u64)>> {
    if !r.has_type(dict, r.loc.dict_type) {
        return None;
    }
    let d = &r.l.dict;
    let keys = r.u64(dict.wrapping_add(d.ma_keys))?;
    let values = r.u64(dict.wrapping_add(d.ma_values))?;
    let values_at = if r.l.version.at_least(3, 13) { 8 } else { 0 };
    keys_entries(
        r,
        keys,
        (values != 0).then_some(values.wrapping_add(values_at)),
    )
}

/// Entries of a `PyDictKeysObject`; `values`: the array of a split table's values.
fn keys_entries(r: &Reader, keys: u64, values: Option<u64>) -> Option<Vec<(u64, u64)>> {
    let (entries_at, nentries, entry_size, key_at, value_at) = if r.l.dict.keys_311 {
        let head = r.read(keys, 0x20)?;
        let log2_index_bytes = u32::from(head[9]);
        let kind = head[10];
        let nentries = le_u64(&head, 0x18)? as i64;
        if log2_index_bytes > 32 {
            return None;
        }
        let general = kind == 0;
        (
            keys.wrapping_add(0x20 + (1u64 << log2_index_bytes)),
            nentries,
            if general { 24 } else { 16 },
            if general { 8 } else { 0 },
            if general { 16 } else { 8 },
        )
    } else {
        let head = r.read(keys, 0x28)?;
        let size = le_u64(&head, 8)? as i64;
        let nentries = le_u64(&head, 0x20)? as i64;
        if size <= 0 || size > 1 << 30 || size & (size - 1) != 0 {
            return None;
        }
        let width = match size {
            0..=0xff => 1,
            0x100..=0xffff => 2,
            0x1_0000..=0xffff_ffff => 4,
            _ => 8,
        };
        (
            keys.wrapping_add(0x28 + size as u64 * width),
            nentries,
            24,
            8,
            16,
        )
    };
    if !(0..=MAX_ENTRIES as i64).contains(&nentries) {
        return None;
    }
    let n = nentries as usize;
    if n == 0 {
        return Some(Vec::new());
    }
    let table = r.read(entries_at, n * entry_size)?;
    let vals = match values {
        Some(v) => Some(r.read(v, n * 8)?),
        None => None,
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let e = (i * entry_size) as u64;
        let key = le_u64(&table, e + key_at)?;
        let value = match &vals {
            Some(v) => le_u64(v, 8 * i as u64)?,
            None => le_u64(&table, e + value_at)?,
        };
        if key != 0 && value != 0 {
            out.push((key, value));
        }
    }
    Some(out)
}

/// An attribute of a plain Python object (one whose class is defined in Python).
fn attr(r: &Reader, obj: u64, name: &str) -> Option<u64> {
    let ty = r.type_of(obj)?;
    match r.l.dict.instance {
        InstanceDict::DictOffset { tp_dictoffset } => {
            let off = r.u64(ty.wrapping_add(tp_dictoffset))? as i64;
            if off <= 0 || off > 4096 {
                return None;
            }
            dict_get(r, r.u64(obj.wrapping_add(off as u64))?, name)
        }
        InstanceDict::Managed311 { ht_cached_keys } => {
            let dict = r.u64(obj.checked_sub(24)?)?;
            if dict != 0 {
                return dict_get(r, dict, name);
            }
            let values = r.u64(obj.checked_sub(32)?)?;
            shared_get(r, r.u64(ty.wrapping_add(ht_cached_keys))?, values, name)
        }
        InstanceDict::Managed312 { ht_cached_keys } => {
            let dv = r.u64(obj.checked_sub(24)?)?;
            if dv & 1 == 1 {
                // Stored as `values - 1` (odd, as values are 8-aligned).
                shared_get(
                    r,
                    r.u64(ty.wrapping_add(ht_cached_keys))?,
                    dv.wrapping_add(1),
                    name,
                )
            } else {
                dict_get(r, dv, name)
            }
        }
        InstanceDict::Inline313 { ht_cached_keys } => {
            let dict = r.u64(obj.checked_sub(24)?)?;
            if dict != 0 {
                return dict_get(r, dict, name);
            }
            let basic = r.u64(ty.wrapping_add(0x20))?;
            if basic == 0 || basic > 4096 {
                return None;
            }
            let values = obj.wrapping_add(basic);
            // PyDictValues: capacity, size, embedded, valid (bytes), then the values.
            let head = r.read(values, 8)?;
            if head[3] == 0 {
                return None;
            }
            shared_get(
                r,
                r.u64(ty.wrapping_add(ht_cached_keys))?,
                values.wrapping_add(8),
                name,
            )
        }
    }
}

fn shared_get(r: &Reader, keys: u64, values: u64, name: &str) -> Option<u64> {
    keys_entries(r, keys, Some(values))?
        .into_iter()
        .find(|&(k, _)| string_is(r, k, name))
        .map(|(_, v)| v)
}
