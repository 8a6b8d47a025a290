use super::*;
use crate::preflight::test_support::*;
use crate::preflight::{self, PreflightInput};
use crate::snapshot::PortKey;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Plan draining `a` and compare each entry's stack and target, in order.
fn check(
    hosts: &[HostSnapshot],
    order: DrainOrder,
    expected: &[(&str, Option<&str>)],
) -> DrainPlan {
    let plan = plan(&HostId::new("a"), hosts, order).expect("plan");
    let got: Vec<(&str, Option<&str>)> = plan
        .entries
        .iter()
        .map(|e| (e.stack.as_str(), e.target.as_ref().map(|t| t.as_str())))
        .collect();
    assert_eq!(got, expected, "{plan:#?}");
    plan
}

/// A target with `mem` of free memory, `disk` of free disk.
fn target(id: &str, mem: u64, disk: u64) -> HostSnapshot {
    let mut h = host(id);
    h.memory_total = mem;
    h.disk_total = disk;
    h
}

fn source(stacks: Vec<StackSnapshot>) -> HostSnapshot {
    stacks.into_iter().fold(host("a"), with_stack)
}

#[test]
fn smallest_first_by_volume_then_memory_then_name() {
    let src = source(vec![
        stack("big", 100 * MIB, 3 * GIB),
        stack("mid", 200 * MIB, GIB),
        stack("tiny2", 100 * MIB, GIB),
        stack("tiny1", 100 * MIB, GIB),
    ]);
    let hosts = [src, target("b", 16 * GIB, 100 * GIB)];
    check(
        &hosts,
        DrainOrder::default(),
        &[
            ("tiny1", Some("b")),
            ("tiny2", Some("b")),
            ("mid", Some("b")),
            ("big", Some("b")),
        ],
    );
    check(
        &hosts,
        DrainOrder::LargestFirst,
        &[
            ("big", Some("b")),
            ("mid", Some("b")),
            ("tiny1", Some("b")),
            ("tiny2", Some("b")),
        ],
    );
}

#[test]
fn earlier_placements_use_up_memory() {
    // b fits exactly one of the two (1.2 × 1000 MiB = 1200 MiB of 2000 MiB), c the other.
    let hosts = [
        source(vec![
            stack("one", 1000 * MIB, 0),
            stack("two", 1000 * MIB, 0),
        ]),
        target("b", 2000 * MIB, GIB),
        target("c", 1500 * MIB, GIB),
    ];
    check(
        &hosts,
        DrainOrder::SmallestFirst,
        &[("one", Some("b")), ("two", Some("c"))],
    );
    // Room for exactly both on b: 1.2 × 2000 MiB = 2400 MiB.
    let hosts = [
        source(vec![
            stack("one", 1000 * MIB, 0),
            stack("two", 1000 * MIB, 0),
        ]),
        target("b", 2400 * MIB, GIB),
    ];
    check(
        &hosts,
        DrainOrder::SmallestFirst,
        &[("one", Some("b")), ("two", Some("b"))],
    );
    // One byte less and the second does not fit.
    let hosts = [
        source(vec![
            stack("one", 1000 * MIB, 0),
            stack("two", 1000 * MIB, 0),
        ]),
        target("b", 2400 * MIB - 1, GIB),
    ];
    let p = check(
        &hosts,
        DrainOrder::SmallestFirst,
        &[("one", Some("b")), ("two", None)],
    );
    assert_eq!(
        p.entries[1].reason,
        "no target fits: b: target_capacity (needs 1.2 GiB free memory (1.2 × 1000.0 MiB used by the stack on the source), target b has 2.3 GiB free, of which 1.2 GiB is reserved by 1 stack placed there earlier in this plan (1.2 × 1000.0 MiB); short by 1 B)"
    );
    assert!(!p.feasible());
}

