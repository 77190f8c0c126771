//! Which DWARF units hold which addresses, and a `.debug_info` that holds only the units asked
//! for: what lets [`crate::stack::symbols::ModuleDebug`] parse a few units of a large file instead of
//! all of them.
//!
//! `addr2line` sets up every unit of a file before its first lookup (abbreviations and line
//! program header of each): for the C library's debug file, 4126 units, 15 MB of parsed
//! abbreviations and ~15 ms, on every `stackdump inspect`, to name addresses that lie in half a
//! dozen of them. So we give it a copy of `.debug_info` in which the units our addresses are in
//! are kept at their offsets, byte for byte, and every run of other units is covered by one
//! empty DWARF 5 *type unit* header, which `addr2line` skips without parsing (it never looks
//! at type units). The copy is allocated zeroed, so the pages it never writes cost nothing.
//!
//! Which unit holds an address comes from `.debug_aranges`; the caller sets up the whole file
//! instead when an address is in no arange. A kept unit that refers to entries of other units
//! (attributes of form `DW_FORM_ref_addr`: Rust crates split in codegen units, link-time
//! optimised code, `dwz`'s partial units) brings those units along, transitively
//! ([`with_referenced_units`]), so every name `addr2line` looks up through such a reference is
//! there.

use addr2line::gimli;
use gimli::{constants, Reader as _};
use std::collections::BTreeSet;

type Slice<'a> = gimli::EndianSlice<'a, gimli::RunTimeEndian>;

/// The units of a `.debug_info`, by the address ranges `.debug_aranges` gives them.
#[derive(Debug, Default)]
pub struct UnitIndex {
    /// (begin, end, offset of the unit in `.debug_info`), sorted by begin.
    ranges: Vec<(u64, u64, usize)>,
}

impl UnitIndex {
    /// The index of `.debug_aranges` (empty when there is none or it is damaged).
    pub fn new(aranges: &[u8], endian: gimli::RunTimeEndian) -> UnitIndex {
        let mut ranges = Vec::new();
        let mut headers = gimli::DebugAranges::new(aranges, endian).headers();
        while let Ok(Some(header)) = headers.next() {
            let unit = header.debug_info_offset().0;
            let mut entries = header.entries();
            loop {
                match entries.next() {
                    Ok(Some(e)) if e.length() != 0 => {
                        let r = e.range();
                        ranges.push((r.begin, r.end, unit));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    // An entry whose range overflows (seen from rustc): skipped, as addr2line
                    // does; errors that end the set end the iteration.
                    Err(_) => continue,
                }
            }
        }
        ranges.sort_unstable();
        UnitIndex { ranges }
    }

    /// The index as words (begin, end, unit offset of each range), to be cached
    /// ([`crate::stack::dwarfcache::INDEX_ARANGES`]).
    pub fn to_words(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(b, e, u)| [b, e, u as u64])
    }

    /// The index [`UnitIndex::to_words`] gave, when its ranges are sorted by begin, not empty
    /// and their units lie in a `.debug_info` of `info_len` bytes (None otherwise: derived
    /// again).
    pub fn from_words(words: &[u64], info_len: usize) -> Option<UnitIndex> {
        let ranges: Vec<(u64, u64, usize)> = words
            .chunks_exact(3)
            .map(|w| {
                Some((
                    w[0],
                    w[1],
                    usize::try_from(w[2]).ok().filter(|&u| u < info_len)?,
                ))
            })
            .collect::<Option<_>>()?;
        let sound = words.len() % 3 == 0
            && ranges.iter().all(|r| r.0 < r.1)
            && ranges.windows(2).all(|w| w[0] <= w[1]);
        sound.then_some(UnitIndex { ranges })
    }

    /// The offset of the unit holding `addr`.
    pub fn unit_of(&self, addr: u64) -> Option<usize> {
        let i = self
            .ranges
            .partition_point(|r| r.0 <= addr)
            .checked_sub(1)?;
        let (begin, end, unit) = self.ranges[i];
        (begin <= addr && addr < end).then_some(unit)
    }
}

