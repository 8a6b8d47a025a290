//! Executing drains: one background task per running drain, each a loop over the core's
//! [`next_step`] decision. Every change of the drain (a migration started for it, a pause, the
//! end) is stored before the loop goes on, so a restarted server resumes the drain from the
//! store ([`Drains::resume_all`]).

use crate::server::state::ServerState;
use dockmesh_core::drain::{DrainRecord, DrainState, DrainStep, MigrationOutcome, next_step};
use dockmesh_core::migration::{DriveError, Migration, MigrationRequest};
use dockmesh_core::ports::{MigrationQuery, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often a drain looks at the migration it waits for.
const POLL: Duration = Duration::from_millis(500);

/// The running drain tasks.
#[derive(Default)]
pub struct Drains {
    tasks: Mutex<HashMap<uuid::Uuid, JoinHandle<()>>>,
}

/// Who a drain's migrations are requested by.
pub fn drain_actor(id: uuid::Uuid) -> String {
    format!("drain:{id}")
}

impl Drains {
    /// Run drain `id` in the background unless a task already does.
    pub fn run(&self, state: &ServerState, id: uuid::Uuid) -> bool {
        if state.supervisor().stopping() {
            return false;
        }
        let mut tasks = self.tasks.lock().expect("drain tasks poisoned");
        if tasks.get(&id).is_some_and(|t| !t.is_finished()) {
            return false;
        }
        let state = state.clone();
        tasks.insert(
            id,
            tokio::spawn(async move {
                if let Err(e) = drive(&state, id).await {
                    tracing::error!(drain = %id, error = %e, "the drain stopped: the database failed; it resumes on the next start");
                }
            }),
        );
        true
    }

    /// Whether a task runs drain `id` now.
    pub fn is_running(&self, id: uuid::Uuid) -> bool {
        self.tasks
            .lock()
            .expect("drain tasks poisoned")
            .get(&id)
            .is_some_and(|t| !t.is_finished())
    }

    /// Run every drain the store has running.
    pub async fn resume_all(&self, state: &ServerState) -> Result<usize, StoreError> {
        let mut n = 0;
        for d in state.store().list_drains().await? {
            if d.state == DrainState::Running {
                tracing::info!(drain = %d.id, host = %d.plan.host, "resuming drain");
                if self.run(state, d.id) {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// Where each migration of a drain stands.
pub async fn outcomes(
    state: &ServerState,
    d: &DrainRecord,
) -> Result<Vec<MigrationOutcome>, StoreError> {
    let mut out = Vec::new();
    for id in &d.migrations {
        if let Some(s) = state.store().load_migration(*id).await?
            && let Ok(m) = Migration::replay(s.spec.clone(), &s.events)
        {
            out.push(MigrationOutcome {
                id: *id,
                stack: s.spec.stack,
                phase: m.phase(),
            });
        }
    }
    Ok(out)
}

async fn drive(state: &ServerState, id: uuid::Uuid) -> Result<(), StoreError> {
    loop {
        if state.supervisor().stopping() {
            return Ok(());
        }
        let Some(mut d) = state.store().get_drain(id).await? else {
            return Ok(());
        };
        let now = state.clock().now();
        match next_step(&d, &outcomes(state, &d).await?) {
            DrainStep::Idle => return Ok(()),
            DrainStep::Wait(m) => {
                state.supervisor().drive(m);
                wait_settled(state, m).await?;
            }
            DrainStep::Complete => {
                d.state = DrainState::Completed { at: now };
                state.store().put_drain(&d).await?;
                tracing::info!(drain = %id, host = %d.plan.host, "drain complete: every stack moved");
                return Ok(());
            }
            DrainStep::Pause(reason) => {
                tracing::warn!(drain = %id, host = %d.plan.host, %reason, "drain paused");
                d.state = DrainState::Paused { at: now, reason };
                state.store().put_drain(&d).await?;
                return Ok(());
            }
            DrainStep::Start { stack, target } => {
                if state.hosts().is_cordoned(&target) {
                    d.state = DrainState::Paused {
                        at: now,
                        reason: format!(
                            "the planned target {target} of stack {stack} is cordoned; uncordon it or plan the drain again"
                        ),
                    };
                    state.store().put_drain(&d).await?;
                    return Ok(());
                }
                if let Some(refused) = policy_refusal(state, &stack, &target).await {
                    d.state = DrainState::Paused {
                        at: now,
                        reason: format!("stack {stack} cannot move to {target}: {refused}"),
                    };
                    state.store().put_drain(&d).await?;
                    return Ok(());
                }
                let guard = state.lock_stack(&stack).await;
                let started = state
                    .supervisor()
                    .driver()
                    .start(MigrationRequest {
                        stack: stack.clone(),
                        target: target.clone(),
                        by: drain_actor(id),
                        retention: state.config().retention,
                    })
                    .await;
                let mid = match started {
                    Ok(mid) => Some(mid),
                    // A crash between starting the migration and recording it in the drain
                    // leaves it active: adopt it. Any other refusal pauses the drain.
                    Err(DriveError::Stack { reason, .. }) => {
                        match adopt(state, &d, &stack).await? {
                            Some(mid) => Some(mid),
                            None => {
                                d.state = DrainState::Paused {
                                    at: now,
                                    reason: format!("stack {stack} cannot move: {reason}"),
                                };
                                state.store().put_drain(&d).await?;
                                return Ok(());
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(drain = %id, %stack, error = %e, "starting a drain's migration failed; retrying");
                        None
                    }
                };
                drop(guard);
                match mid {
                    Some(mid) => {
                        d.migrations.push(mid);
                        state.store().put_drain(&d).await?;
                        tracing::info!(drain = %id, %stack, %target, migration = %mid, "drain moves a stack");
                        state.supervisor().drive(mid);
                    }
                    None => tokio::time::sleep(Duration::from_secs(2)).await,
                }
            }
        }
    }
}

/// Wait until migration `m` settles (or shutdown begins), looking only at it.
async fn wait_settled(
    state: &ServerState,
    m: dockmesh_core::MigrationId,
) -> Result<(), StoreError> {
    while !state.supervisor().stopping() {
        let Some(s) = state.store().load_migration(m).await? else {
            return Ok(());
        };
        let running = Migration::replay(s.spec, &s.events).is_ok_and(|m| !m.phase().is_settled());
        if !running {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Why the target host's policy refuses `stack`, if it does (the drain pauses on it).
async fn policy_refusal(
    state: &ServerState,
    stack: &str,
    target: &dockmesh_core::HostId,
) -> Option<String> {
    match crate::server::host_policy::preflight_check(state, stack, target).await {
        Ok(Some(c)) if c.status == dockmesh_core::preflight::CheckStatus::Fail => Some(c.detail),
        // No policy, or kept; a stack that cannot be read is the migration's to refuse.
        _ => None,
    }
}

/// The active migration of `stack` this drain started but did not record, if there is one.
async fn adopt(
    state: &ServerState,
    d: &DrainRecord,
    stack: &str,
) -> Result<Option<dockmesh_core::MigrationId>, StoreError> {
    let active = state
        .store()
        .list_migrations(&MigrationQuery {
            active_only: true,
            stack: Some(stack.to_owned()),
            limit: 1,
            ..Default::default()
        })
        .await?;
    Ok(active
        .into_iter()
        .find(|m| m.spec.requested_by == drain_actor(d.id) && !d.migrations.contains(&m.spec.id))
        .map(|m| m.spec.id))
}
