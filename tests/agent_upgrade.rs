//! Agent upgrades end to end: two builds of the real binary (this one, and the same code with
//! another version baked in through `DOCKMESH_BUILD_VERSION`), a server running the new one
//! and serving it signed, and real agent processes running the old one from their own copy.
//! Staged waves, auto and manual modes, binaries refused on the way (checksum, signature,
//! truncated download) and a new binary that exits at once, which the agent reverts by itself.
//! Containers on the host keep running throughout.

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::agent::*;
use support::build::{NEW, new_build, version_of};
use support::server::{Server, bin};
use support::*;

fn old_version() -> String {
    version_of(Path::new(bin()))
}

/// A server on the new build with a release key, its binaries directory, and agents.
struct Fleet {
    dir: tempfile::TempDir,
    server: Server,
    key: PathBuf,
    binaries: PathBuf,
    engine: String,
    agents: Vec<(String, PathBuf, Agent)>,
}

impl Fleet {
    fn start() -> Option<Fleet> {
        let (engine, _) = engines()?;
        let new = new_build();
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let data = dir.path().join("server");
        std::fs::create_dir_all(&data).unwrap();
        let key = dir.path().join("release.key");
        let out = Command::new(bin())
            .args(["release", "keygen", "--private"])
            .arg(&key)
            .arg("--public")
            .arg(data.join("release.pub"))
            .output()
            .unwrap();
        assert!(out.status.success(), "keygen: {out:?}");
        let binaries = data.join("agent-binaries");
        std::fs::create_dir_all(&binaries).unwrap();
        let fleet_bin = binaries.join(format!("dockmesh-linux-{}", std::env::consts::ARCH));
        std::fs::copy(new, &fleet_bin).unwrap();
        let out = Command::new(bin())
            .args(["release", "sign", "--key"])
            .arg(&key)
            .arg(&fleet_bin)
            .output()
            .unwrap();
        assert!(out.status.success(), "sign: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(NEW));
        let server = Server::launch_with(new, &data, &["--no-local-host"]);
        Some(Fleet {
            dir,
            server,
            key,
            binaries,
            engine,
            agents: Vec::new(),
        })
    }

    /// Enroll and start an agent named `name` on the old build, from its own copy of the
    /// binary; `via` is the API address it enrolls with (a proxy, or the server).
    fn add_agent(&mut self, name: &str, via: Option<&str>) {
        let home = self.dir.path().join("agents").join(name);
        std::fs::create_dir_all(home.join("bin")).unwrap();
        let exe = home.join("bin/dockmesh");
        std::fs::hard_link(bin(), &exe)
            .or_else(|_| std::fs::copy(bin(), &exe).map(|_| ()))
            .unwrap();
        let token = agent_token(&self.server, &[]);
        let server = via.unwrap_or(&self.server.url).to_owned();
        let agent = Agent::start_from(
            &exe,
            name,
            &home.join("state"),
            &[
                "--server",
                &server,
                "--token",
                &token,
                "--name",
                name,
                "--docker-host",
                &self.engine,
                "--upgrade-deadline",
                "20",
            ],
        );
        self.agents.push((name.to_owned(), exe, agent));
    }

    /// Restart agent `name` from its binary (as its enrollment stands).
    fn restart_agent(&mut self, name: &str) {
        let i = self.agents.iter().position(|(n, _, _)| n == name).unwrap();
        let (n, exe, _) = self.agents.remove(i);
        let home = exe.parent().unwrap().parent().unwrap().to_owned();
        let agent = Agent::start_from(
            &exe,
            &n,
            &home.join("state"),
            &["--docker-host", &self.engine, "--upgrade-deadline", "20"],
        );
        self.agents.push((n, exe, agent));
    }

    /// The pid of the agent process the test started for `name`.
    fn pid(&self, name: &str) -> u32 {
        let (_, _, agent) = self.agents.iter().find(|(n, _, _)| n == name).unwrap();
        agent.child.id()
    }

    fn state_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("agents").join(name).join("state")
    }

