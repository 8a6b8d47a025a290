//! The agents page: each enrolled agent's host, connection, version against the server's,
//! protocol and upgrade state, agents that need a manual upgrade called out with the steps,
//! how to enroll a host, and removing an agent (behind a confirmation).
//!
//! The agent upgrade panel on the same page: where the agents stand, the rollout's state, the
//! binaries served, the upgrade policy's form, "Run now", "Resume" when the rollout is halted,
//! and an "Upgrade" button per drifted agent. All of it goes through the operations the API
//! calls ([`crate::server::ops::agents`]): the same checks, view and audit entries.

use super::migrations::ConfirmPage;
use super::session::User;
use super::{ErrorText, Layout, WebState, error_page, human_bytes, render_with, when};
use crate::server::ops::agents::AgentView;
use crate::server::ops::{self, OpError};
use crate::server::rollout::{Evaluation, PolicyView};
use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use dockmesh_core::rollout::{Automatic, RolloutMode, RolloutPolicy, StagedPolicy, UpgradeState};
use jiff::SignedDuration;
use serde::Deserialize;

/// One agent as the page shows it.
struct Row {
    a: AgentView,
    last_seen: String,
    upgrade: String,
    /// Why it needs a manual upgrade, when it does.
    manual: Option<String>,
    /// Whether its Upgrade button is shown: it runs another version and no upgrade is asked
    /// for or in flight.
    can_upgrade: bool,
}

/// The upgrade policy's form, as typed.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    percent: String,
    #[serde(default)]
    min_gap: String,
    #[serde(default)]
    canaries: String,
    #[serde(default)]
    halt_after_failures: String,
    #[serde(default)]
    interval: String,
    #[serde(default)]
    upgrade_timeout: String,
}

/// Errors beside the policy form's fields.
#[derive(Debug, Default)]
struct PolicyErrors {
    mode: Option<String>,
    percent: Option<String>,
    min_gap: Option<String>,
    canaries: Option<String>,
    halt_after_failures: Option<String>,
    interval: Option<String>,
    upgrade_timeout: Option<String>,
    other: Option<ErrorText>,
}

impl PolicyErrors {
    fn any(&self) -> bool {
        self.mode.is_some()
            || self.percent.is_some()
            || self.min_gap.is_some()
            || self.canaries.is_some()
            || self.halt_after_failures.is_some()
            || self.interval.is_some()
            || self.upgrade_timeout.is_some()
            || self.other.is_some()
    }

    /// Put an operation's error beside the field its `details.field` names
    /// (`staged.percent`, …), or above the form.
    fn place(&mut self, e: &OpError) {
        let details = e.details.as_ref();
        let field = details
            .and_then(|d| d.get("field"))
            .and_then(|f| f.as_str());
        let problem = details
            .and_then(|d| d.get("problem"))
            .and_then(|p| p.as_str())
            .map(str::to_owned);
        let (Some(field), Some(problem)) = (field, problem) else {
            self.other = Some(e.into());
            return;
        };
        let (slot, label) = match field {
            "mode" => (&mut self.mode, "The mode"),
            "staged.percent" => (&mut self.percent, "The wave percent"),
            "staged.min_gap" => (&mut self.min_gap, "The gap between waves"),
            "staged.canaries" => (&mut self.canaries, "The number of canaries"),
            "staged.halt_after_failures" => (&mut self.halt_after_failures, "The failure limit"),
            "interval" => (&mut self.interval, "The evaluation interval"),
            "upgrade_timeout" => (&mut self.upgrade_timeout, "The upgrade timeout"),
            _ => {
                self.other = Some(e.into());
                return;
            }
        };
        *slot = Some(format!("{label} {problem}."));
    }
}

fn parse_duration(s: &str, slot: &mut Option<String>) -> Option<SignedDuration> {
    match s.trim().parse::<SignedDuration>() {
        Ok(d) => Some(d),
        Err(_) if s.trim().is_empty() => {
            *slot = Some("Enter a duration, like 30s, 5m, 1h30m or PT5M.".into());
            None
        }
        Err(_) => {
            *slot = Some(format!(
                "“{}” is not a duration: write it like 30s, 5m, 1h30m or PT5M.",
                s.trim()
            ));
            None
        }
    }
}

fn parse_number<T: std::str::FromStr>(
    s: &str,
    range: &str,
    slot: &mut Option<String>,
) -> Option<T> {
    match s.trim().parse::<T>() {
        Ok(n) => Some(n),
        Err(_) if s.trim().is_empty() => {
            *slot = Some(format!("Enter a whole number {range}."));
            None
        }
        Err(_) => {
            *slot = Some(format!("“{}” is not a whole number {range}.", s.trim()));
            None
        }
    }
}

