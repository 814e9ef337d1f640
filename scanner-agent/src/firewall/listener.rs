//! The optional drop-in listener: only the firewall families, on
//! `/metrics`, on their own address (iptables_exporter listened on :9455),
//! so existing scrape configs keep working unchanged.

use std::{net::SocketAddr, sync::Arc, thread};

use axum::{Router, http::header, routing::get};
use prometheus_client::registry::Registry;

use super::{FirewallCollector, FirewallConfig, FirewallError};
use crate::metrics::encode_text;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` now (so a taken port fails the start) and serves from a thread.
pub(super) fn spawn(addr: SocketAddr, config: &FirewallConfig) -> Result<(), FirewallError> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|source| FirewallError::Listen { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| FirewallError::Listen { addr, source })?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(FirewallCollector::new(config)));
    let registry = Arc::new(registry);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FirewallError::Runtime)?;
    thread::Builder::new()
        .name("firewall-listener".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(%addr, "firewall listener: {e}");
                        return;
                    }
                };
                tracing::info!(%addr, "serving the firewall counters on /metrics");
                let app = Router::new().route(
                    "/metrics",
                    get(move || {
                        let registry = Arc::clone(&registry);
                        async move {
                            (
                                [(header::CONTENT_TYPE, OPENMETRICS)],
                                encode_text(&registry),
                            )
                        }
                    }),
                );
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(%addr, "firewall listener stopped: {e}");
                }
            });
        })
        .map_err(FirewallError::Runtime)?;
    Ok(())
}
