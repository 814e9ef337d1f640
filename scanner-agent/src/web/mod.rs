//! The HTTP home: every listener the agent opens (the daemon's main port
//! and the firewall counters' drop-in port) is bound, served over TLS when
//! configured ([`tls`]), kept within the connection bounds of
//! [`connections`], and guarded by the same credential checks ([`auth`]);
//! metrics are answered in the format the client asks for
//! ([`exposition`]). What each route does is the daemon's and the
//! passthrough's business: this module knows nothing of either.

pub mod auth;
mod connections;
pub mod exposition;
pub mod tls;

use std::{
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
};

use axum::{Router, middleware};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_rustls::TlsAcceptor;

pub(crate) use self::connections::{Table, raise_open_files_limit};
use self::{
    auth::Credentials,
    connections::Serving,
    tls::{TlsError, TlsSettings},
};
use crate::config::Scope;

/// The TLS configuration in use, replaced when SIGHUP renews the certificate.
pub(crate) type TlsCell = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// The TLS configuration of `settings`, in a cell a reload can refill.
pub(crate) fn tls_cell(settings: Option<&TlsSettings>) -> Result<Option<TlsCell>, TlsError> {
    Ok(settings
        .map(TlsSettings::server_config)
        .transpose()?
        .map(|c| Arc::new(RwLock::new(c))))
}

/// Routes that need `scope`.
pub(crate) fn scoped<S>(scope: Scope, routes: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.route_layer(middleware::from_fn_with_state(scope, auth::authorize))
}

/// A listening socket on `addr`; `[::]` takes IPv4 clients too.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
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
}

/// How one listener serves `app`: behind the authentication of
/// `credentials`, over TLS when configured, within the connection bounds
/// of `table`, at most `max_connections()` at once.
pub(crate) fn serving<C: Credentials>(
    app: Router<Arc<C>>,
    credentials: &Arc<C>,
    tls: Option<&TlsCell>,
    table: &Arc<Table>,
    max_connections: Arc<dyn Fn() -> usize + Send + Sync>,
) -> Serving {
    let app = app
        .layer(middleware::from_fn_with_state(
            Arc::clone(credentials),
            auth::authenticate::<C>,
        ))
        .with_state(Arc::clone(credentials));
    let tls = tls.map(|cell| {
        let cell = Arc::clone(cell);
        Arc::new(move || {
            TlsAcceptor::from(Arc::clone(
                &cell.read().unwrap_or_else(PoisonError::into_inner),
            ))
        }) as Arc<dyn Fn() -> TlsAcceptor + Send + Sync>
    });
    Serving {
        app,
        tls,
        table: Arc::clone(table),
        max_connections,
    }
}

/// Serves `listener` forever.
pub(crate) async fn run(listener: std::net::TcpListener, serving: Serving) -> std::io::Result<()> {
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
