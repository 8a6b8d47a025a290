//! The web dashboard in a real browser: headless Chromium driven over WebDriver
//! (`chromedriver`, Debian's `chromium-driver`) against the real `dockmesh server` binary with
//! two real engines as hosts (`local` and `b`). Log in (a wrong token is refused), see both
//! hosts, deploy a stack from the page (a bad compose file is refused beside its field), move
//! it (pre-flight table, confirm, live progress, committed), roll it back, find the audit
//! entries and an intact chain, log out and find the pages refused.
//!
//! Screenshots of every page go to `target/dashboard-screenshots/`.
//!
//! Needs the two engines of `scripts/start-second-engine.sh` and `chromedriver` with
//! `chromium`; without them it skips, except under `DOCKMESH_REQUIRE_SERVICES=1`.

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::server::Server;
use support::*;

/// A `chromedriver` process, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `chromedriver` on a free port, or say why not (skip, or fail when services are
/// required).
fn chromedriver() -> Option<Driver> {
    let found = Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let why = "chromedriver is not installed (apt-get install chromium chromium-driver)";
        assert!(!required(), "{why}, and DOCKMESH_REQUIRE_SERVICES=1");
        eprintln!("skipping: {why}");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(driver)
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--window-size=1280,800",
                        "--disable-gpu", "--disable-dev-shm-usage"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with headless Chromium")
}

/// Where the screenshots go.
fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// The text of `css` on the page, waiting for it (a form's answer may still be loading).
async fn text(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} on the page: {e}"))
        .text()
        .await
        .unwrap()
}

