//! The listeners' own accept loop, so that no client can hold the agent:
//! a request's headers (and the TLS handshake before the first) must arrive
//! within [`HEADER_TIMEOUT`] of its first byte (of the connection, for the
//! first request); a kept-alive connection is closed after [`IDLE_TIMEOUT`]
//! without a request, and a response the client has not taken within
//! [`IDLE_TIMEOUT`] is cut off; and at most `server.max_connections` are
//! open on all listeners together. At the cap a new connection closes an
//! old one that has not sent a complete request (the oldest first), else
//! the longest idle one; one in the middle of a request is never closed, and
//! only when every connection is busy is the new one refused. So sockets
//! that send nothing, or a byte now and then, cannot lock Prometheus out.
//!
//! hyper's own header timeout is not used: it also runs while a kept-alive
//! connection waits for its next request, which would close it after 10 s.

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::{Request, body::Incoming, server::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Notify,
    time::{Instant, sleep_until},
};
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

/// Time for a request's headers, from its first byte (from the connection's
/// start for the first request, TLS handshake included).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a kept-alive connection may wait for its next request, and a
/// response may wait for the client to take it.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a connection is in its life; what it may be closed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Accepted, no complete request yet (TLS handshake, headers).
    Fresh = 0,
    /// A request is being served.
    Busy = 1,
    /// Kept alive between requests.
    Idle = 2,
    /// Idle, then the first bytes of a further request arrived.
    Reading = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Fresh,
            1 => Self::Busy,
            2 => Self::Idle,
            _ => Self::Reading,
        }
    }
}

/// One open connection, as its task and the table see it.
struct Conn {
    phase: AtomicU8,
    /// When the phase began, in nanoseconds since the table's epoch.
    since: AtomicU64,
    /// Requests being served (hyper serves one at a time; a count is simpler to keep right).
    in_flight: AtomicUsize,
    /// Told when the table closes this connection to make room.
    evicted: Notify,
    /// Told when a deadline may have come closer (a request started arriving).
    changed: Notify,
}

/// Every open connection of all listeners.
pub(crate) struct Table {
    epoch: Instant,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    conns: HashMap<u64, Arc<Conn>>,
}

