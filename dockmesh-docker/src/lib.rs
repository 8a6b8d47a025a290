//! dockmesh's [`dockmesh_core::ports::HostRuntime`] on one local Docker engine, through bollard.
//!
//! **Architecture Invariant:** this crate depends on `dockmesh-core` and on no other adapter.
//!
//! **Architecture Invariant:** what dockmesh creates on an engine is named and labelled the way
//! Docker Compose does it (`com.docker.compose.project`, `<project>-<service>-1`,
//! `<project>_<volume>`, `<project>_default`), so `docker compose -p NAME ps` and
//! `docker volume ls` show dockmesh stacks the way users know them. See [`labels`].
//!
//! **Architecture Invariant:** a deploy checks everything it can before it creates anything
//! (the compose file, images, external volumes and networks, names), and undoes what it created
//! when a later step fails. A key of a compose file that dockmesh does not support is an error
//! naming the key and the service, never silently ignored.
//!
//! Code map:
//! - [`runtime`]: [`DockerRuntime`] (connecting, configuration) and its `HostRuntime` impl.
//! - [`adopt`]: finding running Compose projects and checking their files describe them.
//! - [`compose`]: `compose.yaml` + `.env` → a resolved [`compose::StackSpec`] (interpolation,
//!   the supported-key check, docker-compose-types parsing, resolution).
//! - `deploy`: deploy / stop / start / remove / status, with rollback.
//! - `health`: waiting for services to be healthy.
//! - `snapshot`: the host snapshot for pre-flight.
//! - [`files`]: stack files on disk, written atomically.
//! - [`volume`]: lossless volume export and import.
//! - [`labels`]: Compose's labels and names.
//! - `testsupport` (feature `testing`): helpers for tests against a real engine.
//!
//! ```no_run
//! use dockmesh_core::ports::HostRuntime;
//! use dockmesh_docker::{DockerConfig, DockerRuntime};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = DockerRuntime::connect("host-1".into(), DockerConfig::new("/var/lib/dockmesh/stacks")).await?;
//! let files = dockmesh_core::StackFiles {
//!     name: "web".into(),
//!     compose: "services:\n  web:\n    image: nginx:1.27\n".into(),
//!     env: None,
//! };
//! rt.write_stack_files(&files).await?;
//! let report = rt.deploy(&files).await?;
//! let health = rt.wait_healthy("web").await?;
//! println!("{report:?} {}", health.healthy());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adopt;
pub mod compose;
mod compose_hash;
mod deploy;
mod error;
pub mod events;
pub mod files;
mod health;
pub mod host_policy;
pub mod labels;
mod rawapi;
pub mod runtime;
mod snapshot;
#[cfg(feature = "testing")]
pub mod testsupport;
mod tls;
pub mod volume;

pub use runtime::{DEFAULT_SOCKET, DockerConfig, DockerRuntime, Endpoint, TlsFiles};
