//! `GET /query` (an on-demand scan, compatible with the original's answers)
//! and `GET /query/{id}` (its state and results). Every call is logged with
//! the caller's address and user. The agent never scans anything outside the
//! configured targets for anyone.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{Arc, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use ipnet::IpNet;
use serde_json::{Value, json};

use super::{Job, Shared, metrics::TaskLabels, tasks::Task};
use crate::{
    config::Ports,
    scan::{ScanError, ScanReport, probes::Protocol, results::PortResult},
    web::auth,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    Queued,
    Running,
    Done,
    Failed,
}

struct Entry {
    request: Value,
    progress: Progress,
    finished: Option<Instant>,
    results: Vec<Value>,
    error: Option<String>,
}

/// `/query/{id}` answers for the latest this many records...
pub(crate) const RECORDS_KEPT: usize = 1000;
/// ...that finished at most this long ago (queued and running ones stay).
pub(crate) const RECORDS_TTL: Duration = Duration::from_secs(3600);
/// Distinct label sets of `/query` scans whose own series
/// (`scans_successful_total`, `last_scan_timestamp_seconds`, ...) are kept;
/// the oldest are dropped, so callers cannot grow the exposition.
pub(crate) const QUERY_SERIES_KEPT: usize = 100;

/// On-demand scans: their states, the recent ones for de-duplication, and
/// the request times for the rate limit.
#[derive(Default)]
pub(crate) struct Book {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// (ip, ports, protocol) -> id of the latest scan of it.
    latest: HashMap<(IpNet, String, Protocol), u64>,
    requests: VecDeque<Instant>,
    /// Label sets of the per-query series, oldest first.
    series: VecDeque<TaskLabels>,
}

impl Book {
    /// Forgets records beyond [`RECORDS_KEPT`] or finished longer than
    /// [`RECORDS_TTL`] ago, oldest first.
    fn prune(&mut self) {
        self.entries
            .retain(|_, e| e.finished.is_none_or(|f| f.elapsed() < RECORDS_TTL));
        let excess = self.entries.len().saturating_sub(RECORDS_KEPT);
        if excess > 0 {
            let mut finished: Vec<u64> = self
                .entries
                .iter()
                .filter(|(_, e)| e.finished.is_some())
                .map(|(id, _)| *id)
                .collect();
            finished.sort_unstable();
            for id in finished.into_iter().take(excess) {
                self.entries.remove(&id);
            }
        }
        let entries = &self.entries;
        self.latest.retain(|_, id| entries.contains_key(id));
    }
}

/// The book, locked, with the records past their keeping pruned.
fn pruned_book(shared: &Shared) -> MutexGuard<'_, Book> {
    let mut book = shared
        .runtime
        .queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    book.prune();
    book
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    answer(status, json!({"status": "error", "message": message}))
}

pub(super) async fn enqueue(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    tracing::info!(%caller, user = %auth::caller(&headers), ?params, "/query");
    if !shared.live().config.auth.configured() {
        return error(
            StatusCode::FORBIDDEN,
            "/query is disabled: it makes this host send traffic, so it needs auth.basic, auth.users or auth.bearer_tokens (or a web config's basic_auth_users) in the configuration".into(),
        );
    }
    if let Some(retry_after) = rate_limited(&shared) {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many /query requests; retry later".into(),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after.as_secs().max(1).into());
        return response;
    }
    let (net, ports, protocol) = match parse(&params) {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let s = &shared.live().config.scanning;
    let largest = match net {
        IpNet::V4(_) => s.max_cidr_size.0,
        IpNet::V6(_) => s.max_cidr_size_v6.0,
    };
    if net.prefix_len() < largest {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid parameter ip: {net} is larger than one task (/{largest}, scanning.max_cidr_size{}): query a part of it",
                if net.addr().is_ipv6() { "_v6" } else { "" }
            ),
        );
    }
    if !shared
        .live()
        .allowed
        .iter()
        .any(|t| t.subnet.contains(&net))
    {
        return error(
            StatusCode::FORBIDDEN,
            format!("{net} is not inside the configured targets"),
        );
    }
    let interval = Duration::from_secs(shared.live().config.scanning.interval.0);
    let mut book = pruned_book(&shared);
    let key = (net, ports.spec.clone(), protocol);
    if let Some(&id) = book.latest.get(&key) {
        let recent = book
            .entries
            .get(&id)
            .is_some_and(|e| e.finished.is_none_or(|f| f.elapsed() < interval));
        if recent {
            return answer(
                StatusCode::ACCEPTED,
                json!({"status": "skipped", "message": "The same scan ran or is queued within the interval", "task_id": id}),
            );
        }
    }
    let id = book.next_id + 1;
    let job = Job {
        task: Task { subnet: net },
        protocol,
        ports: ports.clone(),
        query: Some(id),
    };
    if shared.enqueue(job).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "task queue is full".into());
    }
    book.next_id = id;
    let request = json!({"ip": net.to_string(), "ports": ports.spec, "protocol": protocol});
    book.entries.insert(
        id,
        Entry {
            request,
            progress: Progress::Queued,
            finished: None,
            results: Vec::new(),
            error: None,
        },
    );
    book.latest.insert(key, id);
    answer(
        StatusCode::OK,
        json!({"status": "success", "message": "Scan enqueued successfully", "task_id": id}),
    )
}

