//! Files a stack names (`env_file`, `extends: file`, `secrets`/`configs` `file`) live beneath
//! the stack's directory, and nowhere else.
//!
//! A compose file comes from whoever holds an API token; the server and the agents read the
//! files it names with their own rights. So a path a stack names is checked twice:
//! - by its text ([`stack_relative`]): an absolute path, a `~` and a `..` that climbs out of
//!   the directory are refused by name, before anything is opened;
//! - when it is opened ([`read_beneath`]): `openat2(2)` with `RESOLVE_BENEATH` resolves it
//!   inside the directory, so a symbolic link that leaves it (one a container with the stack
//!   directory mounted could have made) is refused by the kernel, and only a regular file of
//!   at most [`MAX_STACK_FILE`] bytes is read.
//!
//! Errors name the path, never the content of what was (or would have been) read.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// The largest file a stack may name to be read (an `env_file`, an `extends` file): 1 MiB.
pub const MAX_STACK_FILE: u64 = 1 << 20;

/// `text`, a path a compose file names, as a path relative to the stack directory. Refused
/// (with a message naming it) when it is absolute, starts with `~`, is empty, or climbs out of
/// the directory with `..`.
pub fn stack_relative(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("an empty path names no file".into());
    }
    if text.starts_with('~') {
        return Err(format!(
            "path {text:?} starts with `~`: name a file in the stack directory, relative to it"
        ));
    }
    let path = Path::new(text);
    if path.is_absolute() {
        return Err(format!(
            "path {text:?} is absolute: a stack may only name files in its own directory, relative to it"
        ));
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(format!(
                        "path {text:?} leaves the stack directory: a stack may only name files inside it"
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("path {text:?} is absolute"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!(
            "path {text:?} names the stack directory, not a file"
        ));
    }
    Ok(out)
}

fn escaped(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} resolves outside the stack directory (through a symbolic link or `..`), which is refused",
            rel.display()
        ),
    )
}

/// Open `rel` beneath `dir` for reading: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`.
fn open_beneath(dir: &Path, rel: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, open, openat2};
    let dirfd = open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    match openat2(
        &dirfd,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(fd),
        // The kernel's answer to a path that would leave the directory.
        Err(rustix::io::Errno::XDEV) | Err(rustix::io::Errno::LOOP) => Err(escaped(rel)),
        Err(rustix::io::Errno::NOSYS) => open_resolved_by_hand(dir, rel, flags),
        Err(e) => Err(e.into()),
    }
}

/// For a kernel older than 5.6 (no `openat2`): resolve every link of `rel` by hand, refuse
/// the result when it is not inside `dir`, then open it without following a last link.
fn open_resolved_by_hand(dir: &Path, rel: &Path, flags: rustix::fs::OFlags) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, open};
    let base = std::fs::canonicalize(dir)?;
    let real = std::fs::canonicalize(base.join(rel))?;
    if !real.starts_with(&base) {
        return Err(escaped(rel));
    }
    Ok(open(&real, flags | OFlags::NOFOLLOW, Mode::empty())?)
}

/// Read `rel` (relative to `dir`, as [`stack_relative`] makes it) as text, never leaving `dir`.
/// Refused: a path that resolves outside `dir`, anything but a regular file, a file over
/// [`MAX_STACK_FILE`] bytes, and text that is not UTF-8. No error quotes the file's content.
pub fn read_beneath(dir: &Path, rel: &Path) -> io::Result<String> {
    let fd = open_beneath(dir, rel)?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", rel.display()),
        ));
    }
    if meta.len() > MAX_STACK_FILE {
        return Err(too_large(rel));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_STACK_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STACK_FILE {
        return Err(too_large(rel));
    }
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not UTF-8 text", rel.display()),
        )
    })
}

