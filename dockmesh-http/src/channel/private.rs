//! Private directories: the server's data directory and the agent's state directory hold keys,
//! databases and stack files, so they are `0700` and owned by the user dockmesh runs as.
//!
//! [`private_dir`] creates a missing directory `0700`, tightens an existing one of ours to
//! `0700`, and refuses one owned by another user (whoever owns it could read or replace what
//! dockmesh keeps there). Files inside are created `0600` where they are written.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A directory that cannot be made private.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateDirError {
    /// The directory belongs to another user.
    #[error("{path} is owned by user {owner}, not by this process's user {us}")]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// Our effective uid.
        us: u32,
    },
    /// It exists and is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Creating, reading or changing it failed.
    #[error("{what} {path} failed")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl PrivateDirError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            PrivateDirError::NotOurs { .. } => {
                "run dockmesh as the directory's owner, or give it a directory of its own \
                 (nothing in it was read or changed)"
            }
            PrivateDirError::NotADirectory { .. } => "give the path of a directory",
            PrivateDirError::Io { .. } => "check the path and its parent's permissions",
        }
    }
}

/// Make `dir` private: create it (and missing parents) `0700`, or, when it exists, check that
/// this process's user owns it and tighten it to `0700`. One owned by another user is refused
/// and left as it is.
pub fn private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    let io = |what| {
        move |source| PrivateDirError::Io {
            what,
            path: dir.to_owned(),
            source,
        }
    };
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => PrivateDirError::NotADirectory {
                path: dir.to_owned(),
            },
            _ => io("creating the directory")(e),
        });
    }
    let meta = std::fs::metadata(dir).map_err(io("reading the directory"))?;
    if !meta.is_dir() {
        return Err(PrivateDirError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let us = rustix::process::geteuid().as_raw();
    if meta.uid() != us {
        return Err(PrivateDirError::NotOurs {
            path: dir.to_owned(),
            owner: meta.uid(),
            us,
        });
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("making the directory private (0700) of"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_0700_and_an_existing_one_of_ours_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("a/b");
        private_dir(&new).unwrap();
        assert_eq!(mode(&new), 0o700);

        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(open.join("kept"), b"x").unwrap();
        private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        assert_eq!(std::fs::read(open.join("kept")).unwrap(), b"x");

        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            private_dir(&file),
            Err(PrivateDirError::NotADirectory { .. })
        ));
    }

    #[test]
    fn a_directory_of_another_user_is_refused_and_left_alone() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: only root can give a directory to another user");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = private_dir(&theirs).unwrap_err();
        assert!(
            matches!(
                e,
                PrivateDirError::NotOurs {
                    owner: 65534,
                    us: 0,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("owned by user 65534"), "{e}");
        assert_eq!(mode(&theirs), 0o755, "left as it was");
    }
}
