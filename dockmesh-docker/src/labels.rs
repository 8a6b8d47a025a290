//! The labels and names dockmesh puts on what it creates: Compose's own, so that
//! `docker compose -p NAME ps` and `docker volume ls` show dockmesh stacks the way users know them,
//! plus one of dockmesh's (the hash of a service's resolved definition).

use crate::error::engine;
use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptionsBuilder;
use dockmesh_core::ports::RuntimeError;
use std::collections::HashMap;

/// The Compose project (stack) a container, volume or network belongs to.
pub const PROJECT: &str = "com.docker.compose.project";
/// The service a container runs.
pub const SERVICE: &str = "com.docker.compose.service";
/// The replica number of a container (always `1`: dockmesh runs one container per service).
pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
/// `False` for service containers (`True` marks `docker compose run` containers).
pub const ONEOFF: &str = "com.docker.compose.oneoff";
/// The key of a volume in the compose file.
pub const VOLUME: &str = "com.docker.compose.volume";
/// The key of a network in the compose file.
pub const NETWORK: &str = "com.docker.compose.network";
/// The directory holding the stack's files.
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
/// The compose file of the stack.
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
/// A service's dependencies, Compose's format: `db:service_healthy:false,cache:service_started:false`.
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
/// The id of the image the container was created from.
pub const IMAGE: &str = "com.docker.compose.image";
/// Compose's hash of the service's configuration (see `compose_hash`): with it, `docker compose
/// up` on a stack dockmesh deployed does not recreate the containers.
pub const COMPOSE_CONFIG_HASH: &str = "com.docker.compose.config-hash";
/// dockmesh's hash of the service's resolved definition: a deploy recreates the container only
/// when it changes.
pub const CONFIG_HASH: &str = "com.dockmesh.config-hash";

/// The container name of a service: `<project>-<service>-1`.
pub fn container_name(project: &str, service: &str) -> String {
    format!("{project}-{service}-1")
}

/// The name a container is listed with (without the leading `/`).
pub fn summary_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default()
}

/// A label of a listed container.
pub fn summary_label<'a>(c: &'a ContainerSummary, key: &str) -> Option<&'a str> {
    c.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// Every container (running or not) of a Compose project, one-off containers excluded.
pub async fn project_containers(
    docker: &Docker,
    project: &str,
) -> Result<Vec<ContainerSummary>, RuntimeError> {
    let filters = HashMap::from([("label", vec![format!("{PROJECT}={project}")])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mut list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine(format!("listing the containers of stack `{project}`"), e))?;
    list.retain(|c| summary_label(c, ONEOFF) != Some("True"));
    list.sort_by_key(summary_name);
    Ok(list)
}

/// Parse Compose's `depends_on` label into `(service, condition)` pairs.
pub fn parse_depends_on(label: &str) -> Vec<(String, String)> {
    label
        .split(',')
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let mut parts = entry.split(':');
            let service = parts.next().unwrap_or_default().to_owned();
            let condition = parts.next().unwrap_or("service_started").to_owned();
            (service, condition)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_label() {
        assert_eq!(
            parse_depends_on("db:service_healthy:false,cache:service_started:false"),
            [
                ("db".to_owned(), "service_healthy".to_owned()),
                ("cache".to_owned(), "service_started".to_owned())
            ]
        );
        assert!(parse_depends_on("").is_empty());
        assert_eq!(
            parse_depends_on("db"),
            [("db".to_owned(), "service_started".to_owned())]
        );
    }

    #[test]
    fn names() {
        assert_eq!(container_name("shop", "web"), "shop-web-1");
    }
}