/// Unit offsets as cached ([`crate::stack::dwarfcache::INDEX_UNITS`]), when they are what
/// [`unit_offsets`] gives for a `.debug_info` of `info_len` bytes could be: starting at 0,
/// strictly ascending, each leaving room for a unit header before the next and the end.
pub fn offsets_from_words(words: &[u64], info_len: usize) -> Option<Vec<usize>> {
    let offsets: Vec<usize> = words
        .iter()
        .map(|&w| usize::try_from(w).ok())
        .collect::<Option<_>>()?;
    let sound = offsets.is_empty() == (info_len == 0)
        && offsets.first().map_or(true, |&o| o == 0)
        && offsets.windows(2).all(|w| w[0].saturating_add(11) <= w[1])
        && offsets
            .last()
            .map_or(true, |&o| o.saturating_add(11) <= info_len);
    sound.then_some(offsets)
}

/// The smallest gap a filler unit fits in: a DWARF 5 type unit header in the 32-bit format
/// (length 4, version 2, unit type 1, address size 1, abbreviations offset 4, type signature 8,
/// type offset 4).
const FILLER: usize = 24;

/// The offsets of every unit of `info`: a walk from one unit's length field to the next (in
/// the 32- or 64-bit format), nothing else of a unit read (gimli's parse of every header took
/// 0.55 ms of a first dump for the C library's 4126 units). None when a length runs past the
/// section, is one of the reserved values, or is shorter than the smallest unit header
/// (7 bytes after the length: version, abbreviations offset, address size), as gimli refuses.
/// What is at an offset is checked when a unit is kept ([`filtered_info`]); the others bound
/// the fillers and name the unit a reference lands in ([`with_referenced_units`]).
pub fn unit_offsets(info: &[u8], endian: gimli::RunTimeEndian) -> Option<Vec<usize>> {
    use gimli::Endianity;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < info.len() {
        let bytes = |from: usize, n: usize| info.get(from..from.checked_add(n)?);
        let short = endian.read_u32(bytes(at, 4)?);
        let (length, header) = match short {
            0xffff_ffff => (endian.read_u64(bytes(at + 4, 8)?), 12),
            0xffff_fff0.. => return None,
            n => (u64::from(n), 4),
        };
        if length < 7 {
            return None;
        }
        out.push(at);
        let next = at
            .checked_add(header)?
            .checked_add(usize::try_from(length).ok()?)?;
        if next > info.len() {
            return None;
        }
        at = next;
    }
    Some(out)
}

/// `keep` and every unit its units refer to (`DW_FORM_ref_addr`), transitively. `units` is
/// [`unit_offsets`] of `info`. A unit whose abbreviations have no such form is not read
/// further; the others have their entries' attributes of that form read. None when a unit
/// cannot be read.
pub fn with_referenced_units(
    info: &[u8],
    abbrev: &[u8],
    endian: gimli::RunTimeEndian,
    keep: &BTreeSet<usize>,
    units: &[usize],
) -> Option<BTreeSet<usize>> {
    let debug_info = gimli::DebugInfo::new(info, endian);
    let debug_abbrev = gimli::DebugAbbrev::new(abbrev, endian);
    let mut out = keep.clone();
    let mut todo: Vec<usize> = keep.iter().copied().collect();
    while let Some(offset) = todo.pop() {
        let header = debug_info
            .header_from_offset(gimli::DebugInfoOffset(offset))
            .ok()?;
        if !refers_outside(abbrev, endian, header.debug_abbrev_offset().0)? {
            continue;
        }
        let abbrevs = header.abbreviations(&debug_abbrev).ok()?;
        let mut entries = header.entries_raw(&abbrevs, None).ok()?;
        while !entries.is_empty() {
            let Some(a) = entries.read_abbreviation().ok()? else {
                continue;
            };
            for spec in a.attributes() {
                if !matches!(
                    spec.form(),
                    constants::DW_FORM_ref_addr | constants::DW_FORM_indirect
                ) {
                    entries.skip_attributes(std::slice::from_ref(spec)).ok()?;
                    continue;
                }
                let attr = entries.read_attribute(*spec).ok()?;
                if let gimli::AttributeValue::DebugInfoRef(r) = attr.value() {
                    let i = units.partition_point(|&u| u <= r.0).checked_sub(1)?;
                    if out.insert(units[i]) {
                        todo.push(units[i]);
                    }
                }
            }
        }
    }
    Some(out)
}

