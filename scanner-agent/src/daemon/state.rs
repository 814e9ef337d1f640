//! What the daemon remembers across restarts: each scheduled task's open
//! ports and the time of its last completed scan, so a restart neither
//! reports every port as newly opened nor immediately repeats every scan.

use std::{
    fs, io,
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) tasks: Vec<SavedTask>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedTask {
    pub(crate) target: String,
    pub(crate) protocol: String,
    pub(crate) ports: String,
    /// Unix time of the last completed scan.
    pub(crate) last_scan: u64,
    /// (address, protocol, port)
    pub(crate) open: Vec<(IpAddr, String, u16)>,
}

impl SavedTask {
    pub(crate) fn last_scan_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.last_scan)
    }
}

/// Reads the state file; a missing one is an empty state. A damaged one is
/// kept aside (never overwritten) and the daemon starts afresh.
pub(crate) fn load(path: &Path) -> Saved {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Saved::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read the state file: {e}; starting afresh");
            return Saved::default();
        }
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        let aside = path.with_extension("damaged");
        tracing::warn!(path = %path.display(), aside = %aside.display(), "the state file is damaged ({e}); kept aside, starting afresh");
        let _ = fs::rename(path, aside);
        Saved::default()
    })
}

/// Writes the state atomically (a temporary file renamed over the old one).
pub(crate) fn save(path: &Path, saved: &Saved) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(
        &tmp,
        serde_json::to_vec_pretty(saved).map_err(io::Error::other)?,
    )?;
    fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_damage() {
        let dir = std::env::temp_dir().join(format!("scanner-agent-state-{}", std::process::id()));
        let path = dir.join("state.json");
        assert_eq!(load(&path), Saved::default(), "missing file: empty state");
        let saved = Saved {
            tasks: vec![SavedTask {
                target: "198.18.0.0/24".into(),
                protocol: "tcp".into(),
                ports: "1-65535".into(),
                last_scan: 1_700_000_000,
                open: vec![("198.18.0.2".parse().unwrap(), "tcp".into(), 22)],
            }],
        };
        save(&path, &saved).unwrap();
        assert_eq!(load(&path), saved);
        fs::write(&path, "{not json").unwrap();
        assert_eq!(load(&path), Saved::default());
        assert_eq!(
            fs::read_to_string(path.with_extension("damaged")).unwrap(),
            "{not json",
            "kept aside"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
