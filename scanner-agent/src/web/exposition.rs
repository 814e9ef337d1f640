//! What `/metrics` answers: OpenMetrics text to clients that ask for it
//! (Prometheus does), the classic Prometheus text format (0.0.4) to the rest
//! (curl, `promtool check metrics`, older scrapers), as the Go client does.

use std::sync::Arc;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use prometheus_client::{encoding::text::encode as write_openmetrics, registry::Registry};
use tokio::sync::Semaphore;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry in the OpenMetrics text format.
pub fn encode_text(registry: &Registry) -> String {
    let mut out = String::new();
    write_openmetrics(&mut out, registry).expect("writing to a String cannot fail");
    out
}

/// The registry encoded in the format `headers` accept, with its content type.
pub fn encode(registry: &Registry, headers: &HeaderMap) -> (HeaderValue, String) {
    let text = encode_text(registry);
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (HeaderValue::from_static(OPENMETRICS), text)
    } else {
        (HeaderValue::from_static(CLASSIC), classic_text(&text))
    }
}

/// Expositions encoded at once: each runs on a blocking thread (the
/// firewall counters read netlink), so a burst of scrapes waits its turn
/// there instead of holding the threads that serve requests.
#[derive(Clone)]
pub(crate) struct Encoders(Arc<Semaphore>);

impl Encoders {
    /// As many at once as there are cores.
    pub(crate) fn new() -> Self {
        Self(Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(1, usize::from),
        )))
    }

    /// The response to a scrape: `registry` of `state` (404 when there is
    /// none) encoded for `headers` on a blocking thread, a few at a time.
    pub(crate) async fn respond<S: Send + Sync + 'static>(
        &self,
        state: &Arc<S>,
        registry: fn(&S) -> Option<&Registry>,
        headers: HeaderMap,
    ) -> Response {
        let Ok(_permit) = self.0.acquire().await else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        let state = Arc::clone(state);
        let encoded =
            tokio::task::spawn_blocking(move || registry(&state).map(|r| encode(r, &headers)))
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
}

/// OpenMetrics text rewritten as the classic format: counter families are
/// named with their `_total` suffix, `_created` samples, `# UNIT` and
/// `# EOF` lines go. Label and help escaping is the same in both.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let is_counter = |name: &str| counters.contains(&name);
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match meta {
            Some((kind, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                if is_counter(name) {
                    out.push_str(kind);
                    out.push_str(name);
                    out.push_str("_total");
                    out.push_str(&rest[name.len()..]);
                } else {
                    out.push_str(line);
                }
            }
            None => {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                if name.strip_suffix("_created").is_some_and(&is_counter) {
                    continue;
                }
                out.push_str(line);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_names_and_openmetrics_lines_go() {
        let om = "# HELP scans_successful Number of successful scans.\n\
                  # TYPE scans_successful counter\n\
                  scans_successful_total{target=\"198.18.0.0/24\"} 3\n\
                  scans_successful_created{target=\"198.18.0.0/24\"} 1.7e9\n\
                  # HELP open_ports_total Total number of open ports per IP.\n\
                  # TYPE open_ports_total gauge\n\
                  # UNIT open_ports_total ports\n\
                  open_ports_total{ip=\"198.18.0.2\"} 2\n\
                  # EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP scans_successful_total Number of successful scans.\n\
             # TYPE scans_successful_total counter\n\
             scans_successful_total{target=\"198.18.0.0/24\"} 3\n\
             # HELP open_ports_total Total number of open ports per IP.\n\
             # TYPE open_ports_total gauge\n\
             open_ports_total{ip=\"198.18.0.2\"} 2\n"
        );
    }

    #[test]
    fn prometheus_gets_openmetrics_and_the_rest_classic_text() {
        let registry = prometheus_client::registry::Registry::default();
        let mut prometheus = HeaderMap::new();
        prometheus.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ),
        );
        assert_eq!(encode(&registry, &prometheus).0, OPENMETRICS);
        assert_eq!(encode(&registry, &HeaderMap::new()).0, CLASSIC);
    }
}
