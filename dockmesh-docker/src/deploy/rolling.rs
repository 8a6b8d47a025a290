//! Rolling replacement of a replicated service's changed replicas, following core's
//! [`rolling::plan`] for its `deploy.update_config`: batches of `parallelism` replicas, each
//! healthy (and still healthy after `monitor`) before the next.
//!
//! Every replaced replica is recorded in the deploy's [`Undo`] before it is touched, so a
//! failure puts back exactly the replicas the update reached: under stop-first their old
//! containers are renamed back and started again; under start-first an old container still
//! running is only renamed back, never restarted. Replicas the update did not reach are never
//! touched. A verdict of pause or rollback ([`rolling::verdict`]) ends the deploy with an error,
//! which undoes it (a deploy is all or nothing); continue goes on with the next batch. Old
//! containers are removed once the whole deploy succeeded.

use super::{Action, Planned, Replaced, Undo, create_container, rename, start_container};
use crate::DockerRuntime;
use crate::compose::StackSpec;
use crate::error::engine;
use crate::health;
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use dockmesh_core::release::UpdateOrder;
use dockmesh_core::release::rolling::{self, Step, Verdict};
use std::time::Duration;

/// Replace `replaced` (the changed replicas of one service, in replica order).
pub(super) async fn replace_replicas(
    rt: &DockerRuntime,
    spec: &StackSpec,
    replaced: &[&Planned<'_>],
    undo: &mut Undo,
) -> Result<(), RuntimeError> {
    let Some(first) = replaced.first() else {
        return Ok(());
    };
    let s = first.service;
    let config = s.update_settings().config();
    let replicas = s.replicas();
    let mut failed = 0u32;
    let mut failures: Vec<String> = Vec::new();
    let mut done = 0usize;
    for batch in rolling::plan(replaced.len() as u32, &config) {
        for step in &batch.steps {
            match step {
                Step::StopOld(i) => {
                    let p = replaced[*i as usize - 1];
                    let Action::Recreate { id, running } = &p.action else {
                        continue;
                    };
                    match config.order {
                        UpdateOrder::StopFirst => {
                            undo.replaced.push(Replaced {
                                old_id: id.clone(),
                                name: p.name.clone(),
                                was_running: *running,
                                renamed: false,
                                new_id: None,
                            });
                            if *running {
                                stop(rt, &s.name, p.number, id).await?;
                            }
                            rename(rt, id, &aside(&p.name, id)).await?;
                            if let Some(r) = undo.replaced.last_mut() {
                                r.renamed = true;
                            }
                        }
                        UpdateOrder::StartFirst => {
                            if *running {
                                // From here on an undo starts it again.
                                if let Some(r) = undo.replaced.iter_mut().find(|r| &r.old_id == id)
                                {
                                    r.was_running = true;
                                }
                                stop(rt, &s.name, p.number, id).await?;
                            }
                        }
                    }
                }
                Step::StartNew(i) => {
                    let p = replaced[*i as usize - 1];
                    let Action::Recreate { id, .. } = &p.action else {
                        continue;
                    };
                    if config.order == UpdateOrder::StartFirst {
                        // Not stopped yet: an undo only renames it back.
                        undo.replaced.push(Replaced {
                            old_id: id.clone(),
                            name: p.name.clone(),
                            was_running: false,
                            renamed: false,
                            new_id: None,
                        });
                        rename(rt, id, &aside(&p.name, id)).await?;
                        if let Some(r) = undo.replaced.last_mut() {
                            r.renamed = true;
                        }
                    }
                    let new_id = create_container(rt, spec, p, &p.name).await?;
                    if let Some(r) = undo.replaced.iter_mut().find(|r| &r.old_id == id) {
                        r.new_id = Some(new_id.clone());
                    }
                    start_container(rt, &s.name, &new_id, &s.ports).await?;
                }
                Step::AwaitHealthy {
                    replicas: rs,
                    monitor,
                } => {
                    for i in rs {
                        let p = replaced[*i as usize - 1];
                        if let Err(why) = healthy(rt, &s.name, &p.name, *monitor).await {
                            failed += 1;
                            failures.push(format!("replica {} ({}): {why}", p.number, p.name));
                        }
                    }
                    done += rs.len();
                    match rolling::verdict(&config, replicas, failed) {
                        Verdict::Proceed => {}
                        verdict => {
                            return Err(RuntimeError::new(
                                RuntimeErrorKind::Unhealthy,
                                format!(
                                    "service `{}`: {}; the rolling update stopped ({}) after {done} of {} replicas",
                                    s.name,
                                    failures.join("; "),
                                    match verdict {
                                        Verdict::Pause => "failure_action pause",
                                        _ => "failure_action rollback",
                                    },
                                    replaced.len()
                                ),
                            ));
                        }
                    }
                }
                // Old containers go once the whole deploy succeeded (`finish`).
                Step::RemoveOld(_) => {}
                Step::Wait(d) => tokio::time::sleep(*d).await,
            }
        }
    }
    Ok(())
}

fn aside(name: &str, id: &str) -> String {
    format!("{name}-replaced-{}", &id[..id.len().min(12)])
}

async fn stop(rt: &DockerRuntime, service: &str, n: u32, id: &str) -> Result<(), RuntimeError> {
    rt.docker.stop_container(id, None).await.map_err(|e| {
        engine(
            format!("stopping the old container of replica {n} of service `{service}`"),
            e,
        )
    })
}

/// Healthy, and still running and healthy after `monitor`.
async fn healthy(
    rt: &DockerRuntime,
    service: &str,
    container: &str,
    monitor: Duration,
) -> Result<(), String> {
    let h = health::wait_service(rt, service, container).await;
    if !h.healthy {
        return Err(h.detail);
    }
    if monitor.is_zero() {
        return Ok(());
    }
    tokio::time::sleep(monitor).await;
    let c = rt
        .docker
        .inspect_container(container, None)
        .await
        .map_err(|e| format!("it cannot be inspected: {e}"))?;
    let state = c.state.as_ref();
    if !state.and_then(|s| s.running).unwrap_or(false) {
        return Err(format!(
            "it stopped within the monitor period of {}s",
            monitor.as_secs_f64()
        ));
    }
    let status = state
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.status)
        .map(|s| s.to_string());
    match status.as_deref() {
        None | Some("healthy") | Some("none") | Some("") => Ok(()),
        Some(other) => Err(format!(
            "it was {other} at the end of the monitor period of {}s",
            monitor.as_secs_f64()
        )),
    }
}