/// A copy of `info` (a whole `.debug_info` section) in which the units at the offsets `keep`
/// are as they are and everything else is filler (see the module doc). None when a kept unit
/// is not a well-formed compilation or partial unit at that offset.
pub fn filtered_info(
    info: &[u8],
    endian: gimli::RunTimeEndian,
    keep: &BTreeSet<usize>,
) -> Option<Box<[u8]>> {
    let debug_info = gimli::DebugInfo::new(info, endian);
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(keep.len());
    for &offset in keep {
        let header = debug_info
            .header_from_offset(gimli::DebugInfoOffset(offset))
            .ok()?;
        if !matches!(
            header.type_(),
            gimli::UnitType::Compilation | gimli::UnitType::Partial
        ) {
            return None;
        }
        let end = offset.checked_add(header.length_including_self())?;
        if end > info.len() {
            return None;
        }
        spans.push((offset, end));
    }
    // The gaps between kept units, each covered by one filler (or, when too small for one, by
    // the units it holds, copied).
    let mut copy: Vec<(usize, usize)> = Vec::new();
    let mut fill: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    for &(start, end) in spans
        .iter()
        .chain(std::iter::once(&(info.len(), info.len())))
    {
        if start > at {
            if start - at >= FILLER {
                fill.push((at, start));
            } else {
                copy.push((at, start));
            }
        }
        if end > start {
            copy.push((start, end));
        }
        at = at.max(end);
    }
    let mut out = vec![0u8; info.len()].into_boxed_slice();
    for (start, end) in copy {
        out[start..end].copy_from_slice(&info[start..end]);
    }
    let little = matches!(endian, gimli::RunTimeEndian::Little);
    for (start, end) in fill {
        let length = u32::try_from(end - start - 4).ok()?;
        if length >= 0xffff_fff0 {
            return None; // would read as the 64-bit format's escape
        }
        let h = &mut out[start..start + FILLER];
        h[0..4].copy_from_slice(&if little {
            length.to_le_bytes()
        } else {
            length.to_be_bytes()
        });
        h[4..6].copy_from_slice(&if little {
            5u16.to_le_bytes()
        } else {
            5u16.to_be_bytes()
        });
        h[6] = constants::DW_UT_type.0;
        h[7] = 8; // address size; the rest (abbreviations offset, signature, type offset) is 0
    }
    Some(out)
}