fn too_large(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is larger than the {} KiB a stack's file may be",
            rel.display(),
            MAX_STACK_FILE >> 10
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_and_stay_inside() {
        for (text, want) in [
            ("app.env", Ok("app.env")),
            ("./conf/app.env", Ok("conf/app.env")),
            ("conf/../app.env", Ok("app.env")),
            ("a/b/../../c", Ok("c")),
            ("/etc/passwd", Err("is absolute")),
            ("../secret", Err("leaves the stack directory")),
            ("a/../../x", Err("leaves the stack directory")),
            ("./..", Err("leaves the stack directory")),
            ("~/x", Err("starts with `~`")),
            ("", Err("empty path")),
            (".", Err("names the stack directory")),
            ("a/..", Err("names the stack directory")),
        ] {
            match (stack_relative(text), want) {
                (Ok(p), Ok(w)) => assert_eq!(p, Path::new(w), "{text:?}"),
                (Err(e), Err(w)) => {
                    assert!(e.contains(w), "{text:?}: {e}");
                    if !text.is_empty() {
                        assert!(e.contains(&format!("{text:?}")), "names the path: {e}");
                    }
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn reads_a_file_beneath_and_refuses_links_that_leave() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "ROOT_ONLY=hunter2\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/app.env"), "A=1\n").unwrap();
        std::os::unix::fs::symlink("conf/app.env", dir.path().join("inside")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../../etc/passwd", dir.path().join("rel"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();

        assert_eq!(
            read_beneath(dir.path(), Path::new("conf/app.env")).unwrap(),
            "A=1\n"
        );
        assert_eq!(
            read_beneath(dir.path(), Path::new("inside")).unwrap(),
            "A=1\n",
            "a link that stays inside is followed"
        );
        for rel in ["abs", "rel", "out/secret", "../secret"] {
            let e = read_beneath(dir.path(), Path::new(rel)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{rel}: {e}");
            let text = e.to_string();
            assert!(
                text.contains("outside the stack directory"),
                "{rel}: {text}"
            );
            assert!(
                !text.contains("hunter2") && !text.contains("root:"),
                "{text}"
            );
        }
        let e = read_beneath(dir.path(), Path::new("/etc/passwd")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    }

    /// The same escapes are refused where the kernel has no `openat2`.
    #[test]
    fn resolving_by_hand_refuses_the_same_escapes() {
        use rustix::fs::OFlags;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "S=1\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.env"), "A=1\n").unwrap();
        std::os::unix::fs::symlink("app.env", dir.path().join("inside")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        for ok in ["app.env", "inside"] {
            let fd = open_resolved_by_hand(dir.path(), Path::new(ok), flags).unwrap();
            let mut text = String::new();
            File::from(fd).read_to_string(&mut text).unwrap();
            assert_eq!(text, "A=1\n", "{ok}");
        }
        let up = format!(
            "../{}/secret",
            outside.path().file_name().unwrap().to_string_lossy()
        );
        assert!(dir.path().join(&up).exists(), "{up} names the outside file");
        for bad in ["abs", "out/secret", up.as_str()] {
            let e = open_resolved_by_hand(dir.path(), Path::new(bad), flags).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{bad}: {e}");
        }
    }

    /// A FIFO in the directory (which a container could make) is refused at once: opening it
    /// does not wait for a writer.
    #[test]
    fn a_fifo_is_refused_without_waiting() {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        let dir = tempfile::tempdir().unwrap();
        mknodat(
            CWD,
            dir.path().join("fifo.env").as_path(),
            FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read_beneath(&path, Path::new("fifo.env")).map_err(|e| e.to_string()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO returns at once");
        assert!(got.unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn only_small_regular_text_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let e = read_beneath(dir.path(), Path::new("sub")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");

        let big = vec![b'A'; usize::try_from(MAX_STACK_FILE).unwrap() + 1];
        std::fs::write(dir.path().join("big.env"), &big).unwrap();
        let e = read_beneath(dir.path(), Path::new("big.env")).unwrap_err();
        assert!(e.to_string().contains("larger than the 1024 KiB"), "{e}");
        let exact = vec![b'A'; usize::try_from(MAX_STACK_FILE).unwrap()];
        std::fs::write(dir.path().join("max.env"), &exact).unwrap();
        assert_eq!(
            read_beneath(dir.path(), Path::new("max.env"))
                .unwrap()
                .len() as u64,
            MAX_STACK_FILE
        );

        std::fs::write(dir.path().join("bin"), [0xff, 0xfe, b's', b'e', b'c']).unwrap();
        let e = read_beneath(dir.path(), Path::new("bin")).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        assert!(!e.to_string().contains("sec"), "{e}");

        let e = read_beneath(dir.path(), Path::new("missing.env")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
