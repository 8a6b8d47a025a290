//! Stop, start, remove and status of a deployed stack, from its containers' Compose labels.

use super::*;

/// The stack's containers in dependency order (dependencies first), from their labels.
fn dependency_order(containers: Vec<ContainerSummary>) -> Vec<ContainerSummary> {
    let mut remaining = containers;
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let services: BTreeSet<String> = remaining
        .iter()
        .filter_map(|c| summary_label(c, labels::SERVICE).map(str::to_owned))
        .collect();
    let mut ordered = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let ready = remaining.iter().position(|c| {
            summary_label(c, labels::DEPENDS_ON)
                .map(labels::parse_depends_on)
                .unwrap_or_default()
                .iter()
                .all(|(d, _)| placed.contains(d) || !services.contains(d))
        });
        // A cycle in labels (not possible from a valid file): keep the listed order.
        let c = remaining.remove(ready.unwrap_or(0));
        if let Some(s) = summary_label(&c, labels::SERVICE) {
            placed.insert(s.to_owned());
        }
        ordered.push(c);
    }
    ordered
}

fn no_containers(rt: &DockerRuntime, stack: &str) -> RuntimeError {
    RuntimeError::new(
        RuntimeErrorKind::NotFound,
        format!(
            "stack `{stack}` has no containers on host {}: deploy it first",
            rt.host
        ),
    )
}

pub(crate) async fn stop(rt: &DockerRuntime, stack: &str) -> Result<(), RuntimeError> {
    let containers = labels::project_containers(&rt.docker, stack).await?;
    if containers.is_empty() {
        return Err(no_containers(rt, stack));
    }
    for c in dependency_order(containers).iter().rev() {
        if !is_running(c) && c.state.map(|s| s.to_string()) != Some("restarting".into()) {
            continue;
        }
        let id = c.id.as_deref().unwrap_or_default();
        match rt.docker.stop_container(id, None).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(engine(
                    format!("stopping container {} of stack `{stack}`", summary_name(c)),
                    e,
                ));
            }
        }
    }
    Ok(())
}

pub(crate) async fn start(rt: &DockerRuntime, stack: &str) -> Result<(), RuntimeError> {
    let containers = labels::project_containers(&rt.docker, stack).await?;
    if containers.is_empty() {
        return Err(no_containers(rt, stack));
    }
    let names: BTreeMap<String, String> = containers
        .iter()
        .filter_map(|c| {
            Some((
                summary_label(c, labels::SERVICE)?.to_owned(),
                summary_name(c),
            ))
        })
        .collect();
    for c in dependency_order(containers) {
        let service = summary_label(&c, labels::SERVICE)
            .unwrap_or_default()
            .to_owned();
        let deps = summary_label(&c, labels::DEPENDS_ON)
            .map(labels::parse_depends_on)
            .unwrap_or_default()
            .into_iter()
            .map(|(d, cond)| {
                let cond =
                    DependCondition::from_name(&cond).unwrap_or(DependCondition::ServiceStarted);
                (d, cond)
            });
        wait_dependencies(rt, stack, &names, &service, deps).await?;
        if is_running(&c) {
            continue;
        }
        let id = c.id.as_deref().unwrap_or_default();
        start_container(rt, &service, id, &[]).await?;
    }
    Ok(())
}

pub(crate) async fn remove(
    rt: &DockerRuntime,
    stack: &str,
    volumes: bool,
) -> Result<(), RuntimeError> {
    let containers = labels::project_containers(&rt.docker, stack).await?;
    for c in dependency_order(containers).iter().rev() {
        let id = c.id.as_deref().unwrap_or_default();
        if is_running(c) {
            match rt.docker.stop_container(id, None).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    return Err(engine(
                        format!("stopping container {} of stack `{stack}`", summary_name(c)),
                        e,
                    ));
                }
            }
        }
        force_remove(rt, id).await.map_err(|e| {
            engine(
                format!("removing container {} of stack `{stack}`", summary_name(c)),
                e,
            )
        })?;
    }
    let filter = HashMap::from([("label", vec![format!("{}={stack}", labels::PROJECT)])]);
    let networks = rt
        .docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .map_err(|e| engine(format!("listing the networks of stack `{stack}`"), e))?;
    for n in networks {
        let name = n.name.unwrap_or_default();
        match rt.docker.remove_network(&name).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(engine(
                    format!("removing network `{name}` of stack `{stack}`"),
                    e,
                ));
            }
        }
    }
    if volumes {
        let list = rt
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filter).build(),
            ))
            .await
            .map_err(|e| engine(format!("listing the volumes of stack `{stack}`"), e))?;
        for v in list.volumes.unwrap_or_default() {
            // Also removes carriers an interrupted transfer left holding the volume.
            crate::volume::remove_volume(&rt.docker, &v.name)
                .await
                .map_err(|e| RuntimeError {
                    message: format!(
                        "removing volume `{}` of stack `{stack}`: {}",
                        v.name, e.message
                    ),
                    ..e
                })?;
        }
    }
    Ok(())
}

pub(crate) async fn status(rt: &DockerRuntime, stack: &str) -> Result<StackStatus, RuntimeError> {
    let containers = labels::project_containers(&rt.docker, stack).await?;
    let mut out = StackStatus::default();
    for c in containers {
        let name = summary_name(&c);
        let id = c.id.clone().unwrap_or_default();
        let inspected = match rt.docker.inspect_container(&id, None).await {
            Ok(i) => i,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(engine(format!("inspecting container {name}"), e)),
        };
        let state = inspected.state.as_ref();
        out.containers.push(ContainerStatus {
            name,
            service: summary_label(&c, labels::SERVICE)
                .unwrap_or_default()
                .to_owned(),
            state: state
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            health: state
                .and_then(|s| s.health.as_ref())
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
        });
    }
    Ok(out)
}
