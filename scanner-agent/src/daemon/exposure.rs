//! The exposure policy: per target group, the open ports that are neither
//! allowed nor required, the required ports missing on hosts that answered,
//! and the hosts that answer on (nearly) every port. Judged from what the
//! tasks remember of their last scans, so a changed policy applies at once,
//! without a rescan, and a restart shows the same verdicts.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use ipnet::IpNet;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{
    Job,
    task_state::{OpenPort, TaskState},
    tasks::Task,
};
use crate::{
    config::{PortPolicy, Ports, Scanning, TargetGroup},
    scan::probes::Protocol,
};

/// A configured group, as the daemon uses it.
pub(super) struct Group {
    pub(super) name: String,
    /// Its tasks (after resolution and exclusions).
    pub(super) tasks: Vec<Task>,
    pub(super) ports: Ports,
    pub(super) interval: Duration,
    /// `allow` and `require`; none when the group has neither.
    policy: Option<(PortPolicy, PortPolicy)>,
}

impl Group {
    pub(super) fn new(g: &TargetGroup, scanning: &Scanning, tasks: Vec<Task>) -> Self {
        Self {
            name: g.name.clone(),
            tasks,
            ports: g.ports(scanning).clone(),
            interval: Duration::from_secs(g.interval(scanning)),
            policy: g.has_policy().then(|| (g.allow.clone(), g.require.clone())),
        }
    }

    /// Whether `ip` lies inside one of the group's tasks.
    fn holds(&self, ip: IpAddr) -> bool {
        self.tasks.iter().any(|t| t.subnet.contains(&ip))
    }

    /// What the policy says of an open port: `required`, `allowed` or
    /// `unexpected`; none for a group without a policy.
    pub(super) fn verdict(&self, protocol: Protocol, port: u16) -> Option<&'static str> {
        let (allow, require) = self.policy.as_ref()?;
        Some(if require.contains(protocol, port) {
            "required"
        } else if allow.contains(protocol, port) {
            "allowed"
        } else {
            "unexpected"
        })
    }
}

/// The configured groups, found by task in constant time: every scan's
/// results are judged against them, on sites with thousands of tasks.
#[derive(Default)]
pub(super) struct Groups {
    list: Vec<Group>,
    by_task: HashMap<IpNet, usize>,
}

impl Groups {
    pub(super) fn new(list: Vec<Group>) -> Self {
        let by_task = list
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.tasks.iter().map(move |t| (t.subnet, i)))
            .collect();
        Self { list, by_task }
    }

    /// The group a scheduled task belongs to (tasks are what the groups
    /// were cut into, so an exact match).
    pub(super) fn of_task(&self, task: &Task) -> Option<&Group> {
        self.by_task.get(&task.subnet).map(|&i| &self.list[i])
    }

    /// The group whose addresses include `ip`.
    pub(super) fn of_addr(&self, ip: IpAddr) -> Option<&Group> {
        self.list.iter().find(|g| g.holds(ip))
    }
}

/// Per group with a policy: its unexpected ports, required ports missing,
/// and hosts up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) unexpected: usize,
    pub(crate) missing: usize,
    pub(crate) hosts_up: usize,
}

/// Everything the exposure families show.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdicts {
    /// (group, port) open but neither allowed nor required.
    pub(crate) unexpected: BTreeSet<(String, OpenPort)>,
    /// (group, port) required but not open on a host that answered.
    pub(crate) missing: BTreeSet<(String, OpenPort)>,
    pub(crate) counts: BTreeMap<String, Counts>,
    /// Hosts reported as answering on every port instead of port by port.
    pub(crate) every_port: BTreeSet<IpAddr>,
}