    fn exe(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("agents")
            .join(name)
            .join("bin/dockmesh")
    }

    fn policy(&self, body: &str) {
        let (status, v) = self
            .server
            .api("PUT", "/api/v1/agents/upgrade-policy", Some(body));
        assert_eq!(status, 200, "{v}");
    }

    /// Wait until `pred` holds for the agents' list; the list.
    fn wait_agents(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let list = agents(&self.server);
            if pred(&list) {
                return list;
            }
            assert!(Instant::now() < deadline, "{what}: {list:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The audit entries of `action`, oldest first.
    fn audit(&self, action: &str) -> Vec<Value> {
        let (status, v) = self.server.api(
            "GET",
            &format!("/api/v1/audit?action={action}&limit=1000"),
            None,
        );
        assert_eq!(status, 200, "{v}");
        let mut events: Vec<Value> = v["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("an audit page: {v}"))
            .iter()
            .map(|e| e["event"].clone())
            .collect();
        events.reverse();
        events
    }

    /// The `stack.deploy` entries that dispatched an agent upgrade.
    fn dispatches(&self) -> Vec<Value> {
        self.audit("stack.deploy")
            .into_iter()
            .filter(|e| e["detail"]["action"] == "agent-upgrade")
            .collect()
    }
}

fn on<'a>(list: &'a [Value], host: &str) -> &'a Value {
    agent_on(list, host).unwrap_or_else(|| panic!("no agent {host}: {list:?}"))
}

/// A container on the engine that the upgrades must leave alone: its id and start time.
struct Witness {
    engine: String,
    name: String,
}

impl Witness {
    fn start(engine: &str) -> Witness {
        let name = unique("upgrade-witness");
        docker(
            engine,
            &["run", "-d", "--name", &name, IMAGE, "sleep", "3600"],
        )
        .unwrap();
        Witness {
            engine: engine.to_owned(),
            name,
        }
    }

