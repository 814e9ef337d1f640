//! The fallback send path: raw IPv4/IPv6 sockets (header included) bound to
//! the interface, fed by `sendmmsg`. The kernel routes each packet, resolves
//! its next hop and runs the egress firewall on it, which is what loopback,
//! links without a MAC and next hops the agent cannot resolve need.

use std::{io, mem::MaybeUninit, os::fd::AsRawFd as _, thread, time::Duration};

use socket2::{Domain, Protocol, Socket, Type};

use super::{BATCH, Packet};

#[derive(Debug, thiserror::Error)]
pub enum RawError {
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

/// Raw sockets that send complete IP packets (header included), one per
/// family, opened on first use.
pub(super) struct RawSender {
    interface: String,
    v4: Option<Socket>,
    v6: Option<Socket>,
    /// Times the kernel said its queue was full and a batch had to wait.
    pub(super) queue_full: u64,
}

impl RawSender {
    /// Opens the IPv4 socket at once, so a missing privilege shows up before
    /// the scan starts.
    pub(super) fn open(interface: &str) -> Result<Self, RawError> {
        let mut s = Self {
            interface: interface.to_owned(),
            v4: None,
            v6: None,
            queue_full: 0,
        };
        s.socket(false)?;
        Ok(s)
    }

    fn socket(&mut self, v6: bool) -> Result<&Socket, RawError> {
        let (slot, domain, family) = if v6 {
            (&mut self.v6, Domain::IPV6, 6)
        } else {
            (&mut self.v4, Domain::IPV4, 4)
        };
        if slot.is_none() {
            // IPPROTO_RAW implies "header included" for both families.
            let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
                .map_err(|source| RawError::Open { family, source })?;
            socket
                .bind_device(Some(self.interface.as_bytes()))
                .map_err(|source| RawError::Bind {
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
    pub(super) fn send_all(&mut self, packets: &[Packet]) -> Result<(), RawError> {
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
                Err(e) => return Err(RawError::Send(e)),
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
