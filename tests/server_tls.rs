//! The server's API listener and TLS, end to end with the real binary (no engine needed): on a
//! non-loopback address it serves HTTPS with its own CA's certificate and never plain HTTP;
//! the CLI trusts it by the CA's fingerprint or a CA file, and a wrong fingerprint is refused;
//! an agent enrolls over HTTPS trusting the fingerprint its token carries; `--tls-cert` serves
//! the operator's certificate; `--insecure-http` serves plain HTTP behind a proxy with `Secure`
//! cookies when it says `X-Forwarded-Proto: https`; `/metrics` needs a token except on
//! `--metrics-listen`; refused flags say why.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::server::{bin, make_token};

/// A server process and what it printed at start.
struct Running {
    child: Child,
    /// `host:port` of the API listener, on 127.0.0.1.
    addr: String,
    /// Whether it said HTTPS.
    https: bool,
    fingerprint: String,
    metrics: Option<String>,
    token: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch(data_dir: &Path, args: &[&str]) -> Running {
    std::fs::create_dir_all(data_dir).unwrap();
    let token = make_token(data_dir);
    let mut child = Command::new(bin())
        .arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--no-local-host", "--agent-listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dockmesh server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            let _ = tx.send(line);
        }
    });
    let mut api = None;
    let mut metrics = None;
    let mut fingerprint = None;
    let want_metrics = args.contains(&"--metrics-listen");
    while api.is_none() || (want_metrics && metrics.is_none()) {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server says where it listens");
        if let Some(fp) = line.split("ca_fingerprint=").nth(1) {
            fingerprint.get_or_insert_with(|| fp[..64].to_owned());
        }
        if let Some(rest) = line.split("metrics listening on ").nth(1) {
            metrics = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.split(" listening on ").nth(1) {
            let https = line.contains("HTTPS listening on");
            let addr = rest.trim();
            let port = addr.rsplit_once(':').unwrap().1.to_owned();
            api = Some((format!("127.0.0.1:{port}"), https));
        }
    }
    let fingerprint = fingerprint.expect("the CA's fingerprint is printed at start");
    let (addr, https) = api.unwrap();
    Running {
        child,
        addr,
        https,
        fingerprint,
        metrics,
        token,
    }
}

