//! Adopting a Compose project that already runs: find it by its labels, read its compose file
//! and `.env` from where the labels say they are (or take them given), and check that they
//! describe what runs. Nothing on the engine is touched: no container is stopped, recreated or
//! renamed.
//!
//! What "describes what runs" means here: every service of the file (profiles as `.env`
//! selects them) has a container of the project, every container of the project belongs to a
//! service of the file, and each container runs the file's image. Containers whose name is not
//! the one dockmesh would give them (`docker-compose` 1 names them `<project>_<service>_1`) are
//! reported in [`Adopted::renamed_on_next_deploy`]: a later deploy recreates them under the
//! Compose v2 name.

use crate::compose::{self, ComposeError, StackSpec};
use crate::labels::{self, summary_label, summary_name};
use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use dockmesh_core::ports::RuntimeError;
use dockmesh_core::types::StackFiles;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A Compose project found on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundProject {
    /// The project name.
    pub name: String,
    /// The project directory its containers record (`com.docker.compose.project.working_dir`).
    pub working_dir: Option<PathBuf>,
    /// The compose files its containers record, resolved against `working_dir`.
    pub config_files: Vec<PathBuf>,
    /// Its containers: service name to container name.
    pub containers: BTreeMap<String, String>,
    /// Whether every container runs.
    pub running: bool,
}

/// A project whose files describe what runs.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// The files, as a stack.
    pub files: StackFiles,
    /// The project directory (bind mounts and `env_file`s are relative to it).
    pub dir: PathBuf,
    /// The files resolved.
    pub spec: StackSpec,
    /// Each service's container id, unchanged.
    pub containers: BTreeMap<String, String>,
    /// Services whose container's name is not the one dockmesh gives it: a later deploy
    /// recreates them under that name.
    pub renamed_on_next_deploy: Vec<String>,
}

/// Why a project cannot be adopted. Nothing on the engine was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdoptError {
    /// No container carries the project's label.
    #[error("no Compose project named `{project}` runs on this engine")]
    NotFound {
        /// The project.
        project: String,
    },
    /// The containers do not record where the compose file is.
    #[error("the containers of project `{project}` do not record their compose file")]
    NoFiles {
        /// The project.
        project: String,
    },
    /// The project was started from several files (overrides), which dockmesh does not merge.
    #[error("project `{project}` was started from several compose files ({})", files.join(", "))]
    SeveralFiles {
        /// The project.
        project: String,
        /// The files.
        files: Vec<String>,
    },
    /// A file cannot be read.
    #[error("{} cannot be read", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The files are not a stack dockmesh can deploy.
    #[error("the compose file of project `{project}` cannot be deployed by dockmesh")]
    Invalid {
        /// The project.
        project: String,
        /// Its problems.
        #[source]
        source: ComposeError,
    },
    /// The files do not describe what runs.
    #[error("the compose file of project `{project}` does not describe what runs: {}", differences.join("; "))]
    Differs {
        /// The project.
        project: String,
        /// Each difference.
        differences: Vec<String>,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] RuntimeError),
}

impl AdoptError {
    /// What to do about it.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            AdoptError::NoFiles { .. } | AdoptError::Unreadable { .. } => {
                Some("Give the compose file (and .env) explicitly.")
            }
            AdoptError::SeveralFiles { .. } => Some(
                "Merge them into one file (`docker compose config > compose.yaml`) and give it \
                 explicitly.",
            ),
            AdoptError::Differs { .. } => Some(
                "Bring the project up to date with its file first (`docker compose up -d`), or \
                 give the file that describes what runs.",
            ),
            _ => None,
        }
    }
}

/// Every Compose project on the engine, from its containers' labels (one-off containers left
/// out), by name.
pub async fn find_projects(docker: &Docker) -> Result<Vec<FoundProject>, RuntimeError> {
    let options = ListContainersOptionsBuilder::new().all(true).build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| crate::error::engine("listing containers".to_owned(), e))?;
    let mut found: BTreeMap<String, FoundProject> = BTreeMap::new();
    for c in &list {
        let Some(project) = summary_label(c, labels::PROJECT) else {
            continue;
        };
        if summary_label(c, labels::ONEOFF) == Some("True") {
            continue;
        }
        let working_dir = summary_label(c, labels::WORKING_DIR).map(PathBuf::from);
        let p = found
            .entry(project.to_owned())
            .or_insert_with(|| FoundProject {
                name: project.to_owned(),
                working_dir: working_dir.clone(),
                config_files: summary_label(c, labels::CONFIG_FILES)
                    .map(|f| config_files(f, working_dir.as_deref()))
                    .unwrap_or_default(),
                containers: BTreeMap::new(),
                running: true,
            });
        if let Some(service) = summary_label(c, labels::SERVICE) {
            p.containers.insert(service.to_owned(), summary_name(c));
        }
        p.running &= c.state.map(|s| s.to_string()).as_deref() == Some("running");
    }
    Ok(found.into_values().collect())
}

