//! The streaming masker against the whole-buffer reference, on fuzzer-chosen
//! patterns, chunkings and input. The body is `ccci::redact::fuzz::check_stream`, which
//! `cargo test` also runs (smoke loop and proptest); see docs/redaction.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ccci::redact::fuzz::check_stream(data);
});
