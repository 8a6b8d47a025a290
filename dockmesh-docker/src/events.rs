//! The engine's container events for Compose projects, as core's [`HostEvent`]s.
//!
//! The engine is asked for container events of labelled containers only
//! (`com.docker.compose.project`), so volume carriers and unrelated containers stay out; of those,
//! only what changes a container's life or health is kept ([`REPORTED`], and every
//! `health_status`); `exec_*`, `attach`, `resize`, `top`, `archive-path` and the like are dropped.

use crate::error::engine;
use crate::labels::{PROJECT, SERVICE};
use bollard::Docker;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use dockmesh_core::ports::{EventStream, HostEvent};
use futures_util::StreamExt;
use jiff::Timestamp;
use std::collections::HashMap;

/// The container actions reported besides health changes.
pub const REPORTED: &[&str] = &[
    "create", "start", "restart", "die", "kill", "oom", "stop", "pause", "unpause", "destroy",
];

/// The [`HostEvent`] an engine event is, or `None` when it is not reported: not a container's,
/// not of a Compose project, not named, or an action outside [`REPORTED`] and health.
pub fn host_event(msg: &EventMessage) -> Option<HostEvent> {
    if msg.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let action = msg.action.as_deref()?;
    if !(REPORTED.contains(&action) || action.starts_with("health_status")) {
        return None;
    }
    let attrs = msg.actor.as_ref()?.attributes.as_ref()?;
    let stack = attrs.get(PROJECT)?.clone();
    let container = attrs.get("name")?.clone();
    let at = msg
        .time_nano
        .and_then(|n| Timestamp::from_nanosecond(i128::from(n)).ok())
        .or_else(|| msg.time.and_then(|s| Timestamp::from_second(s).ok()))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    Some(HostEvent {
        at,
        stack,
        service: attrs.get(SERVICE).cloned(),
        container,
        action: action.to_owned(),
        exit_code: (action == "die")
            .then(|| attrs.get("exitCode").and_then(|c| c.parse().ok()))
            .flatten(),
    })
}

/// The engine's reported events from now on.
pub fn stream(docker: &Docker) -> EventStream {
    let filters = HashMap::from([("type", vec!["container"]), ("label", vec![PROJECT])]);
    let opts = EventsOptionsBuilder::default().filters(&filters).build();
    docker
        .events(Some(opts))
        .filter_map(|r| {
            futures_util::future::ready(match r {
                Ok(m) => host_event(&m).map(Ok),
                Err(e) => Some(Err(engine("following the engine's events", e))),
            })
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn msg(typ: EventMessageTypeEnum, action: &str, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("c0ffee".into()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
            }),
            scope: None,
            time: Some(1_700_000_000),
            time_nano: Some(1_700_000_000_123_456_789),
        }
    }

    const LABELLED: &[(&str, &str)] = &[
        (PROJECT, "shop"),
        (SERVICE, "db"),
        ("name", "shop-db-1"),
        ("exitCode", "137"),
    ];

    #[test]
    fn a_death_names_the_stack_service_container_and_exit_code() {
        let e = host_event(&msg(EventMessageTypeEnum::CONTAINER, "die", LABELLED)).unwrap();
        assert_eq!(e.stack, "shop");
        assert_eq!(e.service.as_deref(), Some("db"));
        assert_eq!(e.container, "shop-db-1");
        assert_eq!(e.action, "die");
        assert_eq!(e.exit_code, Some(137));
        assert_eq!(e.at.as_nanosecond(), 1_700_000_000_123_456_789);
        // Only a death carries the code.
        let s = host_event(&msg(EventMessageTypeEnum::CONTAINER, "start", LABELLED)).unwrap();
        assert_eq!(s.exit_code, None);
        // Without the nanoseconds, the seconds.
        let mut m = msg(EventMessageTypeEnum::CONTAINER, "stop", LABELLED);
        m.time_nano = None;
        assert_eq!(host_event(&m).unwrap().at.as_second(), 1_700_000_000);
    }

    #[test]
    fn health_changes_and_life_events_are_reported_and_nothing_else() {
        for action in REPORTED
            .iter()
            .copied()
            .chain(["health_status: healthy", "health_status: unhealthy"])
        {
            let e = host_event(&msg(EventMessageTypeEnum::CONTAINER, action, LABELLED));
            assert_eq!(e.map(|e| e.action), Some(action.to_owned()), "{action}");
        }
        for action in [
            "exec_start: sh",
            "exec_die",
            "attach",
            "resize",
            "top",
            "archive-path",
            "",
        ] {
            assert!(
                host_event(&msg(EventMessageTypeEnum::CONTAINER, action, LABELLED)).is_none(),
                "{action}"
            );
        }
    }

    #[test]
    fn events_of_other_objects_or_unlabelled_containers_are_not_reported() {
        for typ in [
            EventMessageTypeEnum::NETWORK,
            EventMessageTypeEnum::VOLUME,
            EventMessageTypeEnum::IMAGE,
        ] {
            assert!(host_event(&msg(typ, "die", LABELLED)).is_none(), "{typ:?}");
        }
        let no_project = &[(SERVICE, "db"), ("name", "x")];
        assert!(host_event(&msg(EventMessageTypeEnum::CONTAINER, "die", no_project)).is_none());
        let no_name = &[(PROJECT, "shop")];
        assert!(host_event(&msg(EventMessageTypeEnum::CONTAINER, "die", no_name)).is_none());
        let mut m = msg(EventMessageTypeEnum::CONTAINER, "die", LABELLED);
        m.action = None;
        assert!(host_event(&m).is_none());
        m = msg(EventMessageTypeEnum::CONTAINER, "die", LABELLED);
        m.actor = None;
        assert!(host_event(&m).is_none());
    }
}
