//! The HTTP endpoints (axum): `/metrics` and `/healthz`.

use std::{
    net::{Ipv6Addr, SocketAddr},
    sync::{Arc, PoisonError, atomic::Ordering},
    time::UNIX_EPOCH,
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    middleware,
    response::IntoResponse,
    routing::get,
};

use super::{DaemonError, Shared, auth, query};
use crate::metrics::encode_text;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) fn serve(shared: Arc<Shared>) -> Result<(), DaemonError> {
    let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, shared.config.server.port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        tracing::info!(%addr, "serving /metrics and /healthz");
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/query", get(query::enqueue))
            .route("/query/{id}", get(query::status))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&shared),
                auth::require,
            ))
            .with_state(shared);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .map_err(DaemonError::Runtime)
    })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        encode_text(&shared.registry),
    )
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let last = *shared
        .last_completed
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let full = shared.queue_full();
    let body = serde_json::json!({
        "status": if full { "task queue is full" } else { "ok" },
        "queue_size": shared.queued.load(Ordering::Relaxed),
        "xdp": { "attached": shared.mode.is_some(), "mode": shared.mode.map(|m| m.to_string()) },
        "last_scan_timestamp_seconds": last.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
    });
    let status = if full {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body))
}
