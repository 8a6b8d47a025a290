use super::rolling::{self, Step, Undo, Verdict};
use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn shape(name: &str, image: &str) -> ServiceShape {
    ServiceShape {
        name: name.into(),
        image: image.into(),
        image_id: Some(format!("sha256:{image}")),
        environment: BTreeMap::new(),
        ports: vec![],
        volumes: vec![],
        replicas: 1,
        update: UpdateConfig::default(),
        digest: format!("d-{image}"),
    }
}

fn check(current: &[ServiceShape], next: &[ServiceShape], expected: &str) {
    assert_eq!(diff(current, next).to_string(), expected);
}

#[test]
fn a_diff_names_each_field_that_changed() {
    let mut old = shape("web", "shop:1");
    old.environment = [("A", "1"), ("B", "2"), ("C", "3")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    old.ports = vec!["8080:80/tcp".into()];
    old.volumes = vec!["data:/srv".into()];
    let mut new = old.clone();
    new.image = "shop:2".into();
    new.environment.remove("A");
    new.environment.insert("B".into(), "changed".into());
    new.environment.insert("D".into(), "4".into());
    new.ports = vec!["8081:80/tcp".into()];
    new.volumes = vec!["data:/srv".into(), "logs:/logs".into()];
    new.replicas = 3;
    check(
        &[old, shape("db", "pg:1"), shape("gone", "x:1")],
        &[new, shape("db", "pg:1"), shape("cache", "redis:1")],
        "+ cache (new service)\n- gone (removed; its volumes are kept)\n\
         ~ web: image shop:1 → shop:2; environment +D -A ~B; ports +8081:80/tcp -8080:80/tcp; \
         volumes +logs:/logs; replicas 1 → 3\n= db\n",
    );
}

#[test]
fn the_same_reference_naming_another_image_is_an_image_change() {
    let old = shape("web", "shop:1");
    let mut new = old.clone();
    new.image_id = Some("sha256:0123456789abcdef".into());
    check(
        std::slice::from_ref(&old),
        &[new],
        "~ web: image shop:1@shop:1 → shop:1@0123456789ab\n",
    );
    let mut missing = old.clone();
    missing.image_id = None;
    check(
        &[old],
        &[missing],
        "~ web: image shop:1@shop:1 → shop:1 (not on the host)\n",
    );
}

#[test]
fn a_change_outside_the_named_fields_is_other_settings() {
    let old = shape("web", "shop:1");
    let mut new = old.clone();
    new.digest = "another".into();
    check(
        std::slice::from_ref(&old),
        &[new],
        "~ web: other settings\n",
    );
    let mut new = old.clone();
    new.update.parallelism = 2;
    check(
        std::slice::from_ref(&old),
        &[new],
        "~ web: other settings\n",
    );
    let same = std::slice::from_ref(&old);
    check(same, same, "no change: every service is as it runs\n");
}

fn arb_shape(name: String) -> impl Strategy<Value = ServiceShape> {
    (
        0..3u8,
        proptest::option::of(0..3u8),
        proptest::collection::btree_map("[A-C]", "[xy]", 0..3),
        proptest::collection::vec("[1-3]", 0..3),
        proptest::collection::vec("[ab]", 0..2),
        1..3u32,
        0..2u8,
    )
        .prop_map(
            move |(image, id, environment, ports, volumes, replicas, digest)| ServiceShape {
                name: name.clone(),
                image: format!("img:{image}"),
                image_id: id.map(|i| format!("sha256:{i}")),
                environment,
                ports,
                volumes,
                replicas,
                update: UpdateConfig::default(),
                digest: digest.to_string(),
            },
        )
}

fn arb_release() -> impl Strategy<Value = Vec<ServiceShape>> {
    proptest::collection::btree_set("[a-e]", 0..5)
        .prop_flat_map(|names| names.into_iter().map(arb_shape).collect::<Vec<_>>())
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

/// The shape as the diff compares it: ports and mounts are sets (a port published twice is
/// published once).
fn as_compared(s: &ServiceShape) -> ServiceShape {
    let set = |v: &[String]| {
        v.iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    ServiceShape {
        ports: set(&s.ports),
        volumes: set(&s.volumes),
        ..s.clone()
    }
}

proptest! {
    /// Reference model: every service falls in exactly one list; a service is unchanged
    /// exactly when its shape is equal; the diff is antisymmetric in added/removed.
    #[test]
    fn a_diff_partitions_the_services(old in arb_release(), new in arb_release()) {
        let d = diff(&old, &new);
        let names = |v: &[ServiceShape]| v.iter().map(|s| s.name.clone()).collect::<BTreeSet<_>>();
        let (o, n) = (names(&old), names(&new));
        let added: BTreeSet<String> = n.difference(&o).cloned().collect();
        let removed: BTreeSet<String> = o.difference(&n).cloned().collect();
        prop_assert_eq!(d.added.iter().cloned().collect::<BTreeSet<_>>(), added);
        prop_assert_eq!(d.removed.iter().cloned().collect::<BTreeSet<_>>(), removed);
        for name in o.intersection(&n) {
            let a = &as_compared(old.iter().find(|s| &s.name == name).unwrap());
            let b = &as_compared(new.iter().find(|s| &s.name == name).unwrap());
            let changed = d.changed.iter().find(|c| &c.service == name);
            prop_assert_eq!(a == b, d.unchanged.contains(name));
            prop_assert_eq!(a != b, changed.is_some());
            if let Some(c) = changed {
                prop_assert!(!c.changes.is_empty());
                let image = c.changes.iter().any(|x| matches!(x, Change::Image { .. }));
                prop_assert_eq!(image, a.image != b.image || a.image_id != b.image_id);
                let env = c.changes.iter().any(|x| matches!(x, Change::Environment { .. }));
                prop_assert_eq!(env, a.environment != b.environment);
                let ports = c.changes.iter().any(|x| matches!(x, Change::Ports { .. }));
                prop_assert_eq!(ports, !same_set(&a.ports, &b.ports));
                let vols = c.changes.iter().any(|x| matches!(x, Change::Volumes { .. }));
                prop_assert_eq!(vols, !same_set(&a.volumes, &b.volumes));
                let reps = c.changes.iter().any(|x| matches!(x, Change::Replicas { .. }));
                prop_assert_eq!(reps, a.replicas != b.replicas);
            }
        }
        let back = diff(&new, &old);
        prop_assert_eq!(&back.added, &d.removed);
        prop_assert_eq!(&back.removed, &d.added);
        prop_assert!(diff(&new, &new).is_empty());
        prop_assert_eq!(d.is_empty(), d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty());
        let touched: BTreeSet<&str> = d.added.iter().chain(d.changed.iter().map(|c| &c.service)).map(String::as_str).collect();
        prop_assert_eq!(d.touched(), touched);
    }

    /// Environment changes name keys only, and exactly the keys that differ.
    #[test]
    fn environment_changes_are_the_differing_keys(
        a in proptest::collection::btree_map("[A-D]", "[xy]", 0..4),
        b in proptest::collection::btree_map("[A-D]", "[xy]", 0..4),
    ) {
        let mut old = shape("s", "i");
        old.environment = a.clone();
        let mut new = shape("s", "i");
        new.environment = b.clone();
        let d = diff(&[old], &[new]);
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let differing: BTreeSet<String> = keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
        let mut seen = BTreeSet::new();
        for c in d.changed.iter().flat_map(|c| &c.changes) {
            if let Change::Environment { added, removed, changed } = c {
                for k in added { prop_assert!(!a.contains_key(k) && b.contains_key(k)); seen.insert(k.clone()); }
                for k in removed { prop_assert!(a.contains_key(k) && !b.contains_key(k)); seen.insert(k.clone()); }
                for k in changed { prop_assert!(a[k] != b[k]); seen.insert(k.clone()); }
            }
        }
        prop_assert_eq!(seen, differing);
    }
}

#[test]
fn swarm_defaults() {
    let c = UpdateConfig::default();
    assert_eq!(c.parallelism, 1);
    assert_eq!(c.delay, Duration::ZERO);
    assert_eq!(c.order, UpdateOrder::StopFirst);
    assert_eq!(c.failure_action, FailureAction::Pause);
    assert_eq!(c.monitor, Duration::from_secs(5));
    assert_eq!(c.max_failure_ratio, 0.0);
    let parsed: UpdateConfig =
        serde_json::from_str(r#"{"parallelism":2,"order":"start-first"}"#).unwrap();
    assert_eq!(parsed.parallelism, 2);
    assert_eq!(parsed.order, UpdateOrder::StartFirst);
    assert_eq!(
        parsed.monitor,
        Duration::from_secs(5),
        "unset fields keep Swarm's defaults"
    );
}

#[test]
fn one_replica_at_a_time_by_default() {
    let batches = rolling::plan(3, &UpdateConfig::default());
    let m = Duration::from_secs(5);
    assert_eq!(
        batches.iter().map(|b| b.steps.clone()).collect::<Vec<_>>(),
        (1..=3)
            .map(|r| vec![
                Step::StopOld(r),
                Step::StartNew(r),
                Step::AwaitHealthy {
                    replicas: vec![r],
                    monitor: m
                },
                Step::RemoveOld(r),
            ])
            .collect::<Vec<_>>()
    );
    let config = UpdateConfig {
        parallelism: 2,
        order: UpdateOrder::StartFirst,
        delay: Duration::from_secs(1),
        ..Default::default()
    };
    let batches = rolling::plan(3, &config);
    assert_eq!(batches[0].replicas, vec![1, 2]);
    assert_eq!(
        batches[0].steps,
        vec![
            Step::StartNew(1),
            Step::StartNew(2),
            Step::AwaitHealthy {
                replicas: vec![1, 2],
                monitor: m
            },
            Step::StopOld(1),
            Step::StopOld(2),
            Step::RemoveOld(1),
            Step::RemoveOld(2),
            Step::Wait(Duration::from_secs(1)),
        ]
    );
    assert_eq!(batches[1].replicas, vec![3]);
    assert_eq!(
        batches[1].steps.last(),
        Some(&Step::RemoveOld(3)),
        "no wait after the last batch"
    );
    let all = UpdateConfig {
        parallelism: 0,
        ..Default::default()
    };
    assert_eq!(
        rolling::plan(3, &all).len(),
        1,
        "parallelism 0 replaces all at once"
    );
    assert!(rolling::plan(0, &all).is_empty());
}

#[test]
fn verdicts() {
    let c = |action, ratio| UpdateConfig {
        failure_action: action,
        max_failure_ratio: ratio,
        ..Default::default()
    };
    assert_eq!(
        rolling::verdict(&c(FailureAction::Pause, 0.0), 3, 0),
        Verdict::Proceed
    );
    assert_eq!(
        rolling::verdict(&c(FailureAction::Pause, 0.0), 3, 1),
        Verdict::Pause
    );
    assert_eq!(
        rolling::verdict(&c(FailureAction::Rollback, 0.0), 3, 1),
        Verdict::Rollback
    );
    assert_eq!(
        rolling::verdict(&c(FailureAction::Continue, 0.0), 3, 3),
        Verdict::Proceed
    );
    assert_eq!(
        rolling::verdict(&c(FailureAction::Rollback, 0.34), 3, 1),
        Verdict::Proceed,
        "1/3 is within 0.34"
    );
    assert_eq!(
        rolling::verdict(&c(FailureAction::Rollback, 0.34), 3, 2),
        Verdict::Rollback
    );
    assert_eq!(
        rolling::verdict(&c(FailureAction::Rollback, 0.5), 2, 1),
        Verdict::Proceed,
        "exactly the ratio is allowed"
    );
}

#[test]
fn a_start_first_rollback_after_the_first_replica_touches_only_it() {
    assert_eq!(rolling::rollback(&[1], &[]), vec![Undo::RemoveNew(1)]);
    assert_eq!(
        rolling::rollback(&[1, 2], &[1]),
        vec![Undo::RemoveNew(2), Undo::RemoveNew(1), Undo::StartOld(1)]
    );
}

/// A replica in the model: whether its old container runs, and its new container's state.
#[derive(Clone, Copy, PartialEq, Debug, Default)]
struct Slot {
    old_running: bool,
    old_removed: bool,
    new: Option<bool>,
}

fn arb_config() -> impl Strategy<Value = UpdateConfig> {
    (0..5u32, any::<bool>(), 0..3u64).prop_map(|(parallelism, start_first, delay)| UpdateConfig {
        parallelism,
        order: if start_first {
            UpdateOrder::StartFirst
        } else {
            UpdateOrder::StopFirst
        },
        delay: Duration::from_secs(delay),
        ..Default::default()
    })
}

proptest! {
    /// Running the plan on a model of the replicas: at every step at least
    /// `replicas − parallelism` replicas serve (all of them under start-first), every replica is
    /// replaced exactly once, and all end on the new release.
    #[test]
    fn a_rolling_plan_keeps_enough_replicas_serving(replicas in 0..8u32, config in arb_config()) {
        let batches = rolling::plan(replicas, &config);
        let width = if config.parallelism == 0 { replicas } else { config.parallelism.min(replicas) };
        let floor = match config.order {
            UpdateOrder::StartFirst => replicas,
            UpdateOrder::StopFirst => replicas - width,
        };
        let mut slots = vec![Slot { old_running: true, ..Default::default() }; replicas as usize];
        let mut new_started = vec![0u32; replicas as usize];
        let serving = |s: &[Slot]| s.iter().filter(|x| x.old_running || x.new == Some(true)).count() as u32;
        let mut min = serving(&slots);
        for (i, b) in batches.iter().enumerate() {
            prop_assert!(b.replicas.len() as u32 <= width.max(1));
            for step in &b.steps {
                match step {
                    Step::StopOld(r) => slots[*r as usize - 1].old_running = false,
                    Step::StartNew(r) => {
                        new_started[*r as usize - 1] += 1;
                        slots[*r as usize - 1].new = Some(false);
                    }
                    Step::AwaitHealthy { replicas: rs, monitor } => {
                        prop_assert_eq!(rs, &b.replicas);
                        prop_assert_eq!(*monitor, config.monitor);
                        for r in rs {
                            let s = &mut slots[*r as usize - 1];
                            prop_assert_eq!(s.new, Some(false), "await a started replica");
                            s.new = Some(true);
                        }
                    }
                    Step::RemoveOld(r) => {
                        let s = &mut slots[*r as usize - 1];
                        prop_assert!(!s.old_running, "an old container is stopped before it is removed");
                        prop_assert_eq!(s.new, Some(true), "an old container goes once its replacement is healthy");
                        s.old_removed = true;
                    }
                    Step::Wait(d) => {
                        prop_assert_eq!(*d, config.delay);
                        prop_assert!(i + 1 < batches.len(), "no wait after the last batch");
                    }
                }
                min = min.min(serving(&slots));
            }
        }
        prop_assert!(min >= floor, "min serving {min} < floor {floor}");
        prop_assert!(new_started.iter().all(|n| *n == 1), "each replica replaced exactly once: {new_started:?}");
        prop_assert!(slots.iter().all(|s| s.new == Some(true) && s.old_removed));
        let order: Vec<u32> = batches.iter().flat_map(|b| b.replicas.clone()).collect();
        prop_assert_eq!(order, (1..=replicas).collect::<Vec<_>>());
    }

    /// The verdict against a reference: proceed within the ratio, else the failure action.
    #[test]
    fn verdict_follows_the_ratio(replicas in 1..10u32, failed in 0..10u32, ratio in 0.0..1.0f64, action in 0..3u8) {
        let failed = failed.min(replicas);
        let failure_action = [FailureAction::Pause, FailureAction::Rollback, FailureAction::Continue][action as usize];
        let config = UpdateConfig { max_failure_ratio: ratio, failure_action, ..Default::default() };
        let within = (failed as f64) <= ratio * replicas as f64 + 1e-9;
        let expected = if failed == 0 || within || failure_action == FailureAction::Continue {
            Verdict::Proceed
        } else if failure_action == FailureAction::Pause {
            Verdict::Pause
        } else {
            Verdict::Rollback
        };
        prop_assert_eq!(rolling::verdict(&config, replicas, failed), expected);
    }

    /// A rollback acts on touched replicas only, removes each new container once, and starts
    /// an old container again only when it was stopped.
    #[test]
    fn a_rollback_touches_only_replaced_replicas(touched in proptest::collection::btree_set(1..10u32, 0..5), stopped_mask in any::<u16>()) {
        let touched: Vec<u32> = touched.into_iter().collect();
        let stopped: Vec<u32> = touched.iter().copied().filter(|r| stopped_mask & (1 << r) != 0).collect();
        let undo = rolling::rollback(&touched, &stopped);
        for u in &undo {
            let r = match u { Undo::RemoveNew(r) | Undo::StartOld(r) => r };
            prop_assert!(touched.contains(r));
        }
        for r in &touched {
            prop_assert_eq!(undo.iter().filter(|u| **u == Undo::RemoveNew(*r)).count(), 1);
            prop_assert_eq!(undo.iter().filter(|u| **u == Undo::StartOld(*r)).count(), usize::from(stopped.contains(r)));
            if let Some(start) = undo.iter().position(|u| *u == Undo::StartOld(*r)) {
                let remove = undo.iter().position(|u| *u == Undo::RemoveNew(*r)).unwrap();
                prop_assert!(remove < start, "the new container goes before the old one starts");
            }
        }
    }
}

fn release(rev: u64, outcome: ReleaseOutcome) -> ReleaseRecord {
    ReleaseRecord {
        stack: "s".into(),
        rev,
        at: jiff::Timestamp::from_second(rev as i64).unwrap(),
        host: HostId::from("h"),
        compose: String::new(),
        env: None,
        images: BTreeMap::new(),
        outcome,
        detail: None,
        from_rev: None,
        actor: "a".into(),
    }
}

#[test]
fn revisions_running_and_previous() {
    use ReleaseOutcome::*;
    assert_eq!(next_rev(&[]), 1);
    let rs = vec![
        release(1, Deployed),
        release(2, Deployed),
        release(3, RolledBack),
        release(4, Failed),
    ];
    assert_eq!(next_rev(&rs), 5);
    assert_eq!(running(&rs).map(|r| r.rev), Some(2));
    assert_eq!(previous(&rs).map(|r| r.rev), Some(1));
    assert_eq!(previous(&rs[..1]).map(|r| r.rev), None);
    assert_eq!(running(&rs[2..]).map(|r| r.rev), None);
}

#[test]
fn outcomes_read_as_words_and_shapes_default_to_one_replica() {
    assert_eq!(ReleaseOutcome::Deployed.to_string(), "deployed");
    assert_eq!(ReleaseOutcome::RolledBack.to_string(), "rolled back");
    assert_eq!(ReleaseOutcome::Failed.to_string(), "failed");
    let s: ServiceShape =
        serde_json::from_str(r#"{"name": "web", "image": "x", "digest": "d"}"#).unwrap();
    assert_eq!(s.replicas, 1, "a shape without replicas has one");
    assert_eq!(s.update, UpdateConfig::default());
    assert_eq!(s.image_id, None);
}

#[test]
fn update_config_durations_are_milliseconds_on_the_wire() {
    let c = UpdateConfig {
        delay: Duration::from_millis(1500),
        monitor: Duration::from_secs(2),
        ..Default::default()
    };
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(
        (json["delay"].as_u64(), json["monitor"].as_u64()),
        (Some(1500), Some(2000))
    );
    let back: UpdateConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, c);
}
