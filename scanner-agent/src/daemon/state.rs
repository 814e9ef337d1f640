//! What the daemon remembers across restarts: each scheduled task's open
//! ports and the time of its last completed scan, so a restart neither
//! reports every port as newly opened nor immediately repeats every scan.
//! [`persist`] saves the tasks' state, [`restore`] reads it back at start.

use std::{
    collections::BTreeSet,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{
    Job, Live, Shared, report,
    task_state::{OpenPort, TaskState},
    tasks::Task,
};
use crate::config::Ports;

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) tasks: Vec<SavedTask>,
}

/// (address, protocol, port)
pub(crate) type SavedPort = (IpAddr, String, u16);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedTask {
    pub(crate) target: String,
    pub(crate) protocol: String,
    pub(crate) ports: String,
    /// Unix time of the last completed scheduled scan (none for a task only
    /// `/query` scans have touched).
    pub(crate) last_scan: Option<u64>,
    pub(crate) open: Vec<SavedPort>,
    /// Ports that closed in the last scan and read 0 until the next one.
    #[serde(default)]
    pub(crate) closed: Vec<SavedPort>,
    /// Hosts up and down in the last scheduled scan.
    #[serde(default)]
    pub(crate) hosts: Option<(u64, u64)>,
    /// How long the last scheduled scan took, in seconds.
    #[serde(default)]
    pub(crate) duration_seconds: Option<f64>,
    /// Hosts that answered the last scheduled scan (for the verdicts on
    /// required ports).
    #[serde(default)]
    pub(crate) up: Vec<IpAddr>,
    /// Hosts answering on nearly every port, with how many ports.
    #[serde(default)]
    pub(crate) every_port: Vec<(IpAddr, usize)>,
}

/// How far in the future a saved scan time may lie (clocks of a restored
/// machine drift) before the file counts as damaged.
const CLOCK_SLACK: Duration = Duration::from_secs(86_400);

impl SavedTask {
    pub(crate) fn last_scan_time(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_secs(self.last_scan?))
    }

    pub(crate) fn took(&self) -> Option<Duration> {
        self.duration_seconds
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    }

    /// What makes a restored task unusable: a time in the future, a
    /// duration that is no duration, a protocol the agent does not scan.
    fn check(&self, now: SystemTime) -> Result<(), String> {
        let name = format!("task {} {}", self.target, self.protocol);
        if let Some(secs) = self.last_scan {
            let at = self.last_scan_time();
            if at.is_none_or(|at| at > now + CLOCK_SLACK) {
                return Err(format!("{name}: last_scan {secs} lies in the future"));
            }
        }
        if self.duration_seconds.is_some() && self.took().is_none() {
            return Err(format!("{name}: duration_seconds is not a duration"));
        }
        let protocols = std::iter::once(&self.protocol)
            .chain(self.open.iter().chain(&self.closed).map(|p| &p.1));
        for protocol in protocols {
            if protocol.parse::<crate::scan::probes::Protocol>().is_err() {
                return Err(format!("{name}: unknown protocol {protocol:?}"));
            }
        }
        Ok(())
    }
}

/// The state file: read once at start, written after every scan.
pub(crate) struct StateFile {
    path: PathBuf,
    /// One writer at a time: saves share the temporary file.
    writer: Mutex<()>,
}

