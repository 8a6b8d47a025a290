//! What each service of a stack asks of its host, for core's host policy
//! ([`dockmesh_core::host_policy`]): read from the compose file with the loader the deploy uses.
//!
//! The server has a stack's `compose.yaml` and `.env`, not the host's stack directory. So the
//! files are loaded as if the stack lived in two different made-up directories: a bind mount
//! whose host path differs between the two is relative to the stack directory (within it, or
//! climbing out of it); one that is the same is absolute. Other files the compose file names
//! (`env_file`, `extends: file:`) are not on the server: they read as empty, so an `extends`
//! from another file cannot be checked and the stack is refused, and an `env_file` changes
//! nothing a policy looks at.

use crate::compose::{self, MountKind, NetworkMode, StackSpec};
use dockmesh_core::host_policy::{BindSource, ComposeInspector, ServicePrivileges};
use dockmesh_core::types::StackFiles;
use std::path::{Path, PathBuf};

/// Two stack directories that no real one is: deep enough that a relative path climbing out of
/// one still shows as relative.
fn sentinel(tag: &str) -> PathBuf {
    let mut p = PathBuf::from("/");
    for _ in 0..64 {
        p.push(tag);
    }
    p
}

/// [`ComposeInspector`] with the compose loader.
#[derive(Debug, Clone, Copy, Default)]
pub struct ComposeInspect;

impl ComposeInspector for ComposeInspect {
    fn inspect(&self, files: &StackFiles) -> Result<Vec<ServicePrivileges>, String> {
        privileges(files)
    }
}

fn load_in(files: &StackFiles, dir: &Path) -> Result<StackSpec, String> {
    // No file but compose.yaml and .env is on the server: every other one reads as empty.
    compose::load(files, dir, &|_| Ok(String::new())).map_err(|e| e.to_string())
}

/// What each service of `files` asks of its host.
pub fn privileges(files: &StackFiles) -> Result<Vec<ServicePrivileges>, String> {
    let (da, db) = (sentinel("a"), sentinel("b"));
    let a = load_in(files, &da)?;
    let b = load_in(files, &db)?;
    let mut out = Vec::new();
    for sa in &a.services {
        let sb = b
            .service(&sa.name)
            .ok_or_else(|| format!("service `{}` does not load the same twice", sa.name))?;
        let o = &sa.options;
        // `pid`, `ipc` and `userns_mode` are refused by the loader itself (not supported).
        let mut host_namespaces = Vec::new();
        if o.network_mode == Some(NetworkMode::Host) {
            host_namespaces.push("network_mode".to_owned());
        }
        let mut binds = Vec::new();
        for ma in sa.mounts.iter().filter(|m| m.kind == MountKind::Bind) {
            // The same mount in the other load: the one at the same container path.
            let in_b = sb
                .mounts
                .iter()
                .find(|mb| mb.target == ma.target)
                .map_or(ma.source.as_str(), |mb| mb.source.as_str());
            binds.push(classify(&ma.source, in_b, &da));
        }
        out.push(ServicePrivileges {
            service: sa.name.clone(),
            privileged: o.privileged,
            host_namespaces,
            devices: o.devices.iter().map(|d| d.host.clone()).collect(),
            cap_add: o.cap_add.clone(),
            binds,
        });
    }
    Ok(out)
}

fn classify(in_a: &str, in_b: &str, dir_a: &Path) -> BindSource {
    if in_a == in_b {
        return BindSource::Absolute(in_a.to_owned());
    }
    match Path::new(in_a).strip_prefix(dir_a) {
        Ok(rest) => BindSource::InStack(rest.display().to_string()),
        Err(_) => {
            // Climbed out: how far, told relative to the stack directory.
            let kept = Path::new(in_a)
                .components()
                .zip(dir_a.components())
                .take_while(|(x, y)| x == y)
                .count();
            let up = dir_a.components().count() - kept;
            let rest: PathBuf = Path::new(in_a).components().skip(kept).collect();
            let mut shown = "../".repeat(up);
            shown.push_str(&rest.display().to_string());
            BindSource::OutsideStack(shown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(compose: &str) -> Vec<ServicePrivileges> {
        privileges(&StackFiles {
            name: "web".into(),
            compose: compose.into(),
            env: None,
        })
        .unwrap()
    }

    #[test]
    fn privileges_are_read_from_the_compose_file() {
        let got = of("services:
  app:
    image: x
    privileged: true
    network_mode: host
    cap_add: [NET_ADMIN]
    devices: [\"/dev/kvm:/dev/kvm\"]
    volumes:
      - /etc:/host-etc:ro
      - ./conf:/conf
      - ../other:/other
      - data:/data
  db:
    image: y
volumes:
  data: {}
");
        assert_eq!(got.len(), 2);
        let app = got.iter().find(|s| s.service == "app").unwrap();
        assert!(app.privileged);
        assert_eq!(app.host_namespaces, ["network_mode"]);
        assert_eq!(app.cap_add, ["NET_ADMIN"]);
        assert_eq!(app.devices, ["/dev/kvm"]);
        assert_eq!(
            app.binds,
            [
                BindSource::Absolute("/etc".into()),
                BindSource::InStack("conf".into()),
                BindSource::OutsideStack("../other".into()),
            ]
        );
        let db = got.iter().find(|s| s.service == "db").unwrap();
        assert_eq!(
            db,
            &ServicePrivileges {
                service: "db".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn an_extends_from_another_file_cannot_be_checked() {
        let e = privileges(&StackFiles {
            name: "web".into(),
            compose: "services:\n  app:\n    extends:\n      file: base.yaml\n      service: b\n"
                .into(),
            env: None,
        })
        .unwrap_err();
        assert!(!e.is_empty());
    }
}
