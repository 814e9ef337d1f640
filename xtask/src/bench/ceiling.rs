//! The testbed's ceiling: the most SYN probes per second that the veth path
//! and the target namespace carry and answer, sent by the simplest sender
//! there is: frames built once, handed to an AF_PACKET socket in `sendmmsg`
//! batches by one thread per core, with no per-packet work at all. Every
//! scanner row is read against it: on this machine kind the target's kernel
//! (which answers every SYN) shares the cores with the sender, so the
//! ceiling is a property of the machine, not of any scanner.

use std::{
    mem::MaybeUninit,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use etherparse::PacketBuilder;

use super::testbed::{FIRST_HOST, LAST_HOST, SCANNER_ADDR, SCANNER_IF, Testbed, target_addr};

/// Closed ports on every target (none listens or is firewalled there), so
/// each SYN gets a RST: the cheapest answer the target can give.
const PORTS: std::ops::Range<u16> = 1000..1064;
/// Frames per `sendmmsg`, as the agent's own batches.
const BATCH: usize = 64;

/// What the simplest sender achieved.
pub(super) struct Ceiling {
    /// SYNs per second handed to the link.
    pub sent_pps: f64,
    /// Answers per second that came back: the ceiling.
    pub answered_pps: f64,
}

/// Sends prebuilt SYNs for `duration` from every core and counts the answers
/// on the scanner's side of the veth pair.
pub(super) fn measure(testbed: &Testbed, duration: Duration) -> Result<Ceiling> {
    let frames = frames(&mac(&testbed.scanner_mac)?, &mac(&testbed.target_mac)?)?;
    let received = |tb: &Testbed| rx_packets(tb);
    let before = received(testbed)?;
    let started = Instant::now();
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = frames.len().div_ceil(threads);
    let mut senders = Vec::new();
    for part in frames.chunks(per_thread) {
        let part = part.to_vec();
        let socket = testbed.scanner.run_inside(packet_socket)?;
        senders.push(thread::spawn(move || send_for(&socket, &part, duration)));
    }
    let mut sent = 0;
    for s in senders {
        sent += s
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Answers still in flight arrive within milliseconds on a veth pair.
    thread::sleep(Duration::from_millis(200));
    let answered = received(testbed)?.saturating_sub(before);
    Ok(Ceiling {
        sent_pps: sent as f64 / elapsed,
        answered_pps: answered as f64 / elapsed,
    })
}

fn mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("not a MAC address: {text}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("not a MAC address: {text}"))
}

/// One SYN frame per (target, closed port), checksums and all.
fn frames(src: &[u8; 6], dst: &[u8; 6]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for host in FIRST_HOST..=LAST_HOST {
        let target: Ipv4Addr = target_addr(host);
        for (i, port) in PORTS.enumerate() {
            let builder = PacketBuilder::ethernet2(*src, *dst)
                .ipv4(SCANNER_ADDR.octets(), target.octets(), 64)
                .tcp(
                    40_000 + i as u16,
                    port,
                    u32::from(host) << 16 | u32::from(port),
                    1024,
                )
                .syn();
            let mut frame = Vec::with_capacity(builder.size(0));
            builder
                .write(&mut frame, &[])
                .context("building a SYN frame")?;
            out.push(frame);
        }
    }
    Ok(out)
}

/// An AF_PACKET socket bound to the scanner's veth; call inside its namespace.
fn packet_socket() -> Result<OwnedFd> {
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: a plain socket(2) call; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(SCANNER_IF)?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface {SCANNER_IF}");
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a valid sockaddr_ll of the given size.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if bound < 0 {
        bail!(
            "binding to {SCANNER_IF}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(socket)
}

/// Sends `frames` round and round for `duration`; returns how many went out.
fn send_for(socket: &OwnedFd, frames: &[Vec<u8>], duration: Duration) -> Result<u64> {
    let deadline = Instant::now() + duration;
    let mut sent = 0u64;
    let mut next = 0;
    while Instant::now() < deadline {
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
        let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        for i in 0..BATCH {
            let frame = &frames[(next + i) % frames.len()];
            let iov = iovs[i].write(libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            });
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            msgs[i].write(hdr);
        }
        // SAFETY: every header is initialised and points at frames and
        // iovecs that outlive the call.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr().cast(),
                BATCH as u32,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR)
            ) {
                thread::yield_now();
                continue;
            }
            bail!("sending frames: {e}");
        }
        sent += n as u64;
        next = (next + n as usize) % frames.len();
    }
    Ok(sent)
}

/// Packets the scanner's veth has received (the answers).
fn rx_packets(testbed: &Testbed) -> Result<u64> {
    let out = testbed
        .scanner
        .try_ip(&["-j", "-s", "link", "show", "dev", SCANNER_IF])?;
    let json: serde_json::Value = serde_json::from_str(&out).context("ip -j -s link")?;
    json[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("no rx packet count in ip -j -s link")
}
