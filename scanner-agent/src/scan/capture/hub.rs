//! One attached XDP program serving every scan in flight: each scan leases
//! a key slot, and a reader thread hands each reply to the scan whose slot
//! it carries.

use std::{
    io,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use scanner_common::{
    ProbeKey, ReplyEvent,
    maps::{MAX_SCANS, Settings},
};

use super::{AttachMode, Capture, CaptureError, ModeSetting, XdpCounters};
use crate::scan::transmit::{Link, LinkPolicy, LinkWatch};

/// Where a scan gets its replies from.
pub trait Replies {
    /// Waits up to `timeout` for replies and hands each one to `on_reply`.
    fn poll(&mut self, timeout: Duration, on_reply: impl FnMut(ReplyEvent)) -> io::Result<usize>;
}

impl Replies for super::ReplyStream {
    fn poll(&mut self, timeout: Duration, on_reply: impl FnMut(ReplyEvent)) -> io::Result<usize> {
        super::ReplyStream::poll(self, timeout, on_reply)
    }
}

type Routes = [Option<Sender<ReplyEvent>>; MAX_SCANS as usize];

struct Shared {
    capture: Mutex<Capture>,
    routes: Mutex<Routes>,
    stop: AtomicBool,
}

/// The attached program, its reader thread and the slot leases.
pub struct Hub {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    /// The link the scans share: its other traffic and their share of it.
    watch: LinkWatch,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("all {MAX_SCANS} scan slots are in use")]
    Full,
}

impl Hub {
    /// Attaches the program to `interface` (in a mode of `mode`) and
    /// starts reading replies.
    pub fn start(interface: &str, settings: Settings, mode: ModeSetting) -> Result<Self, HubError> {
        let (capture, mut stream) = Capture::attach(interface, settings, mode)?;
        let shared = Arc::new(Shared {
            capture: Mutex::new(capture),
            routes: Mutex::new(Default::default()),
            stop: AtomicBool::new(false),
        });
        let reader = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("xdp-replies".into())
                .spawn(move || {
                    let _log = LogPanic;
                    let mut batch = Vec::new();
                    while !shared.stop.load(Ordering::Relaxed) {
                        let result = stream.poll(Duration::from_millis(50), |ev| batch.push(ev));
                        let routes = shared.routes.lock().unwrap_or_else(PoisonError::into_inner);
                        for ev in batch.drain(..) {
                            if let Some(Some(tx)) = routes.get(usize::from(ev.slot)) {
                                let _ = tx.send(ev);
                            }
                        }
                        drop(routes);
                        if let Err(e) = result {
                            tracing::error!("reading the XDP ring buffer failed: {e}");
                            return;
                        }
                    }
                })
                .map_err(|e| CaptureError::Load(format!("cannot start the reply reader: {e}")))?
        };
        let watch = LinkWatch::start(Link::new(interface, LinkPolicy::default()))
            .map_err(|e| CaptureError::Load(format!("cannot start the link watch: {e}")))?;
        Ok(Self {
            shared,
            reader: Some(reader),
            watch,
        })
    }

    /// The link the program is attached to, as every scan on it shares it.
    pub fn link(&self) -> &Arc<Link> {
        self.watch.link()
    }

    pub fn settings(&self) -> Settings {
        self.capture().settings()
    }

    fn capture(&self) -> std::sync::MutexGuard<'_, Capture> {
        self.shared
            .capture
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn mode(&self) -> AttachMode {
        self.capture().mode()
    }

    pub fn counters(&self) -> Result<XdpCounters, CaptureError> {
        self.capture().counters()
    }

    /// Whether replies still arrive: the reader runs and the interface the
    /// program is attached to still exists (its removal detaches it).
    pub fn healthy(&self) -> bool {
        let reading = self.reader.as_ref().is_some_and(|r| !r.is_finished());
        reading && nix::net::if_::if_nametoindex(self.capture().interface()).is_ok()
    }

    /// Reserves a slot for a scan with `key` that sends probes of
    /// `protocols` (see [`Capture::activate`]); the program accepts its
    /// replies until the lease is dropped.
    pub fn lease(&self, key: ProbeKey, protocols: u64) -> Result<Lease, HubError> {
        let mut routes = self
            .shared
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = routes
            .iter()
            .position(Option::is_none)
            .ok_or(HubError::Full)?;
        let (tx, rx) = mpsc::channel();
        self.capture().activate(slot as u32, key, protocols)?;
        routes[slot] = Some(tx);
        Ok(Lease {
            slot: slot as u32,
            rx,
            shared: Arc::clone(&self.shared),
        })
    }
}

/// A reader that dies leaves `healthy()` false (so `/healthz` answers 503);
/// a panic is logged too, since its message only went to stderr.
struct LogPanic;

impl Drop for LogPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            tracing::error!("the XDP reply reader panicked: replies cannot be received");
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// One scan's slot: its replies arrive here.
pub struct Lease {
    slot: u32,
    rx: Receiver<ReplyEvent>,
    shared: Arc<Shared>,
}

impl Lease {
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

impl Replies for Lease {
    fn poll(
        &mut self,
        timeout: Duration,
        mut on_reply: impl FnMut(ReplyEvent),
    ) -> io::Result<usize> {
        let first = match self.rx.recv_timeout(timeout) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => return Ok(0),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other("the XDP reply reader stopped"));
            }
        };
        on_reply(first);
        let mut handled = 1;
        while let Ok(ev) = self.rx.try_recv() {
            on_reply(ev);
            handled += 1;
        }
        Ok(handled)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut capture = self
            .shared
            .capture
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = capture.deactivate(self.slot) {
            tracing::warn!(slot = self.slot, "could not clear a scan key: {e}");
        }
        drop(capture);
        self.shared
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[self.slot as usize] = None;
    }
}
