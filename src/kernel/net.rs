//! Sockets as the kernel lists them in `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}` (the tables of
//! the process's network namespace), matched to a process's fds by inode.
//!
//! The parsers are our own rather than `procfs-core`'s: theirs reject a whole table when one line
//! does not parse (a state they do not know, a new column), and drop the unix `Flags` column that
//! tells a listening socket. Ours skip a bad line and go on, which is what a tool reading 10,000
//! sockets of a process in trouble needs.

use crate::model::SocketFacts;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::Path;

/// The TCP state names of `include/net/tcp_states.h`, by number.
pub fn tcp_state_name(st: u8) -> &'static str {
    match st {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// UDP sockets reuse the TCP numbers: 1 is a connected socket, 7 an unconnected one.
fn udp_state_name(st: u8) -> &'static str {
    match st {
        0x01 => "CONNECTED",
        0x07 => "UNCONNECTED",
        other => tcp_state_name(other),
    }
}

/// Parse an `ADDR:PORT` of `/proc/net/tcp{,6}`: the address as the kernel's `%08X` of each
/// 32-bit word in memory order (so the bytes of each word are in host order), the port in hex.
pub fn parse_inet_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |w: &str| u32::from_str_radix(w, 16).ok().map(u32::to_ne_bytes);
    match addr.len() {
        8 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(word(addr)?),
            port,
        ))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            let ip = Ipv6Addr::from(bytes);
            // Show v4-mapped addresses the way people write them.
            match ip.to_ipv4_mapped() {
                Some(v4) => Some(SocketAddr::V4(SocketAddrV4::new(v4, port))),
                None => Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))),
            }
        }
        _ => None,
    }
}

/// One line of `/proc/net/tcp`, `tcp6`, `udp` or `udp6` (`protocol` is the table's name).
///
/// `  sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt   uid  timeout inode`
pub fn parse_inet_line(protocol: &str, line: &str) -> Option<SocketFacts> {
    let mut f = line.split_ascii_whitespace();
    let slot = f.next()?;
    if !slot.ends_with(':') {
        return None; // the header
    }
    let local = parse_inet_addr(f.next()?)?;
    let remote = parse_inet_addr(f.next()?)?;
    let st = u8::from_str_radix(f.next()?, 16).ok()?;
    let (tx, rx) = f.next()?.split_once(':')?;
    let tx_queue = u64::from_str_radix(tx, 16).ok()?;
    let rx_queue = u64::from_str_radix(rx, 16).ok()?;
    let _timer = f.next()?;
    let _retransmits = f.next()?;
    let _uid = f.next()?;
    let _timeout = f.next()?;
    let inode: u64 = f.next()?.parse().ok()?;
    let state = if protocol.starts_with("udp") {
        udp_state_name(st)
    } else {
        tcp_state_name(st)
    };
    let unspecified = remote.ip().is_unspecified() && remote.port() == 0;
    Some(SocketFacts {
        inode,
        protocol: protocol.to_string(),
        state: state.to_string(),
        local: Some(local.to_string()),
        remote: (!unspecified).then(|| remote.to_string()),
        rx_queue,
        tx_queue,
    })
}

/// `__SO_ACCEPTCON` in the unix table's `Flags`: a listening socket.
const SO_ACCEPTCON: u32 = 1 << 16;

/// One line of `/proc/net/unix`:
///
/// `Num       RefCount Protocol Flags    Type St Inode Path`
pub fn parse_unix_line(line: &str) -> Option<SocketFacts> {
    let mut f = line.split_ascii_whitespace();
    let slot = f.next()?;
    if !slot.ends_with(':') {
        return None;
    }
    let _refcount = f.next()?;
    let _protocol = f.next()?;
    let flags = u32::from_str_radix(f.next()?, 16).ok()?;
    let _type = f.next()?;
    let st = u8::from_str_radix(f.next()?, 16).ok()?;
    let inode: u64 = f.next()?.parse().ok()?;
    // The path may contain spaces: it is the rest of the line.
    let path = f.collect::<Vec<_>>().join(" ");
    let state = if flags & SO_ACCEPTCON != 0 {
        "LISTEN"
    } else {
        match st {
            1 => "UNCONNECTED",
            2 => "CONNECTING",
            3 => "CONNECTED",
            4 => "DISCONNECTING",
            _ => "UNKNOWN",
        }
    };
    Some(SocketFacts {
        inode,
        protocol: "unix".to_string(),
        state: state.to_string(),
        local: (!path.is_empty()).then_some(path),
        remote: None,
        rx_queue: 0,
        tx_queue: 0,
    })
}

/// The tables read, cheapest first: reading `tcp` or `tcp6` walks the whole TCP hash table of
/// the namespace (milliseconds on a machine with much memory, however few sockets there are), so
/// they come last and are skipped once every socket we look for has been found.
pub const TABLES: &[&str] = &["unix", "udp", "udp6", "tcp", "tcp6"];

/// Parse one table's text, keeping only sockets whose inode is in `wanted`.
pub fn parse_table(
    protocol: &str,
    text: &str,
    wanted: &HashSet<u64>,
    out: &mut HashMap<u64, SocketFacts>,
) {
    for line in text.lines().skip(1) {
        let parsed = if protocol == "unix" {
            parse_unix_line(line)
        } else {
            parse_inet_line(protocol, line)
        };
        if let Some(s) = parsed {
            if wanted.contains(&s.inode) {
                out.entry(s.inode).or_insert(s);
            }
        }
    }
}