/// The verdicts on what `tasks` remember, under `groups`' policies.
pub(super) fn judge(groups: &Groups, tasks: &HashMap<Job, TaskState>) -> Verdicts {
    let mut v = Verdicts::default();
    let mut up: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    for g in groups.list.iter().filter(|g| g.policy.is_some()) {
        v.counts.insert(g.name.clone(), Counts::default());
        up.insert(&g.name, BTreeSet::new());
    }
    for (job, state) in tasks {
        v.every_port.extend(state.every_port.keys());
        let Some(g) = groups.of_task(&job.task) else {
            continue;
        };
        let Some((_, require)) = &g.policy else {
            continue;
        };
        for &port in &state.open {
            if g.verdict(port.1, port.2) == Some("unexpected") {
                v.unexpected.insert((g.name.clone(), port));
            }
        }
        let required = require
            .ports(job.protocol)
            .map(|p| p.list.as_slice())
            .unwrap_or_default();
        for &ip in &state.up {
            up.entry(&g.name).or_default().insert(ip);
            if state.every_port.contains_key(&ip) {
                continue;
            }
            for &port in required {
                let want = (ip, job.protocol, port);
                if job.ports.list.index_of(port).is_some() && !state.open.contains(&want) {
                    v.missing.insert((g.name.clone(), want));
                }
            }
        }
    }
    for (name, _) in &v.unexpected {
        v.counts.entry(name.clone()).or_default().unexpected += 1;
    }
    for (name, _) in &v.missing {
        v.counts.entry(name.clone()).or_default().missing += 1;
    }
    for (name, hosts) in up {
        v.counts.entry(name.to_owned()).or_default().hosts_up = hosts.len();
    }
    v
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VerdictLabels {
    name: String,
    ip: String,
    port: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GroupLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HostLabels {
    ip: String,
}

fn verdict_labels((name, (ip, protocol, port)): &(String, OpenPort)) -> VerdictLabels {
    VerdictLabels {
        name: name.clone(),
        ip: ip.to_string(),
        port: port.to_string(),
        protocol: protocol.to_string(),
    }
}

/// The exposure families, and the verdicts they show now (to remove
/// exactly the series that are no longer true: clearing and refilling
/// would let a scrape in between see an alert's series vanish).
#[derive(Default)]
pub struct ExposureMetrics {
    unexpected_open: Family<VerdictLabels, Gauge>,
    required_missing: Family<VerdictLabels, Gauge>,
    unexpected_open_ports: Family<GroupLabels, Gauge>,
    required_missing_ports: Family<GroupLabels, Gauge>,
    hosts_up: Family<GroupLabels, Gauge>,
    every_port: Family<HostLabels, Gauge>,
    shown: Mutex<Verdicts>,
}

impl ExposureMetrics {
    /// The families' names, in the order [`ExposureMetrics::register`]
    /// registers them (gauges: a family without samples is not encoded).
    pub const FAMILIES: [&str; 6] = [
        "exposure_unexpected_open",
        "exposure_required_missing",
        "exposure_unexpected_open_ports",
        "exposure_required_missing_ports",
        "exposure_hosts_up",
        "host_answers_every_port",
    ];

    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        let [
            unexpected,
            missing,
            unexpected_ports,
            missing_ports,
            hosts_up,
            every_port,
        ] = Self::FAMILIES;
        r.register(
            unexpected,
            "An open port that its target group neither allows nor requires",
            m.unexpected_open.clone(),
        );
        r.register(
            missing,
            "A port the target group requires that is not open on a host that answered the scan",
            m.required_missing.clone(),
        );
        r.register(
            unexpected_ports,
            "Open ports of the target group that it neither allows nor requires",
            m.unexpected_open_ports.clone(),
        );
        r.register(
            missing_ports,
            "Required ports of the target group not open on hosts that answered",
            m.required_missing_ports.clone(),
        );
        r.register(
            hosts_up,
            "Hosts of the target group that answered its last scans",
            m.hosts_up.clone(),
        );
        r.register(
            every_port,
            "The host answers on nearly every scanned port (a SYN proxy, tarpit or middlebox); its ports are not exported one by one",
            m.every_port.clone(),
        );
        m
    }

    /// Shows `new`, at most `room` per-port verdict series (the rest are
    /// counted in `dropped`), removing what is no longer true.
    pub(crate) fn show(&self, new: Verdicts, mut room: usize, dropped: &Counter) {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        for (family, old, now) in [
            (&self.unexpected_open, &shown.unexpected, &new.unexpected),
            (&self.required_missing, &shown.missing, &new.missing),
        ] {
            for gone in old.difference(now) {
                family.remove(&verdict_labels(gone));
            }
            for verdict in now {
                if room == 0 {
                    dropped.inc();
                    family.remove(&verdict_labels(verdict));
                    continue;
                }
                room -= 1;
                family.get_or_create(&verdict_labels(verdict)).set(1);
            }
        }
        for name in shown.counts.keys().filter(|n| !new.counts.contains_key(*n)) {
            let labels = GroupLabels { name: name.clone() };
            self.unexpected_open_ports.remove(&labels);
            self.required_missing_ports.remove(&labels);
            self.hosts_up.remove(&labels);
        }
        for (name, c) in &new.counts {
            let labels = GroupLabels { name: name.clone() };
            self.unexpected_open_ports
                .get_or_create(&labels)
                .set(c.unexpected as i64);
            self.required_missing_ports
                .get_or_create(&labels)
                .set(c.missing as i64);
            self.hosts_up.get_or_create(&labels).set(c.hosts_up as i64);
        }
        for ip in shown.every_port.difference(&new.every_port) {
            self.every_port.remove(&HostLabels { ip: ip.to_string() });
        }
        for ip in &new.every_port {
            self.every_port
                .get_or_create(&HostLabels { ip: ip.to_string() })
                .set(1);
        }
        *shown = new;
    }
}

/// The hosts of one scan that answered on more than `share` of its
/// `scanned` ports (at least 100 of them, so a scan of a few ports never
/// flags a host), with how many they answered on.
pub(super) fn answering_every_port(
    found: &BTreeSet<OpenPort>,
    scanned: usize,
    share: f64,
) -> BTreeMap<IpAddr, usize> {
    let mut per_host: BTreeMap<IpAddr, usize> = BTreeMap::new();
    if scanned < 100 || share >= 1.0 {
        return per_host;
    }
    for p in found {
        *per_host.entry(p.0).or_default() += 1;
    }
    per_host.retain(|_, n| *n as f64 > share * scanned as f64);
    per_host
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn groups(yaml: &str) -> (Config, Groups) {
        let config = Config::parse(yaml).unwrap();
        let groups = config
            .targets
            .iter()
            .filter_map(|e| e.group())
            .map(|g| {
                let tasks = g
                    .ranges
                    .iter()
                    .map(|t| Task {
                        subnet: t.0.parse().unwrap(),
                    })
                    .collect();
                Group::new(g, &config.scanning, tasks)
            })
            .collect();
        (config, Groups::new(groups))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn task(net: &str, ports: &str, open: &[(&str, u16)], up: &[&str]) -> (Job, TaskState) {
        let job = Job {
            task: Task {
                subnet: net.parse().unwrap(),
            },
            protocol: Protocol::Tcp,
            ports: Ports::parse(ports).unwrap(),
            query: None,
        };
        let state = TaskState {
            open: open
                .iter()
                .map(|&(a, p)| (ip(a), Protocol::Tcp, p))
                .collect(),
            up: up.iter().map(|a| ip(a)).collect(),
            ..TaskState::default()
        };
        (job, state)
    }

    const TWO_GROUPS: &str = "
targets:
  - name: data
    ranges: [198.18.20.0/26]
    port_range: '1-1000'
    allow: {tcp: '22,100-200'}
    require: {tcp: '443'}
  - name: open-minded
    ranges: [198.18.30.0/26]
    port_range: '1-1000'
";

    #[test]
    fn unexpected_is_open_and_neither_allowed_nor_required() {
        let (_, g) = groups(TWO_GROUPS);
        let tasks = HashMap::from([
            task(
                "198.18.20.0/26",
                "1-1000",
                &[
                    ("198.18.20.2", 22),
                    ("198.18.20.2", 443),
                    ("198.18.20.2", 999),
                    ("198.18.20.3", 150),
                ],
                &["198.18.20.2", "198.18.20.3", "198.18.20.4"],
            ),
            task(
                "198.18.30.0/26",
                "1-1000",
                &[("198.18.30.2", 999)],
                &["198.18.30.2"],
            ),
        ]);
        let v = judge(&g, &tasks);
        let unexpected: Vec<_> = v
            .unexpected
            .iter()
            .map(|(n, p)| (n.as_str(), p.0, p.2))
            .collect();
        assert_eq!(
            unexpected,
            [("data", ip("198.18.20.2"), 999)],
            "a group without policy judges nothing"
        );
        let missing: Vec<_> = v.missing.iter().map(|(_, p)| (p.0, p.2)).collect();
        assert_eq!(
            missing,
            [(ip("198.18.20.3"), 443), (ip("198.18.20.4"), 443)],
            "required on every host that answered, only those"
        );
        assert_eq!(
            v.counts,
            BTreeMap::from([(
                "data".to_owned(),
                Counts {
                    unexpected: 1,
                    missing: 2,
                    hosts_up: 3
                }
            )]),
        );
        let (data, open_minded) = (&g.list[0], &g.list[1]);
        assert_eq!(data.verdict(Protocol::Tcp, 443), Some("required"));
        assert_eq!(data.verdict(Protocol::Tcp, 150), Some("allowed"));
        assert_eq!(data.verdict(Protocol::Udp, 150), Some("unexpected"));
        assert_eq!(open_minded.verdict(Protocol::Tcp, 999), None);
        assert_eq!(
            g.of_addr(ip("198.18.30.9")).map(|g| g.name.as_str()),
            Some("open-minded")
        );
        assert!(g.of_addr(ip("198.18.40.9")).is_none());
    }

    #[test]
    fn verdict_series_stay_within_their_room_and_go_when_no_longer_true() {
        let mut registry = Registry::default();
        let m = ExposureMetrics::register(&mut registry);
        let dropped = Counter::default();
        let port = |p: u16| ("data".to_owned(), (ip("198.18.0.2"), Protocol::Tcp, p));
        let verdicts = |ports: &[u16]| Verdicts {
            unexpected: ports.iter().map(|&p| port(p)).collect(),
            counts: BTreeMap::from([(
                "data".to_owned(),
                Counts {
                    unexpected: ports.len(),
                    ..Counts::default()
                },
            )]),
            ..Verdicts::default()
        };
        let text = |r: &Registry| crate::web::exposition::encode_text(r);
        m.show(verdicts(&[22, 25, 80]), 2, &dropped);
        let t = text(&registry);
        assert_eq!(t.matches("exposure_unexpected_open{").count(), 2, "{t}");
        assert_eq!(dropped.get(), 1, "the third is counted, not shown");
        assert!(
            t.contains("exposure_unexpected_open_ports{name=\"data\"} 3"),
            "counts are exact: {t}"
        );
        m.show(verdicts(&[80]), 10, &dropped);
        let t = text(&registry);
        assert!(
            !t.contains("port=\"22\"") && !t.contains("port=\"25\""),
            "{t}"
        );
        assert!(t.contains("exposure_unexpected_open{name=\"data\",ip=\"198.18.0.2\",port=\"80\",protocol=\"tcp\"} 1"), "{t}");
        m.show(Verdicts::default(), 10, &dropped);
        let t = text(&registry);
        assert!(
            !t.contains("name=\"data\""),
            "a removed group leaves no series: {t}"
        );
    }

    #[test]
    fn a_group_with_a_policy_and_no_results_reads_zero() {
        let (_, g) = groups(TWO_GROUPS);
        let v = judge(&g, &HashMap::new());
        assert_eq!(v.counts.get("data"), Some(&Counts::default()));
        assert!(v.unexpected.is_empty() && v.missing.is_empty());
    }

    #[test]
    fn a_host_answering_every_port_is_flagged_only_past_the_share_of_100_ports() {
        let host = |n: u16| -> BTreeSet<OpenPort> {
            (1..=n)
                .map(|p| (ip("198.18.0.2"), Protocol::Tcp, p))
                .collect()
        };
        assert_eq!(answering_every_port(&host(91), 100, 0.9).len(), 1);
        assert!(
            answering_every_port(&host(90), 100, 0.9).is_empty(),
            "more than the share"
        );
        assert!(
            answering_every_port(&host(99), 99, 0.9).is_empty(),
            "fewer than 100 scanned"
        );
        assert!(
            answering_every_port(&host(100), 100, 1.0).is_empty(),
            "1.0: off"
        );
    }
}
