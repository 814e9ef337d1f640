//! What the daemon remembers of a task between two scans of it: what
//! `port_state_changes_total`, the closing of ports and the exposure
//! verdicts are computed from, and what the state file keeps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use crate::scan::probes::Protocol;

/// An open port, as the metrics key it.
pub(crate) type OpenPort = (IpAddr, Protocol, u16);

/// What is remembered of a task between scans.
#[derive(Debug, Default)]
pub(crate) struct TaskState {
    pub(super) open: BTreeSet<OpenPort>,
    /// Ports that closed in the last scan: their series show 0 until the
    /// next completed scan, then are dropped so series do not pile up.
    pub(super) closed: BTreeSet<OpenPort>,
    pub(super) last_scan: Option<SystemTime>,
    /// Hosts up and down in the last scheduled scan.
    pub(super) hosts: Option<(u64, u64)>,
    /// How long the last scheduled scan took.
    pub(super) took: Option<Duration>,
    /// `open_port_status` series this task exports (the cap may leave some
    /// of its ports out).
    pub(super) exported: usize,
    /// Hosts that answered the last scheduled scan: where a required port
    /// that is not open counts as missing.
    pub(super) up: BTreeSet<IpAddr>,
    /// Hosts that answered on (nearly) every port, with how many: reported
    /// as `host_answers_every_port`, not port by port.
    pub(super) every_port: BTreeMap<IpAddr, usize>,
}
