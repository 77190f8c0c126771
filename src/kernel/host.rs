//! Which machine (and container) a dump comes from: the `host` object of a dump, so that dumps
//! collected from a fleet can be told apart (`docs/FORMAT.md`).

use crate::model::Host;
use std::io::Read;

/// At most this much of `/proc/PID/cgroup` is read (a cgroup v1 host lists a dozen lines).
const CGROUP_MAX: u64 = 8192;

fn read_small(path: &str, max: u64) -> Option<String> {
    let mut s = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(max)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

fn cstr(field: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The host `pid` runs on, as the process itself sees it (`pid` = `None`: this process). The
/// host name is the UTS namespace's of the caller: the dumper runs in the target, so its dumps
/// carry the container's host name; `inspect` names the machine it runs on.
pub fn host(pid: Option<i32>) -> Host {
    // SAFETY: uname fills the struct it is given; a zeroed utsname is a valid one.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is a valid, writable utsname.
    let ok = unsafe { libc::uname(&mut uts) } == 0;
    let (hostname, kernel, arch) = if ok {
        (cstr(&uts.nodename), cstr(&uts.release), cstr(&uts.machine))
    } else {
        (
            String::new(),
            String::new(),
            std::env::consts::ARCH.to_string(),
        )
    };
    let boot_id = read_small("/proc/sys/kernel/random/boot_id", 64)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let path = match pid {
        Some(p) => format!("/proc/{p}/cgroup"),
        None => "/proc/self/cgroup".to_string(),
    };
    let cgroup = read_small(&path, CGROUP_MAX).and_then(|s| cgroup_path(&s));
    let container_id = cgroup.as_deref().and_then(container_id);
    Host {
        hostname,
        boot_id,
        kernel,
        arch,
        cgroup,
        container_id,
    }
}

/// The cgroup v2 path (`0::/system.slice/x.service`), else the first v1 hierarchy's; `None`
/// for the root cgroup.
pub fn cgroup_path(text: &str) -> Option<String> {
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" {
            return (path != "/").then(|| path.to_string());
        }
        if v1.is_none() && path != "/" {
            v1 = Some(path.to_string());
        }
    }
    v1
}

/// The container id in a cgroup path: the last 64-hex-digit component or part of one
/// (`/docker/<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `/kubepods/.../<id>`).
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|comp| {
        let comp = comp.strip_suffix(".scope").unwrap_or(comp);
        let tail = comp.rsplit(['-', ':']).next().unwrap_or(comp);
        (tail.len() == 64 && tail.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| tail.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_and_container_ids() {
        let id = "4f1c".repeat(16);
        assert_eq!(cgroup_path("0::/\n"), None);
        assert_eq!(
            cgroup_path("0::/system.slice/nginx.service\n").as_deref(),
            Some("/system.slice/nginx.service")
        );
        let v1 = format!("12:pids:/docker/{id}\n11:cpu,cpuacct:/docker/{id}\n");
        assert_eq!(cgroup_path(&v1), Some(format!("/docker/{id}")));
        for p in [
            format!("/docker/{id}"),
            format!("/system.slice/docker-{id}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/cri-containerd-{id}.scope"),
            format!("/kubepods/besteffort/pod1234/{id}"),
        ] {
            assert_eq!(container_id(&p).as_deref(), Some(id.as_str()), "{p}");
        }
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-3.scope"),
            None
        );
    }

    #[test]
    fn this_host_has_a_name_a_boot_id_and_a_kernel() {
        let h = host(None);
        assert!(!h.kernel.is_empty());
        assert_eq!(h.arch, std::env::consts::ARCH);
        assert_eq!(h.boot_id.len(), 36, "{:?}", h.boot_id);
    }
}
