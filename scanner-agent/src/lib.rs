//! scanner-agent: an XDP-assisted port scanner for data-transfer nodes.
//!
//! [`scan`] is the scan path, in data-flow order: targets -> probes ->
//! transmit -> capture -> results, driven by the engine. [`config`] reads
//! `config.yaml`; [`daemon`] is `scanner-agent run` (scheduled tasks,
//! workers, metrics, state), served through [`web`] (listeners, TLS,
//! content negotiation, credentials). The daemon also serves the
//! [`firewall`] counters, the [`host`]'s own view (what listens on which
//! of its addresses) and the node_exporter [`passthrough`], and installs
//! the port [`guard`].

pub mod scan;

pub mod config;
pub mod daemon;
pub mod web;

pub mod firewall;
pub mod guard;
pub mod host;
pub mod passthrough;