    /// Id, start time, restart count, running.
    fn state(&self) -> String {
        docker(
            &self.engine,
            &[
                "inspect",
                "--format",
                "{{.Id}} {{.State.StartedAt}} {{.RestartCount}} {{.State.Running}}",
                &self.name,
            ],
        )
        .unwrap()
        .trim()
        .to_owned()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = docker(&self.engine, &["rm", "-f", &self.name]);
    }
}

#[test]
fn a_staged_rollout_upgrades_ten_agents_in_waves_and_leaves_containers_running() {
    let Some(mut fleet) = Fleet::start() else {
        return;
    };
    let witness = Witness::start(&fleet.engine);
    let before = witness.state();
    assert!(before.ends_with(" 0 true"), "{before}");
    let names: Vec<String> = (0..10).map(|i| format!("wave-{i:02}")).collect();
    for n in &names {
        fleet.add_agent(n, None);
    }
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_connected(&fleet.server, &hosts);
    let old = old_version();
    for a in agents(&fleet.server) {
        assert_eq!(a["version"], old.as_str());
        assert_eq!(a["status"], "drifted", "{a}");
    }
    // Nothing moves in the default (manual) mode.
    std::thread::sleep(Duration::from_secs(2));
    assert!(fleet.dispatches().is_empty());

    let gap = 4;
    fleet.policy(&format!(
        r#"{{"mode": "staged", "staged": {{"percent": 20, "min_gap": "{gap}s", "halt_after_failures": 1}}, "interval": "1s", "upgrade_timeout": "60s"}}"#
    ));
    // An agent's upgrade is settled by the rollout's next evaluation after its `hello` (the
    // interval is 1 s): until then it reports the new version and is still `upgrading`.
    fleet.wait_agents(
        "every agent reports the new version and its upgrade settled",
        Duration::from_secs(240),
        |l| {
            l.len() == 10
                && l.iter().all(|a| {
                    a["version"] == NEW && a["connected"] == true && a["status"] == "up_to_date"
                })
        },
    );
    // Waves of 20 % of 10 drifted agents: five waves of two, each at least the gap after the
    // one before; every agent sent the order exactly once.
    let dispatches = fleet.dispatches();
    assert_eq!(dispatches.len(), 10, "{dispatches:#?}");
    let mut agents_sent: Vec<&str> = dispatches
        .iter()
        .map(|d| d["detail"]["agent"].as_str().unwrap())
        .collect();
    agents_sent.sort();
    agents_sent.dedup();
    assert_eq!(agents_sent.len(), 10);
    let at = |d: &Value| {
        d["at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let mut waves: Vec<Vec<jiff::Timestamp>> = Vec::new();
    for d in &dispatches {
        assert_eq!(d["detail"]["trigger"], "wave", "{d}");
        assert_eq!(d["detail"]["server_version"], NEW);
        let binary = d["detail"]["binary"].as_str().unwrap_or_default();
        assert!(
            binary.starts_with("dockmesh") && binary.contains(std::env::consts::ARCH),
            "the dispatch names the binary sent: {d}"
        );
        let t = at(d);
        match waves.last_mut() {
            Some(w) if t.duration_since(w[0]) < jiff::SignedDuration::from_secs(1) => w.push(t),
            _ => waves.push(vec![t]),
        }
    }
    assert_eq!(
        waves.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 2, 2, 2],
        "{dispatches:#?}"
    );
    for pair in waves.windows(2) {
        let between = pair[1][0].duration_since(pair[0][0]);
        assert!(
            between >= jiff::SignedDuration::from_secs(gap),
            "waves {between:#} apart, the gap is {gap}s"
        );
    }
    // The binaries on the hosts are the new build; the old one is kept beside them. Each agent
    // re-executed itself in place: the process the test started (same pid) runs the new file.
    for n in &names {
        assert_eq!(version_of(&fleet.exe(n)), NEW);
        let pid = fleet.pid(n);
        let running = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(
            running,
            fleet.exe(n),
            "agent {n} (pid {pid}) runs {running:?}"
        );
        let mut prev = fleet.exe(n).into_os_string();
        prev.push(".previous");
        assert_eq!(version_of(Path::new(&prev)), old);
    }
    assert_eq!(witness.state(), before, "the container was touched");
}

#[test]
fn manual_mode_waits_for_a_request_and_auto_mode_sends_each_drifted_agent_once() {
    let Some(mut fleet) = Fleet::start() else {
        return;
    };
    let witness = Witness::start(&fleet.engine);
    let before = witness.state();
    for n in ["m-1", "m-2", "m-3"] {
        fleet.add_agent(n, None);
    }
    wait_connected(&fleet.server, &["m-1", "m-2", "m-3"]);
    fleet.policy(r#"{"mode": "manual", "interval": "1s"}"#);
    // Run now in manual mode dispatches nothing, and says so.
    let out = fleet.server.cli_ok(&["agent-policy", "run"]);
    assert!(out.contains("manual"), "{out}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(fleet.dispatches().is_empty());
    assert_eq!(fleet.audit("agent.upgrade_run").len(), 1);

    // One agent on request.
    let out = fleet.server.cli_ok(&["agent", "upgrade", "m-2"]);
    assert!(out.contains("was sent the upgrade"), "{out}");
    fleet.wait_agents("m-2 upgraded", Duration::from_secs(60), |l| {
        on(l, "m-2")["version"] == NEW && on(l, "m-2")["status"] == "up_to_date"
    });
    // A second request for it is refused: it is up to date.
    let out = fleet.server.cli(&["agent", "upgrade", "m-2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already reports"));
    let l = agents(&fleet.server);
    assert_ne!(on(&l, "m-1")["version"], NEW);
    assert_ne!(on(&l, "m-3")["version"], NEW);

    // Auto: the two others, once each.
    let out = fleet
        .server
        .cli_ok(&["agent-policy", "set", "--mode", "auto"]);
    assert!(out.contains("mode:            auto"), "{out}");
    fleet.wait_agents("all upgraded", Duration::from_secs(90), |l| {
        l.iter()
            .all(|a| a["version"] == NEW && a["connected"] == true)
    });
    std::thread::sleep(Duration::from_secs(3));
    let dispatches = fleet.dispatches();
    let mut per: Vec<String> = dispatches
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d["detail"]["agent"].as_str().unwrap(),
                d["detail"]["trigger"].as_str().unwrap()
            )
        })
        .collect();
    per.sort();
    assert_eq!(per.len(), 3, "{per:?}");
    assert_eq!(
        per.iter().filter(|p| p.ends_with(" requested")).count(),
        1,
        "{per:?}"
    );
    assert_eq!(per.iter().filter(|p| p.ends_with(" auto")).count(), 2);
    let policy_changes = fleet.audit("agent.upgrade_policy");
    assert_eq!(policy_changes.len(), 2, "{policy_changes:#?}");
    assert_eq!(witness.state(), before, "the container was touched");
}

/// How a proxy between an agent and the server's API treats binary downloads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tamper {
    Pass,
    /// Close the connection without an answer (the download cannot be reached).
    Drop,
    FlipByte,
    Truncate,
}

