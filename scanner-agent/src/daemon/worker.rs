//! The workers: each takes a job from the queue, scans it through the
//! shared XDP program, and turns the outcome into metrics.

use std::{
    sync::{Arc, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use super::{Capture, Job, Shared, query, report, state};
use crate::scan::{
    self, Attachment, ScanError, ScanOptions, capture::CaptureError, engine::EngineError,
    probes::Shard, results::PortState,
};

pub(super) fn work(shared: &Shared) {
    loop {
        let taken = shared.runtime.work.take();
        shared.count_queued();
        let job = &taken.job;
        let started = Instant::now();
        query::started(shared, job);
        let outcome = scan_job(shared, job, &taken.cancel);
        let labels = job.labels();
        match &outcome {
            Ok(report) => {
                shared.metrics.scanned(report);
                let took = started.elapsed();
                if report::apply(shared, job, report, took) {
                    // Saved before it counts: a scan the metrics show as
                    // done is in the state file.
                    state::persist(shared);
                    shared.metrics.succeeded(&labels, took, job.query.is_some());
                }
                *shared
                    .state
                    .last_completed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(SystemTime::now());
            }
            Err(ScanError::Engine(EngineError::Cancelled)) => {
                tracing::info!(target = %labels.target, protocol = %labels.protocol, "scan cancelled: its target was removed by a reload");
            }
            Err(e) => {
                let error_type = match e {
                    ScanError::Engine(EngineError::TimedOut) => "timeout",
                    ScanError::Privilege(_) => "permission",
                    _ => "other",
                };
                tracing::warn!(target = %labels.target, protocol = %labels.protocol, error_type, "scan failed: {e}");
                shared.metrics.failed(&labels, error_type);
            }
        }
        if job.query.is_some() {
            query::keep_series(shared, &labels);
        }
        // `/query/{id}` says done once the metrics show the results too.
        query::finished(shared, job, &outcome);
        // Ending the job here, after its results are in, is what a reload
        // waiting for removed targets' scans to stop waits for.
        drop(taken);
    }
}

fn scan_job(
    shared: &Shared,
    job: &Job,
    cancel: &crate::scan::engine::Cancel,
) -> Result<scan::ScanReport, ScanError> {
    let Some(Capture { hub, route }) = shared.capture() else {
        // Unreachable in practice: nothing is allowed to scan before the program is attached.
        return Err(CaptureError::Load("the XDP program is not attached".into()).into());
    };
    let live = shared.live();
    let s = &live.config.scanning;
    // A fleet splits scheduled tasks (`scanning.shard`); a `/query` scan is
    // one agent's answer to its caller and covers everything it asks for.
    let scheduled = job.query.is_none();
    let shard = if scheduled { s.shard } else { Shard::WHOLE };
    let seed = match s.seed {
        Some(seed) if scheduled => Some(seed),
        None if shard != Shard::WHOLE => Some(scan::task_seed(
            &job.task.label(),
            &job.ports.list,
            job.protocol,
        )),
        _ => None,
    };
    let opts = ScanOptions {
        targets: s.target_spec(vec![job.task.label()]),
        ports: job.ports.list.clone(),
        protocols: vec![job.protocol],
        tuning: s.tuning(),
        interface: Some(route.interface.clone()),
        host_discovery: !s.disable_host_discovery,
        shard,
        seed,
        states: vec![PortState::Open],
        // A timeout beyond what the clock can hold is no deadline at all.
        deadline: Instant::now().checked_add(Duration::from_secs(s.timeout.0)),
        cancel: Some(Arc::clone(cancel)),
        budget: live.budget.clone(),
        link: s.link_policy(),
        xdp_mode: s.xdp_mode,
    };
    scan::run(
        &opts,
        Attachment::Shared {
            hub: &hub,
            route: &route,
        },
    )
}