#[test]
fn earlier_placements_use_up_disk_and_shared_images_count_once() {
    let with_image = |mut s: StackSnapshot| {
        s.images = vec![image("postgres:16", 200 * MIB)];
        s
    };
    // (800 + 800 MiB of volumes + 200 MiB image once) × 1.1 = 1980 MiB.
    let src = source(vec![
        with_image(stack("one", MIB, 800 * MIB)),
        with_image(stack("two", MIB, 800 * MIB)),
    ]);
    check(
        &[src.clone(), target("b", GIB, 1980 * MIB)],
        DrainOrder::SmallestFirst,
        &[("one", Some("b")), ("two", Some("b"))],
    );
    check(
        &[src, target("b", GIB, 1980 * MIB - 1)],
        DrainOrder::SmallestFirst,
        &[("one", Some("b")), ("two", None)],
    );
}

#[test]
fn earlier_placements_take_ports() {
    let mut one = stack("one", MIB, MIB);
    one.published_ports = vec![PortKey::tcp(8080)];
    let mut two = stack("two", MIB, 2 * MIB);
    two.published_ports = vec![PortKey::tcp(8080)];
    let hosts = [
        source(vec![one, two]),
        target("b", 8 * GIB, 8 * GIB),
        target("c", 4 * GIB, 8 * GIB),
    ];
    check(
        &hosts,
        DrainOrder::SmallestFirst,
        &[("one", Some("b")), ("two", Some("c"))],
    );
}

#[test]
fn most_free_memory_after_placement_then_smallest_id() {
    let hosts = [
        source(vec![stack("s", GIB, GIB)]),
        target("c", 8 * GIB, 10 * GIB),
        target("d", 9 * GIB, 10 * GIB),
        target("b", 8 * GIB, 10 * GIB),
    ];
    let p = check(&hosts, DrainOrder::SmallestFirst, &[("s", Some("d"))]);
    assert_eq!(
        p.entries[0].reason,
        "d leaves the most memory free after placement (7.8 GiB), among 3 targets that fit"
    );
    let hosts = [
        source(vec![stack("s", GIB, GIB)]),
        target("c", 8 * GIB, 10 * GIB),
        target("b", 8 * GIB, 10 * GIB),
    ];
    check(&hosts, DrainOrder::SmallestFirst, &[("s", Some("b"))]);
}

#[test]
fn unfit_targets_are_explained_per_host() {
    let mut s = stack("s", GIB, GIB);
    s.published_ports = vec![PortKey::tcp(80)];
    let mut arm = target("arm", 8 * GIB, 10 * GIB);
    arm.arch = "aarch64".into();
    let mut busy = target("busy", 8 * GIB, 10 * GIB);
    busy.ports_in_use.insert(PortKey::tcp(80));
    let mut down = target("down", 8 * GIB, 10 * GIB);
    down.online = false;
    let hosts = [
        source(vec![s]),
        arm,
        busy,
        down,
        target("small", GIB, 10 * GIB),
    ];
    let p = check(&hosts, DrainOrder::SmallestFirst, &[("s", None)]);
    assert_eq!(
        p.entries[0].reason,
        "no target fits: arm: arch_match (the source is x86_64 and the target is aarch64: the stack's images are built for x86_64; choose a x86_64 target); \
         busy: port_conflicts (80/tcp is in use on busy; free them on the target or change the stack's published ports); \
         down: offline; \
         small: target_capacity (needs 1.2 GiB free memory (1.2 × 1.0 GiB used by the stack on the source), target small has 1.0 GiB free; short by 204.8 MiB)"
    );
}

#[test]
fn older_api_and_occupied_names_are_not_targets() {
    let mut old = target("old", 8 * GIB, 10 * GIB);
    old.docker_api_version = "1.41".into();
    let mut taken = target("taken", 8 * GIB, 10 * GIB);
    taken.volumes.insert("s_data".into());
    let hosts = [source(vec![stack("s", GIB, GIB)]), old, taken];
    let p = check(&hosts, DrainOrder::SmallestFirst, &[("s", None)]);
    assert!(
        p.entries[0].reason.contains("old: docker_api ("),
        "{}",
        p.entries[0].reason
    );
    assert!(
        p.entries[0].reason.contains("taken: target_free ("),
        "{}",
        p.entries[0].reason
    );
}