/// An HTTP/1.1 proxy (one request per connection) in front of the server's API that can
/// tamper with agent binary downloads.
struct Proxy {
    url: String,
    mode: Arc<Mutex<Tamper>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mode = Arc::new(Mutex::new(Tamper::Pass));
        let m = mode.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let (up, m) = (upstream.clone(), m.clone());
                std::thread::spawn(move || {
                    let _ = relay_one(client, &up, *m.lock().unwrap());
                });
            }
        });
        Proxy { url, mode }
    }

    fn set(&self, t: Tamper) {
        *self.mode.lock().unwrap() = t;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn relay_one(mut client: TcpStream, upstream: &str, tamper: Tamper) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
        if let Some(i) = find(&req, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while req.len() < head_end + length {
        let n = client.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let binary = head
        .lines()
        .next()
        .is_some_and(|l| l.contains("/api/v1/agent-binaries/"));
    if binary && tamper == Tamper::Drop {
        return client.shutdown(std::net::Shutdown::Both);
    }
    // Ask the server to close after its answer, so the whole answer is read to its end.
    let mut forwarded: Vec<u8> = Vec::new();
    for line in head.trim_end().split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        forwarded.extend_from_slice(line.as_bytes());
        forwarded.extend_from_slice(b"\r\n");
    }
    forwarded.extend_from_slice(b"Connection: close\r\n\r\n");
    forwarded.extend_from_slice(&req[head_end..]);
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&forwarded)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    if binary && tamper != Tamper::Pass {
        let body_at = find(&answer, b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
        let body_len = answer.len() - body_at;
        match tamper {
            Tamper::FlipByte if body_len > 0 => answer[body_at + body_len / 2] ^= 0x40,
            Tamper::Truncate => answer.truncate(body_at + body_len / 2),
            _ => {}
        }
    }
    client.write_all(&answer)?;
    client.shutdown(std::net::Shutdown::Both)
}

/// Ask for `host`'s upgrade; it must settle as failed with `why` in its reason; the agent.
fn upgrade_fails(fleet: &Fleet, host: &str, why: &str) -> Value {
    fleet.server.cli_ok(&["agent", "upgrade", host]);
    let a = settled_upgrade(fleet, host);
    assert_eq!(a["status"], "failed", "{a}");
    let reason = a["upgrade"]["reason"].as_str().unwrap();
    assert!(reason.contains(why), "{why:?} not in {a}");
    assert_ne!(a["version"], NEW, "the agent still runs its version: {a}");
    a
}

/// The agent's upgrade state once it is no longer in flight.
fn settled_upgrade(fleet: &Fleet, host: &str) -> Value {
    fleet
        .wait_agents(
            &format!("{host}'s upgrade settles"),
            Duration::from_secs(90),
            |l| {
                agent_on(l, host).is_some_and(|a| {
                    a["connected"] == true
                        && !matches!(a["status"].as_str(), Some("upgrading" | "requested"))
                })
            },
        )
        .into_iter()
        .find(|a| a["host"] == host)
        .unwrap()
}

#[test]
fn refused_binaries_and_a_binary_that_exits_at_once_leave_the_agent_on_its_version() {
    let Some(mut fleet) = Fleet::start() else {
        return;
    };
    let witness = Witness::start(&fleet.engine);
    let before = witness.state();
    let old = old_version();
    let proxy = Proxy::start(&fleet.server.url);
    let proxy_url = proxy.url.clone();
    fleet.add_agent("edge", Some(&proxy_url));
    fleet.add_agent("edge-2", None);
    fleet.add_agent("edge-3", None);
    wait_connected(&fleet.server, &["edge", "edge-2", "edge-3"]);
    let failures = |fleet: &Fleet| fleet.audit("agent.upgrade_failed");

    // 0. The download cannot be reached: pending a manual upgrade, with the steps.
    proxy.set(Tamper::Drop);
    fleet.server.cli_ok(&["agent", "upgrade", "edge"]);
    let a = settled_upgrade(&fleet, "edge");
    assert_eq!(a["status"], "pending_manual", "{a}");
    assert!(
        a["upgrade"]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{a}"
    );
    assert!(
        a["manual_steps"]
            .as_str()
            .unwrap()
            .contains("install the dockmesh"),
        "{a}"
    );
    let out = fleet.server.cli(&["agent", "ls"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("steps: on the host"),
        "{out:?}"
    );
    assert_eq!(version_of(&fleet.exe("edge")), old);
    let audited = failures(&fleet);
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["detail"]["kind"], "cannot_download");

    // 1. A byte changed on the way: the SHA-256 differs; refused, nothing replaced.
    proxy.set(Tamper::FlipByte);
    let a = upgrade_fails(&fleet, "edge", "SHA-256");
    assert_eq!(a["version"], old.as_str());
    assert_eq!(version_of(&fleet.exe("edge")), old);
    assert_eq!(failures(&fleet).len(), 2);

    // 2. The download is cut every time: it resumes, stays short, and is refused.
    proxy.set(Tamper::Truncate);
    upgrade_fails(&fleet, "edge", "truncated");
    assert_eq!(version_of(&fleet.exe("edge")), old);
    assert_eq!(failures(&fleet).len(), 3);
    proxy.set(Tamper::Pass);

    // 3. The agent pinned another release key: the signature does not verify; nothing is
    //    downloaded.
    let (_other_private, other_public) = {
        let d = fleet.dir.path().join("other-key");
        std::fs::create_dir_all(&d).unwrap();
        let out = Command::new(bin())
            .args(["release", "keygen", "--private"])
            .arg(d.join("k"))
            .arg("--public")
            .arg(d.join("k.pub"))
            .output()
            .unwrap();
        assert!(out.status.success());
        (d.join("k"), d.join("k.pub"))
    };
    std::fs::copy(&other_public, fleet.state_dir("edge").join("release.pub")).unwrap();
    fleet.restart_agent("edge");
    wait_connected(&fleet.server, &["edge"]);
    upgrade_fails(&fleet, "edge", "signature");
    assert_eq!(version_of(&fleet.exe("edge")), old);
    assert_eq!(failures(&fleet).len(), 4);
    std::fs::copy(
        fleet.server.data_dir.join("release.pub"),
        fleet.state_dir("edge").join("release.pub"),
    )
    .unwrap();
    fleet.restart_agent("edge");
    wait_connected(&fleet.server, &["edge"]);

    // 4. A new binary that says the right version but exits at once as an agent: the
    //    watchdog puts the previous binary back and starts it; it reports the failure.
    signed_script(&fleet, "broken", "exit 3");
    // The gap is longer than a failed upgrade takes to be reported, so a failure of one wave
    // halts the rollout before the next (core's rule: keep the gap at least the timeout).
    fleet.policy(r#"{"mode": "staged", "staged": {"percent": 30, "min_gap": "40s", "halt_after_failures": 1}, "interval": "1s", "upgrade_timeout": "40s"}"#);
    // The staged rollout had failures already (those above count from this rollout on):
    // it is halted at once, and only a request goes out.
    upgrade_fails(&fleet, "edge", "exited before it connected");
    assert_eq!(
        version_of(&fleet.exe("edge")),
        old,
        "the previous binary is back"
    );
    assert_eq!(failures(&fleet).len(), 5);
    let halted = |fleet: &Fleet| {
        let (_, p) = fleet
            .server
            .api("GET", "/api/v1/agents/upgrade-policy", None);
        p["state"]["halted"]["reason"].as_str().map(str::to_owned)
    };
    assert!(halted(&fleet).is_some());
    assert!(
        fleet
            .dispatches()
            .iter()
            .all(|d| d["detail"]["trigger"] == "requested")
    );

    // 5. Resumed, the staged rollout sends its first wave (30 % of three drifted agents: one
    //    of the two idle ones; `edge` failed and is not retried); that upgrade fails, the
    //    threshold (1) is reached, and the rollout halts again: the other idle agent is never
    //    sent the broken binary.
    let out = fleet.server.cli_ok(&["agent-policy", "resume"]);
    assert!(!out.contains("HALTED"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while halted(&fleet).is_none() {
        assert!(Instant::now() < deadline, "the rollout did not halt again");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let waves: Vec<Value> = fleet
        .dispatches()
        .into_iter()
        .filter(|d| d["detail"]["trigger"] == "wave")
        .collect();
    assert_eq!(waves.len(), 1, "{waves:#?}");
    let list = agents(&fleet.server);
    let sent = waves[0]["detail"]["agent"].as_str().unwrap();
    for a in &list {
        assert_eq!(a["version"], old.as_str(), "{a}");
        if a["id"] == sent || a["host"] == "edge" {
            assert_eq!(a["status"], "failed", "{a}");
        } else {
            assert_eq!(a["status"], "drifted", "never sent: {a}");
        }
    }
    assert_eq!(failures(&fleet).len(), 6);
    let reason = halted(&fleet).unwrap();
    assert!(reason.contains("halt threshold is 1"), "{reason}");

    // 6. A new binary that says the right version but, as an agent, never connects: the
    //    watchdog kills it after the agent's deadline (20 s here) and its grace, puts the
    //    previous binary back and starts it; it reports the failure. The server's own timeout
    //    is set longer, so the failure seen is the agent's.
    fleet.policy(r#"{"mode": "manual", "upgrade_timeout": "120s"}"#);
    signed_script(&fleet, "hung", "exec sleep 600");
    upgrade_fails(
        &fleet,
        "edge",
        "did not connect to the server before the deadline",
    );
    assert_eq!(
        version_of(&fleet.exe("edge")),
        old,
        "the previous binary is back"
    );
    assert_eq!(failures(&fleet).len(), 7);
    assert_eq!(witness.state(), before, "the container was touched");
}

/// Serve only a signed script as the new binary: it answers `--version` with the new version
/// and otherwise runs `body`.
fn signed_script(fleet: &Fleet, name: &str, body: &str) {
    for e in std::fs::read_dir(&fleet.binaries).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let script = fleet
        .binaries
        .join(format!("dockmesh-{name}-{}", std::env::consts::ARCH));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'dockmesh {NEW}'; exit 0; fi\n{body}\n"
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new(bin())
        .args(["release", "sign", "--key"])
        .arg(&fleet.key)
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