impl StateFile {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            writer: Mutex::new(()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state file; a missing one is an empty state. A damaged one
    /// (not JSON, not UTF-8, or with values no scan could have left) is kept
    /// aside as `.damaged`, never overwritten, and the daemon starts afresh.
    pub(crate) fn load(&self) -> Saved {
        let path = &self.path;
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Saved::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read the state file: {e}; starting afresh");
                return Saved::default();
            }
        };
        let now = SystemTime::now();
        let checked = serde_json::from_slice::<Saved>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|saved| {
                saved.tasks.iter().try_for_each(|t| t.check(now))?;
                Ok(saved)
            });
        checked.unwrap_or_else(|why| {
            let aside = path.with_extension("damaged");
            tracing::warn!(path = %path.display(), aside = %aside.display(), "the state file is damaged ({why}); kept aside, starting afresh");
            if let Err(e) = fs::rename(path, &aside) {
                tracing::warn!(path = %path.display(), "cannot keep the damaged state file aside: {e}");
            }
            Saved::default()
        })
    }

    /// Writes the state so that a crash at any moment leaves either the old
    /// or the new file whole: a fresh temporary file (never through a link
    /// planted at its name), synced, renamed over the old one, and the
    /// rename synced with its directory.
    pub(crate) fn save(&self, saved: &Saved) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(saved).map_err(io::Error::other)?;
        let _one_writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        // Left by a crash mid-write (or planted): unlinking removes a link
        // itself, never what it points to.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()
    }
}

/// Restores what the state file remembers of the tasks this configuration
/// keeps (scheduled ones and those `/query` results were merged into).
pub(super) fn restore(shared: &Shared) {
    let Some(file) = &shared.state.file else {
        return;
    };
    let saved = file.load();
    let live = shared.live();
    let mut tasks = shared
        .state
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for saved in saved.tasks {
        let Some(job) = saved_job(&live, &saved) else {
            continue;
        };
        let ports = |list: &[SavedPort]| -> BTreeSet<OpenPort> {
            list.iter()
                .filter_map(|(ip, proto, port)| Some((*ip, proto.parse().ok()?, *port)))
                .collect()
        };
        let state = TaskState {
            open: ports(&saved.open),
            closed: ports(&saved.closed),
            last_scan: saved.last_scan_time(),
            hosts: saved.hosts,
            took: saved.took(),
            up: saved.up.iter().copied().collect(),
            every_port: saved.every_port.iter().copied().collect(),
            ..TaskState::default()
        };
        report::restore(shared, &mut tasks, job, state);
    }
    let ips = tasks
        .values()
        .flat_map(|t| {
            t.open
                .iter()
                .chain(&t.closed)
                .map(|p| p.0)
                .chain(t.every_port.keys().copied())
        })
        .collect();
    report::count_open_ports(&shared.metrics, &tasks, ips);
    report::judge(&shared.metrics, &tasks, &live);
}

/// The task a saved entry describes, if this configuration keeps it.
fn saved_job(live: &Live, saved: &SavedTask) -> Option<Job> {
    let job = Job {
        task: Task {
            subnet: saved.target.parse().ok()?,
        },
        protocol: saved.protocol.parse().ok()?,
        ports: Ports::parse(&saved.ports).ok()?,
        query: None,
    };
    live.keeps(&job).then_some(job)
}

