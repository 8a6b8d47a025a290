//! Waiting for a stack to be healthy.
//!
//! - A service whose container has a healthcheck (its own or its image's) must report
//!   `healthy` within its own budget: `start_period + interval × retries + timeout`, plus the
//!   configured margin. An `unhealthy` status ends the wait for that service at once (the engine
//!   only says so after `retries` consecutive failures), with the last check's output as the reason.
//! - A service without one must be running and stay running — same start time, no restart —
//!   for the configured grace period.
//!
//! Engine defaults apply where the healthcheck leaves a value out: interval 30s, timeout 30s,
//! retries 3, start period 0.

use crate::DockerRuntime;
use crate::error::engine;
use crate::labels;
use bollard::models::{ContainerInspectResponse, ContainerState, HealthConfig, HealthStatusEnum};
use bollard::query_parameters::LogsOptionsBuilder;
use dockmesh_core::ports::{HealthReport, RuntimeError, RuntimeErrorKind, ServiceHealth};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;

/// The healthcheck a container runs, when it has one.
pub(crate) fn healthcheck_of(c: &ContainerInspectResponse) -> Option<&HealthConfig> {
    let hc = c.config.as_ref()?.healthcheck.as_ref()?;
    match hc.test.as_deref() {
        Some([first, ..]) if first != "NONE" => Some(hc),
        _ => None,
    }
}

fn ns(v: Option<i64>, default: Duration) -> Duration {
    match v {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    }
}

/// How long a healthcheck may take to pass: `start_period + interval × retries + timeout + margin`.
pub(crate) fn health_budget(hc: &HealthConfig, margin: Duration) -> Duration {
    let interval = ns(hc.interval, DEFAULT_INTERVAL);
    let timeout = ns(hc.timeout, DEFAULT_TIMEOUT);
    let start_period = ns(hc.start_period, Duration::ZERO);
    let retries = match hc.retries {
        Some(r) if r > 0 => u32::try_from(r).unwrap_or(u32::MAX),
        _ => DEFAULT_RETRIES,
    };
    // Saturating: a healthcheck of absurd durations or retries means "wait very long", never an
    // overflow (a panic in the deploy).
    start_period
        .saturating_add(interval.saturating_mul(retries))
        .saturating_add(timeout)
        .saturating_add(margin)
}

async fn inspect(
    rt: &DockerRuntime,
    container: &str,
) -> Result<ContainerInspectResponse, RuntimeError> {
    rt.docker
        .inspect_container(container, None)
        .await
        .map_err(|e| engine(format!("inspecting container {container}"), e))
}

fn is_running(state: Option<&ContainerState>) -> bool {
    state.and_then(|s| s.running).unwrap_or(false)
        && !state.and_then(|s| s.restarting).unwrap_or(false)
}

/// Why a container is not running, in words (exit code, OOM, engine error, last log lines).
async fn not_running(
    rt: &DockerRuntime,
    container: &str,
    state: Option<&ContainerState>,
) -> String {
    let status = state
        .and_then(|s| s.status)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut why = match status.as_str() {
        "created" => "its container was created but never started".to_owned(),
        "restarting" => format!(
            "its container keeps restarting (last exit code {})",
            state.and_then(|s| s.exit_code).unwrap_or_default()
        ),
        _ => format!(
            "its container is {status} (exit code {})",
            state.and_then(|s| s.exit_code).unwrap_or_default()
        ),
    };
    if state.and_then(|s| s.oom_killed).unwrap_or(false) {
        why.push_str(", killed for using too much memory");
    }
    if let Some(err) = state
        .and_then(|s| s.error.as_deref())
        .filter(|e| !e.is_empty())
    {
        why.push_str(&format!(", engine error: {err}"));
    }
    let logs = last_log_lines(rt, container, 5).await;
    if !logs.is_empty() {
        why.push_str(&format!("; last output: {logs}"));
    }
    why
}

async fn last_log_lines(rt: &DockerRuntime, container: &str, lines: usize) -> String {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut out = String::new();
    let mut logs = rt.docker.logs(container, Some(options));
    while let Some(Ok(chunk)) = logs.next().await {
        out.push_str(&chunk.to_string());
        if out.len() > 4096 {
            break;
        }
    }
    one_line(&out, 400)
}

fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > max {
        let cut: String = joined.chars().take(max).collect();
        format!("{cut}…")
    } else {
        joined
    }
}

fn last_check(c: &ContainerInspectResponse) -> String {
    let last = c
        .state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.log.as_ref())
        .and_then(|l| l.last());
    match last {
        Some(r) => {
            let output = one_line(r.output.as_deref().unwrap_or_default(), 300);
            let code = r.exit_code.unwrap_or_default();
            if output.is_empty() {
                format!("the last check exited with code {code}")
            } else {
                format!("the last check exited with code {code}: {output}")
            }
        }
        None => "no check has completed yet".to_owned(),
    }
}

