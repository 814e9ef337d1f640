//! One scan from start to end: route, attach, send, collect, report.

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use scanner_common::{ProbeKey, ReplyKind, maps::Settings};

use crate::{
    capture::{AttachMode, Capture, CaptureError, ReplyStream, XdpCounters},
    privileges::{self, MissingCapability},
    probes::{self, Probe, ProbePlan, RST_LEN, SYN_LEN},
    results::ResultSet,
    route::{self, RouteError},
    targets::{PortList, TargetSet},
    transmit::{Pacer, RawSender, TransmitError},
};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Privilege(#[from] MissingCapability),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Transmit(#[from] TransmitError),
    #[error("the reply reader failed: {0}")]
    Receive(String),
}

impl ScanError {
    /// Errors the caller can fix (input, privileges, interface), as opposed
    /// to failures during the scan.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::Privilege(_)
                | Self::Route(_)
                | Self::Capture(
                    CaptureError::NoInterface(_)
                        | CaptureError::AlreadyAttached(_)
                        | CaptureError::CannotAttach { .. }
                )
        )
    }
}

#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub targets: TargetSet,
    pub ports: PortList,
    /// Probes per second.
    pub rate: u64,
    /// How long to listen for late replies after the last probe.
    pub wait: Duration,
    pub interface: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ScanStats {
    pub interface: String,
    pub mode: AttachMode,
    pub probes: u64,
    pub send_time: Duration,
    pub total_time: Duration,
    pub xdp: XdpCounters,
    /// Times the kernel's send queue was full and a batch had to wait.
    pub queue_full: u64,
}

impl ScanStats {
    pub fn achieved_rate(&self) -> f64 {
        self.probes as f64 / self.send_time.as_secs_f64().max(1e-9)
    }
}

pub struct ScanReport {
    pub results: ResultSet,
    pub stats: ScanStats,
}

/// The key slot a one-shot scan uses (the daemon hands out the others).
const SLOT: u32 = 0;

pub fn run(opts: &ScanOptions) -> Result<ScanReport, ScanError> {
    privileges::check_scan()?;
    let firsts = opts.targets.range_starts();
    let route = route::lookup(firsts, opts.interface.as_deref())?;
    let settings = route::probe_ports()?;
    tracing::info!(interface = %route.interface, source = %route.source, "route chosen");
    let started = Instant::now();

    let (mut capture, stream) = Capture::attach(&route.interface, settings)?;
    let key = probes::new_key();
    capture.activate(SLOT, key)?;

    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = Arc::clone(&stop);
        let rst = RawSender::open(&route.interface)?;
        thread::Builder::new()
            .name("replies".into())
            .spawn(move || receive(stream, rst, key, &stop))
            .map_err(|e| ScanError::Receive(e.to_string()))?
    };

    let plan = ProbePlan::new(opts.targets.clone(), opts.ports.clone(), probes::new_key());
    let mut sender = RawSender::open(&route.interface)?;
    let send_started = Instant::now();
    let sent = send(&plan, &mut sender, &key, route.source, settings, opts.rate);
    let send_time = send_started.elapsed();
    thread::sleep(opts.wait);
    stop.store(true, Ordering::Relaxed);
    let results = receiver
        .join()
        .map_err(|_| ScanError::Receive("reader thread panicked".into()))??;
    sent?;

    let xdp = capture.counters()?;
    capture.deactivate(SLOT)?;
    let stats = ScanStats {
        interface: route.interface,
        mode: capture.mode(),
        probes: plan.len(),
        send_time,
        total_time: started.elapsed(),
        xdp,
        queue_full: sender.queue_full,
    };
    Ok(ScanReport { results, stats })
}

/// Sends every probe of the plan, paced to `rate`.
fn send(
    plan: &ProbePlan,
    sender: &mut RawSender,
    key: &ProbeKey,
    source: Ipv4Addr,
    settings: Settings,
    rate: u64,
) -> Result<(), TransmitError> {
    let pacer = Pacer::new(rate);
    let batch = pacer.batch();
    let slot_base = settings.port_base + SLOT as u16 * settings.ports_per_slot;
    let mut packets = vec![[0u8; SYN_LEN]; batch];
    let mut dests = vec![Ipv4Addr::UNSPECIFIED; batch];
    let mut i = 0;
    while i < plan.len() {
        let n = (plan.len() - i).min(batch as u64) as usize;
        for j in 0..n {
            let index = i + j as u64;
            let probe = plan.get(index);
            let local_port = slot_base + (index % u64::from(settings.ports_per_slot)) as u16;
            probes::write_syn(&mut packets[j], key, source, local_port, probe);
            dests[j] = probe.addr;
        }
        pacer.wait(i);
        sender.send_all(&packets[..n], &dests[..n])?;
        i += n as u64;
    }
    Ok(())
}

/// Collects replies until told to stop, closing every half-open connection
/// the target opened for us with a RST.
fn receive(
    mut stream: ReplyStream,
    mut rst: RawSender,
    key: ProbeKey,
    stop: &AtomicBool,
) -> Result<ResultSet, ScanError> {
    let mut results = ResultSet::default();
    let mut rst_packet = [0u8; RST_LEN];
    let mut rst_error = None;
    loop {
        // Read the flag before draining, so the last drain follows it.
        let stopping = stop.load(Ordering::Relaxed);
        stream
            .poll(Duration::from_millis(20), |event| {
                if event.slot as u32 != SLOT {
                    return;
                }
                results.record(&event);
                if event.kind() == Some(ReplyKind::SynAck) {
                    let local = Ipv4Addr::new(
                        event.local[0],
                        event.local[1],
                        event.local[2],
                        event.local[3],
                    );
                    let remote = Ipv4Addr::new(
                        event.remote[0],
                        event.remote[1],
                        event.remote[2],
                        event.remote[3],
                    );
                    let probe = Probe {
                        addr: remote,
                        port: event.remote_port,
                    };
                    probes::write_rst(&mut rst_packet, &key, local, event.local_port, probe);
                    if let Err(e) = rst.send_all(&[&rst_packet], &[remote]) {
                        rst_error.get_or_insert(e);
                    }
                }
            })
            .map_err(|e| ScanError::Receive(e.to_string()))?;
        if let Some(e) = rst_error.take() {
            tracing::warn!("could not send a RST to close a half-open connection: {e}");
        }
        if stopping {
            return Ok(results);
        }
    }
}
