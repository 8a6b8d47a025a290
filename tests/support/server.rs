//! A `dockmesh server` process for end-to-end tests: started on a free port with the local
//! engine as `local` and the second engine as `b`, its log forwarded to the test's output, and
//! the CLI and HTTP API pointed at it.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dockmesh")
}

/// A server process.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub token: String,
    /// Where the agent listener is (`127.0.0.1:PORT`).
    pub agent_addr: String,
    b: String,
}

/// Make an API token on the store in `data_dir` (as a new install does).
pub fn make_token(data_dir: &Path) -> String {
    let out = Command::new(bin())
        .args(["token", "create", "--name", "e2e", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run dockmesh token create");
    assert!(out.status.success(), "token create: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Server {
    /// Start a server on `data_dir` with hosts `local` and `b` (the engine at `b`); `extra`
    /// are more arguments (a crash point).
    pub fn start(data_dir: &Path, b: &str, extra: &[&str]) -> Server {
        let host_b = format!("b={b}");
        let mut args = vec!["--host", host_b.as_str()];
        args.extend_from_slice(extra);
        let mut server = Server::launch(data_dir, &args);
        server.b = b.to_owned();
        server
    }

    /// Start a server on `data_dir` with these arguments (hosts, options) besides the data
    /// directory, loopback listeners and short retry delays.
    pub fn launch(data_dir: &Path, args: &[&str]) -> Server {
        Server::launch_with(Path::new(bin()), data_dir, args)
    }

    /// [`Server::launch`] running the server binary `exe`.
    pub fn launch_with(exe: &Path, data_dir: &Path, args: &[&str]) -> Server {
        std::fs::create_dir_all(data_dir).unwrap();
        let token = make_token(data_dir);
        let mut child = Command::new(exe)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
            .args(["--lease-ttl", "5", "--max-retry-delay", "2"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dockmesh server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                if let Some(addr) = line.split("HTTP listening on ").nth(1) {
                    let _ = tx.send(("http", addr.trim().to_owned()));
                }
                if let Some(rest) = line.split("Agent listener on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(("agent", addr));
                }
            }
        });
        let (mut http, mut agent) = (None, None);
        while http.is_none() || agent.is_none() {
            let (kind, addr) = rx.recv_timeout(Duration::from_secs(60)).expect(
                "the server logs `Agent listener on ADDR (mTLS)` and `HTTP listening on ADDR`",
            );
            match kind {
                "http" => http = Some(addr),
                _ => agent = Some(addr),
            }
        }
        let server = Server {
            child,
            url: format!("http://{}", http.unwrap()),
            data_dir: data_dir.to_owned(),
            token,
            agent_addr: agent.unwrap(),
            b: String::new(),
        };
        server.wait_ready();
        server
    }

    /// Start another server on the same data directory.
    pub fn restart(data_dir: &Path, b: &str) -> Server {
        Server::start(data_dir, b, &[])
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("{}/healthz/ready", self.url))
                .output();
            if let Ok(o) = r
                && o.stdout == b"200"
            {
                return;
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        let out = Command::new(bin())
            .args(args)
            .env("DOCKMESH_SERVER", &self.url)
            .env("DOCKMESH_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .expect("run the dockmesh CLI");
        eprintln!(
            "$ dockmesh {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run the CLI; it must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "dockmesh {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    /// An API request with the token: status and JSON body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        api_call(&self.url, Some(&self.token), method, path, body, &[])
    }

    /// Wait until the process exits by itself (a crash point), up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.wait_exit(Duration::from_secs(120))
    }

    /// Poll a migration until it settles.
    pub fn wait_settled(&self, id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (status, m) = self.api("GET", &format!("/api/v1/migrations/{id}"), None);
            if status == 200 && m["settled"] == Value::Bool(true) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "migration {id} did not settle: {m}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request through curl (outside dockmesh's own client): status and JSON body.
pub fn api_call(
    url: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[&str],
) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
        cmd.stdin(Stdio::piped());
    }
    cmd.arg(format!("{url}{path}"));
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("run curl");
    if let Some(b) = body {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (code.trim().parse().unwrap_or(0), value)
}
