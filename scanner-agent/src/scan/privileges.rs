//! Checks for the capabilities a command needs, so a missing one is named
//! up front instead of surfacing as an EPERM deep inside a syscall.

use caps::{CapSet, Capability};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "missing capability {name} ({why}); run as root or grant it (see the README's \"Privileges\" section)"
)]
pub struct MissingCapability {
    pub name: &'static str,
    pub why: &'static str,
}

/// What `scan` needs: sending raw packets and attaching an XDP program.
pub fn check_scan() -> Result<(), MissingCapability> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    if !has(Capability::CAP_NET_RAW) {
        return Err(MissingCapability {
            name: "CAP_NET_RAW",
            why: "needed to send probes through a raw socket",
        });
    }
    if !has(Capability::CAP_NET_ADMIN) {
        return Err(MissingCapability {
            name: "CAP_NET_ADMIN",
            why: "needed to attach the XDP program",
        });
    }
    if !has(Capability::CAP_BPF) && !has(Capability::CAP_SYS_ADMIN) {
        return Err(MissingCapability {
            name: "CAP_BPF",
            why: "needed to load the XDP program and its maps",
        });
    }
    if !has(Capability::CAP_PERFMON) && !has(Capability::CAP_SYS_ADMIN) {
        return Err(MissingCapability {
            name: "CAP_PERFMON",
            why: "without it the kernel's verifier refuses the XDP program's pointer arithmetic",
        });
    }
    Ok(())
}
