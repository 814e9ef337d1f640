//! The HTTP endpoints (axum, over TLS when configured): `/metrics`,
//! `/healthz` and `/query`, all behind the same authentication.

use std::{
    net::{Ipv6Addr, SocketAddr},
    sync::{Arc, PoisonError},
    time::UNIX_EPOCH,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Request, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};

use axum_server::tls_rustls::RustlsConfig;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{DaemonError, Shared, auth, query, reload};
use crate::{
    exposition,
    firewall::ListenAddress,
    passthrough::{self, handler::Target},
    tls::TlsSettings,
};

pub(super) fn serve(shared: Arc<Shared>) -> Result<(), DaemonError> {
    let live = shared.live();
    let tls = live
        .config
        .server
        .tls
        .as_ref()
        .map(TlsSettings::server_config)
        .transpose()?
        .map(RustlsConfig::from_config);
    let main = bind(SocketAddr::from((
        Ipv6Addr::UNSPECIFIED,
        live.config.server.port,
    )))?;
    // iptables_exporter's port, for scrape configs that still point there:
    // the same authentication and TLS as the main port.
    let firewall = match (&shared.firewall_registry, live.config.firewall.listen) {
        (Some(_), Some(ListenAddress(addr))) => Some(bind(addr)?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let hangups = signal(SignalKind::hangup())?;
        tokio::spawn(reload_on_hangup(hangups, Arc::clone(&shared), tls.clone()));
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/query", get(query::enqueue))
            .route("/query/{id}", get(query::status))
            .route(passthrough::ROUTE, get(passthrough));
        if let Some(listener) = firewall {
            let app = Router::new().route("/metrics", get(firewall_metrics));
            tokio::spawn(run(listener, app, Arc::clone(&shared), tls.clone()));
        }
        run(main, app, shared, tls).await
    })
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, DaemonError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| DaemonError::Listen { addr, source })
}

/// Serves `app` behind the authentication, over TLS when configured.
async fn run(
    listener: std::net::TcpListener,
    app: Router<Arc<Shared>>,
    shared: Arc<Shared>,
    tls: Option<RustlsConfig>,
) -> Result<(), DaemonError> {
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "serving HTTP");
    let app = app
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            auth::require,
        ))
        .with_state(shared)
        .into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        Some(tls) => {
            axum_server::from_tcp_rustls(listener, tls)?
                .serve(app)
                .await
        }
        None => axum_server::from_tcp(listener)?.serve(app).await,
    };
    if let Err(e) = &served {
        tracing::error!(%addr, "HTTP server stopped: {e}");
    }
    Ok(served?)
}

/// Reloads the configuration on every SIGHUP, and with it the TLS
/// certificate (so renewed certificates need no restart).
async fn reload_on_hangup(mut hangups: Signal, shared: Arc<Shared>, tls: Option<RustlsConfig>) {
    while hangups.recv().await.is_some() {
        let worker = Arc::clone(&shared);
        let outcome = tokio::task::spawn_blocking(move || reload::reload(&worker)).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("configuration not reloaded, the running one stays: {e}");
                continue;
            }
            Err(e) => {
                tracing::error!("configuration reload failed: {e}");
                continue;
            }
        }
        let live = shared.live();
        if let (Some(tls), Some(settings)) = (&tls, &live.config.server.tls) {
            // Checked by the reload a moment ago; a failure here is a file changed since.
            match settings.server_config() {
                Ok(config) => tls.reload_from_config(config),
                Err(e) => tracing::error!("TLS certificate not reloaded: {e}"),
            }
        }
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let (content_type, body) = exposition::encode(&shared.registry, &headers);
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn firewall_metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match &shared.firewall_registry {
        Some(registry) => {
            let (content_type, body) = exposition::encode(registry, &headers);
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let last = *shared
        .last_completed
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let full = shared.work.is_full();
    let capture_ok = shared.capture_ok();
    let mode = shared.capture().map(|c| c.hub.mode().to_string());
    let stopped = shared.vitals.stopped();
    let status = if !stopped.is_empty() {
        format!("a daemon thread stopped: {}", stopped.join(", "))
    } else if full {
        "task queue is full".into()
    } else if !capture_ok {
        "capture path is down: replies cannot be received".into()
    } else {
        "ok".into()
    };
    let body = serde_json::json!({
        "status": status,
        "queue_size": shared.work.len(),
        "xdp": { "attached": mode.is_some(), "healthy": capture_ok, "mode": mode },
        "last_scan_timestamp_seconds": last.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
    });
    let status = if full || !capture_ok || !stopped.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body))
}

async fn passthrough(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request<Body>,
) -> Response {
    let live = shared.live();
    let target = path
        .as_ref()
        .ok()
        .map(|Path((sitename, hostname))| Target { sitename, hostname });
    shared
        .passthrough
        .serve(
            &live.config.auth,
            &live.passthrough,
            &live.config.passthrough,
            target,
            request,
        )
        .await
}
