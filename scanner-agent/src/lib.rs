//! scanner-agent: an XDP-assisted port scanner for data-transfer nodes.
//!
//! Data flow of a scan: [`targets`] (what to scan) -> [`probes`] (order and
//! wire format) -> [`transmit`] (raw sockets, pacing) -> [`capture`] (the
//! XDP program and its ring buffer) -> [`results`] (port states, output),
//! driven by [`engine`] (retries, timeouts, rate) and [`scan`] (one scan
//! from start to end).

pub mod capture;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod exposition;
pub mod firewall;
pub mod guard;
pub mod metrics;
pub mod passthrough;
pub mod privileges;
pub mod probes;
pub mod results;
pub mod route;
pub mod scan;
pub mod schedule;
pub mod targets;
pub mod tls;
pub mod transmit;
