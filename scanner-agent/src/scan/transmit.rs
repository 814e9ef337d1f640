//! Putting packets on the wire: raw IPv4 and IPv6 sockets fed by `sendmmsg`
//! batches, and the token bucket that paces them.

use std::{
    io,
    mem::MaybeUninit,
    net::IpAddr,
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex, PoisonError,
        mpsc::{self, Receiver, SyncSender},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::scan::probes::packets::MAX_PACKET;

/// Packets handed to the kernel in one `sendmmsg` call.
pub const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TransmitError {
    #[error("cannot open a raw IPv{family} socket (needs CAP_NET_RAW): {source}")]
    Open { family: u8, source: io::Error },
    #[error("cannot bind the raw socket to interface {interface}: {source}")]
    Bind {
        interface: String,
        source: io::Error,
    },
    #[error("sending probes failed: {0}")]
    Send(io::Error),
}

/// One packet in a send batch.
#[derive(Clone, Copy)]
pub struct Packet {
    pub bytes: [u8; MAX_PACKET],
    pub len: usize,
    pub dest: IpAddr,
}

impl Default for Packet {
    fn default() -> Self {
        Self {
            bytes: [0; MAX_PACKET],
            len: 0,
            dest: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// Raw sockets that send complete IP packets (header included), one per
/// family, opened on first use.
pub struct RawSender {
    interface: String,
    v4: Option<Socket>,
    v6: Option<Socket>,
    /// Times the kernel said its queue was full and a batch had to wait.
    pub queue_full: u64,
}

impl RawSender {
    /// Opens the IPv4 socket at once, so a missing privilege shows up before
    /// the scan starts.
    pub fn open(interface: &str) -> Result<Self, TransmitError> {
        let mut s = Self {
            interface: interface.to_owned(),
            v4: None,
            v6: None,
            queue_full: 0,
        };
        s.socket(false)?;
        Ok(s)
    }

    fn socket(&mut self, v6: bool) -> Result<&Socket, TransmitError> {
        let (slot, domain, family) = if v6 {
            (&mut self.v6, Domain::IPV6, 6)
        } else {
            (&mut self.v4, Domain::IPV4, 4)
        };
        if slot.is_none() {
            // IPPROTO_RAW implies "header included" for both families.
            let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
                .map_err(|source| TransmitError::Open { family, source })?;
            socket
                .bind_device(Some(self.interface.as_bytes()))
                .map_err(|source| TransmitError::Bind {
                    interface: self.interface.clone(),
                    source,
                })?;
            // A large buffer absorbs bursts; failure only costs retries.
            let _ = socket.set_send_buffer_size(4 << 20);
            *slot = Some(socket);
        }
        Ok(slot.as_ref().expect("just opened"))
    }

    /// Sends every packet, retrying while the kernel's queue is full, so a
    /// returned `Ok` means all were accepted. Packets of both families may
    /// be mixed.
    pub fn send_all(&mut self, packets: &[Packet]) -> Result<(), TransmitError> {
        let mut done = 0;
        while done < packets.len() {
            let v6 = packets[done].dest.is_ipv6();
            let run = packets[done..]
                .iter()
                .take_while(|p| p.dest.is_ipv6() == v6)
                .count()
                .min(BATCH);
            let socket = self.socket(v6)?;
            match sendmmsg(socket, &packets[done..done + run]) {
                Ok(n) => done += n,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) => {
                    self.queue_full += 1;
                    thread::sleep(Duration::from_micros(50));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransmitError::Send(e)),
            }
        }
        Ok(())
    }
}

/// Sends up to `BATCH` packets of one family in one system call.
fn sendmmsg(socket: &Socket, packets: &[Packet]) -> io::Result<usize> {
    let n = packets.len().min(BATCH);
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    for i in 0..n {
        let len = socket2::SockAddr::from(std::net::SocketAddr::new(packets[i].dest, 0));
        // SAFETY: `len` holds a valid sockaddr of `len.len()` bytes, which
        // fits in a sockaddr_storage.
        unsafe {
            std::ptr::copy_nonoverlapping(
                len.as_ptr().cast::<u8>(),
                (&raw mut addrs[i]).cast::<u8>(),
                len.len() as usize,
            )
        };
        let iov = iovs[i].write(libc::iovec {
            iov_base: packets[i].bytes.as_ptr() as *mut libc::c_void,
            iov_len: packets[i].len,
        });
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        hdr.msg_hdr.msg_name = (&raw mut addrs[i]).cast();
        hdr.msg_hdr.msg_namelen = len.len();
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        msgs[i].write(hdr);
    }
    // SAFETY: the first `n` headers are initialised and point at buffers
    // (`packets`, `addrs`, `iovs`) that outlive the call.
    let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr().cast(), n as u32, 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Batches handed to the workers but not yet sent, at most, per worker.
const QUEUE_PER_WORKER: usize = 4;

/// Sending threads, each with its own raw sockets. Most of a probe's cost is
/// in the kernel (routing, and on a veth the receiver's stack too), so
/// several threads use several cores.
pub struct TxPool {
    queue: Option<SyncSender<Vec<Packet>>>,
    spare: Receiver<Vec<Packet>>,
    workers: Vec<JoinHandle<Result<u64, TransmitError>>>,
}

impl TxPool {
    /// Starts `workers` senders on `interface`; fails at once if a socket
    /// cannot be opened.
    pub fn start(interface: &str, workers: usize) -> Result<Self, TransmitError> {
        let workers = workers.max(1);
        let (queue, jobs) = mpsc::sync_channel::<Vec<Packet>>(workers * QUEUE_PER_WORKER);
        let (recycle, spare) = mpsc::sync_channel(workers * (QUEUE_PER_WORKER + 2));
        let jobs = Arc::new(Mutex::new(jobs));
        let mut handles = Vec::with_capacity(workers);
        for n in 0..workers {
            let mut sender = RawSender::open(interface)?;
            let (jobs, recycle) = (Arc::clone(&jobs), recycle.clone());
            let handle = thread::Builder::new()
                .name(format!("tx-{n}"))
                .spawn(move || {
                    loop {
                        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(mut batch) = next else {
                            return Ok(sender.queue_full);
                        };
                        sender.send_all(&batch)?;
                        batch.clear();
                        let _ = recycle.try_send(batch);
                    }
                })
                .map_err(|e| TransmitError::Send(io::Error::other(e)))?;
            handles.push(handle);
        }
        Ok(Self {
            queue: Some(queue),
            spare,
            workers: handles,
        })
    }

    /// An empty batch buffer (recycled when possible).
    pub fn buffer(&self) -> Vec<Packet> {
        self.spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH))
    }

    /// Queues `batch` for sending; blocks while every worker is busy, which
    /// is the back-pressure that keeps the rate honest.
    pub fn submit(&mut self, batch: Vec<Packet>) -> Result<(), TransmitError> {
        if batch.is_empty() {
            return Ok(());
        }
        let queue = self.queue.as_ref().expect("pool is running");
        if queue.send(batch).is_err() {
            // A worker only hangs up after a send error: report it.
            return Err(self
                .stop()
                .err()
                .unwrap_or_else(|| TransmitError::Send(io::Error::other("sender stopped"))));
        }
        Ok(())
    }

    /// Waits until everything queued is sent; returns how often the kernel's
    /// queue was full.
    pub fn finish(mut self) -> Result<u64, TransmitError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<u64, TransmitError> {
        self.queue = None;
        let mut queue_full = 0;
        let mut first_error = None;
        for worker in self.workers.drain(..) {
            match worker.join() {
                Ok(Ok(n)) => queue_full += n,
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(TransmitError::Send(io::Error::other(
                        "sender thread panicked",
                    )));
                }
            }
        }
        first_error.map_or(Ok(queue_full), Err)
    }
}

impl Drop for TxPool {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_sends_everything_through_loopback() {
        testbed::require_root!();
        use std::net::{Ipv4Addr, UdpSocket};
        // Needs CAP_NET_RAW, like every privileged test here.
        let sink = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let port = sink.local_addr().unwrap().port();
        let mut pool = TxPool::start("lo", 2).unwrap();
        // Few enough datagrams for the sink's default receive buffer.
        for _ in 0..3 {
            let mut batch = pool.buffer();
            for _ in 0..BATCH {
                let mut p = Packet {
                    dest: Ipv4Addr::LOCALHOST.into(),
                    ..Packet::default()
                };
                let addrs = (p.dest, p.dest);
                p.len = crate::scan::probes::packets::udp(&mut p.bytes, addrs, (40000, port), 1, 0);
                batch.push(p);
            }
            pool.submit(batch).unwrap();
        }
        pool.finish().unwrap();
        let mut got = 0;
        let mut buf = [0u8; 64];
        while sink.recv(&mut buf).is_ok() {
            got += 1;
            if got == 3 * BATCH {
                break;
            }
        }
        assert_eq!(got, 3 * BATCH);
    }
}
