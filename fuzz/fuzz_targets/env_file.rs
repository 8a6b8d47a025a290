//! The `.env` parser (`parse_env_file`) on arbitrary text, over a base of variables taken from
//! the input too.
//!
//! Properties: it never panics; an error names a line of the file (1 ≤ line ≤ its line count)
//! and the file's name; every variable it returns reads back through interpolation
//! (`${KEY}` gives the value) and through a single-quoted line (`KEY='value'` gives the value
//! again, when the value holds no quote or line break).
//!
//! `cargo +nightly fuzz run -s none -a env_file`
#![no_main]

use dockmesh_docker::compose::interpolate::{Vars, interpolate, parse_env_file};
use libfuzzer_sys::fuzz_target;

fn plain_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Before the first NUL: `KEY=VALUE` pairs of the base (what a stack's `.env` defined before
    // an `env_file`), one a line, taken literally.
    let (base_text, file) = match text.split_once('\0') {
        Some((b, f)) => (b, f),
        None => ("", &*text),
    };
    let base: Vars = base_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match parse_env_file(file, "fuzz.env", &base) {
        Err(e) => {
            assert_eq!(e.file, "fuzz.env");
            assert!(e.line >= 1 && e.line <= file.lines().count(), "{e:?}");
            assert!(!e.reason.is_empty());
        }
        Ok(vars) => {
            let mut scope = base.clone();
            scope.extend(vars.clone());
            for (key, value) in &vars {
                assert!(!key.is_empty());
                if plain_name(key) {
                    assert_eq!(
                        interpolate(&format!("${{{key}}}"), &scope).as_ref(),
                        Ok(value),
                        "{key}"
                    );
                }
                // (A key may start with `#` after `export `; alone on its line it is a comment.)
                if !value.contains(['\'', '\n', '\r']) && !key.starts_with('#') {
                    let again = parse_env_file(&format!("{key}='{value}'\n"), "again", &base)
                        .expect("a single-quoted line of a parsed variable parses");
                    assert_eq!(again.get(key), Some(value), "{key}");
                }
            }
        }
    }
});
