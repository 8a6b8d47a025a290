//! Deploying, stopping, starting and removing stacks, and their status.
//!
//! A deploy works in two phases:
//! 1. **Checks, before anything is created.** The files are read and resolved
//!    ([`crate::compose`]); every image must already be on the host (nothing can be pulled), every
//!    external volume and network must exist, and no foreign container may hold a name the stack
//!    needs. A failure here leaves the engine untouched.
//! 2. **Changes, undone on failure.** Networks and volumes are created when missing; services are
//!    created, kept or recreated in `depends_on` order, each started once its dependencies are
//!    started (`service_started`), healthy (`service_healthy`) or ended with exit code 0
//!    (`service_completed_successfully`). A service is recreated only when
//!    the hash of its resolved definition (with the image id) differs from the
//!    [`labels::CONFIG_HASH`] label of its container. A recreated service's old container is
//!    stopped and renamed aside, not removed, until the whole deploy succeeded. When anything
//!    fails (a port already in use, a dependency that never becomes healthy), everything this
//!    deploy did is undone in reverse: new containers removed, old ones renamed back and restarted,
//!    new networks and volumes removed.
//!
//! After a successful deploy, containers of the stack that belong to no service of the file
//! (services that were removed from it) are removed; their volumes are kept.

use crate::DockerRuntime;
use crate::compose::{self, DependCondition, NetworkMode, ServiceSpec, StackSpec};
use crate::error::{engine, engine_message, is_not_found};
use crate::health;
use crate::labels::{self, summary_label, summary_name};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerSummary, NetworkConnectRequest, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, RenameContainerOptionsBuilder,
};
use dockmesh_core::ports::{
    ContainerStatus, DeployReport, RuntimeError, RuntimeErrorKind, StackStatus,
};
use dockmesh_core::types::StackFiles;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Bumped when the way containers are built from a service changes, so that such a change
/// recreates them.
mod checks;
mod container;
mod lifecycle;
mod release;
mod rolling;

use checks::{check_external, check_images};

use container::{container_body, endpoint, inject_files};

pub(crate) use lifecycle::{remove, start, status, stop};
pub(crate) use release::{ensure_images, resolve_release};

const HASH_FORMAT: u32 = 1;

const UNCHANGED_SUFFIX: &str = "Nothing was changed on the engine.";

/// Read and resolve a stack's files (env_files are read from the stack directory).
pub(crate) async fn load_spec(files: &StackFiles, dir: &Path) -> Result<StackSpec, RuntimeError> {
    let files_owned = files.clone();
    let dir_owned = dir.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || {
        compose::load(&files_owned, &dir_owned, &|p: &Path| {
            compose::read_beneath(&dir_owned, p)
        })
    })
    .await
    .map_err(|e| {
        RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!("reading stack `{}`: {e}", files.name),
        )
    })?;
    loaded.map_err(|e| {
        let message = format!(
            "stack `{}` cannot be deployed: {}. {UNCHANGED_SUFFIX}",
            files.name,
            e.report().trim_end_matches('.')
        );
        RuntimeError::new(RuntimeErrorKind::InvalidStack, message).with_source(e)
    })
}

/// The hash of a service's resolved definition, stored in [`labels::CONFIG_HASH`].
pub(crate) fn config_hash(spec: &StackSpec, service: &ServiceSpec, image_id: &str) -> String {
    #[derive(Serialize)]
    struct HashInput<'a> {
        format: u32,
        service: &'a ServiceSpec,
        image_id: &'a str,
        dir: &'a Path,
    }
    let input = HashInput {
        format: HASH_FORMAT,
        service,
        image_id,
        dir: &spec.dir,
    };
    let json = serde_json::to_vec(&input).expect("a service definition serialises");
    hex::encode(Sha256::digest(&json))
}

enum Action {
    Create,
    Keep { id: String, running: bool },
    Recreate { id: String, running: bool },
}

struct Planned<'a> {
    service: &'a ServiceSpec,
    /// The replica (from 1) and its container's name.
    number: u32,
    name: String,
    image_id: String,
    hash: String,
    action: Action,
}