/// The sockets with these inodes, from the tables of `<proc_pid_dir>/net/`. Sockets in no table
/// (netlink, packet, raw, another namespace) are absent from the result. Unreadable tables are
/// reported in the error list and skipped.
pub fn read_sockets(
    proc_pid_dir: &Path,
    wanted: &HashSet<u64>,
    errors: &mut Vec<String>,
) -> HashMap<u64, SocketFacts> {
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    for table in TABLES {
        if out.len() == wanted.len() {
            break;
        }
        let path = proc_pid_dir.join("net").join(table);
        match std::fs::read(&path) {
            Ok(bytes) => parse_table(table, &String::from_utf8_lossy(&bytes), wanted, &mut out),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // no IPv6, no unix
            Err(e) => errors.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C41 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 68190 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C41 0100007F:D2B4 08 00000000:0000012C 00:00000000 00000000     0        0 68194 1 0000000000000000 20 4 30 10 -1
   2: garbage line
   3: 0100007F:9C41 0100007F:D2B6 08 00000000:0000012C 00:00000000 00000000     0        0 68195 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn tcp_lines() {
        let l = parse_inet_line(
            "tcp",
            "   1: 0100007F:9C41 0100007F:D2B4 08 00000010:0000012C 00:00000000 00000000  1000        0 68194 1 0000000000000000 20 4 30 10 -1",
        )
        .unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(l.local.as_deref(), Some("127.0.0.1:40001"));
            assert_eq!(l.remote.as_deref(), Some("127.0.0.1:53940"));
        }
        assert_eq!(l.state, "CLOSE_WAIT");
        assert_eq!(l.rx_queue, 300);
        assert_eq!(l.tx_queue, 16);
        assert_eq!(l.inode, 68194);
        assert_eq!(l.protocol, "tcp");
        // A listening socket has no remote address.
        let l = parse_inet_line("tcp", TCP.lines().nth(1).unwrap()).unwrap();
        assert_eq!(l.state, "LISTEN");
        assert_eq!(l.remote, None);
        assert_eq!(l.rx_queue, 3);
        // The header and broken lines are not sockets.
        assert!(parse_inet_line("tcp", TCP.lines().next().unwrap()).is_none());
        assert!(parse_inet_line("tcp", "   2: garbage line").is_none());
        assert!(parse_inet_line("tcp", "").is_none());
    }

    #[test]
    fn tcp6_lines_and_v4_mapped() {
        // [::1]:8080 listening
        let l = parse_inet_line(
            "tcp6",
            "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0",
        )
        .unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(l.local.as_deref(), Some("[::1]:8080"));
            // ::ffff:127.0.0.1 reads as 127.0.0.1
            let a = parse_inet_addr("0000000000000000FFFF00000100007F:0050").unwrap();
            assert_eq!(a.to_string(), "127.0.0.1:80");
        }
        assert_eq!(l.state, "LISTEN");
        assert_eq!(l.inode, 4242);
        assert!(parse_inet_addr("0100007F").is_none());
        assert!(parse_inet_addr("0100007:0050").is_none());
        // Never a panic on odd bytes (a multi-byte character across a word boundary).
        assert!(parse_inet_addr("0000000000000000FFFF00000100007é:0050").is_none());
        assert!(parse_inet_addr("000000000000000ééFFF00000100007F:0050").is_none());
    }

    #[test]
    fn udp_states() {
        let l = parse_inet_line(
            "udp",
            "  123: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0000000000000000 0",
        )
        .unwrap();
        assert_eq!(l.state, "UNCONNECTED");
        assert_eq!(l.protocol, "udp");
    }

    #[test]
    fn unix_lines() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 20731 /run/systemd/private
0000000000000000: 00000003 00000000 00000000 0001 03 20999
0000000000000000: 00000002 00000000 00000000 0002 01 21000 @abstract name
";
        let wanted: HashSet<u64> = [20731, 20999, 21000].into_iter().collect();
        let mut out = HashMap::new();
        parse_table("unix", text, &wanted, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[&20731].state, "LISTEN");
        assert_eq!(out[&20731].local.as_deref(), Some("/run/systemd/private"));
        assert_eq!(out[&20999].state, "CONNECTED");
        assert_eq!(out[&20999].local, None);
        assert_eq!(out[&21000].local.as_deref(), Some("@abstract name"));
    }

    #[test]
    fn table_skips_bad_lines_and_unwanted_inodes() {
        let wanted: HashSet<u64> = [68194, 68195].into_iter().collect();
        let mut out = HashMap::new();
        parse_table("tcp", TCP, &wanted, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out
            .values()
            .all(|s| s.state == "CLOSE_WAIT" && s.rx_queue == 300));
    }

    #[test]
    fn reads_our_own_listening_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let inode: u64 = link
            .to_string_lossy()
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .unwrap();
        let mut errors = Vec::new();
        let found = read_sockets(
            Path::new("/proc/self"),
            &[inode].into_iter().collect(),
            &mut errors,
        );
        let s = &found[&inode];
        assert_eq!(s.state, "LISTEN", "{s:?} {errors:?}");
        assert_eq!(s.local.as_deref(), Some(&*format!("127.0.0.1:{port}")));
    }
}
