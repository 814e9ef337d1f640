//! Any text as a port specification and as target specifications (names
//! are never resolved here): an error or a set, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanner_agent::scan::targets::{PortList, TargetSet, TargetSpec, check_syntax};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = PortList::parse(&text);
    let specs: Vec<String> = text.split('\n').map(str::to_owned).collect();
    for spec in &specs {
        let _ = check_syntax(spec);
    }
    let mut spec = TargetSpec::new(specs);
    spec.resolve_dns = false;
    if let Ok(set) = TargetSet::build(&spec) {
        let _ = set.len();
    }
});
