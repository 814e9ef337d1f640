//! How the daemon cuts its work: every configured target is split into
//! subnets no larger than `max_cidr_size` (IPv4) and `max_cidr_size_v6`
//! (IPv6), and every subnet is one task, scanned and reported on its own.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::scan::targets::{TargetError, TargetSet, TargetSpec};

/// One unit of scheduled work: a subnet, named as it appears in the metrics'
/// `target` label.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Task {
    pub subnet: IpNet,
}

impl Task {
    pub(super) fn label(&self) -> String {
        self.subnet.to_string()
    }
}

/// The tasks for `targets` (addresses, CIDR or first-last ranges, hostnames
/// when `spec.resolve_dns`), after the spec's exclusions and never-targets.
pub(super) fn split(spec: &TargetSpec, max_v4: u8, max_v6: u8) -> Result<Vec<Task>, TargetError> {
    // Building the set validates everything and applies the exclusions.
    let set = TargetSet::build(spec)?;
    let mut tasks = Vec::new();
    for net in set.networks() {
        let max = if matches!(net.addr(), IpAddr::V4(_)) {
            max_v4
        } else {
            max_v6
        };
        if net.prefix_len() >= max {
            tasks.push(Task { subnet: net });
        } else {
            tasks.extend(
                net.subnets(max)
                    .expect("a longer prefix")
                    .map(|subnet| Task { subnet }),
            );
        }
    }
    tasks.sort();
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `addr` lies inside one of the tasks (what `/query` may scan).
    fn covers(tasks: &[Task], addr: IpAddr) -> bool {
        tasks.iter().any(|t| t.subnet.contains(&addr))
    }

    fn labels(tasks: &[Task]) -> Vec<String> {
        tasks.iter().map(Task::label).collect()
    }

    #[test]
    fn targets_are_cut_into_subnets_of_at_most_the_maximum() {
        let spec = TargetSpec::new(vec![
            "198.18.0.0/22".into(),
            "198.19.0.7".into(),
            "2001:db8::/118".into(),
        ]);
        let tasks = split(&spec, 24, 120).unwrap();
        assert_eq!(
            labels(&tasks),
            [
                "198.18.0.0/24",
                "198.18.1.0/24",
                "198.18.2.0/24",
                "198.18.3.0/24",
                "198.19.0.7/32",
                "2001:db8::/120",
                "2001:db8::100/120",
                "2001:db8::200/120",
                "2001:db8::300/120",
            ]
        );
        assert!(covers(&tasks, "198.18.2.9".parse().unwrap()));
        assert!(!covers(&tasks, "198.19.0.8".parse().unwrap()));
    }

    #[test]
    fn exclusions_and_ranges_shape_the_tasks() {
        let mut spec =
            TargetSpec::new(vec!["198.18.0.0/23".into(), "198.19.0.1-198.19.0.6".into()]);
        spec.exclude = vec!["198.18.1.0/24".into()];
        let tasks = split(&spec, 24, 120).unwrap();
        assert_eq!(
            labels(&tasks),
            [
                "198.18.0.0/24",
                "198.19.0.1/32",
                "198.19.0.2/31",
                "198.19.0.4/31",
                "198.19.0.6/32"
            ]
        );
    }
}
