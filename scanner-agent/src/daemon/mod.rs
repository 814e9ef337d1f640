//! `scanner-agent run`: the long-running exporter. A scheduler queues every
//! task (a subnet of a configured target, per protocol) once per `interval`,
//! `worker_count` workers scan them through one shared XDP program, and the
//! results become the OpenPort Exporter's metrics, served over HTTP.

pub(crate) mod auth;
mod http;
mod query;
mod reload;
mod report;
mod scheduler;
mod state;
mod worker;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    thread,
    time::SystemTime,
};

use prometheus_client::registry::Registry;

use self::report::TaskState;
use crate::{
    capture::{XdpCounters, hub::Hub},
    config::{Config, Ports},
    engine::Budget,
    metrics::{AgentMetrics, ExporterMetrics, ModeLabels, TaskLabels},
    passthrough, privileges,
    probes::Protocol,
    route::{self, Route},
    scan::ScanError,
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
    Runtime(#[from] std::io::Error),
    #[error("server.tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("guard: {0}")]
    Guard(#[from] crate::guard::GuardError),
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

/// What one configuration decides; replaced as a whole when SIGHUP reloads it.
pub(crate) struct Live {
    config: Config,
    /// The scheduled jobs.
    jobs: Vec<Job>,
    /// What `/query` may scan.
    allowed: Vec<Task>,
    /// `max_rate` for all tasks together (none when `max_rate` is 0).
    budget: Option<Budget>,
    /// The node_exporter passthrough's host table.
    passthrough: passthrough::Hosts,
}

impl Live {
    fn new(config: Config) -> Result<Self, DaemonError> {
        let jobs = jobs(&config)?;
        let allowed = query_allowed(&config, &jobs)?;
        let budget = (config.scanning.max_rate > 0)
            .then(|| Arc::new(Mutex::new(Pacer::new(config.scanning.max_rate as f64))));
        Ok(Self {
            passthrough: passthrough::Hosts::from_config(&config),
            config,
            jobs,
            allowed,
            budget,
        })
    }
}

/// The attached XDP program and the route it serves.
#[derive(Clone)]
struct Capture {
    hub: Arc<Hub>,
    route: Route,
}

/// What the HTTP handlers, the scheduler and the workers share.
pub(crate) struct Shared {
    live: RwLock<Arc<Live>>,
    /// Bumped by every reload, so the scheduler redoes its timetable.
    generation: AtomicU64,
    config_path: PathBuf,
    /// None until there is something to scan.
    capture: Mutex<Option<Capture>>,
    registry: Registry,
    /// The firewall counters alone, for their drop-in listener.
    firewall_registry: Option<Registry>,
    metrics: ExporterMetrics,
    agent: AgentMetrics,
    /// The XDP counters at the last update, to add only what is new.
    xdp_seen: Mutex<XdpCounters>,
    tasks: Mutex<HashMap<Job, TaskState>>,
    queue: SyncSender<Job>,
    queue_capacity: usize,
    queued: AtomicUsize,
    last_completed: Mutex<Option<SystemTime>>,
    queries: Mutex<query::Book>,
    state_file: Option<PathBuf>,
    passthrough: passthrough::Proxy,
    /// Checks credentials off the serving threads and remembers good ones.
    auth: auth::Verifier,
}

impl Shared {
    fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn capture(&self) -> Option<Capture> {
        self.capture
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether scans can get replies: true when there is nothing to scan,
    /// else the program must be attached and its reader alive.
    fn capture_ok(&self) -> bool {
        match self.capture() {
            Some(c) => c.hub.healthy(),
            None => self.live().allowed.is_empty(),
        }
    }

    fn queue_full(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= self.queue_capacity
    }

    /// Queues a job at once, or says the queue is full (never waits).
    fn enqueue(&self, job: Job) -> Result<(), TrySendError<Job>> {
        self.queue.try_send(job)?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .task_queue_size
            .set(self.queued.load(Ordering::Relaxed) as i64);
        Ok(())
    }

    /// Gets ready to run `live`: the program attached where it scans, the
    /// counters of its jobs created.
    fn prepare(&self, live: &Live) -> Result<(), DaemonError> {
        self.attach(live)?;
        live.jobs.iter().for_each(|job| report::declare(self, job));
        Ok(())
    }

    /// Attaches the XDP program to the interface that what `live` may scan
    /// routes through, unless it is attached there already.
    fn attach(&self, live: &Live) -> Result<(), DaemonError> {
        if live.allowed.is_empty() {
            return Ok(());
        }
        privileges::check_scan().map_err(ScanError::from)?;
        let route = route::lookup(live.allowed.iter().map(|t| t.subnet.network()), None)
            .map_err(ScanError::from)?;
        let mut capture = self.capture.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = capture.as_mut()
            && c.route.interface == route.interface
        {
            c.route = route;
            return Ok(());
        }
        let hub = Hub::start(
            &route.interface,
            route::probe_ports().map_err(ScanError::from)?,
        )
        .map_err(ScanError::from)?;
        if let Some(old) = capture.take() {
            self.agent
                .xdp_attached
                .get_or_create(&mode_labels(&old.hub))
                .set(0);
            // The new program counts from zero.
            *self.xdp_seen.lock().unwrap_or_else(PoisonError::into_inner) = XdpCounters::default();
        }
        self.agent
            .xdp_attached
            .get_or_create(&mode_labels(&hub))
            .set(1);
        tracing::info!(interface = %route.interface, mode = %hub.mode(), "XDP program attached");
        *capture = Some(Capture {
            hub: Arc::new(hub),
            route,
        });
        Ok(())
    }
}

fn mode_labels(hub: &Hub) -> ModeLabels {
    ModeLabels {
        mode: hub.mode().to_string(),
    }
}

/// Runs the exporter until the process is stopped. `state_file` keeps open
/// ports and last-scan times across restarts; SIGHUP rereads `config_path`.
pub fn run(config_path: &Path, state_file: Option<&Path>) -> Result<(), DaemonError> {
    let config = Config::load(config_path)?;
    config.warnings().iter().for_each(|w| tracing::warn!("{w}"));
    let live = Live::new(config)?;
    apply_guard(&live.config)?;
    let s = &live.config.scanning;
    let (workers, queue_capacity) = (s.worker_count.0, s.task_queue_size.0 as usize);

    let mut registry = Registry::default();
    let metrics = ExporterMetrics::register(&mut registry, s.duration_metrics);
    let agent = AgentMetrics::register(&mut registry);
    let firewall_registry = crate::firewall::start(&live.config.firewall, &mut registry);
    let passthrough = passthrough::Proxy::new(&mut registry);
    let (queue, rx) = mpsc::sync_channel(queue_capacity);
    let shared = Arc::new(Shared {
        live: RwLock::new(Arc::new(live)),
        generation: AtomicU64::new(0),
        config_path: config_path.to_owned(),
        capture: Mutex::new(None),
        registry,
        firewall_registry,
        metrics,
        agent,
        xdp_seen: Mutex::new(XdpCounters::default()),
        tasks: Mutex::new(HashMap::new()),
        queue,
        queue_capacity,
        queued: AtomicUsize::new(0),
        last_completed: Mutex::new(None),
        queries: Mutex::new(query::Book::default()),
        state_file: state_file.map(Path::to_path_buf),
        passthrough,
        auth: auth::Verifier::new(),
    });
    shared.prepare(&shared.live())?;
    reload::record(&shared.agent, true);

    let rx = Arc::new(Mutex::new(rx));
    for n in 0..workers {
        let (shared, rx) = (Arc::clone(&shared), Arc::clone(&rx));
        thread::Builder::new()
            .name(format!("worker-{n}"))
            .spawn(move || worker::work(&shared, &rx))?;
    }
    let scheduler = Arc::clone(&shared);
    thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || scheduler::run(&scheduler))?;
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

/// Installs `guard:` when enabled; a table from an earlier run stays
/// either way (a firewall must not open up because the agent restarted).
fn apply_guard(config: &Config) -> Result<(), DaemonError> {
    let g = &config.guard;
    if !g.enabled {
        return Ok(());
    }
    let guard = crate::guard::Guard::new(g.port, &g.sources(), config.server.port, g.force)?;
    guard.apply()?;
    tracing::info!(
        port = guard.port,
        allowed = guard.allow.len(),
        "port guard applied"
    );
    Ok(())
}
