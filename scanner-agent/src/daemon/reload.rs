//! SIGHUP: reread the configuration and apply it without a restart. A bad
//! new configuration is rejected whole and the running one stays.

use std::{
    sync::{Arc, PoisonError, atomic::Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{DaemonError, Live, Shared, report};
use crate::{config::Config, metrics::AgentMetrics};

/// Rereads the configuration file and swaps it in; on error nothing changes.
pub(super) fn reload(shared: &Shared) -> Result<(), DaemonError> {
    let outcome = apply(shared);
    record(&shared.agent, outcome.is_ok());
    outcome
}

fn apply(shared: &Shared) -> Result<(), DaemonError> {
    let config = Config::load(&shared.config_path)?;
    let new = Live::new(config)?;
    shared.prepare(&new)?;
    let old = shared.live();
    for w in restart_only(&old.config, &new.config) {
        tracing::warn!("{w}");
    }
    new.config
        .warnings()
        .iter()
        .for_each(|w| tracing::warn!("{w}"));
    for job in old.jobs.iter().filter(|j| !new.jobs.contains(j)) {
        report::forget(shared, job);
    }
    *shared.live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
    shared.generation.fetch_add(1, Ordering::Relaxed);
    shared.auth.flush();
    tracing::info!(path = %shared.config_path.display(), "configuration reloaded");
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
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| format!("{key} changed: it takes effect at the next restart"))
    .collect()
}

/// The outcome of a (re)load, as Prometheus reports its own.
pub(super) fn record(metrics: &AgentMetrics, ok: bool) {
    metrics.config_reload_ok.set(i64::from(ok));
    if ok {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        metrics.config_reload_time.set(now.as_secs() as i64);
    }
}
