//! The module-file loaders (symbols and DWARF, unwind tables) on hostile ELF files, under a
//! memory limit: a real small library built with `cc -g`, mutated in the ways that inflate
//! memory (compression headers stating huge sizes, zstd and zlib bombs, section headers with
//! sizes and offsets beyond the end of the file, sparse files claiming sections of gigabytes).
//! Each case runs the loaders in a child process (this test binary again, see [`child`]) with
//! `RLIMIT_AS` set, and checks that the child neither panics nor dies, and that its peak RSS
//! (`VmHWM`, or `wait4`'s `ru_maxrss` if it could not say) stays under [`PEAK_BOUND`]. The caps are in `stackdump_core::limits`.

use proptest::prelude::*;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The address space the child may use (the loaders' caps are far below).
const AS_LIMIT: u64 = 3 << 30;
/// The peak RSS a child may reach on any hostile input (the unmodified library: ~10 MB; the
/// largest allocation a case below may legitimately cause is a 60 MiB decode buffer).
const PEAK_BOUND_KB: i64 = 256 << 10;
const PEAK_BOUND: &str = "256 MiB";

const MIB: u64 = 1 << 20;
const SHF_COMPRESSED: u64 = 0x800;
const ELFCOMPRESS_ZLIB: u32 = 1;
const ELFCOMPRESS_ZSTD: u32 = 2;

/// The child: load `STACKDUMP_FUZZ_ELF` with every loader, then exit 0.
#[test]
fn child() {
    let Some(path) = std::env::var_os("STACKDUMP_FUZZ_ELF") else {
        return;
    };
    let path = PathBuf::from(path);
    // Symbols and DWARF (the CLI's and the library's symbolizer).
    let mut debug = stackdump_core::stack::symbols::ModuleDebug::load_from(&path, None);
    let addrs: Vec<u64> = (0..64).map(|i| 0x1000 + i * 0x40).collect();
    debug.prepare(&addrs);
    for a in &addrs {
        let _ = debug.symbols(*a);
    }
    let _ = stackdump_core::stack::symbols::SymbolTable::load(&path);
    // Unwind tables: map the file as the loader would and load every module of this process.
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: dlopen of a library built by this test from a C file without constructors; the
    // mutations change section headers and appended bytes only, which the loader does not read.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let maps = std::fs::read("/proc/self/maps").unwrap();
    let maps = stackdump_core::kernel::proc::parse_maps(&maps);
    let mut modules = stackdump_core::stack::unwind::Modules::new(
        stackdump_core::stack::unwind::ModuleSource::this_process(),
    );
    modules.sync(&maps);
    // Every module's tables read now (a dump reads only those its stacks go through).
    modules.load_all();
    if !handle.is_null() {
        assert!(
            modules
                .list()
                .iter()
                .any(|m| &*m.path == path.to_str().unwrap())
                || modules
                    .problems
                    .iter()
                    .any(|p| p.starts_with(path.to_str().unwrap())),
            "the library was seen"
        );
    }
    // The peak of this process image alone (`ru_maxrss` also counts the parent's pages at
    // fork time).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .unwrap();
    println!("CHILD OK VmHWM {hwm}");
}

/// Run [`child`] on `elf` under the memory limit: (exit code, peak RSS in KiB, output).
fn run_child(elf: &Path) -> (i32, i64, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env("STACKDUMP_FUZZ_ELF", elf)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: AS_LIMIT,
                rlim_max: AS_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut text);
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for (and reaping) our own child, with pointers to live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    std::mem::forget(child); // reaped by wait4 above
    text.push_str(&reader.join().unwrap());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    // The child's own peak when it said it (see `child`), else the rusage one (an upper bound).
    let peak = text
        .split("CHILD OK VmHWM ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(usage.ru_maxrss);
    (code, peak, text)
}

fn check(elf: &Path, what: &str) -> i64 {
    let (code, peak_kb, out) = run_child(elf);
    assert!(
        code == 0 && out.contains("CHILD OK"),
        "{what}: the loaders failed (exit {code}):\n{out}"
    );
    assert!(
        peak_kb < PEAK_BOUND_KB,
        "{what}: peak RSS {} MiB, beyond {PEAK_BOUND}",
        peak_kb >> 10
    );
    eprintln!("{what}: peak RSS {} MiB", peak_kb >> 10);
    peak_kb
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d =
            std::env::temp_dir().join(format!("stackdump-fuzzelf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small library with DWARF (`cc -g`), or None without a C compiler (built once).
fn base_lib(_dir: &Path) -> Option<Vec<u8>> {
    static BASE: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let dir = Scratch::new("base");
        build_base(&dir.0)
    })
    .clone()
}

fn build_base(dir: &Path) -> Option<Vec<u8>> {
    let src = dir.join("base.c");
    std::fs::write(
        &src,
        "#include <unistd.h>\n\
         __attribute__((noinline)) int leaf(int x) { return x * 3 + (int)getpid(); }\n\
         __attribute__((noinline)) int middle(int x) { return leaf(x) + 1; }\n\
         int entry(int x) { return middle(x) * 2; }\n",
    )
    .unwrap();
    let out = dir.join("base.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let ok = Command::new(&cc)
        .args(["-g", "-O1", "-shared", "-fPIC", "-Wl,--build-id", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: no C compiler ({cc})");
        return None;
    }
    Some(std::fs::read(&out).unwrap())
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes(b[o..o + 2].try_into().unwrap()))
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// The offsets of the section headers of a little-endian ELF64, by section name.
fn sections(elf: &[u8]) -> Vec<(String, usize)> {
    let shoff = u64_at(elf, 0x28) as usize;
    let shentsize = u16_at(elf, 0x3a) as usize;
    let shnum = u16_at(elf, 0x3c) as usize;
    let shstrndx = u16_at(elf, 0x3e) as usize;
    let strtab = u64_at(elf, shoff + shstrndx * shentsize + 24) as usize;
    (0..shnum)
        .map(|i| {
            let h = shoff + i * shentsize;
            let name = strtab + u32_at(elf, h) as usize;
            let end = name + elf[name..].iter().position(|&c| c == 0).unwrap();
            (String::from_utf8_lossy(&elf[name..end]).into_owned(), h)
        })
        .collect()
}

fn header(elf: &[u8], name: &str) -> usize {
    sections(elf)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no section {name}"))
        .1
}

/// Make section `name` a compressed one: an `Elf64_Chdr` stating `ch_size`, then `data`,
/// appended to the file.
fn compress(elf: &mut Vec<u8>, name: &str, ch_type: u32, ch_size: u64, data: &[u8]) {
    let h = header(elf, name);
    compress_at(elf, h, ch_type, ch_size, data);
}

/// [`compress`] the section whose header is at `h`.
fn compress_at(elf: &mut Vec<u8>, h: usize, ch_type: u32, ch_size: u64, data: &[u8]) {
    while elf.len() % 8 != 0 {
        elf.push(0);
    }
    let at = elf.len() as u64;
    elf.extend_from_slice(&ch_type.to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes());
    elf.extend_from_slice(&ch_size.to_le_bytes());
    elf.extend_from_slice(&1u64.to_le_bytes());
    elf.extend_from_slice(data);
    let flags = u64_at(elf, h + 8) | SHF_COMPRESSED;
    put64(elf, h + 8, flags);
    put64(elf, h + 24, at);
    let size = elf.len() as u64 - at;
    put64(elf, h + 32, size);
}

/// A zstd frame that decodes to `total` zero bytes: RLE blocks of 128 KiB, 4 bytes each (2 GiB
/// from 64 KiB: the attack of issue 15).
fn zstd_bomb(total: u64) -> Vec<u8> {
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd];
    // Frame header: no single segment, no checksum, no content size; window 128 KiB.
    f.push(0x00);
    f.push(7 << 3);
    let block = 128 * 1024u64;
    let mut left = total;
    while left > 0 {
        let n = left.min(block);
        left -= n;
        let last = u32::from(left == 0);
        let h = ((n as u32) << 3) | (1 << 1) | last;
        f.extend_from_slice(&h.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

/// A zlib stream of `total` zero bytes (deflate's best: ~1032:1).
fn zlib_bomb(total: u64) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let chunk = vec![0u8; MIB as usize];
    let mut left = total;
    while left > 0 {
        let n = left.min(MIB);
        e.write_all(&chunk[..n as usize]).unwrap();
        left -= n;
    }
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn zstd_bomb_matches_the_zstd_tool() {
    // The hand-made frame is a real one: the reference decoder agrees on its size.
    let dir = Scratch::new("zstdtool");
    let p = write(&dir.0, "bomb.zst", &zstd_bomb(3 * MIB + 5));
    match Command::new("zstd").arg("-dc").arg(&p).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout.len() as u64, 3 * MIB + 5);
            assert!(out.stdout.iter().all(|&b| b == 0));
        }
        Err(_) => eprintln!("skipped: no zstd tool"),
    }
}

/// A named change to a file's bytes.
type Mutation<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

#[test]
fn bombs_and_lying_headers_stay_in_bounds() {
    let dir = Scratch::new("bombs");
    let Some(base) = base_lib(&dir.0) else {
        return;
    };
    let baseline = check(&write(&dir.0, "plain.so", &base), "the library as built");
    let zstd_2g = zstd_bomb(2 << 30);
    let zlib_600m = zlib_bomb(600 * MIB);
    let zlib_64m = zlib_bomb(64 * MIB);
    let cases: Vec<(&str, Mutation<'_>)> = vec![
        (
            // 64 KiB stating 2 GiB (true): beyond the ratio and the module cap.
            "zstd bomb, honest header (2 GiB)",
            Box::new(|e| compress(e, ".debug_info", ELFCOMPRESS_ZSTD, 2 << 30, &zstd_2g)),
        ),
        (
            // The header states 60 MiB (plausible for 64 KiB); the data holds 2 GiB: the
            // decoder must stop at 60 MiB.
            "zstd bomb, lying header (60 MiB stated)",
            Box::new(|e| compress(e, ".debug_info", ELFCOMPRESS_ZSTD, 60 * MIB, &zstd_2g)),
        ),
        (
            "zstd bomb in every DWARF section",
            Box::new(|e| {
                for s in [".debug_info", ".debug_abbrev", ".debug_line", ".debug_str"] {
                    compress(e, s, ELFCOMPRESS_ZSTD, 60 * MIB, &zstd_2g);
                }
            }),
        ),
        (
            "zlib bomb, honest header (600 MiB): beyond the module cap",
            Box::new(|e| compress(e, ".debug_info", ELFCOMPRESS_ZLIB, 600 * MIB, &zlib_600m)),
        ),
        (
            "zlib bomb, lying header (1 MiB stated, 64 MiB inside)",
            Box::new(|e| compress(e, ".debug_info", ELFCOMPRESS_ZLIB, MIB, &zlib_64m)),
        ),
        (
            "compression header stating 2^63 bytes",
            Box::new(|e| compress(e, ".debug_info", ELFCOMPRESS_ZLIB, 1 << 63, &zlib_64m)),
        ),
        (
            ".debug_info and .eh_frame beyond the end of the file",
            Box::new(|e| {
                for s in [".debug_info", ".eh_frame", ".symtab"] {
                    let h = header(e, s);
                    put64(e, h + 24, 1 << 40);
                    put64(e, h + 32, 1 << 31);
                }
            }),
        ),
        (
            "section sizes of 2^64-1",
            Box::new(|e| {
                for s in [
                    ".debug_info",
                    ".eh_frame",
                    ".eh_frame_hdr",
                    ".dynsym",
                    ".symtab",
                ] {
                    let h = header(e, s);
                    put64(e, h + 32, u64::MAX);
                }
            }),
        ),
        (
            ".eh_frame_hdr claiming 2^31 FDEs",
            Box::new(|e| {
                let h = header(e, ".eh_frame_hdr");
                let off = u64_at(e, h + 24) as usize;
                // version, eh_frame_ptr_enc, fde_count_enc (udata4), table_enc, then the
                // eh_frame pointer (4 bytes) and the count.
                e[off + 2] = 0x03;
                e[off + 8..off + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
            }),
        ),
    ];
    for (what, mutate) in &cases {
        let mut elf = base.clone();
        mutate(&mut elf);
        check(&write(&dir.0, "case.so", &elf), what);
    }
    let _ = baseline;
}

#[test]
fn sparse_files_claiming_huge_sections_stay_in_bounds() {
    let dir = Scratch::new("sparse");
    let Some(base) = base_lib(&dir.0) else {
        return;
    };
    // A file of a few KB on disk and 6 GiB logically, whose .eh_frame, .debug_info and
    // .symtab point into the hole (2 GiB each, all inside the file's size).
    let mut elf = base.clone();
    for (i, s) in [".eh_frame", ".debug_info", ".symtab", ".debug_frame"]
        .iter()
        .enumerate()
    {
        if sections(&elf).iter().any(|(n, _)| n == s) {
            let h = header(&elf, s);
            put64(&mut elf, h + 24, (1 << 30) + (i as u64) * MIB);
            put64(&mut elf, h + 32, 2 << 30);
        }
    }
    let p = write(&dir.0, "sparse.so", &elf);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    check(&p, "sparse file with 2 GiB sections in its hole");
    // A 100 MiB .eh_frame of zeros, under the per-read cap: read once (not twice).
    let mut elf = base.clone();
    let h = header(&elf, ".eh_frame");
    put64(&mut elf, h + 24, 1 << 30);
    put64(&mut elf, h + 32, 100 * MIB);
    let p = write(&dir.0, "sparse2.so", &elf);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    check(&p, "sparse file with a 100 MiB .eh_frame in its hole");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random section headers made huge, moved, or marked compressed with random stated sizes,
    /// and random file lengths (sparse): the loaders stay in bounds and never panic.
    #[test]
    fn random_inflating_mutations_stay_in_bounds(
        muts in proptest::collection::vec(
            (0usize..64, 0u8..4, any::<u64>(), 0u32..3), 1..6),
        extend in prop_oneof![Just(0u64), 0u64..(8u64 << 30)],
    ) {
        let dir = Scratch::new("prop");
        let Some(base) = base_lib(&dir.0) else {
            return Ok(());
        };
        let mut elf = base.clone();
        // The headers of the base file (their place does not change: data is only appended);
        // the section names' table is left alone so that the mutations stay nameable.
        let shstrndx = u16_at(&base, 0x3e) as usize;
        let headers: Vec<usize> = sections(&base)
            .into_iter()
            .enumerate()
            .filter(|(i, (n, _))| *i != shstrndx && !n.is_empty())
            .map(|(_, (_, h))| h)
            .collect();
        for (which, how, value, ch_type) in muts {
            let h = headers[which % headers.len()];
            match how {
                0 => put64(&mut elf, h + 32, value >> (value % 64)),
                1 => put64(&mut elf, h + 24, value >> (value % 64)),
                2 => compress_at(&mut elf, h, ch_type, value >> (value % 64), &[0x78, 0x9c, 3, 0, 0, 0, 0, 1]),
                _ => compress_at(&mut elf, h, ELFCOMPRESS_ZSTD, value % (64 * MIB), &zstd_bomb(MIB)),
            }
        }
        let p = write(&dir.0, "prop.so", &elf);
        if extend > elf.len() as u64 {
            std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(extend).unwrap();
        }
        let (code, peak_kb, out) = run_child(&p);
        prop_assert!(code == 0 && out.contains("CHILD OK"), "exit {}: {}", code, out);
        prop_assert!(peak_kb < PEAK_BOUND_KB, "peak {} MiB", peak_kb >> 10);
    }
}

#[test]
fn real_compressed_debug_sections_still_give_file_and_line() {
    // The caps must not cost real files their symbols: objcopy's zlib and zstd compression.
    let dir = Scratch::new("real");
    let Some(base) = base_lib(&dir.0) else {
        return;
    };
    let plain = write(&dir.0, "plain.so", &base);
    use object::{Object, ObjectSymbol};
    let obj = object::File::parse(&*base).unwrap();
    let leaf = obj
        .symbols()
        .find(|s| s.name() == Ok("leaf"))
        .expect("leaf in the symbol table")
        .address();
    for how in ["none", "zlib", "zstd"] {
        let out = dir.0.join(format!("{how}.so"));
        let ok = Command::new("objcopy")
            .arg(format!("--compress-debug-sections={how}"))
            .arg(&plain)
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: objcopy cannot compress with {how}");
            continue;
        }
        let mut debug = stackdump_core::stack::symbols::ModuleDebug::load_from(&out, None);
        let syms = debug.symbols(leaf);
        assert!(
            syms.iter().any(|s| s.function.as_deref() == Some("leaf")
                && s.file.as_deref().is_some_and(|f| f.ends_with("base.c"))
                && s.line.is_some()),
            "{how}: {syms:?}"
        );
    }
}
