//! The API keeps its contract, checked from outside by tools that know only the OpenAPI
//! document, against the real `dockmesh server` with the two test engines as hosts:
//!
//! 1. the document is valid OpenAPI (`openapi-spec-validator`);
//! 2. schemathesis, every check on (`--checks all`), its four phases including the stateful
//!    one that follows the document's links (register → read → deploy → migrate …), with a
//!    fixed seed and a bounded number of examples, finds nothing;
//! 3. a Python client generated from the document (`openapi-python-client`) lists the hosts
//!    and registers a stack on the first try, so a document that drifts from the server
//!    breaks the build.
//!
//! The tools come from `scripts/contract-tools.sh` (a virtual environment, by default under
//! `target/contract-venv`, or `DOCKMESH_CONTRACT_VENV`). Without them, or without the engines,
//! the test skips, except under `DOCKMESH_REQUIRE_SERVICES=1`.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::server::Server;
use support::*;

/// The fixed seed and budget of the schemathesis run (about a minute here).
const SEED: &str = "42";
const EXAMPLES: &str = "30";

/// The virtual environment with the tools, or `None` (with the reason printed).
fn tools() -> Option<PathBuf> {
    let venv = std::env::var_os("DOCKMESH_CONTRACT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/contract-venv"));
    let missing: Vec<&str> = [
        "schemathesis",
        "openapi-spec-validator",
        "openapi-python-client",
    ]
    .into_iter()
    .filter(|t| !venv.join("bin").join(t).exists())
    .collect();
    if missing.is_empty() {
        return Some(venv);
    }
    let why = format!(
        "{} missing in {} (run scripts/contract-tools.sh)",
        missing.join(", "),
        venv.display()
    );
    assert!(!required(), "{why}, and DOCKMESH_REQUIRE_SERVICES=1");
    eprintln!("skipping: {why}");
    None
}

/// Run a tool of the environment; print what it said.
fn run(venv: &Path, tool: &str, args: &[&str], cwd: &Path) -> Output {
    let bin = venv.join("bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(bin.join(tool))
        .args(args)
        .current_dir(cwd)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    eprintln!(
        "$ {tool} {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_api_keeps_its_openapi_contract() {
    let Some((_, b)) = engines() else { return };
    let Some(venv) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Schemathesis presents wrong tokens to every operation on purpose (its `ignored_auth`
    // check); the address it sends from may present that many without being slowed.
    let server = Server::start(
        &dir.path().join("data"),
        &b,
        &["--failed-token-limit", "100000"],
    );
    let work = dir.path().join("contract");
    std::fs::create_dir_all(&work).unwrap();

    // 1. The document is valid OpenAPI.
    let (status, doc) = server.api("GET", "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    let doc_path = work.join("openapi.json");
    std::fs::write(&doc_path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let doc_arg = doc_path.to_str().unwrap();
    let out = run(&venv, "openapi-spec-validator", &[doc_arg], &work);
    assert!(out.status.success(), "the document is not valid OpenAPI");

    // 2. Schemathesis finds nothing, every check and phase on.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract/schemathesis.toml");
    let auth = format!("Authorization: Bearer {}", server.token);
    let out = run(
        &venv,
        "schemathesis",
        &[
            "--config-file",
            config.to_str().unwrap(),
            "run",
            doc_arg,
            "--url",
            &server.url,
            "-H",
            &auth,
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--seed",
            SEED,
            "--max-examples",
            EXAMPLES,
            "--workers",
            "1",
            "--output-sanitize",
            "true",
        ],
        &work,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found the server breaking its contract (see above)"
    );
    assert!(
        said.contains("Stateful") && !said.contains("ST1") && !said.contains("ST2"),
        "every phase ran and reported no failure"
    );

    // 3. A client generated from the document works on the first try.
    let client_dir = work.join("dockmesh_client");
    let out = run(
        &venv,
        "openapi-python-client",
        &[
            "generate",
            "--path",
            doc_arg,
            "--output-path",
            client_dir.to_str().unwrap(),
            "--meta",
            "none",
        ],
        &work,
    );
    assert!(out.status.success(), "the client was not generated");
    let script = r#"
import json, os
from dockmesh_client import AuthenticatedClient
from dockmesh_client.api.hosts import list_hosts
from dockmesh_client.api.stacks import create_stack, get_stack
from dockmesh_client.models import CreateStack, HostView, StackView, StackDetail

client = AuthenticatedClient(base_url=os.environ["URL"], token=os.environ["TOKEN"])
hosts = list_hosts.sync(client=client)
assert isinstance(hosts, list) and all(isinstance(h, HostView) for h in hosts), hosts
made = create_stack.sync(client=client, body=CreateStack(name="from-client", compose="services: {}\n"))
assert isinstance(made, StackView), made
read = get_stack.sync(client=client, name="from-client")
assert isinstance(read, StackDetail), read
print(json.dumps({"hosts": sorted(h.id for h in hosts), "stack": read.name}))
"#;
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .current_dir(&work)
        .env("URL", &server.url)
        .env("TOKEN", &server.token)
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the generated client's calls failed");
    let answer: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(answer["hosts"], serde_json::json!(["b", "local"]));
    assert_eq!(answer["stack"], "from-client");

    // What the run registered and deployed is removed again (the engines are shared).
    let (_, stacks) = server.api("GET", "/api/v1/stacks", None);
    for s in stacks.as_array().unwrap() {
        if !s["host"].is_null() {
            let name = s["name"].as_str().unwrap();
            server.api(
                "DELETE",
                &format!("/api/v1/stacks/{name}?volumes=true"),
                None,
            );
        }
    }
}
