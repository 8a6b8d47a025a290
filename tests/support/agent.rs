//! Agent processes for end-to-end tests: start one (from any binary), its log kept; tokens;
//! the agents as the API lists them.
#![allow(dead_code)]

use super::server::{Server, bin};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An agent process, its log kept for assertions.
pub struct Agent {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Agent {
    /// Start `dockmesh agent` with `args` (besides its state directory).
    pub fn start(name: &str, state_dir: &Path, args: &[&str]) -> Agent {
        Agent::start_from(Path::new(bin()), name, state_dir, args)
    }

    /// Start `exe agent …` in a process group of its own (an upgrade's watchdog joins it, and
    /// goes with it when the agent is dropped).
    pub fn start_from(exe: &Path, name: &str, state_dir: &Path, args: &[&str]) -> Agent {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(exe)
            .arg("agent")
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--grace", "4"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("DOCKMESH_SERVER")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start dockmesh agent");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let (keep, tag) = (log.clone(), name.to_owned());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[agent {tag}] {line}");
                let mut l = keep.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Agent { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the process exits by itself, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The whole group: the agent and an upgrade watchdog it started.
        // `--` first: procps' kill reads `-PID` after a signal as another option.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dockmesh agent token create` on the server's store, with more arguments.
pub fn agent_token(server: &Server, extra: &[&str]) -> String {
    let out = Command::new(bin())
        .args(["agent", "token", "create", "--data-dir"])
        .arg(&server.data_dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "agent token create: {out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("dme_"), "{token}");
    token
}

/// The agents as `GET /api/v1/agents` shows them.
pub fn agents(server: &Server) -> Vec<Value> {
    let (status, v) = server.api("GET", "/api/v1/agents", None);
    assert_eq!(status, 200, "{v}");
    v.as_array().unwrap().clone()
}

pub fn agent_on<'a>(list: &'a [Value], host: &str) -> Option<&'a Value> {
    list.iter().find(|a| a["host"] == host)
}

/// Wait until every host in `hosts` has a connected agent that reported its hello.
pub fn wait_connected(server: &Server, hosts: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = agents(server);
        let ready = hosts.iter().all(|h| {
            agent_on(&list, h).is_some_and(|a| {
                a["connected"] == true && !a["docker_version"].as_str().unwrap_or("").is_empty()
            })
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "agents {hosts:?} never connected: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
