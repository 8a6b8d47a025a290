//! The checks of a deploy's first phase that ask the engine: every image present (and for the
//! service's `platform`), every external volume and network there. A failure changes nothing.

use super::UNCHANGED_SUFFIX;
use crate::DockerRuntime;
use crate::compose::StackSpec;
use crate::error::{engine, is_not_found};
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use std::collections::BTreeMap;

/// Every image must be on the host already. Returns the image id of each service.
pub(super) async fn check_images(
    rt: &DockerRuntime,
    spec: &StackSpec,
) -> Result<BTreeMap<String, String>, RuntimeError> {
    let mut ids = BTreeMap::new();
    let mut missing = Vec::new();
    for s in &spec.services {
        match rt.docker.inspect_image(&s.image).await {
            Ok(img) => {
                if let Some(platform) = &s.options.platform {
                    let has = format!(
                        "{}/{}",
                        img.os.as_deref().unwrap_or_default(),
                        img.architecture.as_deref().unwrap_or_default()
                    );
                    // `linux/arm64/v8` names the variant too; os and architecture must match.
                    let wanted: Vec<&str> = platform.split('/').take(2).collect();
                    if wanted.join("/") != has {
                        return Err(RuntimeError::new(
                            RuntimeErrorKind::InvalidStack,
                            format!(
                                "stack `{}` cannot be deployed on host {}: service `{}` wants platform {platform} \
                                 but image `{}` is {has}. Load the image for {platform} on the host, or remove \
                                 `platform`. {UNCHANGED_SUFFIX}",
                                spec.project, rt.host, s.name, s.image
                            ),
                        ));
                    }
                }
                ids.insert(s.name.clone(), img.id.unwrap_or_default());
            }
            Err(e) if is_not_found(&e) => {
                missing.push(format!("image `{}` of service `{}`", s.image, s.name))
            }
            Err(e) => {
                return Err(engine(
                    format!("looking up image `{}` of service `{}`", s.image, s.name),
                    e,
                ));
            }
        }
    }
    if !missing.is_empty() {
        return Err(RuntimeError::new(
            RuntimeErrorKind::NotFound,
            format!(
                "stack `{}` cannot be deployed on host {}: {} not on this host, and images are never pulled. \
                 Load the image on the host (docker load) and deploy again. {UNCHANGED_SUFFIX}",
                spec.project,
                rt.host,
                if missing.len() == 1 {
                    format!("{} is", missing[0])
                } else {
                    format!("{} are", missing.join(", "))
                }
            ),
        ));
    }
    Ok(ids)
}

pub(super) async fn check_external(
    rt: &DockerRuntime,
    spec: &StackSpec,
) -> Result<(), RuntimeError> {
    for v in spec.volumes.values().filter(|v| v.external) {
        if let Err(e) = rt.docker.inspect_volume(&v.engine_name).await {
            if is_not_found(&e) {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::NotFound,
                    format!(
                        "stack `{}`: volume `{}` is declared external but does not exist on host {}; create it \
                         (docker volume create {}) and deploy again. {UNCHANGED_SUFFIX}",
                        spec.project, v.engine_name, rt.host, v.engine_name
                    ),
                ));
            }
            return Err(engine(format!("looking up volume `{}`", v.engine_name), e));
        }
    }
    for n in spec.networks.values().filter(|n| n.external) {
        if let Err(e) = rt.docker.inspect_network(&n.engine_name, None).await {
            if is_not_found(&e) {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::NotFound,
                    format!(
                        "stack `{}`: network `{}` is declared external but does not exist on host {}; create it \
                         (docker network create {}) and deploy again. {UNCHANGED_SUFFIX}",
                        spec.project, n.engine_name, rt.host, n.engine_name
                    ),
                ));
            }
            return Err(engine(format!("looking up network `{}`", n.engine_name), e));
        }
    }
    Ok(())
}
