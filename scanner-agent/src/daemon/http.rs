//! The daemon's HTTP endpoints: `/metrics`, `/healthz`, Prometheus'
//! `/-/healthy` and `/-/ready`, `/query` and the passthrough, each behind its scope, served through [`crate::web`]
//! (listeners, TLS, connection bounds, authentication).

use std::{
    net::{Ipv6Addr, SocketAddr},
    sync::{Arc, PoisonError},
    time::UNIX_EPOCH,
};

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{Path, Request, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{DaemonError, Live, Shared, query, reload};
use crate::{
    config::{Auth, Scope},
    firewall::ListenAddress,
    passthrough::{self, handler::Target},
    web::{
        self, Table, TlsCell,
        auth::{Credentials, Verifier},
        exposition::Encoders,
    },
};

/// The daemon's credentials are those of the configuration in force.
impl Credentials for Shared {
    type Current = Arc<Live>;

    fn current(&self) -> Arc<Live> {
        self.live()
    }

    fn auth(current: &Arc<Live>) -> &Auth {
        &current.config.auth
    }

    fn verifier(&self) -> &Verifier {
        &self.runtime.auth
    }
}

/// The HTTP side's runtime, with SIGHUP watched already.
pub(super) struct Server {
    runtime: tokio::runtime::Runtime,
    hangups: Signal,
}

/// Made first thing in `run`: a SIGHUP sent as soon as the agent shows any
/// sign of life (its guard) then reloads once serving starts, instead of
/// ending the process by default.
pub(super) fn server() -> Result<Server, DaemonError> {
    // Two threads: a slow handshake or handler on one does not hold the other.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let hangups = {
        let _context = runtime.enter();
        signal(SignalKind::hangup())?
    };
    Ok(Server { runtime, hangups })
}

pub(super) fn serve(server: Server, shared: Arc<Shared>) -> Result<(), DaemonError> {
    let Server { runtime, hangups } = server;
    let live = shared.live();
    web::raise_open_files_limit(live.config.server.max_connections.0);
    let tls = web::tls_cell(live.config.server.tls.as_ref())?;
    let main = bind(SocketAddr::from((
        Ipv6Addr::UNSPECIFIED,
        live.config.server.port,
    )))?;
    // iptables_exporter's port, for scrape configs that still point there:
    // the same authentication, TLS and connection bounds as the main port.
    let firewall = match (
        &shared.metrics.firewall_registry,
        live.config.firewall.listen,
    ) {
        (Some(_), Some(ListenAddress(addr))) => Some(bind(addr)?),
        _ => None,
    };
    runtime.block_on(async move {
        tokio::spawn(reload_on_hangup(hangups, Arc::clone(&shared), tls.clone()));
        let encoders = Encoders::new();
        let app = Router::new()
            .merge(web::scoped(
                Scope::Metrics,
                Router::new()
                    .route("/metrics", get(metrics))
                    .route("/healthz", get(healthz))
                    .route("/-/healthy", get(healthy))
                    .route("/-/ready", get(ready)),
            ))
            .merge(web::scoped(
                Scope::Query,
                Router::new()
                    .route("/query", get(query::enqueue))
                    .route("/query/{id}", get(query::status)),
            ))
            .merge(web::scoped(
                Scope::Passthrough,
                Router::new().route(passthrough::ROUTE, get(passthrough)),
            ));
        let table = Table::new();
        let max_connections = |shared: &Arc<Shared>| {
            let limit = Arc::clone(shared);
            Arc::new(move || {
                usize::try_from(limit.live().config.server.max_connections.0).unwrap_or(usize::MAX)
            }) as Arc<dyn Fn() -> usize + Send + Sync>
        };
        if let Some(listener) = firewall {
            let app = web::scoped(
                Scope::Metrics,
                Router::new().route("/metrics", get(firewall_metrics)),
            )
            .layer(Extension(encoders.clone()));
            let serving =
                web::serving(app, &shared, tls.as_ref(), &table, max_connections(&shared));
            tokio::spawn(web::run(listener, serving));
        }
        let app = app.layer(Extension(encoders));
        let serving = web::serving(app, &shared, tls.as_ref(), &table, max_connections(&shared));
        web::run(main, serving).await?;
        Ok(())
    })
}

/// A listening socket on `addr`, or the error that names it.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, DaemonError> {
    web::bind(addr).map_err(|source| DaemonError::Listen { addr, source })
}

/// Reloads the configuration on every SIGHUP, and with it the TLS
/// certificate (so renewed certificates need no restart).
async fn reload_on_hangup(mut hangups: Signal, shared: Arc<Shared>, tls: Option<TlsCell>) {
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
                Ok(config) => *tls.write().unwrap_or_else(PoisonError::into_inner) = config,
                Err(e) => tracing::error!("TLS certificate not reloaded: {e}"),
            }
        }
    }
}

async fn metrics(
    State(shared): State<Arc<Shared>>,
    Extension(encoders): Extension<Encoders>,
    headers: HeaderMap,
) -> Response {
    if let Some(c) = shared.capture() {
        shared.metrics.link(c.hub.link());
    }
    encoders
        .respond(&shared, |s| Some(&s.metrics.registry), headers)
        .await
}

async fn firewall_metrics(
    State(shared): State<Arc<Shared>>,
    Extension(encoders): Extension<Encoders>,
    headers: HeaderMap,
) -> Response {
    encoders
        .respond(&shared, |s| s.metrics.firewall_registry.as_ref(), headers)
        .await
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let last = *shared
        .state
        .last_completed
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let full = shared.runtime.work.is_full();
    let capture_ok = shared.capture_ok();
    let capture = shared.capture();
    let mode = capture.as_ref().map(|c| c.hub.mode().to_string());
    let yielding = capture.is_some_and(|c| c.hub.link().yielding());
    let stopped = shared.runtime.vitals.stopped();
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
        "queue_size": shared.runtime.work.len(),
        "xdp": { "attached": mode.is_some(), "healthy": capture_ok, "mode": mode },
        "yielding": yielding,
        "last_scan_timestamp_seconds": last.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
    });
    let status = if full || !capture_ok || !stopped.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body))
}

/// Prometheus' liveness convention: the process answers, so it is alive.
async fn healthy() -> &'static str {
    "scanner-agent is Healthy.\n"
}

/// Prometheus' readiness convention: the configuration is loaded (it is,
/// once anything is served) and, when there is something to scan, the XDP
/// program is attached and its reader alive.
async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if shared.capture_ok() {
        (StatusCode::OK, "scanner-agent is Ready.\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "scanner-agent is not ready: the XDP program is not attached.\n",
        )
    }
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
        .runtime
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
