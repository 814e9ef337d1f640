//! The shared testbed (`xtask/testbed`: namespaces, veth pairs, listeners,
//! node_exporter, the daemon launcher), with this crate's agent binary.

#[allow(unused_imports, reason = "not every test file uses the testbed")]
pub(crate) use testbed::*;

/// The `scanner-agent` binary these tests run.
#[allow(dead_code, reason = "not every test file runs the binary")]
pub(crate) fn agent() -> &'static str {
    env!("CARGO_BIN_EXE_scanner-agent")
}

/// Helpers of the firewall tests (`firewall_counters`, `firewall_legacy`).
#[allow(dead_code, reason = "only the firewall tests use them")]
pub(crate) mod firewall;