impl PolicyForm {
    /// The form filled with `p`.
    fn of(p: &RolloutPolicy) -> Self {
        PolicyForm {
            mode: p.mode.as_str().to_owned(),
            percent: p.staged.percent.to_string(),
            min_gap: format!("{:#}", p.staged.min_gap),
            canaries: p.staged.canaries.to_string(),
            halt_after_failures: p.staged.halt_after_failures.to_string(),
            interval: format!("{:#}", p.interval),
            upgrade_timeout: format!("{:#}", p.upgrade_timeout),
        }
    }

    /// The policy the form says, or the errors of the values that are not even numbers or
    /// durations (core checks the ranges).
    fn parse(&self, errors: &mut PolicyErrors) -> Option<RolloutPolicy> {
        let mode = match self.mode.trim() {
            "manual" => Some(RolloutMode::Manual),
            "auto" => Some(RolloutMode::Auto),
            "staged" => Some(RolloutMode::Staged),
            other => {
                errors.mode = Some(format!(
                    "“{other}” is not a mode: choose manual, auto or staged."
                ));
                None
            }
        };
        let percent = parse_number::<u8>(&self.percent, "from 1 to 100", &mut errors.percent);
        let min_gap = parse_duration(&self.min_gap, &mut errors.min_gap);
        let canaries = parse_number::<u32>(&self.canaries, "(0 or more)", &mut errors.canaries);
        let halt_after_failures = parse_number::<u32>(
            &self.halt_after_failures,
            "(0 or more)",
            &mut errors.halt_after_failures,
        );
        let interval = parse_duration(&self.interval, &mut errors.interval);
        let upgrade_timeout = parse_duration(&self.upgrade_timeout, &mut errors.upgrade_timeout);
        Some(RolloutPolicy {
            mode: mode?,
            staged: StagedPolicy {
                percent: percent?,
                min_gap: min_gap?,
                canaries: canaries?,
                halt_after_failures: halt_after_failures?,
            },
            interval: interval?,
            upgrade_timeout: upgrade_timeout?,
            // Not on the form: set through the API only.
            allow_downgrade: false,
        })
    }
}

/// A binary the server serves, as the page shows it.
struct BinaryRow {
    file: String,
    version: String,
    platform: String,
    size: String,
    sha256: String,
}

/// What "Run now" did, in sentences.
struct Outcome {
    decision: String,
    lines: Vec<String>,
}

/// A button's refusal, shown above the panel.
struct ActionError {
    what: String,
    error: ErrorText,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    l: Layout,
    rows: Vec<Row>,
    server_version: String,
    listener: bool,
    p: PolicyView,
    /// The policy in words.
    mode_words: String,
    next_evaluation: String,
    last_wave: String,
    last_evaluated: String,
    /// When and why the rollout halted.
    halted: Option<(String, String)>,
    binaries: Vec<BinaryRow>,
    form: PolicyForm,
    errors: PolicyErrors,
    outcome: Option<Outcome>,
    action_error: Option<ActionError>,
}

fn upgrade_words(a: &AgentView) -> (String, Option<String>) {
    let words = match (a.status.as_str(), &a.upgrade) {
        (_, UpgradeState::InFlight { target_version, .. }) => {
            format!("upgrading to {target_version}")
        }
        (_, UpgradeState::Failed { reason, .. }) => format!("failed: {reason}"),
        (_, UpgradeState::PendingManual { reason, .. }) => {
            return ("pending manual upgrade".into(), Some(reason.clone()));
        }
        ("requested", _) => "upgrade requested".into(),
        ("drifted", _) => "drifted".into(),
        ("up_to_date", _) => "up to date".into(),
        (other, _) => other.replace('_', " "),
    };
    (words, None)
}

fn mode_words(p: &RolloutPolicy) -> String {
    match p.mode {
        RolloutMode::Manual => {
            "manual: nothing is upgraded automatically; use an agent's Upgrade button".into()
        }
        RolloutMode::Auto => {
            "auto: every drifted, connected agent is upgraded at the next evaluation".into()
        }
        RolloutMode::Staged => {
            let s = &p.staged;
            let canaries = if s.canaries > 0 {
                format!("{} canary agent(s) first, then ", s.canaries)
            } else {
                String::new()
            };
            format!(
                "staged: {canaries}waves of {}% of the drifted agents, at least {:#} apart; \
                 halts after {} failure(s)",
                s.percent, s.min_gap, s.halt_after_failures
            )
        }
    }
}

