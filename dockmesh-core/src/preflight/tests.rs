use super::images::normalize_image;
use super::test_support::*;
use super::*;
use crate::snapshot::{PortKey, Protocol};
use crate::types::HostId;
use CheckStatus::{Fail, Pass, Warn};
use jiff::Timestamp;
use proptest::prelude::*;

/// The base case: stack `shop` on host `a`, target `b` with room for it and its images.
/// Every check passes on it.
struct Case {
    source: HostSnapshot,
    target: HostSnapshot,
    active: Vec<ActiveMigration>,
    migration: Option<MigrationId>,
    stack: String,
}

fn mid(n: u128) -> MigrationId {
    MigrationId(uuid::Uuid::from_u128(n))
}

fn base() -> Case {
    let mut shop = stack("shop", GIB, 5 * GIB);
    shop.images = vec![
        image("nginx:1.27", 190 * MIB),
        image("postgres:16", 400 * MIB),
    ];
    shop.published_ports = vec![PortKey::tcp(8080)];
    let mut source = with_stack(host("a"), shop);
    source.memory_used = 4 * GIB;
    let mut target = host("b");
    target.memory_total = 8 * GIB;
    target.memory_used = 2 * GIB;
    target.disk_total = 50 * GIB;
    target.disk_used = 10 * GIB;
    target.images = ["nginx:1.27", "postgres:16"].map(String::from).into();
    target.ports_in_use = [PortKey::tcp(22), PortKey::tcp(80)].into();
    Case {
        source,
        target,
        active: vec![ActiveMigration {
            id: mid(1),
            stack: "other".into(),
        }],
        migration: Some(mid(7)),
        stack: "shop".into(),
    }
}

fn shop(c: &mut Case) -> &mut StackSnapshot {
    c.source.stacks.get_mut("shop").unwrap()
}

/// Apply `change` to the base case, run pre-flight, and compare: the listed checks must
/// have exactly that status and detail; every other check must pass.
fn check(change: impl FnOnce(&mut Case), expected: &[(&str, CheckStatus, &str)]) {
    let mut c = base();
    change(&mut c);
    let report = run(&PreflightInput {
        migration: c.migration,
        stack: &c.stack,
        source: &c.source,
        target: &c.target,
        active_migrations: &c.active,
    });
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECK_NAMES);
    for r in &report.checks {
        match expected.iter().find(|(n, _, _)| *n == r.name) {
            Some((_, status, detail)) => {
                assert_eq!(
                    (r.status, r.detail.as_str()),
                    (*status, *detail),
                    "check {}",
                    r.name
                );
            }
            None => assert_eq!(r.status, Pass, "check {}: {}", r.name, r.detail),
        }
    }
    for (n, _, _) in expected {
        assert!(CHECK_NAMES.contains(n), "unknown check {n}");
    }
    let any_fail = expected.iter().any(|(_, s, _)| *s == Fail);
    assert_eq!(report.passed(), !any_fail);
}

#[test]
fn base_case_passes_with_readable_details() {
    check(
        |_| {},
        &[
            (TARGET_ONLINE, Pass, "the target host b is online"),
            (
                NO_CONCURRENT,
                Pass,
                "no other migration of stack shop is in progress",
            ),
            (SOURCE_ONLINE, Pass, "the source host a is online"),
            (
                SOURCE_METRICS,
                Pass,
                "stack shop on a uses 1.0 GiB of memory and 1 volume totalling 5.0 GiB",
            ),
            (
                TARGET_CAPACITY,
                Pass,
                "needs 1.2 GiB free memory (1.2 × 1.0 GiB used by the stack on the source), target b has 6.0 GiB free",
            ),
            (
                TARGET_DISK,
                Pass,
                "needs 5.5 GiB free disk (1.1 × (5.0 GiB of volumes + 0 B of 0 images the target lacks)), target b has 40.0 GiB free",
            ),
            (
                PORT_CONFLICTS,
                Pass,
                "the stack's published ports (8080/tcp) are free on b",
            ),
            (IMAGES, Pass, "b has every image the stack uses (2)"),
            (ARCH_MATCH, Pass, "source and target are both x86_64"),
            (
                DOCKER_API,
                Pass,
                "the target's Docker API 1.47 is not older than the source's 1.47",
            ),
            (BIND_MOUNTS, Pass, "the stack has no bind mounts"),
            (
                TARGET_FREE,
                Pass,
                "b has no stack named shop and none of its volumes (shop_data)",
            ),
        ],
    );
}

