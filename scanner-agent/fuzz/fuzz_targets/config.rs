//! Any text as `config.yaml`, and as an exporter-toolkit web config: an
//! error or a configuration, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanner_agent::config::{Config, parse_web_config};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Config::parse(&text);
    let _ = parse_web_config(&text);
});