/// What a deploy changed so far, to undo it.
#[derive(Default)]
struct Undo {
    networks: Vec<String>,
    volumes: Vec<String>,
    created: Vec<String>,
    started: Vec<String>,
    replaced: Vec<Replaced>,
}

struct Replaced {
    old_id: String,
    name: String,
    was_running: bool,
    renamed: bool,
    new_id: Option<String>,
}

fn is_running(c: &ContainerSummary) -> bool {
    c.state.map(|s| s.to_string()) == Some("running".into())
}

pub(crate) async fn deploy(
    rt: &DockerRuntime,
    files: &StackFiles,
) -> Result<DeployReport, RuntimeError> {
    let project = files.name.as_str();
    let spec = load_spec(files, &rt.stack_dir(project)).await?;
    let image_ids = check_images(rt, &spec).await?;
    check_external(rt, &spec).await?;
    let existing = labels::project_containers(&rt.docker, project).await?;
    let plan = plan(rt, &spec, &image_ids, &existing).await?;

    let mut undo = Undo::default();
    match execute(rt, &spec, &plan, &mut undo).await {
        Ok(report) => {
            finish(rt, &spec, &undo, &existing).await;
            Ok(report)
        }
        Err(err) => {
            let problems = rollback(rt, &undo).await;
            let mut err = err;
            if problems.is_empty() {
                err.message = format!(
                    "{} This deploy's changes were rolled back: the stack is as it was before.",
                    err.message
                );
            } else {
                err.message = format!(
                    "{} Rolling this deploy back also failed, so some changes remain: {}",
                    err.message,
                    problems.join("; ")
                );
            }
            Err(err)
        }
    }
}

async fn plan<'a>(
    rt: &DockerRuntime,
    spec: &'a StackSpec,
    image_ids: &BTreeMap<String, String>,
    existing: &[ContainerSummary],
) -> Result<Vec<Planned<'a>>, RuntimeError> {
    let by_name: HashMap<String, &ContainerSummary> =
        existing.iter().map(|c| (summary_name(c), c)).collect();
    let mut plan = Vec::new();
    let mut changed: BTreeSet<&str> = BTreeSet::new();
    for s in &spec.services {
        for number in 1..=s.replicas() {
            let name = s.replica_name(&spec.project, number);
            let image_id = image_ids.get(&s.name).cloned().unwrap_or_default();
            let hash = config_hash(spec, s, &image_id);
            let p = plan_replica(
                rt, spec, s, &by_name, &changed, number, name, image_id, hash,
            )
            .await?;
            plan.push(p);
        }
        if plan
            .iter()
            .any(|p| p.service.name == s.name && !matches!(p.action, Action::Keep { .. }))
        {
            changed.insert(s.name.as_str());
        }
    }
    Ok(plan)
}

#[allow(clippy::too_many_arguments)]
async fn plan_replica<'a>(
    rt: &DockerRuntime,
    spec: &'a StackSpec,
    s: &'a ServiceSpec,
    by_name: &HashMap<String, &ContainerSummary>,
    changed: &BTreeSet<&str>,
    number: u32,
    name: String,
    image_id: String,
    hash: String,
) -> Result<Planned<'a>, RuntimeError> {
    {
        let action = match by_name.get(&name) {
            Some(c) => {
                let id = c.id.clone().unwrap_or_default();
                if summary_label(c, labels::CONFIG_HASH) == Some(hash.as_str())
                    && summary_label(c, labels::SERVICE) == Some(s.name.as_str())
                {
                    Action::Keep {
                        id,
                        running: is_running(c),
                    }
                } else {
                    Action::Recreate {
                        id,
                        running: is_running(c),
                    }
                }
            }
            None => {
                match rt.docker.inspect_container(&name, None).await {
                    Ok(_) => {
                        return Err(RuntimeError::new(
                            RuntimeErrorKind::Conflict,
                            format!(
                                "stack `{}`: a container named `{name}` already exists on host {} and does not belong to the stack; \
                                 rename or remove it and deploy again. {UNCHANGED_SUFFIX}",
                                spec.project, rt.host
                            ),
                        ));
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(engine(format!("looking up container `{name}`"), e)),
                }
                Action::Create
            }
        };
        // A container that uses another's network must follow it when it is replaced, and so
        // does one that depends on it with `restart: true` (replaced, where Compose restarts).
        let follows = match &s.options.network_mode {
            Some(NetworkMode::Service(n)) => changed.contains(n.as_str()),
            _ => false,
        } || s.restart_with.iter().any(|d| changed.contains(d.as_str()));
        let action = match action {
            Action::Keep { id, running } if follows => Action::Recreate { id, running },
            action => action,
        };
        Ok(Planned {
            service: s,
            number,
            name,
            image_id,
            hash,
            action,
        })
    }
}

