//! Reading files in a target's file system (`/proc/PID/root`: containers, PrivateTmp) without
//! following any symlink.
//!
//! The target decides what is in its dump directory. A process that plants
//! `stackdump-…-r<id>.txt -> /etc/shadow` there must not make a root-run `stackdump dump` print
//! the host's `/etc/shadow`: an absolute symlink seen through `/proc/PID/root` would resolve
//! against *our* root. So every path is resolved with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)` from a descriptor of the target's root, and files are opened with
//! `O_NOFOLLOW | O_NONBLOCK` and must be regular files owned by the target's user. Where
//! `openat2` does not exist (Linux < 5.6), the path is walked one component at a time with
//! `O_NOFOLLOW`, refusing `..`.

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

/// Why a path in the target's file system could not be opened safely.
#[derive(Debug, thiserror::Error)]
pub enum SafeOpenError {
    #[error("{path} is or goes through a symlink, which stackdump does not follow in a target's file system")]
    Symlink { path: String },
    #[error("{path} does not exist")]
    NotFound { path: String },
    #[error("{path} is not a directory")]
    NotADirectory { path: String },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("{path} is owned by uid {owner}, not by the target's user: not read")]
    WrongOwner { path: String, owner: u32 },
    #[error("{path}: {what}")]
    Refused { path: String, what: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl SafeOpenError {
    fn from_errno(path: &str, e: Errno) -> SafeOpenError {
        let path = path.to_string();
        match e {
            Errno::ELOOP => SafeOpenError::Symlink { path },
            Errno::ENOENT => SafeOpenError::NotFound { path },
            Errno::ENOTDIR => SafeOpenError::NotADirectory { path },
            Errno::EXDEV => SafeOpenError::Refused {
                path,
                what: "leaves the target's root",
            },
            other => SafeOpenError::Io {
                path,
                source: std::io::Error::from(other),
            },
        }
    }
}

/// How paths are resolved; `Walk` is the fallback without `openat2`, selectable for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Openat2,
    Walk,
}

/// A descriptor of a target's root directory.
#[derive(Debug)]
pub struct TargetRoot {
    root: OwnedFd,
    method: Method,
}

impl TargetRoot {
    /// Open `/proc/PID/root` (needs the same permission as reading its memory maps).
    pub fn open(pid: i32) -> Result<TargetRoot, SafeOpenError> {
        Self::open_path(&format!("/proc/{pid}/root"))
    }

    /// Use any directory as the root (tests; `/` for our own file system).
    pub fn open_path(path: &str) -> Result<TargetRoot, SafeOpenError> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SafeOpenError::from_errno(path, e))?;
        let method = match std::env::var("STACKDUMP_TEST_NO_OPENAT2").as_deref() {
            Ok("1") => Method::Walk,
            _ => Method::Openat2,
        };
        Ok(TargetRoot { root, method })
    }

    #[cfg(test)]
    pub fn with_method(mut self, method: Method) -> TargetRoot {
        self.method = method;
        self
    }

    /// Open a directory given as an absolute path inside the target's root, for listing.
    pub fn open_dir(&self, path: &str) -> Result<OwnedFd, SafeOpenError> {
        if self.method == Method::Openat2 {
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
            match openat2(self.root.as_fd(), path, how) {
                Ok(fd) => return Ok(fd),
                // No openat2 here (or a flag it does not know): walk instead.
                Err(Errno::ENOSYS) | Err(Errno::EINVAL) | Err(Errno::E2BIG) => {}
                Err(e) => return Err(SafeOpenError::from_errno(path, e)),
            }
        }
        self.walk_dir(path)
    }

    /// The fallback: one component at a time, never following a symlink, refusing `..`.
    fn walk_dir(&self, path: &str) -> Result<OwnedFd, SafeOpenError> {
        let mut cur: OwnedFd = self.root.try_clone().map_err(|e| SafeOpenError::Io {
            path: path.to_string(),
            source: e,
        })?;
        let mut walked = String::new();
        for comp in Path::new(path).components() {
            let name = match comp {
                Component::RootDir | Component::CurDir => continue,
                Component::ParentDir => {
                    return Err(SafeOpenError::Refused {
                        path: path.to_string(),
                        what: "contains `..`",
                    })
                }
                Component::Normal(n) => n,
                Component::Prefix(_) => unreachable!("no prefixes on Linux"),
            };
            walked.push('/');
            walked.push_str(&name.to_string_lossy());
            let fd = openat(
                cur.as_fd(),
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SafeOpenError::from_errno(&walked, e))?;
            let st = fstat(&fd).map_err(|e| SafeOpenError::from_errno(&walked, e))?;
            match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFDIR => cur = fd,
                SFlag::S_IFLNK => return Err(SafeOpenError::Symlink { path: walked }),
                _ => return Err(SafeOpenError::NotADirectory { path: walked }),
            }
        }
        openat(
            cur.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SafeOpenError::from_errno(path, e))
    }
}

/// List the names in a directory opened with [`TargetRoot::open_dir`].
pub fn list_dir(dir: BorrowedFd<'_>) -> std::io::Result<Vec<String>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy();
        if name != "." && name != ".." {
            names.push(name.into_owned());
        }
    }
    Ok(names)
}