/// Compose's `config_files` label: comma-separated paths, relative ones (docker-compose 1)
/// against the project directory.
fn config_files(label: &str, dir: Option<&Path>) -> Vec<PathBuf> {
    label
        .split(',')
        .filter(|f| !f.is_empty())
        .map(|f| match dir {
            Some(d) if Path::new(f).is_relative() => d.join(f),
            _ => PathBuf::from(f),
        })
        .collect()
}

/// Adopt project `project`: its files are `given` (with the directory they are relative to),
/// or read from the paths its labels record (`.env` beside the compose file, when there is
/// one). Checks that they describe what runs; changes nothing.
pub async fn adopt(
    docker: &Docker,
    project: &str,
    given: Option<(StackFiles, PathBuf)>,
) -> Result<Adopted, AdoptError> {
    let found = find_projects(docker)
        .await?
        .into_iter()
        .find(|p| p.name == project)
        .ok_or_else(|| AdoptError::NotFound {
            project: project.to_owned(),
        })?;
    let (files, dir) = match given {
        Some(g) => g,
        None => read_recorded(&found)?,
    };
    let spec = {
        let (files, dir) = (files.clone(), dir.clone());
        tokio::task::spawn_blocking(move || {
            compose::load(&files, &dir, &|p: &Path| compose::read_beneath(&dir, p))
        })
        .await
        .map_err(|e| {
            RuntimeError::new(
                dockmesh_core::ports::RuntimeErrorKind::Engine,
                e.to_string(),
            )
        })?
        .map_err(|source| AdoptError::Invalid {
            project: project.to_owned(),
            source,
        })?
    };
    let running = labels::project_containers(docker, project).await?;
    let mut differences = Vec::new();
    let mut containers = BTreeMap::new();
    let mut renamed = Vec::new();
    let wanted: BTreeSet<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
    for c in &running {
        let service = summary_label(c, labels::SERVICE).unwrap_or_default();
        if !wanted.contains(service) {
            differences.push(format!(
                "container {} runs service `{service}`, which the file does not have",
                summary_name(c)
            ));
        }
    }
    for s in &spec.services {
        let Some(c) = running
            .iter()
            .find(|c| summary_label(c, labels::SERVICE) == Some(s.name.as_str()))
        else {
            differences.push(format!("service `{}` has no container", s.name));
            continue;
        };
        let id = c.id.clone().unwrap_or_default();
        let inspected = docker
            .inspect_container(&id, None)
            .await
            .map_err(|e| crate::error::engine(format!("inspecting container {id}"), e))?;
        let image = inspected
            .config
            .as_ref()
            .and_then(|cfg| cfg.image.clone())
            .unwrap_or_default();
        if image != s.image {
            differences.push(format!(
                "service `{}` runs image {image}, the file says {}",
                s.name, s.image
            ));
        }
        if summary_name(c) != s.container_name(project) {
            renamed.push(s.name.clone());
        }
        containers.insert(s.name.clone(), id);
    }
    if !differences.is_empty() {
        return Err(AdoptError::Differs {
            project: project.to_owned(),
            differences,
        });
    }
    Ok(Adopted {
        files,
        dir,
        spec,
        containers,
        renamed_on_next_deploy: renamed,
    })
}

fn read_recorded(found: &FoundProject) -> Result<(StackFiles, PathBuf), AdoptError> {
    let file = match found.config_files.as_slice() {
        [] => {
            return Err(AdoptError::NoFiles {
                project: found.name.clone(),
            });
        }
        [one] => one.clone(),
        several => {
            return Err(AdoptError::SeveralFiles {
                project: found.name.clone(),
                files: several.iter().map(|f| f.display().to_string()).collect(),
            });
        }
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| AdoptError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    };
    let compose = read(&file)?;
    let dir = found
        .working_dir
        .clone()
        .or_else(|| file.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let env_path = dir.join(".env");
    let env = match std::fs::read_to_string(&env_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(AdoptError::Unreadable {
                path: env_path,
                source,
            });
        }
    };
    Ok((
        StackFiles {
            name: found.name.clone(),
            compose,
            env,
        },
        dir,
    ))
}
