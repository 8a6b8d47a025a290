use super::enroll::{answer_is_authenticated, enroll_client, loopback_url};
use super::state::{
    AgentState, CERT_FILE, FileCredentials, KEY_FILE, connector_from, default_cert_file,
    default_key_file, load_state, save_state,
};
use super::*;
use crate::agent::renew::AgentCredentials;
use crate::channel::enroll::{self, Enrolled, EnrollmentToken};
use crate::channel::pki;
use std::os::unix::fs::PermissionsExt;

const GRACE: Duration = Duration::from_secs(60);

#[test]
fn only_a_loopback_server_may_be_enrolled_with_over_plain_http() {
    for url in [
        "http://127.0.0.1:8080",
        "http://localhost:8080/",
        "http://LOCALHOST",
        "http://[::1]:8080",
        "http://127.0.0.2:1",
        "http://user@127.0.0.1:8080/x",
    ] {
        assert!(loopback_url(url), "{url}");
    }
    for url in [
        "http://10.0.0.5:8080",
        "http://server:8080",
        "http://localhost.evil.example:8080",
        "http://127.0.0.1.nip.io",
        "http://[fe80::1]:8080",
        "http://0.0.0.0:8080",
    ] {
        assert!(!loopback_url(url), "{url}");
    }
    let token =
        EnrollmentToken::parse(&format!("dme_{}_{}", "a".repeat(64), "b".repeat(64))).unwrap();
    let e = enroll_client("http://10.0.0.5:8080", &token, None).unwrap_err();
    assert!(e.to_string().contains("https://"), "{e}");
    assert!(enroll_client("http://127.0.0.1:8080", &token, None).is_ok());
    assert!(enroll_client("https://10.0.0.5:8080", &token, None).is_ok());
}

fn enrolled(ca: &pki::Ca, csr: &str, release_key_pem: Option<String>) -> Enrolled {
    Enrolled {
        agent_id: "agent-x".into(),
        cert_pem: ca.issue_agent_for_csr("agent-x", csr).unwrap(),
        key_pem: None,
        ca_pem: ca.cert_pem().to_owned(),
        host: "edge".into(),
        agent_endpoint: "127.0.0.1:1".into(),
        server_name: pki::SERVER_NAME.into(),
        release_key_pem,
    }
}

fn state() -> AgentState {
    AgentState {
        agent_id: "agent-x".into(),
        host: "edge".into(),
        agent_endpoint: "127.0.0.1:1".into(),
        server_name: pki::SERVER_NAME.into(),
        server: "http://s".into(),
        key_file: default_key_file(),
        cert_file: default_cert_file(),
    }
}

#[test]
fn a_renewal_replaces_key_and_certificate_together_and_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::ephemeral().unwrap();
    let (key_pem, csr) = enroll::new_agent_key().unwrap();
    save_state(dir.path(), &state(), &key_pem, &enrolled(&ca, &csr, None)).unwrap();
    let loaded = load_state(dir.path()).unwrap().unwrap();
    assert_eq!(loaded.key_file, KEY_FILE);
    connector_from(dir.path(), &loaded, GRACE).unwrap();

    let creds = FileCredentials {
        dir: dir.path().to_owned(),
        agent_id: "agent-x".into(),
        state: std::sync::Mutex::new(loaded),
        ca_pem: ca.cert_pem().to_owned(),
        pending: std::sync::Mutex::new(None),
    };
    assert!(creds.install("x").is_err(), "nothing pending");
    let csr = creds.new_request().unwrap();
    let new_key = creds.pending_key().unwrap();
    assert_ne!(new_key, key_pem);
    let cert = ca.issue_agent_for_csr("agent-x", &csr).unwrap();
    creds.install(&cert).unwrap();

    let reloaded = load_state(dir.path()).unwrap().unwrap();
    assert_ne!(reloaded.key_file, KEY_FILE);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(&reloaded.key_file)).unwrap(),
        new_key
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join(&reloaded.cert_file)).unwrap(),
        cert
    );
    for f in [&reloaded.key_file, &reloaded.cert_file] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert!(!dir.path().join(KEY_FILE).exists(), "the old key is gone");
    assert!(
        !dir.path().join(CERT_FILE).exists(),
        "the old certificate is gone"
    );
    connector_from(dir.path(), &reloaded, GRACE).unwrap();
    assert!(creds.pending_key().is_none());
}

#[test]
fn the_servers_release_key_is_pinned_at_enrollment_and_none_without_one() {
    let ca = pki::Ca::ephemeral().unwrap();
    let (key_pem, csr) = enroll::new_agent_key().unwrap();
    let (_, public) = crate::channel::agent_binaries::keygen().unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_state(
        dir.path(),
        &state(),
        &key_pem,
        &enrolled(&ca, &csr, Some(public.clone())),
    )
    .unwrap();
    let pinned = dir.path().join(self_upgrade::PINNED_KEY);
    assert_eq!(std::fs::read_to_string(&pinned).unwrap(), public);
    let mode = std::fs::metadata(&pinned).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let dir = tempfile::tempdir().unwrap();
    save_state(dir.path(), &state(), &key_pem, &enrolled(&ca, &csr, None)).unwrap();
    assert!(!dir.path().join(self_upgrade::PINNED_KEY).exists());
}

#[test]
fn a_release_key_is_taken_from_an_enrollment_answer_only_over_https_or_loopback() {
    for (base, taken) in [
        ("https://server.example:8443", true),
        ("http://127.0.0.1:8080", true),
        ("http://[::1]:8080", true),
        ("http://localhost:8080", true),
        ("http://server.example:8080", false),
        ("http://10.0.0.5:8080", false),
        ("not a url", false),
    ] {
        assert_eq!(answer_is_authenticated(base), taken, "{base}");
    }
}

#[tokio::test]
async fn an_agent_without_enrollment_or_token_makes_nothing_and_says_how_to_enroll() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("agent");
    let mut options = AgentOptions::new("1.4.0");
    options.server = Some("http://127.0.0.1:1".into());
    let e = Agent::load_or_enroll(&state_dir, &options)
        .await
        .err()
        .expect("not enrolled");
    assert!(matches!(e, AgentError::NotEnrolled { .. }), "{e:?}");
    assert!(e.to_string().contains("not enrolled yet"), "{e}");
    assert!(e.hint().contains("--token"), "{}", e.hint());
    assert!(!state_dir.exists(), "no directory was made");
}

#[tokio::test]
async fn an_enrolled_state_directory_loads_as_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::ephemeral().unwrap();
    let (key_pem, csr) = enroll::new_agent_key().unwrap();
    save_state(dir.path(), &state(), &key_pem, &enrolled(&ca, &csr, None)).unwrap();
    let agent = Agent::load_or_enroll(dir.path(), &AgentOptions::new("1.4.0"))
        .await
        .unwrap();
    assert_eq!(agent.host_id(), HostId::from("edge"));
    assert_eq!(agent.agent_id(), "agent-x");
    assert_eq!(agent.state_dir(), dir.path());
    // A file agent.json names is gone: refused, naming it.
    std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
    let e = Agent::load_or_enroll(dir.path(), &AgentOptions::new("1.4.0"))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&e, AgentError::Missing { file, .. } if file == CERT_FILE),
        "{e:?}"
    );
}
