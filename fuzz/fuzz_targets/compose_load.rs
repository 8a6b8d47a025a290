//! The compose loader on arbitrary `compose.yaml` and `.env` text: it never panics, never
//! overflows the stack (interpolation nesting is bounded), and either resolves a stack or
//! returns an error.
//!
//! `cargo fuzz run -s none compose_load` (stable toolchain).
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
    let _ = compose::load(&files, std::path::Path::new("/nonexistent"), &|_| {
        Err(std::io::Error::other("no files while fuzzing"))
    });
    if let Some(env) = &files.env {
        let _ = compose::interpolate::interpolate(env, &Default::default());
    }
});
