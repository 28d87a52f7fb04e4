//! Fuzzes callbox through `callbox_fuzz::signature`; see fuzz/checks.rs for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    callbox_fuzz::signature(data);
});