#[test]
fn warnings_are_named_in_the_reason() {
    let mut s = stack("s", GIB, GIB);
    s.images = vec![image("redis:7", 30 * MIB)];
    s.bind_mounts = vec![bind("app", "/srv/s", "/data")];
    let hosts = [source(vec![s]), target("b", 8 * GIB, 10 * GIB)];
    let p = check(&hosts, DrainOrder::SmallestFirst, &[("s", Some("b"))]);
    assert_eq!(
        p.entries[0].reason,
        "b leaves the most memory free after placement (6.8 GiB), among 1 target that fit; \
         warning images: b lacks 1 image: redis:7 (30.0 MiB); images are not transferred, so the target must pull them from a registry or have them loaded before the migration, otherwise the stack will not start there and the migration rolls back to the source; \
         warning bind_mounts: 1 bind mount is not moved, make its host path exist on the target: app: /srv/s → /data"
    );
}

#[test]
fn stacks_without_memory_metrics_or_targets_are_infeasible() {
    let mut s = stack("s", 0, GIB);
    s.memory_used = None;
    let p = check(
        &[source(vec![s.clone()]), target("b", 8 * GIB, 10 * GIB)],
        DrainOrder::SmallestFirst,
        &[("s", None)],
    );
    assert_eq!(
        p.entries[0].reason,
        "a reports no memory metrics for stack s, so no target's memory can be checked; make sure the stack is running and its agent can read container stats, then plan again"
    );
    let p = check(
        &[source(vec![stack("s", 0, 0)])],
        DrainOrder::SmallestFirst,
        &[("s", None)],
    );
    assert_eq!(p.entries[0].reason, "no other host to move it to");
    // An empty host drains trivially.
    let p = check(
        &[source(vec![]), target("b", GIB, GIB)],
        DrainOrder::SmallestFirst,
        &[],
    );
    assert!(p.feasible());
}

#[test]
fn refuses_unknown_offline_and_duplicate_hosts() {
    let a = HostId::new("a");
    assert_eq!(
        plan(&a, &[host("b")], DrainOrder::SmallestFirst),
        Err(DrainError::UnknownHost { host: a.clone() })
    );
    let mut down = host("a");
    down.online = false;
    let err = plan(&a, &[down], DrainOrder::SmallestFirst).unwrap_err();
    assert_eq!(err, DrainError::HostOffline { host: a.clone() });
    assert_eq!(
        err.to_string(),
        "host a is offline, so its stacks cannot be listed: nothing was planned and nothing was moved; bring its agent back online and plan again"
    );
    assert_eq!(
        plan(
            &a,
            &[host("a"), host("b"), host("b")],
            DrainOrder::SmallestFirst
        ),
        Err(DrainError::DuplicateHost {
            host: HostId::new("b")
        })
    );
}

const STACK_NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

/// The drained host `h0` (online, with random stacks) and up to four other hosts, shuffled.
/// The other hosts sometimes have a stack named like one of `h0`'s.
fn arb_fleet() -> impl Strategy<Value = Vec<HostSnapshot>> {
    let names = || STACK_NAMES.map(String::from).to_vec();
    (
        arb_host("h0".into(), names()),
        (0usize..5).prop_flat_map(move |n| {
            (1..=n)
                .map(|i| arb_host(format!("h{i}"), vec!["a".into(), "x".into()]))
                .collect::<Vec<_>>()
        }),
    )
        .prop_map(|(mut src, others)| {
            src.online = true;
            let mut hosts = vec![src];
            hosts.extend(others);
            hosts
        })
        .prop_shuffle()
}

