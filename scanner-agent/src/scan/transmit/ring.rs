//! The fast send path: complete Ethernet frames written into an AF_PACKET
//! TX ring (`PACKET_TX_RING`, TPACKET_V2) shared with the kernel, handed
//! over with one `send` per batch. The kernel does no routing, neighbour
//! lookup or netfilter per packet; the frames still pass the interface's
//! qdisc (no `PACKET_QDISC_BYPASS`), so the host's traffic shaping applies.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use super::neighbour::Mac;
use crate::scan::probes::packets::MAX_PACKET;

/// Bytes of a ring frame: the TPACKET_V2 header, then the Ethernet frame.
const FRAME_SIZE: usize = 256;
/// Where the frame's data starts: the header, aligned (the kernel's
/// `tp_hdrlen - sizeof(struct sockaddr_ll)` for TPACKET_V2).
const DATA_OFFSET: usize = (size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT - 1)
    & !(libc::TPACKET_ALIGNMENT - 1);
const ETH_HEADER: usize = 14;
/// One page a block, so the ring never needs contiguous high-order pages.
const BLOCK_SIZE: usize = 4096;
/// 4096 frames: a millisecond at 4 Mpps, far more than one batch.
const BLOCK_NR: usize = 256;

/// `PACKET_VNET_HDR` (linux/if_packet.h; not in the libc crate).
const PACKET_VNET_HDR: libc::c_int = 15;
/// A `struct virtio_net_hdr` before each frame (with `PACKET_VNET_HDR`).
const VNET_HDR: usize = 10;

const _: () = assert!(DATA_OFFSET + VNET_HDR + ETH_HEADER + MAX_PACKET <= FRAME_SIZE);
const _: () = assert!(BLOCK_SIZE.is_multiple_of(FRAME_SIZE));

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("cannot open an AF_PACKET socket (needs CAP_NET_RAW): {0}")]
    Open(io::Error),
    #[error("cannot set up the AF_PACKET TX ring: {0}")]
    Setup(io::Error),
    #[error("sending frames through the TX ring failed: {0}")]
    Send(io::Error),
    #[error("the kernel refused a frame of the TX ring as malformed")]
    WrongFormat,
}

/// One TX ring on one interface. Frames are written in ring order; the
/// kernel marks each available again once it has sent it.
pub(super) struct Ring {
    fd: OwnedFd,
    map: NonNull<u8>,
    frames: usize,
    head: usize,
    /// Frames handed to the kernel but not yet flushed with `send`.
    unflushed: usize,
    src: Mac,
    /// Each frame starts with a virtio-net header whose `hdr_len` covers
    /// the whole frame: the kernel then copies the frame into the packet
    /// it sends. Without it, all but the Ethernet header goes as fragments
    /// of the ring's pages, which a veth must copy into a new page for the
    /// other namespace, frame by frame. (Kernels before 4.11 accept the
    /// option but ignore it on the TX ring; the agent needs 5.8.)
    vnet: bool,
    /// Times the kernel said its queue was full and a flush had to wait.
    pub(super) queue_full: u64,
}

// SAFETY: the mapping is owned by this value alone (one sending thread);
// the kernel synchronises through each frame's status word.
unsafe impl Send for Ring {}