/// Open `name` (a single component) in `dir` for reading: no symlink, must be a regular file,
/// owned by one of `owners` when given. `shown` is the path to name in messages.
pub fn open_file(
    dir: BorrowedFd<'_>,
    name: &str,
    owners: Option<&[u32]>,
    shown: &str,
) -> Result<File, SafeOpenError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(SafeOpenError::Refused {
            path: shown.to_string(),
            what: "not a plain file name",
        });
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = match openat2(dir, name, how) {
        Ok(fd) => fd,
        Err(Errno::ENOSYS) | Err(Errno::EINVAL) | Err(Errno::E2BIG) => {
            openat(dir, name, flags, Mode::empty())
                .map_err(|e| SafeOpenError::from_errno(shown, e))?
        }
        Err(e) => return Err(SafeOpenError::from_errno(shown, e)),
    };
    let st = fstat(&fd).map_err(|e| SafeOpenError::from_errno(shown, e))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(SafeOpenError::NotRegular {
            path: shown.to_string(),
        });
    }
    if let Some(owners) = owners {
        if !owners.contains(&st.st_uid) {
            return Err(SafeOpenError::WrongOwner {
                path: shown.to_string(),
                owner: st.st_uid,
            });
        }
    }
    // Back to blocking reads: it is a regular file.
    let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_RDONLY));
    Ok(File::from(fd))
}

/// Read a file opened with [`open_file`], at most `limit` bytes.
pub fn read_limited(file: File, limit: u64, shown: &str) -> Result<Vec<u8>, SafeOpenError> {
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| SafeOpenError::Io {
            path: shown.to_string(),
            source: e,
        })?;
    if buf.len() as u64 > limit {
        return Err(SafeOpenError::Refused {
            path: shown.to_string(),
            what: "larger than the size limit for a dump",
        });
    }
    Ok(buf)
}

/// `/proc/self/fd/N` for a descriptor (to watch it with inotify, or name it in messages).
pub fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("stackdump-rootfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root/tmp/real")).unwrap();
        d
    }

    fn check(method: Method) {
        let d = scratch(&format!("{method:?}"));
        let rootp = d.join("root");
        std::fs::write(d.join("secret"), "secret").unwrap();
        std::fs::write(rootp.join("tmp/real/dump.txt"), "dump").unwrap();
        symlink(d.join("secret"), rootp.join("tmp/real/planted.txt")).unwrap();
        symlink("/tmp/real", rootp.join("tmp/link")).unwrap();
        symlink("real", rootp.join("tmp/rel")).unwrap();
        std::os::unix::net::UnixListener::bind(rootp.join("tmp/real/sock")).unwrap();
        let root = TargetRoot::open_path(rootp.to_str().unwrap())
            .unwrap()
            .with_method(method);

        let dir = root.open_dir("/tmp/real").unwrap();
        let mut names = list_dir(dir.as_fd()).unwrap();
        names.sort();
        assert_eq!(names, ["dump.txt", "planted.txt", "sock"]);
        let f = open_file(dir.as_fd(), "dump.txt", None, "dump.txt").unwrap();
        assert_eq!(read_limited(f, 100, "x").unwrap(), b"dump");
        // The planted symlink is not followed.
        assert!(matches!(
            open_file(dir.as_fd(), "planted.txt", None, "p"),
            Err(SafeOpenError::Symlink { .. })
        ));
        assert!(matches!(
            open_file(dir.as_fd(), "sock", None, "s"),
            Err(SafeOpenError::NotRegular { .. }) | Err(SafeOpenError::Io { .. })
        ));
        assert!(matches!(
            open_file(dir.as_fd(), "../secret", None, "s"),
            Err(SafeOpenError::Refused { .. })
        ));
        // Owner check.
        let me = nix::unistd::geteuid().as_raw();
        assert!(open_file(dir.as_fd(), "dump.txt", Some(&[me]), "d").is_ok());
        assert!(matches!(
            open_file(dir.as_fd(), "dump.txt", Some(&[me + 1]), "d"),
            Err(SafeOpenError::WrongOwner { .. })
        ));
        // Symlinked directories, absolute or relative, are not followed.
        for p in ["/tmp/link", "/tmp/rel", "/tmp/link/", "/tmp/rel/x"] {
            assert!(
                matches!(root.open_dir(p), Err(SafeOpenError::Symlink { .. })),
                "{p}: {:?}",
                root.open_dir(p)
            );
        }
        assert!(matches!(
            root.open_dir("/tmp/none"),
            Err(SafeOpenError::NotFound { .. })
        ));
        assert!(matches!(
            root.open_dir("/tmp/real/dump.txt"),
            Err(SafeOpenError::NotADirectory { .. })
        ));
        // `..` cannot leave the root.
        match root.open_dir("/../../..") {
            Ok(fd) => {
                let mut n = list_dir(fd.as_fd()).unwrap();
                n.sort();
                assert_eq!(n, ["tmp"], "resolved inside the root");
            }
            Err(SafeOpenError::Refused { .. }) => assert_eq!(method, Method::Walk),
            Err(e) => panic!("{e}"),
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn openat2_never_follows_symlinks() {
        check(Method::Openat2);
    }

    #[test]
    fn the_component_walk_never_follows_symlinks() {
        check(Method::Walk);
    }
}