async fn path(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

/// Wait until the browser is at `want` (after a click that submits a form), up to 30 s.
async fn at(c: &Client, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while path(c).await != want {
        assert!(
            Instant::now() < deadline,
            "the browser is at {}, not {want}",
            path(c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Click the element with this id.
async fn click(c: &Client, id: &str) {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id} on the page: {e}"))
        .click()
        .await
        .unwrap();
}

/// Wait until the element `css` shows `want` (the page updates itself), up to `limit`.
async fn wait_text(c: &Client, css: &str, want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && t.trim() == want
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {want:?}; page: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A service that serves HTTP, is healthy when it answers, and keeps data in a volume.
fn compose() -> String {
    format!(
        "services:\n  web:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; echo kept > /data/proof; mkdir -p /www; echo ok > /www/index.html; httpd -p 8080 -h /www; while true; do sleep 1; done\"]\n    volumes:\n      - db:/data\n    healthcheck:\n      test: [\"CMD-SHELL\", \"wget -q -O /dev/null http://127.0.0.1:8080/\"]\n      interval: 1s\n      timeout: 2s\n      retries: 5\nvolumes:\n  db:\n"
    )
}

fn running_on(host: &str, stack: &str) -> bool {
    let out = docker(
        host,
        &[
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={stack}"),
            "--format",
            "{{.State}}",
        ],
    )
    .unwrap();
    !out.trim().is_empty() && out.lines().all(|l| l.trim() == "running")
}

/// Put `value` into a form field the way a user does: clear it, type it.
async fn fill(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_deploys_moves_and_rolls_back_a_stack_in_a_browser() {
    let Some((a, b)) = engines() else { return };
    let Some(driver) = chromedriver() else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // A release key turns agent upgrades on (the policy panel's Run now needs it).
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let keygen = std::process::Command::new(support::server::bin())
        .args(["release", "keygen", "--private"])
        .arg(dir.path().join("release.key"))
        .arg("--public")
        .arg(data.join("release.pub"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let server = Server::start(&data, &b, &[]);
    let name = unique("dash");
    let _cleanup = Stack {
        name: name.clone(),
        a: a.clone(),
        b: b.clone(),
    };
    let c = browser(&driver).await;
    let url = &server.url;

    // Every page needs a session: the login page, then back.
    c.goto(&format!("{url}/hosts")).await.unwrap();
    at(&c, "/login").await;
    shot(&c, "01-login").await;

    // A wrong token is refused, with the reason.
    fill(&c, "token", "dmt_not-a-token").await;
    click(&c, "login").await;
    assert_eq!(path(&c).await, "/login");
    let err = text(&c, "#token-error").await;
    assert!(err.contains("not known"), "{err}");
    shot(&c, "02-login-refused").await;

    fill(&c, "token", &server.token).await;
    click(&c, "login").await;
    at(&c, "/hosts").await;

    // Both hosts, online, with their engines.
    for host in ["local", "b"] {
        let row = text(&c, &format!("tr[data-host=\"{host}\"]")).await;
        assert!(row.contains("online"), "{host}: {row}");
        assert!(row.contains("Docker"), "{host}: {row}");
        // Its use over time: sparklines, each an image labelled by its words.
        let row = c
            .find(Locator::Css(&format!("tr[data-host=\"{host}\"]")))
            .await
            .unwrap();
        let spark = row
            .find(Locator::Css("td.trends svg.spark.memory[role=\"img\"]"))
            .await
            .expect("the memory sparkline");
        let label = spark.attr("aria-label").await.unwrap().unwrap_or_default();
        assert!(label.starts_with("memory: "), "{host}: {label}");
        let words = row
            .find(Locator::Css("td.trends"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            words.contains(&label),
            "{host}: the words beside it: {words}"
        );
        assert!(words.contains("running containers: "), "{host}: {words}");
    }
    shot(&c, "03-hosts").await;

    // A compose file the engine cannot run is refused beside the field; nothing is kept.
    c.goto(&format!("{url}/stacks/new")).await.unwrap();
    fill(&c, "name", &name).await;
    c.find(Locator::Id("host"))
        .await
        .unwrap()
        .select_by_value("local")
        .await
        .unwrap();
    fill(
        &c,
        "compose",
        &format!("services:\n  web:\n    image: {IMAGE}\n    no_such_key: 1\n"),
    )
    .await;
    click(&c, "deploy").await;
    let err = text(&c, "#compose-error").await;
    assert!(
        err.contains("no_such_key"),
        "the error names the key: {err}"
    );
    shot(&c, "04-deploy-error").await;
    let (status, _) = server.api("GET", &format!("/api/v1/stacks/{name}"), None);
    assert_eq!(status, 404, "a refused deploy registers nothing");

    // Deploy through the page, the compose file loaded from disk into the form.
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, compose()).unwrap();
    c.find(Locator::Id("compose-file"))
        .await
        .unwrap()
        .send_keys(&file.to_string_lossy())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = c
            .find(Locator::Id("compose"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default();
        if value == compose() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the file never reached the form: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    click(&c, "deploy").await;
    at(&c, &format!("/stacks/{name}")).await;
    assert_eq!(text(&c, "#stack-host").await, "local");
    assert!(running_on(&a, &name), "the stack runs on local");
    shot(&c, "05-stack").await;
    c.goto(&format!("{url}/stacks")).await.unwrap();
    let row = text(&c, &format!("tr[data-stack=\"{name}\"]")).await;
    assert!(row.contains("running"), "{row}");
    shot(&c, "06-stacks").await;

    // Enough data in the volume for the transfer to take a moment, so that its progress shows.
    docker(
        &a,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{name}_db:/v"),
            IMAGE,
            "dd",
            "if=/dev/urandom",
            "of=/v/blob",
            "bs=1M",
            "count=200",
        ],
    )
    .expect("seed the volume");

    // Migrate: the target, the pre-flight table, confirm, live progress, committed.
    c.goto(&format!("{url}/stacks/{name}")).await.unwrap();
    click(&c, "migrate").await;
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("target"))
        .await
        .unwrap()
        .select_by_value("b")
        .await
        .unwrap();
    shot(&c, "07-migrate-target").await;
    click(&c, "run-preflight").await;
    let table = text(&c, "#preflight").await;
    for check in ["target_online", "target_capacity", "images", "bind_mounts"] {
        assert!(table.contains(check), "{check} in {table}");
    }
    assert!(table.contains("pass"), "{table}");
    let fails = c
        .find_all(Locator::Css("#preflight tr.check-fail"))
        .await
        .unwrap();
    assert!(fails.is_empty(), "no check fails: {table}");
    shot(&c, "08-preflight").await;
    click(&c, "confirm-migrate").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path(&c).await.starts_with("/migrations/") {
        assert!(
            Instant::now() < deadline,
            "no migration page after confirming"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let migration_path = path(&c).await;
    assert!(
        migration_path.starts_with("/migrations/"),
        "{migration_path}"
    );
    // The page follows the migration by itself (server-sent events): its progress changes
    // without a reload while the live view is open; once committed the page reloads with the
    // outcome and the rollback button.
    let progress_text = || async {
        let e = c.find(Locator::Css("#progress")).await.ok()?;
        e.attr("data-live").await.ok()??;
        e.text().await.ok()
    };
    let first = progress_text()
        .await
        .expect("a live view of a migration in progress");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut updated = false;
    while Instant::now() < deadline {
        match progress_text().await {
            Some(now) if now != first => {
                updated = true;
                if now.contains("MiB of") {
                    shot(&c, "09-migration-progress").await;
                    break;
                }
            }
            Some(_) => {}
            None if updated => break,
            None => {
                if c.find(Locator::Id("rollback")).await.is_ok() {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        updated,
        "the live view never changed before the page reloaded: {first}"
    );
    c.wait()
        .at_most(Duration::from_secs(180))
        .for_element(Locator::Id("rollback"))
        .await
        .expect("the page shows the rollback button once committed");
    assert_eq!(text(&c, "#migration-state").await, "committed");
    let volumes = text(&c, "#volumes").await;
    assert!(volumes.contains(&format!("{name}_db")), "{volumes}");
    assert!(volumes.contains("verified"), "{volumes}");
    assert!(text(&c, "#retain-until").await.contains("until"));
    let audit = text(&c, "#migration-audit").await;
    assert!(
        audit.contains("migration.start") && audit.contains("migration.complete"),
        "{audit}"
    );
    // Its timeline: an inline SVG image labelled by the same facts in words, the downtime
    // window written on the picture.
    let words = text(&c, "#timeline-words").await;
    assert!(words.starts_with("Down for "), "{words}");
    c.find(Locator::Css(
        "#timeline svg[role=\"img\"][aria-labelledby=\"timeline-words\"]",
    ))
    .await
    .expect("the timeline's picture");
    let down = text(&c, "#timeline .tl-down-label").await;
    assert!(down.starts_with("down "), "{down}");
    c.find(Locator::Css("#timeline rect.tl-bar.step-transfer"))
        .await
        .expect("a bar for the volume's transfer");
    c.find(Locator::Css("#timeline"))
        .await
        .unwrap()
        .find(Locator::Css("rect.tl-down"))
        .await
        .expect("the downtime window");
    shot(&c, "10-migration-committed").await;
    assert!(running_on(&b, &name), "the stack runs on b");
    assert!(!running_on(&a, &name), "and no longer on local");

    // The stack's page says where it runs now and until when it can go back.
    c.goto(&format!("{url}/stacks/{name}")).await.unwrap();
    assert_eq!(text(&c, "#stack-host").await, "b");
    assert!(
        text(&c, "#rollback-window")
            .await
            .contains("rolled back until")
    );
    shot(&c, "10b-stack-moved").await;
    c.goto(&format!("{url}/hosts")).await.unwrap();
    let local = text(&c, "tr[data-host=\"local\"]").await;
    assert!(
        local.contains(&format!("{name} stopped copy; runs on b")),
        "{local}"
    );
    shot(&c, "10c-hosts-after-move").await;

    // Purge names what it deletes (not confirmed here: the rollback needs the source).
    c.goto(&format!("{url}{migration_path}/purge-source"))
        .await
        .unwrap();
    let deleted = text(&c, "#deleted").await;
    assert!(
        deleted.contains(&format!("volume {name}_db on host local")),
        "{deleted}"
    );
    shot(&c, "11-purge-confirm").await;

    // Roll back while the window is open.
    c.goto(&format!("{url}{migration_path}")).await.unwrap();
    click(&c, "rollback").await;
    shot(&c, "12-rollback-confirm").await;
    click(&c, "confirm").await;
    at(&c, &migration_path).await;
    wait_text(
        &c,
        "#migration-state",
        "rolled_back",
        Duration::from_secs(180),
    )
    .await;
    assert!(running_on(&a, &name), "the stack runs on local again");
    shot(&c, "13-rolled-back").await;

    // The stopped copy the rollback left on b is deleted behind a confirmation naming it.
    click(&c, "purge-target").await;
    let deleted = text(&c, "#deleted").await;
    assert!(
        deleted.contains(&format!("volume {name}_db on host b")),
        "{deleted}"
    );
    click(&c, "confirm").await;
    at(&c, &migration_path).await;
    let left = docker(
        &b,
        &["volume", "ls", "-q", "--filter", &format!("name={name}_")],
    )
    .unwrap();
    assert!(left.trim().is_empty(), "volumes left on b: {left}");
    assert!(
        c.find(Locator::Id("purge-target")).await.is_err(),
        "nothing more to delete"
    );

    // Drain local: the plan first, then the drain with its progress.
    c.goto(&format!("{url}/hosts")).await.unwrap();
    click(&c, "drain-local").await;
    let plan = text(&c, "#drain-plan").await;
    assert!(plan.contains(&name) && plan.contains('b'), "{plan}");
    shot(&c, "17-drain-plan").await;
    click(&c, "start-drain").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path(&c).await.starts_with("/drains/") {
        assert!(Instant::now() < deadline, "no drain page after starting it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_text(&c, "#drain-state", "completed", Duration::from_secs(240)).await;
    assert!(running_on(&b, &name), "the drain moved the stack to b");
    shot(&c, "18-drain-completed").await;
    let moved = c
        .find(Locator::Css("#drain-progress a[href^=\"/migrations/\"]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();

    // Delete the source the drain's migration kept on local.
    c.goto(&format!("{url}{moved}/purge-source")).await.unwrap();
    let deleted = text(&c, "#deleted").await;
    assert!(
        deleted.contains(&format!("volume {name}_db on host local")),
        "{deleted}"
    );
    click(&c, "confirm").await;
    at(&c, &moved).await;
    wait_text(&c, "#migration-state", "purged", Duration::from_secs(120)).await;
    let left = docker(
        &a,
        &["volume", "ls", "-q", "--filter", &format!("name={name}_")],
    )
    .unwrap();
    assert!(left.trim().is_empty(), "volumes left on local: {left}");

    // local is cordoned by the drain: uncordon it from the hosts page.
    c.goto(&format!("{url}/hosts")).await.unwrap();
    assert!(
        text(&c, "tr[data-host=\"local\"]")
            .await
            .contains("cordoned")
    );
    click(&c, "toggle-cordon-local").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, hosts) = server.api("GET", "/api/v1/hosts", None);
        if hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["cordoned"] == Value::Bool(false))
        {
            break;
        }
        assert!(Instant::now() < deadline, "local stayed cordoned: {hosts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The migrations list.
    c.goto(&format!("{url}/migrations")).await.unwrap();
    assert!(text(&c, "#migrations").await.contains(&name));
    let bar = c
        .find(Locator::Css("#migrations svg.downbar[role=\"img\"]"))
        .await
        .expect("each committed migration's downtime as a bar");
    let label = bar.attr("aria-label").await.unwrap().unwrap_or_default();
    assert!(label.starts_with("down for "), "{label}");
    shot(&c, "14-migrations").await;

    // The audit log has the entries, and the chain holds.
    c.goto(&format!("{url}/audit")).await.unwrap();
    let log = text(&c, "#audit").await;
    for action in [
        "stack.deploy",
        "migration.start",
        "migration.complete",
        "migration.rollback",
        "migration.purge_target",
        "host.drain",
        "migration.purge_source",
    ] {
        assert!(log.contains(action), "{action} in {log}");
    }
    click(&c, "verify").await;
    let v = text(&c, "#verification").await;
    assert!(v.contains("Chain intact"), "{v}");
    shot(&c, "15-audit-verified").await;
    fill(&c, "action", "migration.rollback").await;
    c.find(Locator::Css("#audit-filter button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .current_url()
        .await
        .unwrap()
        .query()
        .unwrap_or("")
        .contains("action=migration.rollback")
    {
        assert!(Instant::now() < deadline, "the filter was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = text(&c, "#audit").await;
    assert!(
        log.contains("migration.rollback") && !log.contains("stack.deploy"),
        "{log}"
    );

    // The server page.
    c.goto(&format!("{url}/server")).await.unwrap();
    let facts = text(&c, "#server-facts").await;
    assert!(facts.contains("dockmesh"), "{facts}");
    let schema = text(&c, "#schema-version").await;
    assert!(
        schema.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "the schema version from the audit log: {schema}"
    );
    shot(&c, "16-server").await;

    // The agents page: no agent yet, and how to enroll one.
    c.goto(&format!("{url}/agents")).await.unwrap();
    let help = text(&c, "#enroll-help").await;
    assert!(help.contains("dockmesh agent token create"), "{help}");
    shot(&c, "17-agents").await;

    // The agent upgrade policy: a bad percent is named beside its field and nothing is kept;
    // a good policy is kept; Run now is evaluated and audited as the logged-in token.
    c.find(Locator::Css("#mode option[value=staged]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(&c, "percent", "0").await;
    click(&c, "save-policy").await;
    let err = text(&c, "#percent-error").await;
    assert!(err.contains("between 1 and 100"), "{err}");
    shot(&c, "18-agents-policy-refused").await;
    let (_, policy) = server.api("GET", "/api/v1/agents/upgrade-policy", None);
    assert_eq!(policy["policy"]["mode"], "manual", "nothing kept: {policy}");
    c.find(Locator::Css("#mode option[value=staged]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(&c, "percent", "20").await;
    fill(&c, "min_gap", "1m").await;
    click(&c, "save-policy").await;
    at(&c, "/agents").await;
    let (_, policy) = server.api("GET", "/api/v1/agents/upgrade-policy", None);
    assert_eq!(policy["policy"]["mode"], "staged", "{policy}");
    assert_eq!(policy["policy"]["staged"]["percent"], 20, "{policy}");
    click(&c, "run-now").await;
    let outcome = text(&c, "#run-outcome").await;
    assert!(!outcome.is_empty());
    shot(&c, "19-agents-run-now").await;
    c.goto(&format!("{url}/audit")).await.unwrap();
    let log = text(&c, "#audit").await;
    for action in ["agent.upgrade_policy", "agent.upgrade_run"] {
        assert!(log.contains(action), "{action} in {log}");
    }

    // Log out: the pages are refused again.
    click(&c, "logout").await;
    at(&c, "/login").await;
    for page in ["/hosts", "/stacks", "/audit", "/agents", &migration_path] {
        c.goto(&format!("{url}{page}")).await.unwrap();
        assert_eq!(path(&c).await, "/login", "{page} after logout");
    }
    c.close().await.unwrap();
    eprintln!("browser test took {:?}", started.elapsed());
}