#[test]
fn target_offline_fails_every_check_that_needs_it() {
    let not = "could not be evaluated: the target host b is offline";
    check(
        |c| c.target = HostSnapshot::offline(HostId::new("b"), Timestamp::UNIX_EPOCH),
        &[
            (
                TARGET_ONLINE,
                Fail,
                "the target host b is offline; bring its agent back online and retry",
            ),
            (TARGET_CAPACITY, Fail, not),
            (TARGET_DISK, Fail, not),
            (PORT_CONFLICTS, Fail, not),
            (CONTAINER_NAMES, Fail, not),
            (IMAGES, Fail, not),
            (ARCH_MATCH, Fail, not),
            (DOCKER_API, Fail, not),
            (TARGET_FREE, Fail, not),
        ],
    );
}

#[test]
fn source_offline_fails_every_check_that_needs_it() {
    let not = "could not be evaluated: the source host a is offline";
    check(
        |c| c.source = HostSnapshot::offline(HostId::new("a"), Timestamp::UNIX_EPOCH),
        &[
            (
                SOURCE_ONLINE,
                Fail,
                "the source host a is offline; bring its agent back online and retry",
            ),
            (SOURCE_METRICS, Fail, not),
            (TARGET_CAPACITY, Fail, not),
            (TARGET_DISK, Fail, not),
            (PORT_CONFLICTS, Fail, not),
            (CONTAINER_NAMES, Fail, not),
            (IMAGES, Fail, not),
            (ARCH_MATCH, Fail, not),
            (DOCKER_API, Fail, not),
            (BIND_MOUNTS, Fail, not),
            (TARGET_FREE, Fail, not),
        ],
    );
}

#[test]
fn both_offline_names_both() {
    let mut c = base();
    c.source.online = false;
    c.target.online = false;
    let r = run(&PreflightInput {
        migration: None,
        stack: "shop",
        source: &c.source,
        target: &c.target,
        active_migrations: &[],
    });
    let cap = r.checks.iter().find(|c| c.name == TARGET_CAPACITY).unwrap();
    assert_eq!(
        cap.detail,
        "could not be evaluated: the source host a is offline; the target host b is offline"
    );
    assert_eq!(r.failures().count(), 12, "{r:?}");
}

#[test]
fn missing_stack_fails_source_metrics_and_what_needs_it() {
    let not = "could not be evaluated: the source host a reports no stack named shop";
    check(
        |c| {
            c.source.stacks.clear();
        },
        &[
            (
                SOURCE_METRICS,
                Fail,
                "the source host a reports no stack named shop; check the stack name and the host",
            ),
            (TARGET_CAPACITY, Fail, not),
            (TARGET_DISK, Fail, not),
            (PORT_CONFLICTS, Fail, not),
            (CONTAINER_NAMES, Fail, not),
            (IMAGES, Fail, not),
            (BIND_MOUNTS, Fail, not),
            (TARGET_FREE, Fail, not),
        ],
    );
}

#[test]
fn missing_memory_metrics_fail() {
    check(
        |c| shop(c).memory_used = None,
        &[
            (
                SOURCE_METRICS,
                Fail,
                "the source host a reports stack shop but no memory metrics for it, so the target's memory cannot be checked; make sure the stack is running and its agent can read container stats, then retry",
            ),
            (
                TARGET_CAPACITY,
                Fail,
                "could not be evaluated: the source reported no memory metrics for stack shop",
            ),
        ],
    );
}

