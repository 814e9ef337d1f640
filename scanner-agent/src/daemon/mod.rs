//! `scanner-agent run`: the long-running exporter. A scheduler queues every
//! task (a subnet of a configured target, per protocol) once per `interval`,
//! `worker_count` workers scan them through one shared XDP program, and the
//! results become the OpenPort Exporter's metrics, served over HTTP.

mod auth;
mod http;
mod query;
mod report;
mod state;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus_client::registry::Registry;
use rand::Rng as _;

use self::report::TaskState;
use crate::{
    capture::{AttachMode, XdpCounters, hub::Hub},
    config::{Config, Ports},
    engine::{Budget, EngineError},
    metrics::{AgentMetrics, ExporterMetrics, FailureLabels, ModeLabels, TaskLabels},
    privileges,
    probes::{Protocol, Shard},
    results::PortState,
    route::{self, Route},
    scan::{self, ScanError, ScanOptions},
    schedule::{self, Task},
    targets::TargetSet,
    transmit::Pacer,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Firewall(#[from] crate::firewall::FirewallError),
}

/// One unit of work: a subnet scanned on some ports for one protocol,
/// scheduled or asked for through `/query`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Job {
    task: Task,
    protocol: Protocol,
    ports: Ports,
    /// The `/query` task id, for on-demand scans.
    query: Option<u64>,
}

impl Job {
    fn labels(&self) -> TaskLabels {
        TaskLabels {
            target: self.task.label(),
            port_range: self.ports.spec.clone(),
            protocol: self.protocol.to_string(),
        }
    }
}

/// What the HTTP handlers and the workers share.
pub(crate) struct Shared {
    config: Config,
    registry: Registry,
    metrics: ExporterMetrics,
    agent: AgentMetrics,
    /// The XDP counters at the last update, to add only what is new.
    xdp_seen: Mutex<XdpCounters>,
    tasks: Mutex<HashMap<Job, TaskState>>,
    queued: AtomicUsize,
    last_completed: Mutex<Option<SystemTime>>,
    /// `max_rate` for all tasks together (none when `max_rate` is 0).
    budget: Option<Budget>,
    /// How the XDP program is attached; `None` without targets (nothing attached).
    mode: Option<AttachMode>,
    /// The scheduled tasks: what `/query` may scan.
    allowed: Vec<Task>,
    queue: Mutex<Option<SyncSender<Job>>>,
    queries: Mutex<query::Book>,
    state_file: Option<PathBuf>,
}

impl Shared {
    fn queue_full(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= self.config.scanning.task_queue_size.0 as usize
    }

    /// Queues a job at once, or says the queue is full (never waits).
    fn enqueue(&self, job: Job) -> Result<(), TrySendError<Job>> {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = queue.as_ref() else {
            return Err(TrySendError::Disconnected(job));
        };
        tx.try_send(job)?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .task_queue_size
            .set(self.queued.load(Ordering::Relaxed) as i64);
        Ok(())
    }
}

/// Runs the exporter until the process is stopped. `state_file` keeps open
/// ports and last-scan times across restarts.
pub fn run(config_path: &Path, state_file: Option<&Path>) -> Result<(), DaemonError> {
    let config = Config::load(config_path)?;
    config.warnings().iter().for_each(|w| tracing::warn!("{w}"));
    let jobs = jobs(&config)?;
    // Without targets nothing is scanned, so scanning's capabilities are not needed.
    if !jobs.is_empty() {
        privileges::check_scan().map_err(ScanError::from)?;
    }

    let mut registry = Registry::default();
    let metrics = ExporterMetrics::register(&mut registry, config.scanning.duration_metrics);
    let agent = AgentMetrics::register(&mut registry);
    crate::firewall::start(&config.firewall, &mut registry)?;
    let (hub, route) = match jobs.first() {
        Some(_) => {
            let starts = jobs.iter().map(|j| j.task.subnet.network());
            let route = route::lookup(starts, None).map_err(ScanError::from)?;
            let hub = Hub::start(
                &route.interface,
                route::probe_ports().map_err(ScanError::from)?,
            )
            .map_err(ScanError::from)?;
            (Some(Arc::new(hub)), Some(route))
        }
        None => (None, None),
    };
    let mode = hub.as_ref().map(|h| h.mode());
    if let Some(mode) = mode {
        agent
            .xdp_attached
            .get_or_create(&ModeLabels {
                mode: mode.to_string(),
            })
            .set(1);
    }
    let budget = (config.scanning.max_rate > 0)
        .then(|| Arc::new(Mutex::new(Pacer::new(config.scanning.max_rate as f64))));
    let allowed = query_allowed(&config, &jobs)?;
    let shared = Arc::new(Shared {
        allowed,
        queue: Mutex::new(None),
        queries: Mutex::new(query::Book::default()),
        state_file: state_file.map(Path::to_path_buf),
        budget,
        registry,
        metrics,
        agent,
        xdp_seen: Mutex::new(XdpCounters::default()),
        tasks: Mutex::new(HashMap::new()),
        queued: AtomicUsize::new(0),
        last_completed: Mutex::new(None),
        mode,
        config,
    });
    if let (Some(hub), Some(route)) = (hub, route) {
        let (tx, rx) = mpsc::sync_channel(shared.config.scanning.task_queue_size.0 as usize);
        *shared.queue.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..shared.config.scanning.worker_count.0 {
            let (shared, rx, hub, route) = (
                Arc::clone(&shared),
                Arc::clone(&rx),
                Arc::clone(&hub),
                route.clone(),
            );
            thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn(move || work(&shared, &rx, &hub, &route))
                .map_err(DaemonError::Runtime)?;
        }
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || {
                let due = restore(&shared, jobs);
                schedule_forever(&shared, due);
            })
            .map_err(DaemonError::Runtime)?;
    }
    http::serve(shared)
}

