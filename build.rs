//! Embeds the build time, the earliest moment the box can trust its own clock to be at.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    // Reproducible builds pin the time; otherwise the moment of this (first) build. Rerunning
    // only when this file changes keeps the stamp a lower bound without rebuilding on every edit.
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    println!("cargo:rustc-env=CALLBOX_BUILD_UNIX_SECS={secs}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}
