//! Stack files on the host: `<stacks_dir>/<stack>/compose.yaml` and `.env`.
//!
//! Each file is written atomically (a temporary file in the same directory, synced, then
//! renamed over the old one), so a reader never sees half a file and a crash leaves either the
//! old or the new version. Removing a stack's files removes only those two files, and the
//! directory when nothing else is left in it: bind-mounted data kept beside the compose file
//! (`./data`) is never deleted.
//!
//! A stack's files may hold secrets (`.env`): the stack directory is created 0700 and the files
//! 0600, whatever the umask.

use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use dockmesh_core::types::StackFiles;
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// Name of the compose file in a stack directory.
pub const COMPOSE_FILE: &str = "compose.yaml";
/// Name of the env file in a stack directory.
pub const ENV_FILE: &str = ".env";

fn io_err(what: String, e: std::io::Error) -> RuntimeError {
    RuntimeError::new(RuntimeErrorKind::Engine, format!("{what}: {e}")).with_source(e)
}

async fn write_atomic(path: &Path, content: &str) -> Result<(), RuntimeError> {
    let dir = path.parent().expect("stack files live in a directory");
    let name = path.file_name().expect("a file name").to_string_lossy();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = async {
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .await?;
        f.write_all(content.as_bytes()).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io_err(
            format!("writing {} (the previous version is kept)", path.display()),
            e,
        ));
    }
    Ok(())
}

/// Store a stack's files, replacing earlier ones. A stack without `.env` loses an old one.
pub async fn write(stacks_dir: &Path, files: &StackFiles) -> Result<(), RuntimeError> {
    let dir = stacks_dir.join(&files.name);
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .await
        .map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
    write_atomic(&dir.join(COMPOSE_FILE), &files.compose).await?;
    match &files.env {
        Some(env) => write_atomic(&dir.join(ENV_FILE), env).await?,
        None => match tokio::fs::remove_file(dir.join(ENV_FILE)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io_err(
                    format!("removing the old {}", dir.join(ENV_FILE).display()),
                    e,
                ));
            }
        },
    }
    Ok(())
}

async fn read_optional(path: &Path) -> Result<Option<String>, RuntimeError> {
    match tokio::fs::read_to_string(path).await {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("reading {}", path.display()), e)),
    }
}

/// A stack's files, when its compose file exists.
pub async fn read(stacks_dir: &Path, stack: &str) -> Result<Option<StackFiles>, RuntimeError> {
    let dir = stacks_dir.join(stack);
    let Some(compose) = read_optional(&dir.join(COMPOSE_FILE)).await? else {
        return Ok(None);
    };
    let env = read_optional(&dir.join(ENV_FILE)).await?;
    Ok(Some(StackFiles {
        name: stack.to_owned(),
        compose,
        env,
    }))
}

/// Remove a stack's compose file and `.env` (and its directory, when that is then empty).
pub async fn remove(stacks_dir: &Path, stack: &str) -> Result<(), RuntimeError> {
    let dir = stacks_dir.join(stack);
    for name in [COMPOSE_FILE, ENV_FILE] {
        let path = dir.join(name);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", path.display()), e)),
        }
    }
    // Only succeeds when nothing else (bind-mounted data, env_files) is left.
    let _ = tokio::fs::remove_dir(&dir).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_round_trip_and_removal_keeps_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let files = StackFiles {
            name: "web".into(),
            compose: "services: {}\n".into(),
            env: Some("A=1\n".into()),
        };
        assert_eq!(read(tmp.path(), "web").await.unwrap(), None);
        write(tmp.path(), &files).await.unwrap();
        assert_eq!(read(tmp.path(), "web").await.unwrap(), Some(files.clone()));
        let mode = |p: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(tmp.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("web"), 0o700, "the stack directory is private");
        assert_eq!(
            mode("web/compose.yaml"),
            0o600,
            "the compose file is private"
        );
        assert_eq!(mode("web/.env"), 0o600, "the env file is private");
        let without_env = StackFiles {
            env: None,
            ..files.clone()
        };
        write(tmp.path(), &without_env).await.unwrap();
        assert_eq!(read(tmp.path(), "web").await.unwrap(), Some(without_env));
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("web"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            [COMPOSE_FILE],
            "no temporary files are left behind"
        );

        std::fs::create_dir(tmp.path().join("web/data")).unwrap();
        remove(tmp.path(), "web").await.unwrap();
        assert_eq!(read(tmp.path(), "web").await.unwrap(), None);
        assert!(
            tmp.path().join("web/data").exists(),
            "bind data beside the files is kept"
        );
        remove(tmp.path(), "web").await.unwrap();
        std::fs::remove_dir(tmp.path().join("web/data")).unwrap();
        remove(tmp.path(), "web").await.unwrap();
        assert!(
            !tmp.path().join("web").exists(),
            "an empty stack directory is removed"
        );
    }
}
