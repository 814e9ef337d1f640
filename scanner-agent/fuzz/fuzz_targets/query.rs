//! Any query string for `/query`: a parameter error or a request, never a
//! panic, and never work that grows with more than the string's length.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scanner_agent::daemon::parse_query(&String::from_utf8_lossy(data));
});