/// Writes every kept task's open ports, last scan and host counts.
pub(super) fn persist(shared: &Shared) {
    let Some(file) = &shared.state.file else {
        return;
    };
    let saved_ports = |set: &BTreeSet<OpenPort>| -> Vec<SavedPort> {
        set.iter()
            .map(|(ip, proto, port)| (*ip, proto.to_string(), *port))
            .collect()
    };
    let tasks = shared
        .state
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let saved = Saved {
        tasks: tasks
            .iter()
            .map(|(job, t)| SavedTask {
                target: job.task.label(),
                protocol: job.protocol.to_string(),
                ports: job.ports.spec.clone(),
                last_scan: t
                    .last_scan
                    .and_then(|l| l.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
                open: saved_ports(&t.open),
                closed: saved_ports(&t.closed),
                hosts: t.hosts,
                duration_seconds: t.took.map(|d| d.as_secs_f64()),
                up: t.up.iter().copied().collect(),
                every_port: t.every_port.iter().map(|(&ip, &n)| (ip, n)).collect(),
            })
            .collect(),
    };
    drop(tasks);
    if let Err(e) = file.save(&saved) {
        tracing::warn!(path = %file.path().display(), "cannot write the state file: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::symlink, sync::Arc, thread};

    use super::*;

    fn scratch(name: &str) -> (PathBuf, StateFile) {
        let dir =
            std::env::temp_dir().join(format!("scanner-agent-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("state.json");
        (dir, StateFile::new(&path))
    }

    fn task(last_scan: u64) -> SavedTask {
        SavedTask {
            target: "198.18.0.0/24".into(),
            protocol: "tcp".into(),
            ports: "1-65535".into(),
            last_scan: Some(last_scan),
            open: vec![("198.18.0.2".parse().unwrap(), "tcp".into(), 22)],
            closed: vec![("198.18.0.3".parse().unwrap(), "tcp".into(), 80)],
            hosts: Some((2, 252)),
            duration_seconds: Some(1.5),
            up: vec!["198.18.0.2".parse().unwrap(), "198.18.0.3".parse().unwrap()],
            every_port: vec![("198.18.0.9".parse().unwrap(), 65_000)],
        }
    }

    fn damaged(file: &StateFile, contents: &[u8]) {
        fs::write(file.path(), contents).unwrap();
        assert_eq!(file.load(), Saved::default(), "{contents:?}: starts afresh");
        assert_eq!(
            fs::read(file.path().with_extension("damaged")).unwrap(),
            contents,
            "kept aside"
        );
        assert!(!file.path().exists());
    }

    #[test]
    fn round_trips_and_keeps_every_damaged_file_aside() {
        let (dir, file) = scratch("damage");
        assert_eq!(file.load(), Saved::default(), "missing file: empty state");
        let saved = Saved {
            tasks: vec![task(1_700_000_000)],
        };
        file.save(&saved).unwrap();
        assert_eq!(file.load(), saved);
        damaged(&file, b"{not json");
        damaged(&file, b"{\"tasks\": [\"\xff\xfe\"]}");
        let future = serde_json::to_vec(&Saved {
            tasks: vec![task(u64::MAX)],
        })
        .unwrap();
        damaged(&file, &future);
        let mut sctp = task(1_700_000_000);
        sctp.protocol = "sctp".into();
        damaged(
            &file,
            &serde_json::to_vec(&Saved { tasks: vec![sctp] }).unwrap(),
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_of_the_previous_version_load() {
        let (dir, file) = scratch("old");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            file.path(),
            r#"{"tasks":[{"target":"198.18.0.0/24","protocol":"tcp","ports":"22","last_scan":1700000000,"open":[["198.18.0.2","tcp",22]]}]}"#,
        )
        .unwrap();
        let loaded = file.load();
        assert_eq!(loaded.tasks.len(), 1);
        assert_eq!(loaded.tasks[0].last_scan, Some(1_700_000_000));
        assert!(loaded.tasks[0].closed.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_saves_all_succeed_and_leave_a_whole_file() {
        let (dir, file) = scratch("concurrent");
        let file = Arc::new(file);
        let handles: Vec<_> = (0..16)
            .map(|n| {
                let file = Arc::clone(&file);
                thread::spawn(move || {
                    for i in 0..25 {
                        let saved = Saved {
                            tasks: (0..=(n + i) % 7).map(|k| task(1_700_000_000 + k)).collect(),
                        };
                        file.save(&saved).expect("every save succeeds");
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        let text = fs::read_to_string(file.path()).unwrap();
        serde_json::from_str::<Saved>(&text).expect("a whole file");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_followed() {
        let (dir, file) = scratch("symlink");
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        symlink(&victim, file.path().with_extension("tmp")).unwrap();
        let saved = Saved {
            tasks: vec![task(1_700_000_000)],
        };
        file.save(&saved).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(file.load(), saved);
        assert!(
            !fs::symlink_metadata(file.path())
                .unwrap()
                .file_type()
                .is_symlink()
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
