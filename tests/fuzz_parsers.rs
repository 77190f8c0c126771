//! Property tests of everything that parses outside input: the `/proc` parsers (a hostile or
//! future kernel, a thread name with parentheses and newlines), side-file names, and the dump
//! reader (a truncated or tampered file). They must never panic, and what they accept must be
//! consistent. A short run (256 cases each) is part of `cargo test`; set `PROPTEST_CASES` for a
//! longer one.

use proptest::prelude::*;
use stackdump_core::kernel::proc;
use stackdump_core::model::dumpfile::DumpFileName;
use stackdump_core::model::Dump;

proptest! {
    #[test]
    fn proc_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = proc::parse_syscall(&text);
        let _ = proc::parse_wchan(&text);
        let _ = proc::parse_kernel_stack(&text);
        let _ = proc::parse_stat(&bytes);
        let _ = proc::parse_status(&bytes);
        let _ = proc::parse_maps(&bytes);
    }

    #[test]
    fn stat_survives_any_thread_name(name in "[^\u{0}]{0,15}", state in "[RSDTtZXI]") {
        let line = format!("42 ({name}) {state} 1 42 42 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 1 0 100 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n");
        let s = proc::parse_stat(line.as_bytes());
        prop_assert!(s.is_some(), "{:?}", line);
        let s = s.unwrap();
        prop_assert_eq!(s.utime, 7);
        prop_assert_eq!(s.stime, 3);
        prop_assert_eq!(s.cpu, 1);
        prop_assert_eq!(s.state, state.chars().next().unwrap());
        prop_assert_eq!(s.name, name);
    }

    #[test]
    fn syscall_lines_round_trip(nr in 0i64..500, args in proptest::array::uniform8(any::<u64>())) {
        let line = format!(
            "{nr} {:#x} {:#x} {:#x} {:#x} {:#x} {:#x} {:#x} {:#x}\n",
            args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7]
        );
        match proc::parse_syscall(&line) {
            stackdump_core::model::SyscallState::InSyscall { nr: n, args: a, sp, pc, .. } => {
                prop_assert_eq!(n, nr);
                prop_assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), args[..6].to_vec());
                prop_assert_eq!(sp.0, args[6]);
                prop_assert_eq!(pc.0, args[7]);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn maps_lines_never_panic(lines in proptest::collection::vec("[0-9a-f]{1,12}-[0-9a-f]{1,12} [-r][-w][-x][-ps] [0-9a-f]{1,8} [0-9a-f]{1,3}:[0-9a-f]{1,3} [0-9]{1,8} {0,20}\\PC{0,30}", 0..20)) {
        let text = lines.join("\n");
        let _ = proc::parse_maps(text.as_bytes());
    }

    #[test]
    fn dump_file_names_never_panic(name in "\\PC{0,80}") {
        let _ = DumpFileName::parse(&name);
    }

    #[test]
    fn dump_reader_rejects_garbage_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Dump::from_json(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn dump_reader_survives_truncation_and_bit_flips(cut in 0usize..4000, flip in 0usize..4000, bit in 0u8..8) {
        let good = include_str!("data/sample-dump.json");
        prop_assert!(Dump::from_json(good).is_ok());
        let mut bytes = good.as_bytes().to_vec();
        let cut = cut.min(bytes.len());
        bytes.truncate(cut);
        if let Some(b) = bytes.get_mut(flip) {
            *b ^= 1 << bit;
        }
        let _ = Dump::from_json(&String::from_utf8_lossy(&bytes));
    }
}
