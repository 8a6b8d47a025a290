//! End to end with agents: the real `dockmesh` binary as a server with no host of its own and
//! as two agent processes, one on the main engine and one on the second engine, each dialing
//! the server's agent listener. Stacks move between the agents' hosts with their data, checked
//! by the engines' own tools; enrollment and revocation are refused with a clear reason and
//! leave nothing behind.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::agent::*;
use support::server::{Server, api_call, bin};
use support::stack::*;
use support::*;

/// Deploy a new stack (serving HTTP, two volumes) on `host`; its leftovers on the engines `a`
/// and `b` go when it is dropped.
fn deploy(server: &Server, dir: &Path, prefix: &str, host: &str, a: &str, b: &str) -> Stack {
    let stack = Stack {
        name: unique(prefix),
        a: a.to_owned(),
        b: b.to_owned(),
    };
    let file = write_compose(dir, &compose(IMAGE, HEALTHY, ""));
    server.cli_ok(&[
        "stack",
        "deploy",
        &stack.name,
        "--file",
        &file,
        "--host",
        host,
    ]);
    stack
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn two_agents_enroll_and_a_stack_moves_between_their_hosts_with_its_data() {
    let Some((a, b)) = engines() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::launch(&dir.path().join("data"), &["--no-local-host"]);
    let ta = agent_token(&server, &[]);
    let tb = agent_token(&server, &["--ttl", "10m"]);

    let _agent_a = Agent::start(
        "a",
        &dir.path().join("agent-a"),
        &["--server", &server.url, "--token", &ta, "--name", "edge-a"],
    );
    let _agent_b = Agent::start(
        "b",
        &dir.path().join("agent-b"),
        &[
            "--server",
            &server.url,
            "--token",
            &tb,
            "--name",
            "edge-b",
            "--docker-host",
            &b,
        ],
    );
    wait_connected(&server, &["edge-a", "edge-b"]);

    // The agents keep their key and certificates private.
    for d in ["agent-a", "agent-b"] {
        let state = dir.path().join(d);
        assert_eq!(mode(&state), 0o700, "{d}");
        for f in ["agent.key", "agent.crt", "ca.crt", "agent.json"] {
            assert_eq!(mode(&state.join(f)), 0o600, "{d}/{f}");
        }
    }
    // What the agents said about themselves is recorded.
    let list = agents(&server);
    let ea = agent_on(&list, "edge-a").unwrap();
    assert_eq!(ea["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(ea["drift"], false);
    assert_eq!(ea["protocol_version"], 1);
    assert_eq!(ea["upgrade"]["state"], "idle");
    // Both are hosts of the server, online, next to nothing else.
    let hosts = server.cli_ok(&["host", "ls"]);
    assert!(
        hosts.contains("edge-a") && hosts.contains("edge-b"),
        "{hosts}"
    );
    assert_eq!(hosts.matches("online").count(), 2, "{hosts}");

    // A stack with a varied tree moves from one agent's host to the other's.
    let stack = deploy(&server, dir.path(), "ag", "edge-a", &a, &b);
    server.cli_ok(&["stack", "status", &stack.name]);
    seed(&a, &stack.name, 2048);
    let before = describe(&a, &stack.name);
    let out = server.cli_ok(&["stack", "migrate", &stack.name, "--to", "edge-b", "--yes"]);
    assert!(out.contains("committed"), "{out}");
    assert_eq!(
        describe(&b, &stack.name),
        before,
        "the target's volumes hold what the source's held"
    );
    let (status, st) = server.api("GET", &format!("/api/v1/stacks/{}", stack.name), None);
    assert_eq!(status, 200, "{st}");
    assert_eq!(st["host"], "edge-b", "{st}");
    // The source's host keeps the stack for a rollback: its agent cannot be removed.
    let refused = server.cli(&["agent", "rm", "edge-a"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("still needed by migration"), "{err}");
    assert_eq!(agents(&server).len(), 2, "nothing removed");

    // Rolled back through the agents: the source runs again with its data.
    let (_, list) = server.api(
        "GET",
        &format!("/api/v1/migrations?stack={}", stack.name),
        None,
    );
    let id = list[0]["id"].as_str().unwrap().to_owned();
    server.cli_ok(&["migration", "rollback", &id]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, m) = server.api("GET", &format!("/api/v1/migrations/{id}"), None);
        if m["state"] == "rolled_back" {
            break;
        }
        assert!(Instant::now() < deadline, "no rollback: {m}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(describe(&a, &stack.name), before);
    server.cli_ok(&["stack", "rm", &stack.name, "--volumes"]);

    // Decommission: edge-a's host is removed with its agent; a host that is not there is named.
    let out = server.cli_ok(&["host", "rm", "edge-a"]);
    assert!(out.contains("removed host edge-a"), "{out}");
    let left: Vec<String> = agents(&server)
        .iter()
        .map(|a| a["host"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, vec!["edge-b".to_owned()]);
    let missing = server.cli(&["host", "rm", "edge-a"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("no host edge-a"), "{err}");
}

/// Wait until host `host`'s events, as the API lists them, hold one that `pred` accepts.
fn wait_event(
    server: &Server,
    host: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = server.api("GET", &format!("/api/v1/hosts/{host}/events"), None);
        assert_eq!(status, 200, "{v}");
        if let Some(e) = v["events"].as_array().unwrap().iter().find(|e| pred(e)) {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "{what} never reported: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hosts_report_what_happens_to_their_stacks_containers_through_agents_and_sockets() {
    let Some((a, b)) = engines() else { return };
    let dir = tempfile::tempdir().unwrap();
    // `local` is the main engine reached by socket; `edge-b` the second engine behind an agent.
    let server = Server::launch(&dir.path().join("data"), &[]);
    let token = agent_token(&server, &[]);
    let _agent = Agent::start(
        "b",
        &dir.path().join("agent-b"),
        &[
            "--server",
            &server.url,
            "--token",
            &token,
            "--name",
            "edge-b",
            "--docker-host",
            &b,
        ],
    );
    wait_connected(&server, &["edge-b"]);
    let following = |host: &str| {
        let (_, v) = server.api("GET", &format!("/api/v1/hosts/{host}/events"), None);
        v["following"] == true
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(following("edge-b") && following("local")) {
        assert!(
            Instant::now() < deadline,
            "the hosts' events are not followed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    for (host, engine, prefix) in [("edge-b", &b, "evb"), ("local", &a, "evl")] {
        let stack = deploy(&server, dir.path(), prefix, host, &a, &b);
        let container = format!("{}-web-1", stack.name);
        let of_stack = |e: &serde_json::Value, action: &str| {
            e["stack"] == stack.name.as_str()
                && e["container"] == container.as_str()
                && e["action"] == action
        };
        let started = wait_event(&server, host, "the start", |e| of_stack(e, "start"));
        assert_eq!(started["service"], "web", "{started}");
        // Killed behind the server's back, on the engine itself.
        docker(engine, &["kill", &container]).unwrap();
        let died = wait_event(&server, host, "the death", |e| of_stack(e, "die"));
        assert_eq!(died["exit_code"], 137, "{died}");
        wait_event(&server, host, "the kill", |e| of_stack(e, "kill"));
        let out = server.cli_ok(&["host", "events", host]);
        assert!(
            out.lines()
                .any(|l| l.contains(&container) && l.contains("die (exit 137)")),
            "{out}"
        );
        // Only what changes a container's life is reported: an exec is not.
        let (_, v) = server.api(
            "GET",
            &format!("/api/v1/hosts/{host}/events?limit=200"),
            None,
        );
        assert!(
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| !e["action"].as_str().unwrap().starts_with("exec")),
            "{v:#}"
        );
        server.cli_ok(&["stack", "rm", &stack.name, "--volumes"]);
    }
    let (status, v) = server.api("GET", "/api/v1/hosts/nowhere/events", None);
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("nowhere"), "{v}");
}

#[test]
fn a_removed_agent_is_refused_at_the_handshake_and_told_why() {
    let Some((_a, b)) = engines() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::launch(&dir.path().join("data"), &["--no-local-host"]);
    let token = agent_token(&server, &[]);
    let state = dir.path().join("agent");
    let args = [
        "--server",
        server.url.as_str(),
        "--token",
        token.as_str(),
        "--name",
        "gone",
        "--docker-host",
        b.as_str(),
    ];
    let mut agent = Agent::start("gone", &state, &args);
    wait_connected(&server, &["gone"]);

    let out = server.cli_ok(&["agent", "rm", "gone"]);
    assert!(out.contains("removed agent"), "{out}");
    // The agent's connection is closed; it dials again and is refused with the reason.
    let status = agent.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains("the server refused this agent") && log.contains("not enrolled"),
        "{log}"
    );
    assert!(agents(&server).is_empty());
    assert!(!server.cli_ok(&["host", "ls"]).contains("gone"));

    // Started again with its kept certificate: refused again, at once.
    let mut again = Agent::start("gone-again", &state, &["--docker-host", &b]);
    assert_eq!(again.wait_exit(Duration::from_secs(30)).code(), Some(1));
    assert!(again.log().contains("not enrolled"), "{}", again.log());
    drop(agent);

    // The audit keeps the enrollment and the removal.
    let (_, audit) = server.api("GET", "/api/v1/audit?action=agent.remove", None);
    let entries = audit["entries"].as_array().or(audit.as_array()).unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
}

#[test]
fn refused_enrollments_say_why_and_keep_nothing() {
    // No engine is touched: an agent enrolls before it talks to its engine.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::launch(&dir.path().join("data"), &["--no-local-host"]);
    let other = Server::launch(&dir.path().join("other"), &["--no-local-host"]);
    let enroll = |name: &str, token: &str, url: &str| {
        let state = dir.path().join(format!("refused-{name}"));
        let mut agent = Agent::start(
            name,
            &state,
            &["--server", url, "--token", token, "--name", name],
        );
        let status = agent.wait_exit(Duration::from_secs(30));
        (status, agent.log(), state)
    };

    // A good enrollment spends the token; the agent then keeps running.
    let token = agent_token(&server, &[]);
    let mut first = Agent::start(
        "first",
        &dir.path().join("state-first"),
        &[
            "--server",
            &server.url,
            "--token",
            &token,
            "--name",
            "first",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while agents(&server).is_empty() {
        assert!(Instant::now() < deadline, "{}", first.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = first.child.kill();

    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("reused", token.clone(), server.url.as_str(), "already used"),
        (
            "malformed",
            "dme_not-a-token".into(),
            server.url.as_str(),
            "malformed",
        ),
        (
            "wrong-server",
            agent_token(&other, &[]),
            server.url.as_str(),
            "another server",
        ),
        (
            "first",
            agent_token(&server, &[]),
            server.url.as_str(),
            "already exists",
        ),
        (
            "bad_NAME",
            agent_token(&server, &[]),
            server.url.as_str(),
            "invalid",
        ),
    ];
    for (name, token, url, why) in cases {
        let (status, log, state) = enroll(name, &token, url);
        assert_eq!(status.code(), Some(1), "{name}: {log}");
        assert!(log.contains(why), "{name}: expected {why:?} in\n{log}");
        assert!(!state.join("agent.json").exists(), "{name}: nothing kept");
        assert!(!state.join("agent.key").exists(), "{name}: nothing kept");
    }
    // An expired token.
    let short = agent_token(&server, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, log, _) = enroll("late", &short, &server.url);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("expired"), "{log}");

    // A request body over the limit is refused before it is read whole, and spends nothing.
    let spare = agent_token(&server, &[]);
    let huge = format!(
        r#"{{"token":"{spare}","name":"huge","csr_pem":"{}"}}"#,
        "A".repeat(5 << 20)
    );
    let (status, body) = api_call(
        &server.url,
        None,
        "POST",
        "/api/v1/agents/enroll",
        Some(&huge),
        &[],
    );
    assert_eq!(status, 413, "{body}");
    let (status, body) = api_call(
        &server.url,
        None,
        "POST",
        "/api/v1/agents/enroll",
        Some(r#"{"token": "#),
        &[],
    );
    assert_eq!(status, 400, "a truncated request is named: {body}");
    // Only the first agent was recorded.
    let list = agents(&server);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["host"], "first");

    // The token of the request over the limit was not spent: it still enrolls an agent.
    let mut spare_agent = Agent::start(
        "spare",
        &dir.path().join("state-spare"),
        &[
            "--server",
            &server.url,
            "--token",
            &spare,
            "--name",
            "spare",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while agents(&server).len() < 2 {
        assert!(Instant::now() < deadline, "{}", spare_agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = spare_agent.child.kill();

    // A bad --ttl is refused by name.
    let out = Command::new(bin())
        .args(["agent", "token", "create", "--ttl", "soon", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl"));
}

/// A TCP relay between an agent and the server's agent listener whose connections the test
/// can cut (both directions shut down, as a network drop or a restarted middlebox would).
struct Relay {
    addr: String,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(upstream: String) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let kept = conns.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut l = kept.lock().unwrap();
                l.push(client.try_clone().unwrap());
                l.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, conns }
    }

    /// Drop every connection through the relay.
    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Poll migration `id` until the bytes its volume `volume` has received in the current
/// transfer satisfy `until`; the bytes it had.
/// Wait until the migration's view of `volume` satisfies `until`; that view.
fn wait_volume(
    server: &Server,
    id: &str,
    volume: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, m) = server.api("GET", &format!("/api/v1/migrations/{id}"), None);
        if let Some(v) = m["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == volume && until(v))
        {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "no such progress: {m}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_bytes(server: &Server, id: &str, volume: &str, until: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, m) = server.api("GET", &format!("/api/v1/migrations/{id}"), None);
        let done = m["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == volume)
            .and_then(|v| v["bytes_done"].as_u64())
            .unwrap_or(0);
        if until(done) {
            return done;
        }
        assert!(
            m["state"] != "committed" && m["state"] != "failed",
            "the migration settled before the cut: {m}"
        );
        assert!(Instant::now() < deadline, "no such progress: {m}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_transfer_between_agents_survives_a_dropped_connection_and_an_agent_restart() {
    let Some((a, b)) = engines() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::launch(&dir.path().join("data"), &["--no-local-host"]);
    let ta = agent_token(&server, &[]);
    let tb = agent_token(&server, &[]);
    let _agent_a = Agent::start(
        "a",
        &dir.path().join("agent-a"),
        &["--server", &server.url, "--token", &ta, "--name", "src"],
    );
    // The target's agent reaches the server through a relay the test can cut.
    let relay = Relay::start(server.agent_addr.clone());
    let b_args = [
        "--server",
        server.url.as_str(),
        "--docker-host",
        b.as_str(),
        "--endpoint",
        relay.addr.as_str(),
    ];
    let state_b = dir.path().join("agent-b");
    let mut args = b_args.to_vec();
    args.extend_from_slice(&["--token", &tb, "--name", "dst"]);
    let mut agent_b = Agent::start("b", &state_b, &args);
    wait_connected(&server, &["src", "dst"]);

    let stack = deploy(&server, dir.path(), "cut", "src", &a, &b);
    // 512 MiB of random data in the first volume: long enough to cut in the middle.
    seed(&a, &stack.name, 512 * 1024);
    let before = describe(&a, &stack.name);
    let (status, m) = server.api(
        "POST",
        &format!("/api/v1/stacks/{}/migrate", stack.name),
        Some(r#"{"target_host_id":"dst"}"#),
    );
    assert_eq!(status, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    let volume = format!("{}_db", stack.name);

    // Cut the connection in the middle of the volume; the agent dials again by itself, and the
    // transfer goes on from the byte the target's import took in.
    let sent_before_cut = wait_bytes(&server, &id, &volume, |b| b > 64 << 20);
    relay.cut();
    let resumed = wait_volume(&server, &id, &volume, |v| v["resumed_from"].is_u64());
    let resumed_from = resumed["resumed_from"].as_u64().unwrap();
    let resent_after_cut = resumed["bytes_resent"].as_u64().unwrap();
    assert!(
        resumed_from >= 32 << 20 && resumed_from <= sent_before_cut + (64 << 20),
        "resumed from byte {resumed_from}, {sent_before_cut} bytes were sent before the cut"
    );
    // What was in flight when the connection went (HTTP/2 windows, the coder's buffers) is all
    // that is sent again.
    assert!(
        resent_after_cut < 32 << 20,
        "{resent_after_cut} bytes sent again after the cut"
    );
    // Then kill the target's agent in the middle of the resumed transfer and start it again:
    // the import's stream was kept on its disk, so the restarted agent reads it back and the
    // transfer goes on from the last byte kept.
    let sent_before_kill = wait_bytes(&server, &id, &volume, |b| b > resumed_from + (64 << 20));
    let _ = agent_b.child.kill();
    let _ = agent_b.child.wait();
    drop(agent_b);
    std::thread::sleep(Duration::from_secs(2));
    let _agent_b = Agent::start("b-again", &state_b, &b_args);
    let again = wait_volume(&server, &id, &volume, |v| {
        v["resumed_from"]
            .as_u64()
            .is_some_and(|at| at > resumed_from)
    });
    let resumed_after_kill = again["resumed_from"].as_u64().unwrap();
    let resent_after_kill = again["bytes_resent"].as_u64().unwrap() - resent_after_cut;
    // Kept on disk: all but the last 8 MiB synced (of random data: it does not compress) and
    // the chunks queued for the disk.
    assert!(
        resumed_after_kill + (24 << 20) >= sent_before_kill,
        "resumed from byte {resumed_after_kill} after a restart at byte {sent_before_kill}"
    );
    assert!(
        resent_after_kill < 24 << 20,
        "{resent_after_kill} bytes sent again after the restart"
    );

    let m = server.wait_settled(&id, Duration::from_secs(300));
    assert_eq!(m["state"], "committed", "{m}");
    let kinds: Vec<&str> = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"volume_transfer_interrupted"),
        "the interruption is recorded: {kinds:?}"
    );
    assert!(!kinds.contains(&"step_failed"), "{kinds:?}");
    assert_eq!(
        describe(&b, &stack.name),
        before,
        "the target holds exactly what the source held"
    );
    let verified: u64 = m["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["bytes_done"].as_u64().unwrap())
        .sum();
    let resent_in_all = m["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume.as_str())
        .unwrap()["bytes_resent"]
        .as_u64()
        .unwrap();
    assert_eq!(
        resent_in_all,
        resent_after_cut + resent_after_kill,
        "nothing else was sent again"
    );
    eprintln!(
        "after the cut at {sent_before_cut} bytes: resumed from byte {resumed_from}, \
         {resent_after_cut} bytes sent again; after the agent restart at {sent_before_kill} \
         bytes: resumed from byte {resumed_after_kill} (kept on its disk), {resent_after_kill} \
         bytes sent again; {resent_in_all} bytes sent again in all; \
        {verified} bytes verified in all"
    );
}