/// curl: the status code (0 when no HTTP answer) and the headers and body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .env_remove("DOCKMESH_SERVER")
        .env_remove("DOCKMESH_CA_FINGERPRINT")
        .env_remove("DOCKMESH_CA_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run dockmesh");
    eprintln!(
        "$ dockmesh {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_non_loopback_listener_serves_https_with_the_own_ca_and_clients_pin_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = launch(&data, &["--listen", "0.0.0.0:0"]);
    assert!(s.https, "a non-loopback listener is HTTPS");
    let https = format!("https://{}", s.addr);

    // Plain HTTP gets no HTTP answer.
    let (code, _) = curl(&[&format!("http://{}/healthz/live", s.addr)]);
    assert_eq!(code, 0, "plain HTTP answered");
    // Any client that has the CA file gets through (names: the address, localhost).
    let ca_file = data.join("ca").join("ca.crt");
    let port = s.addr.rsplit_once(':').unwrap().1;
    let (code, _) = curl(&[
        "--cacert",
        ca_file.to_str().unwrap(),
        &format!("https://localhost:{port}/healthz/live"),
    ]);
    assert_eq!(code, 200);

    // The CLI: by fingerprint, by CA file; refused by a wrong fingerprint or none.
    let token = s.token.as_str();
    let base = ["host", "ls", "--server", &https, "--token", token];
    let by_fp = cli(
        &[&base[..], &["--ca-fingerprint", &s.fingerprint]].concat(),
        &[],
    );
    assert!(by_fp.status.success(), "{}", stderr(&by_fp));
    let by_env = cli(
        &base,
        &[("DOCKMESH_CA_FINGERPRINT", s.fingerprint.as_str())],
    );
    assert!(by_env.status.success(), "{}", stderr(&by_env));
    // A CA file checks names: the listener on 0.0.0.0 is certified for localhost (and the
    // names given with --tls-name), not for 127.0.0.1.
    let by_file = cli(
        &[&base[..], &["--ca-file", ca_file.to_str().unwrap()]].concat(),
        &[],
    );
    assert!(
        stderr(&by_file).contains("not valid for name"),
        "{}",
        stderr(&by_file)
    );
    let by_name = format!("https://localhost:{port}");
    let by_file = cli(
        &[
            "host",
            "ls",
            "--server",
            &by_name,
            "--token",
            token,
            "--ca-file",
            ca_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(by_file.status.success(), "{}", stderr(&by_file));
    let wrong = "ab".repeat(32);
    let refused = cli(&[&base[..], &["--ca-fingerprint", &wrong]].concat(), &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains(&wrong), "{}", stderr(&refused));
    let untrusted = cli(&base, &[]);
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).contains("--ca-fingerprint"),
        "{}",
        stderr(&untrusted)
    );

    // /metrics on the API listener needs a token.
    let ca = ca_file.to_str().unwrap();
    let url = format!("https://localhost:{port}/metrics");
    assert_eq!(curl(&["--cacert", ca, &url]).0, 401);
    let auth = format!("Authorization: Bearer {token}");
    let (code, text) = curl(&["--cacert", ca, "-H", &auth, &url]);
    assert_eq!(code, 200);
    assert!(text.contains("dockmesh_migrations"), "{text}");
    // Dashboard cookies are Secure over HTTPS.
    let (code, head) = curl(&["--cacert", ca, &format!("https://localhost:{port}/login")]);
    assert_eq!(code, 200);
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(cookie.contains("Secure"), "{head}");

    // An agent enrolls over HTTPS, trusting the fingerprint its token carries.
    let make = cli(
        &[
            "agent",
            "token",
            "create",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(make.status.success());
    let enroll_token = String::from_utf8(make.stdout).unwrap().trim().to_owned();
    // A token naming another CA: refused before anything is sent, nothing kept.
    let (secret, _) = enroll_token.rsplit_once('_').unwrap();
    let foreign = format!("{secret}_{wrong}");
    let state = dir.path().join("state-foreign");
    let mut agent = Agent::start(
        "foreign",
        &state,
        &["--server", &https, "--token", &foreign, "--name", "edge-x"],
    );
    assert_eq!(agent.wait_exit(Duration::from_secs(30)).code(), Some(1));
    assert!(agent.log().contains(&wrong), "{}", agent.log());
    assert!(!state.join("agent.json").exists());
    // Plain HTTP to an address others reach: refused, the token is not sent.
    let mut agent = Agent::start(
        "plain",
        &dir.path().join("state-plain"),
        &[
            "--server",
            "http://192.0.2.1:8080",
            "--token",
            &enroll_token,
            "--name",
            "edge-p",
        ],
    );
    assert_eq!(agent.wait_exit(Duration::from_secs(30)).code(), Some(1));
    assert!(agent.log().contains("https://"), "{}", agent.log());

    let state = dir.path().join("state-edge");
    let agent = Agent::start(
        "edge",
        &state,
        &[
            "--server",
            &https,
            "--token",
            &enroll_token,
            "--name",
            "edge-1",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("agent.json").exists() {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = curl(&[
        "--cacert",
        ca,
        "-H",
        &auth,
        &format!("https://localhost:{port}/api/v1/agents"),
    ]);
    assert_eq!(code, 200);
    assert!(body.contains("edge-1"), "{body}");
}

#[test]
fn the_operators_certificate_is_served_and_trusted_by_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dockmesh_http::channel::pki::Ca::ephemeral().unwrap();
    let cert = ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()])
        .unwrap();
    let cert_file = dir.path().join("server.pem");
    let key_file = dir.path().join("server.key");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&cert_file, format!("{}{}", cert.cert_pem, ca.cert_pem())).unwrap();
    std::fs::write(&key_file, &cert.key_pem).unwrap();
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let s = launch(
        &dir.path().join("data"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(s.https, "--tls-cert serves HTTPS even on loopback");
    let https = format!("https://{}", s.addr);
    assert_eq!(curl(&[&format!("http://{}/healthz/live", s.addr)]).0, 0);
    let base = ["host", "ls", "--server", &https, "--token", &s.token];
    let ok = cli(
        &[&base[..], &["--ca-file", ca_file.to_str().unwrap()]].concat(),
        &[],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let ok = cli(
        &[&base[..], &["--ca-fingerprint", &ca.fingerprint()]].concat(),
        &[],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    // The server's own CA did not issue this certificate.
    let refused = cli(
        &[&base[..], &["--ca-fingerprint", &s.fingerprint]].concat(),
        &[],
    );
    assert!(!refused.status.success());
}

#[test]
fn insecure_http_serves_plain_behind_a_proxy_and_metrics_get_their_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let s = launch(
        &dir.path().join("data"),
        &[
            "--listen",
            "0.0.0.0:0",
            "--insecure-http",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(!s.https);
    let url = format!("http://{}", s.addr);
    assert_eq!(curl(&[&format!("{url}/healthz/live")]).0, 200);
    let set_cookie = |headers: &[&str]| {
        let mut args = vec![];
        for h in headers {
            args.extend(["-H", *h]);
        }
        let login = format!("{url}/login");
        args.push(&login);
        let (code, head) = curl(&args);
        assert_eq!(code, 200);
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(!set_cookie(&[]).contains("Secure"));
    assert!(set_cookie(&["X-Forwarded-Proto: https"]).contains("Secure"));
    // /metrics: a token on the API listener, none on its own.
    assert_eq!(curl(&[&format!("{url}/metrics")]).0, 401);
    let metrics = s
        .metrics
        .clone()
        .expect("the metrics listener is announced");
    assert!(metrics.starts_with("http://127.0.0.1:"), "{metrics}");
    let (code, text) = curl(&[&metrics]);
    assert_eq!(code, 200);
    assert!(text.contains("dockmesh_database_up 1"), "{text}");
}

#[test]
fn refused_tls_flags_say_why_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        cli(
            &[&["server", "--data-dir", data.to_str().unwrap()][..], args].concat(),
            &[],
        )
    };
    let out = run(&["--listen", "0.0.0.0:0", "--tls-cert", "/nonexistent.pem"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tls-key"), "{}", stderr(&out));
    let out = run(&[
        "--insecure-http",
        "--tls-cert",
        "a.pem",
        "--tls-key",
        "b.pem",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--insecure-http"), "{}", stderr(&out));
    assert!(!data.exists(), "nothing was created");
    // A certificate file that is not PEM is named.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--no-local-host",
        "--agent-listen",
        "127.0.0.1:0",
        "--tls-cert",
        bad.to_str().unwrap(),
        "--tls-key",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bad.pem"), "{}", stderr(&out));
}