impl Table {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            open: Mutex::new(Open::default()),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Open connections.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().conns.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection, closing others first if there are
    /// already `max`; None when all of them are serving a request.
    fn admit(self: &Arc<Self>, max: usize) -> Option<Ticket> {
        let mut open = self.lock();
        while open.conns.len() >= max.max(1) {
            let victim = Self::victim(&open.conns)?;
            if let Some(conn) = open.conns.remove(&victim) {
                conn.evicted.notify_one();
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let conn = Arc::new(Conn {
            phase: AtomicU8::new(Phase::Fresh as u8),
            since: AtomicU64::new(self.now()),
            in_flight: AtomicUsize::new(0),
            evicted: Notify::new(),
            changed: Notify::new(),
        });
        open.conns.insert(id, Arc::clone(&conn));
        Some(Ticket {
            table: Arc::clone(self),
            id,
            conn,
        })
    }

    /// The connection to close to make room: one without a complete
    /// request (waiting the longest), else the one idle the longest.
    fn victim(conns: &HashMap<u64, Arc<Conn>>) -> Option<u64> {
        let mut waiting = None;
        let mut idle = None;
        for (&id, c) in conns {
            let since = c.since.load(Ordering::Relaxed);
            let slot = match Phase::from_u8(c.phase.load(Ordering::Relaxed)) {
                Phase::Fresh | Phase::Reading => &mut waiting,
                Phase::Idle => &mut idle,
                Phase::Busy => continue,
            };
            if slot.is_none_or(|(s, _)| since < s) {
                *slot = Some((since, id));
            }
        }
        waiting.or(idle).map(|(_, id)| id)
    }
}

/// A connection's place in the table, given up when its task ends.
struct Ticket {
    table: Arc<Table>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.table.lock().conns.remove(&self.id);
    }
}

impl Ticket {
    fn set(&self, phase: Phase) {
        self.conn.since.store(self.table.now(), Ordering::Relaxed);
        self.conn.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// When the connection is to be closed unless its phase changes.
    fn deadline(&self) -> Instant {
        let since = self.table.instant(self.conn.since.load(Ordering::Relaxed));
        match Phase::from_u8(self.conn.phase.load(Ordering::Relaxed)) {
            Phase::Fresh | Phase::Reading => since + HEADER_TIMEOUT,
            Phase::Busy | Phase::Idle => since + IDLE_TIMEOUT,
        }
    }

    /// Bytes arrived: on an idle connection, a new request has begun.
    fn bytes_arrived(&self) {
        if self.conn.phase.load(Ordering::Relaxed) == Phase::Idle as u8 {
            self.set(Phase::Reading);
            self.conn.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.conn.in_flight.fetch_add(1, Ordering::Relaxed);
        self.set(Phase::Busy);
        InFlight(Arc::clone(self))
    }
}

/// A request being served; dropped with its response body, when the
/// response has been handed to the connection whole (or abandoned).
struct InFlight(Arc<Ticket>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.conn.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.set(Phase::Idle);
        }
    }
}

/// A response body that ends its request's [`InFlight`] when dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The TCP stream, reporting arriving bytes to the connection's ticket
/// (under TLS, so the handshake counts as the first request's start).
struct Watched {
    stream: TcpStream,
    ticket: Arc<Ticket>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ticket.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How one listener serves: the router, TLS if any, and its share of the
/// connection table.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) app: Router,
    /// Called per connection, so a reloaded certificate applies to the next one.
    pub(crate) tls: Option<Arc<dyn Fn() -> TlsAcceptor + Send + Sync>>,
    pub(crate) table: Arc<Table>,
    /// The connection cap, read per connection (a reload changes it).
    pub(crate) max_connections: Arc<dyn Fn() -> usize + Send + Sync>,
}

/// Accepts connections on `listener` forever.
pub(crate) async fn accept_loop(listener: TcpListener, serving: Serving) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: try again shortly rather
                // than spin; the connections that are open go on.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(ticket) = serving.table.admit((serving.max_connections)()) else {
            tracing::debug!(%peer, "connection refused: every connection is serving a request");
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, peer, Arc::new(ticket), serving.clone()));
    }
}

/// Serves one connection until it ends, times out or is evicted.
async fn serve(stream: TcpStream, peer: SocketAddr, ticket: Arc<Ticket>, serving: Serving) {
    let io = Watched {
        stream,
        ticket: Arc::clone(&ticket),
    };
    let work = async {
        let outcome = match &serving.tls {
            Some(acceptor) => match acceptor().accept(io).await {
                Ok(tls) => http(TokioIo::new(tls), peer, &ticket, serving.app).await,
                Err(e) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
            },
            None => http(TokioIo::new(io), peer, &ticket, serving.app).await,
        };
        if let Err(e) = outcome {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    };
    tokio::pin!(work);
    loop {
        tokio::select! {
            () = &mut work => return,
            () = ticket.conn.evicted.notified() => {
                tracing::debug!(%peer, "connection closed to make room for a new one");
                return;
            }
            () = ticket.conn.changed.notified() => {}
            () = sleep_until(ticket.deadline()) => {
                // The phase may have changed while asleep: only a deadline
                // that is still past closes the connection.
                if ticket.deadline() <= Instant::now() {
                    tracing::debug!(%peer, "connection timed out");
                    return;
                }
            }
        }
    }
}

async fn http<I>(io: I, peer: SocketAddr, ticket: &Arc<Ticket>, app: Router) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let ticket = Arc::clone(ticket);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = ticket.request_started();
        let mut app = app.clone();
        async move {
            let response = app.call(request).await?;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service)
        .await
}

