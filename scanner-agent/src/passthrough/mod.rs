//! `GET /api/{sitename}/monitoring/prometheus/passthrough/{hostname}`:
//! SiteRM's node_exporter passthrough, so monitoring never reaches port
//! 9100 itself. Data flow: [`config`] (the host table, URLs normalised by
//! [`normalise`]) -> [`handler`] (checks, the upstream fetch) -> [`body`]
//! (streamed with a size cap and a deadline), counted in [`metrics`].

pub mod body;
pub mod config;
pub mod handler;
pub mod metrics;
pub mod normalise;

pub use self::{
    config::{General, Hosts, Settings},
    handler::{Proxy, ROUTE},
};

#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("the body exceeded passthrough.max_body_bytes ({0} bytes)")]
    BodyTooLarge(u64),
    #[error("the body did not arrive within passthrough.timeout")]
    BodyTimeout,
    #[error("reading the body from node_exporter: {0}")]
    Body(hyper::Error),
}
