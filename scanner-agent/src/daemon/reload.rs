//! SIGHUP: reread the configuration and apply it without a restart. A bad
//! new configuration is rejected whole and the running one stays.

use std::{
    sync::{Arc, PoisonError, atomic::Ordering},
    time::Duration,
};

use super::{DaemonError, Job, Live, Shared, apply_guard, report, state};
use crate::config::Config;

/// Rereads the configuration file and swaps it in; on error nothing changes.
pub(super) fn reload(shared: &Shared) -> Result<(), DaemonError> {
    let outcome = apply(shared);
    shared.metrics.reloaded(outcome.is_ok());
    outcome
}

/// How long a reload waits for the scans of removed targets to stop. The
/// engine looks at its cancel flag before every batch, so they stop within
/// milliseconds; this bound only keeps a wedged sender from hanging reloads.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

fn apply(shared: &Shared) -> Result<(), DaemonError> {
    let config = Config::load(&shared.settings.path)?;
    let new = Live::new(config)?;
    shared.prepare(&new)?;
    let old = shared.live();
    // Before the swap: a guard that cannot be installed rejects the reload.
    apply_guard(Some(&old), &new)?;
    for w in restart_only(&old.config, &new.config) {
        tracing::warn!("{w}");
    }
    new.config
        .warnings()
        .iter()
        .for_each(|w| tracing::warn!("{w}"));
    let new = Arc::new(new);
    *shared
        .settings
        .live
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&new);
    shared.settings.generation.fetch_add(1, Ordering::Relaxed);
    // A changed password stops working at once.
    shared.runtime.auth.flush();
    // The reload is done only when nothing it removed is probed any more.
    match shared
        .runtime
        .work
        .withdraw(|job| new.wants(job), STOP_PATIENCE)
    {
        Ok((0, 0)) => {}
        Ok((dropped, cancelled)) => {
            tracing::info!(
                dropped,
                cancelled,
                "scans of removed targets taken out of the queue and stopped"
            );
        }
        Err(left) => {
            tracing::error!(
                left,
                "scans of removed targets did not stop within {STOP_PATIENCE:?}"
            );
        }
    }
    shared.count_queued();
    let gone: Vec<Job> = shared
        .state
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .filter(|job| !new.keeps(job))
        .cloned()
        .collect();
    for job in &gone {
        report::forget(shared, job);
    }
    // A changed policy applies at once, to what the last scans found.
    report::rejudge(shared);
    if !gone.is_empty() {
        state::persist(shared);
    }
    tracing::info!(path = %shared.settings.path.display(), "configuration reloaded");
    Ok(())
}

/// Settings that size what was built at start; a reload cannot change them.
fn restart_only(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.scanning, &new.scanning);
    [
        ("server.port", old.server.port != new.server.port),
        (
            "server.tls (on or off)",
            old.server.tls.is_some() != new.server.tls.is_some(),
        ),
        ("scanning.worker_count", o.worker_count != n.worker_count),
        (
            "scanning.task_queue_size",
            o.task_queue_size != n.task_queue_size,
        ),
        (
            "scanning.duration_metrics",
            o.duration_metrics != n.duration_metrics,
        ),
        ("the firewall section", old.firewall != new.firewall),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| format!("{key} changed: it takes effect at the next restart"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_a_reload_cannot_apply_are_named() {
        let old = Config::parse("targets: [198.18.0.2]\n").unwrap();
        let new = Config::parse(
            "targets: [198.18.0.2]\nscanning:\n  worker_count: 4\nfirewall:\n  enabled: false\n",
        )
        .unwrap();
        let warnings = restart_only(&old, &new);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("scanning.worker_count changed"));
        assert!(warnings[1].starts_with("the firewall section changed"));
        assert!(restart_only(&old, &old).is_empty());
    }
}