#[test]
fn unknown_volume_size_warns() {
    check(
        |c| {
            shop(c).volumes.push(crate::snapshot::VolumeUsage {
                name: "shop_cache".into(),
                bytes: None,
                labels: Default::default(),
            })
        },
        &[
            (
                SOURCE_METRICS,
                Warn,
                "stack shop on a uses 1.0 GiB of memory and 2 volumes totalling 5.0 GiB; the size of shop_cache is unknown and counted as 0",
            ),
            (
                TARGET_DISK,
                Warn,
                "needs 5.5 GiB free disk (1.1 × (5.0 GiB of volumes + 0 B of 0 images the target lacks)), target b has 40.0 GiB free; unknown sizes counted as 0: volume shop_cache",
            ),
            (
                TARGET_FREE,
                Pass,
                "b has no stack named shop and none of its volumes (shop_data, shop_cache)",
            ),
        ],
    );
}

#[test]
fn concurrent_migration_of_the_same_stack_fails_but_not_itself() {
    check(
        |c| {
            c.active.push(ActiveMigration {
                id: mid(7),
                stack: "shop".into(),
            });
        },
        &[],
    );
    check(
        |c| {
            c.active.push(ActiveMigration {
                id: mid(9),
                stack: "shop".into(),
            });
        },
        &[(
            NO_CONCURRENT,
            Fail,
            "stack shop is already being moved by migration 00000000-0000-0000-0000-000000000009; wait for it to end or roll it back, then retry",
        )],
    );
    // Without an id of its own, any active migration of the stack is concurrent.
    check(
        |c| {
            c.migration = None;
            c.active.push(ActiveMigration {
                id: mid(7),
                stack: "shop".into(),
            });
        },
        &[(
            NO_CONCURRENT,
            Fail,
            "stack shop is already being moved by migration 00000000-0000-0000-0000-000000000007; wait for it to end or roll it back, then retry",
        )],
    );
}

#[test]
fn memory_boundary_is_exactly_one_point_two() {
    // 1000 MiB used: exactly 1200 MiB free passes, one byte less fails.
    let at = |free: u64| {
        move |c: &mut Case| {
            shop(c).memory_used = Some(1000 * MIB);
            c.target.memory_total = 10 * GIB;
            c.target.memory_used = 10 * GIB - free;
        }
    };
    check(
        at(1200 * MIB),
        &[
            (
                TARGET_CAPACITY,
                Pass,
                "needs 1.2 GiB free memory (1.2 × 1000.0 MiB used by the stack on the source), target b has 1.2 GiB free",
            ),
            (
                SOURCE_METRICS,
                Pass,
                "stack shop on a uses 1000.0 MiB of memory and 1 volume totalling 5.0 GiB",
            ),
        ],
    );
    check(
        at(1200 * MIB - 1),
        &[
            (
                TARGET_CAPACITY,
                Fail,
                "needs 1.2 GiB free memory (1.2 × 1000.0 MiB used by the stack on the source), target b has 1.2 GiB free; short by 1 B",
            ),
            (
                SOURCE_METRICS,
                Pass,
                "stack shop on a uses 1000.0 MiB of memory and 1 volume totalling 5.0 GiB",
            ),
        ],
    );
}

#[test]
fn memory_boundary_has_no_float_rounding() {
    // 1.2 × 1 GiB = 1288490188.8 bytes: 1288490189 free is enough, 1288490188 is not.
    let cap = |free: u64, used: u64| {
        let mut t = host("b");
        t.memory_total = free;
        target_capacity(&stack("s", used, 0), &t, &TargetLoad::default()).status
    };
    assert_eq!(cap(1_288_490_189, GIB), Pass);
    assert_eq!(cap(1_288_490_188, GIB), Fail);
    // 1.2 × 5 = 6 exactly; 1.2 × 1 = 1.2 needs 2 whole bytes.
    assert_eq!(cap(6, 5), Pass);
    assert_eq!(cap(5, 5), Fail);
    assert_eq!(cap(2, 1), Pass);
    assert_eq!(cap(1, 1), Fail);
    assert_eq!(cap(0, 0), Pass);
    // The largest sizes do not overflow.
    assert_eq!(cap(u64::MAX, u64::MAX), Fail);
    assert_eq!(cap(u64::MAX, u64::MAX / 12 * 10), Pass);
}