async fn execute(
    rt: &DockerRuntime,
    spec: &StackSpec,
    plan: &[Planned<'_>],
    undo: &mut Undo,
) -> Result<DeployReport, RuntimeError> {
    for n in spec.networks.values().filter(|n| !n.external) {
        if ensure_network(rt, spec, n).await? {
            undo.networks.push(n.engine_name.clone());
        }
    }
    for v in spec.volumes.values().filter(|v| !v.external) {
        if ensure_volume(rt, spec, v).await? {
            undo.volumes.push(v.engine_name.clone());
        }
    }
    let names: BTreeMap<String, String> = spec
        .services
        .iter()
        .map(|s| (s.name.clone(), s.container_name(&spec.project)))
        .collect();
    let mut report = DeployReport::default();
    let mut i = 0;
    while i < plan.len() {
        let s = plan[i].service;
        let group: Vec<&Planned<'_>> = plan[i..]
            .iter()
            .take_while(|p| p.service.name == s.name)
            .collect();
        i += group.len();
        wait_dependencies(
            rt,
            &spec.project,
            &names,
            &s.name,
            s.depends_on
                .iter()
                .filter(|(d, _)| !s.optional.contains(*d))
                .map(|(d, c)| (d.clone(), *c)),
        )
        .await?;
        // `required: false`: a dependency that fails its condition is only warned about.
        for (d, c) in s.depends_on.iter().filter(|(d, _)| s.optional.contains(*d)) {
            let one = std::iter::once((d.clone(), *c));
            if let Err(e) = wait_dependencies(rt, &spec.project, &names, &s.name, one).await {
                tracing::warn!(stack = %spec.project, service = %s.name, dependency = %d, error = %e, "an optional dependency is not ready; starting anyway");
            }
        }
        let rolling = s.replicas() > 1;
        let mut kind = "unchanged";
        for p in &group {
            let name = p.name.clone();
            match &p.action {
                Action::Keep { id, running } => {
                    if !running {
                        start_container(rt, &s.name, id, &s.ports).await?;
                        undo.started.push(id.clone());
                    }
                }
                Action::Create => {
                    let id = create_container(rt, spec, p, &name).await?;
                    undo.created.push(id.clone());
                    start_container(rt, &s.name, &id, &s.ports).await?;
                    if kind == "unchanged" {
                        kind = "created";
                    }
                }
                Action::Recreate { .. } if rolling => kind = "recreated",
                Action::Recreate { id, running } => {
                    // Recorded first, so that a failure of any step below is undone.
                    undo.replaced.push(Replaced {
                        old_id: id.clone(),
                        name: name.clone(),
                        was_running: *running,
                        renamed: false,
                        new_id: None,
                    });
                    if *running {
                        rt.docker.stop_container(id, None).await.map_err(|e| {
                            engine(
                                format!("stopping the old container of service `{}`", s.name),
                                e,
                            )
                        })?;
                    }
                    let aside = format!("{name}-replaced-{}", &id[..id.len().min(12)]);
                    rename(rt, id, &aside).await?;
                    if let Some(r) = undo.replaced.last_mut() {
                        r.renamed = true;
                    }
                    let new_id = create_container(rt, spec, p, &name).await?;
                    if let Some(r) = undo.replaced.last_mut() {
                        r.new_id = Some(new_id.clone());
                    }
                    start_container(rt, &s.name, &new_id, &s.ports).await?;
                    kind = "recreated";
                }
            }
        }
        if rolling {
            let replaced: Vec<&Planned<'_>> = group
                .iter()
                .copied()
                .filter(|p| matches!(p.action, Action::Recreate { .. }))
                .collect();
            rolling::replace_replicas(rt, spec, &replaced, undo).await?;
        }
        match kind {
            "created" => report.created.push(s.name.clone()),
            "recreated" => report.recreated.push(s.name.clone()),
            _ => report.unchanged.push(s.name.clone()),
        }
    }
    Ok(report)
}

/// Wait until each dependency meets its condition.
async fn wait_dependencies(
    rt: &DockerRuntime,
    project: &str,
    names: &BTreeMap<String, String>,
    service: &str,
    deps: impl Iterator<Item = (String, DependCondition)>,
) -> Result<(), RuntimeError> {
    for (dep, cond) in deps {
        let container = names
            .get(&dep)
            .cloned()
            .unwrap_or_else(|| labels::container_name(project, &dep));
        let inspected = rt
            .docker
            .inspect_container(&container, None)
            .await
            .map_err(|e| engine(format!("service `{service}` depends on `{dep}`, whose container cannot be inspected"), e))?;
        match cond {
            DependCondition::ServiceStarted => {
                let running = inspected
                    .state
                    .as_ref()
                    .and_then(|s| s.running)
                    .unwrap_or(false);
                if !running {
                    return Err(RuntimeError::new(
                        RuntimeErrorKind::Unhealthy,
                        format!("service `{service}` depends on `{dep}`, which is not running."),
                    ));
                }
            }
            DependCondition::ServiceCompletedSuccessfully => {
                let done = health::wait_completed(rt, &dep, &container).await;
                if !done.healthy {
                    return Err(RuntimeError::new(
                        RuntimeErrorKind::Unhealthy,
                        format!(
                            "service `{service}` waits for `{dep}` to complete successfully, but {}.",
                            done.detail
                        ),
                    ));
                }
            }
            DependCondition::ServiceHealthy => {
                if health::healthcheck_of(&inspected).is_none() {
                    return Err(RuntimeError::new(
                        RuntimeErrorKind::InvalidStack,
                        format!(
                            "service `{service}` waits for `{dep}` to be healthy, but `{dep}` has no healthcheck; \
                             give it one or use condition service_started."
                        ),
                    ));
                }
                let h = health::wait_service(rt, &dep, &container).await;
                if !h.healthy {
                    return Err(RuntimeError::new(
                        RuntimeErrorKind::Unhealthy,
                        format!(
                            "service `{service}` waits for `{dep}` to be healthy, but `{dep}` did not become healthy: {}.",
                            h.detail
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

async fn ensure_network(
    rt: &DockerRuntime,
    spec: &StackSpec,
    n: &compose::NetworkSpec,
) -> Result<bool, RuntimeError> {
    match rt.docker.inspect_network(&n.engine_name, None).await {
        Ok(_) => Ok(false),
        Err(e) if is_not_found(&e) => {
            let mut labels: HashMap<String, String> = n.labels.clone().into_iter().collect();
            labels.insert(labels::PROJECT.into(), spec.project.clone());
            labels.insert(labels::NETWORK.into(), n.key.clone());
            let request = NetworkCreateRequest {
                name: n.engine_name.clone(),
                driver: n.driver.clone(),
                internal: Some(n.internal),
                attachable: Some(n.attachable),
                options: Some(n.driver_opts.clone().into_iter().collect()),
                labels: Some(labels),
                ..Default::default()
            };
            rt.docker
                .create_network(request)
                .await
                .map_err(|e| engine(format!("creating network `{}`", n.engine_name), e))?;
            Ok(true)
        }
        Err(e) => Err(engine(format!("looking up network `{}`", n.engine_name), e)),
    }
}

async fn ensure_volume(
    rt: &DockerRuntime,
    spec: &StackSpec,
    v: &compose::VolumeSpec,
) -> Result<bool, RuntimeError> {
    match rt.docker.inspect_volume(&v.engine_name).await {
        Ok(existing) => {
            if existing.labels.get(labels::PROJECT) != Some(&spec.project) {
                tracing::warn!(
                    volume = %v.engine_name,
                    stack = %spec.project,
                    "volume already exists and was not created for this stack; using it as it is"
                );
            }
            Ok(false)
        }
        Err(e) if is_not_found(&e) => {
            let mut labels: HashMap<String, String> = v.labels.clone().into_iter().collect();
            labels.insert(labels::PROJECT.into(), spec.project.clone());
            labels.insert(labels::VOLUME.into(), v.key.clone());
            let request = VolumeCreateRequest {
                name: Some(v.engine_name.clone()),
                driver: v.driver.clone(),
                driver_opts: Some(v.driver_opts.clone().into_iter().collect()),
                labels: Some(labels),
                ..Default::default()
            };
            rt.docker
                .create_volume(request)
                .await
                .map_err(|e| engine(format!("creating volume `{}`", v.engine_name), e))?;
            Ok(true)
        }
        Err(e) => Err(engine(format!("looking up volume `{}`", v.engine_name), e)),
    }
}

async fn create_container(
    rt: &DockerRuntime,
    spec: &StackSpec,
    p: &Planned<'_>,
    name: &str,
) -> Result<String, RuntimeError> {
    let s = p.service;
    let network_container = match &s.options.network_mode {
        Some(NetworkMode::Service(other)) => {
            let other = spec
                .service(other)
                .map_or_else(|| other.clone(), |o| o.container_name(&spec.project));
            let found = rt.docker.inspect_container(&other, None).await.map_err(|e| {
                engine(
                    format!(
                        "service `{}` uses the network of container `{other}`, which cannot be inspected",
                        s.name
                    ),
                    e,
                )
            })?;
            found.id
        }
        _ => None,
    };
    let body = container_body(
        spec,
        s,
        &p.image_id,
        &p.hash,
        network_container.as_deref(),
        p.number,
    );
    let mut options = CreateContainerOptionsBuilder::new().name(name);
    if let Some(platform) = &s.options.platform {
        options = options.platform(platform);
    }
    let options = options.build();
    let created = rt
        .docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| engine(format!("creating the container of service `{}`", s.name), e))?;
    for n in s.networks.values().skip(1) {
        let request = NetworkConnectRequest {
            container: created.id.clone(),
            endpoint_config: Some(endpoint(&s.name, &n.aliases)),
        };
        if let Err(e) = rt.docker.connect_network(&n.engine_name, request).await {
            // The container is not started yet: remove it so the caller's undo list stays exact.
            let _ = rt
                .docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
            return Err(engine(
                format!(
                    "connecting service `{}` to network `{}`",
                    s.name, n.engine_name
                ),
                e,
            ));
        }
    }
    if !s.files.is_empty()
        && let Err(e) = inject_files(rt, &created.id, &s.files).await
    {
        let _ = rt
            .docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        return Err(engine(
            format!(
                "writing the secrets and configs of service `{}` into its container",
                s.name
            ),
            e,
        ));
    }
    Ok(created.id)
}

fn is_port_conflict(e: &BollardError) -> bool {
    let m = engine_message(e);
    m.contains("port is already allocated") || m.contains("address already in use")
}

async fn start_container(
    rt: &DockerRuntime,
    service: &str,
    id: &str,
    ports: &[compose::PortSpec],
) -> Result<(), RuntimeError> {
    match rt.docker.start_container(id, None).await {
        Ok(()) => Ok(()),
        Err(e) if is_port_conflict(&e) => {
            let published: Vec<String> = ports
                .iter()
                .filter_map(|p| p.host_port.map(|h| format!("{h}/{}", p.protocol)))
                .collect();
            let message = format!(
                "service `{service}` cannot start on host {}: a host port it publishes ({}) is already in use ({}). \
                 Free the port or change the mapping in compose.yaml, then deploy again.",
                rt.host,
                published.join(", "),
                engine_message(&e)
            );
            Err(RuntimeError::new(RuntimeErrorKind::Conflict, message).with_source(e))
        }
        Err(e) => Err(engine(
            format!("starting the container of service `{service}`"),
            e,
        )),
    }
}

async fn rename(rt: &DockerRuntime, id: &str, name: &str) -> Result<(), RuntimeError> {
    rt.docker
        .rename_container(id, RenameContainerOptionsBuilder::new().name(name).build())
        .await
        .map_err(|e| engine(format!("renaming container {id} to {name}"), e))
}

async fn force_remove(rt: &DockerRuntime, id: &str) -> Result<(), BollardError> {
    match rt
        .docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
    {
        Err(e) if is_not_found(&e) => Ok(()),
        other => other,
    }
}

/// Undo a failed deploy; returns what could not be undone.
async fn rollback(rt: &DockerRuntime, undo: &Undo) -> Vec<String> {
    let mut problems = Vec::new();
    for id in undo.created.iter().rev() {
        if let Err(e) = force_remove(rt, id).await {
            problems.push(format!(
                "removing new container {id}: {}",
                engine_message(&e)
            ));
        }
    }
    for r in undo.replaced.iter().rev() {
        if let Some(new_id) = &r.new_id
            && let Err(e) = force_remove(rt, new_id).await
        {
            problems.push(format!(
                "removing new container {new_id}: {}",
                engine_message(&e)
            ));
            continue;
        }
        if r.renamed
            && let Err(e) = rt
                .docker
                .rename_container(
                    &r.old_id,
                    RenameContainerOptionsBuilder::new().name(&r.name).build(),
                )
                .await
        {
            problems.push(format!(
                "renaming the old container back to {}: {}",
                r.name,
                engine_message(&e)
            ));
            continue;
        }
        if r.was_running
            && let Err(e) = rt.docker.start_container(&r.old_id, None).await
        {
            problems.push(format!(
                "restarting the old container {}: {}",
                r.name,
                engine_message(&e)
            ));
        }
    }
    for id in undo.started.iter().rev() {
        if let Err(e) = rt.docker.stop_container(id, None).await
            && !is_not_found(&e)
        {
            problems.push(format!(
                "stopping container {id} again: {}",
                engine_message(&e)
            ));
        }
    }
    for n in undo.networks.iter().rev() {
        if let Err(e) = rt.docker.remove_network(n).await
            && !is_not_found(&e)
        {
            problems.push(format!("removing new network {n}: {}", engine_message(&e)));
        }
    }
    for v in undo.volumes.iter().rev() {
        if let Err(e) = rt
            .docker
            .remove_volume(v, None::<RemoveVolumeOptions>)
            .await
            && !is_not_found(&e)
        {
            problems.push(format!("removing new volume {v}: {}", engine_message(&e)));
        }
    }
    problems
}

/// After a successful deploy: drop replaced containers and containers of services no longer in the file.
async fn finish(rt: &DockerRuntime, spec: &StackSpec, undo: &Undo, existing: &[ContainerSummary]) {
    for r in &undo.replaced {
        if let Err(e) = force_remove(rt, &r.old_id).await {
            tracing::warn!(container = %r.old_id, error = %engine_message(&e), "could not remove a replaced container");
        }
    }
    let replaced: BTreeSet<&str> = undo.replaced.iter().map(|r| r.old_id.as_str()).collect();
    let wanted: BTreeSet<String> = spec
        .services
        .iter()
        .flat_map(|s| (1..=s.replicas()).map(|n| s.replica_name(&spec.project, n)))
        .collect();
    for c in existing {
        let id = c.id.as_deref().unwrap_or_default();
        if replaced.contains(id) || wanted.contains(&summary_name(c)) {
            continue;
        }
        tracing::info!(stack = %spec.project, container = %summary_name(c), "removing a container no service of the stack uses");
        if let Err(e) = rt.docker.stop_container(id, None).await
            && !is_not_found(&e)
        {
            tracing::warn!(container = %summary_name(c), error = %engine_message(&e), "could not stop an orphan container");
        }
        if let Err(e) = force_remove(rt, id).await {
            tracing::warn!(container = %summary_name(c), error = %engine_message(&e), "could not remove an orphan container");
        }
    }
}