/// Whether the abbreviations table at `offset` of `.debug_abbrev` has an attribute whose form
/// may point into another unit of the same file. None when the table cannot be read.
fn refers_outside(abbrev: &[u8], endian: gimli::RunTimeEndian, offset: usize) -> Option<bool> {
    let mut r: Slice = gimli::EndianSlice::new(abbrev.get(offset..)?, endian);
    loop {
        let code = r.read_uleb128().ok()?;
        if code == 0 {
            return Some(false);
        }
        r.read_uleb128().ok()?; // tag
        r.read_u8().ok()?; // children
        loop {
            let name = r.read_uleb128().ok()?;
            let form = constants::DwForm(u16::try_from(r.read_uleb128().ok()?).ok()?);
            if name == 0 && form.0 == 0 {
                break;
            }
            if form == constants::DW_FORM_implicit_const {
                r.read_sleb128().ok()?;
            }
            if matches!(
                form,
                constants::DW_FORM_ref_addr | constants::DW_FORM_indirect
            ) {
                return Some(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length walk finds the units gimli's header parse finds, in this test binary and in
    /// the C library's debug file (when installed); a length past the end is refused.
    #[test]
    fn unit_offsets_are_the_units_gimli_parses() {
        use object::{Object, ObjectSection};
        let le = gimli::RunTimeEndian::Little;
        let mut files = vec![std::fs::read_link("/proc/self/exe").unwrap()];
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        if let Some(libc) = maps.iter().find(|m| m.path.contains("/libc.so")) {
            let debug = crate::stack::symbols::debug_source(
                std::path::Path::new(&libc.path),
                std::path::Path::new("/"),
            );
            files.push(debug);
        }
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let obj = object::File::parse(&*data).unwrap();
            let Some(section) = obj.section_by_name(".debug_info") else {
                continue;
            };
            let info = section.uncompressed_data().unwrap();
            let mut expected = Vec::new();
            let mut headers = gimli::DebugInfo::new(&info, le).units();
            while let Some(h) = headers.next().unwrap() {
                expected.push(h.debug_info_offset().unwrap().0);
            }
            assert!(!expected.is_empty(), "{}", file.display());
            assert_eq!(
                unit_offsets(&info, le),
                Some(expected),
                "{}",
                file.display()
            );
        }
        // A length past the end, a reserved length, one shorter than any header: refused.
        let mut cut = unit(&[1, 2, 3]);
        cut[0] = 200;
        assert_eq!(unit_offsets(&cut, le), None);
        let mut reserved = unit(&[1, 2, 3]);
        reserved[..4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(unit_offsets(&reserved, le), None);
        assert_eq!(unit_offsets(&[2, 0, 0, 0, 5, 0], le), None);
        // The 64-bit format: 0xffffffff, then a u64 length; the next unit follows it.
        let body = &unit(&[1, 2, 3])[4..];
        let mut wide = vec![0xff; 4];
        wide.extend_from_slice(&(body.len() as u64).to_le_bytes());
        wide.extend_from_slice(body);
        let second = wide.len();
        wide.extend_from_slice(&unit(&[4, 5]));
        assert_eq!(unit_offsets(&wide, le), Some(vec![0, second]));
    }

    /// A unit header of the 32-bit DWARF 4 format with one DIE (abbreviation 1), `body` bytes.
    fn unit(body: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        let length = (2 + 4 + 1 + body.len()) as u32;
        u.extend_from_slice(&length.to_le_bytes());
        u.extend_from_slice(&4u16.to_le_bytes());
        u.extend_from_slice(&0u32.to_le_bytes()); // abbreviations at offset 0
        u.push(8);
        u.extend_from_slice(body);
        u
    }

    #[test]
    fn keeps_the_units_asked_for_and_covers_the_rest() {
        let le = gimli::RunTimeEndian::Little;
        let units = [
            unit(&[1, b'a', 0]),
            unit(&[0u8; 40]),
            unit(&[0u8; 3]),
            unit(&[1, b'd', 0]),
        ];
        let info: Vec<u8> = units.concat();
        let offsets: Vec<usize> = units
            .iter()
            .scan(0, |at, u| {
                let o = *at;
                *at += u.len();
                Some(o)
            })
            .collect();
        let keep: BTreeSet<usize> = [offsets[0], offsets[3]].into();
        let out = filtered_info(&info, le, &keep).expect("filtered");
        assert_eq!(out.len(), info.len());
        // The kept units are unchanged, at their offsets.
        assert_eq!(&out[..units[0].len()], &units[0][..]);
        assert_eq!(&out[offsets[3]..], &units[3][..]);
        // gimli reads: the first unit, one type unit over the two in between, the last unit.
        let mut headers = gimli::DebugInfo::new(&out, le).units();
        let mut seen = Vec::new();
        while let Some(h) = headers.next().expect("well formed") {
            seen.push((h.debug_info_offset().unwrap().0, h.type_()));
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0], (offsets[0], gimli::UnitType::Compilation));
        assert!(matches!(seen[1], (o, gimli::UnitType::Type { .. }) if o == offsets[1]));
        assert_eq!(seen[2], (offsets[3], gimli::UnitType::Compilation));
        // A gap too small for a filler keeps its units as they are.
        let keep: BTreeSet<usize> = [offsets[1], offsets[3]].into();
        let out = filtered_info(&info, le, &keep).expect("filtered");
        assert_eq!(&out[offsets[2]..offsets[3]], &units[2][..]);
        // Not at a unit's start: refused.
        assert!(filtered_info(&info, le, &[offsets[0] + 1].into()).is_none());
    }

    #[test]
    fn a_kept_unit_brings_the_units_it_refers_to() {
        let le = gimli::RunTimeEndian::Little;
        // Every unit: one DIE whose only attribute (DW_AT_abstract_origin) is a reference of
        // form `form` (4 bytes in DWARF 4's 32-bit format).
        let units_with =
            |refs: [u32; 4]| refs.map(|r| unit(&[[1].as_slice(), &r.to_le_bytes()].concat()));
        let size = unit(&[0; 5]).len() as u32;
        let off = |i: u32| i * size;
        // A → C, B → A, C → C, D → A.
        let units = units_with([off(2), off(0), off(2), off(0)]);
        let info = units.concat();
        let all = unit_offsets(&info, le).unwrap();
        assert_eq!(all, (0..4).map(|i| off(i) as usize).collect::<Vec<_>>());
        let abbrev = |form: u16| {
            let mut a = vec![1, 0x11, 0, 0x31];
            a.push(form as u8);
            a.extend_from_slice(&[0, 0, 0]);
            a
        };
        let of = |keep: &[u32], form: u16| -> Vec<usize> {
            let keep: BTreeSet<usize> = keep.iter().map(|&i| off(i) as usize).collect();
            with_referenced_units(&info, &abbrev(form), le, &keep, &all)
                .unwrap()
                .into_iter()
                .collect()
        };
        let o = |v: &[u32]| v.iter().map(|&i| off(i) as usize).collect::<Vec<_>>();
        assert_eq!(of(&[0], 0x10), o(&[0, 2])); // DW_FORM_ref_addr: A brings C
        assert_eq!(of(&[1], 0x10), o(&[0, 1, 2])); // B brings A, which brings C
        assert_eq!(of(&[2], 0x10), o(&[2]));
        // DW_FORM_ref4 (inside the unit), DW_FORM_strp: nothing else is read.
        assert_eq!(of(&[1], 0x13), o(&[1]));
        assert_eq!(of(&[1], 0x0e), o(&[1]));
        // And the filtered copy parses with B's closure kept.
        let keep: BTreeSet<usize> = o(&[0, 1, 2]).into_iter().collect();
        let out = filtered_info(&info, le, &keep).unwrap();
        assert_eq!(&out[..off(3) as usize], &info[..off(3) as usize]);
    }

    #[test]
    fn aranges_index_finds_the_unit_of_an_address() {
        // Two sets: unit 0 holds [0x1000, 0x1100), unit 0x40 holds [0x2000, 0x2010) and
        // [0x3000, 0x3004).
        fn set(unit: u32, ranges: &[(u64, u64)]) -> Vec<u8> {
            let mut body = Vec::new();
            body.extend_from_slice(&2u16.to_le_bytes());
            body.extend_from_slice(&unit.to_le_bytes());
            body.push(8);
            body.push(0);
            body.extend_from_slice(&[0u8; 4]); // pad the header to 16 bytes
            for &(a, l) in ranges {
                body.extend_from_slice(&a.to_le_bytes());
                body.extend_from_slice(&l.to_le_bytes());
            }
            body.extend_from_slice(&[0u8; 16]);
            let mut s = (body.len() as u32).to_le_bytes().to_vec();
            s.extend_from_slice(&body);
            s
        }
        let aranges = [
            set(0, &[(0x1000, 0x100)]),
            set(0x40, &[(0x2000, 0x10), (0x3000, 4)]),
        ]
        .concat();
        let index = UnitIndex::new(&aranges, gimli::RunTimeEndian::Little);
        assert_eq!(index.unit_of(0x1000), Some(0));
        assert_eq!(index.unit_of(0x10ff), Some(0));
        assert_eq!(index.unit_of(0x1100), None);
        assert_eq!(index.unit_of(0x2008), Some(0x40));
        assert_eq!(index.unit_of(0x3003), Some(0x40));
        assert_eq!(index.unit_of(0xfff), None);
        assert_eq!(
            UnitIndex::new(&[], gimli::RunTimeEndian::Little).unit_of(0x1000),
            None
        );
        // As cached: the same answers back; refused when unsorted, empty ranges or a unit
        // beyond `.debug_info`.
        let words: Vec<u64> = index.to_words().collect();
        assert_eq!(words.len(), 9);
        let back = UnitIndex::from_words(&words, 0x41).unwrap();
        assert_eq!(back.ranges, index.ranges);
        assert!(UnitIndex::from_words(&words, 0x40).is_none());
        assert!(UnitIndex::from_words(&words[..8], 0x41).is_none());
        let unsorted = [&words[3..6], &words[..3], &words[6..]].concat();
        assert!(UnitIndex::from_words(&unsorted, 0x41).is_none());
        assert!(UnitIndex::from_words(&[5, 5, 0], 0x41).is_none());
    }

    #[test]
    fn cached_unit_offsets_are_checked() {
        let info = [unit(&[1, 2, 3]), unit(&[4; 40]), unit(&[])].concat();
        let offsets = unit_offsets(&info, gimli::RunTimeEndian::Little).unwrap();
        let words: Vec<u64> = offsets.iter().map(|&o| o as u64).collect();
        assert_eq!(
            offsets_from_words(&words, info.len()),
            Some(offsets.clone())
        );
        // Not from 0, not ascending, no room for a header, past the end, none for a section.
        assert!(offsets_from_words(&words[1..], info.len()).is_none());
        assert!(offsets_from_words(&[0, words[2], words[1]], info.len()).is_none());
        assert!(offsets_from_words(&[0, 5], info.len()).is_none());
        assert!(offsets_from_words(&words, words[2] as usize + 5).is_none());
        assert!(offsets_from_words(&[], info.len()).is_none());
        assert_eq!(offsets_from_words(&[], 0), Some(Vec::new()));
    }
}
