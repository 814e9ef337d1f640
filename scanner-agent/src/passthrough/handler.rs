//! The route's checks, in the original's order (after authentication, which
//! comes first and is never optional here), then one GET of the registered
//! URL. Nothing from the request reaches the upstream but `Accept` and
//! `Accept-Encoding`: not the path, not the query, not the Host header.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body_util::Empty;
use hyper::Uri;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use prometheus_client::registry::Registry;
use tokio::{sync::Semaphore, time::Instant};

use super::{
    body::Capped,
    config::{Hosts, Settings},
    metrics::{Outcome, PassthroughMetrics},
};
use crate::{config::Auth, web::auth};

pub const ROUTE: &str = "/api/{sitename}/monitoring/prometheus/passthrough/{hostname}";

/// Upstream fetches at once, on all hosts together: each holds one
/// connection (and a descriptor) until its body has been passed on, so a
/// burst of requests cannot open connections without bound.
pub const MAX_UPSTREAM_FETCHES: usize = 64;

/// Kept-alive upstream connections per host between fetches.
const MAX_IDLE_PER_HOST: usize = 4;

/// The upstream client (with a pool of kept-alive connections), the cap on
/// fetches at once, and the metrics.
pub struct Proxy {
    client: Client<HttpConnector, Empty<Bytes>>,
    fetches: Arc<Semaphore>,
    pub metrics: PassthroughMetrics,
}

/// What one request is about: the route's two segments, decoded.
pub struct Target<'a> {
    pub sitename: &'a str,
    pub hostname: &'a str,
}

impl Proxy {
    pub fn new(registry: &mut Registry) -> Self {
        Self::with_fetch_cap(registry, MAX_UPSTREAM_FETCHES)
    }

    fn with_fetch_cap(registry: &mut Registry, cap: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(connector);
        Self {
            client,
            fetches: Arc::new(Semaphore::new(cap)),
            metrics: PassthroughMetrics::register(registry),
        }
    }

