use super::*;
use proptest::prelude::*;

fn files(compose: &str) -> StackFiles {
    StackFiles {
        name: "shop".into(),
        compose: compose.into(),
        env: Some(format!("V={compose}")),
    }
}

fn volume(name: &str) -> VolumeUsage {
    VolumeUsage {
        name: name.into(),
        bytes: Some(10),
        labels: BTreeMap::new(),
    }
}

fn copy_of(v: &VolumeUsage) -> BackupCopy {
    BackupCopy {
        volume: v.clone(),
        copy: format!("{}-backup-r3", v.name),
        digest: format!("d-{}", v.name),
    }
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn run(volumes: &[&str]) -> StackUpgradeRun {
    StackUpgradeRun::start(
        "shop",
        3,
        HostId::from("edge-1"),
        files("v1"),
        files("v2"),
        BTreeMap::from([("web".to_owned(), "sha256:2".to_owned())]),
        volumes.iter().map(|v| volume(v)).collect(),
        "ops",
        "upgrade",
        None,
        at(100),
    )
}

fn current() -> StackRecord {
    StackRecord {
        name: "shop".into(),
        compose: "v1".into(),
        env: Some("V=v1".into()),
        host: Some(HostId::from("edge-1")),
        updated_at: at(50),
    }
}

/// What the driver reports at each step, drawn by the property.
#[derive(Debug, Clone)]
struct Outcomes {
    volumes: Vec<String>,
    deploy: Result<(), String>,
    problems: Vec<String>,
    restored: Vec<String>,
}

fn outcomes() -> impl Strategy<Value = Outcomes> {
    (
        proptest::collection::vec("[a-c]_data", 0..3),
        prop_oneof![Just(Ok(())), "[a-z ]{1,12}".prop_map(Err)],
        proptest::collection::vec("[a-z ]{1,8}", 0..3),
        proptest::collection::vec("[a-c]_data", 0..3),
    )
        .prop_map(|(volumes, deploy, problems, restored)| Outcomes {
            volumes,
            deploy,
            problems,
            restored,
        })
}

/// Store and load: what a restarted server reads back.
fn reloaded(r: &StackUpgradeRun) -> StackUpgradeRun {
    serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap()
}

/// Every transition but `allowed` is refused at `r`'s stage, and refusing changes nothing.
fn only_allowed(r: &StackUpgradeRun, allowed: Option<&str>) -> Result<(), TestCaseError> {
    let b = r.clone().backed_up(vec![]);
    prop_assert_eq!(b.is_ok(), allowed == Some("backed_up"));
    let d = r.clone().deploy_ended(Ok(()));
    prop_assert_eq!(d.is_ok(), allowed == Some("deploy_ended"));
    let p = r.clone().put_back_ended(vec![], vec![]);
    prop_assert_eq!(p.is_ok(), allowed == Some("put_back_ended"));
    if let Err(e) = r.clone().deploy_ended(Err("x".into())) {
        prop_assert_eq!(e.stage, r.stage.word());
        prop_assert_eq!(&e.stack, "shop");
    }
    Ok(())
}

proptest! {
    /// Driving a run with any outcomes gives the steps of the reference model, the same step
    /// after every reload (a restart), refuses every other transition, and settles as the model
    /// says.
    #[test]
    fn a_run_follows_the_model_across_restarts(o in outcomes()) {
        let names: Vec<&str> = o.volumes.iter().map(String::as_str).collect();
        let mut r = run(&names);
        let mut steps = Vec::new();
        loop {
            // Backup, deploy, put back, settle: a run that is not over after four steps is stuck.
            prop_assert!(steps.len() < 4, "no end after {steps:?}");
            let step = r.next();
            prop_assert_eq!(reloaded(&r).next(), step.clone());
            prop_assert_eq!(reloaded(&r), r.clone());
            steps.push(step.clone());
            r = match step {
                UpgradeStep::BackUp => {
                    only_allowed(&r, Some("backed_up"))?;
                    let copies = r.backup.iter().map(copy_of).collect();
                    r.backed_up(copies).unwrap()
                }
                UpgradeStep::Deploy => {
                    only_allowed(&r, Some("deploy_ended"))?;
                    r.deploy_ended(o.deploy.clone()).unwrap()
                }
                UpgradeStep::PutBack { why } => {
                    prop_assert_eq!(Err(why), o.deploy.clone());
                    only_allowed(&r, Some("put_back_ended"))?;
                    r.put_back_ended(o.restored.clone(), o.problems.clone()).unwrap()
                }
                UpgradeStep::Settle { .. } => {
                    only_allowed(&r, None)?;
                    break;
                }
            };
        }
        // The model.
        let mut expected = Vec::new();
        if !o.volumes.is_empty() {
            expected.push("backup");
        }
        expected.push("deploy");
        if o.deploy.is_err() {
            expected.push("put_back");
        }
        expected.push("settle");
        let got: Vec<&str> = steps.iter().map(|s| match s {
            UpgradeStep::BackUp => "backup",
            UpgradeStep::Deploy => "deploy",
            UpgradeStep::PutBack { .. } => "put_back",
            UpgradeStep::Settle { .. } => "settle",
        }).collect();
        prop_assert_eq!(got, expected);
        let want = match (&o.deploy, o.problems.is_empty()) {
            (Ok(()), _) => ReleaseOutcome::Deployed,
            (Err(_), true) => ReleaseOutcome::RolledBack,
            (Err(_), false) => ReleaseOutcome::Failed,
        };
        let s = r.settled(&current(), at(200)).expect("settled");
        prop_assert_eq!(s.release.outcome, want);
        prop_assert_eq!(r.backups().len(), o.volumes.len());
        let restored: &[String] = if o.deploy.is_err() { &o.restored } else { &[] };
        prop_assert_eq!(r.restored(), restored);
        if let Err(why) = &o.deploy {
            let detail = s.release.detail.clone().unwrap();
            prop_assert!(detail.starts_with(why.as_str()), "{detail}");
            for p in &o.problems {
                prop_assert!(detail.contains(p.as_str()), "{detail} names {p}");
            }
        } else {
            prop_assert_eq!(s.release.detail, None);
        }
    }
}

#[test]
fn a_run_is_not_settled_while_a_step_is_left() {
    let r = run(&["a_data"]);
    assert_eq!(r.settled(&current(), at(200)), None);
    let r = r.backed_up(vec![copy_of(&volume("a_data"))]).unwrap();
    assert_eq!(r.settled(&current(), at(200)), None);
    let r = r.deploy_ended(Err("web unhealthy".into())).unwrap();
    assert_eq!(r.settled(&current(), at(200)), None);
}

#[test]
fn a_deployed_release_becomes_the_stacks_files_and_is_audited() {
    let r = run(&[]).deploy_ended(Ok(())).unwrap();
    let s = r.settled(&current(), at(200)).unwrap();
    assert_eq!(
        s.stack,
        StackRecord {
            compose: "v2".into(),
            env: Some("V=v2".into()),
            updated_at: at(200),
            ..current()
        }
    );
    assert_eq!(
        s.release,
        ReleaseRecord {
            stack: "shop".into(),
            rev: 3,
            at: at(200),
            host: HostId::from("edge-1"),
            compose: "v2".into(),
            env: Some("V=v2".into()),
            images: BTreeMap::from([("web".to_owned(), "sha256:2".to_owned())]),
            outcome: ReleaseOutcome::Deployed,
            detail: None,
            from_rev: None,
            actor: "ops".into(),
        }
    );
    assert_eq!(s.deploy.action, "upgrade");
    assert_eq!((s.deploy.at, s.deploy.actor.as_str()), (at(200), "ops"));
    assert_eq!(s.audit.action, audit::STACK_DEPLOY);
    assert_eq!(s.audit.target, "shop");
    assert_eq!(s.audit.actor, "ops");
    assert_eq!(s.audit.at, at(200));
    let detail: BTreeMap<&str, &str> = s
        .audit
        .detail
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        detail,
        BTreeMap::from([
            ("action", "upgrade"),
            ("host", "edge-1"),
            ("rev", "3"),
            ("outcome", "deployed"),
        ])
    );
}