#[test]
fn disk_boundary_is_exactly_one_point_one_including_missing_images() {
    // 800 MiB of volumes + 200 MiB of an image the target lacks = 1000 MiB; needs 1100 MiB.
    let at = |free: u64| {
        move |c: &mut Case| {
            let s = shop(c);
            s.volumes[0].bytes = Some(800 * MIB);
            s.images.push(image("redis:7", 200 * MIB));
            c.target.disk_total = 20 * GIB;
            c.target.disk_used = 20 * GIB - free;
        }
    };
    let images = (
        IMAGES,
        Warn,
        "b lacks 1 image: redis:7 (200.0 MiB); images are not transferred, so the target must pull them from a registry or have them loaded before the migration, otherwise the stack will not start there and the migration rolls back to the source",
    );
    let metrics = (
        SOURCE_METRICS,
        Pass,
        "stack shop on a uses 1.0 GiB of memory and 1 volume totalling 800.0 MiB",
    );
    check(
        at(1100 * MIB),
        &[
            (
                TARGET_DISK,
                Pass,
                "needs 1.1 GiB free disk (1.1 × (800.0 MiB of volumes + 200.0 MiB of 1 image the target lacks)), target b has 1.1 GiB free",
            ),
            images,
            metrics,
        ],
    );
    check(
        at(1100 * MIB - 1),
        &[
            (
                TARGET_DISK,
                Fail,
                "needs 1.1 GiB free disk (1.1 × (800.0 MiB of volumes + 200.0 MiB of 1 image the target lacks)), target b has 1.1 GiB free; short by 1 B",
            ),
            images,
            metrics,
        ],
    );
    // Once the target has the image, only the volumes count.
    check(
        |c| {
            at(1100 * MIB - 1)(c);
            c.target.images.insert("redis:7".into());
        },
        &[
            (
                TARGET_DISK,
                Pass,
                "needs 880.0 MiB free disk (1.1 × (800.0 MiB of volumes + 0 B of 0 images the target lacks)), target b has 1.1 GiB free",
            ),
            metrics,
        ],
    );
}

#[test]
fn disk_exact_at_byte_level() {
    let disk = |free: u64, vol: u64| {
        let mut t = host("b");
        t.disk_total = free;
        target_disk(&stack("s", 0, vol), &t, &TargetLoad::default()).status
    };
    assert_eq!(disk(11, 10), Pass);
    assert_eq!(disk(10, 10), Fail);
    assert_eq!(disk(2, 1), Pass);
    assert_eq!(disk(1, 1), Fail);
    // 1.1 × 1 GiB = 1181116006.4
    assert_eq!(disk(1_181_116_007, GIB), Pass);
    assert_eq!(disk(1_181_116_006, GIB), Fail);
}

#[test]
fn port_conflicts_name_each_port() {
    check(
        |c| {
            shop(c).published_ports = vec![
                PortKey::tcp(443),
                PortKey::tcp(80),
                PortKey {
                    port: 53,
                    protocol: Protocol::Udp,
                },
                PortKey::tcp(22),
            ]
        },
        &[(
            PORT_CONFLICTS,
            Fail,
            "22/tcp is in use on b, 80/tcp is in use on b; free them on the target or change the stack's published ports",
        )],
    );
    // Same number, other protocol: no conflict.
    check(
        |c| {
            shop(c).published_ports = vec![PortKey {
                port: 80,
                protocol: Protocol::Udp,
            }]
        },
        &[(
            PORT_CONFLICTS,
            Pass,
            "the stack's published ports (80/udp) are free on b",
        )],
    );
    check(
        |c| shop(c).published_ports.clear(),
        &[(PORT_CONFLICTS, Pass, "the stack publishes no ports")],
    );
}

