//! `scanner-agent run`: the long-running exporter. A scheduler queues every
//! task (a subnet of a configured target, per protocol) once per `interval`,
//! `worker_count` workers scan them through one shared XDP program, and the
//! results become the OpenPort Exporter's metrics, served over HTTP.

mod tasks;
mod task_state;
mod exposure;
mod scheduler;
mod queue;
mod worker;
mod report;
pub mod metrics;
mod state;
mod query;
mod reload;
mod http;
mod vitals;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock, atomic::AtomicU64},
    time::{Duration, SystemTime},
};

use scanner_common::maps::MAX_SCANS;

use self::{
    exposure::{Group, Groups},
    metrics::{Metrics, TaskLabels},
    task_state::TaskState,
    tasks::Task,
};
use crate::{
    config::{Config, Ports},
    guard::Guard,
    passthrough,
    scan::{
        ScanError,
        capture::hub::Hub,
        engine::Budget,
        privileges,
        probes::Protocol,
        route::{self, Route},
    },
    web::auth::Verifier,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Target entries whose addresses overlap once resolved.
    #[error("targets: {0}")]
    Overlap(String),
    /// Targets or `/query` ranges that cannot become tasks.
    #[error("{key}: {source}")]
    Targets {
        key: &'static str,
        source: crate::scan::targets::TargetError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("server.tls: {0}")]
    Tls(#[from] crate::web::tls::TlsError),
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
    /// The named target groups: their tasks, settings and policy.
    groups: Groups,
    /// What `/query` may scan.
    allowed: Vec<Task>,
    /// `max_rate` for all tasks together (none when `max_rate` is 0).
    budget: Option<Budget>,
    /// The node_exporter passthrough's host table.
    passthrough: passthrough::Hosts,
    /// The port guard to install, when `guard.enabled`.
    guard: Option<Guard>,
}

impl Live {
    fn new(config: Config) -> Result<Self, DaemonError> {
        let (jobs, groups) = jobs(&config)?;
        let allowed = query_allowed(&config, &jobs)?;
        let max_rate = config.scanning.max_rate.0;
        let budget = (max_rate > 0).then(|| Budget::new(max_rate as f64));
        let g = &config.guard;
        let guard = g
            .enabled
            .then(|| Guard::new(g.port, &g.sources(), config.server.port, g.force))
            .transpose()?;
        Ok(Self {
            passthrough: passthrough::Hosts::new(&config.general, &config.passthrough),
            config,
            jobs,
            groups,
            allowed,
            budget,
            guard,
        })
    }

    /// Whether this configuration still wants `job` scanned: a scheduled
    /// job it schedules, or a `/query` scan of addresses it allows.
    fn wants(&self, job: &Job) -> bool {
        match job.query {
            None => self.jobs.contains(job),
            Some(_) => self.owner_of(job).is_some(),
        }
    }

    /// The task whose state a scan's results update: a scheduled job of the
    /// same subnet, protocol and ports, or for a `/query` scan the task
    /// (configured or from `query_ranges`) that holds its addresses, so that
    /// a query confirms or corrects what the schedule found rather than
    /// adding series of its own.
    fn owner_of(&self, job: &Job) -> Option<Job> {
        if job.query.is_none() {
            return self.jobs.contains(job).then(|| job.clone());
        }
        let task = self
            .allowed
            .iter()
            .find(|t| t.subnet.contains(&job.task.subnet))?;
        Some(Job {
            task: task.clone(),
            protocol: job.protocol,
            ports: self.home_ports(task).clone(),
            query: None,
        })
    }

    /// Whether `job` is a task whose state this configuration keeps: a
    /// scheduled job, or a task that `/query` results were merged into.
    fn keeps(&self, job: &Job) -> bool {
        job.query.is_none()
            && job.ports == *self.home_ports(&job.task)
            && self.allowed.contains(&job.task)
    }

    /// The ports a task is scanned on: its group's, or `scanning.port_range`.
    fn home_ports(&self, task: &Task) -> &Ports {
        self.groups
            .of_task(task)
            .map_or(&self.config.scanning.port_range, |g| &g.ports)
    }

    /// Time between two scans of a job: its group's `interval`, or
    /// `scanning.interval`.
    fn interval_of(&self, job: &Job) -> Duration {
        self.groups
            .of_task(&job.task)
            .map_or(Duration::from_secs(self.config.scanning.interval.0), |g| {
                g.interval
            })
    }
}

/// The attached XDP program and the route it serves.
#[derive(Clone)]
struct Capture {
    hub: Arc<Hub>,
    route: Route,
}

/// What the HTTP handlers, the scheduler and the workers share, in four
/// named parts.
pub(crate) struct Shared {
    settings: Settings,
    metrics: Metrics,
    state: State,
    runtime: Runtime,
}

/// The configuration in force, and where it is read from.
struct Settings {
    live: RwLock<Arc<Live>>,
    /// Bumped by every reload, so the scheduler redoes its timetable.
    generation: AtomicU64,
    path: PathBuf,
}

/// What the daemon knows of its tasks' results, kept across restarts in
/// the state file (see [`state`]).
struct State {
    tasks: Mutex<HashMap<Job, TaskState>>,
    file: Option<state::StateFile>,
    last_completed: Mutex<Option<SystemTime>>,
}

/// The running parts: the attached program, the job queue, the `/query`
/// records, the threads, and the HTTP side's helpers.
struct Runtime {
    /// None until there is something to scan.
    capture: Mutex<Option<Capture>>,
    work: queue::Work,
    queries: Mutex<query::Book>,
    /// The scheduler and worker threads, and which of them have died.
    vitals: vitals::Vitals,
    passthrough: passthrough::Proxy,
    /// Checks credentials off the serving threads and remembers good ones.
    auth: Verifier,
}

impl Shared {
    fn live(&self) -> Arc<Live> {
        Arc::clone(
            &self
                .settings
                .live
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn capture(&self) -> Option<Capture> {
        self.runtime
            .capture
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

    /// Queues a job at once, or says the queue is full (never waits).
    fn enqueue(&self, job: Job) -> Result<(), queue::Full> {
        let outcome = self.runtime.work.push(job);
        self.count_queued();
        outcome
    }

    fn count_queued(&self) {
        self.metrics.queued(self.runtime.work.len());
    }

    /// Gets ready to run `live`: the program attached where it scans, the
    /// counters of its jobs created.
    fn prepare(&self, live: &Live) -> Result<(), DaemonError> {
        self.attach(live)?;
        live.jobs
            .iter()
            .for_each(|job| self.metrics.declare(&job.labels()));
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
        let mut capture = self
            .runtime
            .capture
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // `scanning.xdp_mode` applies when the program is attached (at
        // start, or when the scan interface changes): the attached program
        // cannot be swapped under scans in flight.
        if let Some(c) = capture.as_mut()
            && c.route.interface == route.interface
        {
            c.route = route;
            return Ok(());
        }
        let hub = Hub::start(
            &route.interface,
            route::probe_ports().map_err(ScanError::from)?,
            live.config.scanning.xdp_mode,
        )
        .map_err(ScanError::from)?;
        let old = capture.take().map(|old| old.hub.mode().to_string());
        self.metrics.attached(hub.mode().to_string(), old);
        tracing::info!(interface = %route.interface, mode = %hub.mode(), "XDP program attached");
        *capture = Some(Capture {
            hub: Arc::new(hub),
            route,
        });
        Ok(())
    }
}

/// Parses a `/query` query string (`ip=...&ports=...&protocol=...`) as the
/// endpoint does, before any check against the configuration (for the
/// fuzzer).
pub fn parse_query(query_string: &str) -> Result<(), String> {
    let params = url::form_urlencoded::parse(query_string.as_bytes())
        .into_owned()
        .collect();
    query::parse(&params).map(drop)
}

/// Every check `run` makes of a configuration before it binds or attaches
/// anything (`check-config`): the file, the targets as tasks (exclusions,
/// `max_ipv6_prefix`, names without DNS), `/query` ranges and the guard.
pub fn check(config_path: &Path) -> Result<Config, DaemonError> {
    Ok(Live::new(Config::load(config_path)?)?.config)
}

/// Runs the exporter until the process is stopped. `state_file` keeps open
/// ports and last-scan times across restarts; SIGHUP rereads `config_path`.
pub fn run(config_path: &Path, state_file: Option<&Path>) -> Result<(), DaemonError> {
    let server = http::server()?;
    let live = Live::new(Config::load(config_path)?)?;
    live.config
        .warnings()
        .iter()
        .for_each(|w| tracing::warn!("{w}"));
    apply_guard(None, &live)?;
    let s = &live.config.scanning;
    let workers = scanners(s.worker_count.0);
    let work = queue::Work::new(s.task_queue_size.0 as usize);

    let (metrics, passthrough) = Metrics::register(s.duration_metrics, &live.config.firewall);
    let shared = Arc::new(Shared {
        settings: Settings {
            live: RwLock::new(Arc::new(live)),
            generation: AtomicU64::new(0),
            path: config_path.to_owned(),
        },
        metrics,
        state: State {
            tasks: Mutex::new(HashMap::new()),
            file: state_file.map(state::StateFile::new),
            last_completed: Mutex::new(None),
        },
        runtime: Runtime {
            capture: Mutex::new(None),
            work,
            queries: Mutex::new(query::Book::default()),
            vitals: vitals::Vitals::default(),
            passthrough,
            auth: Verifier::new(),
        },
    });
    shared.prepare(&shared.live())?;
    shared.metrics.reloaded(true);

    for n in 0..workers {
        let worker = Arc::clone(&shared);
        shared
            .runtime
            .vitals
            .spawn(format!("worker-{n}"), move || worker::work(&worker))?;
    }
    let scheduler = Arc::clone(&shared);
    shared
        .runtime
        .vitals
        .spawn("scheduler".into(), move || scheduler::run(&scheduler))?;
    http::serve(server, shared)
}

/// How many scans run at once: `worker_count`, but never more than the XDP
/// program has key slots, since a scan without a slot cannot get replies.
/// The jobs beyond wait in the queue, where a reload can still take them out.
fn scanners(worker_count: u64) -> u64 {
    let n = worker_count.min(u64::from(MAX_SCANS));
    if n < worker_count {
        tracing::info!(
            worker_count,
            "{n} scans run at once: the XDP program has {MAX_SCANS} key slots; the other tasks wait in the queue"
        );
    }
    n
}

/// What `/query` may scan: the scheduled tasks and the explicitly listed
/// `query_ranges` (cut into tasks of at most `max_cidr_size` the same way),
/// nothing else.
fn query_allowed(config: &Config, jobs: &[Job]) -> Result<Vec<Task>, DaemonError> {
    let mut allowed: Vec<Task> = jobs.iter().map(|j| j.task.clone()).collect();
    allowed.dedup();
    let s = &config.scanning;
    if !s.query_ranges.is_empty() {
        let spec = s.target_spec(s.query_ranges.iter().map(|t| t.0.clone()).collect());
        let extra =
            tasks::split(&spec, s.max_cidr_size.0, s.max_cidr_size_v6.0).map_err(|source| {
                DaemonError::Targets {
                    key: "scanning.query_ranges",
                    source,
                }
            })?;
        allowed.extend(
            extra
                .into_iter()
                .filter(|t| !allowed.contains(t))
                .collect::<Vec<_>>(),
        );
    }
    Ok(allowed)
}

/// Every task of the configuration, per protocol, and the groups: the
/// seed's plain targets together, with the `scanning` settings; each group
/// with its own. Entries whose addresses overlap once names are resolved
/// are refused, as the configuration refuses literal ones.
fn jobs(config: &Config) -> Result<(Vec<Job>, Groups), DaemonError> {
    let s = &config.scanning;
    let split = |ranges: Vec<String>| {
        tasks::split(
            &s.target_spec(ranges),
            s.max_cidr_size.0,
            s.max_cidr_size_v6.0,
        )
        .map_err(|source| DaemonError::Targets {
            key: "targets",
            source,
        })
    };
    let mut jobs = Vec::new();
    let mut add = |tasks: &[Task], protocols: &[Protocol], ports: &Ports| {
        for task in tasks {
            jobs.extend(protocols.iter().map(|&protocol| Job {
                task: task.clone(),
                protocol,
                ports: ports.clone(),
                query: None,
            }));
        }
    };
    let plain: Vec<String> = config
        .targets
        .iter()
        .filter(|e| e.group().is_none())
        .flat_map(|e| e.ranges().iter().map(|t| t.0.clone()))
        .collect();
    let plain = if plain.is_empty() {
        Vec::new()
    } else {
        split(plain)?
    };
    add(&plain, &s.protocols(), &s.port_range);
    let mut groups = Vec::new();
    for g in config.targets.iter().filter_map(|e| e.group()) {
        let tasks = split(g.ranges.iter().map(|t| t.0.clone()).collect())?;
        add(&tasks, &g.protocols(s), g.ports(s));
        groups.push(Group::new(g, s, tasks));
    }
    let owned = plain.iter().map(|t| (t.subnet, 0)).chain(
        groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.tasks.iter().map(move |t| (t.subnet, i + 1))),
    );
    if let Some((a, b)) = crate::config::first_overlap(owned) {
        let name = |i: usize| {
            i.checked_sub(1)
                .map_or("the plain targets".to_owned(), |g| {
                    format!("group {}", groups[g].name)
                })
        };
        return Err(DaemonError::Overlap(format!(
            "{} and {} overlap once resolved: an address belongs to one entry",
            name(b),
            name(a)
        )));
    }
    Ok((jobs, Groups::new(groups)))
}

/// Installs `guard:` when enabled, or replaces the table when a reload
/// changed it. At start, a table from an earlier run stays when the guard is
/// off (a firewall must not open up because the agent restarted); a reload
/// that turns it off removes it.
fn apply_guard(before: Option<&Live>, live: &Live) -> Result<(), DaemonError> {
    let old = before.and_then(|b| b.guard.as_ref());
    match (&live.guard, old) {
        (Some(new), old) if Some(new) != old => {
            new.apply()?;
            tracing::info!(
                port = new.port,
                allowed = new.allow.len(),
                "port guard applied"
            );
        }
        (None, Some(_)) => {
            crate::guard::remove()?;
            tracing::info!("port guard removed: guard.enabled is false now");
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ranges_are_cut_into_tasks_like_targets() {
        let config = Config::parse(
            "targets: [198.18.0.0/24]\nscanning:\n  query_ranges: [198.18.0.0/23, \"2001:db8::/119\"]\n",
        )
        .unwrap();
        let live = Live::new(config).unwrap();
        let allowed: Vec<String> = live.allowed.iter().map(Task::label).collect();
        assert_eq!(
            allowed,
            [
                "198.18.0.0/24",
                "198.18.1.0/24",
                "2001:db8::/120",
                "2001:db8::100/120"
            ]
        );
        // A /query scan of a part of a query range belongs to that range's task.
        let job = |net: &str, query| Job {
            task: Task {
                subnet: net.parse().unwrap(),
            },
            protocol: Protocol::Udp,
            ports: Ports::parse("53").unwrap(),
            query,
        };
        let owner = live.owner_of(&job("198.18.1.7/32", Some(1))).unwrap();
        assert_eq!(owner.task.label(), "198.18.1.0/24");
        assert!(live.keeps(&owner) && !live.wants(&job("198.18.2.7/32", Some(2))));
        assert!(
            !live.wants(&job("198.18.0.0/24", None)),
            "not scheduled: UDP is off"
        );
    }
}