fn rate_limited(shared: &Shared) -> Option<Duration> {
    let limit = shared.live().config.scanning.rate_limit.0 as usize;
    let mut book = shared
        .runtime
        .queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    while book
        .requests
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
    {
        book.requests.pop_front();
    }
    if book.requests.len() >= limit {
        let oldest = *book.requests.front()?;
        return Some(Duration::from_secs(60).saturating_sub(now.duration_since(oldest)));
    }
    book.requests.push_back(now);
    None
}

pub(super) fn parse(params: &HashMap<String, String>) -> Result<(IpNet, Ports, Protocol), String> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !["ip", "ports", "protocol"].contains(&k.as_str()))
    {
        return Err(format!("unknown parameter {unknown}"));
    }
    let ip = params.get("ip").ok_or("missing parameter ip")?;
    let net =
        if ip.contains('/') {
            ip.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
                format!("invalid parameter ip: {ip:?} is not an address or CIDR range")
            })?
        } else {
            IpNet::from(ip.parse::<IpAddr>().map_err(|_| {
                format!("invalid parameter ip: {ip:?} is not an address or CIDR range")
            })?)
        };
    let ports = params.get("ports").ok_or("missing parameter ports")?;
    let ports = Ports::parse_capped(ports, Ports::QUERY_MAX_LEN)
        .map_err(|e| format!("invalid parameter ports: {e}"))?;
    let protocol = match params.get("protocol").map(String::as_str) {
        None => Protocol::Tcp,
        Some(p @ ("tcp" | "udp")) => p.parse()?,
        Some(other) => {
            return Err(format!(
                "invalid parameter protocol: {other:?} (expected tcp or udp)"
            ));
        }
    };
    Ok((net, ports, protocol))
}

pub(super) async fn status(State(shared): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    let book = pruned_book(&shared);
    let Some(entry) = book.entries.get(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no query task {id}"));
    };
    let state = match entry.progress {
        Progress::Queued => "queued",
        Progress::Running => "running",
        Progress::Done => "done",
        Progress::Failed => "failed",
    };
    answer(
        StatusCode::OK,
        json!({"task_id": id, "state": state, "request": entry.request, "results": entry.results, "error": entry.error}),
    )
}

pub(super) fn started(shared: &Shared, job: &Job) {
    let Some(id) = job.query else { return };
    if let Some(e) = shared
        .runtime
        .queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entries
        .get_mut(&id)
    {
        e.progress = Progress::Running;
    }
}

pub(super) fn finished(shared: &Shared, job: &Job, outcome: &Result<ScanReport, ScanError>) {
    let Some(id) = job.query else { return };
    let mut book = shared
        .runtime
        .queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(e) = book.entries.get_mut(&id) else {
        return;
    };
    e.finished = Some(Instant::now());
    match outcome {
        Ok(report) => {
            e.progress = Progress::Done;
            e.results = judged(shared, report.results.results());
        }
        Err(err) => {
            e.progress = Progress::Failed;
            e.error = Some(err.to_string());
        }
    }
}

/// The results as JSON, each open port with what the exposure policy of
/// the group holding its address says of it (`required`, `allowed` or
/// `unexpected`) where that group has a policy.
fn judged(shared: &Shared, results: Vec<PortResult>) -> Vec<Value> {
    let live = shared.live();
    results
        .into_iter()
        .map(|r| {
            let verdict = live
                .groups
                .of_addr(r.ip)
                .and_then(|g| g.verdict(r.protocol, r.port).map(|v| (&g.name, v)));
            let mut value = json!(r);
            if let (Some((group, verdict)), Some(fields)) = (verdict, value.as_object_mut()) {
                fields.insert("group".into(), json!(group));
                fields.insert("exposure".into(), json!(verdict));
            }
            value
        })
        .collect()
}

/// Keeps the series of a finished `/query` scan among the latest
/// [`QUERY_SERIES_KEPT`] label sets, dropping the oldest set's series.
/// Label sets a scheduled job shares are the schedule's and never dropped.
pub(super) fn keep_series(shared: &Shared, labels: &TaskLabels) {
    let live = shared.live();
    if live.jobs.iter().any(|j| j.labels() == *labels) {
        return;
    }
    let mut book = shared
        .runtime
        .queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    book.series.retain(|l| l != labels);
    book.series.push_back(labels.clone());
    while book.series.len() > QUERY_SERIES_KEPT {
        let Some(old) = book.series.pop_front() else {
            break;
        };
        if live.jobs.iter().any(|j| j.labels() == old) {
            continue;
        }
        shared.metrics.forget_query(&old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(finished: Option<Instant>) -> Entry {
        Entry {
            request: Value::Null,
            progress: Progress::Done,
            finished,
            results: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn records_are_kept_for_the_latest_thousand_and_an_hour() {
        let mut book = Book::default();
        let now = Instant::now();
        for id in 1..=1100_u64 {
            book.entries.insert(id, entry(Some(now)));
            let net = IpNet::from(IpAddr::from([198, 18, (id >> 8) as u8, id as u8]));
            book.latest.insert((net, "22".into(), Protocol::Tcp), id);
        }
        // Queued or running: kept whatever its age.
        book.entries.insert(2000, entry(None));
        book.entries.insert(
            1999,
            entry(now.checked_sub(RECORDS_TTL + Duration::from_secs(1))),
        );
        book.prune();
        assert_eq!(book.entries.len(), RECORDS_KEPT);
        assert!(book.entries.contains_key(&2000), "unfinished");
        assert!(!book.entries.contains_key(&1999), "older than an hour");
        assert!(!book.entries.contains_key(&101) && book.entries.contains_key(&102));
        assert_eq!(book.latest.len(), 999, "the de-duplication map follows");
    }
}
