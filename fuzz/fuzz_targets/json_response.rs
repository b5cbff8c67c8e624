//! `cargo fuzz run json_response`: see ../../tests/fuzz/targets.rs.
#![no_main]

#[path = "../../tests/fuzz/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::json_response(data));