fn outcome(e: &Evaluation, agents: &[AgentView]) -> Outcome {
    let host = |id: &String| {
        agents
            .iter()
            .find(|a| &a.id == id)
            .map(|a| a.host.clone())
            .unwrap_or_else(|| id.clone())
    };
    let decision = match e.automatic {
        Automatic::Manual => {
            "Manual mode: no agent is upgraded automatically; only agents whose upgrade was \
             requested are sent one."
                .to_owned()
        }
        Automatic::Halted => {
            "The rollout is halted: no automatic upgrade was sent. Resume it to go on.".to_owned()
        }
        Automatic::WaitingForGap { until } => format!(
            "Waiting for the gap between waves: the next wave may start at {}.",
            when(&until)
        ),
        Automatic::NothingEligible => {
            "No drifted, connected agent is waiting for an upgrade.".to_owned()
        }
        Automatic::Dispatched { wave, limit, count } if wave > 0 => {
            format!(
                "Wave {wave}: {count} agent(s) sent an upgrade (this wave takes at most {limit})."
            )
        }
        Automatic::Dispatched { count, .. } => format!("{count} agent(s) sent an upgrade."),
    };
    let mut lines = Vec::new();
    if e.dispatched.is_empty() {
        lines.push("No upgrade order was sent.".to_owned());
    } else {
        let hosts: Vec<String> = e.dispatched.iter().map(host).collect();
        lines.push(format!("Upgrade orders sent to: {}.", hosts.join(", ")));
    }
    if !e.no_binary.is_empty() {
        let hosts: Vec<String> = e.no_binary.iter().map(host).collect();
        lines.push(format!(
            "No binary for the platform of {}: they now need a manual upgrade.",
            hosts.join(", ")
        ));
    }
    lines.push(format!(
        "{} agent(s) run another version than the server's.",
        e.drifted
    ));
    Outcome { decision, lines }
}

/// What a page answering a POST shows besides the page itself.
#[derive(Default)]
struct Extra {
    status: StatusCode,
    form: Option<PolicyForm>,
    errors: PolicyErrors,
    evaluation: Option<Evaluation>,
    action_error: Option<ActionError>,
}

async fn page(web: &WebState, user: &User, extra: Extra) -> Response {
    let agents = match ops::agents::list(&web.api).await {
        Ok(a) => a,
        Err(e) => return error_page(web, user, "agents", &e, "/hosts"),
    };
    let p = match ops::agents::policy(&web.api).await {
        Ok(p) => p,
        Err(e) => return error_page(web, user, "agents", &e, "/hosts"),
    };
    let outcome = extra.evaluation.as_ref().map(|e| outcome(e, &agents));
    let rows = agents
        .into_iter()
        .map(|a| {
            let (upgrade, manual) = upgrade_words(&a);
            Row {
                last_seen: a
                    .last_seen
                    .as_ref()
                    .map(when)
                    .unwrap_or_else(|| "never".into()),
                upgrade,
                manual,
                can_upgrade: a.drift && !matches!(a.status.as_str(), "requested" | "upgrading"),
                a,
            }
        })
        .collect();
    let never =
        |t: Option<&jiff::Timestamp>, none: &str| t.map(when).unwrap_or_else(|| none.into());
    render_with(
        extra.status,
        &AgentsPage {
            l: Layout::new(web, user, "agents"),
            rows,
            server_version: web.api.config().version.clone(),
            listener: web.api.agent_ca().is_some(),
            mode_words: mode_words(&p.policy),
            next_evaluation: never(
                p.next_evaluation.as_ref(),
                if p.upgrades_enabled {
                    "now: it has not run yet"
                } else {
                    "never: agent upgrades are off"
                },
            ),
            last_wave: never(p.state.last_wave_at.as_ref(), "none yet"),
            last_evaluated: never(p.state.last_evaluated_at.as_ref(), "not yet"),
            halted: p
                .state
                .halted
                .as_ref()
                .map(|h| (when(&h.at), h.reason.clone())),
            binaries: p
                .binaries
                .iter()
                .map(|b| BinaryRow {
                    file: b.file.clone(),
                    version: b.version.clone(),
                    platform: format!("{}/{}", b.os, b.arch),
                    size: human_bytes(b.size),
                    sha256: b.sha256.chars().take(16).collect(),
                })
                .collect(),
            form: extra.form.unwrap_or_else(|| PolicyForm::of(&p.policy)),
            errors: extra.errors,
            outcome,
            action_error: extra.action_error,
            p,
        },
    )
}

/// `GET /agents`.
pub async fn list(State(web): State<WebState>, user: User) -> Response {
    page(&web, &user, Extra::default()).await
}

/// Who asks, as the operations record it: the session's token.
fn by(user: &User) -> &str {
    &user.session.actor.0
}

/// The page with a button's refusal above the panel, with the API's status.
async fn refused(web: &WebState, user: &User, what: String, e: &OpError) -> Response {
    page(
        web,
        user,
        Extra {
            status: e.status(),
            action_error: Some(ActionError {
                what,
                error: e.into(),
            }),
            ..Extra::default()
        },
    )
    .await
}

