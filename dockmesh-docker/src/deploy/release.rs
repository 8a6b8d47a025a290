//! What a release upgrade asks of the engine before it changes anything: the shape of each
//! service of a release (for the diff), and the images it needs, pulled when a registry answers.

use super::{config_hash, load_spec};
use crate::DockerRuntime;
use crate::compose::{MountKind, ServiceSpec, StackSpec};
use crate::error::{engine, engine_message, is_not_found};
use bollard::query_parameters::CreateImageOptionsBuilder;
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use dockmesh_core::release::ServiceShape;
use dockmesh_core::types::StackFiles;
use futures_util::StreamExt;

/// Each service of `files` as this engine would deploy it; nothing on the engine changes.
pub(crate) async fn resolve_release(
    rt: &DockerRuntime,
    files: &StackFiles,
) -> Result<Vec<ServiceShape>, RuntimeError> {
    let spec = load_spec(files, &rt.stack_dir(&files.name)).await?;
    let mut shapes = Vec::with_capacity(spec.services.len());
    for s in &spec.services {
        let image_id = match rt.docker.inspect_image(&s.image).await {
            Ok(img) => img.id,
            Err(e) if is_not_found(&e) => None,
            Err(e) => {
                return Err(engine(
                    format!("looking up image `{}` of service `{}`", s.image, s.name),
                    e,
                ));
            }
        };
        shapes.push(shape(&spec, s, image_id));
    }
    Ok(shapes)
}

fn shape(spec: &StackSpec, s: &ServiceSpec, image_id: Option<String>) -> ServiceShape {
    let ports = s
        .ports
        .iter()
        .map(|p| {
            let host = match (&p.host_ip, p.host_port) {
                (Some(ip), Some(port)) => format!("{ip}:{port}:"),
                (None, Some(port)) => format!("{port}:"),
                (Some(ip), None) => format!("{ip}::"),
                (None, None) => String::new(),
            };
            format!("{host}{}/{}", p.container_port, p.protocol)
        })
        .collect();
    let volumes = s
        .mounts
        .iter()
        .map(|m| {
            let source = match m.kind {
                // The volume's key in the file, not its engine name.
                MountKind::Volume => spec
                    .volumes
                    .values()
                    .find(|v| v.engine_name == m.source)
                    .map_or(m.source.clone(), |v| v.key.clone()),
                MountKind::Bind => m.source.clone(),
            };
            let ro = if m.read_only { ":ro" } else { "" };
            format!("{source}:{}{ro}", m.target)
        })
        .collect();
    ServiceShape {
        name: s.name.clone(),
        image: s.image.clone(),
        digest: config_hash(spec, s, image_id.as_deref().unwrap_or_default()),
        image_id,
        environment: s.environment.clone(),
        ports,
        volumes,
        replicas: s.replicas(),
        update: s.update_settings().config(),
    }
}

/// Pull each image of `images` the engine does not have; the error names every image still
/// missing afterwards (nothing can be pulled without a registry).
pub(crate) async fn ensure_images(
    rt: &DockerRuntime,
    images: &[String],
) -> Result<(), RuntimeError> {
    let mut missing = Vec::new();
    for image in images {
        match rt.docker.inspect_image(image).await {
            Ok(_) => continue,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine(format!("looking up image `{image}`"), e)),
        }
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut pull = rt.docker.create_image(Some(options), None, None);
        let mut failure = None;
        while let Some(step) = pull.next().await {
            if let Err(e) = step {
                failure = Some(engine_message(&e));
                break;
            }
        }
        match failure {
            None => tracing::info!(%image, host = %rt.host, "pulled an image"),
            Some(why) => missing.push(format!("{image} ({why})")),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(RuntimeError::new(
        RuntimeErrorKind::NotFound,
        format!(
            "host {} does not have {} and could not pull {}: {}. Load the image on the host \
             (docker load) and try again; nothing was changed.",
            rt.host,
            if missing.len() == 1 {
                "an image the release needs"
            } else {
                "images the release needs"
            },
            if missing.len() == 1 { "it" } else { "them" },
            missing.join(", ")
        ),
    ))
}