fn setsockopt<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Ring {
    /// A ring bound to interface `ifindex`, sending from `src`. The socket
    /// is bound with protocol 0, so it receives nothing.
    pub(super) fn open(ifindex: u32, src: Mac) -> Result<Self, RingError> {
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(RingError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let setup = RingError::Setup;
        setsockopt(
            &fd,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V2 as libc::c_int),
        )
        .map_err(setup)?;
        // Before the ring exists (the kernel refuses it after); a kernel
        // without it gets the frames as they are.
        let vnet = setsockopt(&fd, PACKET_VNET_HDR, &(1 as libc::c_int)).is_ok();
        let req = libc::tpacket_req {
            tp_block_size: BLOCK_SIZE as u32,
            tp_block_nr: BLOCK_NR as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: (BLOCK_NR * BLOCK_SIZE / FRAME_SIZE) as u32,
        };
        setsockopt(&fd, libc::PACKET_TX_RING, &req).map_err(setup)?;
        // A larger send buffer lets more frames be in flight per flush;
        // failure only means smaller flushes.
        let sndbuf: libc::c_int = 4 << 20;
        // SAFETY: `sndbuf` is a live c_int.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw const sndbuf).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = 0;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(setup(io::Error::last_os_error()));
        }
        let len = BLOCK_SIZE * BLOCK_NR;
        // SAFETY: maps the ring the kernel just allocated for `fd`, at its
        // full size; nothing else maps it.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(setup(io::Error::last_os_error()));
        }
        Ok(Self {
            fd,
            map: NonNull::new(map.cast()).expect("mmap succeeded"),
            frames: req.tp_frame_nr as usize,
            head: 0,
            unflushed: 0,
            src,
            vnet,
            queue_full: 0,
        })
    }

    fn frame(&self, i: usize) -> *mut u8 {
        // SAFETY: i < frames, and blocks are a whole number of frames, so
        // frame i lies inside the mapping.
        unsafe { self.map.as_ptr().add(i * FRAME_SIZE) }
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: tp_status is the frame's first, 4-aligned word, shared
        // with the kernel, which reads and writes it atomically.
        unsafe { &*self.frame(i).cast::<AtomicU32>() }
    }

    /// Queues the IP packet `ip` in a frame to `dst`; the frame leaves at
    /// the next [`Ring::flush`] (or earlier, if the ring fills up).
    pub(super) fn push(&mut self, dst: Mac, ip: &[u8]) -> Result<(), RingError> {
        loop {
            let status = self.status(self.head).load(Ordering::Acquire);
            if status == libc::TP_STATUS_AVAILABLE {
                break;
            }
            if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
                return Err(RingError::WrongFormat);
            }
            // Every frame is in flight: let the kernel catch up.
            self.flush()?;
            thread::sleep(Duration::from_micros(20));
        }
        let ethertype: u16 = if ip.first().is_some_and(|b| b >> 4 == 6) {
            0x86dd
        } else {
            0x0800
        };
        let len = ETH_HEADER + ip.len();
        assert!(ip.len() <= MAX_PACKET, "probes fit a frame");
        let vnet = if self.vnet { VNET_HDR } else { 0 };
        let frame = self.frame(self.head);
        // SAFETY: the frame is ours (status AVAILABLE) until we hand it
        // back; its data area holds DATA_OFFSET + vnet + len <= FRAME_SIZE
        // bytes.
        unsafe {
            let data = std::slice::from_raw_parts_mut(frame.add(DATA_OFFSET), vnet + len);
            let (header, ethernet) = data.split_at_mut(vnet);
            if vnet > 0 {
                // flags 0, gso_type NONE, hdr_len: the whole frame (in the
                // host's byte order, as legacy virtio on this host has it),
                // no GSO, no checksum offload.
                header.fill(0);
                header[2..4].copy_from_slice(&(len as u16).to_ne_bytes());
            }
            ethernet[..6].copy_from_slice(&dst);
            ethernet[6..12].copy_from_slice(&self.src);
            ethernet[12..14].copy_from_slice(&ethertype.to_be_bytes());
            ethernet[14..].copy_from_slice(ip);
            let hdr = &mut *frame.cast::<libc::tpacket2_hdr>();
            hdr.tp_len = (vnet + len) as u32;
        }
        self.status(self.head)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.head = (self.head + 1) % self.frames;
        self.unflushed += 1;
        Ok(())
    }

    /// Makes the kernel send every queued frame; retries while its queue
    /// (the qdisc, the driver) is full.
    pub(super) fn flush(&mut self) -> Result<(), RingError> {
        while self.unflushed > 0 {
            // SAFETY: a zero-length send on a TX ring socket: the kernel
            // takes the frames marked SEND_REQUEST, no buffer is read.
            let rc = unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, 0) };
            if rc >= 0 {
                self.unflushed = 0;
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN) => {
                    self.queue_full += 1;
                    thread::sleep(Duration::from_micros(50));
                }
                Some(libc::EINTR) => {}
                _ => return Err(RingError::Send(e)),
            }
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = self.flush();
        // SAFETY: unmaps exactly the mapping made in `open`, used by nothing
        // after this.
        unsafe { libc::munmap(self.map.as_ptr().cast(), BLOCK_SIZE * BLOCK_NR) };
    }
}