/// What `/query` may scan: the scheduled tasks and the explicitly listed
/// `query_ranges`, nothing else.
fn query_allowed(config: &Config, jobs: &[Job]) -> Result<Vec<Task>, DaemonError> {
    let mut allowed: Vec<Task> = jobs.iter().map(|j| j.task.clone()).collect();
    if !config.scanning.query_ranges.is_empty() {
        let spec = config.scanning.target_spec(
            config
                .scanning
                .query_ranges
                .iter()
                .map(|t| t.0.clone())
                .collect(),
        );
        let extra = TargetSet::build(&spec).map_err(ScanError::from)?;
        allowed.extend(extra.networks().into_iter().map(|subnet| Task { subnet }));
    }
    Ok(allowed)
}

/// Every task of the configuration, per protocol.
fn jobs(config: &Config) -> Result<Vec<Job>, DaemonError> {
    let s = &config.scanning;
    if config.targets.is_empty() {
        return Ok(Vec::new());
    }
    let spec = s.target_spec(config.targets.iter().map(|t| t.0.clone()).collect());
    let tasks =
        schedule::split(&spec, s.max_cidr_size.0, s.max_cidr_size_v6.0).map_err(ScanError::from)?;
    let protocols: &[Protocol] = if s.udp_scan {
        &[Protocol::Tcp, Protocol::Udp]
    } else {
        &[Protocol::Tcp]
    };
    Ok(tasks
        .into_iter()
        .flat_map(|task| {
            protocols.iter().map(move |&protocol| Job {
                task: task.clone(),
                protocol,
                ports: s.port_range.clone(),
                query: None,
            })
        })
        .collect())
}

