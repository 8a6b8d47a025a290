//! The short syntaxes of ports (`"127.0.0.1:8080:80/tcp"`) and mounts (`"data:/srv:ro"`), and
//! host paths of binds relative to the stack directory.

use super::{MountKind, PortSpec};
use std::path::{Component, Path, PathBuf};

pub(super) fn normalize_protocol(p: Option<&str>) -> Result<String, String> {
    match p.map(str::to_ascii_lowercase).as_deref() {
        None | Some("tcp") => Ok("tcp".into()),
        Some("udp") => Ok("udp".into()),
        Some(other) => Err(format!(
            "port protocol `{other}` is not supported (use tcp or udp)"
        )),
    }
}

pub(super) fn parse_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid port {text:?}");
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let n = text.parse::<u16>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parse a short-syntax port: `[[host_ip:]host_port:]container_port[/protocol]`, with ranges
/// (`8000-8002:8000-8002`) and bracketed IPv6 addresses.
pub fn parse_port(text: &str) -> Result<Vec<PortSpec>, String> {
    let (body, proto) = match text.rsplit_once('/') {
        Some((b, p)) => (b, Some(p)),
        None => (text, None),
    };
    let protocol = normalize_protocol(proto)?;
    let (host_ip, rest) = if let Some(after) = body.strip_prefix('[') {
        let (ip, rest) = after
            .split_once(']')
            .ok_or_else(|| format!("invalid port {text:?}: unclosed `[`"))?;
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("invalid port {text:?}"))?;
        (Some(ip.to_owned()), rest)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (None, body),
            3 => (
                Some(parts[0].to_owned()).filter(|s| !s.is_empty()),
                &body[parts[0].len() + 1..],
            ),
            _ => return Err(format!("invalid port {text:?}")),
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (Some(h).filter(|h| !h.is_empty()), c),
        None => (None, rest),
    };
    let (c0, c1) = parse_range(container).map_err(|e| format!("{e} in {text:?}"))?;
    let count = c1 - c0;
    let hosts: Vec<Option<u16>> = match host {
        None => vec![None; usize::from(count) + 1],
        Some(h) => {
            let (h0, h1) = parse_range(h).map_err(|e| format!("{e} in {text:?}"))?;
            if h1 - h0 != count {
                return Err(format!(
                    "invalid port {text:?}: the host and container ranges differ in length"
                ));
            }
            (h0..=h1).map(Some).collect()
        }
    };
    Ok((c0..=c1)
        .zip(hosts)
        .map(|(container_port, host_port)| PortSpec {
            host_ip: host_ip.clone(),
            host_port,
            container_port,
            protocol: protocol.clone(),
        })
        .collect())
}

/// Parse a short-syntax mount `source:target[:ro|rw]`. A source starting with `/`, `.` or `~`
/// is a host path; anything else names a volume. The other options are read by
/// [`parse_short_mount_flags`].
pub fn parse_short_mount(text: &str) -> Result<(MountKind, String, String, bool), String> {
    parse_short_mount_flags(text).map(|(k, s, t, f)| (k, s, t, f.read_only))
}

/// The options of a mount beyond its source and target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountFlags {
    /// `ro`.
    pub read_only: bool,
    /// `nocopy` (volumes): a new volume does not get the image's content.
    pub no_copy: bool,
    /// `z` or `Z` (binds): relabel for SELinux, shared or private.
    pub selinux: Option<String>,
    /// `cached`, `delegated` or `consistent`.
    pub consistency: Option<String>,
}

/// Parse a short-syntax mount `source:target[:OPTIONS]`, where OPTIONS are comma-separated
/// `ro`, `rw`, `nocopy` (volumes), `z`, `Z` (binds), `cached`, `delegated`, `consistent`.
pub fn parse_short_mount_flags(
    text: &str,
) -> Result<(MountKind, String, String, MountFlags), String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [_] => {
            return Err(format!(
                "volume {text:?} is anonymous, which is not supported: its data could not be moved; give it a name (name:{text})"
            ));
        }
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        _ => {
            return Err(format!(
                "invalid volume {text:?}: expected source:target[:options]"
            ));
        }
    };
    if source.is_empty() {
        return Err(format!("invalid volume {text:?}: empty source"));
    }
    let kind = if source.starts_with(['/', '.', '~']) {
        MountKind::Bind
    } else {
        MountKind::Volume
    };
    let mut flags = MountFlags::default();
    for option in mode.into_iter().flat_map(|m| m.split(',')) {
        match (option, kind) {
            ("rw", _) => flags.read_only = false,
            ("ro", _) => flags.read_only = true,
            ("nocopy", MountKind::Volume) => flags.no_copy = true,
            ("z" | "Z", MountKind::Bind) => flags.selinux = Some(option.to_owned()),
            ("cached" | "delegated" | "consistent", _) => {
                flags.consistency = Some(option.to_owned())
            }
            (other, _) => {
                return Err(format!(
                    "volume {text:?}: mount option `{other}` is not supported here (ro, rw, \
                     nocopy for volumes, z and Z for binds, cached, delegated, consistent)"
                ));
            }
        }
    }
    Ok((kind, source.to_owned(), target.to_owned(), flags))
}

/// A host path from the file: absolute, or relative to the stack directory. `~` is refused (the
/// home directory differs between hosts).
pub(super) fn resolve_host_path(dir: &Path, text: &str) -> Result<PathBuf, String> {
    if text.starts_with('~') {
        return Err(format!(
            "path {text:?} starts with `~`: use an absolute path or one relative to the stack directory"
        ));
    }
    let joined = if Path::new(text).is_absolute() {
        PathBuf::from(text)
    } else {
        dir.join(text)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}
