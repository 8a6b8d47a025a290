//! The volume stream checker on arbitrary bytes, pushed in arbitrary chunks.
//!
//! Properties: it never panics; the verdict and the output do not depend on how the input is
//! chunked; an accepted stream's output is accepted again (in the engine-facing carrier form)
//! with the same manifest, and an independent tar reader sees in it only regular files,
//! directories, links and FIFOs named under `v/`, without `..`, each under a directory that came
//! earlier (never under a link: symbolic links are data and may point anywhere), and hard links
//! only to paths under `v/`.
//!
//! `cargo +nightly fuzz run -s none -a tar_checker`
#![no_main]

use dockmesh_docker::volume::Layout;
use dockmesh_fuzz::check_tar as run;
use libfuzzer_sys::fuzz_target;

fn check_output_is_safe(output: &[u8]) {
    let mut archive = tar::Archive::new(output);
    let mut dirs: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for entry in archive.entries().expect("the output is a tar stream") {
        let entry = entry.expect("every output entry is readable");
        let name = entry.path_bytes().into_owned();
        assert!(name.starts_with(b"v/"), "{name:?}");
        assert!(!name.split(|&b| b == b'/').any(|c| c == b".."), "{name:?}");
        let typ = entry.header().entry_type();
        assert!(
            typ.is_file()
                || typ.is_dir()
                || typ.is_symlink()
                || typ.is_hard_link()
                || typ.is_fifo(),
            "{typ:?}"
        );
        // Nothing is written through a link: every parent is a directory that came earlier.
        let trimmed = name.strip_suffix(b"/").unwrap_or(&name).to_vec();
        if trimmed != b"v" {
            let cut = trimmed.iter().rposition(|&b| b == b'/').expect("under v/");
            assert!(dirs.contains(&trimmed[..cut]), "{name:?}");
        }
        if typ.is_dir() {
            dirs.insert(trimmed);
        }
        if typ.is_hard_link() {
            let link = entry.link_name_bytes().expect("a hard link has a target");
            assert!(link.starts_with(b"v/"), "{link:?}");
            assert!(!link.split(|&b| b == b'/').any(|c| c == b".."), "{link:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so chunk boundaries are explored too.
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(selector) * 7 + 1;
    let whole = run(input, Layout::Transfer, Some(Layout::Carrier), input.len());
    let split = run(input, Layout::Transfer, Some(Layout::Carrier), chunk);
    assert_eq!(whole.result, split.result);
    if let Ok(manifest) = whole.result {
        assert_eq!(whole.output, split.output);
        check_output_is_safe(&whole.output);
        let again = run(&whole.output, Layout::Carrier, None, chunk);
        assert_eq!(again.result, Ok(manifest));
    }
});
