//! Each host's policy on what compose content may ask of it (core's
//! [`dockmesh_core::host_policy`]), checked before every deploy, upgrade and rollback of a
//! stack on the host, at a migration's pre-flight (check `host_policy`) and before a drain
//! moves a stack there.
//!
//! The compose file is read by an injected [`ComposeInspector`] (the binary gives the
//! compose loader's): this crate does not parse compose files. A host with a policy and a
//! server without an inspector refuses every deploy there rather than deploy unchecked.

use crate::server::error::ApiError;
use crate::server::state::ServerState;
use dockmesh_core::HostId;
use dockmesh_core::host_policy::{self, ComposeInspector, HostPolicy, PolicyRefusal};
use dockmesh_core::preflight::{CheckResult, CheckStatus};
use dockmesh_core::types::StackFiles;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The name of the pre-flight check a migration's target host's policy adds.
pub const HOST_POLICY_CHECK: &str = "host_policy";

/// Every host's policy, and what reads a compose file for them.
#[derive(Clone, Default)]
pub struct HostPolicies {
    policies: BTreeMap<HostId, HostPolicy>,
    inspector: Option<Arc<dyn ComposeInspector>>,
}

impl std::fmt::Debug for HostPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPolicies")
            .field("policies", &self.policies)
            .field("inspector", &self.inspector.is_some())
            .finish()
    }
}

/// Why a stack cannot be placed on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyCheck {
    /// The host's policy refuses it.
    Refused(PolicyRefusal),
    /// The compose file cannot be read to check it (the reason, never the file's content).
    Unreadable(String),
    /// This server has no inspector to check it with.
    NoInspector,
}

impl std::fmt::Display for PolicyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyCheck::Refused(r) => r.fmt(f),
            PolicyCheck::Unreadable(why) => write!(
                f,
                "the compose file cannot be checked against the host's policy: {why}"
            ),
            PolicyCheck::NoInspector => f.write_str(
                "the host has a policy and this server has no compose inspector to check it with",
            ),
        }
    }
}

impl From<PolicyCheck> for ApiError {
    fn from(c: PolicyCheck) -> Self {
        crate::server::ops::OpError::from(c).into()
    }
}

impl HostPolicies {
    /// No policies, reading compose files with `inspector`.
    pub fn new(inspector: Arc<dyn ComposeInspector>) -> Self {
        HostPolicies {
            policies: BTreeMap::new(),
            inspector: Some(inspector),
        }
    }

    /// Set `host`'s rules (its protected paths are kept).
    pub fn set(&mut self, host: HostId, policy: HostPolicy) {
        let entry = self.policies.entry(host).or_default();
        let protected = std::mem::take(&mut entry.protected_paths);
        *entry = policy;
        entry.protected_paths.extend(protected);
    }

    /// Never let a bind mount on `host` name `path`, anything in it or a directory above it.
    pub fn protect(&mut self, host: HostId, path: impl Into<String>) {
        self.policies
            .entry(host)
            .or_default()
            .protected_paths
            .push(path.into());
    }

    /// `host`'s policy, if it has one.
    pub fn get(&self, host: &HostId) -> Option<&HostPolicy> {
        self.policies.get(host)
    }

    /// Whether `files` may be deployed on `host`.
    pub fn check(&self, host: &HostId, files: &StackFiles) -> Result<(), PolicyCheck> {
        let Some(policy) = self.policies.get(host) else {
            return Ok(());
        };
        let inspector = self.inspector.as_ref().ok_or(PolicyCheck::NoInspector)?;
        let services = inspector.inspect(files).map_err(PolicyCheck::Unreadable)?;
        host_policy::check(host.as_str(), policy, &services).map_err(PolicyCheck::Refused)
    }
}

/// The `host_policy` pre-flight check of moving stack `name` to `target`: `None` when the
/// target has no policy.
pub(crate) async fn preflight_check(
    state: &ServerState,
    name: &str,
    target: &HostId,
) -> Result<Option<CheckResult>, ApiError> {
    let policies = &state.config().host_policies;
    if policies.get(target).is_none() {
        return Ok(None);
    }
    let files = stack_files(state, name).await?;
    let (status, detail) = match policies.check(target, &files) {
        Ok(()) => (
            CheckStatus::Pass,
            format!("the stack keeps to the host policy of {target}"),
        ),
        Err(e) => (CheckStatus::Fail, e.to_string()),
    };
    Ok(Some(CheckResult {
        name: HOST_POLICY_CHECK.to_owned(),
        status,
        detail,
    }))
}

/// The files of a registered stack.
pub(crate) async fn stack_files(state: &ServerState, name: &str) -> Result<StackFiles, ApiError> {
    let record = state
        .store()
        .get_stack(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("stack {name} is not registered")))?;
    Ok(StackFiles {
        name: record.name,
        compose: record.compose,
        env: record.env,
    })
}
