//! The HTTP endpoints (axum, over TLS when configured): `/metrics`,
//! `/healthz`, `/query` and the passthrough, all behind the same
//! authentication, each route behind its scope, every listener within the
//! bounds of [`connections`].

mod connections;

use std::{
    net::{Ipv6Addr, SocketAddr},
    sync::{Arc, PoisonError, RwLock},
    time::UNIX_EPOCH,
};

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{Path, Request, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;

use self::connections::{Serving, Table};
use super::{DaemonError, Shared, auth, query, reload};
use crate::{
    config::Scope,
    exposition,
    firewall::ListenAddress,
    passthrough::{self, handler::Target},
    tls::TlsSettings,
};

/// The TLS configuration in use, replaced when SIGHUP renews the certificate.
type TlsCell = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Expositions encoded at once: each runs on a blocking thread (the
/// firewall counters read netlink), so a burst of scrapes waits its turn
/// there instead of holding the threads that serve requests.
#[derive(Clone)]
struct Encoders(Arc<Semaphore>);

pub(super) fn serve(shared: Arc<Shared>) -> Result<(), DaemonError> {
    let live = shared.live();
    connections::raise_open_files_limit(live.config.server.max_connections.0);
    let tls: Option<TlsCell> = live
        .config
        .server
        .tls
        .as_ref()
        .map(TlsSettings::server_config)
        .transpose()?
        .map(|c| Arc::new(RwLock::new(c)));
    let main = bind(SocketAddr::from((
        Ipv6Addr::UNSPECIFIED,
        live.config.server.port,
    )))?;
    // iptables_exporter's port, for scrape configs that still point there:
    // the same authentication, TLS and connection bounds as the main port.
    let firewall = match (&shared.firewall_registry, live.config.firewall.listen) {
        (Some(_), Some(ListenAddress(addr))) => Some(bind(addr)?),
        _ => None,
    };
    // Two threads: a slow handshake or handler on one does not hold the other.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let hangups = signal(SignalKind::hangup())?;
        tokio::spawn(reload_on_hangup(hangups, Arc::clone(&shared), tls.clone()));
        let encoders = Encoders(Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(1, usize::from),
        )));
        let app = Router::new()
            .merge(scoped(
                Scope::Metrics,
                Router::new()
                    .route("/metrics", get(metrics))
                    .route("/healthz", get(healthz)),
            ))
            .merge(scoped(
                Scope::Query,
                Router::new()
                    .route("/query", get(query::enqueue))
                    .route("/query/{id}", get(query::status)),
            ))
            .merge(scoped(
                Scope::Passthrough,
                Router::new().route(passthrough::ROUTE, get(passthrough)),
            ));
        let table = Table::new();
        if let Some(listener) = firewall {
            let app = scoped(
                Scope::Metrics,
                Router::new().route("/metrics", get(firewall_metrics)),
            );
            let serving = serving(app, &shared, tls.as_ref(), &table, &encoders);
            tokio::spawn(run(listener, serving));
        }
        let serving = serving(app, &shared, tls.as_ref(), &table, &encoders);
        run(main, serving).await
    })
}

/// Routes that need `scope`.
fn scoped(scope: Scope, routes: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    routes.route_layer(middleware::from_fn_with_state(scope, auth::authorize))
}

/// A listening socket on `addr`; `[::]` takes IPv4 clients too.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, DaemonError> {
    let listen = || -> std::io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())?;
        // Room for a burst of new connections between two accepts.
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    listen().map_err(|source| DaemonError::Listen { addr, source })
}

/// `app` behind the authentication, over TLS when configured, within the
/// connection bounds of `table`.
fn serving(
    app: Router<Arc<Shared>>,
    shared: &Arc<Shared>,
    tls: Option<&TlsCell>,
    table: &Arc<Table>,
    encoders: &Encoders,
) -> Serving {
    let app = app
        .layer(middleware::from_fn_with_state(
            Arc::clone(shared),
            auth::authenticate,
        ))
        .layer(Extension(encoders.clone()))
        .with_state(Arc::clone(shared));
    let tls = tls.map(|cell| {
        let cell = Arc::clone(cell);
        Arc::new(move || {
            TlsAcceptor::from(Arc::clone(
                &cell.read().unwrap_or_else(PoisonError::into_inner),
            ))
        }) as Arc<dyn Fn() -> TlsAcceptor + Send + Sync>
    });
    let limit = Arc::clone(shared);
    Serving {
        app,
        tls,
        table: Arc::clone(table),
        max_connections: Arc::new(move || {
            usize::try_from(limit.live().config.server.max_connections.0).unwrap_or(usize::MAX)
        }),
    }
}

async fn run(listener: std::net::TcpListener, serving: Serving) -> Result<(), DaemonError> {
    let addr = listener.local_addr()?;
    let scheme = if serving.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tracing::info!(%addr, scheme, "serving HTTP");
    connections::accept_loop(listener, serving).await;
    Ok(())
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

/// `registry` encoded for `headers` on a blocking thread, a few at a time.
async fn exposition(
    encoders: &Encoders,
    shared: &Arc<Shared>,
    registry: fn(&Shared) -> Option<&Registry>,
    headers: HeaderMap,
) -> Response {
    let Ok(_permit) = encoders.0.acquire().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let shared = Arc::clone(shared);
    let encoded = tokio::task::spawn_blocking(move || {
        registry(&shared).map(|r| exposition::encode(r, &headers))
    })
    .await;
    match encoded {
        Ok(Some((content_type, body))) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!("encoding the metrics failed: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn metrics(
    State(shared): State<Arc<Shared>>,
    Extension(encoders): Extension<Encoders>,
    headers: HeaderMap,
) -> Response {
    exposition(&encoders, &shared, |s| Some(&s.registry), headers).await
}

async fn firewall_metrics(
    State(shared): State<Arc<Shared>>,
    Extension(encoders): Extension<Encoders>,
    headers: HeaderMap,
) -> Response {
    exposition(
        &encoders,
        &shared,
        |s| s.firewall_registry.as_ref(),
        headers,
    )
    .await
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
