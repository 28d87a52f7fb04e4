//! Every input kept under `fuzz/regressions/<target>/` (hand-written seeds and any input a
//! fuzzer once crashed on) through the same check the fuzz target makes (`fuzz/checks.rs`),
//! so plain `cargo test` keeps fixed bugs fixed without nightly or cargo-fuzz.

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[allow(unreachable_pub)]
#[path = "../fuzz/checks.rs"]
mod checks;

/// Runs `check` on every file of the target's directory; at least one must get past the
/// library's refusals into the property checks, or the seeds test nothing.
fn run(target: &str, check: fn(&[u8]) -> bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut checked = 0;
    for path in &files {
        let data = std::fs::read(path).unwrap();
        match std::panic::catch_unwind(|| check(&data)) {
            Ok(true) => checked += 1,
            Ok(false) => {}
            Err(_) => panic!("{} fails the {target} check (message above)", path.display()),
        }
    }
    assert!(checked > 0, "none of the {} inputs in {} reached the {target} checks", files.len(), dir.display());
}

#[test]
fn form() {
    run("form", checks::form);
}

#[test]
fn signature() {
    run("signature", checks::signature);
}

#[test]
fn media_json() {
    run("media_json", checks::media_json);
}

#[test]
fn twiml() {
    run("twiml", checks::twiml);
}

#[test]
fn config() {
    run("config", checks::config);
}