#[test]
fn container_names_taken_on_the_target_fail() {
    check(
        |c| {
            shop(c).container_names = vec!["shop-web-1".into(), "proxy".into()];
            c.target.container_names = ["proxy".into(), "other".into()].into();
        },
        &[(
            CONTAINER_NAMES,
            Fail,
            "container name(s) proxy are taken on b by containers that are not the stack's; \
             rename or remove them there, or change the stack's container_name",
        )],
    );
    check(
        |c| {
            shop(c).container_names = vec!["proxy".into()];
            c.target.container_names = ["other".into()].into();
        },
        &[(
            CONTAINER_NAMES,
            Pass,
            "the stack's container names (proxy) are free on b",
        )],
    );
    check(
        |_| {},
        &[(
            CONTAINER_NAMES,
            Pass,
            "the source reports no container names for the stack",
        )],
    );
}

#[test]
fn missing_images_warn_and_references_are_normalized() {
    check(
        |c| {
            c.target.images = ["docker.io/library/nginx:1.27".to_owned()].into();
            let s = shop(c);
            s.images.push(image("busybox", 0));
            // Listed twice by two services: named once.
            s.images.push(image("postgres:16", 400 * MIB));
        },
        &[
            (
                IMAGES,
                Warn,
                "b lacks 2 images: postgres:16 (400.0 MiB), busybox (size unknown); images are not transferred, so the target must pull them from a registry or have them loaded before the migration, otherwise the stack will not start there and the migration rolls back to the source",
            ),
            (
                TARGET_DISK,
                Warn,
                "needs 5.9 GiB free disk (1.1 × (5.0 GiB of volumes + 400.0 MiB of 2 images the target lacks)), target b has 40.0 GiB free; unknown sizes counted as 0: image busybox",
            ),
        ],
    );
    check(
        |c| shop(c).images.clear(),
        &[(IMAGES, Pass, "the stack uses no images")],
    );
}

