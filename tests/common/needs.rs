//! What a test needs from outside the build: root, a program on PATH, a file the OS provides.
//!
//! Such tests are `#[ignore = "needs …"]`, so a plain `cargo test` lists them as ignored (with
//! the reason) instead of passing them untried; `.ci/run` runs them with `--include-ignored`,
//! and there a missing part must fail loudly. [`require`] is the first line of each such test:
//! it panics with one message naming everything missing and where it comes from.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

/// One outside part a test uses.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Effective uid 0 (mounts, loop devices, namespaces, file owners in an image).
    Root,
    /// A program on PATH, and the Debian package that ships it.
    Program(&'static str, &'static str),
    /// A file the system provides, and the Debian package that ships it.
    File(&'static str, &'static str),
}

impl Need {
    /// Why it is missing, or `None` when it is there.
    fn missing(self) -> Option<String> {
        match self {
            Need::Root => {
                // /proc/self belongs to the process's effective user.
                let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
                (uid.ok() != Some(0)).then(|| "root".to_owned())
            }
            Need::Program(name, package) => (!on_path(name)).then(|| format!("`{name}` (Debian package {package})")),
            Need::File(path, package) => {
                (!Path::new(path).exists()).then(|| format!("{path} (Debian package {package})"))
            }
        }
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// Panics, naming each missing part, unless everything in `needs` is there.
pub fn require(needs: &[Need]) {
    let missing: Vec<String> = needs.iter().filter_map(|n| n.missing()).collect();
    assert!(
        missing.is_empty(),
        "this test needs {} (`.ci/run` installs the packages and runs as root)",
        missing.join(", ")
    );
}

/// util-linux's namespace tools, used by the tests that mount in a private namespace.
pub const UNSHARE: Need = Need::Program("unshare", "util-linux");
/// Enters such a namespace from outside.
pub const NSENTER: Need = Need::Program("nsenter", "util-linux");
