//! `dockmesh stack check --file compose.yaml [--env-file .env] [--profile P]… [--name N] [--json]`:
//! validate a compose file offline, with the loader a deploy uses (no server, no engine).
//!
//! - Exit 0: the file would deploy; prints what would be created (services with their image,
//!   container, ports and mounts; volumes; networks) and the bind mounts, which a migration
//!   does not move.
//! - Exit 1: prints every problem of the file (unsupported keys, bad values), each with where
//!   it is.
//! - Exit 2: the compose file or the env file cannot be read.
//!
//! The project name is `--name`, else the file's `name:`, else its directory's name (as Compose
//! derives it). The env file is `--env-file`, else `.env` beside the compose file when there is
//! one. Profiles are the `--profile`s given, else `COMPOSE_PROFILES` of the env file.

use clap::Args;
use dockmesh_core::types::StackFiles;
use dockmesh_docker::compose::{self, ComposeError, MountKind, NetworkMode, StackSpec};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The arguments of `dockmesh stack check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The compose file.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// The env file (default: `.env` beside the compose file, when it exists).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// A profile to activate (repeatable; default: `COMPOSE_PROFILES` of the env file).
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// The stack name (default: the file's `name:`, else its directory's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Print one JSON object instead of lines (set from the global `--json`).
    #[arg(skip)]
    pub json: bool,
}

/// Run `dockmesh stack check` with parsed arguments.
pub fn run_check(mut args: CheckArgs, json: bool) -> ExitCode {
    args.json = json;
    check(&args)
}

fn unreadable(args: &CheckArgs, path: &Path, e: &std::io::Error) -> ExitCode {
    let message = format!("{} cannot be read: {e}", path.display());
    if args.json {
        println!("{}", json!({"ok": false, "error": message}));
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(2)
}

fn check(args: &CheckArgs) -> ExitCode {
    let compose_text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return unreadable(args, &args.file, &e),
    };
    let dir = args
        .file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let env = match &args.env_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => return unreadable(args, p, &e),
        },
        None => std::fs::read_to_string(dir.join(".env")).ok(),
    };
    let name = args
        .name
        .clone()
        .or_else(|| compose::declared_name(&compose_text))
        .unwrap_or_else(|| {
            compose::project_name_of_dir(
                &dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        });
    let files = StackFiles {
        name,
        compose: compose_text,
        env,
    };
    let profiles = (!args.profiles.is_empty()).then_some(args.profiles.as_slice());
    let loaded = compose::load_with_profiles(
        &files,
        &dir,
        // The user's own files, read as the user: paths are still relative to the stack
        // directory (a server refuses the rest), but symbolic links are followed.
        &|p: &Path| std::fs::read_to_string(dir.join(p)),
        profiles,
    );
    match loaded {
        Ok(spec) => {
            if args.json {
                println!("{}", summary_json(&spec));
            } else {
                print!("{}", summary_text(&spec));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let problems = problems(&e);
            if args.json {
                println!("{}", json!({"ok": false, "problems": problems}));
            } else {
                eprintln!(
                    "{} cannot be deployed ({} problem{}):",
                    args.file.display(),
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                );
                for p in &problems {
                    eprintln!("  - {p}");
                }
            }
            ExitCode::from(1)
        }
    }
}

/// Each problem of the error, with its location and advice.
fn problems(e: &ComposeError) -> Vec<String> {
    match e {
        ComposeError::Several { problems } => problems.iter().map(ComposeError::report).collect(),
        other => vec![other.report()],
    }
}

fn binds(spec: &StackSpec) -> Vec<(String, String, String)> {
    spec.services
        .iter()
        .flat_map(|s| {
            s.mounts
                .iter()
                .filter(|m| m.kind == MountKind::Bind)
                .map(|m| (s.name.clone(), m.source.clone(), m.target.clone()))
        })
        .collect()
}

fn network_text(s: &compose::ServiceSpec) -> String {
    match &s.options.network_mode {
        Some(NetworkMode::Host) => "host".into(),
        Some(NetworkMode::None) => "none".into(),
        Some(NetworkMode::Service(n)) => format!("service:{n}"),
        None => s.networks.keys().cloned().collect::<Vec<_>>().join(", "),
    }
}

fn port_text(p: &compose::PortSpec) -> String {
    let host = match (&p.host_ip, p.host_port) {
        (Some(ip), Some(port)) => format!("{ip}:{port}"),
        (Some(ip), None) => format!("{ip}:(any)"),
        (None, Some(port)) => port.to_string(),
        (None, None) => "(any)".into(),
    };
    format!("{host}->{}/{}", p.container_port, p.protocol)
}

fn summary_text(spec: &StackSpec) -> String {
    let mut out = format!("stack {}: ok\nservices:\n", spec.project);
    for s in &spec.services {
        out.push_str(&format!(
            "  {} (image {}, container {}, networks: {})\n",
            s.name,
            s.image,
            s.container_name(&spec.project),
            network_text(s)
        ));
        for p in &s.ports {
            out.push_str(&format!("    port {}\n", port_text(p)));
        }
        for m in &s.mounts {
            out.push_str(&format!(
                "    {} {} -> {}{}\n",
                match m.kind {
                    MountKind::Volume => "volume",
                    MountKind::Bind => "bind",
                },
                m.source,
                m.target,
                if m.read_only { " (read-only)" } else { "" }
            ));
        }
        for f in &s.files {
            out.push_str(&format!(
                "    file {} (a secret or config written into the container)\n",
                f.target
            ));
        }
    }
    let created = |external: bool| {
        if external {
            " (external: must exist)"
        } else {
            ""
        }
    };
    out.push_str("volumes:\n");
    for v in spec.volumes.values() {
        out.push_str(&format!("  {}{}\n", v.engine_name, created(v.external)));
    }
    out.push_str("networks:\n");
    for n in spec.networks.values() {
        out.push_str(&format!("  {}{}\n", n.engine_name, created(n.external)));
    }
    let binds = binds(spec);
    if !binds.is_empty() {
        out.push_str("bind mounts (not moved by a migration; copy them yourself):\n");
        for (service, source, target) in binds {
            out.push_str(&format!("  {service}: {source} -> {target}\n"));
        }
    }
    out
}

fn summary_json(spec: &StackSpec) -> serde_json::Value {
    json!({
        "ok": true,
        "project": spec.project,
        "services": spec.services.iter().map(|s| json!({
            "name": s.name,
            "image": s.image,
            "container": s.container_name(&spec.project),
            "network": network_text(s),
            "ports": s.ports.iter().map(port_text).collect::<Vec<_>>(),
            "mounts": s.mounts,
        })).collect::<Vec<_>>(),
        "volumes": spec.volumes.values().map(|v| json!({"name": v.engine_name, "external": v.external})).collect::<Vec<_>>(),
        "networks": spec.networks.values().map(|n| json!({"name": n.engine_name, "external": n.external})).collect::<Vec<_>>(),
        "bind_mounts": binds(spec).into_iter().map(|(service, source, target)| json!({"service": service, "source": source, "target": target})).collect::<Vec<_>>(),
    })
}
