//! Adopting a project started by `docker-compose`: found by its labels, its files read from
//! where the labels say, checked against what runs, and no container touched.

mod support_compose;

use dockmesh_docker::adopt::{self, AdoptError};
use dockmesh_docker::testsupport;
use std::process::Command;
use support_compose::{Cleanup, run};

const FILE: &str = r#"services:
  web:
    image: "dockmesh-test/busybox:${TAG}"
    command: ["sleep", "300"]
    depends_on: [db]
  db:
    image: dockmesh-test/busybox:1
    command: ["sleep", "300"]
    environment:
      ROLE: db
"#;

/// The id and start time of each container of `project`.
fn containers(project: &str) -> Vec<String> {
    let ids = run(Command::new("docker").args([
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]));
    let mut out: Vec<String> = ids
        .split_whitespace()
        .map(|id| {
            run(Command::new("docker").args(["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", id]))
                .trim()
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_started_by_docker_compose_is_adopted_untouched() {
    let test = "a_project_started_by_docker_compose_is_adopted_untouched";
    let stacks = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test(test, stacks.path()).await else {
        return;
    };
    let Some(compose_bin) = support_compose::oracle_for_test(test) else {
        return;
    };
    let project = testsupport::unique_name("dmadopt");
    let _cleanup = Cleanup(vec![project.clone()]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("docker-compose.yml"), FILE).unwrap();
    std::fs::write(dir.path().join(".env"), "TAG=1\n").unwrap();
    run(Command::new(compose_bin)
        .current_dir(dir.path())
        .args(["-p", &project, "up", "-d"]));
    let before = containers(&project);
    assert_eq!(before.len(), 2);

    let found = adopt::find_projects(rt.docker()).await.unwrap();
    let p = found.iter().find(|p| p.name == project).expect("listed");
    assert_eq!(p.config_files, [dir.path().join("docker-compose.yml")]);
    assert_eq!(p.working_dir.as_deref(), Some(dir.path()));
    assert!(p.running);
    assert_eq!(
        p.containers.keys().collect::<Vec<_>>(),
        ["db", "web"],
        "{p:?}"
    );

    let adopted = adopt::adopt(rt.docker(), &project, None).await.unwrap();
    assert_eq!(adopted.files.env.as_deref(), Some("TAG=1\n"));
    assert_eq!(
        adopted.spec.service("web").unwrap().image,
        "dockmesh-test/busybox:1"
    );
    let ids: Vec<&String> = adopted.containers.values().collect();
    assert!(
        ids.iter()
            .all(|id| before.iter().any(|b| b.starts_with(id.as_str()))),
        "{ids:?} {before:?}"
    );
    assert_eq!(
        adopted.renamed_on_next_deploy,
        ["db", "web"],
        "docker-compose 1 names containers <project>_<service>_1"
    );
    assert_eq!(containers(&project), before, "no container was touched");

    // A file that no longer describes what runs is refused, naming the difference.
    std::fs::write(dir.path().join(".env"), "TAG=2\n").unwrap();
    let err = adopt::adopt(rt.docker(), &project, None).await.unwrap_err();
    assert!(
        matches!(&err, AdoptError::Differs { differences, .. }
            if differences.len() == 1 && differences[0].contains("service `web` runs image dockmesh-test/busybox:1, the file says dockmesh-test/busybox:2")),
        "{err}"
    );
    assert!(err.hint().is_some());
    std::fs::write(dir.path().join(".env"), "TAG=1\n").unwrap();
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        FILE.replace("  db:\n", "  db:\n    ipc: host\n"),
    )
    .unwrap();
    let err = adopt::adopt(rt.docker(), &project, None).await.unwrap_err();
    assert!(matches!(err, AdoptError::Invalid { .. }), "{err}");

    let err = adopt::adopt(rt.docker(), "dmadopt-no-such-project", None)
        .await
        .unwrap_err();
    assert!(matches!(err, AdoptError::NotFound { .. }), "{err}");
    assert_eq!(containers(&project), before, "still untouched");
}