fn health_status(c: &ContainerInspectResponse) -> Option<HealthStatusEnum> {
    c.state.as_ref()?.health.as_ref()?.status
}

/// How long a one-shot service (one that others wait on with
/// `service_completed_successfully`) may run before it counts as failed.
pub(crate) const COMPLETION_BUDGET: Duration = Duration::from_secs(600);

/// Wait for a one-shot service's container to end; healthy when it ended with exit code 0.
pub(crate) async fn wait_completed(
    rt: &DockerRuntime,
    service: &str,
    container: &str,
) -> ServiceHealth {
    let verdict = |healthy: bool, detail: String| ServiceHealth {
        service: service.to_owned(),
        healthy,
        detail,
    };
    let started = Instant::now();
    loop {
        let c = match inspect(rt, container).await {
            Ok(c) => c,
            Err(e) => return verdict(false, e.message),
        };
        let state = c.state.as_ref();
        if !is_running(state) {
            let code = state.and_then(|s| s.exit_code).unwrap_or_default();
            let never_ran = state
                .and_then(|s| s.finished_at.as_deref())
                .is_none_or(|f| f.starts_with("0001-"));
            return if code == 0 && !never_ran {
                verdict(true, "completed successfully".into())
            } else {
                verdict(false, not_running(rt, container, state).await)
            };
        }
        if started.elapsed() >= COMPLETION_BUDGET {
            return verdict(
                false,
                format!(
                    "`{service}` still runs after {}s; a one-shot service must end",
                    COMPLETION_BUDGET.as_secs()
                ),
            );
        }
        tokio::time::sleep(rt.config.poll_interval).await;
    }
}

/// Wait for one service's container.
pub(crate) async fn wait_service(
    rt: &DockerRuntime,
    service: &str,
    container: &str,
) -> ServiceHealth {
    let verdict = |healthy: bool, detail: String| ServiceHealth {
        service: service.to_owned(),
        healthy,
        detail,
    };
    let started = Instant::now();
    let first = match inspect(rt, container).await {
        Ok(c) => c,
        Err(e) => return verdict(false, e.message),
    };
    let poll = rt.config.poll_interval;
    if let Some(hc) = healthcheck_of(&first) {
        let budget = health_budget(hc, rt.config.health_margin);
        let mut current = first;
        loop {
            if !is_running(current.state.as_ref()) {
                return verdict(
                    false,
                    not_running(rt, container, current.state.as_ref()).await,
                );
            }
            match health_status(&current) {
                Some(HealthStatusEnum::HEALTHY) => return verdict(true, "healthy".into()),
                Some(HealthStatusEnum::UNHEALTHY) => {
                    return verdict(
                        false,
                        format!("its healthcheck fails: {}", last_check(&current)),
                    );
                }
                _ => {}
            }
            if started.elapsed() >= budget {
                return verdict(
                    false,
                    format!(
                        "not healthy within its budget of {}s (start_period + interval × retries + timeout, plus a margin): {}",
                        budget.as_secs(),
                        last_check(&current)
                    ),
                );
            }
            tokio::time::sleep(poll).await;
            current = match inspect(rt, container).await {
                Ok(c) => c,
                Err(e) => return verdict(false, e.message),
            };
        }
    } else {
        let grace = rt.config.stable_grace;
        let marker = |c: &ContainerInspectResponse| {
            (
                c.state.as_ref().and_then(|s| s.started_at.clone()),
                c.restart_count,
            )
        };
        let first_marker = marker(&first);
        let mut current = first;
        loop {
            if !is_running(current.state.as_ref()) {
                return verdict(
                    false,
                    not_running(rt, container, current.state.as_ref()).await,
                );
            }
            if marker(&current) != first_marker {
                return verdict(
                    false,
                    format!(
                        "its container restarted while being watched (restart count {})",
                        current.restart_count.unwrap_or_default()
                    ),
                );
            }
            if started.elapsed() >= grace {
                return verdict(
                    true,
                    format!("running for {}s without a healthcheck", grace.as_secs_f32()),
                );
            }
            tokio::time::sleep(poll.min(grace)).await;
            current = match inspect(rt, container).await {
                Ok(c) => c,
                Err(e) => return verdict(false, e.message),
            };
        }
    }
}