/// Raises this process's soft limit of open files to its hard limit: the
/// default soft limit (1024) is far below `server.max_connections`.
pub(crate) fn raise_open_files_limit(max_connections: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
                soft
            }
        }
    } else {
        soft
    };
    // Sockets, the state file, BPF maps, netlink and upstream connections.
    const OTHERS: u64 = 256;
    if limit < max_connections.saturating_add(OTHERS) {
        tracing::warn!(
            "the open files limit ({limit}) is below server.max_connections ({max_connections}) plus {OTHERS} for everything else: raise LimitNOFILE or lower server.max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(t: &Ticket) -> Phase {
        Phase::from_u8(t.conn.phase.load(Ordering::Relaxed))
    }

    fn open(table: &Table, t: &Ticket) -> bool {
        table.lock().conns.contains_key(&t.id)
    }

    /// Admits a connection a second after the previous one.
    async fn admit(table: &Arc<Table>, max: usize) -> Option<Arc<Ticket>> {
        tokio::time::advance(Duration::from_secs(1)).await;
        table.admit(max).map(Arc::new)
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_connections_without_a_request_go_first_then_idle_ones() {
        let table = Table::new();
        let idle = admit(&table, 3).await.unwrap();
        drop(idle.request_started());
        assert_eq!(phase(&idle), Phase::Idle);
        let busy = admit(&table, 3).await.unwrap();
        let _busy = busy.request_started();
        let old = admit(&table, 3).await.unwrap();
        let young = admit(&table, 4).await.unwrap();
        assert_eq!(table.len(), 4);

        // Full: the oldest that never sent a request makes room, and its task is told.
        let a = admit(&table, 4).await.unwrap();
        assert_eq!(table.len(), 4);
        assert!(!open(&table, &old) && open(&table, &young));
        tokio::time::timeout(Duration::from_secs(1), old.conn.evicted.notified())
            .await
            .unwrap();
        let _a = a.request_started();
        let b = admit(&table, 4).await.unwrap();
        assert!(!open(&table, &young));
        let _b = b.request_started();
        // No connection without a request left: the idle one goes, never a busy one.
        let c = admit(&table, 4).await.unwrap();
        assert!(!open(&table, &idle));
        assert!([&busy, &a, &b, &c].iter().all(|t| open(&table, t)));
        let _c = c.request_started();
        assert!(
            admit(&table, 4).await.is_none(),
            "every connection is busy: the new one is refused"
        );
        drop(_b);
        assert!(admit(&table, 4).await.is_some(), "an idle one goes again");
    }

    #[tokio::test]
    async fn a_closed_connection_frees_its_place() {
        let table = Table::new();
        let a = Arc::new(table.admit(2).unwrap());
        let b = Arc::new(table.admit(2).unwrap());
        let _serving = (a.request_started(), b.request_started());
        assert!(table.admit(2).is_none());
        drop(_serving);
        drop(a);
        assert_eq!(table.len(), 1);
        assert!(table.admit(2).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_phase() {
        let table = Table::new();
        let t = Arc::new(table.admit(10).unwrap());
        let start = Instant::now();
        assert_eq!(t.deadline() - start, HEADER_TIMEOUT);
        // Bytes of the first request change nothing: its headers are due
        // 10 s after the connection began.
        tokio::time::advance(Duration::from_secs(3)).await;
        t.bytes_arrived();
        assert_eq!(phase(&t), Phase::Fresh);
        assert_eq!(t.deadline() - start, HEADER_TIMEOUT);
        let request = t.request_started();
        assert_eq!(t.deadline() - start, Duration::from_secs(3) + IDLE_TIMEOUT);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(request);
        assert_eq!(phase(&t), Phase::Idle);
        assert_eq!(t.deadline() - start, Duration::from_secs(4) + IDLE_TIMEOUT);
        // A further request's headers are due 10 s after its first byte.
        tokio::time::advance(Duration::from_secs(50)).await;
        t.bytes_arrived();
        assert_eq!(phase(&t), Phase::Reading);
        assert_eq!(
            t.deadline() - start,
            Duration::from_secs(54) + HEADER_TIMEOUT
        );
    }
}