    pub async fn serve(
        &self,
        auth: &Auth,
        hosts: &Hosts,
        settings: &Settings,
        target: Option<Target<'_>>,
        request: Request<Body>,
    ) -> Response {
        let (status, outcome, message) = match self.check(auth, hosts, target, &request) {
            Ok(uri) => return self.fetch(uri, settings, request.headers()).await,
            Err(e) => e,
        };
        self.metrics.count(outcome);
        let mut response = (status, format!("{message}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"scanner-agent\""),
            );
        }
        response
    }

    /// The registered URL, or why the request gets none.
    fn check(
        &self,
        auth: &Auth,
        hosts: &Hosts,
        target: Option<Target<'_>>,
        request: &Request<Body>,
    ) -> Result<Uri, (StatusCode, Outcome, String)> {
        // The global middleware lets everything through when no credentials
        // are configured; this route never does. It admits only requests
        // the middleware checked (never anonymous, even if mounted without it).
        if request.extensions().get::<auth::Authenticated>().is_none() {
            let why = if auth.configured() {
                "authentication required"
            } else {
                "authentication required: the passthrough is never anonymous and no credentials are configured"
            };
            return Err((StatusCode::UNAUTHORIZED, Outcome::unauthorized, why.into()));
        }
        let not_found = |outcome, message| Err((StatusCode::NOT_FOUND, outcome, message));
        let Some(target) = target else {
            return not_found(Outcome::unknown_host, "Host not found".into());
        };
        if hosts.sitename.as_deref() != Some(target.sitename) {
            return not_found(
                Outcome::unknown_site,
                format!("Site {:?} not found", target.sitename),
            );
        }
        if request.uri().query().is_some() {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                Outcome::query_rejected,
                "query parameters are not accepted by the passthrough".into(),
            ));
        }
        let Some(host) = hosts.table.get(target.hostname) else {
            return not_found(
                Outcome::unknown_host,
                format!("Host {:?} not found", target.hostname),
            );
        };
        match (&host.uri, host.enabled) {
            (Some(uri), true) => Ok(uri.clone()),
            _ => not_found(
                Outcome::disabled,
                format!(
                    "Host {:?} does not have node_exporter passthrough enabled",
                    target.hostname
                ),
            ),
        }
    }

    /// One GET of `uri`, passed on as it streams in.
    async fn fetch(&self, uri: Uri, settings: &Settings, headers: &HeaderMap) -> Response {
        let timeout = Duration::from_secs(settings.timeout.0);
        let deadline = Instant::now() + timeout;
        let mut upstream = hyper::Request::get(uri.clone());
        for name in [header::ACCEPT, header::ACCEPT_ENCODING] {
            for value in headers.get_all(&name) {
                upstream = upstream.header(&name, value);
            }
        }
        let upstream = match upstream.body(Empty::new()) {
            Ok(r) => r,
            Err(e) => return self.fail(StatusCode::BAD_GATEWAY, Outcome::unreachable, e),
        };
        // Waiting for a turn counts against the same deadline as the fetch.
        let turn = tokio::time::timeout_at(deadline, Arc::clone(&self.fetches).acquire_owned());
        let Ok(Ok(turn)) = turn.await else {
            return self.fail(
                StatusCode::SERVICE_UNAVAILABLE,
                Outcome::busy,
                format_args!(
                    "too many node_exporter fetches are running and none ended within {} s",
                    timeout.as_secs()
                ),
            );
        };
        let started = Instant::now();
        let answer = tokio::time::timeout_at(deadline, self.client.request(upstream)).await;
        let response = match answer {
            Err(_) => {
                return self.fail(
                    StatusCode::GATEWAY_TIMEOUT,
                    Outcome::timeout,
                    format_args!(
                        "node_exporter at {uri} did not answer within {} s",
                        timeout.as_secs()
                    ),
                );
            }
            Ok(Err(e)) => {
                return self.fail(
                    StatusCode::BAD_GATEWAY,
                    Outcome::unreachable,
                    format_args!("Error connecting to node_exporter at {uri}: {}", chain(&e)),
                );
            }
            Ok(Ok(r)) => r,
        };
        self.metrics
            .upstream_seconds
            .observe(started.elapsed().as_secs_f64());
        let status = response.status();
        if !status.is_success() {
            // The status only: a redirect's Location is never passed on.
            return self.fail(
                status,
                Outcome::upstream_error,
                format_args!("node_exporter at {uri} answered {status}"),
            );
        }
        let limit = settings.max_body_bytes.0;
        let announced = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > limit) {
            return self.fail(
                StatusCode::BAD_GATEWAY,
                Outcome::too_large,
                format_args!(
                    "node_exporter at {uri} announced a body larger than passthrough.max_body_bytes ({limit})"
                ),
            );
        }
        self.metrics.count(Outcome::ok);
        let (head, incoming) = response.into_parts();
        let mut out = Response::new(Body::new(Capped::new(
            incoming,
            limit,
            deadline,
            self.metrics.clone(),
            turn,
        )));
        for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
            if let Some(value) = head.headers.get(&name) {
                out.headers_mut().insert(name, value.clone());
            }
        }
        out
    }

    fn fail(
        &self,
        status: StatusCode,
        outcome: Outcome,
        message: impl std::fmt::Display,
    ) -> Response {
        self.metrics.count(outcome);
        tracing::warn!("passthrough: {message}");
        (status, format!("{message}\n")).into_response()
    }
}

/// An error with its causes, which hyper keeps apart ("client error (Connect)"
/// says little without "Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;
    use crate::{config::Config, passthrough::metrics::OutcomeLabels};

    /// A node_exporter on loopback that sends the head of a 100-byte body
    /// and then nothing more, keeping every connection open.
    async fn stalling_upstream() -> Uri {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nnode_")
                    .await;
                held.push(s);
            }
        });
        format!("http://{addr}/metrics").parse().unwrap()
    }

    fn settings(timeout: u64) -> Settings {
        Config::parse(&format!("passthrough:\n  timeout: {timeout}\n"))
            .unwrap()
            .passthrough
    }

    #[tokio::test]
    async fn fetches_beyond_the_cap_wait_within_the_deadline_then_get_503() {
        let proxy = Proxy::with_fetch_cap(&mut Registry::default(), 1);
        let uri = stalling_upstream().await;
        let headers = HeaderMap::new();
        // The first fetch's body is still streaming: it holds the only turn.
        let first = proxy.fetch(uri.clone(), &settings(30), &headers).await;
        assert_eq!(first.status(), StatusCode::OK);
        let started = Instant::now();
        let second = proxy.fetch(uri.clone(), &settings(1), &headers).await;
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "it waited for a turn"
        );
        let count = |o| {
            proxy
                .metrics
                .requests
                .get_or_create(&OutcomeLabels { outcome: o })
                .get()
        };
        assert_eq!(count(Outcome::busy), 1);
        // Done with the first body, the next fetch gets its turn.
        drop(first);
        let third = proxy.fetch(uri, &settings(1), &headers).await;
        assert_eq!(third.status(), StatusCode::OK);
        assert_eq!(count(Outcome::busy), 1);
    }
}
