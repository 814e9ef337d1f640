//! Any bytes as a received frame: parsing and the reply check never panic,
//! and an accepted reply names a slot the settings have.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanner_common::{frame, maps::Settings, reply};

fuzz_target!(|data: &[u8]| {
    // The first 20 bytes choose the scan's key and port layout.
    let Some((head, frame)) = data.split_at_checked(20) else {
        return;
    };
    let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let key = [word(0), word(8)];
    let settings = Settings {
        port_base: u16::from_le_bytes([head[16], head[17]]),
        ports_per_slot: u16::from_le_bytes([head[18], head[19]]),
        _pad: 0,
    };
    if let Some(packet) = frame::parse(frame)
        && let Some(event) = reply::validate(&packet, &settings, |_| Some(key))
    {
        assert!(u32::from(event.slot) < scanner_common::maps::MAX_SCANS);
    }
});