#[test]
fn image_normalization() {
    for (a, b) in [
        ("nginx", "nginx:latest"),
        ("docker.io/library/nginx:latest", "nginx:latest"),
        ("library/nginx", "nginx:latest"),
        ("docker.io/grafana/grafana:11", "grafana/grafana:11"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("localhost:5000/app:2", "localhost:5000/app:2"),
        ("nginx@sha256:abc", "nginx@sha256:abc"),
        ("dockmesh-test/busybox:1", "dockmesh-test/busybox:1"),
    ] {
        assert_eq!(normalize_image(a), b, "{a}");
    }
}

#[test]
fn arch_mismatch_fails_and_aliases_match() {
    check(
        |c| c.target.arch = "aarch64".into(),
        &[(
            ARCH_MATCH,
            Fail,
            "the source is x86_64 and the target is aarch64: the stack's images are built for x86_64; choose a x86_64 target",
        )],
    );
    check(
        |c| c.target.arch = "amd64".into(),
        &[(ARCH_MATCH, Pass, "source and target are both x86_64")],
    );
    check(
        |c| c.source.arch = String::new(),
        &[(
            ARCH_MATCH,
            Fail,
            "could not be evaluated: host a did not report its CPU architecture",
        )],
    );
}

#[test]
fn docker_api_compares_numerically() {
    check(
        |c| c.target.docker_api_version = "1.41".into(),
        &[(
            DOCKER_API,
            Fail,
            "the target's Docker API 1.41 is older than the source's 1.47: the stack may use what the older engine does not support; upgrade Docker on the target",
        )],
    );
    // As strings "1.9" > "1.41"; as versions it is older.
    check(
        |c| {
            c.source.docker_api_version = "1.41".into();
            c.target.docker_api_version = "1.9".into();
        },
        &[(
            DOCKER_API,
            Fail,
            "the target's Docker API 1.9 is older than the source's 1.41: the stack may use what the older engine does not support; upgrade Docker on the target",
        )],
    );
    check(
        |c| {
            c.source.docker_api_version = "1.41".into();
            c.target.docker_api_version = "1.47".into();
        },
        &[(
            DOCKER_API,
            Pass,
            "the target's Docker API 1.47 is not older than the source's 1.41",
        )],
    );
    check(
        |c| c.target.docker_api_version = "1.47.0".into(),
        &[(
            DOCKER_API,
            Pass,
            "the target's Docker API 1.47.0 is not older than the source's 1.47",
        )],
    );
    check(
        |c| c.target.docker_api_version = String::new(),
        &[(
            DOCKER_API,
            Fail,
            "could not be evaluated: host b reported Docker API version \"\", which is not a version number",
        )],
    );
}

#[test]
fn bind_mounts_warn_listing_each() {
    check(
        |c| {
            shop(c).bind_mounts = vec![
                bind("web", "/srv/shop/nginx.conf", "/etc/nginx/nginx.conf"),
                bind("db", "/srv/shop/init", "/docker-entrypoint-initdb.d"),
            ]
        },
        &[(
            BIND_MOUNTS,
            Warn,
            "2 bind mounts are not moved, make their host paths exist on the target: web: /srv/shop/nginx.conf → /etc/nginx/nginx.conf, db: /srv/shop/init → /docker-entrypoint-initdb.d",
        )],
    );
    check(
        |c| shop(c).bind_mounts = vec![bind("web", "/a", "/b")],
        &[(
            BIND_MOUNTS,
            Warn,
            "1 bind mount is not moved, make its host path exist on the target: web: /a → /b",
        )],
    );
}

#[test]
fn target_free_fails_when_import_would_overwrite() {
    check(
        |c| {
            c.target.stacks.insert("shop".into(), stack("shop", 0, 0));
        },
        &[(
            TARGET_FREE,
            Fail,
            "b already has a stack named shop: importing would overwrite what is there; remove it from the target first or choose another target",
        )],
    );
    check(
        |c| {
            c.target.volumes.insert("shop_data".into());
        },
        &[(
            TARGET_FREE,
            Fail,
            "b already has a volume named shop_data: importing would overwrite what is there; remove it from the target first or choose another target",
        )],
    );
    check(
        |c| {
            c.target = c.source.clone();
        },
        &[
            (
                TARGET_FREE,
                Fail,
                "the target is the source host a; choose another host",
            ),
            (TARGET_ONLINE, Pass, "the target host a is online"),
            (
                TARGET_CAPACITY,
                Pass,
                "needs 1.2 GiB free memory (1.2 × 1.0 GiB used by the stack on the source), target a has 12.0 GiB free",
            ),
            (
                TARGET_DISK,
                Pass,
                "needs 6.1 GiB free disk (1.1 × (5.0 GiB of volumes + 590.0 MiB of 2 images the target lacks)), target a has 100.0 GiB free",
            ),
            (
                IMAGES,
                Warn,
                "a lacks 2 images: nginx:1.27 (190.0 MiB), postgres:16 (400.0 MiB); images are not transferred, so the target must pull them from a registry or have them loaded before the migration, otherwise the stack will not start there and the migration rolls back to the source",
            ),
        ],
    );
}

#[test]
fn load_of_earlier_placements_counts() {
    let mut t = host("b");
    t.memory_total = 2400 * MIB;
    t.disk_total = 2200 * MIB;
    t.ports_in_use.clear();
    let mut first = stack("one", 1000 * MIB, 1000 * MIB);
    first.published_ports = vec![PortKey::tcp(80)];
    first.images = vec![image("redis:7", 0)];
    let mut load = TargetLoad::default();
    load.place(&first, &t);
    let mut second = stack("two", 1000 * MIB, 1000 * MIB);
    second.images = vec![image("redis:7", 0)];
    // Exactly fills both: 1.2 × 2000 MiB = 2400 MiB, 1.1 × 2000 MiB = 2200 MiB.
    let cap = target_capacity(&second, &t, &load);
    assert_eq!(cap.status, Pass, "{}", cap.detail);
    assert_eq!(
        cap.detail,
        "needs 1.2 GiB free memory (1.2 × 1000.0 MiB used by the stack on the source), target b has 2.3 GiB free, of which 1.2 GiB is reserved by 1 stack placed there earlier in this plan (1.2 × 1000.0 MiB)"
    );
    // The image came with the first stack: not missing any more.
    assert_eq!(images(&second, &t, &load).status, Pass);
    assert_eq!(target_disk(&second, &t, &load).status, Pass);
    second.memory_used = Some(1000 * MIB + 1);
    let cap = target_capacity(&second, &t, &load);
    assert_eq!(cap.status, Fail);
    assert!(cap.detail.ends_with("; short by 2 B"), "{}", cap.detail);
    second.published_ports = vec![PortKey::tcp(80)];
    assert_eq!(
        port_conflicts(&second, &t, &load).detail,
        "80/tcp is taken by stack one placed there earlier in this plan; free them on the target or change the stack's published ports"
    );
    second.name = "one".into();
    second.volumes[0].name = "one_data".into();
    assert_eq!(
        target_free(&host("a"), &second, &t, &load).detail,
        "a stack named one is placed on b earlier in this plan, b already has a volume named one_data: importing would overwrite what is there; remove it from the target first or choose another target"
    );
}

#[test]
fn human_units() {
    for (b, s) in [
        (0u128, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (u128::from(MIB) - 1, "1.0 MiB"),
        (u128::from(GIB) * 12 / 10, "1.2 GiB"),
        (u128::from(GIB) * 1024 * 1024 * 3, "3.0 PiB"),
        (u128::from(u64::MAX), "16.0 EiB"),
    ] {
        assert_eq!(human_bytes(b), s, "{b}");
    }
}

fn arb_input() -> impl Strategy<
    Value = (
        HostSnapshot,
        HostSnapshot,
        Vec<ActiveMigration>,
        Option<u8>,
        String,
    ),
> {
    let names = || vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    (
        arb_host("src".into(), names()),
        arb_host("dst".into(), names()),
        prop::collection::vec((0u8..4, prop::sample::select(names())), 0..3),
        proptest::option::of(0u8..4),
        prop::sample::select(names()),
    )
        .prop_map(|(s, t, active, own, stack)| {
            let active = active
                .into_iter()
                .map(|(id, stack)| ActiveMigration {
                    id: mid(u128::from(id)),
                    stack,
                })
                .collect();
            (s, t, active, own, stack)
        })
}

proptest! {
    #[test]
    fn report_has_every_check_once_in_order(
        (source, target, active, own, stack) in arb_input()
    ) {
        let report = run(&PreflightInput {
            migration: own.map(|n| mid(u128::from(n))),
            stack: &stack,
            source: &source,
            target: &target,
            active_migrations: &active,
        });
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        prop_assert_eq!(&names[..], &CHECK_NAMES[..]);
        let any_fail = report.checks.iter().any(|c| c.status == Fail);
        prop_assert_eq!(report.passed(), !any_fail);
        prop_assert_eq!(report.failures().count() == 0, report.passed());
        for c in &report.checks {
            prop_assert!(!c.detail.is_empty(), "{} has no detail", c.name);
        }
        // An offline host never lets a check that needs it pass.
        if !target.online || !source.online {
            prop_assert!(!report.passed());
            for c in &report.checks {
                if c.name != NO_CONCURRENT
                    && !(c.name == BIND_MOUNTS && source.online)
                    && !(c.name == SOURCE_ONLINE && source.online)
                    && !(c.name == TARGET_ONLINE && target.online)
                    && !(c.name == SOURCE_METRICS && source.online)
                {
                    prop_assert_eq!(c.status, Fail, "{}: {}", c.name, c.detail);
                }
            }
        }
    }

    #[test]
    fn capacity_matches_the_exact_rule(used in 0u64..=u64::MAX, free in 0u64..=u64::MAX) {
        let mut t = host("b");
        t.memory_total = free;
        let r = target_capacity(&stack("s", used, 0), &t, &TargetLoad::default());
        let exact = u128::from(used) * 12 <= u128::from(free) * 10;
        prop_assert_eq!(r.status == Pass, exact);
    }
}
