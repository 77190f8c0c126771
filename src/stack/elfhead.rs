//! The headers of an ELF file: its loadable segments, its sections and its build id, read
//! without its symbol tables. `object::File::parse` reads those too (and every relocation
//! section's header): a shared library's `.symtab` is hundreds of KB (`libstackdump.so`'s 170
//! KB with 480 KB of names), read and copied to learn where its unwind tables are or what its
//! build id is, once per module per `inspect`.

use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, FileKind, ReadRef};

/// A loadable segment (`PT_LOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Its address in the file's own numbering (SVMA).
    pub address: u64,
    /// `(offset, size)` of its bytes in the file.
    pub file_range: (u64, u64),
    /// `p_flags`.
    pub flags: u32,
}

/// A section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: Vec<u8>,
    /// Its address in the file's own numbering (SVMA).
    pub address: u64,
    pub size: u64,
    /// `(offset, size)` of its bytes in the file; None for one without any (`SHT_NOBITS`).
    pub file_range: Option<(u64, u64)>,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_addralign`.
    pub align: u64,
}

/// What the headers of one ELF file say, with the file's data to read a section from.
pub struct ElfHead<'d, R: ReadRef<'d>> {
    data: R,
    is_64: bool,
    little_endian: bool,
    segments: Vec<Segment>,
    sections: Vec<Section>,
    _data: std::marker::PhantomData<&'d ()>,
}

impl<'d, R: ReadRef<'d>> ElfHead<'d, R> {
    /// The headers of the ELF file `data` (32 or 64 bits, either byte order).
    pub fn parse(data: R) -> Result<Self, String> {
        match FileKind::parse(data).map_err(|e| e.to_string())? {
            FileKind::Elf32 => Self::parse_as::<object::elf::FileHeader32<Endianness>>(data),
            FileKind::Elf64 => Self::parse_as::<object::elf::FileHeader64<Endianness>>(data),
            other => Err(format!("not an ELF file ({other:?})")),
        }
    }

    fn parse_as<Elf: FileHeader<Endian = Endianness>>(data: R) -> Result<Self, String> {
        let header = Elf::parse(data).map_err(|e| e.to_string())?;
        let endian = header.endian().map_err(|e| e.to_string())?;
        let segments = header
            .program_headers(endian, data)
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
            .map(|p| Segment {
                address: p.p_vaddr(endian).into(),
                file_range: p.file_range(endian),
                flags: p.p_flags(endian).0,
            })
            .collect();
        let table = header.sections(endian, data).map_err(|e| e.to_string())?;
        let sections = table
            .iter()
            .map(|s| Section {
                name: table
                    .section_name(endian, s)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
                address: s.sh_addr(endian).into(),
                size: s.sh_size(endian).into(),
                file_range: s.file_range(endian),
                kind: s.sh_type(endian).0,
                align: s.sh_addralign(endian).into(),
            })
            .collect();
        Ok(ElfHead {
            data,
            is_64: header.is_type_64(),
            little_endian: endian == Endianness::Little,
            segments,
            sections,
            _data: std::marker::PhantomData,
        })
    }

    pub fn is_64(&self) -> bool {
        self.is_64
    }

    pub fn is_little_endian(&self) -> bool {
        self.little_endian
    }

    /// The loadable segments, in the file's order.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    /// The first section named `name`.
    pub fn section_by_name(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name.as_bytes())
    }

    /// The bytes of `section` in the file (None without any, or beyond the data).
    pub fn section_data(&self, section: &Section) -> Option<&'d [u8]> {
        let (offset, size) = section.file_range?;
        self.data.read_bytes_at(offset, size).ok()
    }

    /// The build id: the description of the first `NT_GNU_BUILD_ID` note named "GNU" in a
    /// note section (where `object::File::build_id` looks).
    pub fn build_id(&self) -> Option<&'d [u8]> {
        let endian = if self.little_endian {
            Endianness::Little
        } else {
            Endianness::Big
        };
        self.sections
            .iter()
            .filter(|s| s.kind == object::elf::SHT_NOTE.0)
            .find_map(|s| {
                let bytes = self.section_data(s)?;
                if self.is_64 {
                    let notes = object::read::elf::NoteIterator::<
                        object::elf::FileHeader64<Endianness>,
                    >::new(endian, s.align, bytes);
                    build_id_in(endian, notes.ok()?)
                } else {
                    let notes = object::read::elf::NoteIterator::<
                        object::elf::FileHeader32<Endianness>,
                    >::new(
                        endian, u32::try_from(s.align).ok()?, bytes
                    );
                    build_id_in(endian, notes.ok()?)
                }
            })
    }
}

fn build_id_in<'d, Elf: FileHeader<Endian = Endianness>>(
    endian: Endianness,
    mut notes: object::read::elf::NoteIterator<'d, Elf>,
) -> Option<&'d [u8]> {
    while let Ok(Some(note)) = notes.next() {
        if note.name() == object::elf::ELF_NOTE_GNU
            && note.n_type(endian) == object::elf::NT_GNU_BUILD_ID
        {
            return Some(note.desc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection, ObjectSegment};

    /// The headers agree with `object::File` on this test's own executable and the C library.
    #[test]
    fn agrees_with_object_file() {
        let maps = crate::kernel::proc::parse_maps(&std::fs::read("/proc/self/maps").unwrap());
        let libc = maps
            .iter()
            .find(|m| m.path.contains("/libc.so"))
            .map(|m| m.path.clone())
            .unwrap();
        let exe = std::env::current_exe().unwrap();
        for path in [exe, libc.into()] {
            let bytes = std::fs::read(&path).unwrap();
            let full = object::File::parse(&bytes[..]).unwrap();
            let head = ElfHead::parse(&bytes[..]).unwrap();
            assert_eq!(head.is_64(), full.is_64());
            assert_eq!(head.is_little_endian(), full.is_little_endian());
            let segs: Vec<(u64, (u64, u64))> = full
                .segments()
                .map(|s| (s.address(), s.file_range()))
                .collect();
            let ours: Vec<(u64, (u64, u64))> =
                head.segments().map(|s| (s.address, s.file_range)).collect();
            assert_eq!(ours, segs, "{}", path.display());
            for name in [
                ".eh_frame",
                ".eh_frame_hdr",
                ".text",
                ".got",
                ".dynamic",
                ".bss",
            ] {
                let a = full
                    .section_by_name(name)
                    .map(|s| (s.address(), s.size(), s.file_range()));
                let b = head
                    .section_by_name(name)
                    .map(|s| (s.address, s.size, s.file_range));
                assert_eq!(a, b, "{name} of {}", path.display());
            }
            let id = full.build_id().unwrap();
            assert!(id.is_some(), "{} has a build id", path.display());
            assert_eq!(head.build_id(), id);
        }
        assert!(ElfHead::parse(&b"#!/bin/sh\n"[..]).is_err());
    }
}