fn arch(a: &str) -> &str {
    match a {
        "amd64" => "x86_64",
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_are_sound(hosts in arb_fleet(), largest in any::<bool>()) {
        let order = if largest { DrainOrder::LargestFirst } else { DrainOrder::SmallestFirst };
        let h0 = HostId::new("h0");
        let p = plan(&h0, &hosts, order).unwrap();
        let by_id: BTreeMap<&HostId, &HostSnapshot> = hosts.iter().map(|h| (&h.host, h)).collect();
        let src = by_id[&h0];

        // Every stack exactly once, in the requested order.
        let names: Vec<&str> = p.entries.iter().map(|e| e.stack.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        prop_assert_eq!(sorted, src.stacks.keys().map(String::as_str).collect::<Vec<_>>());
        let keys: Vec<(u64, u64)> = p.entries.iter().map(|e| {
            let s = &src.stacks[&e.stack];
            (s.volume_bytes(), s.memory_used.unwrap_or(0))
        }).collect();
        for w in keys.windows(2) {
            if largest { prop_assert!(w[0] >= w[1]); } else { prop_assert!(w[0] <= w[1]); }
        }

        // No target over capacity: recomputed here from the rules, over the sum of placements.
        let mut per_target: BTreeMap<&HostId, Vec<&StackSnapshot>> = BTreeMap::new();
        for e in &p.entries {
            if let Some(t) = &e.target {
                prop_assert!(t != &h0);
                prop_assert!(by_id[t].online);
                per_target.entry(t).or_default().push(&src.stacks[&e.stack]);
            }
        }
        for (t, stacks) in &per_target {
            let t = by_id[t];
            let mem: u128 = stacks.iter().map(|s| u128::from(s.memory_used.unwrap())).sum();
            prop_assert!(mem * 12 <= u128::from(t.memory_free()) * 10);
            let mut images = BTreeSet::new();
            let mut disk: u128 = 0;
            let mut ports = BTreeSet::new();
            for s in stacks {
                disk += u128::from(s.volume_bytes());
                for i in &s.images {
                    if !t.images.contains(&i.reference) && images.insert(i.reference.clone()) {
                        disk += u128::from(i.bytes);
                    }
                }
                for port in &s.published_ports {
                    prop_assert!(!t.ports_in_use.contains(port));
                    prop_assert!(ports.insert(*port), "port {} placed twice on {}", port, t.host);
                }
                prop_assert!(!t.stacks.contains_key(&s.name));
                for v in &s.volumes {
                    prop_assert!(!t.volumes.contains(&v.name));
                }
            }
            prop_assert!(disk * 11 <= u128::from(t.disk_free()) * 10);
            prop_assert!(!t.arch.is_empty());
            prop_assert_eq!(arch(&t.arch), arch(&src.arch));
        }

        // Every placement passes pre-flight on its own; an unplaced stack had no target
        // that would pass pre-flight and had not received an earlier placement.
        let mut used_targets = BTreeSet::new();
        for e in &p.entries {
            let alone = |t: &HostSnapshot| preflight::run(&PreflightInput {
                migration: None,
                stack: &e.stack,
                source: src,
                target: t,
                active_migrations: &[],
            }).passed();
            match &e.target {
                Some(t) => {
                    prop_assert!(alone(by_id[t]), "{} on {}", e.stack, t);
                    used_targets.insert(t.clone());
                }
                None => {
                    for h in hosts.iter().filter(|h| h.host != h0 && !used_targets.contains(&h.host)) {
                        prop_assert!(!alone(h), "{} left out but fits {}: {}", e.stack, h.host, e.reason);
                    }
                }
            }
        }
    }

    #[test]
    fn plans_are_deterministic(hosts in arb_fleet(), seed in any::<u64>(), largest in any::<bool>()) {
        let order = if largest { DrainOrder::LargestFirst } else { DrainOrder::SmallestFirst };
        let h0 = HostId::new("h0");
        let first = plan(&h0, &hosts, order).unwrap();
        prop_assert_eq!(&first, &plan(&h0, &hosts, order).unwrap());
        let mut rotated = hosts.clone();
        rotated.rotate_left((seed as usize) % hosts.len());
        rotated.reverse();
        prop_assert_eq!(&first, &plan(&h0, &rotated, order).unwrap());
    }
}
