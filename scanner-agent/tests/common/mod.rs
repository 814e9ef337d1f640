//! The shared testbed (`xtask/testbed`: namespaces, veth pairs, listeners,
//! node_exporter, the daemon launcher), with this crate's agent binary.

#[allow(unused_imports, reason = "not every test file uses the testbed")]
pub(crate) use testbed::*;

/// The `scanner-agent` binary these tests run.
#[allow(dead_code, reason = "not every test file runs the binary")]
pub(crate) fn agent() -> &'static str {
    env!("CARGO_BIN_EXE_scanner-agent")
}