/// Wait for every service of a stack, at the same time; one entry per service, by name.
pub(crate) async fn wait_stack(
    rt: &DockerRuntime,
    stack: &str,
) -> Result<HealthReport, RuntimeError> {
    let containers = labels::project_containers(&rt.docker, stack).await?;
    // Every replica of a service (`<project>-<service>-<n>`), or the one container it has.
    let mut by_service: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    for c in &containers {
        if let Some(service) = labels::summary_label(c, labels::SERVICE) {
            let name = labels::summary_name(c);
            let canonical = labels::container_name(stack, service);
            let replica = name
                .strip_prefix(&format!("{stack}-{service}-"))
                .is_some_and(|n| n.parse::<u32>().is_ok());
            let entry = by_service.entry(service.to_owned()).or_insert(None);
            match entry {
                None => *entry = Some(vec![name]),
                Some(names) if replica => {
                    names.retain(|n| {
                        n.strip_prefix(&format!("{stack}-{service}-"))
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                    });
                    names.push(name);
                }
                Some(names) if name == canonical => *names = vec![name],
                Some(_) => {}
            }
        }
    }
    if let Some(files) = crate::files::read(&rt.config.stacks_dir, stack)
        .await
        .ok()
        .flatten()
        && let Ok(spec) = crate::compose::load(&files, &rt.stack_dir(stack), &|p| {
            crate::compose::read_beneath(&rt.stack_dir(stack), p)
        })
    {
        for s in &spec.services {
            by_service.entry(s.name.clone()).or_insert(None);
        }
    }
    if by_service.is_empty() {
        return Err(RuntimeError::new(
            RuntimeErrorKind::NotFound,
            format!(
                "stack `{stack}` has no containers on host {}: deploy it first",
                rt.host
            ),
        ));
    }
    // Services others wait on to complete are one-shot jobs: healthy once they ended with 0.
    let one_shot: BTreeSet<String> = containers
        .iter()
        .filter_map(|c| labels::summary_label(c, labels::DEPENDS_ON))
        .flat_map(labels::parse_depends_on)
        .filter(|(_, cond)| cond == "service_completed_successfully")
        .map(|(d, _)| d)
        .collect();
    let one_shot = &one_shot;
    let waits = by_service
        .into_iter()
        .map(|(service, containers)| async move {
            match containers.as_deref() {
                Some([c]) if one_shot.contains(&service) => wait_completed(rt, &service, c).await,
                Some([c]) => wait_service(rt, &service, c).await,
                Some(replicas) if !replicas.is_empty() => {
                    let waits = replicas.iter().map(|c| wait_service(rt, &service, c));
                    let each = futures_util::future::join_all(waits).await;
                    let failed: Vec<String> = replicas
                        .iter()
                        .zip(&each)
                        .filter(|(_, h)| !h.healthy)
                        .map(|(c, h)| format!("{c}: {}", h.detail))
                        .collect();
                    ServiceHealth {
                        service: service.clone(),
                        healthy: failed.is_empty(),
                        detail: if failed.is_empty() {
                            format!("{} replicas healthy", replicas.len())
                        } else {
                            failed.join("; ")
                        },
                    }
                }
                _ => ServiceHealth {
                    service,
                    healthy: false,
                    detail: "it has no container: deploy the stack".into(),
                },
            }
        });
    let services = futures_util::future::join_all(waits).await;
    Ok(HealthReport { services })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_follow_the_healthcheck() {
        let s = |n: u64| Some((n * 1_000_000_000) as i64);
        let hc = HealthConfig {
            test: Some(vec!["CMD".into(), "true".into()]),
            interval: s(2),
            timeout: s(1),
            retries: Some(5),
            start_period: s(10),
            ..Default::default()
        };
        assert_eq!(
            health_budget(&hc, Duration::from_secs(3)),
            Duration::from_secs(10 + 2 * 5 + 1 + 3)
        );
        let defaults = HealthConfig {
            test: Some(vec!["CMD".into(), "true".into()]),
            ..Default::default()
        };
        assert_eq!(
            health_budget(&defaults, Duration::ZERO),
            Duration::from_secs(30 * 3 + 30)
        );
    }

    #[test]
    fn absurd_budgets_saturate_instead_of_overflowing() {
        let hc = HealthConfig {
            test: Some(vec!["CMD".into(), "true".into()]),
            interval: Some(i64::MAX),
            timeout: Some(i64::MAX),
            retries: Some(i64::MAX),
            start_period: Some(i64::MAX),
            ..Default::default()
        };
        assert_eq!(health_budget(&hc, Duration::MAX), Duration::MAX);
        let hc = HealthConfig {
            interval: Some(1_000_000_000),
            retries: Some(i64::from(u32::MAX) + 5),
            ..hc
        };
        assert!(health_budget(&hc, Duration::ZERO) >= Duration::from_secs(u64::from(u32::MAX)));
    }

    #[test]
    fn none_means_no_healthcheck() {
        let with = |test: Option<Vec<String>>| ContainerInspectResponse {
            config: Some(bollard::models::ContainerConfig {
                healthcheck: Some(HealthConfig {
                    test,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(healthcheck_of(&with(Some(vec!["NONE".into()]))).is_none());
        assert!(healthcheck_of(&with(None)).is_none());
        assert!(healthcheck_of(&with(Some(vec![]))).is_none());
        assert!(healthcheck_of(&with(Some(vec!["CMD-SHELL".into(), "true".into()]))).is_some());
    }

    #[test]
    fn long_output_is_cut() {
        assert_eq!(one_line("a\n b\tc ", 10), "a b c");
        assert_eq!(one_line(&"x".repeat(20), 5), "xxxxx…");
    }
}