/// Queues each job once per `interval`. First runs get a little jitter so
/// many agents do not all scan at the same second.
fn schedule_forever(shared: &Shared, mut due: Vec<(Instant, Job)>) {
    let interval = Duration::from_secs(shared.config.scanning.interval.0);
    loop {
        let now = Instant::now();
        for (at, job) in &mut due {
            if *at > now {
                continue;
            }
            *at = now + interval;
            match shared.enqueue(job.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(target = %job.task.label(), "task queue full; skipping this round");
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        let next = due
            .iter()
            .map(|(at, _)| *at)
            .min()
            .unwrap_or(now + interval);
        thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
        );
    }
}

/// Restores what the state file remembers of `jobs` and says when each is
/// next due: an interval after its last scan, or soon (jittered) if never
/// scanned or overdue.
fn restore(shared: &Shared, jobs: Vec<Job>) -> Vec<(Instant, Job)> {
    let saved = shared
        .state_file
        .as_deref()
        .map(state::load)
        .unwrap_or_default();
    let interval = Duration::from_secs(shared.config.scanning.interval.0);
    let jitter = interval.min(Duration::from_secs(30)) / 10;
    let now = Instant::now();
    let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    jobs.into_iter()
        .map(|job| {
            let soon = now + jitter.mul_f64(rand::rng().random::<f64>());
            let remembered = saved.tasks.iter().find(|t| {
                t.target == job.task.label()
                    && t.protocol == job.protocol.to_string()
                    && t.ports == job.ports.spec
            });
            let Some(saved) = remembered else {
                return (soon, job);
            };
            let open = saved
                .open
                .iter()
                .filter_map(|(ip, proto, port)| Some((*ip, proto.parse().ok()?, *port)))
                .collect();
            tasks.insert(
                job.clone(),
                TaskState::restored(shared, open, saved.last_scan_time()),
            );
            let age = SystemTime::now()
                .duration_since(saved.last_scan_time())
                .unwrap_or_default();
            (now + interval.saturating_sub(age).max(soon - now), job)
        })
        .collect()
}

/// The agent's own metrics after a scan: probes, retries, achieved rate, and
/// what the (shared) XDP program counted since the last update.
fn record_operation(shared: &Shared, report: &scan::ScanReport) {
    let a = &shared.agent;
    a.probes_sent.inc_by(report.ports.sent);
    a.probe_retries.inc_by(report.ports.retries);
    a.last_scan_rate.set(report.ports.achieved_rate());
    let mut seen = shared
        .xdp_seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let now = report.xdp;
    a.xdp_frames.inc_by(now.frames.saturating_sub(seen.frames));
    a.xdp_replies_matched
        .inc_by(now.matched.saturating_sub(seen.matched));
    a.xdp_replies_lost
        .inc_by(now.ringbuf_full.saturating_sub(seen.ringbuf_full));
    *seen = (*seen).max_each(now);
}

/// Writes every scheduled task's open ports and last-scan time.
fn persist(shared: &Shared) {
    let Some(path) = &shared.state_file else {
        return;
    };
    let tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    let saved = state::Saved {
        tasks: tasks
            .iter()
            .filter(|(job, _)| job.query.is_none())
            .filter_map(|(job, t)| {
                let last_scan = t.last_scan?.duration_since(UNIX_EPOCH).ok()?.as_secs();
                let open = t
                    .open
                    .iter()
                    .map(|(ip, proto, port)| (*ip, proto.to_string(), *port))
                    .collect();
                Some(state::SavedTask {
                    target: job.task.label(),
                    protocol: job.protocol.to_string(),
                    ports: job.ports.spec.clone(),
                    last_scan,
                    open,
                })
            })
            .collect(),
    };
    drop(tasks);
    if let Err(e) = state::save(path, &saved) {
        tracing::warn!(path = %path.display(), "cannot write the state file: {e}");
    }
}

fn work(shared: &Shared, rx: &Mutex<Receiver<Job>>, hub: &Hub, route: &Route) {
    loop {
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        shared.queued.fetch_sub(1, Ordering::Relaxed);
        shared
            .metrics
            .task_queue_size
            .set(shared.queued.load(Ordering::Relaxed) as i64);
        let started = Instant::now();
        query::started(shared, &job);
        let outcome = scan_job(shared, &job, hub, route);
        query::finished(shared, &job, &outcome);
        let labels = job.labels();
        match outcome {
            Ok(report) => {
                report::apply(shared, &job, &labels, &report, started.elapsed());
                record_operation(shared, &report);
                if job.query.is_none() {
                    persist(shared);
                }
                *shared
                    .last_completed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(SystemTime::now());
            }
            Err(e) => {
                let error_type = match &e {
                    ScanError::Engine(EngineError::TimedOut) => {
                        shared
                            .metrics
                            .nmap_scan_timeouts
                            .get_or_create(&labels)
                            .inc();
                        "timeout"
                    }
                    ScanError::Privilege(_) => "permission",
                    _ => "other",
                };
                tracing::warn!(target = %labels.target, protocol = %labels.protocol, error_type, "scan failed: {e}");
                let failure = FailureLabels {
                    target: labels.target,
                    port_range: labels.port_range,
                    protocol: labels.protocol,
                    error_type: error_type.into(),
                };
                shared.metrics.scans_failed.get_or_create(&failure).inc();
            }
        }
    }
}

fn scan_job(
    shared: &Shared,
    job: &Job,
    hub: &Hub,
    route: &Route,
) -> Result<scan::ScanReport, ScanError> {
    let s = &shared.config.scanning;
    let targets = s.target_spec(vec![job.task.label()]);
    let opts = ScanOptions {
        targets: targets.clone(),
        ports: job.ports.list.clone(),
        protocols: vec![job.protocol],
        tuning: s.tuning(),
        interface: Some(route.interface.clone()),
        host_discovery: !s.disable_host_discovery,
        shard: Shard::WHOLE,
        seed: None,
        states: vec![PortState::Open],
        deadline: Some(Instant::now() + Duration::from_secs(s.timeout.0)),
        budget: shared.budget.clone(),
    };
    scan::run_with(hub, route, TargetSet::build(&targets)?, &opts)
}
