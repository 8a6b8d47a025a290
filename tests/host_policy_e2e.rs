//! `dockmesh server --host-policy`: the server binary with the compose loader refuses a
//! deploy its host's policy forbids, and a bind mount of its own data directory on `local`
//! with no policy given. Both are refused before the engine is asked anything, so this test
//! needs no Docker engine.

mod support;

use support::server::Server;

#[test]
fn the_server_refuses_what_a_host_policy_forbids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::launch(
        &data,
        &[
            "--host",
            "far=tcp://127.0.0.1:9",
            "--host-policy",
            "far=no-privileged,bind-prefixes=/srv",
        ],
    );
    let privileged = serde_json::json!({
        "name": "priv",
        "compose": "services:\n  app:\n    image: x\n    privileged: true\n    volumes: [\"/etc:/host-etc\"]\n",
    })
    .to_string();
    let (s, v) = server.api("POST", "/api/v1/stacks", Some(&privileged));
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.api(
        "POST",
        "/api/v1/stacks/priv/deploy",
        Some(r#"{"host": "far"}"#),
    );
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["code"], "host_policy", "{v}");
    let error = v["error"].as_str().unwrap();
    for part in [
        "the host policy of far refuses this stack",
        "service `app`: `privileged`",
        "service `app`: `volumes`: bind mount of /etc is outside the allowed prefixes (/srv)",
    ] {
        assert!(error.contains(part), "{error} names {part}");
    }

    // On `local`, the data directory (or anything in or above it) is never mounted.
    let real = data.canonicalize().unwrap();
    for source in [
        real.join("audit.key").display().to_string(),
        real.parent().unwrap().display().to_string(),
    ] {
        let name = format!("dd{}", source.len());
        let body = serde_json::json!({
            "name": name,
            "compose": format!("services:\n  app:\n    image: x\n    volumes: [\"{source}:/x\"]\n"),
        })
        .to_string();
        let (s, v) = server.api("POST", "/api/v1/stacks", Some(&body));
        assert_eq!(s, 201, "{v}");
        let (s, v) = server.api(
            "POST",
            &format!("/api/v1/stacks/{name}/deploy"),
            Some(r#"{"host": "local"}"#),
        );
        assert_eq!(s, 403, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("exposes the server's data directory"),
            "{v}"
        );
    }
}
