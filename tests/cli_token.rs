//! `dockmesh token create --scope` and `token ls`, run as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

fn dockmesh(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockmesh"))
        .args(args)
        .current_dir(cwd)
        .env_remove("DOCKMESH_DATA_DIR")
        .env_remove("DOCKMESH_DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tokens_are_made_with_a_scope_and_listed_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    // The default stays `admin`, as before scopes existed.
    let out = dockmesh(
        &["token", "create", "--name", "boss", "--data-dir", data],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).trim().starts_with("dmt_"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("of scope `admin`"),
        "{}",
        stderr(&out)
    );

    for scope in ["read", "operate"] {
        let out = dockmesh(
            &[
                "token",
                "create",
                "--name",
                scope,
                "--scope",
                scope,
                "--json",
                "--data-dir",
                data,
            ],
            dir.path(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["scope"], scope, "{v}");
        assert_eq!(v["name"], scope, "{v}");
        assert!(v["token"].as_str().unwrap().starts_with("dmt_"), "{v}");
    }

    // A scope that does not exist is refused by name, and nothing is made.
    let out = dockmesh(
        &[
            "token",
            "create",
            "--name",
            "x",
            "--scope",
            "root",
            "--data-dir",
            data,
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("\"root\" is not a token scope (read, operate or admin)"),
        "{}",
        stderr(&out)
    );

    let out = dockmesh(&["token", "ls", "--json", "--data-dir", data], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let scopes: Vec<(String, String)> = list
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["scope"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        scopes,
        [
            ("boss".to_owned(), "admin".to_owned()),
            ("read".to_owned(), "read".to_owned()),
            ("operate".to_owned(), "operate".to_owned()),
        ]
    );
    let out = dockmesh(&["token", "ls", "--data-dir", data], dir.path());
    let text = stdout(&out);
    assert!(text.contains("operate\toperate\t"), "{text}");
}
