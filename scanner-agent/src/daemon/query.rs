//! `GET /query` (an on-demand scan, compatible with the original's answers)
//! and `GET /query/{id}` (its state and results). Every call is logged with
//! the caller's address and user. The agent never scans anything outside the
//! configured targets for anyone.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{Arc, PoisonError, mpsc::TrySendError},
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

use super::{Job, Shared, auth};
use crate::{
    config::Ports,
    probes::Protocol,
    results::PortResult,
    scan::{ScanError, ScanReport},
    schedule::Task,
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
    results: Vec<PortResult>,
    error: Option<String>,
}

/// On-demand scans: their states, the recent ones for de-duplication, and
/// the request times for the rate limit.
#[derive(Default)]
pub(crate) struct Book {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// (ip, ports, protocol) -> id of the latest scan of it.
    latest: HashMap<(IpNet, String, Protocol), u64>,
    requests: VecDeque<Instant>,
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
            "/query is disabled: it makes this host send traffic, so it needs auth.basic or auth.bearer_tokens in the configuration".into(),
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
    let mut book = shared
        .queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
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
    match shared.enqueue(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "task queue is full".into());
        }
        Err(TrySendError::Disconnected(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no targets are configured, so nothing can be scanned".into(),
            );
        }
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

fn parse(params: &HashMap<String, String>) -> Result<(IpNet, Ports, Protocol), String> {
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
    let book = shared
        .queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
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
            e.results = report.results.results();
        }
        Err(err) => {
            e.progress = Progress::Failed;
            e.error = Some(err.to_string());
        }
    }
}
