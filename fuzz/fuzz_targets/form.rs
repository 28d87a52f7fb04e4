//! Fuzzes callbox through `callbox_fuzz::form`; see fuzz/checks.rs for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    callbox_fuzz::form(data);
});
