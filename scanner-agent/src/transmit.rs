//! Putting probes on the wire: a raw IPv4 socket fed by `sendmmsg` batches,
//! paced to the requested rate.

use std::{
    io,
    mem::MaybeUninit,
    net::Ipv4Addr,
    os::fd::AsRawFd as _,
    thread,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

/// Packets handed to the kernel in one `sendmmsg` call.
pub const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TransmitError {
    #[error("cannot open a raw IPv4 socket (needs CAP_NET_RAW): {0}")]
    Open(io::Error),
    #[error("cannot bind the raw socket to interface {interface}: {source}")]
    Bind {
        interface: String,
        source: io::Error,
    },
    #[error("sending probes failed: {0}")]
    Send(io::Error),
}

const EMPTY_SOCKADDR: libc::sockaddr_in = libc::sockaddr_in {
    sin_family: libc::AF_INET as libc::sa_family_t,
    sin_port: 0,
    sin_addr: libc::in_addr { s_addr: 0 },
    sin_zero: [0; 8],
};

/// A raw socket that sends complete IPv4 packets (header included).
pub struct RawSender {
    socket: Socket,
    /// Times the kernel said its queue was full; the batch was retried.
    pub queue_full: u64,
}

impl RawSender {
    pub fn open(interface: &str) -> Result<Self, TransmitError> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .map_err(TransmitError::Open)?;
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(|source| TransmitError::Bind {
                interface: interface.to_owned(),
                source,
            })?;
        // A large buffer absorbs bursts; failure only costs retries.
        let _ = socket.set_send_buffer_size(4 << 20);
        Ok(Self {
            socket,
            queue_full: 0,
        })
    }

    /// Sends every packet of `batch` to its destination, retrying while the
    /// kernel's queue is full, so a returned `Ok` means all were accepted.
    pub fn send_all<P: AsRef<[u8]>>(
        &mut self,
        packets: &[P],
        dests: &[Ipv4Addr],
    ) -> Result<(), TransmitError> {
        assert_eq!(packets.len(), dests.len());
        let mut done = 0;
        while done < packets.len() {
            match self.sendmmsg(&packets[done..], &dests[done..]) {
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

    fn sendmmsg<P: AsRef<[u8]>>(&self, packets: &[P], dests: &[Ipv4Addr]) -> io::Result<usize> {
        let n = packets.len().min(BATCH);
        let mut addrs: [libc::sockaddr_in; BATCH] = [EMPTY_SOCKADDR; BATCH];
        for (addr, dest) in addrs.iter_mut().zip(&dests[..n]) {
            addr.sin_addr.s_addr = u32::from(*dest).to_be();
        }
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
        let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        for i in 0..n {
            let iov = iovs[i].write(libc::iovec {
                iov_base: packets[i].as_ref().as_ptr() as *mut libc::c_void,
                iov_len: packets[i].as_ref().len(),
            });
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_name = (&raw mut addrs[i]).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            msgs[i].write(hdr);
        }
        // SAFETY: the first `n` headers are initialised and point at buffers
        // (`packets`, `addrs`, `iovs`) that outlive the call.
        let sent = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                msgs.as_mut_ptr().cast(),
                n as u32,
                0,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }
}

/// Paces sending to `rate` packets per second: packet `i` is due at
/// `start + i / rate`, so short stalls are caught up and the average holds.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    rate: f64,
}

impl Pacer {
    pub fn new(rate: u64) -> Self {
        Self {
            start: Instant::now(),
            rate: rate.max(1) as f64,
        }
    }

    /// When packet number `sent` is due.
    pub fn due(&self, sent: u64) -> Instant {
        self.start + Duration::from_secs_f64(sent as f64 / self.rate)
    }

    /// Blocks until packet number `sent` may go out.
    pub fn wait(&self, sent: u64) {
        let due = self.due(sent);
        loop {
            let now = Instant::now();
            if now >= due {
                return;
            }
            let left = due - now;
            // Sleeping is coarse (~60 us); spin for the last stretch.
            if left > Duration::from_micros(200) {
                thread::sleep(left - Duration::from_micros(100));
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Batch size that keeps the pacing error near a millisecond.
    pub fn batch(&self) -> usize {
        ((self.rate / 1000.0) as usize).clamp(1, BATCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_schedules_evenly() {
        let p = Pacer::new(1000);
        assert_eq!(p.due(1000) - p.due(0), Duration::from_secs(1));
        assert_eq!(p.due(1) - p.due(0), Duration::from_millis(1));
        assert_eq!(Pacer::new(100).batch(), 1);
        assert_eq!(Pacer::new(10_000).batch(), 10);
        assert_eq!(Pacer::new(10_000_000).batch(), BATCH);
        let floor = Pacer::new(0);
        assert_eq!(floor.due(1) - floor.due(0), Duration::from_secs(1));
    }
}