/// `POST /agents/upgrade-policy`: replace the upgrade policy, as
/// `PUT /api/v1/agents/upgrade-policy` does. A value that is not a number or a duration, or
/// that core refuses, is named beside its field (400) and nothing is stored.
pub async fn save_policy(
    State(web): State<WebState>,
    user: User,
    Form(form): Form<PolicyForm>,
) -> Response {
    let mut errors = PolicyErrors::default();
    let policy = form.parse(&mut errors);
    let policy = match policy {
        Some(p) if !errors.any() => p,
        _ => {
            let extra = Extra {
                status: StatusCode::BAD_REQUEST,
                form: Some(form),
                errors,
                ..Extra::default()
            };
            return page(&web, &user, extra).await;
        }
    };
    // `allow_downgrade` is not on the form: saving the form keeps what the API set.
    let mut policy = policy;
    match ops::agents::stored_policy(&web.api).await {
        Ok(current) => policy.allow_downgrade = current.allow_downgrade,
        Err(e) => {
            return refused(&web, &user, "The policy was not saved".into(), &e).await;
        }
    }
    match ops::agents::set_policy(&web.api, policy, by(&user)).await {
        Ok(_) => Redirect::to("/agents").into_response(),
        Err(e) => {
            errors.place(&e);
            let extra = Extra {
                status: e.status(),
                form: Some(form),
                errors,
                ..Extra::default()
            };
            page(&web, &user, extra).await
        }
    }
}

/// `POST /agents/upgrade-policy/run`: evaluate the rollout now, as the session's user; the
/// page shows what it did.
pub async fn run_now(State(web): State<WebState>, user: User) -> Response {
    match ops::agents::run(&web.api, by(&user)).await {
        Ok(evaluation) => {
            let extra = Extra {
                evaluation: Some(evaluation),
                ..Extra::default()
            };
            page(&web, &user, extra).await
        }
        Err(e) => refused(&web, &user, "Run now did nothing".into(), &e).await,
    }
}

/// `POST /agents/upgrade-policy/resume`: resume a halted rollout.
pub async fn resume(State(web): State<WebState>, user: User) -> Response {
    match ops::agents::resume(&web.api, by(&user)).await {
        Ok(_) => Redirect::to("/agents").into_response(),
        Err(e) => refused(&web, &user, "The rollout was not resumed".into(), &e).await,
    }
}

/// `POST /agents/{id}/upgrade`: ask for one agent's upgrade.
pub async fn upgrade(State(web): State<WebState>, user: User, Path(id): Path<String>) -> Response {
    match ops::agents::upgrade(&web.api, &id, by(&user)).await {
        Ok(_) => Redirect::to("/agents").into_response(),
        Err(e) => refused(&web, &user, format!("Agent {id} was not upgraded"), &e).await,
    }
}

fn remove_page(web: &WebState, user: &User, a: &AgentView, error: Option<&OpError>) -> Response {
    render_with(
        error.map(OpError::status).unwrap_or(StatusCode::OK),
        &ConfirmPage {
            l: Layout::new(web, user, "agents"),
            title: format!("Remove the agent of host {}?", a.host),
            consequences: vec![
                format!(
                    "Agent {} is refused from its next connection, and told why.",
                    a.id
                ),
                format!(
                    "Host {} leaves this server; containers on it keep running, untouched.",
                    a.host
                ),
                "The audit log keeps the agent's record. To bring the host back, enroll it \
                 again with a new token."
                    .into(),
            ],
            deleted: vec![format!(
                "the enrollment of agent {} (host {})",
                a.id, a.host
            )],
            action: format!("/agents/{}/remove", a.id),
            button: "Remove agent".into(),
            danger: true,
            back: "/agents".into(),
            error: error.map(ErrorText::from),
        },
    )
}

/// `GET /agents/{id}/remove`: what removing the agent does, and the button.
pub async fn remove_confirm(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    match ops::agents::find(&web.api, &id).await {
        Ok(a) => remove_page(&web, &user, &a, None),
        Err(e) => error_page(&web, &user, "agents", &e, "/agents"),
    }
}

/// `POST /agents/{id}/remove`.
pub async fn remove(State(web): State<WebState>, user: User, Path(id): Path<String>) -> Response {
    let a = match ops::agents::find(&web.api, &id).await {
        Ok(a) => a,
        Err(e) => return error_page(&web, &user, "agents", &e, "/agents"),
    };
    match ops::agents::remove(&web.api, &a.id, by(&user)).await {
        Ok(_) => Redirect::to("/agents").into_response(),
        Err(e) => remove_page(&web, &user, &a, Some(&e)),
    }
}
