//! The compose loader on arbitrary `compose.yaml` and `.env` text (interpolation, YAML, the
//! schema, `extends` of a file that is the input again, profiles): it never panics, never
//! overflows the stack (interpolation nesting and `extends` chains are bounded), and either
//! resolves a stack or returns an error; an error of several problems lists at least two.
//!
//! `cargo +nightly fuzz run -s none -a compose_load`
#![no_main]

use dockmesh_core::StackFiles;
use dockmesh_docker::compose;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first NUL splits the input into the compose file and the `.env`.
    let text = String::from_utf8_lossy(data);
    let (compose, env) = match text.split_once('\0') {
        Some((c, e)) => (c.to_owned(), Some(e.to_owned())),
        None => (text.into_owned(), None),
    };
    let files = StackFiles {
        name: "fuzz".into(),
        compose,
        env,
    };
    // Every other file (env_file, extends' file) reads as the compose file itself.
    let again = files.compose.clone();
    let profiles = ["a".to_owned(), "*".to_owned()];
    let selection = match data.first() {
        Some(b) if b % 3 == 0 => Some(&profiles[..1]),
        Some(b) if b % 3 == 1 => Some(&profiles[1..]),
        _ => None,
    };
    let loaded = compose::load_with_profiles(
        &files,
        std::path::Path::new("/nonexistent"),
        &|_| Ok(again.clone()),
        selection,
    );
    if let Err(compose::ComposeError::Several { problems }) = &loaded {
        assert!(problems.len() >= 2, "{problems:?}");
    }
    if let Some(env) = &files.env {
        let _ = compose::interpolate::interpolate(env, &Default::default());
    }
});