#[test]
fn a_release_put_back_leaves_the_stack_as_it_was() {
    let mut r = run(&[]);
    r.action = "rollback".into();
    r.from_rev = Some(1);
    let r = r
        .deploy_ended(Err("web unhealthy".into()))
        .unwrap()
        .put_back_ended(vec![], vec![])
        .unwrap();
    let s = r.settled(&current(), at(200)).unwrap();
    assert_eq!(s.stack, current());
    assert_eq!(s.release.outcome, ReleaseOutcome::RolledBack);
    assert_eq!(s.release.from_rev, Some(1));
    assert_eq!(
        s.release.compose, "v2",
        "the release records what was tried"
    );
    assert_eq!(
        s.release.detail.as_deref(),
        Some("web unhealthy; the previous release was put back and is healthy")
    );
    assert_eq!(s.deploy.action, "rollback-rolled-back");
    assert!(
        s.audit
            .detail
            .iter()
            .any(|(k, v)| k == "outcome" && v == "rolled back")
    );
}

#[test]
fn a_failed_put_back_names_every_problem() {
    let r = run(&["a_data"])
        .backed_up(vec![copy_of(&volume("a_data"))])
        .unwrap()
        .deploy_ended(Err("web unhealthy".into()))
        .unwrap()
        .put_back_ended(
            vec![],
            vec!["restore a_data: gone".into(), "deploy: no".into()],
        )
        .unwrap();
    let s = r.settled(&current(), at(200)).unwrap();
    assert_eq!(s.release.outcome, ReleaseOutcome::Failed);
    assert_eq!(
        s.release.detail.as_deref(),
        Some(
            "web unhealthy; putting the previous release back failed too: restore a_data: gone; deploy: no"
        )
    );
    assert_eq!(s.stack, current());
}

#[test]
fn stages_are_stored_under_their_names() {
    let r = run(&["a_data"]);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["stage"]["stage"], "started");
    let r = r.backed_up(vec![copy_of(&volume("a_data"))]).unwrap();
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["stage"]["stage"], "backed_up");
    assert_eq!(json["stage"]["backups"][0]["copy"], "a_data-backup-r3");
    for (stage, word) in [
        (UpgradeStage::Started, "started"),
        (UpgradeStage::BackedUp { backups: vec![] }, "backed_up"),
        (UpgradeStage::Deployed { backups: vec![] }, "deployed"),
        (
            UpgradeStage::Restoring {
                backups: vec![],
                why: "x".into(),
            },
            "restoring",
        ),
        (
            UpgradeStage::Restored {
                backups: vec![],
                why: "x".into(),
                restored: vec![],
                problems: vec![],
            },
            "restored",
        ),
    ] {
        assert_eq!(stage.word(), word);
        assert_eq!(serde_json::to_value(&stage).unwrap()["stage"], word);
    }
}

#[test]
fn a_refused_transition_names_the_stack_and_stage() {
    let e = run(&[]).backed_up(vec![]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "stack shop: cannot record a backup at stage started"
    );
}
